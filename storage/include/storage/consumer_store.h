// ConsumerStore: the broker's durable consumer state and dead letters (DESIGN.md
// guarantees 4 and 6). The RocksDB implementation lives in the same database as the
// event log (rocksdb_broker_store.h), so one directory (and one lock) holds everything a
// broker knows; MemoryConsumerStore (memory_consumer_store.h) is for broker-core tests.
// One contract test suite runs on both.
//
// A consumer is keyed by (owner agency, name). Its state is its configuration (opaque
// bytes here: the broker's encoded ConsumerConfig) and its position: the ack floor
// (every matching event up to it is acknowledged or dead-lettered) plus the sequences
// above the floor that are acknowledged already. A dead letter is an event a consumer
// gave up on, with the reason and the number of attempts.
//
// Writes go through apply(), one atomic write for everything one broker loop iteration
// changed. They are not synced: after a power cut a consumer may resume from a slightly
// older position and see some events again, which the consumer inbox absorbs; a synced
// write per acknowledgement would cost more than it saves. (A later synced append to
// the event log in the same database syncs them too: they share one write-ahead log.)
//
// Ownership: the caller owns a ConsumerStore through std::unique_ptr; results are
// values (nothing borrows from the store).
// Thread-safety: implementations are safe for concurrent readers plus one writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <common/clock.h>
#include <common/ids.h>
#include <common/result.h>

namespace kolabus::storage {

// Owner and name are arbitrary bytes except 0x00 (the key separator on disk).
struct ConsumerKey {
  std::string owner;
  std::string name;
  auto operator<=>(const ConsumerKey&) const = default;
};

struct ConsumerState {
  ConsumerKey key;
  std::string config;  // opaque: the broker's encoded config
  std::uint64_t ack_floor = 0;
  std::vector<std::uint64_t> acked_above;  // strictly increasing, all > ack_floor
};

struct DeadLetterEntry {
  ConsumerKey key;
  std::uint64_t sequence = 0;
  std::uint32_t attempts = 0;
  std::string reason;
  TimeMs dead_at = 0;
};

// Everything one broker loop iteration changed, written atomically. It describes the
// end state of the iteration and is applied in this order: `erase` (each consumer with
// all its dead letters), `put`, `dead_letters`, `dead_letters_removed`. So a consumer
// deleted and re-created within one iteration is in both `erase` and `put` and starts
// with no dead letters; a consumer deleted at the end of an iteration must not also have
// `put` or `dead_letters` entries (they would outlive the erase).
struct ConsumerWrite {
  std::vector<ConsumerState> put;             // create or replace
  std::vector<ConsumerKey> erase;             // also erases their dead letters
  std::vector<DeadLetterEntry> dead_letters;  // add (or replace) these
  std::vector<std::pair<ConsumerKey, std::uint64_t>> dead_letters_removed;  // absent: no-op
  bool empty() const {
    return put.empty() && erase.empty() && dead_letters.empty() && dead_letters_removed.empty();
  }
};

class ConsumerStore {
 public:
  virtual ~ConsumerStore() = default;

  // Applies `write` atomically (all of it or, on error, none of it). An empty write
  // writes nothing.
  // REQUIRES (checked, aborts): no owner or name contains 0x00; each put's acked_above
  // is strictly increasing and above its ack_floor.
  // Errors: kIoError; kInvalidArgument on a store opened read-only.
  virtual Status apply(const ConsumerWrite& write) = 0;

  // Every stored consumer, in key order (the broker loads them at start).
  // Errors: kCorruption when a stored state does not decode.
  virtual Result<std::vector<ConsumerState>> load_all() const = 0;

  // Dead letters of one consumer with sequence >= from, in sequence order, at most max.
  // Errors: kCorruption when a stored entry does not decode.
  virtual Result<std::vector<DeadLetterEntry>> dead_letters(const ConsumerKey& key,
                                                            std::uint64_t from,
                                                            std::size_t max) const = 0;

  // How many dead letters `key` has (0 for an unknown consumer). Reads them all: for
  // operators and start-up, not for every loop iteration.
  virtual Result<std::uint64_t> count_dead_letters(const ConsumerKey& key) const = 0;
};

}  // namespace kolabus::storage
