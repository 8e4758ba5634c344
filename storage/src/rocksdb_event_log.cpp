// The RocksDB event log. Layout (see README.md):
//   default  meta: "store" = "event_log", "format_version" = 4-byte BE
//   log      8-byte BE seq -> record bytes
//   ids      16-byte id -> 8-byte BE seq (bloom filter: most lookups miss)
//   regions  1-byte prefix length + prefix digits + 8-byte BE seq -> a run: the kind of
//            that seq, then for each further seq of the same append under the same
//            prefix, its distance from the previous one (LEB128) and its kind. A run of
//            one is the single kind byte, which is all that format 1 wrote.
//   audit    8-byte BE index -> audit record bytes; head in meta "audit_head"
// The same database holds the consumer store (rocksdb_consumer_store.cpp); it is opened
// in rocksdb_broker_store.cpp.
#include <atomic>
#include <mutex>
#include <unordered_map>

#include <rocksdb/cache.h>
#include <rocksdb/write_batch.h>

#include "broker_db.h"
#include "event_log_internal.h"
#include "rocks_util.h"
#include <storage/rocksdb_broker_store.h>
#include <storage/rocksdb_event_log.h>

namespace kolabus::storage {

namespace {

using detail::append_be64;
using detail::decode_be64;
using detail::encode_be64;
using detail::kMetaAuditHeadKey;
using detail::to_error;

using detail::kAudit;
using detail::kBrokerMeta;
using detail::kIds;
using detail::kLog;
using detail::kRegions;

std::string encode_audit_head(const AuditHead& head) {
  std::string v = encode_be64(head.index);
  v.append(reinterpret_cast<const char*>(head.hash.data()), head.hash.size());
  return v;
}

// Adds the entries and the new head to `batch`.
rocksdb::Status put_audit(detail::RocksDb& db, rocksdb::WriteBatch& batch,
                          std::span<const AuditEntry> entries) {
  rocksdb::Status s;
  for (const auto& e : entries) {
    s = batch.Put(db.cf(kAudit), encode_be64(e.index), detail::as_slice(e.bytes));
    if (!s.ok()) return s;
  }
  return batch.Put(db.cf(kBrokerMeta), detail::kMetaAuditHeadKey,
                   encode_audit_head({entries.back().index, entries.back().hash}));
}

class RocksAuditLog final : public AuditLog {
 public:
  RocksAuditLog(detail::RocksDb& db, detail::OpenMode mode, AuditHead head)
      : db_(db), mode_(mode), head_(head) {}

  Status append(std::span<const AuditEntry> entries, bool sync) override {
    if (mode_ == detail::OpenMode::kReadOnly) {
      return unexpected(Errc::kInvalidArgument, "audit log " + db_.dir() + " is open read-only");
    }
    KOLABUS_CHECK(!entries.empty());
    detail::check_audit_preconditions(entries, head());
    rocksdb::WriteBatch batch;
    auto s = put_audit(db_, batch, entries);
    if (!s.ok()) return unexpected(to_error(s, "build audit batch for " + db_.dir()));
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    s = db_.db()->Write(wo, &batch);
    if (!s.ok()) return unexpected(to_error(s, "append to audit log " + db_.dir()));
    moved({entries.back().index, entries.back().hash});
    return {};
  }

  AuditHead head() const override {
    std::lock_guard lock(mu_);
    return head_;
  }

  Status scan(std::uint64_t from, std::size_t max,
              const std::function<bool(std::uint64_t, std::string_view)>& fn) const override {
    if (max == 0 || db_.cf(kAudit) == nullptr) return {};
    std::unique_ptr<rocksdb::Iterator> it(
        db_.db()->NewIterator(rocksdb::ReadOptions(), db_.cf(kAudit)));
    std::size_t n = 0;
    for (it->Seek(encode_be64(from)); it->Valid(); it->Next()) {
      const auto k = it->key();
      if (k.size() != 8) {
        return unexpected(Errc::kCorruption, "audit log " + db_.dir() + ": a key is " +
                                                 std::to_string(k.size()) +
                                                 " bytes long, expected 8");
      }
      if (!fn(decode_be64(k.ToStringView()), it->value().ToStringView())) return {};
      if (++n == max) return {};
    }
    if (!it->status().ok()) {
      return unexpected(to_error(it->status(), "scan audit log " + db_.dir()));
    }
    return {};
  }

