// kolabus-crash-suite: the broker, publishers with outboxes and consumers with inboxes
// under SIGKILLs, then a check of what was ACKed, stored and handled. See README.md.
//
// The same binary is the publisher and consumer processes (hidden subcommands), so
// the orchestrator can kill them like the broker.
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>

#include <CLI/CLI.hpp>

#include "crash_suite.h"

int main(int argc, char** argv) {
  using namespace kolabus::crash;
  CLI::App app{
      "kolabus-crash-suite: a broker, publishers and consumers under SIGKILL; then checks that "
      "nothing ACKed is lost, nothing is stored twice and each handler saw each of its events "
      "once"};
  SuiteOptions suite;
  suite.broker_bin = KOLABUS_BROKER_BIN;
  std::optional<std::uint64_t> seed;
  app.add_option("--seed", seed, "the run's seed (default: random; always printed)");
  app.add_option("--kills", suite.kills, "broker SIGKILLs")->capture_default_str();
  app.add_option("--client-kills", suite.client_kills,
                 "publisher and consumer SIGKILLs (default: as many as --kills)");
  app.add_option("--publishers", suite.publishers, "publisher processes")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--consumers", suite.consumers, "consumer processes, each its own filter")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--events", suite.events, "events per publisher")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000000));
  app.add_option("--spread-ms", suite.spread_ms,
                 "publishers pace their batches over this long (default: 1000 per kill)");
  app.add_option("--timeout", suite.timeout_s,
                 "seconds for the whole run before it counts as hung (default: 120 + 5 per kill)");
  app.add_option("--settle", suite.settle_s,
                 "seconds the consumers get to catch up after the last kill")
      ->capture_default_str();
  app.add_option("--work-dir", suite.work_dir,
                 "where the run's data goes (absent or empty; default: a fresh temp dir)");
  app.add_flag("--keep", suite.keep, "keep the work directory when a check fails");
  app.add_flag("-v,--verbose", suite.verbose, "a line per kill");
  app.add_option("--broker-bin", suite.broker_bin, "the kolabus-broker to test")
      ->capture_default_str();

  PublisherArgs pub;
  auto* publisher = app.add_subcommand("publisher", "(internal) one publisher process");
  publisher->group("");
  publisher->add_option("--dir", pub.dir)->required();
  publisher->add_option("--broker", pub.broker)->required();
  publisher->add_option("--id", pub.id)->required();
  publisher->add_option("--seed", pub.seed)->required();
  publisher->add_option("--events", pub.events)->required();
  publisher->add_option("--now-ms", pub.now_ms)->required();
  publisher->add_option("--start-ms", pub.start_ms)->required();
  publisher->add_option("--spread-ms", pub.spread_ms)->required();
  publisher->add_option("--window", pub.window)->required();

  ConsumerArgs con;
  auto* consumer = app.add_subcommand("consumer", "(internal) one consumer process");
  consumer->group("");
  consumer->add_option("--dir", con.dir)->required();
  consumer->add_option("--broker", con.broker)->required();
  consumer->add_option("--name", con.name)->required();
  consumer->add_option("--kind", con.kinds);
  consumer->add_option("--region", con.regions);
  consumer->add_option("--window", con.window)->required();
  consumer->add_option("--fail-permille", con.fail_permille);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*publisher) return run_publisher(pub);
  if (*consumer) return run_consumer(con);

  suite.seed = seed ? *seed : [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32 | rd()) % 1000000000000ULL;
  }();
  std::error_code ec;
  suite.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) suite.self_exe = argv[0];
  return run_suite(suite);
}
