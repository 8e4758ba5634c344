// The naive loop: the limit of kolabus's design, run as `kolabus-bench serve-naive`
// so that it is measured process to process like the broker.
//
// One ZeroMQ ROUTER speaking kolabus's own frames (Publish -> PublishAck, Ping ->
// Pong). Each loop iteration drains what is readable (up to 1,024 messages, as the
// broker does), puts every event under its sequence number in ONE RocksDB
// WriteBatch, writes it with WriteOptions::sync = true (group commit), then
// acknowledges each request and forwards each event on a PUB socket (for the
// latency scenario). No verification, no validation, no id index (no
// deduplication), no region index, no consumers, no audit: what is left is the cost
// of the socket and of a synced write.
//
// Thread-safety: single-threaded; SIGTERM/SIGINT stop it.
#pragma once

#include <string>

namespace kolabus::bench {

struct NaiveServerOptions {
  int port = 0;      // ROUTER on tcp://127.0.0.1:port
  int pub_port = 0;  // PUB on tcp://127.0.0.1:pub_port (0: none)
  std::string dir;   // the RocksDB directory (created if missing, reused if there)
};

// Serves until SIGTERM or SIGINT. Returns the process exit code.
int run_naive_server(const NaiveServerOptions& options);

}  // namespace kolabus::bench
