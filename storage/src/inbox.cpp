// The RocksDB inbox. Layout (see README.md):
//   default    meta: "store" = "inbox", "format_version" = 4-byte BE
//   processed  16-byte event id -> 8-byte BE sequence + 8-byte BE commit time (UTC ms)
//   by_time    8-byte BE commit time + 16-byte event id -> empty (prune walks it in order)
//   app        handler keys -> handler values
#include <atomic>
#include <mutex>

#include <rocksdb/cache.h>
#include <rocksdb/write_batch.h>

#include "rocks_util.h"
#include <storage/inbox.h>

namespace kolabus::storage {

namespace {

using detail::append_be64;
using detail::decode_be64;
using detail::encode_be64;
using detail::to_error;

constexpr std::uint32_t kFormatVersion = 1;
enum Cf : std::size_t { kMeta = 0, kProcessed = 1, kByTime = 2, kApp = 3 };
// Prune deletes in batches of this many marks, so one prune of a large backlog does not
// build one huge batch in memory.
constexpr std::size_t kPruneBatch = 10000;

std::string by_time_key(TimeMs t, const EventId& id) {
  std::string k = encode_be64(static_cast<std::uint64_t>(t));
  k.append(id.as_key());
  return k;
}

class RocksInbox;

class RocksTxn final : public Inbox::Txn {
 public:
  RocksTxn(const RocksInbox* owner, rocksdb::ColumnFamilyHandle* app) : owner_(owner), app_(app) {}

  void put(std::string_view key, std::string_view value) override {
    note(batch_.Put(app_, key, value));
  }
  void erase(std::string_view key) override { note(batch_.Delete(app_, key)); }

  const RocksInbox* owner() const { return owner_; }
  rocksdb::WriteBatch& batch() { return batch_; }
  // The first failure while building (a batch past RocksDB's size limit), reported by
  // commit().
  const rocksdb::Status& status() const { return status_; }

 private:
  void note(const rocksdb::Status& s) {
    if (status_.ok() && !s.ok()) status_ = s;
  }

  const RocksInbox* owner_;
  rocksdb::ColumnFamilyHandle* app_;
  rocksdb::WriteBatch batch_;
  rocksdb::Status status_;
};

class RocksInbox final : public Inbox {
 public:
  RocksInbox(std::unique_ptr<detail::RocksDb> db, std::uint64_t count)
      : db_(std::move(db)), count_(count) {}

  Result<std::optional<std::uint64_t>> processed(const EventId& id) const override {
    auto mark = read_mark(id);
    if (!mark) return unexpected(mark.error());
    if (!mark->has_value()) return std::optional<std::uint64_t>();
    return std::optional<std::uint64_t>((*mark)->sequence);
  }

  std::unique_ptr<Txn> begin() override { return std::make_unique<RocksTxn>(this, db_->cf(kApp)); }

  Status commit(std::unique_ptr<Txn> txn, const EventId& id, std::uint64_t sequence,
                TimeMs now) override {
    auto* t = dynamic_cast<RocksTxn*>(txn.get());
    KOLABUS_CHECK(t != nullptr && t->owner() == this);
    // by_time keys are unsigned big-endian: a negative time would sort last.
    KOLABUS_CHECK(now >= 0);
    if (!t->status().ok()) return unexpected(to_error(t->status(), "build inbox batch"));
    // Held across the check and the write: two commits of one id must not both see it
    // absent (both would write, and count it twice).
    std::lock_guard lock(mu_);
    auto mark = read_mark(id);
    if (!mark) return unexpected(mark.error());
    if (mark->has_value()) return {};  // processed already: the first commit stands

    auto& batch = t->batch();
    std::string v = encode_be64(sequence);
    append_be64(v, static_cast<std::uint64_t>(now));
    auto s = batch.Put(db_->cf(kProcessed), id.as_key(), v);
    if (s.ok()) s = batch.Put(db_->cf(kByTime), by_time_key(now, id), rocksdb::Slice());
    if (!s.ok()) return unexpected(to_error(s, "build inbox batch for " + db_->dir()));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (auto st = db_->write(wo, &batch, "commit to inbox " + db_->dir()); !st) return st;
    count_.fetch_add(1);
    return {};
  }

  Result<std::optional<std::string>> get(std::string_view key) const override {
    std::string v;
    auto s = db_->db()->Get(rocksdb::ReadOptions(), db_->cf(kApp), key, &v);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return unexpected(to_error(s, "read inbox " + db_->dir()));
    return std::optional<std::string>(std::move(v));
  }

