// client::AdminClient: the operator half of the kolabus client library — list, seek
// and delete durable consumers, read one-off ranges of the log, and inspect, redrive
// or drop dead letters (docs/PROTOCOL.md, operator commands).
//
// Operation: one request at a time over a DEALER socket. Each call sends a Request
// with a fresh `corr` and waits for the Response with that corr, up to the timeout
// given to connect(); any other message (a late answer to an earlier call that timed
// out, an unasked Delivery) is dropped. Nothing is retried: every command here is
// either read-only or safe for an operator to repeat by hand.
//
// Errors: a broker Nack becomes an Error whose message is "CODE: message" (plus the
// field, when the broker named one): Errc::kNotFound for UnknownConsumer,
// kUnavailable for a retryable refusal (StorageUnavailable), kInternal for Internal,
// kInvalidArgument for every other code. No answer in time: kUnavailable, "broker at
// E did not answer within N ms". The broker refused the security handshake (its ZAP
// handler does not know this agency's key, or CURVE is on one side only):
// kUnavailable at once, "not authorised by the broker at E: ..." (client/curve.h);
// the next call tries again on a fresh connection. A reply that does not verify, or of an
// unexpected kind: kInternal.
//
// Everything returned is copied out of the reply: plain values, no borrowed memory.
// Record bytes (RangePageView::records, DeadLetterView::record) are whole
// kolabus.log.LogRecord buffers, which embed the event bytes exactly as published.
//
// Ownership: the AdminClient owns its ZeroMQ context and socket.
// Thread-safety: not thread-safe; use one AdminClient per thread (calls block).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <client/curve.h>
#include <common/clock.h>
#include <common/result.h>

namespace kolabus::client {

// Which events: kinds (kolabus::events::Payload values, 1 Birth, 2 Death, 3 Move;
// empty: every kind) x region prefixes (2, 4, 6 or 10 digits; empty: every region).
struct FilterView {
  std::vector<std::uint8_t> kinds;
  std::vector<std::string> regions;
};

// Mirrors kolabus::protocol::StartPolicy (same values).
enum class SeekPolicy : std::int8_t { kEarliest = 0, kLatest = 1, kAtSequence = 2, kAtTime = 3 };

// A durable consumer as the broker reports it (protocol ConsumerInfo with its
// ConsumerConfig flattened).
struct ConsumerInfoView {
  std::string name;
  std::string owner;  // the owning agency
  FilterView filter;
  SeekPolicy start = SeekPolicy::kEarliest;  // as configured when it was created
  std::uint64_t start_sequence = 0;
  TimeMs start_time = 0;
  std::uint32_t ack_wait_ms = 0;
  std::uint32_t max_deliver = 0;
  std::uint64_t ack_floor = 0;      // every matching event up to here is acknowledged
  std::uint64_t next_sequence = 0;  // the next sequence it will look at
  std::uint64_t pending = 0;        // delivered, not yet acknowledged
  std::uint64_t lag = 0;            // matching events after ack_floor, not acknowledged
  std::int64_t oldest_unacked_age_ms = 0;
  std::uint32_t clients = 0;  // attached now
  std::uint64_t dead_letters = 0;
  bool created = false;
  std::string paused;                 // why nothing is delivered now; empty while it delivers
  std::uint32_t stalled_clients = 0;  // attached clients held back until they read
};

struct RangePageView {
  std::vector<std::string> records;  // LogRecord bytes, in sequence order
  std::uint64_t next = 0;            // from_sequence of the next page
  bool done = false;                 // nothing more matches up to to_sequence
};

struct DeadLetterView {
  std::string consumer;
  std::uint64_t sequence = 0;
  std::uint32_t attempts = 0;
  std::string reason;
  TimeMs dead_at = 0;
  std::string record;     // LogRecord bytes; empty when the reader may not see the content
  std::uint8_t kind = 0;  // routing kind, as LogRecord.routing_kind
  std::vector<std::string> regions;  // the event's village codes
};

// One page of the audit chain as stored (kolabus.audit.Record bytes under their keys),
// and the chain's recorded head.
struct AuditPageView {
  std::vector<std::pair<std::uint64_t, std::string>> records;  // (index, bytes)
  std::uint64_t next_index = 0;
  bool done = false;
  std::uint64_t head_index = 0;
  std::string head_hash;  // 32 bytes
};

// An audit record showing one of a person's events published, delivered or read.
struct PersonHitView {
  std::uint64_t index = 0;
  TimeMs time = 0;
  std::uint8_t action = 0;  // kolabus::audit::Action
  std::string agency;
  std::string consumer;
  std::uint64_t sequence = 0;
  std::string event_id;   // 16 bytes; empty if the event could not be read
  std::uint8_t kind = 0;  // kolabus::events::Payload
};

struct AuditPersonPageView {
  std::vector<PersonHitView> hits;
  std::vector<std::uint64_t> sequences;  // pass to the next page
  std::uint64_t next_index = 0;
  bool done = false;
};

struct BrokerInfo {
  std::string broker_version;
  std::uint64_t next_sequence = 0;  // what the next stored event will get
};

class AdminClient {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{10000};

