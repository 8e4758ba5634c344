// broker::Consumers: durable consumers, socket-free (DESIGN.md guarantees 4, 6, 7).
//
// A consumer is (owner agency, name) + a filter (kinds x region prefixes) + a
// position. Clients attach to it with a window (credit); the broker pushes each
// matching event, in sequence order, to one attached client that has room, and
// never has more than `window` unacknowledged deliveries out to a client. An event
// not acknowledged within ack_wait is delivered again (attempt + 1); after
// max_deliver attempts, or on a Reject, it goes to the dead letters and the consumer
// moves on. Several clients attached to one consumer share its work; a client that
// goes silent (no message for client_timeout) is detached and its unacknowledged
// events are handed to the others.
//
// Events reach a consumer from the log: on_appended() marks the consumers a new
// event matches (found through a table of region prefixes, so the cost grows with
// the matches, not with the number of consumers); pump() then reads each marked
// consumer's next events through the region index from its cursor, within its
// clients' credit. A consumer that is behind (offline for a week) catches up the
// same way, reading only its own events.
//
// The position (ack floor + acknowledged sequences above it) and the dead letters
// are written to the ConsumerStore by flush(), once per server loop iteration.
//
// Ownership: borrows the log, the store, the region table and the clock.
// Thread-safety: none; the server loop calls it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include <broker/core.h>
#include <common/clock.h>
#include <common/result.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <storage/consumer_store.h>
#include <storage/event_log.h>

namespace kolabus::broker {

// A client connection as the server knows it: the ROUTER routing id (opaque bytes).
struct ClientId {
  std::string bytes;
  auto operator<=>(const ClientId&) const = default;
};

struct Filter {
  std::vector<std::uint8_t> kinds;   // sorted, unique; empty: every kind
  std::vector<std::string> regions;  // sorted, unique prefixes; empty: every region
  bool operator==(const Filter&) const = default;

  // REQUIRES: regions are 10-digit village codes; routing_kind as LogRecord's.
  bool matches(std::uint8_t routing_kind, const std::vector<std::string>& event_regions) const;
  bool matches_kind(std::uint8_t routing_kind) const;
};

struct ConsumerSpec {
  std::string name;
  Filter filter;
  protocol::StartPolicy start = protocol::StartPolicy::Earliest;
  std::uint64_t start_sequence = 0;
  TimeMs start_time = 0;
  std::uint32_t ack_wait_ms = 30000;
  std::uint32_t max_deliver = 5;
};

// A refused command: the code, field and message of the Nack the client gets.
struct CommandError {
  protocol::ErrorCode code;
  std::string field;
  std::string message;
};

struct ConsumerStatus {
  std::string owner;
  ConsumerSpec spec;
  std::uint64_t ack_floor = 0;
  std::uint64_t next_sequence = 0;
  std::uint64_t pending = 0;
  std::uint64_t lag = 0;
  TimeMs oldest_unacked_age_ms = 0;
  std::uint32_t clients = 0;
  std::uint64_t dead_letters = 0;
  bool created = false;
  std::string paused;                 // why it gets no deliveries now (set_paused); empty: it does
  std::uint32_t stalled_clients = 0;  // attached clients set_can_send holds back now
};

// One event to send to one client.
struct Delivery {
  ClientId client;
  std::string owner;  // the agency receiving it
  std::string consumer;
  Sequence sequence;
  std::uint32_t attempt;
  // The LogRecord bytes, shared with the cache of recent records (each new event goes
  // to a dozen consumers or so). Never null.
  std::shared_ptr<const std::string> record;
  // Deliveries per message the client asked for (Subscribe.batch, capped); 1: one
  // Delivery per message. See delivery_frames.h.
  std::uint32_t batch = 1;
};

struct RangePage {
  std::vector<std::string> records;
  std::uint64_t next = 0;
  bool done = false;
};

struct DeadLetter {
  storage::DeadLetterEntry entry;
  std::string record;
};

struct ConsumersOptions {
  TimeMs client_timeout_ms = 15000;  // silent this long: detached
  std::size_t read_batch = 256;      // events read per consumer per pump turn
  std::uint32_t max_window = 10000;
  // Subscribe.batch above this is taken as this: a message of 1000 small events is
  // ~0.5 MiB, and more per message saves nothing measurable.
  std::uint32_t max_delivery_batch = 1000;
  // Recent records kept in memory for delivery (fan-out reads each new event about a
  // dozen times): at most this many sequences and this many bytes.
  std::size_t record_cache_slots = 16384;
  std::size_t record_cache_bytes = 32 << 20;
};

template <typename T>
using CommandResult = std::variant<T, CommandError>;

class Consumers {
 public:
  Consumers(storage::EventLog& log, storage::ConsumerStore& store,
            const schemas::RegionTable& regions, const Clock& clock, ConsumersOptions options = {});
  ~Consumers();

