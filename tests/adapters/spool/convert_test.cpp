// The spool adapter without I/O: CSV parsing, the configuration, every mapping
// feature, every rejection reason with its line number, JSON Lines, derived ids.
#include <fstream>
#include <set>
#include <sstream>

#include <doctest/doctest.h>

#include "spool_test_util.h"
#include "test_events.h"
#include <adapters/spool.h>
#include <common/clock.h>
#include <schemas/json_codec.h>
#include <tools/event_generator.h>

using namespace kolabus;
using adapters::parse_csv;
using test::kNow;

namespace {

std::vector<std::string> fields_of(const adapters::CsvRecord& r) { return r.fields; }

const adapters::SpoolReject* reject_on(const adapters::SpoolFileResult& r, std::size_t line) {
  for (const auto& x : r.rejects) {
    if (x.line == line) return &x;
  }
  return nullptr;
}

constexpr std::string_view kDeathConfig = R"(
[[spool]]
dir = "unused"
format = "csv"
delimiter = ";"
kind = "death"
recorded_at = { column = "TGL_ENTRI", date = "%Y-%m-%d %H:%M:%S" }
[spool.fields]
nik = { column = "NIK" }
name = { column = "NAMA_LGKP" }
died_at = { column = "TGL_MATI", date = "%d/%m/%Y" }
village_code = { columns = ["NO_PROP", "NO_KAB", "NO_KEC", "NO_KEL"], widths = [2, 2, 2, 4] }
place_of_death = { column = "TMPT_MATI", optional = true }
)";

constexpr std::string_view kMoveConfig = R"(
[[spool]]
dir = "unused"
format = "csv"
kind = "move"
[spool.fields]
niks = { column = "NIK_ANGGOTA", split = ";" }
kk_number = { column = "NO_KK" }
origin_village = { column = "KEL_ASAL" }
destination_village = { column = "KEL_TUJUAN" }
moved_at = { column = "TGL_PINDAH", date = "%Y-%m-%d" }
move_type = { column = "KLASIFIKASI_PINDAH", map = { "1" = "WithinKecamatan", "2" = "BetweenKecamatan", "3" = "BetweenCities", "4" = "BetweenProvinces" } }
skpwni_no = { column = "NO_SKPWNI", optional = true }
)";

}  // namespace

