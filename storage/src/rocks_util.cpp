#include "rocks_util.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <set>

#include <fcntl.h>
#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/table.h>
#include <sys/stat.h>
#include <unistd.h>

#include <common/private_files.h>

namespace kolabus::storage::detail {

Error to_error(const rocksdb::Status& s, std::string_view what) {
  KOLABUS_CHECK(!s.ok());
  std::string msg = std::string(what) + ": " + s.ToString();
  // RocksDB reports its directory lock as a plain IOError; the only way to tell it from
  // other I/O errors is the message. A lock held by another process fails fcntl() and
  // reads "While lock file: <dir>/LOCK: Resource temporarily unavailable"; a second open
  // within this process reads "lock hold by current process".
  if (s.IsIOError() && (s.ToString().find("While lock file") != std::string::npos ||
                        s.ToString().find("lock hold by current process") != std::string::npos)) {
    return Error{Errc::kBusy, std::string(what) +
                                  ": the directory is in use by another process (or another "
                                  "open handle in this process): " +
                                  s.ToString()};
  }
  if (s.IsCorruption()) return Error{Errc::kCorruption, std::move(msg)};
  if (s.IsNoSpace()) return Error{Errc::kIoError, std::move(msg) + " (no space left on device)"};
  if (s.IsIOError()) return Error{Errc::kIoError, std::move(msg)};
  if (s.IsNotFound() || s.IsPathNotFound()) return Error{Errc::kNotFound, std::move(msg)};
  if (s.IsInvalidArgument() || s.IsNotSupported()) {
    return Error{Errc::kInvalidArgument, std::move(msg)};
  }
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return Error{Errc::kBusy, std::move(msg)};
  if (s.IsShutdownInProgress() || s.IsIncomplete() || s.IsAborted()) {
    return Error{Errc::kUnavailable, std::move(msg)};
  }
  return Error{Errc::kInternal, std::move(msg)};
}

void append_be64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string encode_be64(std::uint64_t v) {
  std::string s;
  s.reserve(8);
  append_be64(s, v);
  return s;
}

std::uint64_t decode_be64(std::string_view b) {
  KOLABUS_CHECK(b.size() >= 8);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = v << 8 | static_cast<std::uint8_t>(b[i]);
  return v;
}

void append_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t read_be(std::string_view b, std::size_t at, int bytes) {
  KOLABUS_CHECK(b.size() >= at + static_cast<std::size_t>(bytes));
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = v << 8 | static_cast<std::uint8_t>(b[at + i]);
  return v;
}

namespace {

bool supported(rocksdb::CompressionType t) {
  const auto all = rocksdb::GetSupportedCompressions();
  return std::find(all.begin(), all.end(), t) != all.end();
}

std::string encode_be32(std::uint32_t v) {
  std::string s;
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// True when no column family holds any key: a database created by an earlier open that
// crashed before it wrote its meta keys.
Result<bool> all_empty(rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& cfs) {
  for (auto* cf : cfs) {
    if (cf == nullptr) continue;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cf));
    it->SeekToFirst();
    if (!it->status().ok()) return unexpected(to_error(it->status(), "scan " + cf->GetName()));
    if (it->Valid()) return false;
  }
  return true;
}

// Turns off RocksDB's automatic recovery from a full disk (its SstFileManager polls
// the free space every 5 s and then resumes on its own, while a manual DB::Resume()
// returns Busy): the owner resumes by RocksDb::resume(), when and as often as it
// chooses, and sees each attempt. listener.h: "The callback can suppress the automatic
// recovery by setting *auto_recovery to false. The database will then have to be
// transitioned out of read-only mode by calling DB::Resume()".
class ManualRecovery final : public rocksdb::EventListener {
 public:
  const char* Name() const override { return "kolabus.ManualRecovery"; }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    bg_error.PermitUncheckedError();
    *auto_recovery = false;
  }
};

