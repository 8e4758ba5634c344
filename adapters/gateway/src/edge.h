// gateway::make_edge_server: the gateway's HTTP(S) server, an httplib::Server (or
// httplib::SSLServer) whose connections are served by a loop of our own, because
// httplib 0.11 bounds a request only by the time between two reads and not at all by
// its number of headers: a client sending one header byte per second held one of its
// threads for ever, and eight of them held every thread.
//
// What the edge enforces on every connection, before any handler runs:
//   - the TLS handshake, the request line and the headers arrive within
//     header_timeout (counted from the accept, then from the first byte of each later
//     request): else 408 (or the connection is closed if not even the request line came);
//   - the request line and headers are at most max_header_bytes and max_headers lines:
//     else 431;
//   - the body arrives within body_timeout of the end of the headers: else 408;
//   - a response is written within write_timeout;
//   - connections are served by up to max_connections threads, started as needed. A
//     connection accepted while all are busy waits for one; while any waits, a
//     connection still sending its headers after 1 s is cut (408), so that slow
//     clients cannot keep the others out even when they outnumber the threads.
//
// Handlers learn about the request being served through current_request() (one per
// thread: httplib runs the pre-routing handler, the handler, the error handler and the
// logger on the thread that serves the connection).
//
// Thread-safety: make_edge_server from any thread; the server is used as any httplib
// server (listen on one thread, stop() from another).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include <httplib.h>

#include <common/result.h>

namespace kolabus::adapters::gateway {

struct EdgeLimits {
  std::chrono::milliseconds header_timeout{5000};
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds write_timeout{10000};
  std::chrono::milliseconds keep_alive_timeout{5000};  // idle between two requests
  std::size_t keep_alive_max = 100;                    // requests on one connection
  std::size_t max_header_bytes = 16 * 1024;            // request line + headers
  std::size_t max_headers = 64;
  std::size_t max_connections = 64;  // served at once
  // While a connection waits for a thread, headers taking longer than this are cut.
  std::chrono::milliseconds header_timeout_when_busy{1000};
};

struct TlsFiles {
  std::string cert;  // PEM: the certificate, then any intermediates
  std::string key;   // PEM, unencrypted
};

// Why the edge cut the current request short.
enum class Cut { kNone, kHeaderTimeout, kBodyTimeout, kHeadersTooLarge, kTooManyHeaders };

struct RequestState {
  std::chrono::steady_clock::time_point started{};  // first byte of the request
  Cut cut = Cut::kNone;
  bool close = false;  // close the connection after this response (its body was not read)
  std::string client;  // the authenticated client's name ("" if none), for the log
};

// The request being served on this thread; reset before each request.
RequestState& current_request();

// Tells the edge that the request line and headers are in (the pre-routing handler
// calls it): the body deadline applies from now. A no-op off an edge thread.
void headers_complete();

// Sets the listening socket's backlog (call after bind_to_port): httplib's is 5, so a
// burst of connections (eight slow clients reconnecting together) overflows it and the
// next client's SYN is dropped, costing it a 1 s retransmission. Linux takes a second
// listen() on a listening socket as a new backlog. A no-op for other servers.
void set_listen_backlog(httplib::Server& server, int backlog);

// A server whose connections get the limits above. With `tls`, an httplib::SSLServer
// (TLS 1.2 at least) with that certificate and key; kInvalidArgument if OpenSSL cannot
// load them.
Result<std::unique_ptr<httplib::Server>> make_edge_server(const EdgeLimits& limits,
                                                          const std::optional<TlsFiles>& tls);

}  // namespace kolabus::adapters::gateway