  // After a successful write that included entries (here or in an event append).
  void moved(const AuditHead& head) {
    std::lock_guard lock(mu_);
    head_ = head;
  }

 private:
  detail::RocksDb& db_;
  const detail::OpenMode mode_;
  mutable std::mutex mu_;
  AuditHead head_;
};

std::string region_key_prefix(std::string_view prefix) {
  std::string k;
  k.reserve(1 + prefix.size() + 8);
  k.push_back(static_cast<char>(prefix.size()));
  k.append(prefix);
  return k;
}

// The region index entries of one append: per prefix, its sequences in order.
class RegionRuns {
 public:
  struct Run {
    std::string key;  // the prefix's key head, then the first sequence
    std::string value;
    std::uint64_t last = 0;
  };

  void clear() {
    by_prefix_.clear();
    runs_.clear();
  }

  // Calls come in sequence order, each prefix at most once per sequence.
  void add(std::string_view prefix, std::uint64_t seq, std::uint8_t kind) {
    auto [it, fresh] = by_prefix_.try_emplace(prefix, runs_.size());
    if (fresh) {
      Run& r = runs_.emplace_back();
      r.key = region_key_prefix(prefix);
      append_be64(r.key, seq);
      r.value.push_back(static_cast<char>(kind));
      r.last = seq;
      return;
    }
    Run& r = runs_[it->second];
    for (std::uint64_t d = seq - r.last;; d >>= 7) {
      if (d < 0x80) {
        r.value.push_back(static_cast<char>(d));
        break;
      }
      r.value.push_back(static_cast<char>((d & 0x7f) | 0x80));
    }
    r.value.push_back(static_cast<char>(kind));
    r.last = seq;
  }

  const std::vector<Run>& runs() const { return runs_; }

 private:
  // Views into the appended records' region strings: valid for one append.
  std::unordered_map<std::string_view, std::size_t> by_prefix_;
  std::vector<Run> runs_;
};

// Decodes one run (see the layout at the top).
class RunReader {
 public:
  RunReader(std::uint64_t first, std::string_view value) : seq_(first), v_(value) {}

  // The next hit; false at the end or on a malformed run (then ok() is false).
  bool next(RegionHit& hit) {
    if (pos_ == v_.size()) return pos_ == 0 ? fail() : false;
    if (pos_ > 0) {
      std::uint64_t d = 0;
      for (int shift = 0;; shift += 7) {
        if (pos_ == v_.size() || shift > 63) return fail();
        const auto b = static_cast<std::uint8_t>(v_[pos_++]);
        d |= std::uint64_t{b & 0x7fu} << shift;
        if ((b & 0x80) == 0) break;
      }
      if (d == 0 || pos_ == v_.size()) return fail();
      seq_ += d;
    }
    hit = RegionHit{Sequence{seq_}, static_cast<std::uint8_t>(v_[pos_++])};
    return true;
  }
  bool ok() const { return ok_; }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  std::uint64_t seq_;
  std::string_view v_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

class RocksEventLog final : public EventLog {
 public:
  RocksEventLog(std::shared_ptr<detail::RocksDb> db, bool sync, detail::OpenMode mode,
                std::uint64_t next, AuditHead audit_head)
      : db_(std::move(db)),
        sync_(sync),
        mode_(mode),
        appended_(next),
        durable_(next),
        audit_(*db_, mode, audit_head) {}

  AuditLog& audit() override { return audit_; }
  const AuditLog& audit() const override { return audit_; }

  using EventLog::append;
  Status append(std::span<const AppendRecord> records, std::span<const AuditEntry> audit) override {
    if (auto st = write(records, audit, sync_); !st) return st;
    // A synced write also syncs every earlier write: the log is one sequence.
    advance(durable_, appended_.load());
    return {};
  }

