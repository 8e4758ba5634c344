// The crash suite's checker: after a run, with every process stopped, it reads what
// the publishers journalled, what their outboxes still hold, the broker's log
// (RocksDB, read-only) and each consumer's inbox, and checks DESIGN.md's guarantees
// 1-5 on them: nothing ACKed is lost, nothing is stored twice, nothing is in the log
// that nobody sent, every outbox drains, and each consumer's handler committed
// each matching event exactly once and nothing else. The publishers' events are
// regenerated from the seed, so the log's bytes are compared with what was sent.
//
// Thread-safety: a function over files; call it when no process writes them.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <client/admin.h>
#include <common/clock.h>

namespace kolabus::crash {

struct RunFacts {
  std::string work_dir;
  int publishers = 0;
  int consumers = 0;
  int events_per_publisher = 0;
  std::uint64_t seed = 0;  // with now_ms, regenerates what each publisher sent
  TimeMs now_ms = 0;
  // What the broker reported about each consumer at the end (nullopt: not known).
  std::vector<std::optional<client::ConsumerInfoView>> final_info;
  // Things that went wrong during the run (an unexpected exit, a timeout): each fails it.
  std::vector<std::string> problems;
};

struct CheckRow {
  std::string label;
  std::uint64_t value = 0;
  std::optional<std::uint64_t> must;  // the value a passing run has, if there is one
  bool ok() const { return !must || value == *must; }
};

struct ConsumerRow {
  std::string name;
  std::string filter;
  std::uint64_t matching = 0;        // matching events in the log
  std::uint64_t handled_once = 0;    // matching events committed exactly once
  std::uint64_t missing = 0;         // matching events never committed
  std::uint64_t duplicates = 0;      // matching events committed more than once
  std::uint64_t not_matching = 0;    // committed events the filter does not match (or not logged)
  std::uint64_t wrong_sequence = 0;  // committed under another sequence than the log's
  std::uint64_t marks_off = 0;       // |processed marks - committed events|: must be 0 (one write)
  std::uint64_t dead_letters = 0;    // as the broker reported at the end
  bool caught_up = false;            // lag and pending 0 at the end
  bool ok() const;
};

struct Report {
  std::vector<CheckRow> publish;
  // How hard the faults hit (the processes' own counters; informative, no bound).
  std::vector<CheckRow> coverage;
  std::vector<ConsumerRow> consumers;
  std::vector<std::string> problems;  // the run's, and the checker's own (unreadable data)
  bool ok() const;
  void print(std::ostream& out) const;
};

Report check_run(const RunFacts& facts);

}  // namespace kolabus::crash
