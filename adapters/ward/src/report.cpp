// ward_report (adapters/ward.h): counts per village and change over a register.
#include <array>
#include <ctime>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "register.h"
#include <adapters/ward.h>
#include <schemas/regions.h>

namespace kolabus::adapters {
namespace {

constexpr std::array<const char*, 7> kChanges = {
    "born", "died", "moved_in", "moved_out", "moved_within", "corrected", "voided"};
constexpr std::array<const char*, 7> kHeadings = {
    "born", "died", "moved in", "moved out", "moved within", "corrected", "voided"};
using Counts = std::array<std::uint64_t, kChanges.size()>;

int change_index(std::string_view change) {
  for (std::size_t i = 0; i < kChanges.size(); ++i) {
    if (change == kChanges[i]) return static_cast<int>(i);
  }
  return -1;
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

Error sqlite_error(sqlite3* db, const std::string& what) {
  return Error{Errc::kIoError, what + ": " + sqlite3_errmsg(db)};
}

std::string utc(TimeMs ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  if (ms < 0 && ms % 1000 != 0) --secs;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string pad_left(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}
std::string pad_right(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

}  // namespace

Result<std::string> ward_report(const toml::table& ward_table, const AgencyContext& context,
                                TimeMs from, TimeMs to, bool json) {
  auto config = ward::parse_config(ward_table, context);
  if (!config) return kolabus::unexpected(config.error());
  auto reg = ward::Register::open(config->register_path, ward::OpenMode::kReadOnly);
  if (!reg) return kolabus::unexpected(reg.error());
  sqlite3* db = (*reg)->db();

  // Village -> counts, for the register's villages in the period.
  std::map<std::string, Counts> villages;
  const auto& table = schemas::RegionTable::embedded();
  for (const auto& p : config->regions) {
    if (p.size() == 10) villages[p] = {};
    if (p.size() == 6) {
      for (const auto* v : table.children(p)) villages[std::string(v->code)] = {};
    }
  }
  {
    Stmt st;
    const char* sql =
        "SELECT village, change, COUNT(*) FROM events WHERE occurred_at >= ?1 AND "
        "occurred_at < ?2 GROUP BY village, change";
    if (sqlite3_prepare_v2(db, sql, -1, &st.s, nullptr) != SQLITE_OK) {
      return kolabus::unexpected(sqlite_error(db, "register " + config->register_path));
    }
    sqlite3_bind_int64(st.s, 1, from);
    sqlite3_bind_int64(st.s, 2, to);
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
      const std::string village = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0));
      const std::string change = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 1));
      const auto n = static_cast<std::uint64_t>(sqlite3_column_int64(st.s, 2));
      const int i = change_index(change);
      // Foreign rows are reported apart; unknown changes cannot be written by the adapter.
      if (i < 0 || !ward::inside(village, config->regions)) continue;
      villages[village][static_cast<std::size_t>(i)] += n;
    }
    if (rc != SQLITE_DONE) {
      return kolabus::unexpected(sqlite_error(db, "register " + config->register_path));
    }
  }
  std::uint64_t rows = 0;
  std::uint64_t foreign = 0;
  {
    Stmt st;
    if (sqlite3_prepare_v2(db, "SELECT village, COUNT(*) FROM events GROUP BY village", -1, &st.s,
                           nullptr) != SQLITE_OK) {
      return kolabus::unexpected(sqlite_error(db, "register " + config->register_path));
    }
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
      const std::string village = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0));
      const auto n = static_cast<std::uint64_t>(sqlite3_column_int64(st.s, 1));
      rows += n;
      if (!ward::inside(village, config->regions)) foreign += n;
    }
    if (rc != SQLITE_DONE) {
      return kolabus::unexpected(sqlite_error(db, "register " + config->register_path));
    }
  }

  Counts totals{};
  for (const auto& [code, counts] : villages) {
    for (std::size_t i = 0; i < counts.size(); ++i) totals[i] += counts[i];
  }
  auto name_of = [&](const std::string& code) {
    const schemas::Region* r = table.find(code);
    return r != nullptr ? std::string(r->name) : std::string("?");
  };
  std::string regions_text;
  for (const auto& p : config->regions) regions_text += (regions_text.empty() ? "" : ", ") + p;

  if (json) {
    auto counts_json = [](const Counts& c) {
      nlohmann::ordered_json o;
      std::uint64_t total = 0;
      for (std::size_t i = 0; i < c.size(); ++i) {
        o[kChanges[i]] = c[i];
        total += c[i];
      }
      o["total"] = total;
      return o;
    };
    nlohmann::ordered_json out;
    out["register"] = config->register_path;
    out["regions"] = config->regions;
    out["from"] = from;
    out["to"] = to;
    out["villages"] = nlohmann::ordered_json::array();
    for (const auto& [code, counts] : villages) {
      nlohmann::ordered_json v;
      v["code"] = code;
      v["name"] = name_of(code);
      v.update(counts_json(counts));
      out["villages"].push_back(std::move(v));
    }
    out["totals"] = counts_json(totals);
    out["rows"] = rows;
    out["foreign"] = foreign;
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  std::size_t name_width = 4;
  for (const auto& [code, counts] : villages)
    name_width = std::max(name_width, name_of(code).size());
  std::string out = "Ward register " + config->register_path + ", regions " + regions_text + "\n";
  out += "Events that occurred in [" + utc(from) + ", " + utc(to) + ") UTC\n\n";
  auto line = [&](const std::string& code, const std::string& name, const Counts& c) {
    std::string l = pad_right(code, 10) + "  " + pad_right(name, name_width);
    for (std::size_t i = 0; i < c.size(); ++i) {
      l += "  " + pad_left(std::to_string(c[i]), std::string(kHeadings[i]).size());
    }
    return l + "\n";
  };
  std::string head = pad_right("village", 10) + "  " + pad_right("name", name_width);
  for (const char* h : kHeadings) head += std::string("  ") + h;
  out += head + "\n";
  for (const auto& [code, counts] : villages) out += line(code, name_of(code), counts);
  out += line("total", "", totals);
  out += "\nRows in the register: " + std::to_string(rows) + ". Foreign rows (village outside " +
         regions_text + "): " + std::to_string(foreign) + ".\n";
  return out;
}

}  // namespace kolabus::adapters
