#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "auth.h"
#include "edge.h"
#include "ingest.h"
#include "status_store.h"
#include <adapters/gateway.h>
#include <client/admin.h>
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
// An idle keep-alive connection is closed after this long (at once when the server
// stops or other connections wait for a thread), or after this many requests.
constexpr time_t kKeepAliveSeconds = 5;
constexpr std::size_t kKeepAliveRequests = 100;
// Connections the kernel queues before the accept thread takes them (httplib: 5).
constexpr int kListenBacklog = 1024;
// /v1/ready: the broker's ping, its timeout and how long an answer is reused.
constexpr std::chrono::milliseconds kPingTimeout{500};
constexpr std::chrono::milliseconds kReadyCacheFor{1000};
constexpr const char* kRealm = "Bearer realm=\"kolabus-gateway\"";

Error config_error(const std::string& key, const std::string& what) {
  return Error{Errc::kInvalidArgument, "[[gateway]] " + key + ": " + what};
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

// JSON text of `body`. Strings that are not UTF-8 (a parse error quoting the bytes of
// a bad body, a path) get U+FFFD in place of the bad bytes instead of an exception.
std::string to_text(const Json& body) {
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string error_body(const std::string& message) { return to_text(Json{{"error", message}}); }

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
    case 431:
      return "request header fields too large";
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

enum class Route { kNone, kEvents, kEvent, kHealth, kReady };

Route route_of(const std::string& path) {
  static const std::string kEventsPrefix = "/v1/events/";
  if (path == "/v1/events") return Route::kEvents;
  if (path.size() > kEventsPrefix.size() && path.rfind(kEventsPrefix, 0) == 0 &&
      path.find('/', kEventsPrefix.size()) == std::string::npos) {
    return Route::kEvent;
  }
  if (path == "/v1/health") return Route::kHealth;
  if (path == "/v1/ready") return Route::kReady;
  return Route::kNone;
}

// Bounded integer keys: name, minimum, maximum.
struct IntKey {
  const char* name;
  std::int64_t min;
  std::int64_t max;
};

Result<std::int64_t> integer_in(const toml::node& node, const IntKey& k) {
  const auto* v = node.as_integer();
  if (v == nullptr) return unexpected(config_error(k.name, "must be an integer"));
  if (v->get() < k.min || v->get() > k.max) {
    return unexpected(config_error(
        k.name, "must be between " + std::to_string(k.min) + " and " + std::to_string(k.max)));
  }
  return v->get();
}

bool is_client_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

Status parse_tokens(const toml::node& node, GatewayOptions& out) {
  const auto* arr = node.as_array();
  if (arr == nullptr) {
    return unexpected(
        config_error("tokens", "must be an array: [{ name = \"...\", sha256 = \"...\" }]"));
  }
  std::set<std::string> names;
  std::set<std::array<unsigned char, 32>> hashes;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string key = "tokens[" + std::to_string(i) + "]";
    const auto* t = (*arr)[i].as_table();
    if (t == nullptr) {
      return unexpected(config_error(key, "must be a table { name = \"...\", sha256 = \"...\" }"));
    }
    GatewayToken token;
    bool have_hash = false;
    for (const auto& [k, v] : *t) {
      const std::string field(k.str());
      if (field == "name") {
        const auto* s = v.as_string();
        if (s == nullptr || !is_client_name(s->get())) {
          return unexpected(
              config_error(key + ".name", "must be 1 to 64 letters, digits, '.', '-' or '_'"));
        }
        token.name = s->get();
      } else if (field == "sha256") {
        const auto* s = v.as_string();
        auto hash = s == nullptr ? std::nullopt : gateway::parse_sha256_hex(s->get());
        if (!hash) {
          return unexpected(config_error(
              key + ".sha256",
              "must be the token's SHA-256 as 64 hex digits (kolabus gateway-token prints it)"));
        }
        token.sha256 = *hash;
        have_hash = true;
      } else {
        return unexpected(config_error(key + "." + field, "unknown key (known: name, sha256)"));
      }
    }
    if (token.name.empty() || !have_hash) {
      return unexpected(config_error(key, "needs both name and sha256"));
    }
    if (!names.insert(token.name).second) {
      return unexpected(config_error(key + ".name", "\"" + token.name + "\" is listed twice"));
    }
    if (!hashes.insert(token.sha256).second) {
      return unexpected(config_error(key + ".sha256", "the same token is listed twice"));
    }
    out.tokens.push_back(std::move(token));
  }
  return {};
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

Result<GatewayOptions> parse_gateway_options(const toml::table& table) {
  GatewayOptions o;
  static constexpr const char* kKnown =
      "listen, tls_cert, tls_key, tokens, max_batch, max_body_bytes, status_retention_days, "
      "header_timeout_seconds, body_timeout_seconds, max_header_bytes, max_headers, "
      "max_connections";
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    auto integer = [&](std::int64_t min, std::int64_t max) {
      return integer_in(node, IntKey{key.c_str(), min, max});
    };
    Result<std::int64_t> v = 0;
    if (key == "listen") {
      const auto* s = node.as_string();
      if (s == nullptr) return unexpected(config_error(key, "must be a string \"host:port\""));
      if (auto st = parse_listen(s->get(), o); !st) return unexpected(st.error());
    } else if (key == "tls_cert" || key == "tls_key") {
      const auto* s = node.as_string();
      if (s == nullptr || s->get().empty()) {
        return unexpected(config_error(key, "must be a file name (PEM)"));
      }
      (key == "tls_cert" ? o.tls_cert : o.tls_key) = s->get();
    } else if (key == "tokens") {
      if (auto st = parse_tokens(node, o); !st) return unexpected(st.error());
    } else if (key == "max_batch") {
      if (!(v = integer(1, 1'000'000))) return unexpected(v.error());
      o.max_batch = static_cast<std::size_t>(*v);
    } else if (key == "max_body_bytes") {
      if (!(v = integer(1, std::int64_t{1} << 32))) return unexpected(v.error());
      o.max_body_bytes = static_cast<std::size_t>(*v);
    } else if (key == "status_retention_days") {
      if (!(v = integer(1, 100 * 365))) return unexpected(v.error());
      o.status_retention_days = static_cast<int>(*v);
    } else if (key == "header_timeout_seconds") {
      if (!(v = integer(1, 300))) return unexpected(v.error());
      o.header_timeout_seconds = static_cast<int>(*v);
    } else if (key == "body_timeout_seconds") {
      if (!(v = integer(1, 3600))) return unexpected(v.error());
      o.body_timeout_seconds = static_cast<int>(*v);
    } else if (key == "max_header_bytes") {
      if (!(v = integer(1024, 1 << 20))) return unexpected(v.error());
      o.max_header_bytes = static_cast<std::size_t>(*v);
    } else if (key == "max_headers") {
      if (!(v = integer(1, 1000))) return unexpected(v.error());
      o.max_headers = static_cast<std::size_t>(*v);
    } else if (key == "max_connections") {
      if (!(v = integer(1, 4096))) return unexpected(v.error());
      o.max_connections = static_cast<std::size_t>(*v);
    } else {
      return unexpected(config_error(key, std::string("unknown key (known: ") + kKnown + ")"));
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return unexpected(config_error(o.tls_cert.empty() ? "tls_cert" : "tls_key",
                                   "tls_cert and tls_key go together (TLS), or neither"));
  }
  if (!is_loopback_host(o.host)) {
    std::string missing;
    if (o.tls_cert.empty()) missing = "TLS (tls_cert, tls_key)";
    if (o.tokens.empty()) missing += std::string(missing.empty() ? "" : " and ") + "tokens";
    if (!missing.empty()) {
      return unexpected(config_error(
          "listen", o.host +
                        " is not a loopback address: a gateway that other machines can "
                        "reach must have TLS (tls_cert, tls_key) and client tokens "
                        "(tokens); missing " +
                        missing + ". Listen on 127.0.0.1 or configure both"));
    }
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

  gateway::TokenSet tokens;

  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
  std::atomic<int> port{0};

  // /v1/ready: the last ping of the broker, reused for kReadyCacheFor.
  std::mutex ready_mu;
  std::unique_ptr<client::AdminClient> admin;
  std::optional<std::chrono::steady_clock::time_point> ready_checked;
  bool broker_ok = false;

  // ---- handlers ----------------------------------------------------------

  static void reply(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(to_text(body), kJsonType);
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

  // Pings the broker at most once per kReadyCacheFor; concurrent requests wait for the
  // one ping in progress and share its answer.
  bool broker_answers() {
    std::lock_guard lock(ready_mu);
    const auto now = std::chrono::steady_clock::now();
    if (ready_checked && now - *ready_checked < kReadyCacheFor) return broker_ok;
    std::string problem;
    if (!admin) {
      auto a = client::AdminClient::connect(ctx.broker, kPingTimeout, ctx.curve);
      if (a) {
        admin = std::move(*a);
      } else {
        problem = a.error().to_string();
      }
    }
    if (admin) {
      auto pong = admin->ping();
      if (!pong) {
        problem = pong.error().to_string();
        admin.reset();  // a fresh connection next time
      }
    }
    const bool ok = problem.empty();
    if (ok != broker_ok || !ready_checked) {
      if (ok) {
        spdlog::info("gateway: ready: the broker at {} answers", ctx.broker);
      } else {
        spdlog::warn("gateway: not ready: {}", problem);
      }
    }
    broker_ok = ok;
    ready_checked = std::chrono::steady_clock::now();
    return ok;
  }

  void ready(httplib::Response& res) {
    if (broker_answers()) {
      reply(res, 200, Json{{"status", "ready"}, {"pending", ctx.publisher->stats().pending}});
      return;
    }
    res.set_header("Retry-After", "1");
    reply(res, 503,
          Json{{"error",
                "the broker does not answer; events posted now wait in the outbox until it does"},
               {"status", "unavailable"},
               {"pending", ctx.publisher->stats().pending}});
  }

  // Runs once the request line and headers are in, before the body is read: what can be
  // refused without the body is refused here (and the connection closed if a body was
  // coming), so that no stranger makes the gateway read megabytes.
  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) {
    gateway::headers_complete();
    auto& state = gateway::current_request();
    const std::string& path = req.path;
    const std::string& m = req.method;
    const bool has_body =
        req.has_header("Transfer-Encoding") ||
        (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    auto answer = [&](int status, const std::string& message) {
      if (has_body) {
        state.close = true;
        res.set_header("Connection", "close");
      }
      reply_error(res, status, message);
      return httplib::Server::HandlerResponse::Handled;
    };
    const Route route = route_of(path);
    if (route == Route::kNone) return answer(404, "no such endpoint: " + path.substr(0, 200));
    const char* allow = route == Route::kEvents ? "POST" : "GET";
    const bool allowed = route == Route::kEvents ? m == "POST" : (m == "GET" || m == "HEAD");
    if (!allowed) {
      res.set_header("Allow", allow);
      return answer(405,
                    m + " is not allowed on " + path.substr(0, 200) + " (allowed: " + allow + ")");
    }
    if ((route == Route::kEvents || route == Route::kEvent) && !tokens.empty()) {
      const std::string authorization = req.get_header_value("Authorization");
      auto client = tokens.authenticate(authorization);
      if (!client) {
        res.set_header("WWW-Authenticate", authorization.empty()
                                               ? std::string(kRealm)
                                               : std::string(kRealm) + ", error=\"invalid_token\"");
        return answer(401, authorization.empty()
                               ? "this gateway needs Authorization: Bearer <token>"
                               : "the bearer token is not valid here");
      }
      state.client = std::move(*client);
    }
    if (route == Route::kEvents) {
      if (!is_json_type(req.get_header_value("Content-Type"))) {
        return answer(415, "Content-Type must be application/json");
      }
      if (req.has_header("Content-Length")) {
        const std::string text = req.get_header_value("Content-Length");
        std::uint64_t length = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
        if (ec != std::errc() || end != text.data() + text.size()) {
          return answer(400, "Content-Length is not a number");
        }
        if (length > opt.max_body_bytes) {
          return answer(400, "the body is larger than " + std::to_string(opt.max_body_bytes) +
                                 " bytes (max_body_bytes)");
        }
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // The handlers of what pre_route let through: a known path with an allowed method.
  void dispatch(const httplib::Request& req, httplib::Response& res) {
    static const std::string kEventsPrefix = "/v1/events/";
    switch (route_of(req.path)) {
      case Route::kEvents:
        return post_events(req, res);
      case Route::kEvent:
        return get_event(req.path.substr(kEventsPrefix.size()), res);
      case Route::kHealth:
        return health(res);
      case Route::kReady:
        return ready(res);
      case Route::kNone:
        break;
    }
    reply_error(res, 404, "no such endpoint: " + req.path.substr(0, 200));
  }

  void configure(httplib::Server& svr) {
    svr.set_keep_alive_timeout(kKeepAliveSeconds);
    svr.set_keep_alive_max_count(kKeepAliveRequests);
    svr.set_tcp_nodelay(true);
    svr.set_payload_max_length(opt.max_body_bytes);

    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return pre_route(req, res);
    });
    const auto all = [this](const httplib::Request& req, httplib::Response& res) {
      dispatch(req, res);
    };
    svr.Get(".*", all);
    svr.Post(".*", all);

    // Errors httplib makes itself (unparsable request, body over the limit) and the
    // edge's cuts get a JSON body like ours; over the limit is a 400 in our contract,
    // not a 413.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request&,
                                                                      httplib::Response& res) {
      const auto& state = gateway::current_request();
      if (state.cut != gateway::Cut::kNone) {
        const bool timeout =
            state.cut == gateway::Cut::kHeaderTimeout || state.cut == gateway::Cut::kBodyTimeout;
        res.status = timeout ? 408 : 431;
        res.set_header("Connection", "close");
        res.set_content(
            error_body(timeout ? (state.cut == gateway::Cut::kHeaderTimeout
                                      ? "request timeout: the headers did not arrive within " +
                                            std::to_string(opt.header_timeout_seconds) + " s"
                                      : "request timeout: the body did not arrive within " +
                                            std::to_string(opt.body_timeout_seconds) + " s")
                               : "request header fields too large (at most " +
                                     std::to_string(opt.max_headers) + " headers, " +
                                     std::to_string(opt.max_header_bytes) + " bytes)"),
            kJsonType);
        return httplib::Server::HandlerResponse::Handled;
      }
      if (res.status == 413) {
        res.status = 400;
        res.set_content(error_body("the body is larger than " + std::to_string(opt.max_body_bytes) +
                                   " bytes (max_body_bytes)"),
                        kJsonType);
        return httplib::Server::HandlerResponse::Handled;
      }
      if (res.body.empty()) {
        // httplib's own refusals (a request line or headers it cannot parse): what follows
        // on the connection cannot be trusted to start a request, so it is closed.
        if (res.status == 400) {
          gateway::current_request().close = true;
          res.set_header("Connection", "close");
        }
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
    // One line per request, with the client that the token named ("-": none). Never
    // the token.
    svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      const auto& state = gateway::current_request();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                                  state.started)
                            .count();
      spdlog::info("gateway: {} {} {} {:.1f}ms client {}", req.method, req.path, res.status, ms,
                   state.client.empty() ? "-" : state.client);
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
  if (!options.tls_key.empty()) {
    // The key must not be readable by anyone but its owner (as ssh insists).
    struct stat st {};
    if (::stat(options.tls_key.c_str(), &st) != 0) {
      return unexpected(Errc::kInvalidArgument, "[[gateway]] tls_key: cannot read " +
                                                    options.tls_key + ": " + std::strerror(errno));
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return unexpected(Errc::kInvalidArgument,
                        "[[gateway]] tls_key: " + options.tls_key + " has mode " + mode +
                            ": a private key must be readable by its owner only; chmod 600 " +
                            options.tls_key);
    }
    if (!std::filesystem::is_regular_file(options.tls_cert)) {
      return unexpected(Errc::kInvalidArgument,
                        "[[gateway]] tls_cert: " + options.tls_cert + " is not a file");
    }
  }
  if (sodium_init() < 0) {
    return unexpected(Errc::kInternal, "[[gateway]] libsodium cannot be initialised");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->ctx = context;
  impl->tokens = gateway::TokenSet(impl->opt.tokens);
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

namespace {

std::string url_of(const GatewayOptions& o, int port) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return std::string(o.tls_cert.empty() ? "http://" : "https://") +
         (v6 ? "[" + o.host + "]" : o.host) + ":" + std::to_string(port);
}

}  // namespace

std::string GatewayAdapter::describe() const {
  const auto& o = impl_->opt;
  const int port = impl_->port.load() != 0 ? impl_->port.load() : o.port;
  return "gateway " + url_of(o, port) + " (TLS " + (o.tls_cert.empty() ? "off" : "on") + ", " +
         std::to_string(o.tokens.size()) + " client tokens, max_batch " +
         std::to_string(o.max_batch) + ", statuses in " + impl_->store_path + ")";
}

Status GatewayAdapter::start() {
  if (impl_->server) return unexpected(Errc::kInvalidArgument, "gateway already started");
  const auto& o = impl_->opt;
  gateway::EdgeLimits limits;
  limits.header_timeout = std::chrono::seconds(o.header_timeout_seconds);
  limits.body_timeout = std::chrono::seconds(o.body_timeout_seconds);
  limits.keep_alive_timeout = std::chrono::seconds(kKeepAliveSeconds);
  limits.keep_alive_max = kKeepAliveRequests;
  limits.max_header_bytes = o.max_header_bytes;
  limits.max_headers = o.max_headers;
  limits.max_connections = o.max_connections;
  std::optional<gateway::TlsFiles> tls;
  if (!o.tls_cert.empty()) tls = gateway::TlsFiles{o.tls_cert, o.tls_key};
  auto made = gateway::make_edge_server(limits, tls);
  if (!made) return unexpected(made.error());
  std::unique_ptr<httplib::Server> svr = std::move(*made);
  impl_->configure(*svr);
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
  gateway::set_listen_backlog(*svr, kListenBacklog);
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
  spdlog::info("gateway: listening on {}, TLS {}, {} client tokens loaded{}", url_of(o, port),
               tls ? "on" : "off", o.tokens.size(),
               o.tokens.empty() ? " (no authentication: anyone who reaches this loopback "
                                  "address publishes as the agency)"
                                : "");
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
