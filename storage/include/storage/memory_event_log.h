// MemoryEventLog: an EventLog held in memory, for fast deterministic tests of the broker
// core. It honours the full EventLog contract (the same contract suite runs on it and on
// the RocksDB log) but nothing survives the object.
//
// Thread-safety: as EventLog (concurrent readers plus one writer); fail_appends() may be
// called from any thread. Scan callbacks run without the internal lock held (the hits
// are copied first), so they may call the log's read functions.
#pragma once

#include <atomic>
#include <map>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <storage/event_log.h>

namespace kolabus::storage {

class MemoryEventLog final : public EventLog {
 public:
  MemoryEventLog() = default;

  // While on, append() (and audit().append()) returns Errc::kIoError ("injected
  // failure") and stores nothing, so tests can drive the broker's handling of a failing
  // disk.
  void fail_appends(bool on) { fail_appends_.store(on); }
  // While on, sync() fails (kIoError, "injected sync failure") and makes nothing durable;
  // appends are then refused (kUnavailable) until a sync() succeeds, which the first
  // one after this is turned off does (as the RocksDB log's, after its flush).
  void fail_syncs(bool on) { fail_syncs_.store(on); }

  using EventLog::append;
  Status append(std::span<const AppendRecord> records, std::span<const AuditEntry> audit) override;
  Status append_unsynced(std::span<const AppendRecord> records,
                         std::span<const AuditEntry> audit) override;
  Result<Sequence> sync() override;
  Sequence appended_end() const override;
  AuditLog& audit() override { return audit_; }
  const AuditLog& audit() const override { return audit_; }
  Sequence next_sequence() const override;
  Result<std::optional<Sequence>> find_id(const EventId& id) const override;
  Result<std::optional<std::string>> read(Sequence seq) const override;
  Status scan(Sequence from, std::size_t max,
              const std::function<bool(Sequence, std::string_view)>& fn) const override;
  Status scan_region(std::string_view prefix, Sequence from, std::size_t max,
                     const std::function<bool(const RegionHit&)>& fn) const override;

 private:
  class Audit final : public AuditLog {
   public:
    explicit Audit(MemoryEventLog& log) : log_(log) {}
    Status append(std::span<const AuditEntry> entries, bool sync) override;
    AuditHead head() const override;
    Status scan(std::uint64_t from, std::size_t max,
                const std::function<bool(std::uint64_t, std::string_view)>& fn) const override;

   private:
    MemoryEventLog& log_;
  };
  // REQUIRES: mu_ held exclusively.
  Status write(std::span<const AppendRecord> records, std::span<const AuditEntry> audit);
  // REQUIRES: mu_ held exclusively; entries checked.
  void store_audit(std::span<const AuditEntry> entries);

  mutable std::shared_mutex mu_;
  std::map<std::uint64_t, std::string> log_;        // seq -> record
  std::unordered_map<EventId, std::uint64_t> ids_;  // id -> seq
  // prefix -> hits in increasing seq order (appends only ever add larger seqs).
  std::map<std::string, std::vector<RegionHit>, std::less<>> regions_;
  std::uint64_t next_seq_ = 1;  // appended_end()
  std::uint64_t durable_ = 1;   // next_sequence()
  std::atomic<bool> fail_appends_{false};
  std::atomic<bool> fail_syncs_{false};
  bool sync_failed_ = false;  // as the RocksDB log: appends refused until a sync succeeds
  std::map<std::uint64_t, std::string> audit_records_;  // index -> bytes
  AuditHead audit_head_;
  Audit audit_{*this};
};

}  // namespace kolabus::storage
