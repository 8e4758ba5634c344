// fuzz_json: text as the adapters and the CLI meet it:
//  - one JSON line through schemas::JsonCodec::from_json (kolabus publish, the spool's
//    JSON Lines, the HTTP gateway);
//  - a whole spool file through adapters::parse_csv and adapters::SpoolConverter, the
//    socket-free layers of the spool adapter (adapters/spool.h), under the mappings of
//    docs/SPOOL.md: births (CSV ","), deaths (CSV ";", recorded_at from a column),
//    moves (CSV, a split list), births from mapped JSON Lines, and kolabus JSON Lines.
//
// Properties checked beyond "no crash":
//  - from_json is deterministic (same bytes, same id); a derived id is a version-8 UUID;
//    a valid event it builds goes back to JSON;
//  - parse_csv gives records in increasing line order, no fields on an error;
//  - convert() puts every record in exactly one of events, rejects, skipped_empty, in
//    line order; every event passes validate_event; every reject says its line; the
//    same file gives the same ids again (the spool's crash safety rests on that).
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "fuzz_targets.h"
#include <adapters/spool.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <schemas/validate.h>

namespace kolabus::fuzz {

namespace {

// The mappings of docs/SPOOL.md (its examples are tested to convert cleanly).
constexpr std::string_view kBirthFields = R"(
[spool.fields]
child_name = { column = "NAMA_LGKP" }
sex = { column = "JENIS_KLMIN", map = { "1" = "Male", "2" = "Female", "LAKI-LAKI" = "Male", "PEREMPUAN" = "Female" } }
born_at = { column = "TGL_LHR", date = "%d-%m-%Y", time_column = "JAM_LHR", utc_offset = "+07:00" }
village_code = { columns = ["NO_PROP", "NO_KAB", "NO_KEC", "NO_KEL"], widths = [2, 2, 2, 4] }
mother_nik = { column = "NIK_IBU" }
father_nik = { column = "NIK_AYAH", optional = true }
kk_number = { column = "NO_KK" }
place_of_birth = { column = "TMPT_LHR", optional = true }
birth_certificate_no = { column = "NO_AKTA_LHR", optional = true }
reporting_facility = { value = "Disdukcapil Kota Medan" }
)";

constexpr std::string_view kDeaths = R"(
dir = "fuzz"
format = "csv"
delimiter = ";"
kind = "death"
recorded_at = { column = "TGL_ENTRI", date = "%d-%m-%Y %H:%M:%S" }
[fields]
nik = { column = "NIK" }
name = { column = "NAMA_LGKP" }
died_at = { column = "TGL_KEMATIAN", date = "%d-%m-%Y", time_column = "JAM_KEMATIAN" }
village_code = { columns = ["NO_PROP", "NO_KAB", "NO_KEC", "NO_KEL"], widths = [2, 2, 2, 4] }
place_of_death = { column = "TEMPAT_KEMATIAN", optional = true }
death_certificate_no = { column = "NO_AKTA_KEMATIAN", optional = true }
reporter = { column = "NAMA_PELAPOR", optional = true }
cause_of_death = { column = "SEBAB_KEMATIAN", optional = true }
)";

constexpr std::string_view kMoves = R"(
dir = "fuzz"
format = "csv"
kind = "move"
[fields]
niks = { column = "NIK_ANGGOTA", split = ";" }
kk_number = { column = "NO_KK" }
origin_village = { column = "KODE_KEL_ASAL" }
destination_village = { column = "KODE_KEL_TUJUAN" }
moved_at = { column = "TGL_PINDAH", date = "%Y-%m-%d" }
move_type = { column = "KLASIFIKASI_PINDAH", map = { "2" = "WithinKecamatan", "3" = "BetweenKecamatan", "4" = "BetweenCities", "5" = "BetweenProvinces" } }
skpwni_no = { column = "NO_SKPWNI", optional = true }
)";

struct Converter {
  const char* name;
  adapters::SpoolConverter converter;
};

// The [[spool]] table of a mapping: `head` keys, then the fields (as [fields]).
Converter make(const char* name, const std::string& toml_text) {
  toml::table t;
  try {
    t = toml::parse(toml_text);
  } catch (const toml::parse_error&) {
    report(std::string("setup: the ") + name + " mapping is not TOML");
    std::abort();
  }
  auto c = adapters::SpoolConverter::create(t);
  if (!c) {
    report(std::string("setup: the ") + name + " mapping is refused: " + c.error().to_string());
    std::abort();
  }
  return Converter{name, std::move(*c)};
}

