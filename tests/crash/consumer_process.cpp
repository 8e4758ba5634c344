// A consumer process of the crash suite: one durable consumer through
// client::Consumer, whose handler writes a record of each call into the inbox
// transaction — committed with the processed mark in one synced write, or not at
// all. A key per handler call (not per event) makes a second committed handling of
// one event visible to the checker instead of overwriting the first.
//
// The handler also fails on purpose now and then (a Nak, or an exception, which the
// library treats as a Nak), after it has written to the transaction: those writes
// must be discarded.
//
// SIGTERM: close the consumer (Acks flushed, Unsubscribe) and exit 0. SIGKILL: the
// suite's fault; the next process resumes from the inbox and the broker's position.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <random>
#include <stdexcept>

#include <unistd.h>

#include "crash_suite.h"
#include "journal.h"
#include <client/consumer.h>

namespace kolabus::crash {

namespace {

using namespace std::chrono_literals;

volatile std::sig_atomic_t g_stop = 0;
void on_term(int) { g_stop = 1; }

}  // namespace

int run_consumer(const ConsumerArgs& a) {
  std::signal(SIGTERM, on_term);
  std::signal(SIGINT, on_term);

  client::ConsumerOptions opt;
  opt.endpoint = a.broker;
  opt.inbox_dir = a.dir + "/inbox";
  opt.name = a.name;
  for (int k : a.kinds) opt.kinds.push_back(static_cast<events::Payload>(k));
  opt.regions = a.regions;
  opt.window = a.window;
  // Short enough that a killed client's deliveries come back quickly; failures on
  // purpose and kills must never push an event to the dead letters.
  opt.ack_wait_ms = 1500;
  opt.max_deliver = 1000000;
  opt.heartbeat = 200ms;
  opt.backoff_initial = 20ms;
  opt.backoff_max = 300ms;
  auto consumer = client::Consumer::open(opt);
  if (!consumer) {
    std::fprintf(stderr, "consumer %s: cannot open: %s\n", a.name.c_str(),
                 consumer.error().to_string().c_str());
    return 2;
  }

  const std::string token = std::to_string(::getpid());
  std::uint64_t calls = 0;
  std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ULL);
  std::uniform_int_distribution<int> roll(0, 999);
  const client::Handler handler = [&](const client::Received& r, storage::Inbox::Txn& txn) {
    ++calls;
    txn.put("h/" + r.id.to_string() + "/" + token + "." + std::to_string(calls),
            std::to_string(r.sequence.value));
    const int x = roll(rng);
    if (x < a.fail_permille / 2) return client::HandlerResult{client::Verdict::kNak, "", 50};
    if (x < a.fail_permille) throw std::runtime_error("a handler failure on purpose");
    return client::HandlerResult{};
  };

  // Counters for the checker's coverage table: the last record of each process counts.
  auto stats_log = Journal::open(a.dir + "/stats.log");
  auto record_stats = [&] {
    if (!stats_log) return;
    const auto s = (*consumer)->stats();
    (void)stats_log->append("S " + token + " " + std::to_string(s.delivered) + " " +
                                std::to_string(s.handled) + " " +
                                std::to_string(s.duplicates_skipped) + " " +
                                std::to_string(s.naked) + " " + std::to_string(s.reconnects),
                            Sync::kNo);
  };
  auto last_stats = std::chrono::steady_clock::now() - 1s;  // a first record at once

  std::string last_error;
  while (g_stop == 0) {
    if (std::chrono::steady_clock::now() - last_stats >= 250ms) {
      record_stats();
      last_stats = std::chrono::steady_clock::now();
    }
    auto n = (*consumer)->poll(handler, 200ms);
    if (!n && n.error().message != last_error) {
      last_error = n.error().message;
      std::fprintf(stderr, "consumer %s: poll: %s\n", a.name.c_str(),
                   n.error().to_string().c_str());
    }
  }
  record_stats();
  const auto stats = (*consumer)->stats();
  (*consumer)->close();
  std::printf(
      "consumer %s: stopped (this run: %llu delivered, %llu handled, %llu skipped as "
      "duplicates, %llu naked, %llu reconnects)\n",
      a.name.c_str(), static_cast<unsigned long long>(stats.delivered),
      static_cast<unsigned long long>(stats.handled),
      static_cast<unsigned long long>(stats.duplicates_skipped),
      static_cast<unsigned long long>(stats.naked),
      static_cast<unsigned long long>(stats.reconnects));
  return 0;
}

}  // namespace kolabus::crash