TEST_CASE("Spool CSV: RFC 4180 records with line numbers") {
  SUBCASE("quoted delimiters, doubled quotes, spaces before a quote") {
    auto r = parse_csv("a,b,c\n\"x,y\",\"say \"\"hi\"\"\", \"z\"\n", ',');
    REQUIRE(r.size() == 2);
    CHECK(fields_of(r[0]) == std::vector<std::string>{"a", "b", "c"});
    CHECK(fields_of(r[1]) == std::vector<std::string>{"x,y", "say \"hi\"", "z"});
    CHECK(r[1].line == 2);
    CHECK(r[1].text == "\"x,y\",\"say \"\"hi\"\"\", \"z\"");
  }
  SUBCASE("CRLF line ends, a BOM, no final line end") {
    auto r = parse_csv("\xEF\xBB\xBFh1,h2\r\n1,2\r\n3,4", ',');
    REQUIRE(r.size() == 3);
    CHECK(r[0].fields[0] == "h1");
    CHECK(fields_of(r[1]) == std::vector<std::string>{"1", "2"});
    CHECK(r[1].text == "1,2");
    CHECK(fields_of(r[2]) == std::vector<std::string>{"3", "4"});
    CHECK(r[2].line == 3);
  }
  SUBCASE("a quoted line end spans lines; the next record's line number follows") {
    auto r = parse_csv("a,b\n\"line one\r\nline two\",x\nlast,y\n", ',');
    REQUIRE(r.size() == 3);
    CHECK(r[1].fields[0] == "line one\r\nline two");
    CHECK(r[1].line == 2);
    CHECK(r[2].line == 4);
  }
  SUBCASE("other delimiters; empty fields") {
    CHECK(fields_of(parse_csv("a;b;;d\n", ';')[0]) == std::vector<std::string>{"a", "b", "", "d"});
    CHECK(fields_of(parse_csv("a|b\n", '|')[0]) == std::vector<std::string>{"a", "b"});
    CHECK(fields_of(parse_csv("a\t\tc\n", '\t')[0]) == std::vector<std::string>{"a", "", "c"});
    CHECK(fields_of(parse_csv("a,b,\n", ',')[0]) == std::vector<std::string>{"a", "b", ""});
  }
  SUBCASE("blank lines are marked empty") {
    auto r = parse_csv("a\n\n  \r\nb\n", ',');
    REQUIRE(r.size() == 4);
    CHECK(!r[0].empty);
    CHECK(r[1].empty);
    CHECK(r[2].empty);
    CHECK(r[3].line == 4);
  }
  SUBCASE("text after a closing quote: that record only") {
    auto r = parse_csv("\"ab\"c,d\nok,1\n", ',');
    REQUIRE(r.size() == 2);
    CHECK(r[0].error.find("after a closing quote") != std::string::npos);
    CHECK(r[0].text == "\"ab\"c,d");
    CHECK(r[1].error.empty());
    CHECK(r[1].line == 2);
  }
  SUBCASE("an unterminated quote runs to the end") {
    auto r = parse_csv("a,b\n1,\"open\n2,3\n", ',');
    REQUIRE(r.size() == 2);
    CHECK(r[1].error == "unterminated quoted field (opened on line 2)");
    CHECK(r[1].text == "1,\"open\n2,3");
  }
}

TEST_CASE("Spool config: every key checked, errors name it") {
  CHECK(test::config_error(test::birth_config()) == "");
  SUBCASE("unknown keys") {
    CHECK(test::config_error(test::birth_config("unused", "colour = 1"))
              .find("unknown key \"colour\"") != std::string::npos);
    auto e = test::config_error(test::birth_config() + "x = { column = \"A\" }\n");
    CHECK(e.find("fields.x") != std::string::npos);
    CHECK(e.find("Birth has no field \"x\"") != std::string::npos);
    e = test::config_error(test::birth_config() + "birth_certificate_no = { colum = \"A\" }\n");
    CHECK(e.find("fields.birth_certificate_no: unknown key \"colum\"") != std::string::npos);
  }
  SUBCASE("required keys and values") {
    CHECK(test::config_error("[[spool]]\nformat = \"jsonl\"\n").find("dir: is required") !=
          std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\n").find("format: is required") !=
          std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"xml\"\n").find("format:") !=
          std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"csv\"\n").find("fields:") !=
          std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"jsonl\"\nkind = \"birth\"\n")
              .find("kind: only with") != std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"jsonl\"\npoll_ms = 0\n")
              .find("poll_ms") != std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"jsonl\"\ndelimiter = \";\"\n")
              .find("delimiter: only for") != std::string::npos);
    CHECK(test::config_error(test::birth_config("unused", "delimiter = \":\"")).find("delimiter") !=
          std::string::npos);
    CHECK(test::config_error(test::birth_config("unused", "recorded_at = 5")).find("recorded_at") !=
          std::string::npos);
    CHECK(test::config_error("[[spool]]\ndir = \"d\"\nformat = \"jsonl\"\n") == "");
  }
  SUBCASE("the mapping against the schema") {
    std::string cfg = test::birth_config();
    const std::string mother = "mother_nik = { column = \"NIK_IBU\" }";
    cfg.replace(cfg.find(mother), mother.size(), "");
    CHECK(test::config_error(cfg).find("\"mother_nik\" is needed for a birth") !=
          std::string::npos);
    cfg = test::birth_config();
    cfg.replace(cfg.find("\"2\" = \"Female\""), 14, "\"2\" = \"Femme\"");
    CHECK(test::config_error(cfg).find("fields.sex: map.2: \"Femme\" is not one of") !=
          std::string::npos);
    cfg = test::birth_config();
    cfg.replace(cfg.find("widths = [2, 2, 2, 4]"), 21, "widths = [2, 2]");
    CHECK(test::config_error(cfg).find("fields.village_code: widths") != std::string::npos);
    cfg = test::birth_config();
    cfg.replace(cfg.find("date = \"%d-%m-%Y\""), 17, "date = \"%d-%b-%Y\"");
    CHECK(test::config_error(cfg).find("fields.born_at: date: unsupported conversion") !=
          std::string::npos);
    cfg = test::birth_config();
    cfg.replace(cfg.find("\"+07:00\""), 8, "\"WIB\"");
    CHECK(test::config_error(cfg).find("utc_offset") != std::string::npos);
    cfg = test::birth_config() + "child_nik = { column = \"NIK\", split = \";\" }\n";
    CHECK(test::config_error(cfg).find("fields.child_nik: split") != std::string::npos);
    cfg = test::birth_config() + "birth_certificate_no = { column = \"A\", value = \"B\" }\n";
    CHECK(test::config_error(cfg).find("exactly one of column, columns, value") !=
          std::string::npos);
  }
}

