// Scenario c, catch-up: one consumer reading N stored events from the start, against
// a raw ZeroMQ PUSH -> PULL stream of the same event bytes (the most a socket can
// carry); and a consumer of one kelurahan reading the same log through the region
// index, whose time should follow its share of the events, not the log's length.
//
// Each system is loaded at full speed (4 publishers, window 1000; the load rate is
// reported too), then restarted, so that the reading starts from what is on disk
// (in the page cache) rather than from the server's memory.
#include <algorithm>
#include <filesystem>
#include <latch>
#include <thread>

#include <zmq.hpp>

#include "scenarios.h"
#include "stats.h"
#include <schemas/regions.h>

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

constexpr std::uint32_t kWindow = 10000;  // kolabus's maximum credit

// PUSH -> PULL over tcp://127.0.0.1 inside the harness: a sender thread writes the
// events into messages as fast as ZeroMQ takes them, the main thread counts.
Result<double> push_pull(zmq::context_t& zmq, const EventPool& pool, std::uint64_t n) {
  zmq::socket_t push(zmq, zmq::socket_type::push), pull(zmq, zmq::socket_type::pull);
  push.set(zmq::sockopt::linger, 0);
  pull.set(zmq::sockopt::linger, 0);
  push.bind("tcp://127.0.0.1:*");
  pull.connect(push.get(zmq::sockopt::last_endpoint));
  std::latch go(1);
  std::thread sender([&] {
    go.wait();
    for (std::uint64_t i = 0; i < n; ++i) {
      zmq::message_t m(pool.event_size(i));
      pool.write_event(i, static_cast<std::uint8_t*>(m.data()));
      push.send(m, zmq::send_flags::none);
    }
  });
  const auto t0 = SteadyClock::now();
  go.count_down();
  std::uint64_t got = 0;
  pull.set(zmq::sockopt::rcvtimeo, 30000);
  zmq::message_t m;
  while (got < n) {
    if (!pull.recv(m)) break;
    if (pool.index_of_event({static_cast<const std::uint8_t*>(m.data()), m.size()})) ++got;
  }
  const double s = seconds_between(t0, SteadyClock::now());
  sender.join();
  if (got < n) return unexpected(Errc::kUnavailable, "PULL received " + std::to_string(got));
  return s;
}

// The kelurahan whose share of the events is the median one.
std::string median_kelurahan(const EventPool& pool, std::uint64_t n) {
  const auto medan = medan_regions(schemas::RegionTable::embedded());
  std::vector<std::pair<std::uint64_t, std::string>> counts;
  for (const auto& k : medan.kelurahan) counts.emplace_back(pool.count_matching(n, {k}), k);
  std::sort(counts.begin(), counts.end());
  return counts[counts.size() / 2].second;
}

}  // namespace

