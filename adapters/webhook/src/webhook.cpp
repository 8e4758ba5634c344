// The webhook sink (adapters/webhook.h): table parsing, the consumer thread, and the
// handler that turns one delivery into one HTTP POST and a verdict.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <adapters/consumer_loop.h>
#include <adapters/webhook.h>
#include <adapters/webhook_signature.h>
#include <client/consumer.h>
#include <common/clock.h>
#include <schemas/free_text.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <schemas/validate.h>

namespace kolabus::adapters {
namespace {

using namespace std::chrono_literals;

// A response's body is the receiving system's free text: it may echo the event. Only a
// scrubbed excerpt goes into the reason (the broker scrubs and cuts it again).
constexpr std::size_t kMaxBodyInReason = 120;
constexpr std::uint32_t kMaxTimeoutMs = 6000;

struct WebhookConfig {
  std::string consumer;
  std::string url;
  std::string scheme_host_port;  // "http://host:port", what httplib::Client takes
  std::string path;              // "/hook?x=1"
  std::vector<events::Payload> kinds;
  std::vector<std::string> regions;
  protocol::StartPolicy start = protocol::StartPolicy::Earliest;
  std::uint32_t timeout_ms = 5000;
  std::uint32_t max_attempts = 20;
  std::uint32_t backoff_initial_ms = 500;
  std::uint32_t backoff_max_ms = 60000;
  // Requests go one at a time, so fetching far ahead only lets the events at the back
  // of the window wait out their ack_wait behind a slow endpoint (and count a wasted
  // attempt each). A few is enough to hide the broker's round trip.
  std::uint32_t window = 4;
  std::uint32_t ack_wait_ms = 60000;
  std::vector<std::pair<std::string, std::string>> headers;
  // Standard Webhooks signing: the current secret's file first, then the previous one's
  // (during a rotation), and their HMAC keys in the same order. Never logged.
  std::vector<std::string> secret_files;
  std::vector<std::string> keys;
};

Error config_error(const std::string& key, const std::string& what) {
  return Error{Errc::kInvalidArgument, "[[webhook]] " + key + ": " + what};
}

bool valid_consumer_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Result<std::string> get_string(const toml::table& t, const std::string& key, bool required) {
  const toml::node* n = t.get(key);
  if (n == nullptr) {
    if (required) return kolabus::unexpected(config_error(key, "required"));
    return std::string();
  }
  auto v = n->value<std::string>();
  if (!n->is_string() || !v) return kolabus::unexpected(config_error(key, "must be a string"));
  return *v;
}

// An integer key within [lo, hi], or `dflt` when absent.
Result<std::uint32_t> get_uint(const toml::table& t, const std::string& key, std::uint32_t dflt,
                               std::int64_t lo, std::int64_t hi) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return dflt;
  if (!n->is_integer()) return kolabus::unexpected(config_error(key, "must be an integer"));
  const std::int64_t v = *n->value_exact<std::int64_t>();
  if (v < lo || v > hi) {
    return kolabus::unexpected(
        config_error(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi)));
  }
  return static_cast<std::uint32_t>(v);
}

Result<std::vector<std::string>> get_strings(const toml::table& t, const std::string& key) {
  std::vector<std::string> out;
  const toml::node* n = t.get(key);
  if (n == nullptr) return out;
  const toml::array* a = n->as_array();
  if (a == nullptr) return kolabus::unexpected(config_error(key, "must be an array of strings"));
  for (const auto& e : *a) {
    auto v = e.value<std::string>();
    if (!e.is_string() || !v) {
      return kolabus::unexpected(config_error(key, "must be an array of strings"));
    }
    out.push_back(*v);
  }
  return out;
}

Status check_prefixes(const std::string& key, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    const bool digits =
        !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || !(p.size() == 2 || p.size() == 4 || p.size() == 6 || p.size() == 10)) {
      return kolabus::unexpected(
          config_error(key, "'" + p + "' is not a region prefix (2, 4, 6 or 10 digits)"));
    }
    if (schemas::RegionTable::embedded().find(p) == nullptr) {
      return kolabus::unexpected(
          config_error(key, "'" + p + "' is not in the Kemendagri list (edition " +
                                std::string(schemas::RegionTable::kEdition) + ")"));
    }
  }
  return {};
}

