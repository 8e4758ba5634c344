#include <cstdio>

#include <schemas/nik.h>

namespace kolabus::schemas {

namespace {

constexpr TimeMs kMsPerDay = 86'400'000;

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

CivilDate civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return CivilDate{static_cast<int>(y + (m <= 2)), static_cast<int>(m), static_cast<int>(d)};
}

int two_digits(std::string_view s, std::size_t at) {
  return (s[at] - '0') * 10 + (s[at + 1] - '0');
}

int four_digits(std::string_view s, std::size_t at) {
  return two_digits(s, at) * 100 + two_digits(s, at + 2);
}

// The checks NIK and KK share: 16 digits, province exists, regency/district not 00,
// serial not 0000. Returns an error message or empty.
std::string check_common(std::string_view s, const RegionTable& regions) {
  if (s.size() != 16) {
    return "must be 16 digits (got " + std::to_string(s.size()) + " characters)";
  }
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return "must be 16 digits; character " + std::to_string(i + 1) + " is not a digit";
    }
  }
  const std::string_view province = s.substr(0, 2);
  const Region* r = regions.find(province);
  if (r == nullptr || r->level != RegionLevel::kProvince) {
    return "province code " + std::string(province) + " does not exist";
  }
  if (s.substr(2, 2) == "00") return "regency part 00 (digits 3-4) is not a valid regency code";
  if (s.substr(4, 2) == "00") return "district part 00 (digits 5-6) is not a valid district code";
  if (s.substr(12, 4) == "0000") return "serial 0000 (digits 13-16) is not valid (0001-9999)";
  return {};
}

// The UTC year of `now`. An event's NIKs and KK all resolve against the same `now`,
// so the last answer is kept (per thread: these functions are called from many).
int year_of(TimeMs now) {
  thread_local bool known = false;
  thread_local TimeMs last_now = 0;
  thread_local int last_year = 0;
  if (!known || now != last_now) {
    last_year = from_epoch_ms(now).year;
    last_now = now;
    known = true;
  }
  return last_year;
}

// Resolves the century of a DDMMYY date and checks it is a real date not after now.
// `what` is "birth date" or "issue date". Returns an error message or empty.
std::string resolve_date(int day, int month, int yy, TimeMs now, const char* what, CivilDate* out) {
  if (month < 1 || month > 12) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "month part %02d is not a valid month (01-12)", month);
    return buf;
  }
  const int now_year = year_of(now);
  int year = 2000 + yy;
  if (year > now_year) year = 1900 + yy;
  const CivilDate date{year, month, day};
  if (!is_valid_date(date)) {
    return std::string(what) + " " + format_date(date) + " is not a calendar date";
  }
  if (to_epoch_ms(date) > now)
    return std::string(what) + " " + format_date(date) + " is in the future";
  *out = date;
  return {};
}

}  // namespace

TimeMs to_epoch_ms(CivilDate date) {
  return days_from_civil(date.year, static_cast<unsigned>(date.month),
                         static_cast<unsigned>(date.day)) *
         kMsPerDay;
}

CivilDate from_epoch_ms(TimeMs t) {
  std::int64_t days = t / kMsPerDay;
  if (t % kMsPerDay < 0) --days;  // floor for instants before 1970
  return civil_from_days(days);
}

bool is_valid_date(CivilDate d) {
  if (d.month < 1 || d.month > 12 || d.day < 1) return false;
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (d.year % 4 == 0 && d.year % 100 != 0) || d.year % 400 == 0;
  const int max = d.month == 2 && leap ? 29 : kDays[d.month - 1];
  return d.day <= max;
}

std::string format_date(CivilDate d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", d.year, d.month, d.day);
  return buf;
}

std::variant<NikInfo, std::string> parse_nik(std::string_view nik, TimeMs now,
                                             const RegionTable& regions) {
  if (auto err = check_common(nik, regions); !err.empty()) return err;
  int day = two_digits(nik, 6);
  events::Sex sex = events::Sex::Male;
  if (day >= 41 && day <= 71) {
    day -= 40;
    sex = events::Sex::Female;
  } else if (day < 1 || day > 31) {
    char buf[96];
    std::snprintf(buf, sizeof buf,
                  "day part %02d is not a valid day (01-31 for men, 41-71 for women)", day);
    return std::string(buf);
  }
  NikInfo info{nik.substr(0, 6), {}, sex, four_digits(nik, 12)};
  if (auto err = resolve_date(day, two_digits(nik, 8), two_digits(nik, 10), now, "birth date",
                              &info.birth_date);
      !err.empty()) {
    return err;
  }
  return info;
}

std::variant<KkInfo, std::string> parse_kk(std::string_view kk, TimeMs now,
                                           const RegionTable& regions) {
  if (auto err = check_common(kk, regions); !err.empty()) return err;
  const int day = two_digits(kk, 6);
  if (day < 1 || day > 31) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "day part %02d is not a valid day (01-31)", day);
    return std::string(buf);
  }
  KkInfo info{kk.substr(0, 6), {}, four_digits(kk, 12)};
  if (auto err =
          resolve_date(day, two_digits(kk, 8), two_digits(kk, 10), now, "issue date", &info.issued);
      !err.empty()) {
    return err;
  }
  return info;
}

}  // namespace kolabus::schemas
