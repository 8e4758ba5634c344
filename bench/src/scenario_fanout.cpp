// Scenario d, fan-out: one publisher at full speed (window 1000) and the offices of
// Medan as consumers — 151 kelurahan, 21 kecamatan and 10 city-wide consumers, each
// with its own connection and region filter, all acknowledging. Measures
// acknowledged deliveries per second from the first publish until every consumer
// has everything, and the lag (deliveries still owed) when the publisher is done.
//
// Only kolabus: the references have no per-consumer region filter (one subject or
// one stream for every event), so the same workload cannot be expressed.
#include <filesystem>
#include <thread>

#include <zmq.hpp>

#include "scenarios.h"
#include "stats.h"
#include <schemas/regions.h>

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

struct Office {
  std::string name;
  std::vector<std::string> regions;
  std::uint64_t expected = 0;
};

}  // namespace

Table run_fanout(BenchContext& ctx) {
  Table t;
  t.name = "fanout";
  t.title = "fan-out to the offices of Medan, all acknowledging";
  t.systems = ctx.systems;
  const std::uint64_t n = ctx.events != 0 ? ctx.events : ctx.quick ? 10000 : 100000;
  const auto medan = medan_regions(schemas::RegionTable::embedded());
  std::vector<Office> offices;
  for (const auto& k : medan.kelurahan) offices.push_back({"kel-" + k, {k}, 0});
  for (const auto& k : medan.kecamatan) offices.push_back({"kec-" + k, {k}, 0});
  for (int c = 0; c < 10; ++c) offices.push_back({"city-" + std::to_string(c), {medan.city}, 0});
  std::uint64_t total = 0;
  for (auto& o : offices) {
    o.expected = ctx.pool->count_matching(n, o.regions);
    total += o.expected;
  }
  const std::string label = std::to_string(medan.kelurahan.size()) + " kelurahan + " +
                            std::to_string(medan.kecamatan.size()) + " kecamatan + 10 city, " +
                            human(static_cast<double>(n)) + " events";
  const std::vector<std::string> metrics = {"acked deliveries/s", "publish events/s",
                                            "lag at end of publish", "drain after publish ms",
                                            "broker lag after drain"};
  for (const auto& name : ctx.systems) {
    if (name != kKolabus) {
      for (const auto& m : metrics) t.skip(label, m, name, "n/a: no per-consumer region filter");
    }
  }
  if (!ctx.wants(kKolabus)) return t;

  auto fail = [&](const std::string& why) {
    ++ctx.failures;
    for (const auto& m : metrics) t.skip(label, m, kKolabus, "failed: " + why);
    ctx.progress("fan-out: " + why);
    return t;
  };
  std::string why;
  auto sys = ctx.make(kKolabus, &why);
  if (!sys) return fail(why);
  const std::string dir = ctx.fresh_dir("fanout-kolabus");
  if (Status st = sys->start(dir); !st) return fail(st.error().message);

  std::vector<std::unique_ptr<SubscribeClient>> subs;
  for (const auto& o : offices) {
    SubscribeOptions so;
    so.name = o.name;
    so.regions = o.regions;
    so.window = 1000;
    so.batch = ctx.delivery_batch;
    so.from_start = true;
    auto s = sys->subscriber(so);
    if (!s) {
      sys->stop();
      return fail(s.error().message);
    }
    subs.push_back(std::move(*s));
  }

  // One thread serves every consumer connection: poll, then drain the readable ones
  // (each drain ends with one Ack), and every second all of them (liveness pings).
  std::vector<std::uint64_t> received(offices.size(), 0);
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<bool> stop{false};
  std::optional<Error> error;
  SteadyClock::time_point drained_at{};
  std::thread consumer([&] {
    std::vector<zmq::pollitem_t> items;
    for (auto& s : subs) items.push_back({s->zmq_handle(), 0, ZMQ_POLLIN, 0});
    auto last_all = SteadyClock::now();
    while (!stop.load() && delivered.load() < total) {
      zmq::poll(items.data(), items.size(), milliseconds(100));
      const bool all = SteadyClock::now() - last_all > std::chrono::seconds(1);
      if (all) last_all = SteadyClock::now();
      for (std::size_t c = 0; c < subs.size(); ++c) {
        if (!all && !(items[c].revents & ZMQ_POLLIN)) continue;
        auto r = subs[c]->receive(milliseconds(0), [&](std::uint64_t) { ++received[c]; });
        if (!r) {
          error = r.error();
          stop.store(true);
          return;
        }
        delivered.fetch_add(*r);
      }
    }
    drained_at = SteadyClock::now();
  });

  auto perf = ctx.profile(*sys, "fanout");
  const auto cpu_before = read_cpu_seconds(sys->pid());
  const auto t0 = SteadyClock::now();
  auto pub = publish_window(*sys, 0, n, 1, 1000, std::nullopt, [&](std::uint64_t done) {
    ctx.progress("  published " + std::to_string(done) + " of " + std::to_string(n) +
                 ", delivered " + std::to_string(delivered.load()) + " of " +
                 std::to_string(total));
  });
  const auto published_at = SteadyClock::now();
  const std::uint64_t lag_at_publish = total - std::min(total, delivered.load());
  const auto drain_deadline = published_at + std::chrono::seconds(ctx.quick ? 30 : 120);
  while (delivered.load() < total && !stop.load() && SteadyClock::now() < drain_deadline) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  stop.store(true);
  consumer.join();
  const auto cpu_after = read_cpu_seconds(sys->pid());
  if (perf) perf->stop();
  if (!pub) {
    sys->stop();
    return fail(pub.error().message);
  }
  if (error) {
    sys->stop();
    return fail(error->message);
  }
  const std::uint64_t got = delivered.load();
  std::string note;
  if (got < total) {
    ++ctx.failures;
    note = "only " + std::to_string(got) + " of " + std::to_string(total) +
           " deliveries within the drain time";
  }
  const auto end = got >= total ? drained_at : SteadyClock::now();
  // Acks are not answered: give the broker a moment to apply the last ones.
  std::this_thread::sleep_for(milliseconds(300));
  auto lag = sys->consumer_lag();
  sys->stop();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  const double secs = seconds_between(t0, end);
  t.set(label, "acked deliveries/s", kKolabus, static_cast<double>(got) / secs, note);
  t.set(label, "publish events/s", kKolabus,
        static_cast<double>(pub->acks.acked) / seconds_between(t0, published_at));
  t.set(label, "lag at end of publish", kKolabus, static_cast<double>(lag_at_publish));
  t.set(label, "drain after publish ms", kKolabus, 1000 * seconds_between(published_at, end));
  if (cpu_before && cpu_after && got > 0) {
    t.set(label, "broker CPU us/delivery", kKolabus,
          (*cpu_after - *cpu_before) * 1e6 / static_cast<double>(got));
  }
  if (lag) {
    t.set(label, "broker lag after drain", kKolabus, static_cast<double>(*lag));
  } else {
    t.skip(label, "broker lag after drain", kKolabus, "failed: " + lag.error().message);
  }
  ctx.progress("fan-out: " + human(static_cast<double>(got) / secs) + " acked deliveries/s, " +
               std::to_string(lag_at_publish) + " owed when the publisher finished");
  t.notes.push_back(
      std::to_string(offices.size()) + " consumers, each its own DEALER (window 1000, batch " +
      std::to_string(ctx.delivery_batch) +
      " deliveries per message), served by one harness thread; " + std::to_string(total) +
      " deliveries in all (" + human(static_cast<double>(total) / static_cast<double>(n)) +
      " per event: every event reaches the 10 city-wide consumers, its kecamatan "
      "and its kelurahan, a move both ends)");
  t.notes.push_back(
      "acked deliveries/s: all deliveries / time from the first publish to the last delivery "
      "(each drain of a connection is acknowledged with one Ack); lag: deliveries not yet "
      "received when the last publish was acknowledged; broker lag: the sum of ListConsumers' "
      "lag after the drain (should be 0); broker CPU us/delivery: the broker's user + system CPU "
      "time (all threads, publishing included) from the first publish to the end of the drain, "
      "per delivery");
  return t;
}

}  // namespace kolabus::bench
