// A publisher process of the crash suite: publishes its deterministic events
// through client::Publisher (durable outbox), journalling what it enqueued and what
// the broker answered, and resumes where it stopped when it is started again after
// a SIGKILL.
//
// Resuming: the events and their batches come from the run's seed, so a restart
// regenerates the same ones. The journal's last "I" record without its "E" is a
// batch whose enqueue may or may not have happened before the kill; it is enqueued
// again, so the outbox may hold an event twice — the broker's idempotency must make
// that harmless (one copy in the log, a duplicate ACK for the other).
#include <chrono>
#include <cstdio>
#include <thread>

#include <flatbuffers/flatbuffers.h>
#include <unistd.h>

#include "crash_suite.h"
#include "journal.h"
#include <client/publisher.h>
#include <schemas/events_generated.h>

namespace kolabus::crash {

namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

EventId id_of(const std::vector<std::uint8_t>& event) {
  const auto* ev = flatbuffers::GetRoot<events::Event>(event.data());
  return EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
}

// The first event of the batch to enqueue next, from the sent journal.
std::size_t resume_point(const std::vector<std::string>& lines) {
  std::size_t at = 0;
  for (const auto& line : lines) {
    const auto f = split_fields(line);
    if (f.size() >= 3 && f[0] == "I") at = to_u64(f[1]);  // maybe not enqueued
    if (f.size() == 2 && f[0] == "E") at = to_u64(f[1]);
  }
  return at;
}

}  // namespace

int run_publisher(const PublisherArgs& a) {
  const auto events = publisher_events(a.seed, a.id, a.events, a.now_ms);
  const std::vector<int> batches = batch_sizes(a.seed, a.id, a.events);

  const std::string sent_path = a.dir + "/sent.log";
  const std::size_t resume = resume_point(read_journal(sent_path));
  auto sent = Journal::open(sent_path);
  auto acked = Journal::open(a.dir + "/acked.log");
  if (!sent || !acked) {
    std::fprintf(stderr, "publisher %d: %s\n", a.id,
                 (!sent ? sent.error() : acked.error()).to_string().c_str());
    return 2;
  }

  client::PublisherOptions opt;
  opt.endpoint = a.broker;
  opt.outbox_dir = a.dir + "/outbox";
  opt.window = a.window;
  opt.ack_timeout = 1000ms;
  opt.backoff_initial = 20ms;
  opt.backoff_max = 300ms;
  // The outcome callback runs on the sender thread, after the outbox dropped the
  // entry: a kill in between loses the journal record, never the event.
  auto on_outcome = [&acked, id = a.id](const client::Outcome& o) {
    std::string line;
    if (o.kind == client::OutcomeKind::kRefused) {
      std::string message = o.refusal.message;
      for (char& c : message) {
        if (c == '\n') c = ' ';
      }
      line = "R " + o.id.to_string() + " " + std::to_string(o.refusal.code) + " " + message;
    } else {
      line = "A " + o.id.to_string() + " " + std::to_string(o.sequence.value) + " " +
             (o.kind == client::OutcomeKind::kDuplicate ? "1" : "0");
    }
    if (auto st = acked->append(line, Sync::kNo); !st) {
      std::fprintf(stderr, "publisher %d: %s\n", id, st.error().to_string().c_str());
    }
  };
  auto publisher = client::Publisher::open(opt, on_outcome);
  if (!publisher) {
    std::fprintf(stderr, "publisher %d: cannot open: %s\n", a.id,
                 publisher.error().to_string().c_str());
    return 2;
  }

  // Counters for the checker's coverage table: the last record of each process counts.
  auto stats_log = Journal::open(a.dir + "/stats.log");
  auto last_stats = SteadyClock::now();
  auto record_stats = [&](bool force) {
    if (!stats_log || (!force && SteadyClock::now() - last_stats < 250ms)) return;
    last_stats = SteadyClock::now();
    const auto s = (*publisher)->stats();
    (void)stats_log->append("S " + std::to_string(::getpid()) + " " + std::to_string(s.sent) + " " +
                                std::to_string(s.acked) + " " + std::to_string(s.duplicates) + " " +
                                std::to_string(s.retries),
                            Sync::kNo);
  };
  record_stats(true);

  // Batches are paced over the run (each has its due time from the run's start),
  // so the kills find publishers at work, not done.
  std::size_t begin = 0;
  for (std::size_t j = 0; j < batches.size(); ++j) {
    const std::size_t end = begin + static_cast<std::size_t>(batches[j]);
    if (begin >= resume) {
      const TimeMs due = a.start_ms + static_cast<TimeMs>(a.spread_ms) * static_cast<TimeMs>(j) /
                                          static_cast<TimeMs>(batches.size());
      for (TimeMs now = SystemClock().now_ms(); due > now; now = SystemClock().now_ms()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min<TimeMs>(due - now, 100)));
        record_stats(false);
      }

      std::string intent = "I " + std::to_string(begin) + " " + std::to_string(end);
      std::vector<std::span<const std::uint8_t>> batch;
      for (std::size_t i = begin; i < end; ++i) {
        intent += " " + id_of(events[i]).to_string();
        batch.emplace_back(events[i]);
      }
      if (auto st = sent->append(intent, Sync::kYes); !st) {
        std::fprintf(stderr, "publisher %d: %s\n", a.id, st.error().to_string().c_str());
        return 3;
      }
      if (auto r = (*publisher)->publish_batch(batch); !r) {
        std::fprintf(stderr, "publisher %d: publish_batch: %s\n", a.id,
                     r.error().to_string().c_str());
        return 3;
      }
      if (auto st = sent->append("E " + std::to_string(end), Sync::kNo); !st) {
        std::fprintf(stderr, "publisher %d: %s\n", a.id, st.error().to_string().c_str());
        return 3;
      }
    }
    begin = end;
  }

  while (!(*publisher)->wait_drained(1s)) record_stats(false);
  record_stats(true);
  const auto stats = (*publisher)->stats();
  publisher->reset();  // stop the sender: no outcome after the journal's "D"
  if (auto st = sent->append("D", Sync::kYes); !st) {
    std::fprintf(stderr, "publisher %d: %s\n", a.id, st.error().to_string().c_str());
    return 3;
  }
  std::printf(
      "publisher %d: drained (this run: %llu frames sent, %llu acked, %llu duplicates, "
      "%llu refused, %llu retries)\n",
      a.id, static_cast<unsigned long long>(stats.sent),
      static_cast<unsigned long long>(stats.acked),
      static_cast<unsigned long long>(stats.duplicates),
      static_cast<unsigned long long>(stats.refused),
      static_cast<unsigned long long>(stats.retries));
  return 0;
}

}  // namespace kolabus::crash
