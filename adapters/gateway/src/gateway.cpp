#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "ingest.h"
#include "status_store.h"
#include <adapters/gateway.h>
#include <common/clock.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <schemas/validate.h>

namespace kolabus::adapters {

namespace {

using Json = nlohmann::ordered_json;
using gateway::EventState;
using gateway::StatusStore;

constexpr const char* kJsonType = "application/json";
constexpr const char* kRetryAfterSeconds = "5";
constexpr TimeMs kDayMs = 24LL * 3600 * 1000;
constexpr TimeMs kPruneEveryMs = 3600 * 1000;
// Request threads. Handlers mostly wait on disk (fsync) or SQLite, not the CPU.
constexpr std::size_t kServerThreads = 8;
// An idle keep-alive connection holds a server thread this long, also after stop().
constexpr time_t kKeepAliveSeconds = 1;
constexpr time_t kIoTimeoutSeconds = 10;

Error config_error(const std::string& key, const std::string& what) {
  return Error{Errc::kInvalidArgument, "[[gateway]] " + key + ": " + what};
}

Result<std::int64_t> positive_integer(const toml::node& node, const std::string& key,
                                      std::int64_t max) {
  const auto* v = node.as_integer();
  if (v == nullptr) return unexpected(config_error(key, "must be an integer"));
  if (v->get() < 1 || v->get() > max) {
    return unexpected(config_error(key, "must be between 1 and " + std::to_string(max)));
  }
  return v->get();
}

// "host:port" or "[v6 address]:port".
Status parse_listen(const std::string& text, GatewayOptions& out) {
  const auto bad = [&](const std::string& why) {
    return unexpected(config_error("listen", "\"" + text + "\" " + why));
  };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("is not host:port");
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("has an unclosed [");
    host = host.substr(1, host.size() - 2);
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("has no port number");
  }
  const int p = std::stoi(port);
  if (p > 65535) return bad("has a port above 65535");
  out.host = host;
  out.port = p;
  return {};
}

std::string error_body(const std::string& message) { return Json{{"error", message}}.dump(); }

const char* status_reason(int status) {
  switch (status) {
    case 400:
      return "bad request";
    case 404:
      return "not found";
    case 405:
      return "method not allowed";
    case 408:
      return "request timeout";
    case 413:
      return "payload too large";
    case 414:
      return "URI too long";
    case 415:
      return "unsupported media type";
    case 416:
      return "range not satisfiable";
    case 422:
      return "unprocessable entity";
    case 500:
      return "internal error";
    case 503:
      return "service unavailable";
    default:
      return "error";
  }
}

// "application/json", optionally with parameters ("; charset=utf-8").
bool is_json_type(std::string type) {
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string want = kJsonType;
  if (type.rfind(want, 0) != 0) return false;
  return type.size() == want.size() || type[want.size()] == ';' || type[want.size()] == ' ';
}

// Set by the pre-routing handler, read by the logger: both run on the thread serving
// the request, and the logger receives only const request and response.
thread_local std::optional<std::chrono::steady_clock::time_point> request_started;

}  // namespace

Result<GatewayOptions> parse_gateway_options(const toml::table& table) {
  GatewayOptions o;
  bool have_listen = false;
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    if (key == "listen") {
      const auto* s = node.as_string();
      if (s == nullptr) return unexpected(config_error(key, "must be a string \"host:port\""));
      if (auto st = parse_listen(s->get(), o); !st) return unexpected(st.error());
      have_listen = true;
    } else if (key == "max_batch") {
      auto v = positive_integer(node, key, 1'000'000);
      if (!v) return unexpected(v.error());
      o.max_batch = static_cast<std::size_t>(*v);
    } else if (key == "max_body_bytes") {
      auto v = positive_integer(node, key, std::int64_t{1} << 32);
      if (!v) return unexpected(v.error());
      o.max_body_bytes = static_cast<std::size_t>(*v);
    } else if (key == "status_retention_days") {
      auto v = positive_integer(node, key, 100 * 365);
      if (!v) return unexpected(v.error());
      o.status_retention_days = static_cast<int>(*v);
    } else {
      return unexpected(config_error(
          key, "unknown key (known: listen, max_batch, max_body_bytes, status_retention_days)"));
    }
  }
  if (!have_listen) {
    return unexpected(config_error("listen", "is required, e.g. listen = \"127.0.0.1:8080\""));
  }
  return o;
}

