// Shared by the spool tests: configurations in TOML, SIAK-like sample rows.
#pragma once

#include <string>
#include <string_view>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <adapters/spool.h>
#include <schemas/json_codec.h>
#include <schemas/nik.h>

namespace kolabus::test {

// The first [[spool]] entry of `text`.
inline toml::table spool_table(std::string_view text) {
  toml::table root = toml::parse(text);
  const auto* arr = root["spool"].as_array();
  REQUIRE(arr != nullptr);
  const auto* t = arr->get(0)->as_table();
  REQUIRE(t != nullptr);
  return *t;
}

inline adapters::SpoolConverter converter(std::string_view text) {
  auto c = adapters::SpoolConverter::create(spool_table(text));
  if (!c) FAIL(c.error().to_string());
  return std::move(*c);
}

// The config's error message, or "" if it was accepted.
inline std::string config_error(std::string_view text) {
  auto c = adapters::SpoolConverter::create(spool_table(text));
  return c ? "" : c.error().message;
}

// A SIAK-style birth export mapping (docs/SPOOL.md has the same one).
inline constexpr std::string_view kBirthMapping = R"(
dir = "unused"
format = "csv"
kind = "birth"
[spool.fields]
child_name = { column = "NAMA_LGKP" }
sex = { column = "JENIS_KLMIN", map = { "1" = "Male", "2" = "Female", "LAKI-LAKI" = "Male", "PEREMPUAN" = "Female" } }
born_at = { column = "TGL_LHR", date = "%d-%m-%Y", time_column = "JAM_LHR", utc_offset = "+07:00" }
village_code = { columns = ["NO_PROP", "NO_KAB", "NO_KEC", "NO_KEL"], widths = [2, 2, 2, 4] }
mother_nik = { column = "NIK_IBU" }
father_nik = { column = "NIK_AYAH", optional = true }
kk_number = { column = "NO_KK" }
place_of_birth = { column = "TMPT_LHR", optional = true }
reporting_facility = { value = "RSUD dr. Pirngadi" }
)";

inline std::string birth_config(std::string_view dir = "unused", std::string_view extra = "") {
  std::string s = "[[spool]]\n";
  s += extra;
  s += "\n";
  std::string m(kBirthMapping);
  m.replace(m.find("dir = \"unused\""), 14, "dir = \"" + std::string(dir) + "\"");
  return s + m;
}

inline constexpr std::string_view kBirthHeader =
    "NIK_IBU,NIK_AYAH,NO_KK,NAMA_LGKP,JENIS_KLMIN,TGL_LHR,JAM_LHR,TMPT_LHR,NO_PROP,NO_KAB,NO_KEC,"
    "NO_KEL\n";

// A valid birth row: mother born 1995-03-12 (day 12+40), father 1990-05-15, family
// card issued 2020-02-20, all in Medan Kota (127101); the child born in `day`-11-2024.
inline std::string birth_row(std::string_view name, int day = 20, std::string_view sex = "2") {
  return "1271015203950001,1271011505900002,1271012002200001," + std::string(name) + "," +
         std::string(sex) + "," + std::to_string(day) + "-11-2024,08:30,RSU Medan,12,71,1,1001\n";
}

// 2024-12-01 00:00 UTC: "now" for the unit tests (after every sample date).
inline constexpr TimeMs kNow = 1733011200000;

inline nlohmann::json to_json(const adapters::SpoolEvent& e) {
  auto codec = schemas::JsonCodec::create();
  REQUIRE(codec.has_value());
  auto text = codec->to_json(e.event.bytes);
  REQUIRE(text.has_value());
  return nlohmann::json::parse(*text);
}

}  // namespace kolabus::test
