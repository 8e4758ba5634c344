// gateway::StatusStore: what became of each event the gateway accepted, in SQLite.
//
// One row per event id: queued when accepted, then acknowledged (sequence, duplicate)
// or refused (the broker's code, field, message) when the Publisher reports the
// outcome. Rows are only ever created by accept(); record() updates existing rows and
// ignores ids this gateway never accepted (other sources share the Publisher).
//
// Why SQLite and not a RocksDB column family: the outbox's RocksDB is owned and locked
// by the Publisher (a second handle is refused) and its column families are the storage
// component's; a file of our own needs no change there, and SQLite gives pruning by
// age through an index and lets several gateways of one agency share the file.
//
// Durability: accept() commits with synchronous=FULL before the 202 is sent, so an id
// the client was given is never forgotten; outcomes commit with synchronous=NORMAL
// (WAL, no fsync per event: the sender thread calls record() once per event), so a
// power cut may lose the last outcomes and leave those ids "queued".
//
// Thread-safety: every method may be called from any thread. Writers share one
// connection under a mutex; get() uses a second connection (WAL readers do not wait
// for writers).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include <client/publisher.h>
#include <common/clock.h>
#include <common/ids.h>
#include <common/result.h>

struct sqlite3;

namespace kolabus::adapters::gateway {

enum class EventState { kQueued = 0, kAcknowledged = 1, kRefused = 2 };

struct EventStatus {
  EventState state = EventState::kQueued;
  std::uint64_t sequence = 0;  // kAcknowledged
  bool duplicate = false;      // kAcknowledged
  std::string code;            // kRefused: the protocol ErrorCode's name
  std::string field;           // kRefused
  std::string message;         // kRefused
  TimeMs updated_at = 0;
};

class StatusStore {
 public:
  // Opens (creating) the database file. kIoError if it cannot be opened or set up.
  static Result<std::unique_ptr<StatusStore>> open(const std::string& path);
  ~StatusStore();
  StatusStore(const StatusStore&) = delete;
  StatusStore& operator=(const StatusStore&) = delete;

  // Marks `ids` queued (again, if they were known) and runs `publish` inside the same
  // transaction: committed only if `publish` succeeds, so a failed publish leaves
  // every status as it was. record() waits while this runs, so an outcome can never
  // arrive before its queued row. Returns publish's error, or kIoError from the store
  // (in which case the events may have been queued without a status: a retry of the
  // request is harmless, the broker deduplicates by id).
  Status accept(std::span<const EventId> ids, TimeMs now, const std::function<Status()>& publish);

  // Applies a Publisher outcome to the id's row, if there is one.
  Status record(const client::Outcome& outcome, TimeMs now);

  // nullopt if the id has no row.
  Result<std::optional<EventStatus>> get(const EventId& id) const;

  // Deletes rows last updated before `cutoff`; returns how many.
  Result<std::uint64_t> prune(TimeMs cutoff);

 private:
  StatusStore(sqlite3* writer, sqlite3* reader);
  Status exec(sqlite3* db, const char* sql);

  mutable std::mutex write_mu_;
  sqlite3* writer_;
  mutable std::mutex read_mu_;
  sqlite3* reader_;
};

}  // namespace kolabus::adapters::gateway
