// client::Publisher: the publishing half of the kolabus client library, with a
// durable outbox (DESIGN.md guarantee 3).
//
// publish() writes the event into the adapter's own RocksDB outbox (synced) and
// returns; from then on the event survives a crash of the adapter, the broker or
// the network. A sender thread keeps up to `window` events in flight to the broker,
// deletes each on its ACK, moves each refused one (NACK) to the outbox's refused
// store with the broker's reason, and resends what was not answered — after a
// backoff while the broker is away, and after the adapter's own restart. The
// broker's idempotency (event ids) makes every resend harmless.
//
// Order: events are sent in outbox order on one connection, so the broker logs
// them in that order. After a retryable failure everything unanswered is resent
// in order; with window > 1 an event sent after a failed one may already have been
// stored, so strict order across such a failure needs window = 1.
//
// Security: with options.curve set, the connection uses CURVE (client/curve.h). A
// refused handshake shows in stats().unauthorised, not as an error of publish():
// the events wait in the outbox.
//
// Ownership: the Publisher owns its outbox and sender thread; the destructor stops
// the thread (unsent events stay in the outbox for the next open).
// Thread-safety: every public method may be called from any thread. The outcome
// callback runs on the sender thread and must not call back into the Publisher's
// blocking methods (wait_drained).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <client/curve.h>
#include <common/ids.h>
#include <common/result.h>
#include <storage/outbox.h>

namespace kolabus::client {

struct PublisherOptions {
  std::string endpoint = "tcp://127.0.0.1:7400";   // the broker
  std::string outbox_dir;                          // REQUIRED: the outbox's RocksDB directory
  std::size_t window = 1000;                       // events in flight, at most
  std::chrono::milliseconds ack_timeout{5000};     // unanswered this long: resend
  std::chrono::milliseconds backoff_initial{100};  // first wait after a failure
  std::chrono::milliseconds backoff_max{5000};     // doubling stops here (plus jitter)
  std::size_t max_message_bytes = 1 << 20;         // the broker's frame limit
  CurveOptions curve{};                            // empty: no CURVE (--dev brokers)
};

enum class OutcomeKind { kAcked, kDuplicate, kRefused };

struct Outcome {
  std::uint64_t local_seq = 0;  // the outbox position publish() returned
  EventId id;
  OutcomeKind kind = OutcomeKind::kAcked;
  Sequence sequence;         // kAcked, kDuplicate: the event's sequence in the log
  storage::Refusal refusal;  // kRefused: the broker's code, field and message
};

struct PublisherStats {
  std::uint64_t sent = 0;  // frames sent, resends included
  std::uint64_t acked = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t refused = 0;
  std::uint64_t retries = 0;  // retryable NACKs and timeouts
  std::uint64_t in_flight = 0;
  std::uint64_t pending = 0;  // in the outbox, sent or not
  std::string last_error;     // the last retryable problem, for operators
  // The broker refused the security handshake (its ZAP handler refused this agency's
  // key, or the CURVE settings do not match); last_error says which. Nothing is sent
  // meanwhile; the publisher tries again on a fresh connection after a backoff (an
  // operator may fix the registry) and clears this once a handshake succeeds.
  bool unauthorised = false;
};

class Publisher {
 public:
  using OutcomeFn = std::function<void(const Outcome&)>;

  // Opens (or creates) the outbox and starts the sender, which at once resumes
  // sending whatever an earlier run left pending.
  static Result<std::unique_ptr<Publisher>> open(PublisherOptions options,
                                                 OutcomeFn on_outcome = {});
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Durably enqueues one event (the bytes of a kolabus.events.Event) and returns
  // its outbox position. Refused at once, and not enqueued: bytes that are not a
  // verifiable Event, or too large for the broker.
  Result<std::uint64_t> publish(std::span<const std::uint8_t> event);
  // The same for many events with one synced write; all or nothing.
  Result<std::vector<std::uint64_t>> publish_batch(
      std::span<const std::span<const std::uint8_t>> events);

  // Blocks until no event is pending (each was ACKed or refused) or the timeout
  // passes. Returns true when drained.
  bool wait_drained(std::chrono::milliseconds timeout);

  // Refused events with the broker's reasons, oldest first; they stay until cleared.
  Result<std::vector<storage::RefusedEntry>> refused(std::size_t max) const;
  Status clear_refused();

  PublisherStats stats() const;

 private:
  struct Impl;
  explicit Publisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kolabus::client
