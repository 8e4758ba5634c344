// Scenario e, start-up: how long a server takes from process start to its first
// answer, and how much memory it holds, with 1 M and 10 M events stored and 2,000
// consumers defined (quick: 100 k events, 200 consumers).
//
// The events are loaded once through the server at full speed into
// <work-dir>/startup-<system>; a later run with the same --work-dir asks the server
// how many it holds and loads only the rest (loading 10 M events takes minutes).
// Before each size is measured, every consumer is moved to the end of the log
// (caught up, as a city's offices normally are). Each size is measured over three
// restarts: the median start-up time, the resident memory (VmRSS) a second after
// the first answer (quick: 250 ms), and the peak (VmHWM).
#include <filesystem>
#include <thread>

#include "scenarios.h"
#include "stats.h"

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

constexpr int kRestarts = 3;
// Redis holds the whole stream in memory: beyond this it is not worth the RAM.
constexpr std::uint64_t kRedisMaxEvents = 2000000;

}  // namespace

Table run_startup(BenchContext& ctx) {
  Table t;
  t.name = "startup";
  t.title = "start-up (process start -> first answer) and resident memory";
  t.systems = ctx.systems;
  const std::uint64_t base = ctx.events != 0 ? ctx.events : ctx.quick ? 100000 : 1000000;
  const std::vector<std::uint64_t> sizes =
      ctx.quick ? std::vector<std::uint64_t>{base} : std::vector<std::uint64_t>{base, 10 * base};
  const std::uint64_t consumers = ctx.quick ? 200 : 2000;
  // How long after the first answer the memory is read.
  const auto settle = milliseconds(ctx.quick ? 250 : 1000);
  const std::vector<std::string> metrics = {"start-up ms", "VmRSS MB", "VmHWM MB", "load events/s"};
  auto label_of = [&](std::uint64_t size) {
    return human(static_cast<double>(size)) + " events, " + std::to_string(consumers) +
           " consumers";
  };

  for (const auto& name : ctx.systems) {
    auto skip_all = [&](const std::string& why) {
      for (auto size : sizes) {
        for (const auto& m : metrics) t.skip(label_of(size), m, name, why);
      }
    };
    std::string why;
    auto sys = ctx.make(name, &why);
    if (!sys) {
      skip_all(why);
      continue;
    }
    const std::string dir = ctx.work_dir + "/startup-" + name;
    bool failed = false;
    for (const auto size : sizes) {
      const std::string label = label_of(size);
      auto skip = [&](const std::string& w) {
        for (const auto& m : metrics) t.skip(label, m, name, w);
      };
      if (failed) {
        skip("failed: see above");
        continue;
      }
      for (const auto& m : metrics) t.row(label, m);  // rows in this order
      if (name == kRedis && size > kRedisMaxEvents) {
        skip("skipped: Redis keeps the whole stream in memory (about " +
             human(static_cast<double>(size) * ctx.pool->mean_event_bytes() * 1.3 / 1e9) + " GB)");
        continue;
      }
      auto fail = [&](const std::string& w) {
        ++ctx.failures;
        failed = true;
        skip("failed: " + w);
        ctx.progress("start-up " + name + ": " + w);
        sys->stop();
      };
      if (Status st = sys->start(dir); !st) {
        fail(st.error().message);
        continue;
      }
      auto stored = sys->stored_events();
      if (!stored) {
        fail(stored.error().message);
        continue;
      }
      if (*stored < size) {
        ctx.progress("start-up " + name + ": loading events " + std::to_string(*stored) + " to " +
                     std::to_string(size) + " (kept in " + dir + ")");
        const std::uint64_t from = *stored;
        auto r = publish_window(
            *sys, from, size - from, kLoadPublishers, 1000, std::nullopt, [&](std::uint64_t done) {
              ctx.progress("  " + std::to_string(from + done) + " of " + std::to_string(size));
            });
        if (!r) {
          fail(r.error().message);
          continue;
        }
        if (r->acks.refused > 0) {
          fail(std::to_string(r->acks.refused) + " refused: " + r->acks.first_refusal);
          continue;
        }
        ctx.progress("  loaded at " + human(static_cast<double>(size - from) / r->seconds) +
                     " events/s");
        t.set(label, "load events/s", name, static_cast<double>(size - from) / r->seconds);
      }
      // Every consumer caught up with the log, as a city's offices normally are.
      if (name != kNaive) {
        if (Status st = sys->define_consumers(0, consumers); !st) {
          fail(st.error().message);
          continue;
        }
      }
      sys->stop();

      std::vector<double> startup_ms, rss_mb;
      double hwm_mb = 0;
      for (int k = 0; k < kRestarts && !failed; ++k) {
        if (Status st = sys->start(dir); !st) {
          fail(st.error().message);
          break;
        }
        startup_ms.push_back(
            std::chrono::duration<double, std::milli>(sys->startup_time()).count());
        std::this_thread::sleep_for(settle);
        if (auto m = read_memory(sys->pid())) {
          rss_mb.push_back(static_cast<double>(m->rss_kb) / 1024);
          hwm_mb = std::max(hwm_mb, static_cast<double>(m->hwm_kb) / 1024);
        }
        sys->stop();
      }
      if (failed) continue;
      std::sort(startup_ms.begin(), startup_ms.end());
      std::sort(rss_mb.begin(), rss_mb.end());
      std::string note;
      if (name == kNaive) note = "no consumers (the naive loop has none)";
      t.set(label, "start-up ms", name, startup_ms[startup_ms.size() / 2], note);
      if (!rss_mb.empty()) {
        t.set(label, "VmRSS MB", name, rss_mb[rss_mb.size() / 2]);
        t.set(label, "VmHWM MB", name, hwm_mb);
      }
      ctx.progress("start-up " + name + " " + label + ": " +
                   human(startup_ms[startup_ms.size() / 2]) + " ms, RSS " +
                   (rss_mb.empty() ? "?" : human(rss_mb[rss_mb.size() / 2])) + " MB");
    }
  }
  t.notes.push_back(
      "start-up: median of " + std::to_string(kRestarts) +
      " restarts, from fork() to the first answer: kolabus and naive a Pong, jetstream the "
      "reply to $JS.API.STREAM.INFO, redis +PONG (not -LOADING); memory read from "
      "/proc/<pid>/status " +
      std::to_string(settle.count()) + " ms after that answer (VmRSS median, VmHWM max)");
  t.notes.push_back(
      "consumers: kolabus durable consumers filtered on a kelurahan, a kecamatan or the city "
      "in turn; jetstream durable pull consumers; redis consumer groups; all at the end of the "
      "log (caught up) before each measurement. Data kept in the work directory: a later run "
      "with --work-dir reuses it");
  t.notes.push_back(
      "load events/s: how fast the events up to that size were loaded through the "
      "server (" +
      std::to_string(kLoadPublishers) +
      " publishers, window 1000); none when a kept work directory had them");
  return t;
}

}  // namespace kolabus::bench