  Status scan(std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn) const override {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->db()->NewIterator(rocksdb::ReadOptions(), db_->cf(kApp)));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const auto k = it->key().ToStringView();
      if (k.substr(0, prefix.size()) != prefix) break;
      if (!fn(k, it->value().ToStringView())) return {};
    }
    if (!it->status().ok()) return unexpected(to_error(it->status(), "scan inbox " + db_->dir()));
    return {};
  }

  Result<std::uint64_t> prune(TimeMs before) override {
    std::uint64_t pruned = 0;
    if (before <= 0) return pruned;
    std::lock_guard lock(mu_);
    const std::string end = encode_be64(static_cast<std::uint64_t>(before));
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    while (true) {
      // A fresh iterator per round: it sees the deletes of the rounds before.
      std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(ro, db_->cf(kByTime)));
      rocksdb::WriteBatch batch;
      std::size_t n = 0;
      for (it->SeekToFirst(); it->Valid() && n < kPruneBatch; it->Next()) {
        const auto k = it->key().ToStringView();
        if (k.size() != 8 + 16) {
          return unexpected(Errc::kCorruption, "inbox " + db_->dir() + ": a by_time key is " +
                                                   std::to_string(k.size()) +
                                                   " bytes long, expected 24");
        }
        auto s = batch.Delete(db_->cf(kByTime), it->key());
        if (s.ok()) s = batch.Delete(db_->cf(kProcessed), k.substr(8));
        if (!s.ok()) return unexpected(to_error(s, "build inbox batch for " + db_->dir()));
        ++n;
      }
      if (!it->status().ok()) {
        return unexpected(to_error(it->status(), "scan inbox " + db_->dir()));
      }
      if (n == 0) return pruned;
      rocksdb::WriteOptions wo;
      wo.sync = false;  // a prune lost in a crash is redone by the next one
      if (auto st = db_->write(wo, &batch, "prune inbox " + db_->dir()); !st) {
        return unexpected(st.error());
      }
      count_.fetch_sub(n);
      pruned += n;
    }
  }

  std::uint64_t processed_count() const override { return count_.load(); }

 private:
  struct Mark {
    std::uint64_t sequence;
    TimeMs at;
  };

  Result<std::optional<Mark>> read_mark(const EventId& id) const {
    rocksdb::PinnableSlice v;
    auto s = db_->db()->Get(rocksdb::ReadOptions(), db_->cf(kProcessed), id.as_key(), &v);
    if (s.IsNotFound()) return std::optional<Mark>();
    if (!s.ok()) return unexpected(to_error(s, "read inbox " + db_->dir()));
    if (v.size() != 16) {
      return unexpected(Errc::kCorruption, "inbox " + db_->dir() + ": the mark of " +
                                               id.to_string() + " is " + std::to_string(v.size()) +
                                               " bytes, expected 16");
    }
    const auto b = v.ToStringView();
    return std::optional<Mark>(Mark{decode_be64(b), static_cast<TimeMs>(decode_be64(b.substr(8)))});
  }

  std::unique_ptr<detail::RocksDb> db_;
  // Serializes commit and prune, so that each mark is counted once either way.
  std::mutex mu_;
  std::atomic<std::uint64_t> count_;
};

}  // namespace

Result<std::unique_ptr<Inbox>> Inbox::open(const std::string& dir) { return open(dir, nullptr); }

Result<std::unique_ptr<Inbox>> Inbox::open(const std::string& dir,
                                           std::shared_ptr<rocksdb::Env> env) {
  auto cache = rocksdb::NewLRUCache(8 << 20);
  constexpr std::size_t kWriteBuffer = 8 << 20;
  detail::OpenSpec spec;
  spec.dir = dir;
  spec.store = "inbox";
  spec.format_version = kFormatVersion;
  spec.db_options = detail::db_options();
  spec.env = std::move(env);
  spec.cfs = {
      {rocksdb::kDefaultColumnFamilyName,
       detail::column_family_options(cache, detail::Bloom::kNo, 1 << 20)},
      // Most lookups are of new events, absent here: the bloom filter answers them.
      {"processed", detail::column_family_options(cache, detail::Bloom::kYes, kWriteBuffer)},
      {"by_time", detail::column_family_options(cache, detail::Bloom::kNo, kWriteBuffer)},
      {"app", detail::column_family_options(cache, detail::Bloom::kNo, kWriteBuffer)},
  };
  auto db = detail::open_rocks(spec);
  if (!db) return unexpected(db.error());

  std::uint64_t count = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        (*db)->db()->NewIterator(rocksdb::ReadOptions(), (*db)->cf(kProcessed)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
    if (!it->status().ok()) return unexpected(to_error(it->status(), "count inbox " + dir));
  }
  return std::unique_ptr<Inbox>(std::make_unique<RocksInbox>(std::move(*db), count));
}

}  // namespace kolabus::storage