  Status append_unsynced(std::span<const AppendRecord> records,
                         std::span<const AuditEntry> audit) override {
    if (auto st = write(records, audit, false); !st) return st;
    if (!sync_) advance(durable_, appended_.load());
    return {};
  }

  Result<Sequence> sync() override {
    const std::uint64_t target = appended_.load();
    if (!sync_) {
      advance(durable_, target);
      return Sequence{durable_.load()};
    }
    if (sync_failed_.load()) {
      // What the failed fsync covered may or may not be on the disk. The records are
      // still in the memtables: a flush writes them to table files, synced.
      rocksdb::FlushOptions fo;
      fo.wait = true;
      fo.allow_write_stall = true;
      auto s = db_->db()->Flush(fo, db_->open_cfs());
      if (!s.ok()) {
        return unexpected(to_error(s, "flush " + db_->dir() + " after a failed WAL sync"));
      }
      sync_failed_.store(false);
      advance(durable_, target);
      return Sequence{durable_.load()};
    }
    auto s = db_->db()->SyncWAL();
    if (!s.ok()) {
      sync_failed_.store(true);
      return unexpected(to_error(s, "sync the write-ahead log of " + db_->dir()));
    }
    advance(durable_, target);
    return Sequence{durable_.load()};
  }

  Sequence next_sequence() const override { return Sequence{durable_.load()}; }
  Sequence appended_end() const override { return Sequence{appended_.load()}; }

  Result<std::optional<Sequence>> find_id(const EventId& id) const override {
    rocksdb::PinnableSlice v;
    auto s = db_->db()->Get(rocksdb::ReadOptions(), db_->cf(kIds), id.as_key(), &v);
    if (s.IsNotFound()) return std::optional<Sequence>();
    if (!s.ok()) return unexpected(to_error(s, "find id in event log " + db_->dir()));
    if (v.size() != 8) {
      return unexpected(Errc::kCorruption, "event log " + db_->dir() + ": id " + id.to_string() +
                                               " maps to a " + std::to_string(v.size()) +
                                               "-byte value, expected 8");
    }
    return std::optional<Sequence>(Sequence{decode_be64(v.ToStringView())});
  }

  Result<std::optional<std::string>> read(Sequence seq) const override {
    std::string v;
    auto s = db_->db()->Get(rocksdb::ReadOptions(), db_->cf(kLog), encode_be64(seq.value), &v);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return unexpected(to_error(s, "read event log " + db_->dir()));
    return std::optional<std::string>(std::move(v));
  }

  Status scan(Sequence from, std::size_t max,
              const std::function<bool(Sequence, std::string_view)>& fn) const override {
    const std::uint64_t end = durable_.load();
    if (max == 0 || from.value >= end) return {};
    // Unsynced records may follow in the memtable: the iterator stops before them.
    const std::string upper = encode_be64(end);
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(ro, db_->cf(kLog)));
    std::size_t n = 0;
    for (it->Seek(encode_be64(from.value)); it->Valid(); it->Next()) {
      const auto k = it->key();
      if (k.size() != 8) {
        return unexpected(Errc::kCorruption, "event log " + db_->dir() + ": a log key is " +
                                                 std::to_string(k.size()) +
                                                 " bytes long, expected 8");
      }
      if (!fn(Sequence{decode_be64(k.ToStringView())}, it->value().ToStringView())) return {};
      if (++n == max) return {};
    }
    if (!it->status().ok()) return unexpected(to_error(it->status(), "scan " + db_->dir()));
    return {};
  }

