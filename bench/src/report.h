// bench::Report: what a run measured, as plain tables on stdout and as JSON.
//
// A scenario is a table: one row per configuration and metric ("1 publisher,
// window 1000" x "events/s"), one column per system (kolabus first, then the
// references), and for every reference a ratio column kolabus/reference — the only
// figures worth comparing across machines. A missing figure carries a note instead
// ("skipped: nats-server not installed", "n/a: no region filter").
//
// Ownership: owns its data. Thread-safety: none; the main thread fills it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kolabus::bench {

// The systems, in column order.
inline constexpr const char* kKolabus = "kolabus";
inline constexpr const char* kNaive = "naive";
inline constexpr const char* kJetStream = "jetstream";
inline constexpr const char* kRedis = "redis";
inline constexpr const char* kPushPull = "push-pull";

struct Cell {
  std::optional<double> value;
  std::string note;  // why there is no value, or a remark on it
};

struct Row {
  std::string label;   // the configuration
  std::string metric;  // what and its unit: "events/s", "p99 ms"
  std::map<std::string, Cell> cells;
};

struct Table {
  std::string name;                  // the scenario's key: "publish"
  std::string title;                 // one line for people
  std::vector<std::string> systems;  // columns, kolabus first
  std::vector<Row> rows;
  std::vector<std::string> notes;  // how it was measured, skipped systems, caveats

  Row& row(const std::string& label, const std::string& metric);
  void set(const std::string& label, const std::string& metric, const std::string& system,
           double value, std::string note = {});
  void skip(const std::string& label, const std::string& metric, const std::string& system,
            std::string why);
};

class Report {
 public:
  // Context printed before the tables and stored in the JSON.
  void set_header(const std::string& key, nlohmann::json value) { header_[key] = std::move(value); }
  // System -> how durable its acknowledgement is.
  void set_durability(const std::string& system, std::string text) {
    durability_[system] = std::move(text);
  }
  void add(Table table) { tables_.push_back(std::move(table)); }

  void print_header() const;  // machine, date, command, events
  void print_table(const Table& t) const;
  void print_durability() const;
  nlohmann::json to_json() const;

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::map<std::string, std::string> durability_;
  std::vector<Table> tables_;
};

// "nproc 2, AMD EPYC, Linux 6.1.0" and friends, from /proc and uname.
nlohmann::json machine_info();
// Local time, ISO 8601.
std::string now_iso8601();

}  // namespace kolabus::bench
