// The systems a run measures, behind one small interface, so that every scenario
// is written once and drives kolabus and each reference with the same loop:
//
//   kolabus    kolabus-broker --dev, a real process (sync on: the default)
//   naive      `kolabus-bench serve-naive`: ZeroMQ ROUTER + RocksDB group commit
//   jetstream  Debian's nats-server -js, file store
//   redis      Debian's redis-server, appendonly + appendfsync always
//
// A System starts its server as a child process on a port chosen at run time and
// stops it. Its clients are thin and speak the wire protocol directly: a DEALER
// socket with kolabus frames for kolabus and the naive loop, the NATS text protocol,
// RESP. A PublishClient keeps whatever the caller sends in flight and reports the
// acknowledgements; a SubscribeClient hands each delivered event's index (see
// EventPool) to a handler and acknowledges it the way its system expects.
//
// Ownership: a System owns its process; clients borrow nothing from it except the
// endpoint (they may outlive a stop(), then their calls fail).
// Thread-safety: a System is driven by the main thread; each client by one thread
// at a time (create it on the main thread, then hand it to a worker).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "events.h"
#include <common/result.h>

namespace zmq {
class context_t;
}

namespace kolabus::bench {

struct Acks {
  std::uint64_t acked = 0;
  std::uint64_t refused = 0;
  std::string first_refusal;  // the reason of the first refusal, for the report
  std::uint64_t stalls = 0;   // answers the client had to coax out of the server

  Acks& operator+=(const Acks& o) {
    acked += o.acked;
    refused += o.refused;
    stalls += o.stalls;
    if (first_refusal.empty()) first_refusal = o.first_refusal;
    return *this;
  }
};

class PublishClient {
 public:
  virtual ~PublishClient() = default;
  // Sends event i of the pool (a TCP client may buffer it until flush()).
  virtual void send(std::uint64_t i) = 0;
  virtual Status flush() { return {}; }
  // Waits up to `timeout` (0: not at all) for acknowledgements and returns those
  // that arrived. An error means the connection is unusable.
  virtual Result<Acks> receive(std::chrono::milliseconds timeout) = 0;
};

// Called with the pool index of each delivered event.
using EventHandler = std::function<void(std::uint64_t index)>;

struct SubscribeOptions {
  std::string name = "bench";
  std::vector<std::string> regions;   // region prefixes (kolabus only); empty: everything
  std::uint32_t window = 1000;        // unacknowledged deliveries in flight
  std::uint32_t batch = 1;            // kolabus: deliveries per message (Subscribe.batch)
  bool from_start = true;             // every stored event, not only new ones
  std::uint32_t ack_wait_ms = 30000;  // kolabus: redelivered after this long unacknowledged
};

class SubscribeClient {
 public:
  virtual ~SubscribeClient() = default;
  // Waits up to `timeout` (0: not at all) for deliveries, calls `on_event` for each
  // of the pool's events and acknowledges what it received. Returns how many
  // arrived. An error means the connection is unusable.
  virtual Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                      const EventHandler& on_event) = 0;
  // The socket's file descriptor or zmq socket handle for polling many clients at
  // once (see fan-out); nullptr when the client cannot be polled that way.
  virtual void* zmq_handle() { return nullptr; }
};

struct Paths {
  std::string broker;                // kolabus-broker
  std::string self;                  // kolabus-bench (for serve-naive)
  std::optional<std::string> nats;   // nats-server, if installed
  std::optional<std::string> redis;  // redis-server, if installed
};

class System {
 public:
  virtual ~System() = default;
  virtual const char* name() const = 0;
  // What an acknowledgement guarantees, for the report.
  virtual std::string durability() const = 0;

  // Starts the server with its data in `dir` (an existing store there is reused)
  // and waits until it answers. REQUIRES: not running.
  virtual Status start(const std::string& dir) = 0;
  // From process start to the first answer of the last start().
  virtual std::chrono::nanoseconds startup_time() const = 0;
  virtual void stop() = 0;
  virtual pid_t pid() const = 0;

  virtual Result<std::unique_ptr<PublishClient>> publisher() = 0;
  // Unsupported options (a region filter, for the references) are an error.
  virtual Result<std::unique_ptr<SubscribeClient>> subscriber(const SubscribeOptions& options) = 0;
  // Defines `count` durable consumers numbered from `first` (named bench-<n>) that
  // stay after their clients leave, all at the end of the log (caught up): those
  // that exist already are moved there.
  virtual Status define_consumers(std::size_t first, std::size_t count) = 0;
  // How many events the server holds now.
  virtual Result<std::uint64_t> stored_events() = 0;
  // The sum of every consumer's lag as the server reports it (kolabus only).
  virtual Result<std::uint64_t> consumer_lag() {
    return unexpected(Errc::kInvalidArgument, "not reported");
  }
};

// nullptr when the system's program is not installed; `why` then says so.
std::unique_ptr<System> make_system(const std::string& name, const Paths& paths,
                                    const EventPool& pool, zmq::context_t& zmq, std::string* why);

// Implementations (one file per system).
std::unique_ptr<System> make_kolabus(const Paths& paths, const EventPool& pool,
                                     zmq::context_t& zmq);
std::unique_ptr<System> make_naive(const Paths& paths, const EventPool& pool, zmq::context_t& zmq);
std::unique_ptr<System> make_jetstream(const std::string& program, const EventPool& pool);
std::unique_ptr<System> make_redis(const std::string& program, const EventPool& pool);

}  // namespace kolabus::bench