struct GatewayAdapter::Impl {
  GatewayOptions opt;
  AgencyContext ctx;
  std::string store_path;
  // Shared with the listener registered on the OutcomeHub, which has no way to
  // unregister and may be running on the publisher's thread while the adapter is
  // destroyed; the listener holds only a weak_ptr and drops outcomes once it is gone.
  std::shared_ptr<StatusStore> store;
  SystemClock clock;
  std::atomic<TimeMs> next_prune_ms{0};

  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
  std::atomic<int> port{0};

  // ---- handlers ----------------------------------------------------------

  static void reply(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(body.dump(), kJsonType);
  }
  static void reply_error(httplib::Response& res, int status, const std::string& message) {
    reply(res, status, Json{{"error", message}});
  }

  void maybe_prune(TimeMs now) {
    TimeMs due = next_prune_ms.load();
    if (now < due || !next_prune_ms.compare_exchange_strong(due, now + kPruneEveryMs)) return;
    auto n = store->prune(now - opt.status_retention_days * kDayMs);
    if (!n) {
      spdlog::warn("gateway: pruning statuses failed: {}", n.error().to_string());
    } else if (*n > 0) {
      spdlog::info("gateway: pruned {} statuses older than {} days", *n, opt.status_retention_days);
    }
  }

  void post_events(const httplib::Request& req, httplib::Response& res) {
    if (!is_json_type(req.get_header_value("Content-Type"))) {
      reply_error(res, 415, "Content-Type must be application/json");
      return;
    }
    if (req.body.size() > opt.max_body_bytes) {
      reply_error(res, 400,
                  "the body is larger than " + std::to_string(opt.max_body_bytes) +
                      " bytes (max_body_bytes)");
      return;
    }
    // JsonCodec is not thread-safe; each server thread gets its own.
    thread_local std::optional<schemas::JsonCodec> codec;
    if (!codec) {
      auto c = schemas::JsonCodec::create();
      if (!c) {
        spdlog::error("gateway: {}", c.error().to_string());
        reply_error(res, 500, c.error().message);
        return;
      }
      codec.emplace(std::move(*c));
    }
    const TimeMs now = clock.now_ms();
    const schemas::ValidationContext rules{schemas::RegionTable::embedded(), now};
    auto ingested = gateway::ingest_body(req.body, opt.max_batch, *codec, rules);
    if (!ingested) {
      reply_error(res, 400, ingested.error().message);
      return;
    }
    if (!ingested->errors.empty()) {
      Json errors = Json::array();
      for (const auto& e : ingested->errors) {
        errors.push_back(
            {{"index", e.index}, {"code", e.code}, {"field", e.field}, {"message", e.message}});
      }
      reply(res, 422,
            Json{{"error", std::to_string(ingested->errors.size()) + " of " +
                               std::to_string(ingested->total) +
                               " events break the rules; none was queued"},
                 {"errors", std::move(errors)}});
      return;
    }

    const auto& events = ingested->events;
    std::vector<EventId> ids;
    std::vector<std::span<const std::uint8_t>> bytes;
    ids.reserve(events.size());
    bytes.reserve(events.size());
    for (const auto& e : events) {
      ids.push_back(e.id);
      bytes.emplace_back(e.bytes);
    }
    auto st = store->accept(ids, now, [&]() -> Status {
      auto seqs = ctx.publisher->publish_batch(bytes);
      if (!seqs) return unexpected(seqs.error());
      return {};
    });
    if (!st) {
      if (st.error().code == Errc::kInvalidArgument) {
        // The publisher's own checks (frame size): the validator should have caught it.
        reply_error(res, 400, st.error().message);
        return;
      }
      spdlog::warn("gateway: {} events not queued: {}", ids.size(), st.error().to_string());
      res.set_header("Retry-After", kRetryAfterSeconds);
      reply_error(res, 503,
                  "cannot queue the events now (" + st.error().message +
                      "); nothing was queued, try again later");
      return;
    }
    Json out = Json::array();
    for (const auto& id : ids) out.push_back(id.to_string());
    reply(res, 202, Json{{"ids", std::move(out)}});
    maybe_prune(now);
  }