Result<WebhookConfig> parse_config(const toml::table& t) {
  static const std::set<std::string> kKnown = {"consumer",       "url",
                                               "kinds",          "regions",
                                               "start",          "timeout_ms",
                                               "max_attempts",   "backoff_initial_ms",
                                               "backoff_max_ms", "window",
                                               "ack_wait_ms",    "headers",
                                               "secret_file",    "previous_secret_file"};
  for (const auto& [k, v] : t) {
    if (kKnown.count(std::string(k.str())) == 0) {
      return kolabus::unexpected(config_error(std::string(k.str()), "unknown key"));
    }
  }
  WebhookConfig c;
  auto consumer = get_string(t, "consumer", true);
  if (!consumer) return kolabus::unexpected(consumer.error());
  if (!valid_consumer_name(*consumer)) {
    return kolabus::unexpected(
        config_error("consumer", "'" + *consumer + "' must be 1-64 of [A-Za-z0-9._-]"));
  }
  c.consumer = *consumer;

  auto url = get_string(t, "url", true);
  if (!url) return kolabus::unexpected(url.error());
  c.url = *url;
  const auto scheme_end = c.url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : c.url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    return kolabus::unexpected(config_error("url", "'" + c.url +
                                                       "' must start with http://"
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
                                                       " or https://"
#endif
                                            ));
  }
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (scheme == "https") {
    return kolabus::unexpected(config_error("url", "https is not supported by this build"));
  }
