// broker::Server: the ZeroMQ shell around broker::Core. The only broker code that
// touches sockets.
//
// One ROUTER socket. Each loop iteration waits for input (or the next consumer
// deadline), drains what is readable (bounded by max_batch_messages and
// max_batch_bytes), answers frame-level errors, pings and consumer and operator
// commands at once, hands all publishes of the drain to Core::publish_batch (one
// durable write, one WAL sync: group commit) and sends each client its replies;
// then it routes the new events to the consumers, sends what Consumers::pump()
// says is due, and persists consumer positions (Consumers::flush()).
//
// Ownership: borrows the core and the consumers, which must outlive the server.
// Thread-safety: run() on one thread; request_stop() from any thread or a signal
// handler (it only sets an atomic flag).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include <broker/consumers.h>
#include <broker/core.h>
#include <common/result.h>

namespace kolabus::broker {

struct ServerOptions {
  // ZeroMQ endpoint to bind, e.g. "tcp://127.0.0.1:7400"; a port of "*" binds a
  // free port (see Server::endpoint()).
  std::string endpoint = "tcp://127.0.0.1:7400";
  // Frames larger than this are refused with FrameTooLarge.
  std::size_t max_message_bytes = 1 << 20;
  // Bounds on one drain (and so on one group commit).
  std::size_t max_batch_messages = 1024;
  std::size_t max_batch_bytes = 16 << 20;
  // The agency recorded as the source of events on connections that carry no
  // authenticated identity (development mode: no CURVE yet).
  std::string dev_agency = "dev";
  // How often counters are logged when they changed.
  int stats_interval_ms = 10000;
};

class Server {
 public:
  Server(Core& core, Consumers& consumers, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the ROUTER socket. Returns the endpoint actually bound (with the port
  // chosen when the configured port was "*").
  Result<std::string> bind();

  // Serves until request_stop(). REQUIRES: bind() succeeded.
  void run();
  void request_stop() { stop_.store(true); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace kolabus::broker