// RocksDB's own log (its LOG file) goes to standard error instead, warnings and
// worse only. The LOG file lives on the database's disk: when that disk is full, its
// writer fails like any other, and the next line logged (the one reporting the full
// disk) trips an assertion in Debian's build (asserts on) and aborts the broker
// (found on a full tmpfs: writable_file_writer.h:312, `sync_without_flush_called_`).
class StderrLogger final : public rocksdb::Logger {
 public:
  StderrLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void LogHeader(const char* /*format*/, va_list /*ap*/) override {}
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char line[1024];
    const int prefix = std::snprintf(line, sizeof line, "rocksdb: ");
    const int n = std::vsnprintf(line + prefix, sizeof line - prefix - 1, format, ap);
    if (n < 0) return;
    std::size_t len = std::min<std::size_t>(prefix + n, sizeof line - 2);
    line[len++] = '\n';
    (void)!::write(2, line, len);  // one write: lines from threads do not interleave
  }
};

// Every file and directory of a store is its owner's only (0600, 0700), whatever the
// umask of the process: the client library runs inside the agencies' own programs, and
// RocksDB's POSIX file system creates files 0644 minus the umask. Each file is created
// here, mode 0600, just before RocksDB opens it (RocksDB's open then finds it and keeps
// its mode), so that it is never open to others, not even for an instant; a directory
// is set to 0700 once made. A wrapper for our databases only: the process-wide
// Env::SetAllowNonOwnerAccess(false) would change every other RocksDB database in the
// program too. The files themselves are RocksDB's, unwrapped: no cost per write.
class PrivateFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit PrivateFs(const std::shared_ptr<rocksdb::FileSystem>& target)
      : rocksdb::FileSystemWrapper(target) {}
  const char* Name() const override { return "kolabus.PrivateFs"; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    make_private(f);
    return target()->NewWritableFile(f, o, r, dbg);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override {
    make_private(f);
    return target()->ReopenWritableFile(f, o, r, dbg);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
    // The old file is renamed to `f`: it keeps the old file's mode, narrowed after.
    auto s = target()->ReuseWritableFile(f, old, o, r, dbg);
    if (s.ok()) (void)narrow_file(f);
    return s;
  }
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    make_private(f);
    return target()->NewRandomRWFile(f, o, r, dbg);
  }
  rocksdb::IOStatus LockFile(const std::string& f, const rocksdb::IOOptions& o,
                             rocksdb::FileLock** l, rocksdb::IODebugContext* dbg) override {
    make_private(f);
    return target()->LockFile(f, o, l, dbg);
  }
  rocksdb::IOStatus NewLogger(const std::string& f, const rocksdb::IOOptions& o,
                              std::shared_ptr<rocksdb::Logger>* r,
                              rocksdb::IODebugContext* dbg) override {
    make_private(f);
    return target()->NewLogger(f, o, r, dbg);
  }
  rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* dbg) override {
    auto s = target()->CreateDir(d, o, dbg);
    if (s.ok()) ::chmod(d.c_str(), kPrivateDirMode);
    return s;
  }
  rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* dbg) override {
    struct stat st {};
    const bool existed = ::stat(d.c_str(), &st) == 0;
    auto s = target()->CreateDirIfMissing(d, o, dbg);
    if (s.ok() && !existed) ::chmod(d.c_str(), kPrivateDirMode);
    return s;
  }

 private:
  // Creates `f` mode 0600 if it is missing, narrows it if it exists open to others.
  // A failure is left to RocksDB's own open, which meets it too and reports it.
  static void make_private(const std::string& f) {
    auto fd = open_private_file(f);
    if (fd) ::close(*fd);
  }
};

}  // namespace

std::shared_ptr<rocksdb::Logger> stderr_logger() { return std::make_shared<StderrLogger>(); }

rocksdb::Status RocksDb::resume_db() {
  // First wait until no flush or compaction is scheduled or running. RocksDB 7.8.3's
  // Resume() returns as soon as a flush it started reports an error, while that flush's
  // thread is still finishing; that thread could report its error again into the next
  // Resume(), which then gave up on its own flush before that flush's thread had even
  // started. Started outside any recovery, with the error still set, that thread returns
  // without taking its request off the flush queue, and the column family stays marked
  // as queued: no later flush of it is ever scheduled, and the Resume() after that waited
  // forever (tests/storage/full_disk_test.cpp, "bit by bit"). Pausing waits for every
  // scheduled job; continuing schedules nothing while the error stands (only a recovery
  // may), so the Resume() below starts with no background job of an earlier attempt.
  auto s = db_->PauseBackgroundWork();
  if (s.ok()) s = db_->ContinueBackgroundWork();
  if (s.ok()) s = db_->Resume();
  return s;
}