#endif
  const auto path_start = c.url.find_first_of("/?", scheme_end + 3);
  c.scheme_host_port = c.url.substr(0, path_start);
  c.path = path_start == std::string::npos ? "/" : c.url.substr(path_start);
  if (c.path.front() == '?') c.path.insert(0, "/");
  if (c.scheme_host_port.size() == scheme_end + 3) {
    return kolabus::unexpected(config_error("url", "'" + c.url + "' has no host"));
  }

  auto kinds = get_strings(t, "kinds");
  if (!kinds) return kolabus::unexpected(kinds.error());
  for (const auto& k : *kinds) {
    if (k == "birth") {
      c.kinds.push_back(events::Payload::Birth);
    } else if (k == "death") {
      c.kinds.push_back(events::Payload::Death);
    } else if (k == "move") {
      c.kinds.push_back(events::Payload::Move);
    } else {
      return kolabus::unexpected(
          config_error("kinds", "'" + k + "' is not one of birth, death, move"));
    }
  }
  auto regions = get_strings(t, "regions");
  if (!regions) return kolabus::unexpected(regions.error());
  if (auto s = check_prefixes("regions", *regions); !s) return kolabus::unexpected(s.error());
  c.regions = *regions;

  auto start = get_string(t, "start", false);
  if (!start) return kolabus::unexpected(start.error());
  if (start->empty() || *start == "earliest") {
    c.start = protocol::StartPolicy::Earliest;
  } else if (*start == "latest") {
    c.start = protocol::StartPolicy::Latest;
  } else {
    return kolabus::unexpected(config_error("start", "must be \"earliest\" or \"latest\""));
  }

  struct UintKey {
    const char* key;
    std::uint32_t* out;
    std::int64_t lo, hi;
  };
  const UintKey uints[] = {
      {"timeout_ms", &c.timeout_ms, 1, kMaxTimeoutMs},
      {"max_attempts", &c.max_attempts, 1, 1000},
      {"backoff_initial_ms", &c.backoff_initial_ms, 1, 24 * 3600 * 1000},
      {"backoff_max_ms", &c.backoff_max_ms, 1, 24 * 3600 * 1000},
      {"window", &c.window, 1, 10000},
      {"ack_wait_ms", &c.ack_wait_ms, 100, 24 * 3600 * 1000},
  };
  for (const auto& u : uints) {
    auto v = get_uint(t, u.key, *u.out, u.lo, u.hi);
    if (!v) return kolabus::unexpected(v.error());
    *u.out = *v;
  }
  if (c.backoff_max_ms < c.backoff_initial_ms) {
    return kolabus::unexpected(config_error("backoff_max_ms", "must be >= backoff_initial_ms"));
  }
  // One request can take connect + read timeouts, and the last event of a full window
  // waits for all before it: the broker must not redeliver an event still queued here.
  const std::uint64_t worst = 2ULL * c.timeout_ms * c.window;
  if (c.ack_wait_ms <= worst) {
    return kolabus::unexpected(config_error(
        "ack_wait_ms", "must exceed 2 x timeout_ms x window (" + std::to_string(worst) +
                           "): a full window behind a slow endpoint would be redelivered"));
  }

  if (const toml::node* h = t.get("headers")) {
    const toml::table* ht = h->as_table();
    if (ht == nullptr) return kolabus::unexpected(config_error("headers", "must be a table"));
    static const std::set<std::string> kReserved = {
        "content-type",      "idempotency-key",   "x-kolabus-sequence",
        "x-kolabus-attempt", "content-length",    "host",
        "webhook-id",        "webhook-timestamp", "webhook-signature"};
    for (const auto& [k, v] : *ht) {
      std::string name(k.str());
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      auto value = v.value<std::string>();
      if (!v.is_string() || !value) {
        return kolabus::unexpected(config_error("headers." + name, "must be a string"));
      }
      if (kReserved.count(lower) != 0) {
        return kolabus::unexpected(config_error("headers." + name, "is set by the adapter"));
      }
      const bool bad = name.empty() || name.find_first_of(" \t\r\n:") != std::string::npos ||
                       value->find_first_of("\r\n") != std::string::npos;
      if (bad) {
        return kolabus::unexpected(config_error("headers." + name, "is not a valid header"));
      }
      c.headers.emplace_back(std::move(name), *value);
    }
  }

  // The secrets: files, never values in the table (agency.toml is not secret), read
  // once here so that a missing, malformed or too open file is a configuration error.
  if (t.get("secret_file") == nullptr) {
    return kolabus::unexpected(
        config_error("secret_file",
                     "required: the file of this endpoint's signing secret (make one with "
                     "kolabus keygen " +
                         c.consumer + " --webhook)"));
  }
  auto secret_file = get_string(t, "secret_file", true);
  if (!secret_file) return kolabus::unexpected(secret_file.error());
  if (secret_file->empty()) return kolabus::unexpected(config_error("secret_file", "is empty"));
  auto previous = get_string(t, "previous_secret_file", false);
  if (!previous) return kolabus::unexpected(previous.error());
  const std::pair<const char*, std::string> files[] = {{"secret_file", *secret_file},
                                                       {"previous_secret_file", *previous}};
  for (const auto& [key, file] : files) {
    if (file.empty()) continue;
    auto k = load_webhook_secret(file);
    if (!k) return kolabus::unexpected(config_error(key, k.error().message));
    if (std::find(c.keys.begin(), c.keys.end(), *k) != c.keys.end()) {
      return kolabus::unexpected(config_error(
          key, "holds the same secret as secret_file: make a new one for the rotation"));
    }
    c.secret_files.push_back(file);
    c.keys.push_back(std::move(*k));
  }
  return c;
}

// Retry-After in seconds (the HTTP-date form is ignored), if present and sane.
std::optional<std::uint64_t> retry_after_ms(const httplib::Response& res) {
  if (!res.has_header("Retry-After")) return std::nullopt;
  const std::string v = res.get_header_value("Retry-After");
  std::uint64_t secs = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
  if (ec != std::errc() || p != v.data() + v.size() || secs > 24 * 3600) return std::nullopt;
  return secs * 1000;
}

