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
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <broker/audit.h>
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
  // Development mode: no CURVE, every connection is `dev_agency` and may do
  // everything. Only for loopback endpoints (main refuses others).
  bool dev = false;
  std::string dev_agency = "dev";
  // The broker's CURVE secret key (Z85), REQUIRED unless dev.
  std::string curve_secret_key;
  // How often counters are logged when they changed.
  int stats_interval_ms = 10000;
  // Where the log lives, and how much of its file system is kept free: while less
  // than disk_reserve_bytes is free, publishes are answered StorageUnavailable
  // (retryable) before anything is written, so that what must still be written — the
  // consumers' positions, the audit records of deliveries and reads — finds room, and
  // consumers go on reading. (A write that fails for want of space makes RocksDB
  // refuse every write until it is resumed.) 0 or an empty data_dir: no check.
  std::string data_dir;
  std::uint64_t disk_reserve_bytes = 64 << 20;
  // Deliveries sent to clients that they have not yet shown they read (acknowledged,
  // NAKed or rejected a later one), all clients together: past this no client gets
  // more until some confirm. Per agency and per connection: Limits (agencies.h).
  std::uint64_t max_outgoing_bytes = 256ULL << 20;
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

  // The audit chain (for the server and the core): every access to events and every
  // act of authority is recorded before its reply or delivery is sent. Null: none.
  // Borrowed; must outlive the server. REQUIRES: called before set_agencies and run.
  void set_audit(Audit* audit);

  // The agency registry: the ZAP handler admits its keys; commands are checked
  // against its grants. REQUIRES (unless dev): set before bind(). May be called
  // again later (a reload): new connections and commands see the new registry.
  void set_agencies(std::shared_ptr<const Agencies> agencies);

  // How the loop makes the store accept writes again after a failed write (a full
  // disk): storage::BrokerStore::resume_writes. Once any write has failed (a publish
  // answered StorageUnavailable, an audit record or consumer positions not written),
  // the loop calls it with a backoff (0.1 s doubling to 5 s), logging each attempt and
  // the recovery; meanwhile publishes are answered StorageUnavailable and no deliveries
  // are sent (they need their audit record). Unset: the loop never resumes (a store
  // that recovers by itself, such as the memory log). REQUIRES: called before run().
  void set_storage_recovery(std::function<Status()> resume);

  // Serves until request_stop(). REQUIRES: bind() succeeded.
  void run();
  void request_stop() { stop_.store(true); }
  // Asks the loop to call the reload handler (from a SIGHUP handler: it only sets
  // an atomic flag). An operator's ReloadRegistry command calls it too. The handler
  // returns the new registry, or an error (then the old one stays).
  using ReloadHandler = std::function<Result<std::shared_ptr<const Agencies>>()>;
  void request_reload() { reload_.store(true); }
  void set_reload_handler(ReloadHandler handler);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_{false};
};

}  // namespace kolabus::broker
