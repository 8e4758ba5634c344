#include <string>

#include <doctest/doctest.h>

#include <schemas/nik.h>

using kolabus::events::Sex;
using namespace kolabus::schemas;

namespace {

const kolabus::TimeMs kNow = to_epoch_ms({2025, 7, 1}) + 12 * 3'600'000;  // 2025-07-01 12:00Z

std::string nik_error(std::string_view nik, kolabus::TimeMs now = kNow) {
  auto r = parse_nik(nik, now, RegionTable::embedded());
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
}

std::string kk_error(std::string_view kk, kolabus::TimeMs now = kNow) {
  auto r = parse_kk(kk, now, RegionTable::embedded());
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
}

}  // namespace

TEST_CASE("CivilDate: epoch conversion round trips, also before 1970") {
  CHECK(to_epoch_ms({1970, 1, 1}) == 0);
  CHECK(to_epoch_ms({2000, 3, 1}) == 951'868'800'000);
  CHECK(from_epoch_ms(0) == CivilDate{1970, 1, 1});
  CHECK(from_epoch_ms(-1) == CivilDate{1969, 12, 31});
  CHECK(from_epoch_ms(to_epoch_ms({1900, 1, 1})) == CivilDate{1900, 1, 1});
  for (CivilDate d : {CivilDate{1996, 2, 29}, CivilDate{1899, 12, 31}, CivilDate{2038, 1, 19},
                      CivilDate{2100, 12, 31}}) {
    CHECK(from_epoch_ms(to_epoch_ms(d)) == d);
    CHECK(from_epoch_ms(to_epoch_ms(d) + 86'399'999) == d);
  }
  CHECK(is_valid_date({2000, 2, 29}));
  CHECK_FALSE(is_valid_date({1900, 2, 29}));
  CHECK_FALSE(is_valid_date({2023, 4, 31}));
  CHECK(format_date({1996, 2, 9}) == "1996-02-09");
}

TEST_CASE("parse_nik: valid numbers") {
  struct Ok {
    const char* nik;
    CivilDate birth;
    Sex sex;
    int serial;
  };
  const Ok cases[] = {
      {"1271011203880002", {1988, 3, 12}, Sex::Male, 2},
      {"1271015501900001", {1990, 1, 15}, Sex::Female, 1},
      {"1271017112999999", {1999, 12, 31}, Sex::Female, 9999},  // 71 = 31 + 40
      {"1271012902960001", {1996, 2, 29}, Sex::Male, 1},        // leap day
      {"1271016902960001", {1996, 2, 29}, Sex::Female, 1},      // leap day, woman
      {"1271010101000001", {2000, 1, 1}, Sex::Male, 1},
      {"1271013006250001", {2025, 6, 30}, Sex::Male, 1},  // yesterday: this century
      {"1271010107250001", {2025, 7, 1}, Sex::Male, 1},   // today
      {"1271010108260001", {1926, 8, 1}, Sex::Male, 1},   // YY 26 > 25: last century
  };
  for (const auto& c : cases) {
    const std::string input(c.nik);
    CAPTURE(input);
    auto r = parse_nik(c.nik, kNow, RegionTable::embedded());
    REQUIRE(std::holds_alternative<NikInfo>(r));
    const auto& info = std::get<NikInfo>(r);
    CHECK(info.birth_date == c.birth);
    CHECK(info.sex == c.sex);
    CHECK(info.serial == c.serial);
    CHECK(info.district_code == std::string_view(c.nik).substr(0, 6));
  }
  SUBCASE("an old district code that no longer exists is fine") {
    // 12 exists; 1299 and 129999 do not, but a NIK keeps its first registration's code.
    CHECK(nik_error("1299991203880002") == "");
  }
}

TEST_CASE("parse_nik: each rule") {
  struct Bad {
    const char* nik;
    const char* error;
  };
  const Bad cases[] = {
      {"", "must be 16 digits (got 0 characters)"},
      {"127101120388000", "must be 16 digits (got 15 characters)"},
      {"12710112038800021", "must be 16 digits (got 17 characters)"},
      {"12710112038800O2", "must be 16 digits; character 15 is not a digit"},
      {"1271-11203880002", "must be 16 digits; character 5 is not a digit"},
      {"0071011203880002", "province code 00 does not exist"},
      {"9971011203880002", "province code 99 does not exist"},
      {"1200011203880002", "regency part 00 (digits 3-4) is not a valid regency code"},
      {"1271001203880002", "district part 00 (digits 5-6) is not a valid district code"},
      {"1271013503880002", "day part 35 is not a valid day (01-31 for men, 41-71 for women)"},
      {"1271010003880002", "day part 00 is not a valid day (01-31 for men, 41-71 for women)"},
      {"1271014003880002", "day part 40 is not a valid day (01-31 for men, 41-71 for women)"},
      {"1271017203880002", "day part 72 is not a valid day (01-31 for men, 41-71 for women)"},
      {"1271011213880002", "month part 13 is not a valid month (01-12)"},
      {"1271011200880002", "month part 00 is not a valid month (01-12)"},
      {"1271012902950001", "birth date 1995-02-29 is not a calendar date"},
      {"1271016902950001", "birth date 1995-02-29 is not a calendar date"},
      {"1271013104880002", "birth date 1988-04-31 is not a calendar date"},
      {"1271010207250001", "birth date 2025-07-02 is in the future"},
      {"1271014112250001", "birth date 2025-12-01 is in the future"},
      {"1271011203880000", "serial 0000 (digits 13-16) is not valid (0001-9999)"},
  };
  for (const auto& c : cases) {
    const std::string input(c.nik);
    CAPTURE(input);
    CHECK(nik_error(c.nik) == c.error);
  }
}

TEST_CASE("parse_nik: century is the latest not after now") {
  // YY 31 seen in 2031 before February: this century, so in the future.
  const auto jan_2031 = to_epoch_ms({2031, 1, 15});
  CHECK(nik_error("1271010102310001", jan_2031) == "birth date 2031-02-01 is in the future");
  auto r = parse_nik("1271010102310001", kNow, RegionTable::embedded());
  REQUIRE(std::holds_alternative<NikInfo>(r));
  CHECK(std::get<NikInfo>(r).birth_date == CivilDate{1931, 2, 1});
  // YY 00 in 2025 is 2000; in 1999 it is 1900.
  auto y2k = parse_nik("1271010101000001", to_epoch_ms({1999, 6, 1}), RegionTable::embedded());
  REQUIRE(std::holds_alternative<NikInfo>(y2k));
  CHECK(std::get<NikInfo>(y2k).birth_date == CivilDate{1900, 1, 1});
}

TEST_CASE("parse_kk: issue date and shared rules") {
  auto ok = parse_kk("1271011506200004", kNow, RegionTable::embedded());
  REQUIRE(std::holds_alternative<KkInfo>(ok));
  CHECK(std::get<KkInfo>(ok).issued == CivilDate{2020, 6, 15});
  CHECK(std::get<KkInfo>(ok).serial == 4);
  CHECK(std::get<KkInfo>(ok).district_code == "127101");

  struct Bad {
    const char* kk;
    const char* error;
  };
  const Bad cases[] = {
      {"127101150620000", "must be 16 digits (got 15 characters)"},
      {"12710115062000x4", "must be 16 digits; character 15 is not a digit"},
      {"0071011506200004", "province code 00 does not exist"},
      {"1271005506200004", "district part 00 (digits 5-6) is not a valid district code"},
      {"1271015506200004", "day part 55 is not a valid day (01-31)"},  // no +40 on a KK
      {"1271011513200004", "month part 13 is not a valid month (01-12)"},
      {"1271012902230004", "issue date 2023-02-29 is not a calendar date"},
      {"1271010108250004", "issue date 2025-08-01 is in the future"},
      {"1271011506200000", "serial 0000 (digits 13-16) is not valid (0001-9999)"},
  };
  for (const auto& c : cases) {
    const std::string input(c.kk);
    CAPTURE(input);
    CHECK(kk_error(c.kk) == c.error);
  }
}
