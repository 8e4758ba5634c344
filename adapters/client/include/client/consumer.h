// client::Consumer: the consuming half of the kolabus client library — a durable
// consumer's client with an acknowledging handler and a dedup inbox (DESIGN.md
// guarantees 4 and 5).
//
// Operation: poll() runs on the calling thread. It connects and subscribes when
// needed (Subscribe with the configured name, filter, start, window and batch), then
// hands each delivery (a Delivery, or each of a DeliveryBatch's in order) to the
// handler, one at a time, in the order the broker sent them:
//   - the record is verified (the LogRecord, then its Event with
//     schemas::check_structure: the FlatBuffers verifier, union type and value
//     consistent, every kind known to this client's schema, an id present); one
//     that does not verify is Rejected with the reason (so it goes to the dead
//     letters, where an upgraded client can redrive it) and never reaches the
//     handler;
//   - an event id the inbox already holds is a duplicate: it is Acked and skipped;
//   - otherwise the handler runs with a fresh inbox transaction. kAck: the handler's
//     writes and the processed mark are committed in one synced write, and only
//     then is the event Acked (Acks are batched per turn of the poll loop). kNak:
//     nothing is committed, Nak{delay_ms} is sent. kReject: nothing is committed,
//     Reject{reason} is sent (the broker moves the event to its dead letters). A
//     handler that throws counts as kNak; the message goes to stats().last_error.
// So the handler's side effects through the Txn happen once in effect, whatever the
// broker redelivers. Side effects outside the Txn (an HTTP call, say) happen at
// least once: the handler must make them idempotent itself.
//
// Liveness: while poll() runs, the consumer sends Ping every `heartbeat`. When it
// hears nothing (no Pong, no Delivery, no reply) for 3 heartbeats after a Ping, when
// the TCP connection drops (seen by a socket monitor: ZeroMQ would reconnect on its
// own, but the broker would see a new peer that is not subscribed), when its Subscribe
// has no answer 3 heartbeats after it was sent (even if Pongs come), or when the
// broker answers NotSubscribed, it opens a fresh DEALER socket after a jittered,
// doubling backoff and subscribes again with the same configuration. Deliveries not
// yet acknowledged may come again then (attempt > 1); the inbox makes that harmless.
// Limitation: between poll() calls, and while a handler runs, nothing is sent. A
// client silent for 3 of the broker's heartbeats is dropped by the broker (its
// events go to the consumer's other clients); poll() notices when it resumes after
// more than 3 heartbeats without sending and subscribes again on a fresh socket. So
// call poll() in a loop, and keep handlers shorter than ~3 heartbeats.
//
// Ownership: the Consumer owns its inbox (RocksDB) and socket; the destructor
// closes (Unsubscribe, best effort). Received's views borrow the message being
// handled and are valid during the handler call only.
// Thread-safety: poll(), close() and inbox() are meant for one thread (the
// consumer's); close() from another thread is safe (it interrupts a running poll
// and waits for it). interrupt() and stats() may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <client/curve.h>
#include <common/clock.h>
#include <common/ids.h>
#include <common/result.h>
#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>
#include <storage/inbox.h>