  // Loads every stored consumer. Call once, before anything else.
  Status load();

  // ---- client commands ----
  // `batch`: deliveries per message the client takes (0 and 1: one each; capped at
  // options.max_delivery_batch). It changes only how deliveries are packed into
  // messages, never what is delivered: the window still counts events.
  CommandResult<ConsumerStatus> subscribe(const ClientId& client, std::string_view owner,
                                          const ConsumerSpec& spec, std::uint32_t window,
                                          std::uint32_t batch = 1);
  std::optional<CommandError> unsubscribe(const ClientId& client, std::string_view owner,
                                          std::string_view name);
  std::optional<CommandError> ack(std::string_view owner, std::string_view name,
                                  std::span<const std::uint64_t> sequences);
  std::optional<CommandError> nak(std::string_view owner, std::string_view name,
                                  std::uint64_t sequence, std::uint32_t delay_ms);
  std::optional<CommandError> reject(std::string_view owner, std::string_view name,
                                     std::uint64_t sequence, std::string reason);
  // The client was heard from (any message).
  void touch(const ClientId& client);
  // The client's connection is gone (a delivery to it found no route): detaches it
  // from every consumer now, so its unacknowledged events go to the consumers' other
  // clients at once instead of after client_timeout_ms. A client that reconnects
  // subscribes again on its new connection (client::Consumer does).
  void client_gone(const ClientId& client);

  TimeMs client_timeout_ms() const;

  // Whether the client is attached to any consumer now.
  bool attached(const ClientId& client) const;
  // How many consumers `owner` has, and the windows of all its attached clients.
  std::size_t owned(std::string_view owner) const;
  std::uint64_t windows(std::string_view owner) const;
  // The window `client` has on `owner`'s consumer `name` now (0: not attached).
  std::uint32_t window_of(const ClientId& client, std::string_view owner,
                          std::string_view name) const;

  // Clients for which `can_send` is false get no deliveries (none counted against their
  // windows either) until it is true again: a client that has not read what it was sent
  // (the server's outgoing bounds). Unset: every client may. Asked on every pump.
  void set_can_send(std::function<bool(const ClientId&)> can_send);

  // ---- operator commands ----
  std::vector<ConsumerStatus> list() const;
  // How many consumers are defined (cheap: list() counts every consumer's lag).
  std::size_t size() const;
  // The consumer's configuration, or nullopt if there is none of that name.
  std::optional<ConsumerSpec> spec(std::string_view owner, std::string_view name) const;
  CommandResult<ConsumerStatus> seek(std::string_view owner, std::string_view name,
                                     protocol::StartPolicy policy, std::uint64_t sequence,
                                     TimeMs time);
  CommandResult<std::uint64_t> remove(std::string_view owner, std::string_view name);
  CommandResult<RangePage> read_range(const Filter& filter, std::uint64_t from_sequence,
                                      TimeMs from_time, std::uint64_t to_sequence,
                                      std::uint32_t max_events) const;
  CommandResult<std::vector<DeadLetter>> dead_letters(std::string_view owner, std::string_view name,
                                                      std::uint64_t from, std::uint32_t max) const;
  CommandResult<std::uint64_t> redrive(std::string_view owner, std::string_view name,
                                       std::span<const std::uint64_t> sequences);
  CommandResult<std::uint64_t> drop_dead_letters(std::string_view owner, std::string_view name,
                                                 std::span<const std::uint64_t> sequences);

  // Checks a filter from the wire: known kinds, prefixes of 2/4/6/10 digits that
  // exist in the region table. Normalises (sorts, dedups).
  CommandResult<Filter> make_filter(std::span<const std::uint8_t> kinds,
                                    const std::vector<std::string>& regions) const;

  // A consumer for which `paused` returns a reason gets no deliveries (its events,
  // and those it had out, wait) until it returns nullopt: its owner's agreement
  // expired or was revoked, or its filter now reaches beyond the owner's grant.
  // Asked for every consumer with work on every pump, and by list().
  using PausedFn = std::function<std::optional<std::string>(
      std::string_view owner, std::string_view name, const Filter& filter)>;
  void set_paused(PausedFn paused);

  // ---- the event flow ----
  // New events were stored and synced (Core::last_appended(), or the server's
  // Core::take_appended() once their sync has returned).
  void on_appended(std::span<const AppendedEvent> events);
  // Expires ack deadlines and silent clients, then reads and returns what is due
  // to be sent, within every client's credit.
  std::vector<Delivery> pump();
  // Writes changed positions and dead letters (one store write). Cheap when nothing
  // changed.
  Status flush();
  // The earliest time something is due (an ack deadline, a delayed retry, a client
  // timeout), or nullopt.
  std::optional<TimeMs> next_deadline() const;

  // The first sequence whose record was received at or after `time`
  // (next_sequence() of the log when none).
  std::uint64_t sequence_at_time(TimeMs time) const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace kolabus::broker