  void get_event(const std::string& id_text, httplib::Response& res) {
    const auto id = EventId::parse(id_text);
    if (!id) {
      reply_error(res, 400, "\"" + id_text.substr(0, 64) + "\" is not an event id (a UUID)");
      return;
    }
    auto status = store->get(*id);
    if (!status) {
      spdlog::warn("gateway: reading status of {}: {}", id->to_string(),
                   status.error().to_string());
      res.set_header("Retry-After", kRetryAfterSeconds);
      reply_error(res, 503, "cannot read the status now: " + status.error().message);
      return;
    }
    if (!status->has_value()) {
      reply_error(res, 404, "no event " + id->to_string() + " was accepted by this gateway");
      return;
    }
    const auto& s = **status;
    Json body{{"id", id->to_string()}};
    switch (s.state) {
      case EventState::kQueued:
        body["status"] = "queued";
        break;
      case EventState::kAcknowledged:
        body["status"] = "acknowledged";
        body["sequence"] = s.sequence;
        body["duplicate"] = s.duplicate;
        break;
      case EventState::kRefused:
        body["status"] = "refused";
        body["code"] = s.code;
        body["field"] = s.field;
        body["message"] = s.message;
        break;
    }
    reply(res, 200, body);
  }

  void health(httplib::Response& res) {
    reply(res, 200, Json{{"status", "ok"}, {"pending", ctx.publisher->stats().pending}});
  }

  // One entry point for every method and path, so that a known path with the wrong
  // method is a 405 (httplib's own routing would answer 404).
  void dispatch(const httplib::Request& req, httplib::Response& res) {
    const std::string& path = req.path;
    const std::string& m = req.method;
    auto method_not_allowed = [&](const char* allow) {
      res.set_header("Allow", allow);
      reply_error(res, 405, m + " is not allowed on " + path + " (allowed: " + allow + ")");
    };
    static const std::string kEventsPrefix = "/v1/events/";
    if (path == "/v1/events") {
      if (m == "POST") return post_events(req, res);
      return method_not_allowed("POST");
    }
    if (path.size() > kEventsPrefix.size() && path.rfind(kEventsPrefix, 0) == 0 &&
        path.find('/', kEventsPrefix.size()) == std::string::npos) {
      if (m == "GET" || m == "HEAD") return get_event(path.substr(kEventsPrefix.size()), res);
      return method_not_allowed("GET");
    }
    if (path == "/v1/health") {
      if (m == "GET" || m == "HEAD") return health(res);
      return method_not_allowed("GET");
    }
    reply_error(res, 404, "no such endpoint: " + path);
  }

  void configure(httplib::Server& svr) {
    svr.new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
    svr.set_keep_alive_timeout(kKeepAliveSeconds);
    svr.set_read_timeout(kIoTimeoutSeconds, 0);
    svr.set_write_timeout(kIoTimeoutSeconds, 0);
    svr.set_tcp_nodelay(true);
    svr.set_payload_max_length(opt.max_body_bytes);

    svr.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      request_started = std::chrono::steady_clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    const auto all = [this](const httplib::Request& req, httplib::Response& res) {
      dispatch(req, res);
    };
    svr.Get(".*", all);
    svr.Post(".*", all);
    svr.Put(".*", all);
    svr.Patch(".*", all);
    svr.Delete(".*", all);
    svr.Options(".*", all);

    // Errors httplib makes itself (unparsable request, body over the limit) get a JSON
    // body like ours; over the limit is a 400 in our contract, not a 413.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request&,
                                                                      httplib::Response& res) {
      if (res.status == 413) {
        res.status = 400;
        res.set_content(error_body("the body is larger than " + std::to_string(opt.max_body_bytes) +
                                   " bytes (max_body_bytes)"),
                        kJsonType);
        return httplib::Server::HandlerResponse::Handled;
      }
      if (res.body.empty()) {
        res.set_content(error_body(status_reason(res.status)), kJsonType);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }));
    svr.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::error("gateway: {} {}: {}", req.method, req.path, what);
          res.status = 500;
          res.set_content(error_body("internal error"), kJsonType);
        });
    svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      double ms = 0;
      if (request_started) {
        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                       *request_started)
                 .count();
        request_started.reset();
      }
      spdlog::info("gateway: {} {} {} {:.1f}ms", req.method, req.path, res.status, ms);
    });
  }
};

