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
//   GET  /v1/health      {"status":"ok","pending":<events in the outbox>}
//
// Statuses live in a SQLite file, data_dir/gateway-status.sqlite, fed by the
// Publisher's outcomes (through the AgencyContext's OutcomeHub); they survive
// restarts and are pruned after status_retention_days. Gateways of one agency share
// the file, so any of them can answer for an id another one accepted.
//
// Configuration ([[gateway]] table of agency.toml):
//   listen = "127.0.0.1:8080"     required; "host:port", "[v6]:port"; port 0 = any free port
//   max_batch = 1000              events in one request, at most
//   max_body_bytes = 8388608      request body size, at most
//   status_retention_days = 30    statuses older than this are forgotten
//
// Ownership: the adapter borrows the AgencyContext's publisher and hub (the runner
// keeps them alive longer than the adapter) and owns its HTTP server and status store.
// Thread-safety: start(), stop() and port() from the runner's thread. Requests are
// served on a pool of the adapter's own threads between start() and stop(); outcomes
// are recorded on the publisher's thread for as long as the adapter exists.
#pragma once

#include <memory>
#include <string>

#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <common/result.h>

namespace kolabus::adapters {

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port, see GatewayAdapter::port()
  std::size_t max_batch = 1000;
  std::size_t max_body_bytes = 8 * 1024 * 1024;
  int status_retention_days = 30;
};

// Reads a [[gateway]] table. kInvalidArgument naming the key for an unknown key, a
// missing `listen`, a value of the wrong type or out of range.
Result<GatewayOptions> parse_gateway_options(const toml::table& table);

class GatewayAdapter final : public Adapter {
 public:
  // Opens (creating) the status store under context.data_dir and registers the outcome
  // listener; does not listen yet. REQUIRES: context.publisher and context.outcomes
  // are set (kInvalidArgument otherwise).
  static Result<std::unique_ptr<GatewayAdapter>> create(GatewayOptions options,
                                                        const AgencyContext& context);
  ~GatewayAdapter() override;
  GatewayAdapter(const GatewayAdapter&) = delete;
  GatewayAdapter& operator=(const GatewayAdapter&) = delete;

  std::string describe() const override;
  // Binds the listening socket (errors, e.g. a port in use, are returned here) and
  // starts serving. kInvalidArgument if already started.
  Status start() override;
  // Stops accepting, lets requests in progress finish, joins every server thread.
  // Returns within about a second (idle keep-alive connections are held at most 1 s).
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
