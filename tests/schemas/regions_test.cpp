#include <chrono>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

#include <schemas/regions.h>

using kolabus::Errc;
using kolabus::schemas::RegionLevel;
using kolabus::schemas::RegionTable;

TEST_CASE("RegionTable: embedded list has every Kemendagri region") {
  const RegionTable& t = RegionTable::embedded();
  CHECK(t.size() == 91'599);
  CHECK(&t == &RegionTable::embedded());  // parsed once

  const auto* medan = t.find("1271");
  REQUIRE(medan != nullptr);
  CHECK(medan->name == "Kota Medan");
  CHECK(medan->level == RegionLevel::kRegency);
  CHECK(t.children("1271").size() == 21);

  const auto* pasar_baru = t.find("1271011001");
  REQUIRE(pasar_baru != nullptr);
  CHECK(pasar_baru->name == "Pasar Baru");
  CHECK(pasar_baru->level == RegionLevel::kVillage);
  CHECK(t.is_village("1271011001"));
  CHECK_FALSE(t.is_village("127101"));      // a district
  CHECK_FALSE(t.is_village("1271011999"));  // absent
  CHECK(t.find("1271011999") == nullptr);
  CHECK(t.find("") == nullptr);
  // Not codes: a leading zero added, too long, not digits, a prefix of no level.
  CHECK(t.find("01271") == nullptr);
  CHECK(t.find("012") == nullptr);
  CHECK(t.find("12710110011") == nullptr);
  CHECK(t.find("12a1") == nullptr);
  CHECK(t.find("127") == nullptr);
  // Every region is found under its own code, and only there.
  for (const auto& r : t.all()) {
    const auto* f = t.find(r.code);
    REQUIRE(f != nullptr);
    CHECK(f->code == r.code);
  }

  // A quoted name with a comma.
  const auto* lubuk = t.find("1207281007");
  REQUIRE(lubuk != nullptr);
  CHECK(lubuk->name == "Lubuk Pakam I,II");
}

TEST_CASE("RegionTable: children are direct and sorted") {
  const RegionTable& t = RegionTable::embedded();
  const auto provinces = t.children("");
  CHECK(provinces.size() == 38);
  const auto medan_kota = t.children("127101");
  REQUIRE(medan_kota.size() == 12);
  CHECK(medan_kota.front()->code == "1271011001");
  for (std::size_t i = 1; i < medan_kota.size(); ++i) {
    CHECK(medan_kota[i - 1]->code < medan_kota[i]->code);
    CHECK(medan_kota[i]->level == RegionLevel::kVillage);
  }
  const auto sumut = t.children("12");
  CHECK(sumut.size() == 33);  // 25 kabupaten + 8 kota
  CHECK(t.children("1271011001").empty());
  CHECK(t.children("99").empty());
}

TEST_CASE("RegionTable: the full list parses fast") {
  // A private copy of the full list: embedded() may be initialised already.
  std::ifstream in(KOLABUS_TEST_WILAYAH_CSV, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto t0 = std::chrono::steady_clock::now();
  auto parsed = RegionTable::parse(std::move(text));
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  REQUIRE(parsed.has_value());
  CHECK(parsed->size() == 91'599);
  CAPTURE(ms);
  CHECK(ms < 500);  // about 6 ms on an idle machine; generous for a shared, loaded one
}

TEST_CASE("RegionTable: parse and load_file") {
  SUBCASE("a small valid list, unsorted, with quotes and CRLF") {
    auto t = RegionTable::parse(
        "code,name,level\r\n1271011001,\"Pasar \"\"Baru\"\"\",village\r\n12,Sumatera "
        "Utara,province\r\n\r\n1271,Kota Medan,regency\n127101,Medan Kota,district\n");
    REQUIRE(t.has_value());
    CHECK(t->size() == 4);
    REQUIRE(t->find("1271011001") != nullptr);
    CHECK(t->find("1271011001")->name == "Pasar \"Baru\"");
    CHECK(t->all().front().code == "12");
    // Moving the table keeps its views valid.
    RegionTable moved = std::move(t).value();
    CHECK(moved.find("1271011001")->name == "Pasar \"Baru\"");
    CHECK(moved.children("1271").size() == 1);
  }
  SUBCASE("short text survives a move (no small-string views)") {
    auto t = RegionTable::parse("code,name,level\n12,A,province\n");
    REQUIRE(t.has_value());
    RegionTable moved = std::move(t).value();
    REQUIRE(moved.find("12") != nullptr);
    CHECK(moved.find("12")->name == "A");
  }
  struct Bad {
    const char* csv;
    const char* expect;  // substring of the message
  };
  const Bad cases[] = {
      {"", "line 1"},
      {"kode,nama,level\n", "line 1: expected the header row"},
      {"code,name,level\n12,Sumut,province\n127,Medan,regency\n",
       "line 3: code 127 has 3 digits but a regency code has 4"},
      {"code,name,level\n12,Sumut,province\n1271,Medan\n", "line 3: expected 3 fields"},
      {"code,name,level\n12,Sumut,kingdom\n", "line 2: unknown level \"kingdom\""},
      {"code,name,level\n1a,Sumut,province\n", "line 2: code \"1a\" is not all digits"},
      {"code,name,level\n12,\"Sumut,province\n", "line 2: unterminated quoted field"},
      {"code,name,level\n12,,province\n", "line 2: code 12 has no name"},
      {"code,name,level\n13,A,province\n12,B,province\n13,C,province\n",
       "line 4: code 13 already appears on line 2"},
      {"code,name,level\n12,A,province\n12,B,province\n", "line 3: code 12 already appears"},
  };
  for (const auto& c : cases) {
    const std::string input(c.csv);
    CAPTURE(input);
    auto t = RegionTable::parse(c.csv);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().code == Errc::kInvalidArgument);
    CHECK(t.error().message.find(c.expect) != std::string::npos);
    if (t.error().message.find(c.expect) == std::string::npos) MESSAGE(t.error().message);
  }
  SUBCASE("load_file reads medan.csv; a missing file is an I/O error") {
    auto medan = RegionTable::load_file(KOLABUS_TEST_MEDAN_CSV);
    REQUIRE(medan.has_value());
    CHECK(medan->size() == 173);
    CHECK(medan->children("1271").size() == 21);
    auto missing = RegionTable::load_file("/nonexistent/wilayah.csv");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code == Errc::kIoError);
  }
}
