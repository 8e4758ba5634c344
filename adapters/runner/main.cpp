// kolabus-adapter: hosts an agency's adapters (spool source, HTTP gateway, webhook
// sink, ward register) in one process, configured by agency.toml.
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <regex>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <adapters/adapter.h>
#include <adapters/gateway.h>
#include <adapters/spool.h>
#include <adapters/ward.h>
#include <adapters/webhook.h>
#include <common/keys.h>
#include <common/private_files.h>

namespace {

using namespace kolabus;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

enum Exit { kOk = 0, kUsage = 1, kConfig = 2, kStorage = 3, kStart = 4 };

// `${NAME}` in any string of the file is replaced by the environment variable NAME
// (an error if it is not set), so that ports, URLs and secrets need not be written
// into the file.
Status expand_env(toml::node& node, const std::string& path) {
  if (auto* t = node.as_table()) {
    for (auto& [k, v] : *t) {
      if (auto st = expand_env(v, path + "." + std::string(k.str())); !st) return st;
    }
  } else if (auto* a = node.as_array()) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      if (auto st = expand_env((*a)[i], path + "[" + std::to_string(i) + "]"); !st) return st;
    }
  } else if (auto* s = node.as_string()) {
    static const std::regex var(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\})");
    std::string in = s->get(), out;
    std::smatch m;
    while (std::regex_search(in, m, var)) {
      const char* value = std::getenv(m[1].str().c_str());
      if (value == nullptr) {
        return unexpected(Errc::kInvalidArgument,
                          path.substr(1) + ": environment variable " + m[1].str() + " is not set");
      }
      out += m.prefix().str() + value;
      in = m.suffix().str();
    }
    *s = out + in;
  }
  return {};
}

struct Loaded {
  toml::table root;
  adapters::AgencyContext ctx;
};

Result<Loaded> load(const std::string& path, const std::string& broker_override) {
  Loaded l;
  try {
    l.root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return unexpected(Errc::kInvalidArgument, path + ": line " +
                                                  std::to_string(e.source().begin.line) + ": " +
                                                  std::string(e.description()));
  }
  if (auto st = expand_env(l.root, ""); !st) {
    return unexpected(Errc::kInvalidArgument, path + ": " + st.error().message);
  }
  for (const auto& [k, v] : l.root) {
    const std::string key(k.str());
    if (key != "agency" && key != "log" && key != "spool" && key != "gateway" && key != "webhook" &&
        key != "ward") {
      return unexpected(Errc::kInvalidArgument, path + ": unknown section '" + key + "'");
    }
  }
  const auto* agency = l.root["agency"].as_table();
  if (agency == nullptr) return unexpected(Errc::kInvalidArgument, path + ": [agency] is required");
  for (const auto& [k, v] : *agency) {
    const std::string key(k.str());
    if (key != "name" && key != "broker" && key != "data_dir" && key != "key" &&
        key != "server_key") {
      return unexpected(Errc::kInvalidArgument, path + ": unknown key 'agency." + key + "'");
    }
  }
  l.ctx.agency = agency->get("name") ? agency->get("name")->value_or(std::string()) : "";
  if (l.ctx.agency.empty()) {
    return unexpected(Errc::kInvalidArgument, path + ": agency.name is required");
  }
  l.ctx.broker = (*agency)["broker"].value_or(std::string("tcp://127.0.0.1:7400"));
  if (!broker_override.empty()) l.ctx.broker = broker_override;
  l.ctx.data_dir = (*agency)["data_dir"].value_or("var/adapters/" + l.ctx.agency);
  // CURVE: this agency's key pair and the broker's public key, both or neither.
  const std::string key = (*agency)["key"].value_or(std::string());
  const std::string server_key = (*agency)["server_key"].value_or(std::string());
  if (key.empty() != server_key.empty()) {
    return unexpected(Errc::kInvalidArgument,
                      path +
                          ": agency.key and agency.server_key go together (CURVE), or "
                          "neither (a --dev broker)");
  }
  if (!key.empty()) {
    auto pair = load_key_pair(key);
    if (!pair)
      return unexpected(Errc::kInvalidArgument, path + ": agency.key: " + pair.error().message);
    auto server = load_public_key(server_key);
    if (!server) {
      return unexpected(Errc::kInvalidArgument,
                        path + ": agency.server_key: " + server.error().message);
    }
    l.ctx.curve = client::CurveOptions{*server, *pair};
  }
  return l;
}