namespace kolabus::client {

struct ConsumerOptions {
  std::string endpoint = "tcp://127.0.0.1:7400";  // the broker
  std::string inbox_dir;                          // REQUIRED: the inbox's RocksDB directory
  std::string name;                               // REQUIRED: the durable consumer's name
  std::vector<events::Payload> kinds;             // empty: every kind
  std::vector<std::string> regions;               // region prefixes; empty: every region
  // Where a consumer created by this Subscribe starts (ignored when it exists).
  protocol::StartPolicy start = protocol::StartPolicy::Earliest;
  std::uint64_t start_sequence = 0;  // AtSequence
  TimeMs start_time = 0;             // AtTime, UTC ms
  std::uint32_t ack_wait_ms = 30000;
  std::uint32_t max_deliver = 5;
  std::uint32_t window = 100;  // unacknowledged deliveries, at most
  // Deliveries per message asked of the broker (Subscribe.batch = min(batch, window)):
  // it packs up to this many in one DeliveryBatch, which costs it and this client far
  // less per event. The handler still sees one event at a time. 0 or 1: one Delivery
  // per message, as before batching.
  std::uint32_t batch = 128;
  std::chrono::milliseconds heartbeat{2000};       // Ping period; 3 silent: reconnect
  std::chrono::milliseconds backoff_initial{100};  // first wait before a reconnect
  std::chrono::milliseconds backoff_max{5000};     // doubling stops here (plus jitter)
  CurveOptions curve{};                            // empty: no CURVE (--dev brokers)
};

// One delivery as the handler sees it. Borrowed views, valid during the handler call.
struct Received {
  Sequence sequence;                          // the event's global position in the log
  std::uint32_t attempt = 1;                  // 1 on the first delivery
  EventId id;                                 // the event's id (the inbox key)
  std::string_view source;                    // the publishing agency, as the broker knows it
  TimeMs received_at = 0;                     // when the broker accepted the event
  std::span<const std::uint8_t> event;        // the Event bytes exactly as published
  const events::Event* event_root = nullptr;  // verified; never null
};

enum class Verdict { kAck, kNak, kReject };

struct HandlerResult {
  Verdict verdict = Verdict::kAck;
  std::string reason;          // kReject: why (stored with the dead letter)
  std::uint32_t delay_ms = 0;  // kNak: redeliver after this long; 0: the consumer's ack_wait
};

// Writes made through the Txn are committed with the processed mark on kAck only.
using Handler = std::function<HandlerResult(const Received&, storage::Inbox::Txn&)>;

struct ConsumerStats {
  std::uint64_t delivered = 0;           // deliveries received, duplicates included
  std::uint64_t batches = 0;             // DeliveryBatch messages among them
  std::uint64_t handled = 0;             // handler calls
  std::uint64_t duplicates_skipped = 0;  // already in the inbox: acked, not handled
  std::uint64_t acked = 0;               // sequences sent in Acks
  std::uint64_t naked = 0;
  std::uint64_t rejected = 0;    // by the handler or because the record was bad
  std::uint64_t reconnects = 0;  // sessions lost and started again
  bool subscribed = false;       // the broker answered Subscribed on this session
  std::string last_error;        // the last problem, for operators
};

class Consumer {
 public:
  // Opens (or creates) the inbox. Does not connect: the first poll() does.
  // REQUIRES: options.inbox_dir and options.name non-empty, window >= 1, heartbeat > 0.
  static Result<std::unique_ptr<Consumer>> open(ConsumerOptions options);
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Connects and subscribes if needed, then handles deliveries until `timeout`
  // passes, `max_events` deliveries were handled, or interrupt() is called. A
  // DeliveryBatch cut short by max_events is kept: the next poll() goes on with it.
  // Returns how many deliveries it handled: handler calls, inbox-skipped duplicates
  // and records rejected for failing verification. Errors: the broker refused the
  // Subscribe (kInvalidArgument with its code and message; the next poll() tries
  // again), the broker refused the security handshake (kUnavailable, "not authorised
  // by the broker at E: ..." or "security handshake ... failed: ..."; the next poll()
  // tries again on a fresh socket after a backoff), the inbox could not be read or written (its
  // error; the delivery is left unacknowledged, so it comes again), poll() after close()
  // (kUnavailable). A broker that is away is not an error: poll() keeps reconnecting and returns 0.
  Result<std::size_t> poll(const Handler& handler, std::chrono::milliseconds timeout,
                           std::size_t max_events = SIZE_MAX);

  // Makes a running poll() — or the next one, if none runs — return early.
  void interrupt();

  // Sends the pending Acks and an Unsubscribe (waiting up to one heartbeat for its
  // answer), closes the socket. Idempotent. Unacknowledged deliveries go back to
  // the broker's other clients of this consumer.
  void close();

  ConsumerStats stats() const;

  // The inbox, e.g. to read what handlers stored. Valid as long as the Consumer.
  storage::Inbox& inbox();

 private:
  struct Impl;
  explicit Consumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kolabus::client
