// The broker's whole durable state in one RocksDB database: the event log and the
// consumer store (consumer state and dead letters), sharing one directory, one lock and
// one write-ahead log. Column families and encodings: storage/README.md.
//
// Ownership: the caller owns both objects; they share the database, which closes (and
// releases the directory's lock) when the second of them is destroyed, in either order.
//
// Thread-safety: each object as its interface (concurrent readers plus one writer each);
// the log and the consumer store may be written from different threads.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <storage/consumer_store.h>
#include <storage/event_log.h>
#include <storage/rocksdb_event_log.h>

namespace kolabus::storage {

struct BrokerStore {
  std::unique_ptr<EventLog> log;
  std::unique_ptr<ConsumerStore> consumers;
  // After a failed write (a full disk, a failed fsync) RocksDB refuses every write to
  // the database — appends, audit records, consumer state — until this succeeds; reads
  // go on. Each call tries once: it writes the memtables out to new files and starts a
  // new write-ahead log, then accepts writes again. OK at once when nothing failed.
  // The owner calls it with a backoff until it succeeds (RocksDB's own recovery is
  // off). It shares the database with `log` and `consumers`; call it from the thread
  // that writes. Errors: kIoError while the cause lasts (still no space), kBusy.
  // Null for a read-only store.
  std::function<Status()> resume_writes;
};

// Opens (creating if missing) the broker's database in `dir`. `options.sync` applies to
// log appends; consumer writes are never synced (consumer_store.h). A database created
// by an earlier kolabus with the event log only gains the consumer column families.
// Errors: as open_rocksdb_event_log.
// A write that fails leaves the database refusing writes until resume_writes() succeeds.
Result<BrokerStore> open_rocksdb_broker_store(const std::string& dir,
                                              const RocksOptions& options = {});

// Opens an existing broker database read-only (operator tools, tests). Writes to either
// object return kInvalidArgument. A database without the consumer column families yet
// opens with an empty consumer store.
// REQUIRES: no broker has the directory open read-write.
// Errors: as open_rocksdb_event_log_read_only.
Result<BrokerStore> open_rocksdb_broker_store_read_only(const std::string& dir);

}  // namespace kolabus::storage
