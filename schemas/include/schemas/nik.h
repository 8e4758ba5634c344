// Shape rules of the two Indonesian identity numbers that events carry, and the UTC
// calendar helpers they need.
//
// NIK (Nomor Induk Kependudukan), 16 digits, no check digit:
//   digits 1-6   district (kecamatan) code where the holder was first registered;
//   digits 7-12  birth date DDMMYY, with 40 added to DD for women;
//   digits 13-16 serial, 0001-9999.
// KK number (Nomor Kartu Keluarga), 16 digits: district code, the card's issue date
// DDMMYY (no +40), serial.
//
// Only the province (digits 1-2) must exist in today's list: districts are split and
// renamed, and a NIK keeps the code of its first registration for life, so the
// regency and district parts are only required not to be "00".
//
// The century of YY is the later of 19YY and 20YY whose *year* is not after the
// current year; a date later in the current year is then refused as "in the future"
// (a typo is far likelier than a holder born 100 years ago).
//
// Thread-safety: pure functions. Ownership: the string_views in NikInfo/KkInfo borrow
// from the `nik`/`kk` argument.
#pragma once

#include <compare>
#include <string>
#include <string_view>
#include <variant>

#include <common/clock.h>
#include <schemas/events_generated.h>
#include <schemas/regions.h>

namespace kolabus::schemas {

struct CivilDate {
  int year;
  int month;
  int day;
  auto operator<=>(const CivilDate&) const = default;
};

// 00:00 UTC of that date (proleptic Gregorian; any year).
TimeMs to_epoch_ms(CivilDate date);
// The UTC date containing that instant (also for negative times).
CivilDate from_epoch_ms(TimeMs t);
// True if year/month/day name a real date (leap years included).
bool is_valid_date(CivilDate date);
// "YYYY-MM-DD".
std::string format_date(CivilDate date);

struct NikInfo {
  std::string_view district_code;  // digits 1-6, as registered then (may no longer exist)
  CivilDate birth_date;
  events::Sex sex;  // Male or Female
  int serial;       // 1-9999
};

// On failure the string names the broken rule, e.g. "must be 16 digits",
// "day part 35 is not a valid day (01-31 for men, 41-71 for women)",
// "birth date 2031-02-01 is in the future", "province code 00 does not exist".
std::variant<NikInfo, std::string> parse_nik(std::string_view nik, TimeMs now,
                                             const RegionTable& regions);

struct KkInfo {
  std::string_view district_code;
  CivilDate issued;
  int serial;
};

// As parse_nik, for a family card number; digits 7-12 are the issue date.
std::variant<KkInfo, std::string> parse_kk(std::string_view kk, TimeMs now,
                                           const RegionTable& regions);

}  // namespace kolabus::schemas