Table run_catchup(BenchContext& ctx) {
  Table t;
  t.name = "catchup";
  t.title = "catch-up: one consumer reading stored events from the start";
  // The naive loop has no read path; the raw stream is the reference instead.
  for (const auto& s : ctx.systems) {
    if (s != kNaive) t.systems.push_back(s);
  }
  t.systems.push_back(kPushPull);
  const std::uint64_t n = ctx.events != 0 ? ctx.events : ctx.quick ? 50000 : 1000000;
  const std::string all = "read " + human(static_cast<double>(n)) + " stored events";
  const std::string load = "load " + human(static_cast<double>(n)) + " events (" +
                           std::to_string(kLoadPublishers) + " publishers, window 1000)";
  const std::string kel = median_kelurahan(*ctx.pool, n);
  const std::uint64_t kel_n = ctx.pool->count_matching(n, {kel});
  const auto* kel_region = schemas::RegionTable::embedded().find(kel);
  const std::string kel_label = "one kelurahan (" + kel + " " +
                                std::string(kel_region ? kel_region->name : "") + ": " +
                                std::to_string(kel_n) + " events)";
  double kolabus_all_seconds = 0;

  for (const auto& name : t.systems) {
    if (name == kPushPull) continue;
    auto skip_all = [&](const std::string& why) {
      t.skip(all, "events/s", name, why);
      t.skip(all, "seconds", name, why);
      t.skip(load, "events/s", name, why);
    };
    std::string why;
    auto sys = ctx.make(name, &why);
    if (!sys) {
      skip_all(why);
      continue;
    }
    const std::string dir = ctx.fresh_dir("catchup-" + name);
    auto fail = [&](const std::string& what) {
      ++ctx.failures;
      skip_all("failed: " + what);
      ctx.progress("catch-up " + name + ": " + what);
      sys->stop();
    };
    if (Status st = sys->start(dir); !st) {
      fail(st.error().message);
      continue;
    }
    ctx.progress("catch-up " + name + ": loading " + std::to_string(n) + " events");
    auto loaded =
        publish_window(*sys, 0, n, kLoadPublishers, 1000, std::nullopt, [&](std::uint64_t done) {
          ctx.progress("  " + std::to_string(done) + " of " + std::to_string(n));
        });
    if (!loaded) {
      fail(loaded.error().message);
      continue;
    }
    if (loaded->acks.refused > 0) {
      fail(std::to_string(loaded->acks.refused) + " refused: " + loaded->acks.first_refusal);
      continue;
    }
    t.set(load, "events/s", name, static_cast<double>(n) / loaded->seconds);
    sys->stop();
    if (Status st = sys->start(dir); !st) {
      fail(st.error().message);
      continue;
    }
    SubscribeOptions so;
    so.name = "catchup";
    so.window = kWindow;
    so.batch = ctx.delivery_batch;
    so.from_start = true;
    auto sub = sys->subscriber(so);
    if (!sub) {
      fail(sub.error().message);
      continue;
    }
    auto perf = ctx.profile(*sys, "catchup-all");
    const auto cpu_before = read_cpu_seconds(sys->pid());
    auto secs = receive_all(**sub, n, milliseconds(30000));
    const auto cpu_after = read_cpu_seconds(sys->pid());
    if (perf) perf->stop();
    if (!secs) {
      fail(secs.error().message);
      continue;
    }
    t.set(all, "events/s", name, static_cast<double>(n) / *secs);
    t.set(all, "seconds", name, *secs);
    if (cpu_before && cpu_after) {
      t.set(all, "server CPU us/event", name,
            (*cpu_after - *cpu_before) * 1e6 / static_cast<double>(n));
    }
    ctx.progress("catch-up " + name + ": " + human(static_cast<double>(n) / *secs) + " events/s (" +
                 human(*secs) + " s)");
    if (name == kKolabus) {
      kolabus_all_seconds = *secs;
      SubscribeOptions ko = so;
      ko.name = "kelurahan";
      ko.regions = {kel};
      auto ksub = sys->subscriber(ko);
      auto ksecs = ksub ? receive_all(**ksub, kel_n, milliseconds(30000))
                        : Result<double>(unexpected(ksub.error()));
      if (!ksecs) {
        ++ctx.failures;
        t.skip(kel_label, "seconds", name, "failed: " + ksecs.error().message);
      } else {
        const double share = static_cast<double>(kel_n) / static_cast<double>(n);
        const double time_share = *ksecs / kolabus_all_seconds;
        t.set(kel_label, "seconds", name, *ksecs);
        t.set(kel_label, "events/s", name, static_cast<double>(kel_n) / *ksecs);
        t.set(kel_label, "time share / event share", name, time_share / share);
        ctx.progress("catch-up kelurahan " + kel + ": " + std::to_string(kel_n) + " events in " +
                     human(*ksecs) + " s (time share " + human(100 * time_share) +
                     "%, event share " + human(100 * share) + "%)");
      }
    }
    sys->stop();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  auto raw = push_pull(*ctx.zmq, *ctx.pool, n);
  if (raw) {
    t.set(all, "events/s", kPushPull, static_cast<double>(n) / *raw);
    t.set(all, "seconds", kPushPull, *raw);
    ctx.progress("catch-up push-pull: " + human(static_cast<double>(n) / *raw) + " events/s");
  } else {
    ++ctx.failures;
    t.skip(all, "events/s", kPushPull, "failed: " + raw.error().message);
  }
  for (const auto& s : t.systems) {
    if (s != kKolabus) {
      t.skip(kel_label, "seconds", s, "n/a: no region filter");
    }
  }
  t.notes.push_back(
      "each system loaded at full speed, restarted, then read from the start: kolabus a new "
      "consumer (window 10000, batch " +
      std::to_string(ctx.delivery_batch) +
      ": deliveries per message) acknowledging each drain; jetstream an ephemeral push consumer "
      "(deliver all, ack_policy all, max_ack_pending 10000); redis XREAD COUNT 1000 in a loop; "
      "push-pull the same event bytes over tcp://127.0.0.1 between two threads of the harness");
  t.notes.push_back(
      "server CPU us/event: the server process's user + system CPU time (all threads) during "
      "the read, per event");
  t.notes.push_back(
      "one kelurahan: a second kolabus consumer filtered on one kelurahan's code (the one with "
      "the median share); 'time share / event share' = (its time / the full read's time) / (its "
      "events / all events): about 1 when it reads only its own events");
  return t;
}

}  // namespace kolabus::bench