class WebhookAdapter final : public Adapter {
 public:
  WebhookAdapter(WebhookConfig config, const AgencyContext& ctx)
      : config_(std::move(config)), ctx_(ctx) {}
  ~WebhookAdapter() override { stop(); }

  std::string describe() const override {
    std::string kinds;
    for (auto k : config_.kinds) {
      kinds += kinds.empty() ? "" : ",";
      kinds += schemas::kind_name(k);
    }
    std::string regions;
    for (const auto& r : config_.regions) regions += (regions.empty() ? "" : ",") + r;
    return "webhook " + config_.consumer + " -> " + config_.url + " (kinds " +
           (kinds.empty() ? "all" : kinds) + ", regions " + (regions.empty() ? "all" : regions) +
           ", signed with " + std::to_string(config_.keys.size()) +
           (config_.keys.size() == 1 ? " secret" : " secrets") + ")";
  }

  Status start() override {
    if (loop_) return kolabus::unexpected(Errc::kInvalidArgument, "already started");
    auto codec = schemas::JsonCodec::create();
    if (!codec) return kolabus::unexpected(codec.error());
    codec_.emplace(std::move(*codec));

    auto opts = sink_consumer_options(ctx_, "webhook " + config_.consumer, config_.consumer);
    if (!opts) return kolabus::unexpected(opts.error());
    client::ConsumerOptions& o = *opts;
    o.kinds = config_.kinds;
    o.regions = config_.regions;
    o.start = config_.start;
    o.ack_wait_ms = config_.ack_wait_ms;
    o.max_deliver = config_.max_attempts;
    o.window = config_.window;
    // The consumer reconnects after 3 heartbeats without sending, and the handler
    // sends nothing while a request runs (up to ~2 x timeout_ms).
    o.heartbeat =
        std::max<std::chrono::milliseconds>(2000ms, std::chrono::milliseconds(config_.timeout_ms));
    auto consumer = client::Consumer::open(std::move(o));
    if (!consumer) {
      return kolabus::unexpected(consumer.error().code, "webhook " + config_.consumer +
                                                            ": inbox: " + consumer.error().message);
    }
    consumer_ = std::move(*consumer);

    http_ = std::make_unique<httplib::Client>(config_.scheme_host_port);
    const time_t secs = config_.timeout_ms / 1000;
    const time_t usecs = (config_.timeout_ms % 1000) * 1000;
    http_->set_connection_timeout(secs, usecs);
    http_->set_read_timeout(secs, usecs);
    http_->set_write_timeout(secs, usecs);
    http_->set_keep_alive(true);
    // httplib writes headers and body apart: without this, Nagle and delayed ACKs add
    // ~40-80 ms to every request, and requests are made one at a time.
    http_->set_tcp_nodelay(true);

    loop_.emplace("webhook " + config_.consumer, *consumer_,
                  [this](const client::Received& r, storage::Inbox::Txn&) { return handle(r); });
    loop_->start();
    // How many secrets, and from which files: never the secrets themselves.
    std::string files;
    for (const auto& f : config_.secret_files) files += (files.empty() ? "" : ", ") + f;
    spdlog::info("webhook {}: Standard Webhooks signatures with {} {} loaded ({}){}",
                 config_.consumer, config_.keys.size(),
                 config_.keys.size() == 1 ? "secret" : "secrets", files,
                 config_.keys.size() > 1 ? "; rotating: each request carries both signatures" : "");
    spdlog::info("started {}", describe());
    return {};
  }

  void stop() override {
    if (!loop_) return;
    // Cut a request in flight short: it will be Nak'ed.
    loop_->stop([this] {
      if (http_) http_->stop();
    });
    loop_.reset();
    consumer_->close();
    consumer_.reset();
    http_.reset();
    codec_.reset();
  }

 private:
  client::HandlerResult retry(const client::Received& r, std::uint64_t at_least_ms) {
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    std::uint64_t delay = webhook_retry_delay_ms(r.attempt, config_.backoff_initial_ms,
                                                 config_.backoff_max_ms, jitter(rng_));
    delay = std::max(delay, std::min<std::uint64_t>(at_least_ms, config_.backoff_max_ms));
    client::HandlerResult h;
    h.verdict = client::Verdict::kNak;
    h.delay_ms = static_cast<std::uint32_t>(std::max<std::uint64_t>(delay, 1));
    return h;
  }

