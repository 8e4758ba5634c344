// Internal to storage: the broker's one database, shared by the RocksDB event log and
// the RocksDB consumer store (rocksdb_broker_store.h). Column families in OpenSpec
// order (see broker_spec() in rocksdb_broker_store.cpp and README.md).
//
// Thread-safety: the factories are pure; the objects they make are as their interfaces.
#pragma once

#include <cstddef>
#include <memory>

#include "rocks_util.h"
#include <storage/consumer_store.h>
#include <storage/event_log.h>

namespace kolabus::storage::detail {

enum BrokerCf : std::size_t {
  kBrokerMeta = 0,
  kLog = 1,
  kIds = 2,
  kRegions = 3,
  kConsumers = 4,    // added after format 1 shipped to developers: Presence::kOptional
  kDeadLetters = 5,  // likewise
  kAudit = 6,        // likewise
};

// The audit chain's head in the meta column family: 8-byte BE index + 32-byte hash.
inline constexpr std::string_view kMetaAuditHeadKey = "audit_head";

// The event log over `db` (recovers the next sequence: one seek).
// Errors: kCorruption when the last log key is not 8 bytes; kIoError.
Result<std::unique_ptr<EventLog>> make_rocks_event_log(std::shared_ptr<RocksDb> db, bool sync,
                                                       OpenMode mode);

// The consumer store over `db`. Its column families may be null (read-only open of a
// database that predates them): it is then empty.
std::unique_ptr<ConsumerStore> make_rocks_consumer_store(std::shared_ptr<RocksDb> db,
                                                         OpenMode mode);

// Aborts unless `write` meets ConsumerStore::apply's REQUIRES. Shared by both stores so
// that they cannot drift apart.
void check_consumer_write(const ConsumerWrite& write);

}  // namespace kolabus::storage::detail