std::vector<Converter>& converters() {
  static auto list = [] {
    std::string birth_fields(kBirthFields);
    birth_fields.replace(birth_fields.find("[spool.fields]"), 14, "[fields]");
    std::vector<Converter> out;
    out.push_back(
        make("births-csv", "dir = \"fuzz\"\nformat = \"csv\"\nkind = \"birth\"\n" + birth_fields));
    out.push_back(make("deaths-csv", std::string(kDeaths)));
    out.push_back(make("moves-csv", std::string(kMoves)));
    out.push_back(make("births-jsonl",
                       "dir = \"fuzz\"\nformat = \"jsonl\"\nkind = \"birth\"\n" + birth_fields));
    out.push_back(make("events-jsonl", "dir = \"fuzz\"\nformat = \"jsonl\"\n"));
    return out;
  }();
  return list;
}

schemas::JsonCodec& codec() {
  static auto c = [] {
    auto r = schemas::JsonCodec::create();
    if (!r) {
      report("setup: JsonCodec::create failed");
      std::abort();
    }
    return std::move(*r);
  }();
  return c;
}

void check_from_json(std::string_view text) {
  auto a = codec().from_json(text);
  auto b = codec().from_json(text);
  if (a.has_value() != b.has_value()) return report("from_json: two answers to one line");
  if (!a) {
    count("json.refused");
    if (a.error().message.empty()) report("from_json: an error without a message");
    return;
  }
  count("json.encoded");
  if (a->bytes != b->bytes || a->id != b->id) return report("from_json is not deterministic");
  if (a->id_derived && ((a->id.bytes[6] >> 4) != 8 || (a->id.bytes[8] & 0xC0) != 0x80)) {
    return report("from_json: a derived id that is not a version-8 RFC UUID");
  }
  (void)codec().to_json(a->bytes);
  const schemas::ValidationContext ctx{schemas::RegionTable::embedded(), kNow};
  if (!schemas::validate_event(a->bytes, ctx)) {
    count("json.valid");
    if (!codec().to_json(a->bytes)) report("to_json fails on a valid event from from_json");
  }
}

void check_csv(std::string_view text, char delimiter) {
  std::size_t last = 0;
  for (const auto& r : adapters::parse_csv(text, delimiter)) {
    if (r.line <= last) return report("parse_csv: records out of line order");
    last = r.line;
    if (!r.error.empty() && !r.fields.empty()) return report("parse_csv: fields on an error");
  }
}

void check_convert(Converter& c, std::string_view text) {
  const auto out = c.converter.convert(text, kNow);
  if (out.events.size() + out.rejects.size() + out.skipped_empty != out.lines) {
    return report(std::string(c.name) + ": events + rejects + empty != lines");
  }
  count(std::string("spool.") + c.name + (out.events.empty() ? ".no_event" : ".event"));
  const schemas::ValidationContext ctx{schemas::RegionTable::embedded(), kNow};
  std::vector<std::size_t> lines, reject_lines;
  for (const auto& e : out.events) {
    lines.push_back(e.line);
    if (auto v = schemas::validate_event(e.event.bytes, ctx)) {
      return report(std::string(c.name) + ": an event that fails validate_event: " + v->message);
    }
  }
  for (const auto& r : out.rejects) {
    reject_lines.push_back(r.line);
    if (r.reason.rfind("line " + std::to_string(r.line) + ": ", 0) != 0 || r.code.empty()) {
      return report(std::string(c.name) + ": a reject without its line or code: " + r.reason);
    }
  }
  if (!std::is_sorted(lines.begin(), lines.end()) ||
      !std::is_sorted(reject_lines.begin(), reject_lines.end())) {
    return report(std::string(c.name) + ": events or rejects out of line order");
  }
  lines.insert(lines.end(), reject_lines.begin(), reject_lines.end());
  std::sort(lines.begin(), lines.end());
  if (std::adjacent_find(lines.begin(), lines.end()) != lines.end()) {
    return report(std::string(c.name) + ": a line both queued and rejected, or twice");
  }
  // Read again a minute later: each line queued both times has the same id
  // (recorded_at = "now" is not part of it). A time near the clock-skew limit may
  // turn valid in that minute, so only lines queued both times are compared.
  const auto again = c.converter.convert(text, kNow + 60'000);
  std::size_t j = 0;
  for (const auto& e : out.events) {
    while (j < again.events.size() && again.events[j].line < e.line) ++j;
    if (j < again.events.size() && again.events[j].line == e.line &&
        again.events[j].event.id != e.event.id) {
      return report(std::string(c.name) + ": a second reading derives another id for line " +
                    std::to_string(e.line));
    }
  }
}

}  // namespace

void json_one(std::span<const std::uint8_t> data) {
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  check_from_json(text);
  for (char d : {',', ';', '\t'}) check_csv(text, d);
  for (auto& c : converters()) check_convert(c, text);
}

}  // namespace kolabus::fuzz

#ifdef KOLABUS_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kolabus::fuzz::json_one({data, size});
  return 0;
}
#endif