  client::HandlerResult handle(const client::Received& r) {
    auto event_json = codec_->to_json(r.event);
    if (!event_json) {
      // Nothing the endpoint could be sent: retrying will not change the bytes.
      return {client::Verdict::kReject, "not representable as JSON: " + event_json.error().message,
              0};
    }
    std::string body;
    body.reserve(event_json->size() + 128);
    body += "{\"sequence\":" + std::to_string(r.sequence.value);
    body += ",\"received_at\":" + std::to_string(r.received_at);
    body += ",\"source\":" + nlohmann::json(std::string(r.source))
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    body += ",\"event\":" + *event_json + "}";

    // Standard Webhooks: the event id is the message id (the same on every attempt, as
    // Idempotency-Key), the timestamp is this attempt's, the signatures cover both and
    // the exact body bytes.
    const std::string id = r.id.to_string();
    const std::int64_t now_s = clock_.now_ms() / 1000;
    httplib::Headers headers{
        {"Idempotency-Key", id},
        {"X-Kolabus-Sequence", std::to_string(r.sequence.value)},
        {"X-Kolabus-Attempt", std::to_string(r.attempt)},
        {"webhook-id", id},
        {"webhook-timestamp", std::to_string(now_s)},
        {"webhook-signature", webhook_signature_header(config_.keys, id, now_s, body)},
    };
    for (const auto& [k, v] : config_.headers) headers.emplace(k, v);

    auto res = http_->Post(config_.path, headers, body, "application/json");
    if (!res) {
      spdlog::warn("webhook {}: seq {} attempt {}: {} ({})", config_.consumer, r.sequence.value,
                   r.attempt, httplib::to_string(res.error()), config_.url);
      return retry(r, 0);
    }
    const int status = res->status;
    if (status >= 200 && status < 300) return {};
    spdlog::warn("webhook {}: seq {} status {} attempt {} ({})", config_.consumer, r.sequence.value,
                 status, r.attempt, config_.url);
    if (status >= 500 || status == 408 || status == 429) {
      return retry(r, retry_after_ms(*res).value_or(0));
    }
    return {client::Verdict::kReject,
            "HTTP " + std::to_string(status) + " from " + config_.url + ": " +
                schemas::scrub_free_text(res->body, kMaxBodyInReason),
            0};
  }

  const WebhookConfig config_;
  const AgencyContext ctx_;  // a copy: small, and then nothing is borrowed
  std::unique_ptr<client::Consumer> consumer_;
  std::unique_ptr<httplib::Client> http_;
  std::optional<schemas::JsonCodec> codec_;  // used on the consumer thread only
  std::mt19937_64 rng_{std::random_device{}()};
  SystemClock clock_;
  std::optional<ConsumerLoop> loop_;  // runs between start() and stop()
};

}  // namespace

std::uint32_t webhook_retry_delay_ms(std::uint32_t attempt, std::uint32_t initial_ms,
                                     std::uint32_t max_ms, double jitter) {
  const std::uint32_t doublings = std::min<std::uint32_t>(attempt == 0 ? 0 : attempt - 1, 40);
  const double base =
      std::min(static_cast<double>(max_ms),
               static_cast<double>(initial_ms) * std::ldexp(1.0, static_cast<int>(doublings)));
  const double d = std::llround(base * jitter);
  return static_cast<std::uint32_t>(std::clamp(d, 1.0, 4294967295.0));
}

Result<std::unique_ptr<Adapter>> make_webhook(const toml::table& table,
                                              const AgencyContext& context) {
  auto config = parse_config(table);
  if (!config) return kolabus::unexpected(config.error());
  return std::unique_ptr<Adapter>(std::make_unique<WebhookAdapter>(std::move(*config), context));
}

}  // namespace kolabus::adapters
