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

// Format 1 is still the format: the consumer column families were added before any
// release, so an event-log-only database of format 1 just gains them on its next
// read-write open.
constexpr std::uint32_t kFormatVersion = 1;

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
  spec.db_options = detail::db_options();
  spec.mode = mode;
  spec.env = options.env;
  // In detail::BrokerCf order.
  spec.cfs = {
      {rocksdb::kDefaultColumnFamilyName,
       detail::column_family_options(cache, detail::Bloom::kNo, 1 << 20)},
      {"log", detail::column_family_options(cache, detail::Bloom::kNo, kWriteBuffer)},
      {"ids", detail::column_family_options(cache, detail::Bloom::kYes, kWriteBuffer)},
      {"regions", regions_options(cache, kWriteBuffer)},
      // Consumer state is rewritten on every acknowledgement but stays small: few keys,
      // many overwrites, compacted away quickly.
      {"consumers", detail::column_family_options(cache, detail::Bloom::kNo, kSmallWriteBuffer),
       detail::Presence::kOptional},
      {"dead_letters", detail::column_family_options(cache, detail::Bloom::kNo, kSmallWriteBuffer),
       detail::Presence::kOptional},
      // Append-only, read by operators now and then: records are never overwritten.
      {"audit", detail::column_family_options(cache, detail::Bloom::kNo, kSmallWriteBuffer),
       detail::Presence::kOptional},
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
