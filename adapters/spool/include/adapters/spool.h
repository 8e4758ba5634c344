// The spool source adapter: a drop directory where an agency's own system (the civil
// registry's SIAK) leaves exports of its records, as CSV or JSON Lines. Each record is
// mapped to a kolabus event through a mapping written in the configuration (no code),
// validated with the broker's own rules, and queued in the agency's durable outbox;
// records that cannot be sent go, with their line number and the reason, to
// `<dir>/rejects/<file>.rejects.jsonl`. The file then moves to `<dir>/done/`. Both
// hold residents' data: they are the adapter's user's only (directories 0700, files
// 0600) and are removed after a configured number of days (clean_archives).
// docs/SPOOL.md describes the configuration, with example mappings for SIAK exports.
//
// Crash safety: event ids are derived from the record's content (JsonCodec), so a file
// processed again after a crash (before it moved to done/) queues the same ids and the
// broker stores each event once. Per file: rejects written (temp + rename), then ONE
// publish_batch (durable when it returns), then the move to done/.
//
// Layers, each usable on its own:
//  - parse_csv(): RFC 4180 records with their line numbers (pure);
//  - SpoolConverter: the checked configuration plus convert(text, now) -> events and
//    rejects for one file's text, without any I/O;
//  - SpoolAdapter: the polling thread, the directories and the outbox.
//
// Ownership: SpoolAdapter borrows the AgencyContext's Publisher, which must outlive it.
// Thread-safety: SpoolConverter is not thread-safe (it owns a JsonCodec): one per
// thread. SpoolAdapter: start()/stop() from one thread; stats() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/clock.h>
#include <common/result.h>
#include <schemas/events_generated.h>
#include <schemas/json_codec.h>

namespace kolabus::adapters {

// ---------------------------------------------------------------------------------
// CSV (RFC 4180)

struct CsvRecord {
  std::size_t line = 0;             // 1-based line of the file where the record starts
  std::string text;                 // the record as written (without its line end)
  std::vector<std::string> fields;  // unquoted, "" undoubled; not trimmed
  bool empty = false;               // a blank (or whitespace-only) line
  std::string error;                // non-empty: the record does not parse (fields empty)
};

// Splits CSV text into records: `delimiter` between fields; fields in double quotes
// may hold the delimiter, line ends and doubled quotes; line ends are \n or \r\n; a
// UTF-8 byte order mark at the start is ignored; spaces before an opening quote are
// ignored. A record that does not parse (text after a closing quote, an unterminated
// quote) carries an error and spans to the end of its line (an unterminated quote: to
// the end of the text).
std::vector<CsvRecord> parse_csv(std::string_view text, char delimiter);

// ---------------------------------------------------------------------------------
// Conversion

enum class SpoolFormat { kCsv, kJsonl };

// The top-level keys of one [[spool]] table (the mapping stays inside SpoolConverter).
struct SpoolSettings {
  std::string dir;  // as configured: relative to the current directory
  SpoolFormat format = SpoolFormat::kCsv;
  // The kind every mapped record becomes; nullopt without a mapping (the lines are
  // kolabus events already and carry their own kind).
  std::optional<events::Payload> kind;
  std::chrono::milliseconds poll{500};
  char delimiter = ',';
  bool has_mapping = false;
  // Files in done/ (the exports, with residents' names and NIKs) and in rejects/ are
  // removed this many days after they were written there (their modification time).
  std::uint32_t done_retention_days = 30;
  std::uint32_t rejects_retention_days = 30;
};

// The largest retention the configuration accepts (ten years).
inline constexpr std::int64_t kMaxRetentionDays = 3650;

// One line (record) that is not sent. `reason` starts with "line N: ".
struct SpoolReject {
  std::size_t line = 0;
  std::string reason;
  std::string field;  // "payload.mother_nik", "regions[0]"; empty when not one field
  // A protocol::ErrorCode name from validate_event ("InvalidNik", ...), or
  // "ParseError" (CSV/JSON syntax), "Encoding" (the file is not UTF-8 text),
  // "MappingError" (a column missing or empty, a map miss, a bad date),
  // "SchemaError" (the built event does not fit events.fbs).
  std::string code;
  std::string record;  // the line as written
};

struct SpoolEvent {
  std::size_t line = 0;
  schemas::EncodedEvent event;  // passed validate_event
};

struct SpoolFileResult {
  std::vector<SpoolEvent> events;
  std::vector<SpoolReject> rejects;
  std::size_t lines = 0;          // records read (a CSV header not counted) = the three below
  std::size_t skipped_empty = 0;  // blank lines
};

class SpoolConverter {
 public:
  // Checks every key of one [[spool]] table (unknown keys, types, the mapping against
  // events.fbs: each field exists in the kind's table and every required one is
  // mapped). Errors (kInvalidArgument) name the key: `[[spool]] fields.sex.map: ...`.
  static Result<SpoolConverter> create(const toml::table& table);

