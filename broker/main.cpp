// kolabus-broker: the broker process. See docs/OPERATIONS.md.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <broker/agencies.h>
#include <broker/audit.h>
#include <broker/config.h>
#include <broker/consumers.h>
#include <broker/core.h>
#include <broker/server.h>
#include <common/keys.h>
#include <common/private_files.h>
#include <schemas/regions.h>
#include <storage/rocksdb_broker_store.h>

namespace {

kolabus::broker::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server != nullptr) g_server->request_stop();
}

void on_hangup(int) {
  if (g_server != nullptr) g_server->request_reload();
}

// Development mode carries population data unencrypted and unauthenticated: only
// ever on this machine. A ZeroMQ endpoint may hold several addresses separated by ';'
// (ZeroMQ binds the last): every one must be loopback, written as an address, never a
// name a resolver could map elsewhere (only "localhost" itself).
bool loopback_host(std::string_view hostport) {
  const auto colon = hostport.rfind(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view host = hostport.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  // Four decimal octets, the first 127, none with a leading zero: a resolver reads
  // "0127.0.0.1" as octal (87.0.0.1), and "127.1" as 127.0.0.1 only by convention.
  std::vector<std::string_view> octets;
  for (std::size_t start = 0;;) {
    const auto dot = host.find('.', start);
    octets.push_back(host.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (octets.size() != 4) return false;
  for (std::size_t k = 0; k < 4; ++k) {
    const std::string_view o = octets[k];
    if (o.empty() || o.size() > 3 || (o.size() > 1 && o[0] == '0') ||
        o.find_first_not_of("0123456789") != std::string_view::npos) {
      return false;
    }
    if (std::stoi(std::string(o)) > 255) return false;
    if (k == 0 && o != "127") return false;
  }
  return true;
}

bool loopback_only(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) {
    return endpoint.find(';') == std::string::npos;
  }
  const std::string tcp = "tcp://";
  if (endpoint.rfind(tcp, 0) != 0) return false;
  std::string_view rest(endpoint);
  rest.remove_prefix(tcp.size());
  while (true) {
    const auto semi = rest.find(';');
    if (!loopback_host(rest.substr(0, semi))) return false;
    if (semi == std::string_view::npos) return true;
    rest.remove_prefix(semi + 1);
  }
}

// Whether `path` is inside the directory `dir` (after resolving both).
bool inside(const std::string& path, const std::string& dir) {
  std::error_code ec;
  const auto p = std::filesystem::weakly_canonical(path, ec);
  if (ec) return false;
  const auto d = std::filesystem::weakly_canonical(dir, ec);
  if (ec) return false;
  const auto rel = p.lexically_relative(d);
  return !rel.empty() && *rel.begin() != "..";
}

enum Exit { kOk = 0, kUsage = 1, kConfig = 2, kStorage = 3, kNetwork = 4 };

}  // namespace

int main(int argc, char** argv) {
  using namespace kolabus;
  // Everything the broker writes (the event log, the audit key, the endpoint file) is
  // its owner's only: files 0600, directories 0700, whatever umask it was started with.
  ::umask(077);
  CLI::App app{"kolabus-broker: durable message bus for population events"};
  std::string config_path, endpoint, data_dir, endpoint_file, log_level, regions_file, key_file,
      agencies_file, audit_key_file;
  bool dev = false, new_audit_key = false;
  std::optional<std::uint64_t> disk_reserve;
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
  app.add_option("--key", key_file, "the broker's CURVE key pair (kolabus keygen broker)");
  app.add_option("--agencies", agencies_file,
                 "the agency registry: keys and grants (reloaded on SIGHUP)");
  app.add_option("--audit-key", audit_key_file,
                 "the audit chain's NIK key (security.audit_key_file; made on first start). "
                 "Default: audit.key beside --key; in development mode, in the data directory. "
                 "An audit.key found in the data directory is moved here");
  app.add_flag("--new-audit-key", new_audit_key,
               "start a new audit key although the audit chain has records: only when the old "
               "one is lost for good (`kolabus audit person` then misses the events before)");
  app.add_option("--disk-reserve-bytes", disk_reserve,
                 "publishes are refused while less is free on the log's disk (default 64 MiB; "
                 "0: no reserve)");
  app.add_flag("--dev", dev,
               "development mode: no CURVE, every client may do everything; loopback only");
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
  if (disk_reserve) config.server.disk_reserve_bytes = *disk_reserve;
  if (!log_level.empty()) config.log_level = log_level;
  if (dev) config.dev = true;
  if (!key_file.empty()) config.key_file = key_file;
  if (!agencies_file.empty()) config.agencies_file = agencies_file;
  if (!audit_key_file.empty()) config.audit_key_file = audit_key_file;
  config.server.dev = config.dev;
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
  // 0700: only the broker's user may enter (an older release made it 0755: narrowed).
  auto made = make_private_dir(config.data_dir);
  if (!made) {
    spdlog::error("data directory: {}", made.error().message);
    return kStorage;
  }
  if (made->widened) {
    spdlog::warn("{}", narrowed_text("data directory", config.data_dir, *made->widened));
  }
  auto store = storage::open_rocksdb_broker_store(config.data_dir);
  if (!store) {
    spdlog::error("cannot open the event log in {}: {}", config.data_dir,
                  store.error().to_string());
    return kStorage;
  }

  // Security: CURVE with the agency registry, unless development mode is asked for.
  std::shared_ptr<const broker::Agencies> agencies;
  if (config.dev) {
    if (!loopback_only(config.server.endpoint)) {
      spdlog::error(
          "--dev is refused on {}: development mode has no encryption nor "
          "authentication, so it only listens on 127.0.0.1, localhost, [::1] or ipc",
          config.server.endpoint);
      return kConfig;
    }
  } else {
    if (config.key_file.empty() || config.agencies_file.empty()) {
      spdlog::error(
          "CURVE needs the broker's key (--key or security.key_file; make one with "
          "`kolabus keygen broker`) and the agency registry (--agencies or "
          "security.agencies_file); or run with --dev on a loopback endpoint");
      return kConfig;
    }
    auto keys = load_key_pair(config.key_file);
    if (!keys) {
      spdlog::error("{}", keys.error().message);
      return kConfig;
    }
    config.server.curve_secret_key = keys->secret_key;
    auto registry = broker::Agencies::load(config.agencies_file, regions);
    if (!registry) {
      spdlog::error("{}", registry.error().message);
      return kConfig;
    }
    agencies = std::make_shared<const broker::Agencies>(std::move(*registry));
    spdlog::info("CURVE on; broker public key {}; {} agencies in {}", keys->public_key,
                 agencies->size(), config.agencies_file);
  }

  SystemClock clock;
  broker::Core core(*store->log, regions, clock, {config.max_clock_skew_ms});
  broker::Consumers consumers(*store->log, *store->consumers, regions, clock,
                              {.client_timeout_ms = config.client_timeout_ms});
  if (Status st = consumers.load(); !st) {
    spdlog::error("cannot load the consumers in {}: {}", config.data_dir, st.error().to_string());
    return kStorage;
  }
  // The audit chain's NIK key: never in the chain, and not in the data directory when
  // the broker has keys (docs/OPERATIONS.md, "Keys"). Releases before kept it there: it
  // is moved out once, the same key, so the chain's NIK hashes stay continuous.
  const auto key_path = broker::audit_key_path(config);
  const auto old_key_path = (std::filesystem::path(config.data_dir) / "audit.key").string();
  const std::uint64_t chain_records = store->log->audit().head().index;
  auto nik_key = broker::open_nik_key(key_path, old_key_path, chain_records == 0 || new_audit_key);
  if (!nik_key) {
    if (nik_key.error().code == Errc::kNotFound) {
      spdlog::error(
          "{}, but the audit chain in {} has {} records, whose NIK hashes were made with it. "
          "Give its place (--audit-key or security.audit_key_file) or restore it from the "
          "backup of the broker's keys; only if it is lost for good, --new-audit-key starts "
          "a new one (`kolabus audit person` will not find the events recorded before)",
          nik_key.error().message, config.data_dir, chain_records);
      return kConfig;
    }
    spdlog::error("audit key: {}", nik_key.error().message);
    return nik_key.error().code == Errc::kIoError ? kStorage : kConfig;
  }
  switch (nik_key->origin) {
    case broker::NikKeyFile::Origin::kMoved:
      spdlog::warn(
          "audit key moved from {} to {} (the same key: the chain's NIK hashes stay "
          "continuous); the data directory no longer holds it: back it up with the broker's "
          "keys, not with the data",
          old_key_path, key_path);
      break;
    case broker::NikKeyFile::Origin::kCreated:
      if (chain_records > 0) {
        spdlog::warn(
            "audit key {} made new (--new-audit-key): the chain's {} earlier records "
            "cannot be matched to a NIK any more",
            key_path, chain_records);
      }
      break;
    case broker::NikKeyFile::Origin::kLoaded:
      break;
  }
  if (nik_key->removed_old_copy) {
    spdlog::info("removed {}, a copy of the audit key {} left by an interrupted move", old_key_path,
                 key_path);
  }
  const char* origin =
      nik_key->origin == broker::NikKeyFile::Origin::kCreated ? "made now" : "loaded";
  if (!inside(key_path, config.data_dir)) {
    spdlog::info("audit key {} ({}; outside the data directory: back it up with the keys)",
                 key_path, origin);
  } else if (config.dev) {
    spdlog::info("audit key {} ({}; development mode: in the data directory)", key_path, origin);
  } else {
    spdlog::warn(
        "audit key {} ({}) is inside the data directory {}: a copy of the data alone then "
        "turns the chain's NIK hashes back into NIKs; keep it beside the broker's key",
        key_path, origin, config.data_dir);
  }
  broker::Audit audit(store->log->audit(), clock, nik_key->key);
  config.server.data_dir = config.data_dir;
  broker::Server server(core, consumers, config.server);
  server.set_audit(&audit);
  server.set_storage_recovery(store->resume_writes);
  server.set_agencies(agencies);
  server.set_reload_handler([&]() -> Result<std::shared_ptr<const broker::Agencies>> {
    if (config.dev) {
      return unexpected(Errc::kInvalidArgument,
                        "development mode has no agency registry to reload");
    }
    auto fresh = broker::Agencies::load(config.agencies_file, regions);
    if (!fresh) {
      spdlog::error("agency registry not reloaded, the old one stays: {}", fresh.error().message);
      return unexpected(fresh.error());
    }
    spdlog::info("agency registry reloaded: {} agencies", fresh->size());
    return std::make_shared<const broker::Agencies>(std::move(*fresh));
  });
  auto bound = server.bind();
  if (!bound) {
    spdlog::error("{}", bound.error().message);
    return kNetwork;
  }
  spdlog::info("kolabus-broker {} serving on {}", KOLABUS_VERSION, *bound);
  spdlog::info(
      "event log {} (next sequence {}), audit chain of {} records, {} consumers, {} "
      "region codes ({})",
      config.data_dir, core.next_sequence().value, store->log->audit().head().index,
      consumers.size(), regions.size(),
      config.regions_file.empty() ? "compiled-in Kemendagri list" : config.regions_file);
  if (config.dev) {
    spdlog::warn(
        "DEVELOPMENT MODE: no encryption, no authentication, no authorisation; every "
        "client may do everything and every event is recorded as from agency '{}'. "
        "Never use it with real population data.",
        config.server.dev_agency);
  }

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
  std::signal(SIGHUP, on_hangup);
  server.run();
  g_server = nullptr;
  return kOk;
}
