// The crash suite's shared vocabulary: the options of the three roles the one
// binary plays (the orchestrator, and the publisher and consumer processes it starts
// by executing itself again), the layout of the work directory, the consumers'
// filters and the seeded choices every role derives from the run's seed.
//
// A run's work directory:
//   broker/            the broker's RocksDB (kept across its restarts)
//   broker.endpoint    written by the broker once it serves; broker.log its output
//   pub-K/outbox/      publisher K's outbox (client::Publisher)
//   pub-K/sent.log     publisher K's journal of what it handed to its outbox
//   pub-K/acked.log    publisher K's journal of the broker's answers
//   con-K/inbox/       consumer K's inbox; its handler's writes are in its `app` family
//   pub-K.log, con-K.log  the processes' output
// Journal records are lines (journal.h):
//   sent.log:  "I <begin> <end> <id>..."  events [begin, end) are about to be enqueued
//                                        (fsynced before the enqueue: these are SENT)
//              "E <end>"                 they are in the outbox
//              "D"                       everything enqueued and drained
//   acked.log: "A <id> <sequence> <0|1 duplicate>" and "R <id> <code> <message>"
//   pub-K/stats.log, con-K/stats.log: "S <pid> <counters>..." every 250 ms, the client
//              library's stats of that process (publisher: sent acked duplicates
//              retries; consumer: delivered handled skipped naked reconnects); the
//              last record of each pid counts, so a kill loses up to 250 ms of them
// Inbox app keys written by a consumer's handler, with the processed mark:
//   "h/<id>/<pid>.<call>" -> "<sequence>"   (one key per handler call that committed)
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <common/clock.h>

namespace kolabus::crash {

// The orchestrator's options (the command line of `kolabus-crash-suite`).
struct SuiteOptions {
  std::uint64_t seed = 0;
  int kills = 5;          // broker SIGKILLs
  int client_kills = -1;  // publisher and consumer SIGKILLs; -1: as many as `kills`
  int publishers = 2;
  int consumers = 3;
  int events = 1500;       // per publisher
  int spread_ms = -1;      // publishers pace their batches over this long; -1: 1 s per kill
  int timeout_s = 0;       // the whole run; 0: 120 s + 5 s per kill
  int settle_s = 60;       // consumers must be caught up this long after the last kill
  std::string work_dir;    // empty: a fresh directory under the system temp dir
  bool keep = false;       // keep the work directory when a check fails
  bool verbose = false;    // a line per kill
  std::string broker_bin;  // kolabus-broker
  std::string self_exe;    // this binary, to start the publisher and consumer processes
};

// `kolabus-crash-suite publisher ...`: one publisher process.
struct PublisherArgs {
  std::string dir;     // its pub-K directory
  std::string broker;  // the broker's endpoint
  int id = 0;
  std::uint64_t seed = 0;  // the run's seed
  int events = 0;
  TimeMs now_ms = 0;    // the run's "now" for the event generator: the same in every restart
  TimeMs start_ms = 0;  // wall clock when the run started: the pacing's origin
  int spread_ms = 0;
  std::uint32_t window = 1000;
};

// `kolabus-crash-suite consumer ...`: one consumer process.
struct ConsumerArgs {
  std::string dir;  // its con-K directory
  std::string broker;
  std::string name;  // the durable consumer's name
  std::vector<int> kinds;
  std::vector<std::string> regions;
  std::uint32_t window = 100;
  int fail_permille = 20;  // handler calls that Nak or throw, per thousand
};

// A consumer's filter, as docs/PROTOCOL.md 4.1 defines matching.
struct FilterSpec {
  std::string label;                // for the table: "all", "kind=Death", ...
  std::vector<std::uint8_t> kinds;  // events::Payload values; empty: every kind
  std::vector<std::string> regions;
  bool matches(std::uint8_t routing_kind, const std::vector<std::string>& event_regions) const;
};

// Consumer `index`'s filter: 0 every event, 1 one kecamatan, 2 one kind, 3 a kind in a
// kecamatan, 4 the province, then other kecamatan of Medan.
FilterSpec filter_for(int index);
std::string consumer_name(int index);

// The kecamatan the generator favours, so its consumer gets a good share of events.
inline constexpr const char* kFocusKecamatan = "127101";
inline constexpr const char* kCity = "1271";  // Kota Medan

// Seeds of the parts of a run, each derived from the run's seed.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream, std::uint64_t index);

// Publisher `id`'s events: deterministic for (seed, id, events, now_ms).
std::vector<std::vector<std::uint8_t>> publisher_events(std::uint64_t seed, int id, int events,
                                                        TimeMs now_ms);

// The sizes of publisher `id`'s enqueue batches: deterministic, summing to `events`.
// Mostly 1-50 events, now and then a burst of 100-800 (a spool file arriving), so
// that kills find many events in flight.
std::vector<int> batch_sizes(std::uint64_t seed, int id, int events);

std::string publisher_dir(const std::string& work, int id);
std::string consumer_dir(const std::string& work, int id);

// The roles.
int run_suite(const SuiteOptions& options);
int run_publisher(const PublisherArgs& args);
int run_consumer(const ConsumerArgs& args);

}  // namespace kolabus::crash