  Status scan_region(std::string_view prefix, Sequence from, std::size_t max,
                     const std::function<bool(const RegionHit&)>& fn) const override {
    if (!is_region_prefix(prefix)) {
      return unexpected(Errc::kInvalidArgument,
                        "region prefix '" + std::string(prefix) + "' is not 2, 4, 6 or 10 digits");
    }
    const std::uint64_t end = durable_.load();
    if (max == 0 || from.value >= end) return {};
    const std::string head = region_key_prefix(prefix);
    // Keys under one prefix are contiguous and all head.size() + 8 bytes long. The upper
    // bound is head with its last byte incremented: the last byte is a digit, so it
    // cannot overflow.
    std::string upper = head;
    upper.back() = static_cast<char>(upper.back() + 1);
    rocksdb::Slice lower_slice(head);
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_lower_bound = &lower_slice;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(ro, db_->cf(kRegions)));
    std::string start = head;
    append_be64(start, from.value);
    // A run is keyed by its first sequence, so the run holding `from` may start before
    // it: begin at the last run that starts at or before `from`, if there is one.
    it->SeekForPrev(start);
    if (!it->Valid() && it->status().ok()) it->Seek(start);
    std::size_t n = 0;
    for (; it->Valid(); it->Next()) {
      const auto k = it->key().ToStringView();
      const auto corrupt = [&] {
        return unexpected(
            Errc::kCorruption,
            "event log " + db_->dir() + ": malformed region index entry under '" +
                std::string(prefix) + "' at sequence " +
                std::to_string(decode_be64(k.substr(k.size() >= 8 ? k.size() - 8 : 0))));
      };
      if (k.size() != head.size() + 8 || k.substr(0, head.size()) != head) return corrupt();
      RunReader run(decode_be64(k.substr(head.size())), it->value().ToStringView());
      RegionHit hit;
      while (run.next(hit)) {
        if (hit.seq.value < from.value) continue;
        if (hit.seq.value >= end) return {};  // not synced yet
        if (!fn(hit)) return {};
        if (++n == max) return {};
      }
      if (!run.ok()) return corrupt();
    }
    if (!it->status().ok()) {
      return unexpected(to_error(it->status(), "scan region index of " + db_->dir()));
    }
    return {};
  }

 private:
  // The one write of append() and append_unsynced().
  Status write(std::span<const AppendRecord> records, std::span<const AuditEntry> audit,
               bool sync) {
    if (mode_ == detail::OpenMode::kReadOnly) {
      return unexpected(Errc::kInvalidArgument, "event log " + db_->dir() + " is open read-only");
    }
    if (sync_failed_.load()) {
      return unexpected(Errc::kUnavailable,
                        "event log " + db_->dir() +
                            ": the last sync of the write-ahead log failed; writes wait for a "
                            "sync that recovers");
    }
    detail::check_append_preconditions(records, Sequence{appended_.load()});
    if (!audit.empty()) detail::check_audit_preconditions(audit, audit_.head());
    // No id is present: the caller has checked (Core, with find_id, just before). Not
    // looked up again here: a second read per id cost 9 % of the publish path.

    // One batch: a crash never leaves a record without its id or region entries. The
    // batch's buffer is reused: built afresh per append it grew by doubling, copying
    // the records again at each step.
    rocksdb::WriteBatch& batch = batch_;
    batch.Clear();
    runs_.clear();
    for (const auto& r : records) {
      const std::string seq = encode_be64(r.seq.value);
      auto s = batch.Put(db_->cf(kLog), seq, detail::as_slice(r.record));
      if (s.ok()) s = batch.Put(db_->cf(kIds), r.id.as_key(), seq);
      if (!s.ok()) return unexpected(to_error(s, "build append batch for " + db_->dir()));
      detail::distinct_region_prefixes(r.regions, prefixes_);
      for (auto p : prefixes_) runs_.add(p, r.seq.value, r.kind);
    }
    // One region index entry per prefix for the whole append, not one per event: a
    // group commit of 1,000 Medan events writes about 175 entries instead of 4,000, and
    // memtable inserts were half of the publish path.
    for (const auto& run : runs_.runs()) {
      auto s = batch.Put(db_->cf(kRegions), run.key, run.value);
      if (!s.ok()) return unexpected(to_error(s, "build append batch for " + db_->dir()));
    }
    if (!audit.empty()) {
      auto s = put_audit(*db_, batch, audit);
      if (!s.ok()) return unexpected(to_error(s, "build append batch for " + db_->dir()));
    }
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    auto s = db_->db()->Write(wo, &batch);
    // An unusually large append does not keep its memory.
    if (batch.GetDataSize() > kKeptBatchBytes) batch_ = rocksdb::WriteBatch();
    // After a failed write RocksDB refuses further writes until resumed (its background
    // error state; RocksDb::resume).
    if (!s.ok()) return unexpected(to_error(s, "append to event log " + db_->dir()));
    appended_.fetch_add(records.size());
    if (!audit.empty()) audit_.moved({audit.back().index, audit.back().hash});
    return {};
  }