TEST_CASE("Spool mapping: a SIAK birth row becomes a valid Birth") {
  auto conv = test::converter(test::birth_config());
  const std::string text = std::string(test::kBirthHeader) + test::birth_row("Putri Siregar");
  auto r = conv.convert(text, kNow);
  REQUIRE(r.rejects.empty());
  REQUIRE(r.events.size() == 1);
  CHECK(r.lines == 1);
  CHECK(r.events[0].line == 2);
  auto j = test::to_json(r.events[0]);
  CHECK(j["payload_type"] == "Birth");
  const auto& p = j["payload"];
  CHECK(p["child_name"] == "Putri Siregar");
  CHECK(p["sex"] == "Female");               // map
  CHECK(p["village_code"] == "1271011001");  // columns + widths ("1" -> "01")
  CHECK(p["born_at"] == 1732066200000);      // 2024-11-20 08:30 WIB = 01:30 UTC
  CHECK(j["occurred_at"] == 1732066200000);  // the payload's own date
  CHECK(j["recorded_at"] == kNow);           // "now"
  CHECK(j["regions"] == nlohmann::json::array({"1271011001"}));
  CHECK(p["reporting_facility"] == "RSUD dr. Pirngadi");  // value
  CHECK(p["place_of_birth"] == "RSU Medan");
  CHECK(p["father_nik"] == "1271011505900002");

  SUBCASE("optional fields may be empty; an empty time is midnight local") {
    auto r2 =
        conv.convert(std::string(test::kBirthHeader) +
                         "1271015203950001,,1271012002200001,Budi,1,20-11-2024,,,12,71,01,1001\n",
                     kNow);
    REQUIRE(r2.events.size() == 1);
    auto j2 = test::to_json(r2.events[0]);
    CHECK(!j2["payload"].contains("father_nik"));
    CHECK(!j2["payload"].contains("place_of_birth"));
    CHECK(j2["payload"]["sex"] == "Male");
    CHECK(j2["payload"]["born_at"] == 1732035600000);  // 2024-11-20 00:00 WIB
  }
  SUBCASE("header names are trimmed; values too; columns in any order") {
    auto r2 = conv.convert(
        " NAMA_LGKP , NIK_IBU,NO_KK,JENIS_KLMIN,TGL_LHR,JAM_LHR,NO_PROP,NO_KAB,NO_KEC,NO_KEL\n"
        "\" Putri Siregar \",1271015203950001, 1271012002200001 ,PEREMPUAN,20-11-2024,8:30,12,71,1,"
        "1001\n",
        kNow);
    REQUIRE(r2.rejects.empty());
    auto j2 = test::to_json(r2.events.at(0));
    CHECK(j2["payload"]["child_name"] == "Putri Siregar");
    CHECK(j2["payload"]["kk_number"] == "1271012002200001");
    CHECK(j2["payload"]["born_at"] == 1732066200000);
  }
}

