// Scenario b, latency: end-to-end latency at fixed rates, open loop.
//
// The publisher sends event k at t0 + k/rate whatever the server does (it never
// waits for an ACK before sending), and a subscriber on its own connection and
// thread takes each delivery's time in its handler. Latency is measured from the
// scheduled send time, so a publisher that falls behind counts against the system
// (no coordinated omission); the event's index comes from its id, so nothing is
// added to the payload.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <sys/prctl.h>

#include "scenarios.h"
#include "stats.h"

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// Warm-up events take indices below this; measured ones start here.
constexpr std::uint64_t kMeasuredBase = 100000;

struct LatencyResult {
  Percentiles p;
  std::uint64_t lost = 0;
  std::uint64_t refused = 0;
  double send_rate = 0;  // achieved, events/s
};

// VmRSS and VmHWM of a process, in kB.
std::pair<std::uint64_t, std::uint64_t> memory_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key, unit;
  std::uint64_t value = 0, rss = 0, hwm = 0;
  while (in >> key) {
    if (key == "VmRSS:" && in >> value >> unit) rss = value;
    if (key == "VmHWM:" && in >> value >> unit) hwm = value;
  }
  return {rss, hwm};
}

Result<LatencyResult> measure(System& sys, std::uint64_t rate, std::uint64_t n) {
  SubscribeOptions so;
  so.name = "latency";
  so.window = 1000;
  so.from_start = false;
  auto sub = sys.subscriber(so);
  if (!sub) return unexpected(sub.error());
  auto pub = sys.publisher();
  if (!pub) return unexpected(pub.error());

  const auto interval = nanoseconds(1000000000LL / static_cast<std::int64_t>(rate));
  std::vector<std::int64_t> latency(n, -1);
  std::atomic<std::uint64_t> warm_seen{0}, received{0};
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> t0_ns{0};
  std::optional<Error> sub_error;  // read only after the thread is joined
  std::atomic<bool> sub_failed{false};
  std::thread subscriber([&] {
    while (!stop.load() && received.load() < n) {
      auto r = (*sub)->receive(milliseconds(20), [&](std::uint64_t i) {
        if (i < kMeasuredBase) {
          warm_seen.fetch_add(1);
          return;
        }
        const std::uint64_t k = i - kMeasuredBase;
        if (k >= n || latency[k] >= 0) return;
        const std::int64_t now = SteadyClock::now().time_since_epoch().count();
        latency[k] = now - (t0_ns.load(std::memory_order_acquire) +
                            static_cast<std::int64_t>(k) * interval.count());
        received.fetch_add(1);
      });
      if (!r) {
        sub_error = r.error();
        sub_failed.store(true);
        return;
      }
    }
  });
  auto finish = [&] {
    stop.store(true);
    subscriber.join();
  };

  // Warm-up: one event at a time until the subscriber has seen 20 (a SUB socket
  // misses what is sent before its subscription reaches the server).
  Acks acks;
  const auto warm_deadline = SteadyClock::now() + std::chrono::seconds(20);
  for (std::uint64_t w = 0; warm_seen.load() < 20; ++w) {
    if (SteadyClock::now() > warm_deadline || w >= kMeasuredBase || sub_failed.load()) {
      finish();
      if (sub_error) return unexpected(*sub_error);
      return unexpected(Errc::kUnavailable, "the subscriber received nothing while warming up");
    }
    (*pub)->send(w);
    if (Status st = (*pub)->flush(); !st) {
      finish();
      return unexpected(st.error());
    }
    auto r = (*pub)->receive(milliseconds(20));
    if (!r) {
      finish();
      return unexpected(r.error());
    }
  }
  while (true) {  // the warm-up's last acknowledgements
    auto r = (*pub)->receive(milliseconds(50));
    if (!r || r->acked + r->refused == 0) break;
  }

  // Measured: open loop. Fine-grained sleeps need a small timer slack.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  const auto t0 = SteadyClock::now() + milliseconds(5);
  t0_ns.store(t0.time_since_epoch().count(), std::memory_order_release);
  std::uint64_t k = 0;
  while (k < n) {
    const auto now = SteadyClock::now();
    while (k < n && t0 + interval * static_cast<std::int64_t>(k) <= now) {
      (*pub)->send(kMeasuredBase + k);
      ++k;
    }
    if (Status st = (*pub)->flush(); !st) {
      finish();
      return unexpected(st.error());
    }
    auto r = (*pub)->receive(milliseconds(0));
    if (!r) {
      finish();
      return unexpected(r.error());
    }
    acks += *r;
    if (k < n) std::this_thread::sleep_until(t0 + interval * static_cast<std::int64_t>(k));
  }
  const auto sent_at = SteadyClock::now();
  ::prctl(PR_SET_TIMERSLACK, 0UL, 0, 0, 0);
  // The rest of the acknowledgements, and every delivery (or 10 s).
  const auto deadline = sent_at + std::chrono::seconds(10);
  while (SteadyClock::now() < deadline && (acks.acked + acks.refused < n || received.load() < n) &&
         !sub_failed.load()) {
    auto r = (*pub)->receive(milliseconds(10));
    if (!r) break;
    acks += *r;
  }
  finish();
  if (sub_error) return unexpected(*sub_error);

  LatencyResult out;
  out.refused = acks.refused;
  out.send_rate = static_cast<double>(n) / seconds_between(t0, sent_at);
  std::vector<std::int64_t> samples;
  samples.reserve(n);
  for (auto v : latency) {
    if (v >= 0) {
      samples.push_back(v);
    } else {
      ++out.lost;
    }
  }
  out.p = percentiles(std::move(samples));
  return out;
}

}  // namespace

