// Scenario a, publish: durable publish -> ACK throughput with 1 and 4 publishers and
// 1, 100, 1,000 requests in flight per publisher, each configuration against a
// fresh server of every system in turn (so that background noise falls on all).
#include <filesystem>

#include "scenarios.h"
#include "stats.h"

namespace kolabus::bench {

namespace {

struct Config {
  int publishers;
  std::uint32_t window;
};

std::string label_of(const Config& c) {
  return std::to_string(c.publishers) + (c.publishers == 1 ? " publisher" : " publishers") +
         ", window " + std::to_string(c.window);
}

}  // namespace

Table run_publish(BenchContext& ctx) {
  Table t;
  t.name = "publish";
  t.title = "durable publish -> ACK throughput, events/s (higher is better)";
  t.systems = ctx.systems;
  const std::vector<Config> configs =
      ctx.quick ? std::vector<Config>{{1, 1}, {1, 1000}, {4, 1000}}
                : std::vector<Config>{{1, 1}, {1, 100}, {1, 1000}, {4, 1}, {4, 100}, {4, 1000}};
  const std::uint64_t count = ctx.events != 0 ? ctx.events : ctx.quick ? 20000 : 200000;
  const std::string metric = "events/s";
  const std::string cpu_metric = "server CPU us/event";

  std::map<std::string, std::string> skipped;
  for (const auto& c : configs) {
    // With one request in flight a run is bounded by time, not by events.
    const auto max_time = std::chrono::milliseconds(c.window == 1 ? (ctx.quick ? 1000 : 5000)
                                                                  : (ctx.quick ? 3000 : 15000));
    const std::string label = label_of(c);
    for (const auto& name : ctx.systems) {
      if (skipped.contains(name)) {
        t.skip(label, metric, name, skipped[name]);
        continue;
      }
      std::string why;
      auto sys = ctx.make(name, &why);
      if (!sys) {
        skipped[name] = why;
        t.skip(label, metric, name, why);
        continue;
      }
      const std::string dir = ctx.fresh_dir("publish-" + name);
      if (Status st = sys->start(dir); !st) {
        ++ctx.failures;
        t.skip(label, metric, name, "failed: " + st.error().message);
        ctx.progress(name + ": " + st.error().message);
        continue;
      }
      auto perf = ctx.profile(
          *sys, "publish-" + std::to_string(c.publishers) + "p-w" + std::to_string(c.window));
      const auto cpu_before = read_cpu_seconds(sys->pid());
      auto r = publish_window(*sys, 0, count, c.publishers, c.window, max_time);
      const auto cpu_after = read_cpu_seconds(sys->pid());
      if (perf) perf->stop();
      sys->stop();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      if (!r) {
        ++ctx.failures;
        t.skip(label, metric, name, "failed: " + r.error().message);
        ctx.progress("publish " + label + " " + name + ": " + r.error().message);
        continue;
      }
      const double rate = static_cast<double>(r->acks.acked) / r->seconds;
      std::string note;
      if (r->acks.refused > 0) {
        ++ctx.failures;
        note = std::to_string(r->acks.refused) + " refused: " + r->acks.first_refusal;
      }
      if (r->acks.stalls > 0) {
        note += (note.empty() ? "" : "; ") + std::to_string(r->acks.stalls) +
                " times no acknowledgement came for 200 ms until the client sent PING (the server "
                "held stored messages' acks)";
      }
      t.set(label, metric, name, rate, note);
      if (cpu_before && cpu_after && r->acks.acked > 0) {
        t.set(label, cpu_metric, name,
              (*cpu_after - *cpu_before) * 1e6 / static_cast<double>(r->acks.acked));
      }
      ctx.progress("publish " + label + " " + name + ": " + human(rate) + " events/s (" +
                   std::to_string(r->acks.acked) + " in " + human(r->seconds) + " s)");
    }
  }
  t.notes.push_back("each figure: a fresh server and data directory; " + std::to_string(count) +
                    " events per run, or what is acknowledged within " +
                    (ctx.quick ? std::string("1 s (window 1) / 3 s") : "5 s (window 1) / 15 s"));
  t.notes.push_back(
      "window = requests in flight per publisher; each publisher is one connection on its own "
      "thread in the harness; events pre-encoded (kolabus and naive: the same Request frames)");
  t.notes.push_back(
      "server CPU us/event = the server process's user + system CPU time (all its threads, "
      "/proc/PID/stat) during the run, per acknowledged event: lower is better, and steadier "
      "than throughput on a shared machine");
  return t;
}

}  // namespace kolabus::bench