TEST_CASE("Spool mapping: deaths with a recorded_at column, moves with split and map") {
  SUBCASE("death") {
    auto conv = test::converter(kDeathConfig);
    auto r = conv.convert(
        "NIK;NAMA_LGKP;TGL_MATI;NO_PROP;NO_KAB;NO_KEC;NO_KEL;TMPT_MATI;TGL_ENTRI\n"
        "1271011505500003;Budi Lubis;10/11/2024;12;71;02;1001;RSUP H. Adam Malik;2024-11-12 "
        "09:00:00\n",
        kNow);
    REQUIRE(r.rejects.empty());
    REQUIRE(r.events.size() == 1);
    auto j = test::to_json(r.events[0]);
    CHECK(j["payload_type"] == "Death");
    CHECK(j["payload"]["village_code"] == "1271021001");
    CHECK(j["payload"]["died_at"] == 1731171600000);  // 2024-11-10 00:00 WIB
    CHECK(j["recorded_at"] == 1731376800000);         // 2024-11-12 09:00 WIB
  }
  SUBCASE("move") {
    auto conv = test::converter(kMoveConfig);
    auto r = conv.convert(
        "NIK_ANGGOTA,NO_KK,KEL_ASAL,KEL_TUJUAN,TGL_PINDAH,KLASIFIKASI_PINDAH,NO_SKPWNI\n"
        "\"1271015203950001; 1271011505900002;\",1271012002200001,1271021001,1271011001,2024-11-"
        "15,2,SKPWNI/1271/2024/0001\n",
        kNow);
    REQUIRE(r.rejects.empty());
    REQUIRE(r.events.size() == 1);
    auto j = test::to_json(r.events[0]);
    CHECK(j["payload"]["niks"] ==
          nlohmann::json::array({"1271015203950001", "1271011505900002"}));  // split, trimmed
    CHECK(j["payload"]["move_type"] == "BetweenKecamatan");
    CHECK(j["regions"] == nlohmann::json::array({"1271011001", "1271021001"}));  // sorted
  }
}