// Calls fn(kind, table) for every adapter entry, in file order per kind.
template <typename F>
Status each_entry(const toml::table& root, const std::string& path, F fn) {
  for (const char* kind : {"spool", "gateway", "webhook", "ward"}) {
    const toml::node* node = root.get(kind);
    if (node == nullptr) continue;
    const auto* arr = node->as_array();
    if (arr == nullptr) {
      return unexpected(Errc::kInvalidArgument,
                        path + ": " + kind + " must be an array of tables ([[" + kind + "]])");
    }
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const auto* t = (*arr)[i].as_table();
      if (t == nullptr) {
        return unexpected(Errc::kInvalidArgument,
                          path + ": " + kind + "[" + std::to_string(i) + "] must be a table");
      }
      if (auto st = fn(std::string(kind), i, *t); !st) return st;
    }
  }
  return {};
}

adapters::Factory factory_of(const std::string& kind) {
  if (kind == "spool") return &adapters::make_spool;
  if (kind == "gateway") return &adapters::make_gateway;
  if (kind == "webhook") return &adapters::make_webhook;
  return &adapters::make_ward;
}

int run(const std::string& config, const std::string& broker) {
  auto loaded = load(config, broker);
  if (!loaded) {
    spdlog::error("{}", loaded.error().message);
    return kConfig;
  }
  // Named references, not a structured binding: the lambdas below capture them,
  // which clang before 16 refuses for structured bindings.
  toml::table& root = loaded->root;
  adapters::AgencyContext& ctx = loaded->ctx;
  // The agency's state (outbox, inboxes, registers): 0700, narrowed if an older
  // release left it open to others.
  auto made = make_private_dir(ctx.data_dir);
  if (!made) {
    spdlog::error("data_dir: {}", made.error().message);
    return kStorage;
  }
  if (made->widened) {
    spdlog::warn("{}", narrowed_text("data_dir", ctx.data_dir, *made->widened));
  }

  // One outbox per agency, shared by its sources.
  const bool has_source = root.get("spool") != nullptr || root.get("gateway") != nullptr;
  adapters::OutcomeHub hub;
  std::unique_ptr<client::Publisher> publisher;
  if (has_source) {
    client::PublisherOptions po;
    po.endpoint = ctx.broker;
    po.outbox_dir = ctx.data_dir + "/outbox";
    po.curve = ctx.curve;
    auto p = client::Publisher::open(po, [&hub](const client::Outcome& o) { hub.notify(o); });
    if (!p) {
      spdlog::error("cannot open the outbox {}: {}", po.outbox_dir, p.error().to_string());
      return kStorage;
    }
    publisher = std::move(*p);
    ctx.publisher = publisher.get();
    ctx.outcomes = &hub;
  }

  std::vector<std::unique_ptr<adapters::Adapter>> running;
  Status built = each_entry(
      root, config, [&](const std::string& kind, std::size_t i, const toml::table& t) -> Status {
        auto a = factory_of(kind)(t, ctx);
        if (!a) {
          return unexpected(Errc::kInvalidArgument, config + ": " + kind + "[" + std::to_string(i) +
                                                        "]: " + a.error().message);
        }
        running.push_back(std::move(*a));
        return {};
      });
  if (!built) {
    spdlog::error("{}", built.error().message);
    return kConfig;
  }
  if (running.empty()) {
    spdlog::error("{}: no adapter configured ([[spool]], [[gateway]], [[webhook]], [[ward]])",
                  config);
    return kConfig;
  }
  hub.open();
  spdlog::info("kolabus-adapter for agency '{}', broker {}, state in {}", ctx.agency, ctx.broker,
               ctx.data_dir);
  for (std::size_t i = 0; i < running.size(); ++i) {
    if (auto st = running[i]->start(); !st) {
      spdlog::error("cannot start {}: {}", running[i]->describe(), st.error().to_string());
      for (std::size_t k = i; k-- > 0;) running[k]->stop();
      return kStart;
    }
    spdlog::info("started {}", running[i]->describe());
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto last_report = std::chrono::steady_clock::now();
  client::PublisherStats logged{};
  while (!g_stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (publisher && std::chrono::steady_clock::now() - last_report > std::chrono::seconds(10)) {
      const auto s = publisher->stats();
      if (s.acked != logged.acked || s.refused != logged.refused || s.pending != logged.pending) {
        spdlog::info("outbox: {} pending, {} acknowledged, {} duplicates, {} refused{}{}",
                     s.pending, s.acked, s.duplicates, s.refused,
                     s.last_error.empty() ? "" : "; last problem: ", s.last_error);
        logged = s;
      }
      last_report = std::chrono::steady_clock::now();
    }
  }
  spdlog::info("stopping");
  for (auto it = running.rbegin(); it != running.rend(); ++it) (*it)->stop();
  running.clear();
  publisher.reset();
  return kOk;
}

// Parses "2026-11-27" (00:00 WIB, UTC+7: the ward offices' day) to UTC ms.
std::optional<TimeMs> parse_day(const std::string& s) {
  std::tm tm{};
  if (s.size() != 10 ||
      std::sscanf(s.c_str(), "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const std::time_t t = timegm(&tm);
  if (t == -1) return std::nullopt;
  return static_cast<TimeMs>(t) * 1000 - 7 * 3600 * 1000;
}

int report(const std::string& config, const std::string& ward_name, const std::string& from,
           const std::string& to, bool json) {
  auto loaded = load(config, "");
  if (!loaded) {
    std::cerr << loaded.error().message << "\n";
    return kConfig;
  }
  auto f = parse_day(from);
  auto t = parse_day(to.empty() ? from : to);
  if (!f || !t) {
    std::cerr << "dates are YYYY-MM-DD (a day from 00:00 WIB)\n";
    return kUsage;
  }
  int found = 0, rc = kOk;
  Status st = each_entry(
      loaded->root, config,
      [&](const std::string& kind, std::size_t, const toml::table& table) -> Status {
        if (kind != "ward") return {};
        const std::string name = table["consumer"].value_or(std::string());
        if (!ward_name.empty() && name != ward_name) return {};
        ++found;
        auto r = adapters::ward_report(table, loaded->ctx, *f, *t + 24LL * 3600 * 1000, json);
        if (!r) {
          std::cerr << name << ": " << r.error().to_string() << "\n";
          rc = kStorage;
          return {};
        }
        std::cout << *r;
        return {};
      });
  if (!st) {
    std::cerr << st.error().message << "\n";
    return kConfig;
  }
  if (found == 0) {
    std::cerr << config << ": no [[ward]] register" << (ward_name.empty() ? "" : " " + ward_name)
              << "\n";
    return kUsage;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  // Everything the adapters write (outbox, inboxes, registers, spool archives and
  // rejects, report files) is the agency's user's only, whatever umask it started with.
  ::umask(077);
  CLI::App app{
      "kolabus-adapter: connects an agency's systems to the kolabus bus (spool directory, HTTP "
      "gateway, webhook, ward register), configured by agency.toml. See docs/ADAPTERS.md."};
  app.set_version_flag("--version", KOLABUS_VERSION);
  app.footer(
      "Webhook signatures (Standard Webhooks): every [[webhook]] entry needs secret_file = FILE, "
      "the endpoint's whsec_ secret (make it with `kolabus keygen NAME --webhook`; mode 0600, "
      "refused when group or others may read it), and takes previous_secret_file = FILE while "
      "a secret is being rotated (requests then carry both signatures). docs/ADAPTERS.md, "
      "\"Signatures\", has every key and how an agency verifies a request.");
  std::string config, broker, log_level = "info";
  app.add_option("-c,--config", config, "agency.toml")->check(CLI::ExistingFile);
  app.add_option("-b,--broker", broker, "broker endpoint (overrides agency.broker)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");

  auto* rep = app.add_subcommand("report", "print a ward register's summary for a day or a range");
  std::string from, to, ward;
  bool json = false;
  rep->add_option("-c,--config", config, "agency.toml with a [[ward]] entry")
      ->check(CLI::ExistingFile);
  rep->add_option("--date,--from", from, "first day, YYYY-MM-DD (WIB)")->required();
  rep->add_option("--to", to, "last day, YYYY-MM-DD (default: the first)");
  rep->add_option("--ward", ward, "the consumer name of one [[ward]] entry (default: all)");
  rep->add_flag("--json", json, "JSON instead of a table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;
  }
  if (config.empty()) {
    std::cerr << "--config is required\n";
    return kUsage;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  if (*rep) return report(config, ward, from, to, json);
  return run(config, broker);
}