Status RocksDb::resume() {
  const auto s = resume_db();
  if (s.ok()) return {};
  return unexpected(to_error(s, "resume writes to " + dir_));
}

Status RocksDb::write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                      std::string_view what) {
  if (refusing_.load()) {
    if (auto st = recover(); !st) {
      return unexpected(st.error().code, std::string(what) + ": " + st.error().message);
    }
  }
  const auto s = db_->Write(wo, batch);
  if (s.ok()) return {};
  // NoSpace is an IOError too. Other failures (a batch too large) leave RocksDB writable.
  if (s.IsIOError()) note_failed_write(s);
  return unexpected(to_error(s, what));
}

void RocksDb::note_failed_write(const rocksdb::Status& s) {
  std::lock_guard lock(recover_mu_);
  if (refusing_.load()) return;  // refused already: the first failure is the one to tell
  failure_ = s.ToString();
  last_resume_error_.clear();
  resume_backoff_ = std::chrono::milliseconds(0);
  next_resume_ = std::chrono::steady_clock::now();  // the next write tries at once
  resume_attempts_ = 0;
  refusing_.store(true);
}

Status RocksDb::recover() {
  std::lock_guard lock(recover_mu_);
  if (!refusing_.load()) return {};  // another write resumed meanwhile
  const auto now = std::chrono::steady_clock::now();
  const auto refused = [&](std::string_view why) {
    return unexpected(Errc::kIoError,
                      "refused since a write failed (" + failure_ + "); " + std::string(why));
  };
  if (now < next_resume_) {
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_resume_ - now).count();
    return refused("resume attempt " + std::to_string(resume_attempts_) + " failed: " +
                   last_resume_error_ + "; next attempt in " + std::to_string(wait) + " ms");
  }
  ++resume_attempts_;
  const auto s = resume_db();
  if (s.ok()) {
    refusing_.store(false);
    return {};
  }
  last_resume_error_ = s.ToString();
  resume_backoff_ = std::clamp(resume_backoff_ * 2, kFirstResumeBackoff, kMaxResumeBackoff);
  next_resume_ = now + resume_backoff_;
  return refused("resume attempt " + std::to_string(resume_attempts_) +
                 " failed: " + last_resume_error_);
}