TEST_CASE("Spool mapping: each bad line is rejected with its line number and reason") {
  auto conv = test::converter(test::birth_config());
  std::string text = std::string(test::kBirthHeader);
  text += test::birth_row("Good One", 20);                                                 // 2
  text += "\n";                                                                            // 3
  text += ",,1271012002200001,Nobody,2,20-11-2024,08:30,,12,71,1,1001\n";                  // 4
  text += "1271015203950001,,1271012002200001,X,3,20-11-2024,08:30,,12,71,1,1001\n";       // 5
  text += "1271015203950001,,1271012002200001,X,2,31-02-2024,08:30,,12,71,1,1001\n";       // 6
  text += "1271015203950001,,1271012002200001,X,2,20-11-2024,25:30,,12,71,1,1001\n";       // 7
  text += "1271015203950001,,1271012002200001,X,2,20-11-2024,08:30,,12,71,123,1001\n";     // 8
  text += "1271015203950001,,1271012002200001,X,2,20-11-2024\n";                           // 9
  text += "1271011203950001,,1271012002200001,X,2,20-11-2024,08:30,,12,71,1,1001\n";       // 10
  text += "1271015203950001,,1271012002200001,X,2,20-11-2024,08:30,,12,71,1,9999\n";       // 11
  text += "1271015203950001,,1271012002200001,\"X\"y,2,20-11-2024,08:30,,12,71,1,1001\n";  // 12
  text += "1271015203950001,,1271012002200001,X,2,20-11-2030,08:30,,12,71,1,1001\n";       // 13
  text += test::birth_row("Good Two", 21);                                                 // 14

  auto r = conv.convert(text, kNow);
  CHECK(r.events.size() == 2);
  CHECK(r.skipped_empty == 1);
  CHECK(r.rejects.size() == 10);
  CHECK(r.lines == 13);
  CHECK(r.lines == r.events.size() + r.rejects.size() + r.skipped_empty);

  struct Expect {
    std::size_t line;
    std::string code, field, reason;
  };
  const Expect expected[] = {
      {4, "MappingError", "payload.mother_nik", "line 4: NIK_IBU is empty (payload.mother_nik)"},
      {5, "MappingError", "payload.sex",
       "line 5: JENIS_KLMIN value \"3\" is not in the map (payload.sex)"},
      {6, "MappingError", "payload.born_at",
       "line 6: TGL_LHR value \"31-02-2024\" is not a date in the format %d-%m-%Y "
       "(payload.born_at)"},
      {7, "MappingError", "payload.born_at",
       "line 7: TGL_LHR value \"20-11-2024\" has an impossible time of day (payload.born_at)"},
      {8, "MappingError", "payload.village_code",
       "line 8: NO_KEC value \"123\" is not a number of at most 2 digits (payload.village_code)"},
      {9, "ParseError", "", "line 9: has 6 fields, the header has 12"},
      {10, "InvalidNik", "payload.mother_nik", ""},
      {11, "UnknownRegion", "", ""},
      {12, "ParseError", "", ""},
      {13, "InvalidDate", "", ""},
  };
  for (const auto& e : expected) {
    CAPTURE(e.line);
    const auto* x = reject_on(r, e.line);
    REQUIRE(x != nullptr);
    CHECK(x->code == e.code);
    if (!e.field.empty()) CHECK(x->field == e.field);
    if (!e.reason.empty()) CHECK(x->reason == e.reason);
    CHECK(x->reason.rfind("line " + std::to_string(e.line) + ": ", 0) == 0);
  }
  CHECK(reject_on(r, 4)->record == ",,1271012002200001,Nobody,2,20-11-2024,08:30,,12,71,1,1001");
  CHECK(reject_on(r, 10)->reason ==
        "line 10: payload.mother_nik: day part 12 is a man's; a mother's NIK must have 40 added "
        "to the day");
  CHECK(reject_on(r, 13)->reason.find("future") != std::string::npos);
  CHECK(r.events[0].line == 2);
  CHECK(r.events[1].line == 14);
}

TEST_CASE("Spool mapping: a missing column rejects every line, and a broken header too") {
  auto conv = test::converter(test::birth_config());
  SUBCASE("a required column is not in the header") {
    auto r = conv.convert("NAMA_LGKP,NO_KK\nA,1\nB,2\n", kNow);
    REQUIRE(r.rejects.size() == 2);
    CHECK(r.rejects[0].reason.find("is missing from the record") != std::string::npos);
  }
  SUBCASE("a duplicated header column: the header and every line are rejected") {
    auto r = conv.convert("A,A\n1,2\n\n3,4\n", kNow);
    REQUIRE(r.rejects.size() == 3);
    CHECK(r.rejects[0].line == 1);
    CHECK(r.rejects[0].reason == "line 1: header: column \"A\" appears twice");
    CHECK(r.rejects[2].reason.find("the header (line 1) is unusable") != std::string::npos);
    CHECK(r.lines == 4);
    CHECK(r.skipped_empty == 1);
  }
  SUBCASE("an empty file, or a header only") {
    CHECK(conv.convert("", kNow).lines == 0);
    auto r = conv.convert(test::kBirthHeader, kNow);
    CHECK(r.lines == 0);
    CHECK(r.events.empty());
    CHECK(r.rejects.empty());
  }
}

