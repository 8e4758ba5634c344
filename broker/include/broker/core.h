// broker::Core: the socket-free heart of the broker's publish path.
//
// The server hands the core one drained batch of publish requests at a time; the
// core validates each event, resolves duplicates (against the log and within the
// batch), assigns global sequence numbers, writes every accepted event with ONE
// durable append (group commit) and returns one outcome per request, in order.
// Nothing here touches ZeroMQ, so unit tests drive it directly with a memory log
// and a manual clock.
//
// Ownership: the core borrows the log, the region table and the clock; they must
// outlive it. Request bytes are borrowed for the duration of publish_batch only.
// Thread-safety: none; one thread (the server loop) calls it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <broker/agencies.h>
#include <broker/audit.h>
#include <broker/policy.h>
#include <common/clock.h>
#include <common/ids.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <storage/event_log.h>

namespace kolabus::broker {

struct CoreOptions {
  // How far in the future an event's timestamps may lie (clock skew between the
  // publisher and the broker) before they are refused.
  TimeMs max_clock_skew_ms = 5 * 60 * 1000;
};

struct PublishRequest {
  std::span<const std::uint8_t> event;  // the Event bytes, as received
  std::string_view source;              // the agency the connection authenticated as
};

struct Ack {
  Sequence sequence;
  bool duplicate = false;
};

struct Nack {
  protocol::ErrorCode code = protocol::ErrorCode::Internal;
  std::string field;
  std::string message;
  bool retryable = false;
};

struct PublishOutcome {
  std::optional<EventId> id;  // absent only when the event id could not be read
  using Result = std::variant<Ack, Nack>;
  Result result;

  bool acked() const { return std::holds_alternative<Ack>(result); }
};

// An event the last publish_batch appended, for routing to consumers.
struct AppendedEvent {
  Sequence sequence;
  std::uint8_t routing_kind;         // as LogRecord.routing_kind
  std::vector<std::string> regions;  // the event's village codes
  std::string_view record;           // the stored LogRecord bytes (owned by the Core)
};

struct CoreStats {
  std::uint64_t accepted = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t refused = 0;
  std::uint64_t storage_failures = 0;  // requests answered StorageUnavailable
  std::uint64_t batches = 0;           // durable appends
  std::uint64_t audit_failures = 0;    // refusal records that could not be written
};

class Core {
 public:
  Core(storage::EventLog& log, const schemas::RegionTable& regions, const Clock& clock,
       CoreOptions options = {});

  // How publish_batch stores its events.
  enum class Commit {
    kSynced,    // EventLog::append: durable when publish_batch returns
    kDeferred,  // EventLog::append_unsynced: durable after the next sync()
  };

  // Handles one batch. Returns exactly one outcome per request, in request order.
  // With Commit::kSynced an ACK is returned only for events that are in the log and
  // synced: either appended by this call or found there already (duplicate). With
  // Commit::kDeferred an ACK's sequence may be at or above next_sequence() (appended
  // by this call or by an earlier deferred one, not yet synced): the caller must hold
  // such an ACK until sync() has returned a next_sequence() above it. When the append
  // fails, every event of the batch that would have been stored is NACKed
  // StorageUnavailable (retryable) and nothing of the batch is stored.
  std::vector<PublishOutcome> publish_batch(std::span<const PublishRequest> requests,
                                            Commit commit = Commit::kSynced);

  // EventLog::sync(): makes every deferred commit durable; returns the new
  // next_sequence(). The one member that may be called from another thread than the
  // rest (not concurrently with itself).
  Result<Sequence> sync() { return log_.sync(); }

  // The registry that decides (through broker::Policy) what each agency may publish
  // and correct; null (development mode) lets every connection publish everything.
  // Takes effect from the next batch.
  void set_agencies(std::shared_ptr<const Agencies> agencies) { agencies_ = std::move(agencies); }

  // The audit chain: each batch that stores events stores, in the same write, one
  // Publish record per publishing agency (its sequences and the keyed hashes of each
  // event's NIKs) and one Refused record per agency refused for lack of authority.
  // Null (the default): no audit. Borrowed; must outlive the core.
  void set_audit(Audit* audit) { audit_ = audit; }

  // The events the last publish_batch stored, in sequence order (empty when it
  // stored none). Valid until the next publish_batch.
  const std::vector<AppendedEvent>& last_appended() const { return appended_; }

  // The same events, taken: their records stay valid as long as the batch lives.
  struct AppendedBatch {
    std::vector<AppendedEvent> events;
    std::vector<flatbuffers::DetachedBuffer> records;  // events[i].record
  };
  AppendedBatch take_appended();

  // One past the last durable event: what readers and consumers see.
  Sequence next_sequence() const { return log_.next_sequence(); }
  const storage::EventLog& log() const { return log_; }
  const CoreStats& stats() const { return stats_; }

 private:
  storage::EventLog& log_;
  const schemas::RegionTable& regions_;
  const Clock& clock_;
  CoreOptions options_;
  CoreStats stats_;
  std::vector<AppendedEvent> appended_;
  std::vector<flatbuffers::DetachedBuffer> appended_records_;  // appended_[i].record
  std::shared_ptr<const Agencies> agencies_;
  Audit* audit_ = nullptr;
  // Receive times never go backwards in log order, even if the wall clock does, so
  // that a consumer can be positioned by time with a binary search.
  TimeMs last_received_at_ = 0;
};

// Reads a log record's event: kind and regions. nullopt if the record does not
// decode (corruption).
struct StoredEventInfo {
  events::Payload kind;
  std::vector<std::string> regions;
  std::string source;  // the agency that published it: its owner
};
std::optional<StoredEventInfo> decode_stored_event(std::string_view record);

}  // namespace kolabus::broker
