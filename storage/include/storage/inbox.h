// Inbox: a consumer client's durable memory of the events it has processed, so that an
// agency's handler sees each event once in effect across redeliveries, reconnects and
// restarts (DESIGN.md guarantee 5).
//
// An event is marked processed in the same synced RocksDB write as whatever the
// handler stored through the transaction it was given (Txn), so the handler's own
// state and the inbox can never disagree: after a crash either both are there (the
// event is skipped on redelivery) or neither is (the handler runs again).
// Marks older than a retention can be pruned: after that, an operator's replay of
// such old events hands them to the handler again (a replay is meant to be seen).
//
// The inbox is its own RocksDB database (store kind "inbox"); column families and
// encodings: storage/README.md.
//
// Ownership: open() returns the single owner; destroying it closes the database and
// releases the directory's lock. A Txn borrows the inbox: REQUIRES: the inbox outlives
// every Txn it began.
// Thread-safety: all Inbox methods are safe to call from several threads; commit() and
// prune() are serialized among themselves. A Txn is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <common/clock.h>
#include <common/ids.h>
#include <common/result.h>

namespace rocksdb {
class Env;
}

namespace kolabus::storage {

class Inbox {
 public:
  // What a handler writes with the event: key/value pairs in the inbox database's
  // `app` column family, committed atomically with the processed mark. Nothing is
  // visible (to get() or scan()) before commit(); a Txn destroyed uncommitted is
  // discarded.
  class Txn {
   public:
    virtual ~Txn() = default;
    virtual void put(std::string_view key, std::string_view value) = 0;
    virtual void erase(std::string_view key) = 0;
  };

  // Opens (creating if missing) the inbox in `dir`.
  // Errors: kBusy when another process or handle has it open; kInvalidArgument for a
  // newer format version or a different kind of store; kCorruption; kIoError.
  static Result<std::unique_ptr<Inbox>> open(const std::string& dir);
  // Tests only: the same, with all file I/O through `env` (rocksdb::NewCompositeEnv over
  // a FileSystemWrapper that fails writes on demand; null: the default).
  static Result<std::unique_ptr<Inbox>> open(const std::string& dir,
                                             std::shared_ptr<rocksdb::Env> env);
  virtual ~Inbox() = default;

  // The sequence under which `id` was processed, or nullopt if it was not (or its mark
  // was pruned). Errors: kCorruption for a malformed mark; kIoError.
  virtual Result<std::optional<std::uint64_t>> processed(const EventId& id) const = 0;

  // Begins a transaction for processing one event.
  virtual std::unique_ptr<Txn> begin() = 0;

  // Marks `id` processed at `sequence` (the broker's) at `now`, with the txn's writes,
  // in one synced write. If `id` is already marked (two deliveries of one event handled
  // at once), nothing is written, the txn's writes are dropped and commit succeeds: the
  // first commit's effects stand, once.
  // REQUIRES: txn came from this inbox's begin(); now >= 0 (checked, aborts).
  // Errors: kIoError (nothing was written; the handler's work should be retried). After
  // a write failed with an I/O error (a full disk), every commit and prune fails until
  // RocksDB resumes; the next one tries that, then one every 50 ms to 1 s while it
  // fails: once there is space again, commits succeed with no reopen.
  virtual Status commit(std::unique_ptr<Txn> txn, const EventId& id, std::uint64_t sequence,
                        TimeMs now) = 0;

  // Reads what handlers stored (the `app` column family).
  virtual Result<std::optional<std::string>> get(std::string_view key) const = 0;
  // Calls fn for every app key with `prefix`, in key order; fn returns false to stop.
  // The views passed to fn are valid only during that call.
  virtual Status scan(std::string_view prefix,
                      const std::function<bool(std::string_view, std::string_view)>& fn) const = 0;

  // Forgets processed marks whose commit time is < `before` (UTC ms). Returns how many.
  // Not synced: a prune lost in a crash is redone by the next one.
  virtual Result<std::uint64_t> prune(TimeMs before) = 0;

  // Exact number of processed marks: counted on open, maintained by commit and prune.
  virtual std::uint64_t processed_count() const = 0;
};

}  // namespace kolabus::storage
