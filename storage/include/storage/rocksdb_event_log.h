// The RocksDB implementation of EventLog: the broker's durable log on disk. The column
// families and key layouts are documented in storage/README.md.
//
// Ownership: the returned EventLog owns the database; destroying it closes the
// database and releases the directory's lock.
//
// Thread-safety: as EventLog (concurrent readers plus one writer). One process at a
// time may open a directory read-write; a second open fails with Errc::kBusy.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <storage/event_log.h>

namespace rocksdb {
class Env;
}

namespace kolabus::storage {

struct RocksOptions {
  // Sync the write-ahead log before append() returns. Only benchmarks and tests that do
  // not care about power loss turn this off: an unsynced append is not durable.
  bool sync = true;
  // Block cache shared by all column families.
  std::size_t block_cache_bytes = 64 << 20;
  // Tests only: an Env (rocksdb::NewCompositeEnv over a FileSystemWrapper) through
  // which the database does all its file I/O, to fail writes on demand. Null: the
  // default. Honoured by open_rocksdb_broker_store.
  std::shared_ptr<rocksdb::Env> env;
};

// Opens (creating if missing) the event log in `dir` for reading and appending.
// Errors: kBusy when another process (or another open handle in this process) holds the
// directory; kInvalidArgument when the directory holds a newer format version or a
// different kind of store; kCorruption for undecodable stored keys; kIoError otherwise.
Result<std::unique_ptr<EventLog>> open_rocksdb_event_log(const std::string& dir,
                                                         const RocksOptions& options = {});

// Opens an existing event log read-only (operator tools, tests). append() on it returns
// kInvalidArgument; next_sequence() is fixed at open.
// REQUIRES: no broker has the directory open read-write (RocksDB gives a read-only
// instance undefined results while a writer is active).
// Errors: kNotFound when `dir` holds no database; as open_rocksdb_event_log otherwise.
Result<std::unique_ptr<EventLog>> open_rocksdb_event_log_read_only(const std::string& dir);

}  // namespace kolabus::storage