// Isolation: the latency of one consumer at 5,000 events/s, alone and with a consumer
// beside it that never reads (window 10,000, batches of 1,000, ack_wait 100 ms: the
// broker would redeliver to it ten times a second), in alternating rounds on fresh
// brokers; and the broker's memory in each.
Table run_isolation(BenchContext& ctx) {
  Table t;
  t.name = "isolation";
  t.title =
      "a consumer that never reads beside one at 5,000 events/s: the other's latency and the "
      "broker's memory";
  t.systems = {kKolabus};
  const std::uint64_t rate = 5000;
  const std::uint64_t n = ctx.events != 0 ? ctx.events : rate * (ctx.quick ? 2 : 10);
  const int rounds = ctx.latency_rounds != 0 ? ctx.latency_rounds : ctx.quick ? 1 : 3;
  struct Round {
    LatencyResult r;
    double base_mb = 0, peak_mb = 0;
  };
  std::map<bool, std::vector<Round>> results;  // by "with a never-reading consumer"
  for (int round = 1; round <= rounds; ++round) {
    for (bool bad : {false, true}) {
      std::string why;
      auto sys = ctx.make(kKolabus, &why);
      if (!sys) {
        t.skip("5000 events/s", "p99 ms", kKolabus, why);
        return t;
      }
      const std::string dir = ctx.fresh_dir("isolation");
      if (Status st = sys->start(dir); !st) {
        ++ctx.failures;
        t.skip("5000 events/s", "p99 ms", kKolabus, "failed: " + st.error().message);
        return t;
      }
      Round out;
      out.base_mb = static_cast<double>(memory_kb(sys->pid()).first) / 1024;
      std::unique_ptr<SubscribeClient> never_reads;
      if (bad) {
        SubscribeOptions so;
        so.name = "never-reads";
        so.window = 10000;
        so.batch = 1000;
        so.ack_wait_ms = 100;
        so.from_start = false;
        auto s = sys->subscriber(so);
        if (s) never_reads = std::move(*s);
      }
      auto r = measure(*sys, rate, n);
      out.peak_mb = static_cast<double>(memory_kb(sys->pid()).second) / 1024;
      never_reads.reset();
      sys->stop();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      if (!r) {
        ++ctx.failures;
        ctx.progress("isolation: " + r.error().message);
        continue;
      }
      out.r = *r;
      ctx.progress(std::string("isolation ") + (bad ? "with" : "without") +
                   " a never-reading consumer, round " + std::to_string(round) + ": p99 " +
                   human(r->p.p99_us / 1000) + " ms, broker " + human(out.base_mb) + " -> " +
                   human(out.peak_mb) + " MB");
      results[bad].push_back(out);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[(v.size() - 1) / 2];
  };
  for (bool bad : {false, true}) {
    const std::string label = bad ? "with a never-reading consumer" : "alone";
    std::vector<double> p50, p99, peak, grown;
    std::uint64_t lost = 0;
    for (const auto& rd : results[bad]) {
      p50.push_back(rd.r.p.p50_us / 1000);
      p99.push_back(rd.r.p.p99_us / 1000);
      peak.push_back(rd.peak_mb);
      grown.push_back(rd.peak_mb - rd.base_mb);
      lost += rd.r.lost;
    }
    t.set(label, "p50 ms", kKolabus, median(p50),
          lost > 0 ? std::to_string(lost) + " not delivered within 10 s" : "");
    t.set(label, "p99 ms", kKolabus, median(p99));
    t.set(label, "peak RSS MB", kKolabus, median(peak));
    t.set(label, "growth MB", kKolabus, median(grown));
  }
  t.notes.push_back(
      "kolabus only, development mode (one agency: the per-connection bound of 16 MiB unread "
      "applies); alternating rounds on fresh brokers, each figure the median of " +
      std::to_string(rounds) + " rounds; latency as in the latency scenario, " + std::to_string(n) +
      " events per round; memory: VmRSS after start, VmHWM after the round");
  return t;
}

Table run_latency(BenchContext& ctx) {
  Table t;
  t.name = "latency";
  t.title =
      "end-to-end latency at a fixed rate, publisher send -> consumer handler, ms "
      "(lower is better)";
  t.systems = ctx.systems;
  const std::vector<std::uint64_t> rates = !ctx.latency_rates.empty() ? ctx.latency_rates
                                           : ctx.quick
                                               ? std::vector<std::uint64_t>{5000}
                                               : std::vector<std::uint64_t>{1000, 5000, 20000};
  const int seconds = ctx.quick ? 1 : 10;
  // Rounds, the systems taking turns in each: a burst of load from elsewhere on a
  // shared machine then falls on one round of one system, and the median round
  // leaves it out instead of making it that system's figure.
  const int rounds = ctx.latency_rounds != 0 ? ctx.latency_rounds : ctx.quick ? 1 : 3;
  const std::vector<std::string> metrics = {"p50 ms", "p99 ms", "p99.9 ms", "max ms"};

  std::map<std::string, std::string> skipped;
  for (const auto rate : rates) {
    const std::uint64_t n = ctx.events != 0 ? ctx.events : rate * seconds;
    const std::string label = std::to_string(rate) + " events/s";
    std::map<std::string, std::vector<LatencyResult>> results;  // per system, per round
    std::map<std::string, std::string> failed;
    for (int round = 1; round <= rounds; ++round) {
      for (const auto& name : ctx.systems) {
        if (skipped.contains(name) || failed.contains(name)) continue;
        std::string why;
        auto sys = ctx.make(name, &why);
        if (!sys) {
          skipped[name] = why;
          continue;
        }
        const std::string dir = ctx.fresh_dir("latency-" + name);
        if (Status st = sys->start(dir); !st) {
          ++ctx.failures;
          failed[name] = "failed: " + st.error().message;
          continue;
        }
        auto r = measure(*sys, rate, n);
        sys->stop();
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        if (!r) {
          ++ctx.failures;
          failed[name] = "failed: " + r.error().message;
          ctx.progress("latency " + label + " " + name + ": " + r.error().message);
          continue;
        }
        ctx.progress("latency " + label + " " + name +
                     (rounds > 1 ? " round " + std::to_string(round) : "") + ": p50 " +
                     human(r->p.p50_us / 1000) + " ms, p99 " + human(r->p.p99_us / 1000) +
                     " ms, p99.9 " + human(r->p.p999_us / 1000) + " ms, max " +
                     human(r->p.max_us / 1000) + " ms (sent at " + human(r->send_rate) + "/s)");
        results[name].push_back(*r);
      }
    }
    for (const auto& name : ctx.systems) {
      const std::string why = skipped.contains(name)  ? skipped[name]
                              : failed.contains(name) ? failed[name]
                                                      : "";
      if (!why.empty()) {
        for (const auto& m : metrics) t.skip(label, m, name, why);
        continue;
      }
      auto& rs = results[name];
      // Each figure is its median over the rounds (the middle one of an odd count).
      auto median = [&](auto field) {
        std::vector<double> v;
        for (const auto& r : rs) v.push_back(field(r.p) / 1000);
        std::sort(v.begin(), v.end());
        return v[(v.size() - 1) / 2];
      };
      std::string note;
      std::uint64_t lost = 0, refused = 0;
      for (const auto& r : rs) {
        lost += r.lost;
        refused += r.refused;
      }
      if (lost > 0 || refused > 0) {
        note = std::to_string(lost) + " of " + std::to_string(n * rs.size()) +
               " not delivered within 10 s";
        if (refused > 0) note += ", " + std::to_string(refused) + " refused";
      }
      if (rs.size() > 1) {
        std::string each;
        for (const auto& r : rs) each += (each.empty() ? "" : ", ") + human(r.p.p99_us / 1000);
        note += (note.empty() ? "" : "; ") + std::string("p99 of each round: ") + each + " ms";
      }
      t.set(label, "p50 ms", name, median([](const Percentiles& p) { return p.p50_us; }), note);
      t.set(label, "p99 ms", name, median([](const Percentiles& p) { return p.p99_us; }));
      t.set(label, "p99.9 ms", name, median([](const Percentiles& p) { return p.p999_us; }));
      t.set(label, "max ms", name, median([](const Percentiles& p) { return p.max_us; }));
    }
  }
  t.notes.push_back(
      "open loop: event k is sent at t0 + k/rate without waiting for ACKs; latency is taken from "
      "that scheduled time to the subscriber's handler (same process, steady clock), " +
      std::to_string(seconds) + " s per rate (or --events), after a warm-up");
  if (rounds > 1) {
    t.notes.push_back(std::to_string(rounds) +
                      " rounds per rate, the systems taking turns in each round; every figure is "
                      "the median of its rounds");
  }
  t.notes.push_back(
      "subscribers: kolabus a consumer (Subscribe, every region, window 1000) acknowledging each "
      "drain with one Ack; naive the PUB socket the loop forwards each committed event to (no "
      "acks); jetstream an ephemeral push consumer, ack_policy all, max_ack_pending 1000, the "
      "last message of each read acknowledged; redis XREAD BLOCK on a second connection (no "
      "consumer group, no acks)");
  return t;
}

}  // namespace kolabus::bench
