// A RocksDB file system that runs out of space on demand: a wrapper over the default
// (POSIX) file system whose file writes fail with IOStatus::NoSpace — as ENOSPC from a
// full disk does — while a byte budget is exhausted. Reads, renames and deletions go
// through. For deterministic tests of what the stores and the broker do with a full
// disk; the real thing (a small tmpfs) is in tests/integration/resource_test.cpp.
//
// Usage: NoSpaceFs::make() gives the file system and an Env over it for
// storage::RocksOptions::env; fill() and make_room() switch the disk between full and
// not full. Thread-safety: all members may be called from any thread (RocksDB writes
// from its background threads too).
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

namespace kolabus::test {

class NoSpaceFs final : public rocksdb::FileSystemWrapper {
 public:
  static constexpr std::int64_t kUnlimited = std::numeric_limits<std::int64_t>::max();

  explicit NoSpaceFs(const std::shared_ptr<rocksdb::FileSystem>& target)
      : rocksdb::FileSystemWrapper(target) {}

  struct Made {
    std::shared_ptr<NoSpaceFs> fs;
    std::shared_ptr<rocksdb::Env> env;  // for RocksOptions::env; uses fs
  };
  static Made make() {
    auto fs = std::make_shared<NoSpaceFs>(rocksdb::FileSystem::Default());
    std::shared_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
    return {fs, env};
  }

  const char* Name() const override { return "kolabus.NoSpaceFs"; }

  // From now on, writes fail once `bytes` more bytes have been written (0: at once).
  void fill(std::int64_t bytes = 0) { budget_.store(bytes); }
  // Space again: writes succeed.
  void make_room() { budget_.store(kUnlimited); }
  // How many writes (appends, syncs) failed so far.
  std::uint64_t failures() const { return failures_.load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewWritableFile(f, o, r, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), *this);
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override {
    auto s = target()->ReopenWritableFile(f, o, r, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), *this);
    return s;
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
    auto s = target()->ReuseWritableFile(f, old, o, r, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), *this);
    return s;
  }
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& o,
                                 std::uint64_t* free, rocksdb::IODebugContext* dbg) override {
    const auto budget = budget_.load();
    if (budget == kUnlimited) return target()->GetFreeSpace(path, o, free, dbg);
    *free = static_cast<std::uint64_t>(budget);
    return rocksdb::IOStatus::OK();
  }

 private:
  // Takes `n` bytes from the budget; false (and nothing taken) when there are not that
  // many left.
  bool take(std::size_t n) {
    auto budget = budget_.load();
    while (true) {
      if (budget == kUnlimited) return true;
      if (budget < static_cast<std::int64_t>(n)) {
        // The disk is full now: even a smaller write fails. Not a plain store: a
        // make_room() since the load must not be undone by a write that lost the race
        // (RocksDB writes from its background threads too).
        budget_.compare_exchange_strong(budget, 0);
        failures_.fetch_add(1);
        return false;
      }
      if (budget_.compare_exchange_weak(budget, budget - static_cast<std::int64_t>(n))) {
        return true;
      }
    }
  }
  bool full() {
    if (budget_.load() != 0) return false;
    failures_.fetch_add(1);
    return true;
  }

  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile>&& f, NoSpaceFs& fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
      if (!fs_.take(data.size())) return no_space();
      return target()->Append(data, o, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* dbg) override {
      if (!fs_.take(data.size())) return no_space();
      return target()->Append(data, o, v, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* dbg) override {
      if (!fs_.take(data.size())) return no_space();
      return target()->PositionedAppend(data, offset, o, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& o,
                                       const rocksdb::DataVerificationInfo& v,
                                       rocksdb::IODebugContext* dbg) override {
      if (!fs_.take(data.size())) return no_space();
      return target()->PositionedAppend(data, offset, o, v, dbg);
    }
    // A full disk also fails the sync of data written before it filled (delayed
    // allocation): the write-ahead log's fsync is where a publisher's ACK waits.
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
      if (fs_.full()) return no_space();
      return target()->Sync(o, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
      if (fs_.full()) return no_space();
      return target()->Fsync(o, dbg);
    }

   private:
    static rocksdb::IOStatus no_space() {
      return rocksdb::IOStatus::NoSpace("kolabus test", "no space left on device");
    }
    NoSpaceFs& fs_;
  };

  std::atomic<std::int64_t> budget_{kUnlimited};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace kolabus::test