  // Raises `to` to `value` unless it is already there (the writer and the syncer both
  // advance durable_).
  static void advance(std::atomic<std::uint64_t>& to, std::uint64_t value) {
    std::uint64_t cur = to.load();
    while (cur < value && !to.compare_exchange_weak(cur, value)) {
    }
  }

  // Shared with the consumer store: one database holds both (rocksdb_broker_store.h),
  // and the broker may destroy the two in either order.
  std::shared_ptr<detail::RocksDb> db_;
  const bool sync_;
  const detail::OpenMode mode_;
  std::atomic<std::uint64_t> appended_;  // next sequence to append; the writer's
  std::atomic<std::uint64_t> durable_;   // next_sequence(): below it, synced
  std::atomic<bool> sync_failed_{false};
  RocksAuditLog audit_;
  // The writer's, reused across appends.
  static constexpr std::size_t kKeptBatchBytes = 4 << 20;
  rocksdb::WriteBatch batch_;
  RegionRuns runs_;
  std::vector<std::string_view> prefixes_;  // one record's, views into its regions
};

}  // namespace

namespace detail {

Result<std::unique_ptr<EventLog>> make_rocks_event_log(std::shared_ptr<RocksDb> db, bool sync,
                                                       OpenMode mode) {
  // Recover the next sequence from the last record of the log.
  std::uint64_t next = 1;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->db()->NewIterator(rocksdb::ReadOptions(), db->cf(kLog)));
    it->SeekToLast();
    if (!it->status().ok()) return unexpected(to_error(it->status(), "recover " + db->dir()));
    if (it->Valid()) {
      if (it->key().size() != 8) {
        return unexpected(Errc::kCorruption, "event log " + db->dir() + ": the last log key is " +
                                                 std::to_string(it->key().size()) +
                                                 " bytes long, expected 8");
      }
      next = decode_be64(it->key().ToStringView()) + 1;
    }
  }
  // The audit head as recorded, not as the last key says: a removed tail record must
  // show as missing, not silently become the new end of the chain.
  AuditHead head;
  {
    std::string v;
    auto s = db->db()->Get(rocksdb::ReadOptions(), db->cf(kBrokerMeta), kMetaAuditHeadKey, &v);
    if (!s.ok() && !s.IsNotFound()) return unexpected(to_error(s, "recover " + db->dir()));
    if (s.ok()) {
      if (v.size() != 8 + head.hash.size()) {
        return unexpected(Errc::kCorruption, "event log " + db->dir() + ": the audit head is " +
                                                 std::to_string(v.size()) +
                                                 " bytes long, expected 40");
      }
      head.index = decode_be64(v);
      std::copy(v.begin() + 8, v.end(), head.hash.begin());
    }
  }
  return std::unique_ptr<EventLog>(
      std::make_unique<RocksEventLog>(std::move(db), sync, mode, next, head));
}

}  // namespace detail

// The event log alone is the broker store without its consumer store; the consumer
// column families are still opened (and created), since RocksDB must open them all.
Result<std::unique_ptr<EventLog>> open_rocksdb_event_log(const std::string& dir,
                                                         const RocksOptions& options) {
  auto store = open_rocksdb_broker_store(dir, options);
  if (!store) return unexpected(store.error());
  return std::move(store->log);
}

Result<std::unique_ptr<EventLog>> open_rocksdb_event_log_read_only(const std::string& dir) {
  auto store = open_rocksdb_broker_store_read_only(dir);
  if (!store) return unexpected(store.error());
  return std::move(store->log);
}

}  // namespace kolabus::storage
