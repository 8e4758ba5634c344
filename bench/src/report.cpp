#include "report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include <sys/utsname.h>
#include <unistd.h>

#include "stats.h"

namespace kolabus::bench {

Row& Table::row(const std::string& label, const std::string& metric) {
  for (auto& r : rows) {
    if (r.label == label && r.metric == metric) return r;
  }
  rows.push_back(Row{label, metric, {}});
  return rows.back();
}

void Table::set(const std::string& label, const std::string& metric, const std::string& system,
                double value, std::string note) {
  row(label, metric).cells[system] = Cell{value, std::move(note)};
}

void Table::skip(const std::string& label, const std::string& metric, const std::string& system,
                 std::string why) {
  row(label, metric).cells[system] = Cell{std::nullopt, std::move(why)};
}

void Report::print_header() const {
  std::cout << "kolabus-bench";
  for (const auto& [key, value] : header_.items()) {
    std::cout << "\n  " << key << ": ";
    if (value.is_string()) {
      std::cout << value.get<std::string>();
    } else if (value.is_object()) {
      bool first = true;
      for (const auto& [k, v] : value.items()) {
        std::cout << (first ? "" : ", ") << k << " "
                  << (v.is_string() ? v.get<std::string>() : v.dump());
        first = false;
      }
    } else {
      std::cout << value.dump();
    }
  }
  std::cout << "\n" << std::endl;
}

void Report::print_durability() const {
  std::cout << "Durability of an acknowledgement:\n";
  for (const auto& [system, text] : durability_)
    std::cout << "  " << system << ": " << text << "\n";
  std::cout << std::endl;
}

void Report::print_table(const Table& t) const {
  // Columns: configuration, metric, then per system its figure and (for the
  // references) kolabus/reference.
  std::vector<std::string> head{"configuration", "metric"};
  for (const auto& s : t.systems) {
    head.push_back(s);
    if (s != kKolabus) head.push_back("kolabus/" + s);
  }
  std::vector<std::vector<std::string>> lines{head};
  for (const auto& r : t.rows) {
    std::vector<std::string> line{r.label, r.metric};
    const auto k = r.cells.find(kKolabus);
    for (const auto& s : t.systems) {
      const auto c = r.cells.find(s);
      if (c == r.cells.end()) {
        line.push_back("-");
      } else if (c->second.value) {
        line.push_back(human(*c->second.value));
      } else {
        line.push_back(c->second.note.rfind("skipped", 0) == 0 ? "skipped" : "n/a");
      }
      if (s == kKolabus) continue;
      if (k != r.cells.end() && k->second.value && c != r.cells.end() && c->second.value &&
          *c->second.value != 0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2fx", *k->second.value / *c->second.value);
        line.push_back(buf);
      } else {
        line.push_back("-");
      }
    }
    lines.push_back(std::move(line));
  }
  std::vector<std::size_t> width(head.size(), 0);
  for (const auto& l : lines) {
    for (std::size_t i = 0; i < l.size(); ++i) width[i] = std::max(width[i], l[i].size());
  }
  std::cout << "== " << t.name << ": " << t.title << "\n";
  for (std::size_t n = 0; n < lines.size(); ++n) {
    const auto& l = lines[n];
    std::string out;
    for (std::size_t i = 0; i < l.size(); ++i) {
      const std::string pad(width[i] - l[i].size(), ' ');
      out += i < 2 ? l[i] + pad : pad + l[i];  // text left, numbers right
      if (i + 1 < l.size()) out += "  ";
    }
    std::cout << out << "\n";
    if (n == 0) std::cout << std::string(out.size(), '-') << "\n";
  }
  // Remarks attached to single figures, then the table's notes.
  std::set<std::string> said;  // a reason shared by several figures is said once
  for (const auto& r : t.rows) {
    for (const auto& s : t.systems) {
      const auto c = r.cells.find(s);
      if (c == r.cells.end() || c->second.note.empty()) continue;
      if (!c->second.value) {
        if (!said.insert(s + "\n" + c->second.note).second) continue;
        std::cout << "  * " << s << ": " << c->second.note << "\n";
        continue;
      }
      std::cout << "  * " << s << ", " << r.label << " (" << r.metric << "): " << c->second.note
                << "\n";
    }
  }
  for (const auto& n : t.notes) std::cout << "  - " << n << "\n";
  std::cout << std::endl;
}

nlohmann::json Report::to_json() const {
  nlohmann::json j = header_;
  j["durability"] = durability_;
  auto& scenarios = j["scenarios"] = nlohmann::json::array();
  for (const auto& t : tables_) {
    nlohmann::json s{
        {"name", t.name}, {"title", t.title}, {"systems", t.systems}, {"notes", t.notes}};
    auto& rows = s["rows"] = nlohmann::json::array();
    for (const auto& r : t.rows) {
      nlohmann::json row{{"configuration", r.label}, {"metric", r.metric}};
      const auto k = r.cells.find(kKolabus);
      for (const auto& [system, cell] : r.cells) {
        row["values"][system] = cell.value ? nlohmann::json(*cell.value) : nlohmann::json();
        if (!cell.note.empty()) row["notes"][system] = cell.note;
        if (system != kKolabus && k != r.cells.end() && k->second.value && cell.value &&
            *cell.value != 0) {
          row["ratios"]["kolabus/" + system] = *k->second.value / *cell.value;
        }
      }
      rows.push_back(std::move(row));
    }
    scenarios.push_back(std::move(s));
  }
  return j;
}

nlohmann::json machine_info() {
  nlohmann::json m;
  m["nproc"] = std::thread::hardware_concurrency();
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      m["cpu"] = colon == std::string::npos ? line : line.substr(colon + 2);
      break;
    }
  }
  utsname u{};
  if (::uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) {
    m["memory_gib"] =
        std::round(static_cast<double>(pages) * static_cast<double>(page) / (1 << 30) * 10) / 10;
  }
  return m;
}

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
  return buf;
}

}  // namespace kolabus::bench
