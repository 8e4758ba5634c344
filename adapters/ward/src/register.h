// Internals of the ward register shared by the adapter and the report: the parsed
// [[ward]] table, the row classification, and the SQLite file.
//
// Ownership: a Register owns its sqlite3 connection.
// Thread-safety: one Register per thread (the connection is not shared).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/clock.h>
#include <common/result.h>
#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>

struct sqlite3;

namespace kolabus::adapters::ward {

struct WardConfig {
  std::string consumer;
  std::vector<std::string> regions;
  protocol::StartPolicy start = protocol::StartPolicy::Earliest;
  std::string register_path;
  std::uint32_t window = 100;
};

Result<WardConfig> parse_config(const toml::table& table, const AgencyContext& ctx);

bool inside(const std::string& village, const std::vector<std::string>& prefixes);

struct Row {
  std::string event_id;
  std::uint64_t sequence = 0;
  std::string kind;
  std::string change;
  std::string village;
  std::optional<std::string> name;
  std::optional<std::string> niks;
  TimeMs occurred_at = 0;
  TimeMs received_at = 0;
  std::string source;
  std::optional<std::string> json;
  std::optional<std::string> target_id;
};

// Fills kind, change, village, name, niks, occurred_at and target_id from a verified
// event. `foreign` is set when no village of the event is inside the prefixes.
void classify(const events::Event& event, const std::vector<std::string>& prefixes, Row& row,
              bool& foreign);

enum class OpenMode { kReadWrite, kReadOnly };

class Register {
 public:
  // kReadWrite creates the file and the table if missing (WAL, synchronous=FULL);
  // kReadOnly gives kNotFound if the file does not exist.
  static Result<std::unique_ptr<Register>> open(const std::string& path, OpenMode mode);
  ~Register();
  Register(const Register&) = delete;
  Register& operator=(const Register&) = delete;

  // Inserts the row in its own committed transaction; a row with the same event_id
  // already there leaves the register unchanged. Returns whether a row was added.
  Result<bool> insert(const Row& row);

  sqlite3* db() const { return db_; }

 private:
  explicit Register(sqlite3* db) : db_(db) {}
  Status exec(const char* sql);
  sqlite3* db_;
};

}  // namespace kolabus::adapters::ward
