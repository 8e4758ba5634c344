// Internal to storage: what the RocksDB stores (event log, outbox) share. Converting
// rocksdb::Status to Error, big-endian keys, options, and opening a database with its
// column families and its format metadata checked.
//
// Thread-safety: RocksDb is as thread-safe as rocksdb::DB (fully); the rest are pure.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/status.h>

#include <common/result.h>

namespace kolabus::storage::detail {

// The one place where a rocksdb::Status becomes an Error. `what` says what was being
// done ("append to event log /var/log").
// REQUIRES: !s.ok().
Error to_error(const rocksdb::Status& s, std::string_view what);

// 8-byte big-endian encoding, so that byte order of keys is numeric order.
std::string encode_be64(std::uint64_t v);
void append_be64(std::string& out, std::uint64_t v);
// REQUIRES: b.size() >= 8; decodes the first 8 bytes.
std::uint64_t decode_be64(std::string_view b);
// The low `bytes` bytes of v, big-endian (values with more fields than keys).
void append_be(std::string& out, std::uint64_t v, int bytes);
// REQUIRES: b.size() >= at + bytes.
std::uint64_t read_be(std::string_view b, std::size_t at, int bytes);

inline rocksdb::Slice as_slice(std::span<const std::uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Options shared by every column family of our stores: level compaction, the best
// compression Debian's librocksdb supports, a block cache, optionally a bloom filter
// (for point lookups of keys that are mostly absent, such as event ids).
enum class Bloom { kNo, kYes };
rocksdb::ColumnFamilyOptions column_family_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                                   Bloom bloom, std::size_t write_buffer_bytes);
rocksdb::DBOptions db_options();

// A RocksDB info log that writes warnings and errors to standard error, never a file
// on the database's own disk. open_rocks gives it to every store it opens.
std::shared_ptr<rocksdb::Logger> stderr_logger();

// Whether a read-only open accepts a database that lacks the column family. A column
// family added to a store after databases of it exist is kOptional: a read-write open
// creates it, a read-only one (which cannot) gets a null handle for it.
enum class Presence { kRequired, kOptional };

struct CfSpec {
  std::string name;
  rocksdb::ColumnFamilyOptions options;
  Presence presence = Presence::kRequired;
};

enum class OpenMode { kReadWrite, kReadOnly };

struct OpenSpec {
  std::string dir;
  std::string store;             // "event_log", "outbox", "inbox": stored in meta, checked
  std::uint32_t format_version;  // the version this code writes and reads
  // Older versions this code also reads (0: none). A read-write open of one records
  // format_version in meta (synced) before returning, so that older code, which cannot
  // read what this code writes, refuses the database from then on.
  std::uint32_t oldest_readable_version = 0;
  rocksdb::DBOptions db_options;
  std::vector<CfSpec> cfs;  // cfs[0] must be "default" (it holds the meta keys)
  OpenMode mode = OpenMode::kReadWrite;
  // Null: the default Env. Otherwise the database does all its file I/O through its
  // file system (tests: one that fails writes on demand); kept alive as long as the
  // database. Either way files are created 0600 and directories 0700.
  std::shared_ptr<rocksdb::Env> env;
};

// Owns an open database and its column family handles.
class RocksDb {
 public:
  RocksDb() = default;
  ~RocksDb();
  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;

  rocksdb::DB* db() const { return db_; }
  // The handle of spec.cfs[i]; null only for a kOptional one missing in a read-only open.
  rocksdb::ColumnFamilyHandle* cf(std::size_t i) const { return handles_[i]; }
  // Every open column family (none skipped: a writable open skips none).
  std::vector<rocksdb::ColumnFamilyHandle*> open_cfs() const {
    std::vector<rocksdb::ColumnFamilyHandle*> out;
    for (auto* h : handles_) {
      if (h != nullptr) out.push_back(h);
    }
    return out;
  }
  const std::string& dir() const { return dir_; }

  // After a failed write (a full disk, a failed fsync) RocksDB refuses every write —
  // its background error state — until it is resumed. RocksDB's own recovery is turned
  // off for read-write opens (it polls free space every 5 s, unseen by the broker), so
  // the owner calls this, with a backoff, until it succeeds: it flushes the memtables to
  // new files and a new write-ahead log, and clears the error. It waits first for any
  // flush or compaction still running (one of a failed attempt, say; see rocks_util.cpp
  // for why). OK when no write has failed.
  // Errors: the write error again (kIoError) while its cause lasts; kBusy while a
  // recovery runs already.
  Status resume();

  // Writes `batch` for a store that has no owner to call resume() (the outbox, the
  // inbox): after a write failed with an I/O error (a full disk), the next write resumes
  // first, and again at most every kMaxResumeBackoff while resuming fails (from 50 ms,
  // doubling): once there is space again a write succeeds with no reopen. A write that
  // is refused meanwhile writes nothing.
  // Errors: the write's own (to_error, prefixed with `what`); kIoError while writes are
  // refused, with the failure that started it and the last resume's error.
  Status write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch, std::string_view what);
  static constexpr std::chrono::milliseconds kFirstResumeBackoff{50};
  static constexpr std::chrono::milliseconds kMaxResumeBackoff{1000};

 private:
  friend Result<std::unique_ptr<RocksDb>> open_rocks(const OpenSpec& spec);
  // write(): whether a write failed and no resume succeeded since (read unlocked on
  // every write), and the rest guarded by recover_mu_.
  rocksdb::Status resume_db();
  Status recover();
  void note_failed_write(const rocksdb::Status& s);
  std::atomic<bool> refusing_{false};
  std::mutex recover_mu_;
  std::string failure_;  // the write error that started the refusal
  std::string last_resume_error_;
  std::chrono::steady_clock::time_point next_resume_{};
  std::chrono::milliseconds resume_backoff_{0};
  int resume_attempts_ = 0;

  std::shared_ptr<rocksdb::Env> env_;  // destroyed after the database is closed
  // The Env the database uses: env_'s file system (or the default) behind PrivateFs,
  // which makes every file 0600 and every directory 0700 (rocks_util.cpp).
  std::shared_ptr<rocksdb::Env> private_env_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // spec order, then foreign ones
  std::string dir_;
};

// Opens the database: makes its directory 0700 (narrowing an existing one open to
// others, with a warning on standard error), lists the existing column families first
// (RocksDB refuses an open that omits one), creates missing ones (read-write), then checks the meta
// keys in `default`: the store kind must match and the format version must not be newer. A new
// database gets its meta keys written (synced) before this returns.
Result<std::unique_ptr<RocksDb>> open_rocks(const OpenSpec& spec);

// The meta keys in the default column family.
inline constexpr std::string_view kMetaStoreKey = "store";
inline constexpr std::string_view kMetaFormatKey = "format_version";  // 4 bytes, big-endian

}  // namespace kolabus::storage::detail
