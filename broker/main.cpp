// kolabus-broker: the broker process. See docs/OPERATIONS.md.
#include <csignal>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <broker/config.h>
#include <broker/consumers.h>
#include <broker/core.h>
#include <broker/server.h>
#include <schemas/regions.h>
#include <storage/rocksdb_broker_store.h>

namespace {

kolabus::broker::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server != nullptr) g_server->request_stop();
}

enum Exit { kOk = 0, kUsage = 1, kConfig = 2, kStorage = 3, kNetwork = 4 };

}  // namespace

int main(int argc, char** argv) {
  using namespace kolabus;
  CLI::App app{"kolabus-broker: durable message bus for population events"};
  std::string config_path, endpoint, data_dir, endpoint_file, log_level, regions_file;
  app.add_option("-c,--config", config_path, "broker.toml (every key optional)")
      ->check(CLI::ExistingFile);
  app.add_option("--endpoint", endpoint,
                 "ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:7400 (port * = any free port)");
  app.add_option("--data-dir", data_dir, "directory of the RocksDB event log");
  app.add_option("--regions-file", regions_file,
                 "Kemendagri region list (code,name,level CSV); default: the compiled-in list");
  app.add_option("--endpoint-file", endpoint_file,
                 "write the bound endpoint to this file once the broker serves");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.set_version_flag("--version", KOLABUS_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;  // --help and --version exit 0
  }

  broker::Config config;
  if (!config_path.empty()) {
    auto loaded = broker::load_config(config_path);
    if (!loaded) {
      spdlog::error("{}", loaded.error().message);
      return kConfig;
    }
    config = std::move(*loaded);
  }
  if (!endpoint.empty()) config.server.endpoint = endpoint;
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!log_level.empty()) config.log_level = log_level;
  if (!regions_file.empty()) config.regions_file = regions_file;

  const auto level = spdlog::level::from_str(config.log_level);
  if (level == spdlog::level::off && config.log_level != "off") {
    spdlog::error("unknown log level '{}'", config.log_level);
    return kConfig;
  }
  spdlog::set_level(level);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  std::optional<schemas::RegionTable> loaded_regions;
  if (!config.regions_file.empty()) {
    auto r = schemas::RegionTable::load_file(config.regions_file);
    if (!r) {
      spdlog::error("region list: {}", r.error().message);
      return kConfig;
    }
    loaded_regions.emplace(std::move(*r));
  }
  const schemas::RegionTable& regions =
      loaded_regions ? *loaded_regions : schemas::RegionTable::embedded();

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    spdlog::error("cannot create data directory {}: {}", config.data_dir, ec.message());
    return kStorage;
  }
  auto store = storage::open_rocksdb_broker_store(config.data_dir);
  if (!store) {
    spdlog::error("cannot open the event log in {}: {}", config.data_dir,
                  store.error().to_string());
    return kStorage;
  }

  SystemClock clock;
  broker::Core core(*store->log, regions, clock, {config.max_clock_skew_ms});
  broker::Consumers consumers(*store->log, *store->consumers, regions, clock,
                              {.client_timeout_ms = config.client_timeout_ms});
  if (Status st = consumers.load(); !st) {
    spdlog::error("cannot load the consumers in {}: {}", config.data_dir, st.error().to_string());
    return kStorage;
  }
  broker::Server server(core, consumers, config.server);
  auto bound = server.bind();
  if (!bound) {
    spdlog::error("{}", bound.error().message);
    return kNetwork;
  }
  spdlog::info("kolabus-broker {} serving on {}", KOLABUS_VERSION, *bound);
  spdlog::info("event log {} (next sequence {}), {} consumers, {} region codes ({})",
               config.data_dir, core.next_sequence().value, consumers.list().size(), regions.size(),
               config.regions_file.empty() ? "compiled-in Kemendagri list" : config.regions_file);
  spdlog::warn(
      "development mode: no CURVE authentication yet; every event is recorded as from agency "
      "'{}'",
      config.server.dev_agency);

  if (!endpoint_file.empty()) {
    // Written atomically, so a waiting script never reads half an endpoint.
    const std::string tmp = endpoint_file + ".tmp";
    std::ofstream(tmp) << *bound << "\n";
    std::filesystem::rename(tmp, endpoint_file, ec);
    if (ec) {
      spdlog::error("cannot write {}: {}", endpoint_file, ec.message());
      return kUsage;
    }
  }

  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  server.run();
  g_server = nullptr;
  return kOk;
}