GatewayAdapter::GatewayAdapter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GatewayAdapter::~GatewayAdapter() { stop(); }

Result<std::unique_ptr<GatewayAdapter>> GatewayAdapter::create(GatewayOptions options,
                                                               const AgencyContext& context) {
  if (context.publisher == nullptr || context.outcomes == nullptr) {
    return unexpected(Errc::kInvalidArgument,
                      "[[gateway]] needs the agency's publisher and outcome hub");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->ctx = context;
  std::error_code ec;
  std::filesystem::create_directories(context.data_dir, ec);
  if (ec) {
    return unexpected(Errc::kIoError, "[[gateway]] cannot create data_dir " + context.data_dir +
                                          ": " + ec.message());
  }
  impl->store_path = (std::filesystem::path(context.data_dir) / "gateway-status.sqlite").string();
  auto store = StatusStore::open(impl->store_path);
  if (!store) return unexpected(store.error());
  impl->store = std::shared_ptr<StatusStore>(std::move(*store));

  context.outcomes->listen(
      [weak = std::weak_ptr<StatusStore>(impl->store)](const client::Outcome& outcome) {
        auto live = weak.lock();
        if (!live) return;
        if (auto st = live->record(outcome, SystemClock().now_ms()); !st) {
          spdlog::warn("gateway: status of {} not recorded: {}", outcome.id.to_string(),
                       st.error().to_string());
        }
      });
  return std::unique_ptr<GatewayAdapter>(new GatewayAdapter(std::move(impl)));
}

std::string GatewayAdapter::describe() const {
  const auto& o = impl_->opt;
  const bool v6 = o.host.find(':') != std::string::npos;
  const int port = impl_->port.load() != 0 ? impl_->port.load() : o.port;
  return "gateway http://" + (v6 ? "[" + o.host + "]" : o.host) + ":" + std::to_string(port) +
         " (max_batch " + std::to_string(o.max_batch) + ", statuses in " + impl_->store_path + ")";
}

Status GatewayAdapter::start() {
  if (impl_->server) return unexpected(Errc::kInvalidArgument, "gateway already started");
  auto svr = std::make_unique<httplib::Server>();
  impl_->configure(*svr);
  const auto& o = impl_->opt;
  int port = o.port;
  if (o.port == 0) {
    port = svr->bind_to_any_port(o.host);
    if (port < 0) port = 0;
  } else if (!svr->bind_to_port(o.host, o.port)) {
    port = 0;
  }
  if (port == 0) {
    return unexpected(Errc::kUnavailable, "gateway cannot listen on " + o.host + ":" +
                                              std::to_string(o.port) +
                                              " (address in use or not local?)");
  }
  impl_->maybe_prune(impl_->clock.now_ms());
  impl_->listen_returned = false;
  httplib::Server* raw = svr.get();
  impl_->server = std::move(svr);
  Impl* impl = impl_.get();
  impl_->thread = std::thread([raw, impl] {
    if (!raw->listen_after_bind()) spdlog::error("gateway: the server stopped with an error");
    impl->listen_returned = true;
  });
  // Server::stop() is a no-op until the accept loop runs; wait for it so that a stop()
  // right after start() cannot be lost (and the thread never joined).
  while (!raw->is_running() && !impl_->listen_returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->port = port;
  spdlog::info("gateway: listening on {}:{}", o.host, port);
  return {};
}

void GatewayAdapter::stop() {
  if (!impl_->server) return;
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->server.reset();
  impl_->port = 0;
}

int GatewayAdapter::port() const { return impl_->port.load(); }

Result<std::unique_ptr<Adapter>> make_gateway(const toml::table& table,
                                              const AgencyContext& context) {
  auto options = parse_gateway_options(table);
  if (!options) return unexpected(options.error());
  auto adapter = GatewayAdapter::create(std::move(*options), context);
  if (!adapter) return unexpected(adapter.error());
  return std::unique_ptr<Adapter>(std::move(*adapter));
}

}  // namespace kolabus::adapters
