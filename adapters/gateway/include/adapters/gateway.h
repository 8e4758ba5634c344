// adapters::GatewayAdapter: the HTTP gateway, a source adapter for agency web systems.
//
// Endpoints (docs/openapi.yaml is the full contract):
//   POST /v1/events      one event or an array of them in kolabus's JSON form
//                        (docs/PROTOCOL.md section 10). All are converted and checked
//                        with the broker's own rules first; then either all are queued in
//                        the agency's outbox with one synced write (202, their ids) or
//                        none is (400 malformed body, 422 rule violations per index,
//                        503 storage failure with Retry-After).
//   GET  /v1/events/{id} what became of an accepted event: queued, acknowledged (with
//                        its log sequence and whether it was a duplicate) or refused
//                        (with the broker's code, field and message); 404 if this
//                        gateway never accepted the id.
//   GET  /v1/health      liveness: {"status":"ok","pending":<events in the outbox>}
//   GET  /v1/ready       readiness: 200 while the broker answers a ping (checked at most
//                        once a second, 500 ms timeout), else 503
//
// Statuses live in a SQLite file, data_dir/gateway-status.sqlite, fed by the
// Publisher's outcomes (through the AgencyContext's OutcomeHub); they survive
// restarts and are pruned after status_retention_days. Gateways of one agency share
// the file, so any of them can answer for an id another one accepted.
//
// The edge (docs/ADAPTERS.md, "HTTP gateway"): with `tokens`, the /v1/events endpoints
// need `Authorization: Bearer <token>` (else 401); with tls_cert and tls_key it speaks
// only HTTPS; it listens on loopback unless told otherwise, and refuses any other address
// unless both TLS and tokens are configured. Every request has deadlines and header
// limits (src/edge.h).
//
// Configuration ([[gateway]] table of agency.toml):
//   listen = "127.0.0.1:8080"     the default; "host:port", "[v6]:port"; port 0 = any free
//   tls_cert = "gw.crt"           PEM certificate chain; with tls_key, or neither
//   tls_key = "gw.key"            PEM key, readable by its owner only (mode 0600)
//   tokens = [{ name = "simrs", sha256 = "<64 hex digits>" }]   clients (see above)
//   max_batch = 1000              events in one request, at most
//   max_body_bytes = 8388608      request body size, at most
//   status_retention_days = 30    statuses older than this are forgotten
//   header_timeout_seconds = 5    TLS handshake + request line + headers
//   body_timeout_seconds = 30     the body, after the headers
//   max_header_bytes = 16384      request line + headers
//   max_headers = 64
//   max_connections = 64          served at once
//
// Ownership: the adapter borrows the AgencyContext's publisher and hub (the runner
// keeps them alive longer than the adapter) and owns its HTTP server and status store.
// Thread-safety: start(), stop() and port() from the runner's thread. Requests are
// served on a pool of the adapter's own threads between start() and stop(); outcomes
// are recorded on the publisher's thread for as long as the adapter exists.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/result.h>

namespace kolabus::adapters {

// One HTTP client of the gateway: its name (for the log) and its token's SHA-256.
struct GatewayToken {
  std::string name;
  std::array<unsigned char, 32> sha256{};
};

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port, see GatewayAdapter::port()
  std::size_t max_batch = 1000;
  std::size_t max_body_bytes = 8 * 1024 * 1024;
  int status_retention_days = 30;
  std::string tls_cert;  // both set, or both empty (plain HTTP)
  std::string tls_key;
  std::vector<GatewayToken> tokens;  // empty: no authentication (loopback only)
  int header_timeout_seconds = 5;
  int body_timeout_seconds = 30;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_headers = 64;
  std::size_t max_connections = 64;
};

// True for 127.0.0.0/8, ::1, ::ffff:127.x.x.x and "localhost".
bool is_loopback_host(const std::string& host);

// Reads a [[gateway]] table. kInvalidArgument naming the key for an unknown key, a
// value of the wrong type or out of range, tls_cert without tls_key (or the reverse), a
// malformed or repeated token, and for a `listen` address that is not loopback while
// TLS or tokens are missing.
Result<GatewayOptions> parse_gateway_options(const toml::table& table);

class GatewayAdapter final : public Adapter {
 public:
  // Checks that tls_key is readable by its owner only (kInvalidArgument otherwise), opens
  // (creating) the status store under context.data_dir and registers the outcome
  // listener; does not listen yet. REQUIRES: context.publisher and context.outcomes
  // are set (kInvalidArgument otherwise).
  static Result<std::unique_ptr<GatewayAdapter>> create(GatewayOptions options,
                                                        const AgencyContext& context);
  ~GatewayAdapter() override;
  GatewayAdapter(const GatewayAdapter&) = delete;
  GatewayAdapter& operator=(const GatewayAdapter&) = delete;

  std::string describe() const override;
  // Loads the TLS certificate and key, binds the listening socket (errors, e.g. a port
  // in use or a certificate OpenSSL refuses, are returned here) and starts serving;
  // logs the address, TLS on or off and the number of tokens. kInvalidArgument if
  // already started.
  Status start() override;
  // Stops accepting, lets requests in progress finish, joins every server thread.
  // Returns within about a second: idle connections and ones still sending headers are
  // closed at once.
  void stop() override;

  // The port actually listened on (the chosen one when `listen` asked for port 0);
  // 0 when not started.
  int port() const;

 private:
  struct Impl;
  explicit GatewayAdapter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The factory for the runner (adapters::Factory): parse_gateway_options + create.
Result<std::unique_ptr<Adapter>> make_gateway(const toml::table& table,
                                              const AgencyContext& context);

}  // namespace kolabus::adapters