TEST_CASE("Spool: a file that is not UTF-8 text has every line rejected") {
  auto conv = test::converter(test::birth_config());
  std::string text = std::string(test::kBirthHeader) + test::birth_row("Putri") +
                     "1271015203950001,,1271012002200001,Jos\xE9,2,20-11-2024,08:30,,12,71,1,1001\n"
                     "\n" +
                     std::string("\x00\x01\x02", 3) + "\n";
  auto r = conv.convert(text, kNow);
  CHECK(r.events.empty());
  CHECK(r.rejects.size() == 4);  // the header too: nothing of the file is trusted
  CHECK(r.skipped_empty == 1);
  for (const auto& x : r.rejects) {
    CHECK(x.code == "Encoding");
    CHECK(x.reason.find("not UTF-8 text") != std::string::npos);
    CHECK(x.reason.find("first bad byte on line 3") != std::string::npos);
  }
}

TEST_CASE("Spool JSON Lines: kolabus events without a mapping") {
  auto conv = test::converter("[[spool]]\ndir = \"d\"\nformat = \"jsonl\"\n");
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {7, "1271", kNow - 86400000});
  auto codec = schemas::JsonCodec::create();
  REQUIRE(codec.has_value());
  const auto e1 = gen.next();
  const auto e2 = gen.next();
  const std::string with_id = *codec->to_json(e1);
  nlohmann::json no_id = nlohmann::json::parse(*codec->to_json(e2));
  no_id.erase("id");
  nlohmann::json no_recorded = no_id;
  no_recorded.erase("recorded_at");
  nlohmann::json bad = no_id;
  bad["regions"] = nlohmann::json::array({"1271011001", "1271011001"});

  const std::string text = with_id + "\r\n" + no_id.dump() + "\n\n" + no_recorded.dump() + "\n" +
                           "{not json\n" + "[1,2]\n" + bad.dump() + "\n" +
                           R"({"payload_type":"Birth","payload":{"colour":"red"}})" + "\n";
  auto r = conv.convert(text, kNow);
  REQUIRE(r.events.size() == 3);
  CHECK(r.skipped_empty == 1);
  CHECK(r.lines == 8);
  CHECK(r.events[0].event.id == test::id_of(e1));  // an "id" is kept
  CHECK(!r.events[0].event.id_derived);
  CHECK(r.events[1].event.id_derived);
  CHECK(r.events[1].event.id != test::id_of(e2));
  CHECK(r.events[2].line == 4);
  CHECK(test::to_json(r.events[2])["recorded_at"] == kNow);  // filled in: "now"
  REQUIRE(r.rejects.size() == 4);
  CHECK(r.rejects[0].line == 5);
  CHECK(r.rejects[0].code == "ParseError");
  CHECK(r.rejects[0].reason.rfind("line 5: invalid JSON", 0) == 0);
  CHECK(r.rejects[1].reason == "line 6: a line must be one JSON object");
  CHECK(r.rejects[2].code == "InvalidRegions");
  CHECK(r.rejects[2].field == "regions[1]");
  CHECK(r.rejects[3].code == "SchemaError");
  CHECK(r.rejects[3].reason.find("colour") != std::string::npos);
}

TEST_CASE("Spool JSON Lines with a mapping: the keys are the columns") {
  std::string cfg = test::birth_config();
  cfg.replace(cfg.find("format = \"csv\""), 14, "format = \"jsonl\"");
  auto conv = test::converter(cfg);
  auto r = conv.convert(
      R"({"NAMA_LGKP":"Putri","JENIS_KLMIN":2,"TGL_LHR":"20-11-2024","JAM_LHR":"08:30","NO_PROP":12,"NO_KAB":71,"NO_KEC":1,"NO_KEL":1001,"NIK_IBU":"1271015203950001","NIK_AYAH":null,"NO_KK":"1271012002200001"})"
      "\n"
      R"({"NAMA_LGKP":{"first":"Putri"},"JENIS_KLMIN":2,"TGL_LHR":"20-11-2024","JAM_LHR":"08:30","NO_PROP":12,"NO_KAB":71,"NO_KEC":1,"NO_KEL":1001,"NIK_IBU":"1271015203950001","NO_KK":"1271012002200001"})"
      "\n",
      kNow);
  REQUIRE(r.events.size() == 1);
  auto j = test::to_json(r.events[0]);
  CHECK(j["payload"]["village_code"] == "1271011001");
  CHECK(j["payload"]["sex"] == "Female");
  CHECK(!j["payload"].contains("father_nik"));
  REQUIRE(r.rejects.size() == 1);
  CHECK(r.rejects[0].reason == "line 2: NAMA_LGKP is an object (payload.child_name)");
}

