// Opens the broker's database: the event log's column families and the consumer
// store's, in one RocksDB instance (see README.md for the layout).
#include <rocksdb/cache.h>
#include <rocksdb/slice_transform.h>

#include "broker_db.h"
#include "rocks_util.h"
#include <storage/rocksdb_broker_store.h>

namespace kolabus::storage {

namespace {

// The regions index key is a length byte, that many prefix digits, then the sequence:
// within one prefix, appends only ever add larger sequences. With this extractor the
// memtable remembers where it last inserted under each prefix and starts the next
// insert there, instead of searching the skiplist from the top (the biggest single
// cost of a group commit: 4 to 8 index entries per event).
class RegionPrefix final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "kolabus.RegionPrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return {key.data(), 1 + static_cast<std::size_t>(static_cast<unsigned char>(key[0]))};
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return !key.empty() &&
           key.size() >= 1 + static_cast<std::size_t>(static_cast<unsigned char>(key[0]));
  }
};

// Format 2: a region index entry holds a run of sequences (one entry per prefix per
// append; rocksdb_event_log.cpp). Format 1 wrote one entry per event, which is a run
// of one, so format 1 is read as it is and becomes format 2 on a read-write open.
// The consumer and audit column families are created when missing.
constexpr std::uint32_t kFormatVersion = 2;
constexpr std::uint32_t kOldestReadableVersion = 1;

// Every key of the log and of the audit chain is larger than the one before: one
// prefix (the empty one) for all of them keeps one insert hint, so each memtable insert
// starts where the last one ended instead of at the top of the skiplist.
class OnePrefix final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "kolabus.OnePrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice&) const override { return {}; }
  bool InDomain(const rocksdb::Slice&) const override { return true; }
};

rocksdb::ColumnFamilyOptions ascending_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                               std::size_t write_buffer) {
  auto o = detail::column_family_options(cache, detail::Bloom::kNo, write_buffer);
  o.memtable_insert_with_hint_prefix_extractor = std::make_shared<OnePrefix>();
  return o;
}

// The log is read in long runs (a consumer catching up, a replay): LZ4 at every level,
// not ZSTD at the bottom one, where nearly all of it lies. Decompressing ZSTD blocks was
// 22-30 % of the broker's CPU in the catch-up benchmark; LZ4 costs some disk instead
// (docs/BENCHMARKS.md).
rocksdb::ColumnFamilyOptions log_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                         std::size_t write_buffer) {
  auto o = ascending_options(cache, write_buffer);
  o.bottommost_compression = rocksdb::kDisableCompressionOption;  // `compression` everywhere
  return o;
}

// Almost every id lookup (a publish checking for a duplicate) misses. A bloom filter
// over the memtable's keys answers most misses without searching the skiplist (it was
// 10 % of the publish path); 5 % of the write buffer gives about 20 bits per id.
rocksdb::ColumnFamilyOptions ids_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                         std::size_t write_buffer) {
  auto o = detail::column_family_options(cache, detail::Bloom::kYes, write_buffer);
  o.memtable_whole_key_filtering = true;
  o.memtable_prefix_bloom_size_ratio = 0.05;
  return o;
}

rocksdb::ColumnFamilyOptions regions_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                             std::size_t write_buffer) {
  auto o = detail::column_family_options(cache, detail::Bloom::kNo, write_buffer);
  o.memtable_insert_with_hint_prefix_extractor = std::make_shared<RegionPrefix>();
  return o;
}

detail::OpenSpec broker_spec(const std::string& dir, const RocksOptions& options,
                             detail::OpenMode mode) {
  // Four shards, not RocksDB's default of up to 64: a shard must hold the largest
  // filter block, and the id index's grows to about 2 MB per file; with 1 MB shards
  // every id lookup read and checksummed it again (seen in the benchmarks: 90 % of the
  // broker's time, publishing down to 3k events/s).
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes, /*num_shard_bits=*/2);
  constexpr std::size_t kWriteBuffer = 32 << 20;
  constexpr std::size_t kSmallWriteBuffer = 4 << 20;
  detail::OpenSpec spec;
  spec.dir = dir;
  spec.store = "event_log";  // the kind this database has always declared
  spec.format_version = kFormatVersion;
  spec.oldest_readable_version = kOldestReadableVersion;
  spec.db_options = detail::db_options();
  spec.mode = mode;
  spec.env = options.env;
  // In detail::BrokerCf order.
  spec.cfs = {
      {rocksdb::kDefaultColumnFamilyName,
       detail::column_family_options(cache, detail::Bloom::kNo, 1 << 20)},
      {"log", log_options(cache, kWriteBuffer)},
      {"ids", ids_options(cache, kWriteBuffer)},
      {"regions", regions_options(cache, kWriteBuffer)},
      // Consumer state is rewritten on every acknowledgement but stays small: few keys,
      // many overwrites, compacted away quickly.
      {"consumers", detail::column_family_options(cache, detail::Bloom::kNo, kSmallWriteBuffer),
       detail::Presence::kOptional},
      {"dead_letters", detail::column_family_options(cache, detail::Bloom::kNo, kSmallWriteBuffer),
       detail::Presence::kOptional},
      // Append-only, read by operators now and then: records are never overwritten.
      {"audit", ascending_options(cache, kSmallWriteBuffer), detail::Presence::kOptional},
  };
  return spec;
}

Result<BrokerStore> open_broker(const std::string& dir, const RocksOptions& options,
                                detail::OpenMode mode) {
  auto db = detail::open_rocks(broker_spec(dir, options, mode));
  if (!db) return unexpected(db.error());
  // Shared by the log and the consumer store: one database, one lock, one WAL for both;
  // it closes when the last of the two is destroyed.
  std::shared_ptr<detail::RocksDb> shared = std::move(*db);
  auto log = detail::make_rocks_event_log(shared, options.sync, mode);
  if (!log) return unexpected(log.error());
  BrokerStore out;
  if (mode == detail::OpenMode::kReadWrite) {
    // Weak: the database still closes with the last of the log and the consumer store.
    out.resume_writes = [weak = std::weak_ptr<detail::RocksDb>(shared)]() -> Status {
      const auto held = weak.lock();
      if (!held) return unexpected(Errc::kInvalidArgument, "the broker store is closed");
      return held->resume();
    };
  }
  out.log = std::move(*log);
  out.consumers = detail::make_rocks_consumer_store(std::move(shared), mode);
  return out;
}

}  // namespace

Result<BrokerStore> open_rocksdb_broker_store(const std::string& dir, const RocksOptions& options) {
  return open_broker(dir, options, detail::OpenMode::kReadWrite);
}

Result<BrokerStore> open_rocksdb_broker_store_read_only(const std::string& dir) {
  RocksOptions options;
  options.block_cache_bytes = 8 << 20;
  return open_broker(dir, options, detail::OpenMode::kReadOnly);
}

}  // namespace kolabus::storage
