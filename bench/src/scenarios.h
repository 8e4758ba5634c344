// The scenarios of issue 6 and what they share: the run's context (mode, work
// directory, selected systems, the event pool) and the loops that drive a
// PublishClient or a SubscribeClient.
//
// Each run_<scenario>() starts the servers it needs (fresh data directories under
// the work directory), measures, stops them and returns its table. A system that
// is not installed is skipped with the reason in the table; a system that fails is
// reported as failed (and counted in BenchContext::failures) without stopping the
// other measurements.
//
// Ownership: the context borrows the pool, the zmq context and the report.
// Thread-safety: the scenarios run on the main thread (they spawn servers; see
// process.h) and start their own worker threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "events.h"
#include "process.h"
#include "report.h"
#include "systems.h"

namespace kolabus::bench {

struct BenchContext {
  bool quick = false;
  std::uint64_t events = 0;  // --events: overrides each scenario's main count (0: default)
  int latency_rounds = 0;    // --latency-rounds (0: 3 in the full run, 1 in --quick)
  // --latency-rates: events/s of the latency scenario (empty: 1k, 5k, 20k; 5k in --quick)
  std::vector<std::uint64_t> latency_rates;
  // --delivery-batch: kolabus consumers' Subscribe.batch in catch-up and fan-out (the
  // client library's default, 128; 1: one Delivery per message).
  std::uint32_t delivery_batch = 128;
  std::string work_dir;
  std::optional<std::string> perf_dir;  // --perf: record the broker with perf here
  Paths paths;
  std::vector<std::string> systems;  // selected, in column order
  const EventPool* pool = nullptr;
  zmq::context_t* zmq = nullptr;
  Report* report = nullptr;
  int failures = 0;

  bool wants(const std::string& system) const;
  // A fresh directory path under the work directory (not created).
  std::string fresh_dir(const std::string& name);
  // The system, or nullptr with `why` ("skipped: ... not installed").
  std::unique_ptr<System> make(const std::string& system, std::string* why);
  // Starts `perf record --call-graph dwarf` on the kolabus broker when --perf is given.
  std::optional<ChildProcess> profile(System& system, const std::string& tag);
  // A progress line on stderr.
  void progress(const std::string& line) const;

 private:
  int dirs_ = 0;
};

// Loading stored events for catch-up and start-up: publishers x window 1000.
inline constexpr int kLoadPublishers = 4;

struct PublishResult {
  Acks acks;
  double seconds = 0;
  bool stopped_by_time = false;  // the time limit came before the last event
};

// Publishes events [first, first + count) from `publishers` connections (one thread
// each; publisher p sends first + p, first + p + publishers, ...), each keeping
// `window` requests in flight, and waits for
// every answer. Sending stops early at `max_time` (then what was sent is still
// answered). `on_progress` is called about every 5 s with the answers so far.
Result<PublishResult> publish_window(System& system, std::uint64_t first, std::uint64_t count,
                                     int publishers, std::uint32_t window,
                                     std::optional<std::chrono::milliseconds> max_time,
                                     const std::function<void(std::uint64_t)>& on_progress = {});

// Receives until `expected` of the pool's events arrived; fails when nothing
// arrives for `stall`. Returns the seconds it took.
Result<double> receive_all(SubscribeClient& sub, std::uint64_t expected,
                           std::chrono::milliseconds stall);

Table run_publish(BenchContext& ctx);
Table run_latency(BenchContext& ctx);
Table run_catchup(BenchContext& ctx);
Table run_fanout(BenchContext& ctx);
Table run_startup(BenchContext& ctx);
Table run_isolation(BenchContext& ctx);

// Seconds between two steady-clock points.
inline double seconds_between(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace kolabus::bench