TEST_CASE("Spool ids: derived from the content, the same whenever the file is read") {
  auto conv = test::converter(test::birth_config());
  const std::string text = std::string(test::kBirthHeader) + test::birth_row("Putri", 20) +
                           test::birth_row("Budi", 21, "1");
  auto a = conv.convert(text, kNow);
  auto b = conv.convert(text, kNow + 3600 * 1000);  // read again an hour later
  REQUIRE(a.events.size() == 2);
  REQUIRE(b.events.size() == 2);
  CHECK(a.events[0].event.id == b.events[0].event.id);
  CHECK(a.events[1].event.id == b.events[1].event.id);
  CHECK(a.events[0].event.id != a.events[1].event.id);
  CHECK(test::to_json(b.events[0])["recorded_at"] == kNow + 3600 * 1000);

  // Another spelling of the same record (quotes, CRLF, spaces) is the same event...
  auto c = conv.convert(std::string(test::kBirthHeader) +
                            "1271015203950001,\"1271011505900002\",1271012002200001,\"Putri\","
                            "2,20-11-2024, 08:30 ,RSU Medan,12,71,01,1001\r\n",
                        kNow);
  REQUIRE(c.events.size() == 1);
  CHECK(c.events[0].event.id == a.events[0].event.id);
  // ... a different record is another.
  auto d = conv.convert(std::string(test::kBirthHeader) + test::birth_row("Putra", 20), kNow);
  REQUIRE(d.events.size() == 1);
  CHECK(d.events[0].event.id != a.events[0].event.id);
}

TEST_CASE("Spool docs: the examples in docs/SPOOL.md convert without a reject") {
  std::ifstream in(KOLABUS_SPOOL_DOC);
  REQUIRE(in.good());
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string doc = buf.str();
  // Each example: a ```toml block after "<!-- example -->", then the next ```csv or
  // ```jsonl block is its sample.
  auto block_after = [&](std::size_t from,
                         std::string_view fence) -> std::pair<std::string, std::size_t> {
    const std::size_t open = doc.find(std::string(fence) + "\n", from);
    REQUIRE(open != std::string::npos);
    const std::size_t body = open + fence.size() + 1;
    const std::size_t close = doc.find("```\n", body);
    REQUIRE(close != std::string::npos);
    return {doc.substr(body, close - body), close};
  };
  const TimeMs now = 1796083200000;  // 2026-12-01 00:00 UTC, after every sample date
  std::size_t examples = 0;
  for (std::size_t at = doc.find("<!-- example -->"); at != std::string::npos;
       at = doc.find("<!-- example -->", at + 1)) {
    // Not a structured binding: CAPTURE below is a lambda, which clang before 16
    // refuses for structured bindings.
    const auto toml_block = block_after(at, "```toml");
    const std::string& toml_text = toml_block.first;
    const std::size_t toml_end = toml_block.second;
    auto conv = test::converter(toml_text);
    const bool csv = conv.settings().format == adapters::SpoolFormat::kCsv;
    const auto [sample, sample_end] = block_after(toml_end, csv ? "```csv" : "```jsonl");
    (void)sample_end;
    CAPTURE(toml_text);
    auto r = conv.convert(sample, now);
    for (const auto& x : r.rejects) CHECK_MESSAGE(false, x.reason);
    CHECK(r.events.size() >= 1);
    CHECK(r.events.size() == r.lines);
    ++examples;
  }
  CHECK(examples == 4);
}