  // Creates the socket and connects (ZeroMQ connects lazily: an absent broker shows
  // as kUnavailable on the first call, not here). kInvalidArgument for an endpoint
  // ZeroMQ cannot parse, or for CURVE options that check_curve refuses.
  // REQUIRES: timeout > 0.
  static Result<std::unique_ptr<AdminClient>> connect(
      std::string endpoint, std::chrono::milliseconds timeout = kDefaultTimeout,
      CurveOptions curve = {});
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  const std::string& endpoint() const;

  // Ping: the broker's version and next sequence.
  Result<BrokerInfo> ping();

  // Every consumer of the caller's agency, as the broker orders them.
  Result<std::vector<ConsumerInfoView>> list_consumers();

  // Moves a consumer: its next delivery is the first matching event at or after
  // `sequence` (kAtSequence) or received at or after `time` (kAtTime), or the start
  // or end of the log. Unacknowledged deliveries are dropped. Returns the consumer
  // as it is after the move.
  Result<ConsumerInfoView> seek(const std::string& name, SeekPolicy policy, std::uint64_t sequence,
                                TimeMs time);

  Status delete_consumer(const std::string& name);

  // Has the broker load its agency registry again (as SIGHUP does). Returns the
  // number of agencies; kInvalidArgument with the broker's reason when the file has an
  // error (the old registry stays) or the broker runs in development mode.
  Result<std::uint64_t> reload_registry();

  // One page of a one-off range of the log. from_sequence 0: from from_time (or the
  // start when that is 0 too); to_sequence 0: the end of the log now (inclusive).
  // Page on with from_sequence = page.next until page.done.
  Result<RangePageView> read_range(const FilterView& filter, std::uint64_t from_sequence,
                                   TimeMs from_time, std::uint64_t to_sequence,
                                   std::uint32_t max_events);

  // Dead letters of `consumer` (empty: every consumer of the agency) from
  // `from_sequence` on, at most `max`. `owner`: the consumer's agency (empty: the
  // caller's own; another agency's needs the operate permission, and shows event
  // content only within the caller's own receive grant, agreement and field profile).
  Result<std::vector<DeadLetterView>> dlq_list(const std::string& consumer,
                                               std::uint64_t from_sequence, std::uint32_t max,
                                               const std::string& owner = {});
  // Put dead letters back into delivery (empty `sequences`: all of the consumer's).
  // Returns how many the broker touched.
  Result<std::uint64_t> dlq_redrive(const std::string& consumer,
                                    std::span<const std::uint64_t> sequences);
  // Delete dead letters for good (empty `sequences`: all). Returns how many.
  Result<std::uint64_t> dlq_drop(const std::string& consumer,
                                 std::span<const std::uint64_t> sequences);

  // One page of the audit chain: from `from_index`, or (from_index 0) from the first
  // record at or after `since` (0: the start). Page on with from_index = next_index
  // until done.
  Result<AuditPageView> audit_read(std::uint64_t from_index, TimeMs since, std::uint32_t max);

  // One page of a person's records: `max` audit records scanned from `from_index`
  // (0 or 1: the start), with the `sequences` the previous page returned.
  Result<AuditPersonPageView> audit_person(const std::string& nik, std::uint64_t from_index,
                                           std::uint32_t max,
                                           std::span<const std::uint64_t> sequences);

 private:
  struct Impl;
  explicit AdminClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kolabus::client
