// Shared pieces of the `kolabus` operator subcommands (consumers, replay, dlq, tail):
// command-line values (times, positions, kinds, regions), the JSON and human forms of
// a log record, aligned tables and a progress line for terminals, and the mapping of
// client errors to exit codes.
//
// Thread-safety: free functions over their arguments; Table and Progress are plain
// single-threaded objects.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "connection.h"
#include <client/admin.h>
#include <common/clock.h>
#include <common/result.h>

namespace kolabus::schemas {
class JsonCodec;
}

namespace kolabus::cli {

// -b/--broker (env KOLABUS_BROKER), --timeout, --json, --key, --server-key: every
// operator command has them.
struct ConnectArgs {
  std::string broker = "tcp://127.0.0.1:7400";
  double timeout_s = 10;
  bool json = false;
  SecurityArgs security;
};
void add_connect_options(CLI::App* cmd, ConnectArgs& args);
Result<std::unique_ptr<client::AdminClient>> connect_admin(const ConnectArgs& args);

// Prints "kolabus CMD: message" on stderr and returns the exit code for the error:
// kNotFound for Errc::kNotFound, kUnavailable for kUnavailable, kRefused for
// kInvalidArgument (the broker refused the command), kInternal otherwise.
int report_error(std::string_view command, const Error& error);
// The same for a failed connect_admin (an endpoint ZeroMQ cannot parse, a key flag
// without the other, an unreadable or unsafe key file): kUsage.
int report_connect_error(std::string_view command, const Error& error);

// A time on the command line: ISO-8601 in UTC ("2026-11-27T10:00:00Z", seconds and
// fraction optional, "Z" optional, an explicit offset such as "+07:00" honoured),
// a date alone ("2026-11-27" = 00:00 UTC), or epoch milliseconds.
Result<TimeMs> parse_time(std::string_view text);
// UTC, ISO-8601, whole seconds: "2026-11-27T10:00:00Z"; "-" for 0.
std::string format_time(TimeMs t);
// "950ms", "12s", "3m05s", "2h10m", "4d03h"; "-" for 0 or less.
std::string format_age(std::int64_t ms);

// A position in the log given as SEQ or TIME: a plain number below 10^12 is a
// sequence; anything else is a time for parse_time (10^12 ms is 2001-09-09, so no
// epoch-millisecond time of this century is mistaken for a sequence).
struct Position {
  std::uint64_t sequence = 0;  // non-zero: a sequence
  TimeMs time = 0;             // otherwise: a time
};
Result<Position> parse_position(std::string_view text);

// Kind names (birth, death, move; case-insensitive) -> kolabus::events::Payload
// values. Each element may itself be a comma-separated list.
Result<std::vector<std::uint8_t>> parse_kinds(const std::vector<std::string>& names);
// Region prefixes of 2, 4, 6 or 10 digits (dots allowed: "12.71" is "1271").
Result<std::vector<std::string>> parse_regions(const std::vector<std::string>& codes);
// "birth,move", or "*" for every kind.
std::string kinds_text(const std::vector<std::uint8_t>& kinds);
std::vector<std::string> kind_names(const std::vector<std::uint8_t>& kinds);

// A consumer as `kolabus consumers --json` prints it (also replay --consumer --json).
nlohmann::ordered_json consumer_json(const client::ConsumerInfoView& c);

// A LogRecord as the JSON line replay and tail print:
// {"sequence":N,"received_at":ms,"source":"agency","event":{...}}. An event that
// cannot be converted (a kind newer than this tool) gets "event":null and "error".
// kCorruption if `record` is not a verifiable LogRecord.
Result<nlohmann::ordered_json> record_json(schemas::JsonCodec& codec, std::string_view record);
// The same from the parts of a record (tail: a Delivery).
nlohmann::ordered_json event_json(schemas::JsonCodec& codec, std::uint64_t sequence,
                                  TimeMs received_at, std::string_view source,
                                  std::span<const std::uint8_t> event);

// The parts of a LogRecord for one human line.
struct RecordSummary {
  std::uint64_t sequence = 0;
  TimeMs received_at = 0;
  std::string source;
  std::string kind;     // birth, death, move, correction, unknown
  std::string regions;  // comma-separated village codes
  std::string event_id;
  std::string text;  // a name, or NIKs, or what a correction does
};
Result<RecordSummary> summarize_record(std::string_view record);
RecordSummary summarize_event(std::uint64_t sequence, TimeMs received_at, std::string_view source,
                              std::span<const std::uint8_t> event);
// "SEQ  TIME  KIND  REGIONS  summary".
std::string summary_line(const RecordSummary& s);

// An aligned text table: a header row, then rows; columns separated by two spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// A one-line progress display on stderr, redrawn at most every 100 ms, only when
// stderr is a terminal; finish() erases it.
class Progress {
 public:
  Progress();
  ~Progress();
  bool enabled() const { return enabled_; }
  // `events` so far, at sequence `at` of `to` (0: unknown end).
  void update(std::uint64_t events, std::uint64_t at, std::uint64_t first, std::uint64_t to,
              bool force = false);
  void finish();

 private:
  bool enabled_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace kolabus::cli