  SpoolConverter(SpoolConverter&&) noexcept;
  SpoolConverter& operator=(SpoolConverter&&) noexcept;
  ~SpoolConverter();

  const SpoolSettings& settings() const;

  // One file's text -> the valid events and the rejected lines, in line order. Every
  // record ends up in exactly one of events, rejects or skipped_empty. `now_ms` is
  // the "now" of recorded_at = "now" and of validation (one instant per file). With
  // recorded_at = "now" the derived id does not depend on it: the id is computed
  // from the event without recorded_at, so reading the file again gives the same ids.
  SpoolFileResult convert(std::string_view text, TimeMs now_ms);

 private:
  struct Impl;
  explicit SpoolConverter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------
// The adapter

// What one clean_archives() removed.
struct SpoolCleanup {
  std::size_t done = 0;     // files removed from done/
  std::size_t rejects = 0;  // files removed from rejects/
};

struct SpoolStats {
  std::uint64_t files = 0;  // files moved to done/
  std::uint64_t lines = 0;
  std::uint64_t queued = 0;
  std::uint64_t rejected = 0;
  std::uint64_t skipped_empty = 0;
};

class SpoolAdapter final : public Adapter {
 public:
  // REQUIRES: ctx.publisher is not null and outlives the adapter.
  static Result<std::unique_ptr<SpoolAdapter>> create(const toml::table& table,
                                                      const AgencyContext& ctx);
  ~SpoolAdapter() override;

  std::string describe() const override;
  // Creates dir, dir/rejects and dir/done (0700; rejects and done narrowed to 0700 if
  // they exist open to others, dir left as it is: the exporter writes there), then
  // cleans the archives and polls every poll_ms on its thread.
  Status start() override;
  void stop() override;

  // One poll, on the caller's thread: processes every ready file, in name order.
  // Stops at the first file whose batch could not be queued (it is retried next
  // poll). Returns that error, or the directory's. REQUIRES: not started (the polling
  // thread owns the converter while it runs).
  Status poll_once();

  // Removes the files of dir/done/ older than done_retention_days and those of
  // dir/rejects/ older than rejects_retention_days, by their modification time, as of
  // `now`; logs one line per directory where it removed any, with how many (never
  // their names or contents). The polling thread calls it at start and every
  // kCleanupEvery. May run while the adapter polls. Errors: kIoError (a directory that
  // cannot be read); a file that cannot be removed is logged and left for the next time.
  Result<SpoolCleanup> clean_archives(std::chrono::system_clock::time_point now);
  static constexpr std::chrono::hours kCleanupEvery{1};

  SpoolStats stats() const;

 private:
  SpoolAdapter(SpoolConverter converter, client::Publisher* publisher);
  enum class FileOutcome {
    kDone,        // queued, rejects written, moved to done/
    kRetryLater,  // left in place (unreadable for now, or vanished); go on with the next
    kStopPoll,    // left in place because the outbox failed: later files wait too
  };
  void run();
  FileOutcome process_file(const std::string& name);
  // Logs `message` for `name` unless it was already logged since the file last went well.
  void log_once(const std::string& name, const std::string& message);

  SpoolConverter converter_;
  client::Publisher* publisher_;
  std::string dir_;

  mutable std::mutex stats_mu_;
  SpoolStats stats_;

  std::set<std::string> failing_;  // files whose error was logged (thread of the polls)

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// The factory the runner calls for each [[spool]] entry. Config keys: docs/SPOOL.md.
Result<std::unique_ptr<Adapter>> make_spool(const toml::table& table, const AgencyContext& ctx);

}  // namespace kolabus::adapters
