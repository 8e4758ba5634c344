// EventLog: the broker's durable, append-only log of events, with an index by event id
// (for idempotent publish) and by region prefix (so consumers and replays read only the
// events that concern them).
//
// The log stores each event's bytes (the broker's log record) opaquely under its global
// sequence number; it never decodes them. The caller supplies the metadata the indexes
// need (id, payload kind, region codes), so storage does not depend on the schemas.
//
// Implementations: MemoryEventLog (memory_event_log.h, for tests of the broker core) and
// the RocksDB log (rocksdb_event_log.h). One contract test suite runs on both.
//
// Ownership: the caller owns an EventLog through std::unique_ptr; nothing it returns
// borrows from it except the string_views passed to scan callbacks (see scan()).
//
// Thread-safety: implementations are safe for any number of concurrent readers plus one
// writer (append, append_unsynced) plus one syncer (sync). Concurrent calls to append()
// from several threads are a bug.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <common/ids.h>
#include <common/result.h>
#include <storage/audit_log.h>

namespace kolabus::storage {

// A region code is 10 digits (province 2, regency/city 2, district 2, village 4). The
// region index holds every event under each of these prefix lengths.
inline constexpr std::size_t kRegionCodeLength = 10;
inline constexpr std::array<std::size_t, 4> kRegionPrefixLengths = {2, 4, 6, 10};

// True when `prefix` is all digits and one of kRegionPrefixLengths long, i.e. a prefix
// that scan_region() accepts.
bool is_region_prefix(std::string_view prefix);

// One event to append. Borrowed views: they must stay valid for the call to append().
struct AppendRecord {
  Sequence seq;
  EventId id;
  std::uint8_t kind;                     // payload kind number, stored in the region index
  std::span<const std::string> regions;  // 10-digit village codes the event concerns
  std::span<const std::uint8_t> record;  // the bytes to store under seq
};

struct RegionHit {
  Sequence seq;
  std::uint8_t kind;
};

class EventLog {
 public:
  virtual ~EventLog() = default;

  // Appends all records, and the audit entries to audit(), atomically and durably: one
  // write, synced (WAL fsync) before returning (unless the RocksDB log was opened with
  // sync = false). All or nothing: on error no record or entry is readable, and
  // next_sequence() and audit().head() are unchanged. Also makes every earlier
  // append_unsynced() durable.
  // REQUIRES: records non-empty; seqs consecutive starting at appended_end(); ids
  // distinct and not present in the log (the caller checks with find_id); every region
  // is kRegionCodeLength digits; audit entries as AuditLog::append. Violations are bugs
  // and abort (KOLABUS_CHECK), except an id already in the log, which the RocksDB log
  // does not look up again (it would cost a read per event; the memory log checks).
  // Errors: kIoError (disk full, fsync failed, injected failure), kInvalidArgument
  // (log opened read-only), kUnavailable (an earlier sync() failed and no later one has
  // recovered).
  virtual Status append(std::span<const AppendRecord> records,
                        std::span<const AuditEntry> audit) = 0;
  Status append(std::span<const AppendRecord> records) { return append(records, {}); }

  // The same write as append(), without waiting for the disk: a group commit whose
  // fsync overlaps the next batch's work. find_id(), read() and audit() see the
  // records at once (so that the next batch's duplicates and corrections are found);
  // next_sequence(), scan() and scan_region() only once a sync() that started after
  // this call has returned: readers never see an event that a crash of the machine
  // could still take back. A failed call stores nothing, as append().
  virtual Status append_unsynced(std::span<const AppendRecord> records,
                                 std::span<const AuditEntry> audit) = 0;

  // Makes every append_unsynced() that returned before this call durable (RocksDB's
  // SyncWAL: the write-ahead log's fsync) and returns the new next_sequence(). May run
  // on another thread than the writer, concurrently with it and with readers; calls to
  // sync() itself must not overlap.
  // When the fsync fails, the unsynced records may or may not have reached the disk:
  // the error is returned, further appends fail (kUnavailable) and each later sync()
  // first writes every record in memory to new table files (a flush, which needs the
  // store to accept writes again: RocksDbBrokerStore::resume_writes); once that
  // succeeds the records are durable and readers see them.
  // Errors: kIoError (the fsync or the flush failed).
  virtual Result<Sequence> sync() = 0;

  // The sequence the next appended record must carry: next_sequence() plus the records
  // of unsynced appends.
  virtual Sequence appended_end() const = 0;

  // The audit chain kept in the same store.
  virtual AuditLog& audit() = 0;
  virtual const AuditLog& audit() const = 0;

  // One past the last durable record: what readers see (1 for an empty log; recovered
  // on open from the last stored record). The next append's sequence is appended_end().
  virtual Sequence next_sequence() const = 0;

  // The sequence stored under `id`, or nullopt if the log does not hold it.
  virtual Result<std::optional<Sequence>> find_id(const EventId& id) const = 0;

  // The record stored under `seq`, or nullopt if there is none.
  virtual Result<std::optional<std::string>> read(Sequence seq) const = 0;

  // Calls fn for each stored record with from <= seq < next_sequence(), in sequence
  // order, at most `max` times; fn returns false to stop early. The string_view is valid only
  // during the call. fn must not call append() on this log.
  virtual Status scan(Sequence from, std::size_t max,
                      const std::function<bool(Sequence, std::string_view)>& fn) const = 0;

  // Region index: each event is indexed under every prefix level of each of its regions
  // (2, 4, 6 and 10 digits: "12", "1271", "127101", "1271011001"), once per distinct
  // prefix per event. Calls fn for each (seq, kind) with seq >= from indexed under
  // exactly `prefix`, below next_sequence(), in sequence order, at most `max` times; fn
  // returns false to stop.
  // fn must not call append() on this log.
  // Errors: kInvalidArgument when !is_region_prefix(prefix).
  virtual Status scan_region(std::string_view prefix, Sequence from, std::size_t max,
                             const std::function<bool(const RegionHit&)>& fn) const = 0;
};

}  // namespace kolabus::storage
