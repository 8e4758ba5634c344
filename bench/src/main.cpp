// kolabus-bench: the benchmark harness of issue 6. Starts kolabus-broker and the
// reference servers on 127.0.0.1 (ports chosen at run time), measures the scenarios
// and prints one table per scenario with the ratios kolabus/reference; --json
// writes the same as JSON. See bench/README.md.
//
// `kolabus-bench serve-naive ...` (hidden) is the naive reference server.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <unistd.h>
#include <zmq.hpp>

#include "events.h"
#include "naive_server.h"
#include "process.h"
#include "report.h"
#include "scenarios.h"
#include "stats.h"
#include <schemas/regions.h>

namespace {

using namespace kolabus;
using namespace kolabus::bench;

struct Scenario {
  const char* name;
  Table (*run)(BenchContext&);
};

constexpr Scenario kScenarios[] = {
    {"publish", run_publish}, {"latency", run_latency}, {"catchup", run_catchup},
    {"fanout", run_fanout},   {"startup", run_startup}, {"isolation", run_isolation},
};
const std::vector<std::string> kSystems = {kKolabus, kNaive, kJetStream, kRedis};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_./=,:@+") == std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool executable(const std::string& p) { return ::access(p.c_str(), X_OK) == 0; }

std::string resolve_broker(const std::string& given) {
  if (!given.empty()) return given;
  const std::string self = self_directory();
  for (const std::string& p : {self + "/kolabus-broker", self + "/../broker/kolabus-broker"}) {
    if (executable(p)) return std::filesystem::weakly_canonical(p).string();
  }
#ifdef KOLABUS_BROKER_BIN
  if (executable(KOLABUS_BROKER_BIN)) return KOLABUS_BROKER_BIN;
#endif
  return find_program("kolabus-broker").value_or("");
}

// The first line a program prints for `--version`, or "".
std::string version_of(const std::string& program) {
  const std::string cmd = shell_quote(program) + " --version 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {};
  char buf[256] = {};
  std::string line = std::fgets(buf, sizeof buf, p) != nullptr ? buf : "";
  ::pclose(p);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "kolabus-bench: measures kolabus against a naive ZeroMQ+RocksDB loop, NATS JetStream and "
      "Redis Streams on this machine (see bench/README.md)"};
  bool quick = false;
  std::string only, systems_arg, json_file, work_dir, broker, perf_dir;
  std::uint64_t events = 0, seed = 1;
  int latency_rounds = 0;
  std::vector<std::uint64_t> latency_rates;
  app.add_flag("--quick", quick, "CI-sized run (well under a minute) instead of the full one");
  app.add_option("--only", only,
                 "scenarios to run, comma-separated: publish,latency,catchup,fanout,startup,"
                 "isolation (default: all)");
  app.add_option("--systems", systems_arg,
                 "systems to measure, comma-separated: kolabus,naive,jetstream,redis (default: "
                 "all; those not installed are skipped)");
  app.add_option("--events", events,
                 "override each scenario's main event count (events per publish run, per "
                 "latency rate, stored for catch-up, published in fan-out, the smaller start-up "
                 "size)");
  app.add_option("--latency-rounds", latency_rounds,
                 "rounds of the latency scenario, the systems taking turns; each figure is "
                 "the median of its rounds (default: 3, or 1 with --quick)")
      ->check(CLI::Range(1, 99));
  app.add_option("--latency-rates", latency_rates,
                 "rates of the latency scenario, events/s, comma-separated (default: "
                 "1000,5000,20000, or 5000 with --quick)")
      ->delimiter(',')
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}));
  app.add_option("--json", json_file, "also write the results as JSON to this file");
  app.add_option("--work-dir", work_dir,
                 "where servers keep their data (kept afterwards, and start-up data reused); "
                 "default: a temporary directory under /tmp, removed afterwards");
  app.add_option("--broker", broker,
                 "the kolabus-broker to measure (default: next to kolabus-bench, or the build "
                 "tree's)");
  app.add_option("--perf", perf_dir,
                 "record the broker with `perf record --call-graph dwarf` into this directory")
      ->group("Profiling");
  app.add_option("--seed", seed, "seed of the event generator");
  std::uint32_t delivery_batch = 128;
  app.add_option("--delivery-batch", delivery_batch,
                 "kolabus consumers in catch-up and fan-out ask for this many deliveries per "
                 "message (Subscribe.batch; 1: one Delivery per message, as clients before "
                 "batching)")
      ->capture_default_str();

  auto* naive = app.add_subcommand("serve-naive", "the naive reference server (internal)");
  naive->group("");  // hidden
  NaiveServerOptions naive_options;
  naive->add_option("--port", naive_options.port)->required();
  naive->add_option("--pub-port", naive_options.pub_port);
  naive->add_option("--dir", naive_options.dir)->required();
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);
  if (*naive) return run_naive_server(naive_options);

  std::vector<std::string> scenarios;
  for (const auto& s : only.empty() ? std::vector<std::string>{} : split_list(only)) {
    bool known = false;
    for (const auto& k : kScenarios) known = known || s == k.name;
    if (!known) {
      std::cerr << "kolabus-bench: unknown scenario '" << s
                << "' (publish, latency, catchup, fanout, startup)\n";
      return 1;
    }
    scenarios.push_back(s);
  }
  if (scenarios.empty()) {
    for (const auto& k : kScenarios) scenarios.emplace_back(k.name);
  }
  std::vector<std::string> systems;
  const auto wanted = systems_arg.empty() ? kSystems : split_list(systems_arg);
  for (const auto& s : kSystems) {  // column order, kolabus first
    if (std::find(wanted.begin(), wanted.end(), s) != wanted.end()) systems.push_back(s);
  }
  for (const auto& s : wanted) {
    if (std::find(kSystems.begin(), kSystems.end(), s) == kSystems.end()) {
      std::cerr << "kolabus-bench: unknown system '" << s
                << "' (kolabus, naive, jetstream, redis)\n";
      return 1;
    }
  }

  Paths paths;
  paths.broker = resolve_broker(broker);
  if (paths.broker.empty() || !executable(paths.broker)) {
    std::cerr << "kolabus-bench: kolabus-broker not found; give it with --broker PATH\n";
    return 1;
  }
  paths.self = std::filesystem::read_symlink("/proc/self/exe").string();
  paths.nats = find_program("nats-server");
  paths.redis = find_program("redis-server");

  // The work directory exists before the interrupt handler, which removes it.
  bool temporary = work_dir.empty();
  if (temporary) {
    char tmpl[] = "/tmp/kolabus-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::perror("kolabus-bench: mkdtemp");
      return 1;
    }
    work_dir = tmpl;
  } else {
    std::error_code ec;
    std::filesystem::create_directories(work_dir, ec);
    if (ec) {
      std::cerr << "kolabus-bench: cannot create " << work_dir << ": " << ec.message() << "\n";
      return 1;
    }
    work_dir = std::filesystem::canonical(work_dir).string();
  }
  auto cleanup = [work_dir, temporary] {
    if (!temporary) return;
    std::error_code ec;
    std::filesystem::remove_all(work_dir, ec);
  };
  // Before any thread exists (the zmq context starts some).
  install_interrupt_handler(cleanup);

  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + shell_quote(argv[i]);

  const auto gen_start = SteadyClock::now();
  EventPool::Options pool_options;
  pool_options.seed = seed;
  pool_options.distinct = 20000;
  const EventPool pool = EventPool::generate(schemas::RegionTable::embedded(), pool_options);

  Report report;
  report.set_header("date", now_iso8601());
  report.set_header("command", command);
  report.set_header("mode", quick ? "quick" : "full");
  report.set_header("machine", machine_info());
  nlohmann::json ev;
  ev["mean_event_bytes"] = std::round(pool.mean_event_bytes() * 10) / 10;
  ev["mean_publish_frame_bytes"] = std::round(pool.mean_frame_bytes() * 10) / 10;
  ev["distinct"] = pool.distinct();
  ev["source"] = "tools::EventGenerator (Medan 12.71), padded with realistic addresses";
  report.set_header("events", ev);
  nlohmann::json programs;
  programs["kolabus-broker"] = paths.broker;
  programs["nats-server"] =
      paths.nats ? *paths.nats + " (" + version_of(*paths.nats) + ")" : "not installed";
  programs["redis-server"] =
      paths.redis ? *paths.redis + " (" + version_of(*paths.redis) + ")" : "not installed";
  report.set_header("programs", programs);
  report.set_header("work_dir", work_dir + (temporary ? " (temporary)" : ""));
  report.print_header();
  std::cerr << "  events generated in " << human(seconds_between(gen_start, SteadyClock::now()))
            << " s\n";

  zmq::context_t zmq(1);
  BenchContext ctx;
  ctx.quick = quick;
  ctx.latency_rounds = latency_rounds;
  ctx.latency_rates = latency_rates;
  ctx.events = events;
  ctx.delivery_batch = delivery_batch;
  ctx.work_dir = work_dir;
  if (!perf_dir.empty()) ctx.perf_dir = std::filesystem::absolute(perf_dir).string();
  ctx.paths = paths;
  ctx.systems = systems;
  ctx.pool = &pool;
  ctx.zmq = &zmq;
  ctx.report = &report;

  for (const auto& name : scenarios) {
    for (const auto& s : kScenarios) {
      if (name != s.name) continue;
      std::cerr << "[" << name << "]" << std::endl;
      const auto started = SteadyClock::now();
      try {
        Table t = s.run(ctx);
        std::cerr << "[" << name << "] " << human(seconds_between(started, SteadyClock::now()))
                  << " s" << std::endl;
        report.print_table(t);
        report.add(std::move(t));
      } catch (const std::exception& e) {
        ++ctx.failures;
        std::cerr << "kolabus-bench: scenario " << name << " failed: " << e.what() << "\n";
        Table t;
        t.name = name;
        t.title = "failed";
        t.notes.push_back(std::string("failed: ") + e.what());
        report.add(std::move(t));
      }
    }
  }
  report.print_durability();
  if (!json_file.empty()) {
    std::ofstream out(json_file);
    out << report.to_json().dump(2) << "\n";
    if (!out) {
      std::cerr << "kolabus-bench: cannot write " << json_file << "\n";
      ++ctx.failures;
    }
  }
  cleanup();
  if (ctx.failures > 0) {
    std::cerr << "kolabus-bench: " << ctx.failures << " measurement(s) failed (see above)\n";
    return 2;
  }
  return 0;
}
