// RocksDB's background work (flushes, compactions) runs at low CPU priority once a
// kolabus store is open for writing: the broker's loop must win a core over it.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include "temp_dir.h"
#include <storage/rocksdb_event_log.h>

namespace kolabus::storage {
namespace {

struct ThreadNice {
  std::string name;
  int nice = 0;
};

// This process's threads named rocksdb:* and their nice values (/proc/self/task/*/stat,
// field 19; the fields after the parenthesised name start at field 3).
std::vector<ThreadNice> rocksdb_threads() {
  std::vector<ThreadNice> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("rocksdb:", 0) != 0) continue;
    std::ifstream stat_file(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && rest >> field; ++i) {
    }
    out.push_back({name, std::atoi(field.c_str())});
  }
  return out;
}

TEST_CASE("RocksDB stores: flushes run at nice 19 once a store is open for writing") {
  test::TempDir dir("background");
  auto log = open_rocksdb_event_log(dir.path().string() + "/log");
  REQUIRE(log);
  // A database of its own in the same process shares the default Env's background
  // threads; its flush is a job on one of them, which takes the pool's priority first.
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::Open(o, dir.path().string() + "/raw", &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  REQUIRE(db->Put(rocksdb::WriteOptions(), "key", "value").ok());
  REQUIRE(db->Flush(rocksdb::FlushOptions()).ok());

  const auto threads = rocksdb_threads();
  REQUIRE_FALSE(threads.empty());
  bool flush_thread_lowered = false;
  for (const auto& t : threads) {
    INFO(t.name << " nice " << t.nice);
    CHECK((t.nice == 0 || t.nice == 19));  // lowered, or has run no job yet
    if (t.name == "rocksdb:high" && t.nice == 19) flush_thread_lowered = true;
  }
  CHECK(flush_thread_lowered);
  REQUIRE(db->Close().ok());
}

}  // namespace
}  // namespace kolabus::storage
