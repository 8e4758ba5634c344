// Outbox: the publisher's durable queue of events not yet acknowledged by the broker.
//
// An adapter enqueues each event (already encoded, with its id chosen) before sending
// it, and removes it only when the broker ACKs it; so a crash of the adapter, the broker
// or the network loses nothing. An event the broker refuses (NACK with a reason) is
// moved to the refused store, kept with the reason for an operator to inspect.
//
// Every entry has a local sequence number, allocated here: consecutive within one
// enqueue(), increasing across enqueues and restarts, never reused (even after both
// stores are emptied). Entries become visible to pending() in local_seq order: an entry
// is never visible before one with a smaller local_seq from an earlier enqueue(), so a
// sender may keep a cursor and ask for pending(cursor, n).
//
// Event bytes are opaque here. Column families and encodings: storage/README.md.
//
// Ownership: open() returns the single owner; destroying it closes the database.
// Thread-safety: all functions may be called from any thread. enqueue() calls are
// serialized (one synced write each: batch events to amortize the fsync); remove(),
// refuse() and clear_refused() are serialized among themselves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <common/clock.h>
#include <common/ids.h>
#include <common/result.h>

namespace rocksdb {
class Env;
}

namespace kolabus::storage {

struct OutboxEntry {
  std::uint64_t local_seq;
  std::string event;
};

// Why the broker refused an event: its protocol error code and the field and message it
// named, and when the refusal arrived.
struct Refusal {
  EventId id;
  std::uint16_t code;
  std::string field;
  std::string message;
  TimeMs refused_at;
};

struct RefusedEntry {
  std::uint64_t local_seq;
  Refusal refusal;
  std::string event;
};

class Outbox {
 public:
  // Opens (creating if missing) the outbox in `dir`.
  // Errors: kBusy when another process or handle has it open; kInvalidArgument for a
  // newer format version or a different kind of store; kCorruption; kIoError.
  static Result<std::unique_ptr<Outbox>> open(const std::string& dir);
  // Tests only: the same, with all file I/O through `env` (rocksdb::NewCompositeEnv over
  // a FileSystemWrapper that fails writes on demand; null: the default).
  static Result<std::unique_ptr<Outbox>> open(const std::string& dir,
                                              std::shared_ptr<rocksdb::Env> env);

  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Durably appends events in order (one synced write for the whole batch); returns
  // their local sequence numbers. An empty batch returns an empty vector and writes
  // nothing. On error nothing is stored (the numbers it would have used are skipped).
  // After a write failed with an I/O error (a full disk), every write (enqueue, remove,
  // refuse, clear_refused) fails until RocksDB resumes; the next write tries that, then
  // one write every 50 ms to 1 s while it fails: once there is space again, writes
  // succeed with no reopen.
  Result<std::vector<std::uint64_t>> enqueue(std::span<const std::span<const std::uint8_t>> events);

  // Up to `max` pending entries with local_seq >= from, in local_seq order.
  Result<std::vector<OutboxEntry>> pending(std::uint64_t from, std::size_t max) const;

  // Exact number of pending entries: counted on open, maintained in memory.
  std::uint64_t pending_count() const;

  // Removes acknowledged entries. Not synced: a delete lost in a crash means one resend,
  // which the broker's idempotency absorbs. Removing an absent entry is not an error.
  Status remove(std::span<const std::uint64_t> local_seqs);

  // Moves a pending entry to the refused store with its reason, atomically (synced).
  // Errors: kNotFound when `local_seq` is not pending.
  Status refuse(std::uint64_t local_seq, const Refusal& why);

  // Up to `max` refused entries, oldest local_seq first.
  // Errors: kCorruption when a stored refusal does not decode.
  Result<std::vector<RefusedEntry>> refused(std::size_t max) const;

  // Exact number of refused entries: counted on open, maintained in memory.
  std::uint64_t refused_count() const;

  // Drops every refused entry (synced).
  Status clear_refused();

  class Impl;  // defined in outbox.cpp

 private:
  explicit Outbox(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kolabus::storage