rocksdb::ColumnFamilyOptions column_family_options(const std::shared_ptr<rocksdb::Cache>& cache,
                                                   Bloom bloom, std::size_t write_buffer_bytes) {
  rocksdb::ColumnFamilyOptions o;
  o.compaction_style = rocksdb::kCompactionStyleLevel;
  o.level_compaction_dynamic_level_bytes = true;
  o.write_buffer_size = write_buffer_bytes;
  // LZ4 where data is still young and rewritten often; ZSTD for the bottom level, where
  // most bytes end up and stay. Debian's build has both, but check rather than assume.
  if (supported(rocksdb::kLZ4Compression)) {
    o.compression = rocksdb::kLZ4Compression;
  } else if (supported(rocksdb::kSnappyCompression)) {
    o.compression = rocksdb::kSnappyCompression;
  } else {
    o.compression = rocksdb::kNoCompression;
  }
  o.bottommost_compression =
      supported(rocksdb::kZSTD) ? rocksdb::kZSTD : rocksdb::kDisableCompressionOption;

  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.cache_index_and_filter_blocks = true;
  t.pin_l0_filter_and_index_blocks_in_cache = true;
  t.format_version = 5;
  if (bloom == Bloom::kYes) t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

rocksdb::DBOptions db_options() {
  rocksdb::DBOptions o;
  // A bounded number of open files keeps start-up fast (RocksDB opens every table file
  // at start when this is -1) and memory predictable.
  o.max_open_files = 256;
  o.max_background_jobs = 2;
  o.skip_stats_update_on_db_open = true;
  o.skip_checking_sst_file_sizes_on_db_open = true;
  // With several column families a WAL file lives until every family has flushed past
  // it; this forces flushes of small, slow families so the WAL stays bounded.
  o.max_total_wal_size = 128 << 20;
  o.keep_log_file_num = 4;
  o.max_log_file_size = 16 << 20;
  return o;
}

RocksDb::~RocksDb() {
  if (db_ == nullptr) return;
  for (auto* h : handles_) {
    if (h != nullptr) (void)db_->DestroyColumnFamilyHandle(h);
  }
  (void)db_->Close();
  delete db_;
}

Result<std::unique_ptr<RocksDb>> open_rocks(const OpenSpec& spec) {
  KOLABUS_CHECK(!spec.cfs.empty() && spec.cfs[0].name == rocksdb::kDefaultColumnFamilyName);
  const bool read_only = spec.mode == OpenMode::kReadOnly;
  const std::string where = spec.store + " " + spec.dir;

  std::error_code ec;
  const bool exists = std::filesystem::exists(std::filesystem::path(spec.dir) / "CURRENT", ec);
  if (read_only && !exists) {
    return unexpected(Errc::kNotFound, "open " + where + " read-only: no database there");
  }

  std::vector<std::string> existing;
  if (exists) {
    auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), spec.dir, &existing);
    if (!s.ok()) return unexpected(to_error(s, "list column families of " + where));
  }

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  std::set<std::string> ours;
  std::vector<bool> skipped;  // per spec.cfs: optional and missing in a read-only open
  for (const auto& cf : spec.cfs) {
    ours.insert(cf.name);
    const bool present = std::find(existing.begin(), existing.end(), cf.name) != existing.end();
    skipped.push_back(read_only && !present && cf.presence == Presence::kOptional);
    if (skipped.back()) continue;
    if (read_only && !present) {
      return unexpected(Errc::kInvalidArgument, "open " + where + ": column family '" + cf.name +
                                                    "' is missing: not a kolabus " + spec.store);
    }
    descs.emplace_back(cf.name, cf.options);
  }
  // Column families this code does not know (a newer format, or another store) must be
  // opened too; they are reported after the meta keys, whose message is clearer.
  std::vector<std::string> foreign;
  for (const auto& name : existing) {
    if (ours.count(name) == 0) {
      foreign.push_back(name);
      descs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
  }

  // RocksDB creates a missing directory itself, but logs an error first ("Error when
  // reading ... dir NotFound"), which now reaches standard error. Ours is 0700 (and its
  // missing parents): only its owner may enter. One that exists open to others (an
  // older release made it 0755) is narrowed, with a warning on standard error (the
  // client library has no logger of its own; the broker's main narrows its data
  // directory first and logs it).
  if (!read_only) {
    auto made = make_private_dir(spec.dir);
    if (!made) return unexpected(made.error().code, "open " + where + ": " + made.error().message);
    if (made->widened) {
      const std::string line = "kolabus: warning: " +
                               narrowed_text(spec.store + " directory", spec.dir, *made->widened) +
                               "\n";
      (void)!::write(2, line.data(), line.size());
    }
  }

  auto opts = spec.db_options;
  opts.create_if_missing = !read_only;
  opts.create_missing_column_families = !read_only;
  // Every file through PrivateFs, over the file system of the Env given (a test's), or
  // the default one.
  std::shared_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(std::make_shared<PrivateFs>(
      spec.env != nullptr ? spec.env->GetFileSystem() : rocksdb::FileSystem::Default()));
  opts.env = env.get();
  // No LOG file beside the data: on a full disk its failed writes abort the process
  // (StderrLogger). Warnings go to the process's own log instead.
  if (opts.info_log == nullptr) opts.info_log = stderr_logger();
  if (!read_only) opts.listeners.push_back(std::make_shared<ManualRecovery>());
  if (!read_only) {
    // Flushes and compactions at nice 19, process-wide, from each background thread's
    // next job on. They come in bursts of tens of milliseconds of CPU; at normal priority
    // they took turns with the broker's loop, its sync thread and ZeroMQ's I/O thread on
    // a small machine, and the events waiting then made most of the end-to-end p99
    // (docs/BENCHMARKS.md, "Background work at low priority"). Not SCHED_IDLE: that
    // would let other busy processes starve the flushes, and a missing flush stops
    // every write.
    for (auto pool : {rocksdb::Env::LOW, rocksdb::Env::HIGH}) {
      opts.env->LowerThreadPoolCPUPriority(pool, rocksdb::CpuPriority::kLow).PermitUncheckedError();
    }
  }

  auto out = std::make_unique<RocksDb>();
  out->dir_ = spec.dir;
  out->env_ = spec.env;
  out->private_env_ = std::move(env);
  rocksdb::Status s;
  if (read_only) {
    s = rocksdb::DB::OpenForReadOnly(opts, spec.dir, descs, &out->handles_, &out->db_);
  } else {
    s = rocksdb::DB::Open(opts, spec.dir, descs, &out->handles_, &out->db_);
  }
  if (!s.ok()) return unexpected(to_error(s, "open " + where));
  // Back to spec order, with a null handle for each skipped column family.
  {
    auto opened = std::move(out->handles_);
    out->handles_.clear();
    std::size_t next = 0;
    for (const bool skip : skipped) out->handles_.push_back(skip ? nullptr : opened[next++]);
    out->handles_.insert(out->handles_.end(), opened.begin() + static_cast<std::ptrdiff_t>(next),
                         opened.end());
  }

  auto* meta = out->cf(0);
  std::string store, format;
  s = out->db_->Get(rocksdb::ReadOptions(), meta, kMetaStoreKey, &store);
  const bool has_store = s.ok();
  if (!s.ok() && !s.IsNotFound()) return unexpected(to_error(s, "read meta of " + where));
  s = out->db_->Get(rocksdb::ReadOptions(), meta, kMetaFormatKey, &format);
  const bool has_format = s.ok();
  if (!s.ok() && !s.IsNotFound()) return unexpected(to_error(s, "read meta of " + where));

  if (has_store && store != spec.store) {
    return unexpected(Errc::kInvalidArgument, "open " + where + ": the directory holds a kolabus " +
                                                  store + ", not a " + spec.store);
  }
  if (has_format) {
    if (format.size() != 4) {
      return unexpected(Errc::kCorruption, "open " + where + ": format version is " +
                                               std::to_string(format.size()) +
                                               " bytes long, expected 4");
    }
    std::uint32_t v = 0;
    for (char c : format) v = v << 8 | static_cast<std::uint8_t>(c);
    if (v > spec.format_version) {
      return unexpected(Errc::kInvalidArgument,
                        "open " + where + ": on-disk format version " + std::to_string(v) +
                            " is newer than the version " + std::to_string(spec.format_version) +
                            " this kolabus understands; use a newer kolabus");
    }
    const bool readable = spec.oldest_readable_version != 0 && v >= spec.oldest_readable_version;
    if (v < spec.format_version && !readable) {
      return unexpected(Errc::kInvalidArgument, "open " + where + ": on-disk format version " +
                                                    std::to_string(v) + " is older than " +
                                                    std::to_string(spec.format_version) +
                                                    " and there is no migration for it");
    }
    if (v < spec.format_version && !read_only && foreign.empty()) {
      rocksdb::WriteOptions wo;
      wo.sync = true;
      s = out->db_->Put(wo, meta, kMetaFormatKey, encode_be32(spec.format_version));
      if (!s.ok()) return unexpected(to_error(s, "upgrade the format version of " + where));
    }
  }
  if (!foreign.empty()) {
    std::string names;
    for (const auto& n : foreign) names += (names.empty() ? "" : ", ") + n;
    return unexpected(Errc::kInvalidArgument, "open " + where + ": unknown column families (" +
                                                  names + "): not a kolabus " + spec.store +
                                                  " of this version");
  }
  if (!has_store || !has_format) {
    if (read_only) {
      return unexpected(Errc::kInvalidArgument,
                        "open " + where + ": no format metadata: not a kolabus " + spec.store);
    }
    // A database with data but no meta keys was not written by us. An empty one was
    // created by an open that stopped before writing them (the two are not atomic).
    auto empty = all_empty(out->db_, out->handles_);
    if (!empty) return unexpected(empty.error());
    if (!*empty) {
      return unexpected(
          Errc::kInvalidArgument,
          "open " + where + ": data but no format metadata: not a kolabus " + spec.store);
    }
    rocksdb::WriteBatch batch;
    batch.Put(meta, kMetaStoreKey, spec.store);
    batch.Put(meta, kMetaFormatKey, encode_be32(spec.format_version));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = out->db_->Write(wo, &batch);
    if (!s.ok()) return unexpected(to_error(s, "write meta of " + where));
  }
  return out;
}

}  // namespace kolabus::storage::detail
