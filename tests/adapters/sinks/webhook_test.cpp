// The webhook sink end to end: a real broker, events from the Publisher, and an
// httplib server on 127.0.0.1 (port chosen at run time) playing the agency's endpoint,
// scripted to fail, refuse or hang.
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker_process.h"
#include "sinks_support.h"
#include "temp_dir.h"
#include "test_events.h"
#include <adapters/webhook.h>
#include <common/clock.h>
#include <schemas/free_text.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

struct Hit {
  std::string key;  // Idempotency-Key
  std::uint32_t attempt = 0;
  std::uint64_t sequence = 0;
  std::string api_key;
  std::string content_type;
  std::string body;
  int status = 0;  // what the server answered
  std::chrono::steady_clock::time_point at;
};

struct Reply {
  int status = 200;
  std::string body;
  bool hang = false;  // wait (until the test ends, at most 5 s) before answering
};

// The agency's endpoint. `script` decides each answer from the request and how many
// requests with the same Idempotency-Key came before it.
class Endpoint {
 public:
  using Script = std::function<Reply(const Hit&, std::size_t earlier_with_key)>;

  explicit Endpoint(Script script) : script_(std::move(script)) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      Hit h;
      h.key = req.get_header_value("Idempotency-Key");
      h.attempt =
          static_cast<std::uint32_t>(std::stoul("0" + req.get_header_value("X-Kolabus-Attempt")));
      h.sequence = std::stoull("0" + req.get_header_value("X-Kolabus-Sequence"));
      h.api_key = req.get_header_value("X-Api-Key");
      h.content_type = req.get_header_value("Content-Type");
      h.body = req.body;
      h.at = std::chrono::steady_clock::now();
      Reply r;
      {
        std::lock_guard lock(mu_);
        std::size_t earlier = 0;
        for (const auto& x : hits_) earlier += x.key == h.key ? 1 : 0;
        r = script_(h, earlier);
        h.status = r.hang ? 0 : r.status;
        hits_.push_back(h);
      }
      if (r.hang) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, 5s, [this] { return released_; });
      }
      res.status = r.status;
      res.set_content(r.body, "text/plain");
    });
    server_.set_tcp_nodelay(true);
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Endpoint() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<Hit> hits() {
    std::lock_guard lock(mu_);
    return hits_;
  }
  std::set<std::string> keys_answered(int status) {
    std::set<std::string> out;
    for (const auto& h : hits()) {
      if (h.status == status) out.insert(h.key);
    }
    return out;
  }

 private:
  Script script_;
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::vector<Hit> hits_;
};

test::Events generate(std::size_t n, std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  test::Events out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
  return out;
}

std::set<std::string> ids_of(const test::Events& evs) {
  std::set<std::string> out;
  for (const auto& e : evs) out.insert(test::id_of(e).to_string());
  return out;
}

toml::table webhook_table(const std::string& consumer, const std::string& url) {
  toml::table t;
  t.insert("consumer", consumer);
  t.insert("url", url);
  t.insert("backoff_initial_ms", 50);
  t.insert("backoff_max_ms", 1000);
  t.insert("timeout_ms", 1000);
  t.insert("ack_wait_ms", 9000);  // above 2 x timeout_ms x the default window of 4
  return t;
}

adapters::AgencyContext context(const test::TempDir& dir, const test::BrokerProcess& broker) {
  adapters::AgencyContext ctx;
  ctx.agency = "test-agency";
  ctx.broker = broker.endpoint();
  ctx.data_dir = dir.str("agency");
  return ctx;
}

std::unique_ptr<adapters::Adapter> make(const toml::table& t, const adapters::AgencyContext& ctx) {
  auto a = adapters::make_webhook(t, ctx);
  REQUIRE_MESSAGE(a.has_value(), (a.has_value() ? "" : a.error().message));
  return std::move(*a);
}

std::string error_of(const toml::table& t) {
  adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", "/tmp/none"};
  auto a = adapters::make_webhook(t, ctx);
  REQUIRE_FALSE(a.has_value());
  return a.error().message;
}

}  // namespace

TEST_CASE("Webhook: 503s are retried with growing backoff until every event is delivered") {
  test::TempDir dir("webhook");
  test::BrokerProcess broker(dir.str("broker"));
  constexpr std::size_t kFailures = 4;  // per event, then 200
  Endpoint endpoint([](const Hit&, std::size_t earlier) {
    return earlier < kFailures ? Reply{503, "busy"} : Reply{200, "ok"};
  });
  const auto evs = generate(6, 21);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);

  toml::table t = webhook_table("hook", endpoint.url());
  t.insert("headers", toml::table{{"X-Api-Key", "s3cret"}});
  const auto ctx = context(dir, broker);
  auto adapter = make(t, ctx);
  REQUIRE(test::started(*adapter));
  REQUIRE(test::wait_until([&] { return endpoint.keys_answered(200) == ids_of(evs); }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "hook"); }));
  adapter->stop();

  const auto hits = endpoint.hits();
  std::map<std::string, std::vector<Hit>> by_key;
  for (const auto& h : hits) by_key[h.key].push_back(h);
  CHECK(by_key.size() == evs.size());
  for (const auto& e : evs) {
    const std::string key = test::id_of(e).to_string();
    const auto& tries = by_key[key];
    REQUIRE(tries.size() == kFailures + 1);  // and nothing after the 200
    for (std::size_t i = 0; i < tries.size(); ++i) {
      CHECK(tries[i].attempt == i + 1);
      CHECK(tries[i].status == (i < kFailures ? 503 : 200));
      CHECK(tries[i].api_key == "s3cret");
      CHECK(tries[i].content_type == "application/json");
    }
    // Backoff 50 ms * 2^(attempt-1), jittered by 0.5..1.5: each gap is at least half
    // its nominal value, and the last (nominal 400 ms) exceeds the first (at most 75).
    std::vector<double> gaps;
    for (std::size_t i = 1; i < tries.size(); ++i) {
      gaps.push_back(
          std::chrono::duration<double, std::milli>(tries[i].at - tries[i - 1].at).count());
      CHECK(gaps.back() >= 0.5 * 50.0 * static_cast<double>(1u << (i - 1)) - 2.0);
    }
    INFO("gaps " << gaps[0] << " " << gaps[1] << " " << gaps[2] << " " << gaps[3]);
    CHECK(gaps.back() > gaps.front());
    CHECK(gaps.back() < 5000.0);

    // The body: the log position, the broker's time and source, and the event itself.
    const auto body = nlohmann::json::parse(tries.back().body);
    CHECK(body["sequence"].get<std::uint64_t>() == tries.back().sequence);
    CHECK(body["received_at"].get<std::int64_t>() > 0);
    CHECK(body.contains("source"));
    CHECK(body["event"].is_object());
    CHECK(body["event"]["id"] == key);
    CHECK(body["event"]["regions"] == nlohmann::json(test::regions_of(e)));
  }
}

TEST_CASE("Webhook: a pending retry survives an adapter restart") {
  test::TempDir dir("webhook");
  test::BrokerProcess broker(dir.str("broker"));
  Endpoint endpoint([](const Hit&, std::size_t earlier) {
    return earlier < 2 ? Reply{500, "down"} : Reply{200, "ok"};
  });
  const auto evs = generate(1, 22);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  const auto ctx = context(dir, broker);
  toml::table t = webhook_table("hook", endpoint.url());
  t.insert_or_assign("backoff_initial_ms", 300);
  {
    auto adapter = make(t, ctx);
    REQUIRE(test::started(*adapter));
    REQUIRE(test::wait_until([&] { return !endpoint.hits().empty(); }));
    adapter->stop();  // the Nak (retry in ~300 ms) is with the broker now
  }
  auto adapter = make(t, ctx);
  REQUIRE(test::started(*adapter));
  REQUIRE(test::wait_until([&] { return endpoint.keys_answered(200) == ids_of(evs); }));
  const auto hits = endpoint.hits();
  REQUIRE(hits.size() == 3);
  CHECK(hits[0].attempt < hits[1].attempt);
  CHECK(hits[1].attempt < hits[2].attempt);
  adapter->stop();
}

TEST_CASE("Webhook: a 4xx sends the event to the dead letters with the status and body") {
  test::TempDir dir("webhook");
  test::BrokerProcess broker(dir.str("broker"));
  const std::string long_tail(2000, 'x');
  Endpoint endpoint([&](const Hit&, std::size_t) {
    return Reply{422, "unknown village code for NIK 1271014507900001 " + long_tail};
  });
  const auto evs = generate(2, 23);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  const auto ctx = context(dir, broker);
  auto adapter = make(webhook_table("hook4", endpoint.url()), ctx);
  REQUIRE(test::started(*adapter));

  auto admin = client::AdminClient::connect(broker.endpoint(), 5s);
  REQUIRE(admin.has_value());
  std::vector<client::DeadLetterView> dead;
  REQUIRE(test::wait_until([&] {
    auto d = (*admin)->dlq_list("hook4", 0, 100);
    if (!d) return false;  // UnknownConsumer until the adapter has subscribed
    dead = *d;
    return dead.size() == evs.size();
  }));
  for (const auto& d : dead) {
    CHECK(d.attempts == 1);
    CHECK(d.reason.find("422") != std::string::npos);
    CHECK(d.reason.find("unknown village code") != std::string::npos);
    // The body is the receiving system's free text: scrubbed and cut.
    CHECK(d.reason.find("1271014507900001") == std::string::npos);
    CHECK(d.reason.find("[number withheld]") != std::string::npos);
    CHECK(d.reason.size() <= schemas::kMaxStoredReasonBytes);
  }
  CHECK(endpoint.hits().size() == evs.size());  // no retries
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "hook4"); }));
  adapter->stop();
}

TEST_CASE("Webhook: an endpoint slower than timeout_ms is retried") {
  test::TempDir dir("webhook");
  test::BrokerProcess broker(dir.str("broker"));
  Endpoint endpoint([](const Hit&, std::size_t earlier) {
    Reply r{200, "ok"};
    r.hang = earlier == 0;
    return r;
  });
  const auto evs = generate(1, 24);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  const auto ctx = context(dir, broker);
  toml::table t = webhook_table("slow", endpoint.url());
  t.insert_or_assign("timeout_ms", 200);
  auto adapter = make(t, ctx);
  REQUIRE(test::started(*adapter));
  REQUIRE(test::wait_until([&] { return endpoint.keys_answered(200) == ids_of(evs); }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "slow"); }));
  adapter->stop();
  const auto hits = endpoint.hits();
  REQUIRE(hits.size() == 2);
  CHECK(hits[0].attempt == 1);
  CHECK(hits[1].attempt == 2);
  // The second request waited for the first to time out (200 ms) and the backoff.
  CHECK(hits[1].at - hits[0].at >= 200ms);
}

TEST_CASE("Webhook: the table is checked, errors name the key") {
  toml::table ok = webhook_table("c", "http://127.0.0.1:9/x");
  {
    adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", "/tmp/none"};
    auto a = adapters::make_webhook(ok, ctx);
    REQUIRE(a.has_value());
    CHECK((*a)->describe().find("http://127.0.0.1:9/x") != std::string::npos);
  }
  SUBCASE("unknown key") {
    toml::table t = ok;
    t.insert("retries", 3);
    CHECK(error_of(t).find("retries") != std::string::npos);
  }
  SUBCASE("missing url") {
    toml::table t = ok;
    t.erase("url");
    CHECK(error_of(t).find("url") != std::string::npos);
  }
  SUBCASE("not http") {
    toml::table t = ok;
    t.insert_or_assign("url", "ftp://example.org/");
    CHECK(error_of(t).find("url") != std::string::npos);
  }
  SUBCASE("unknown kind") {
    toml::table t = ok;
    t.insert("kinds", toml::array{"birth", "marriage"});
    CHECK(error_of(t).find("marriage") != std::string::npos);
  }
  SUBCASE("bad region prefix") {
    toml::table t = ok;
    t.insert("regions", toml::array{"12710"});
    CHECK(error_of(t).find("regions") != std::string::npos);
  }
  SUBCASE("ack_wait_ms not above the request time") {
    toml::table t = ok;
    t.insert_or_assign("ack_wait_ms", 1500);  // timeout_ms 1000: a request may take 2000
    CHECK(error_of(t).find("ack_wait_ms") != std::string::npos);
  }
  SUBCASE("ack_wait_ms not above a full window of slow requests") {
    toml::table t = ok;
    t.insert("window", 10);  // 10 requests of up to 2 s each before the last is sent
    CHECK(error_of(t).find("window") != std::string::npos);
  }
  SUBCASE("a header the adapter sets") {
    toml::table t = ok;
    t.insert("headers", toml::table{{"Idempotency-Key", "x"}});
    CHECK(error_of(t).find("Idempotency-Key") != std::string::npos);
  }
  SUBCASE("bad consumer name") {
    toml::table t = ok;
    t.insert_or_assign("consumer", "a b");
    CHECK(error_of(t).find("consumer") != std::string::npos);
  }
}

TEST_CASE("Webhook: the retry delay doubles per attempt up to the maximum, jittered") {
  CHECK(adapters::webhook_retry_delay_ms(1, 500, 60000, 1.0) == 500);
  CHECK(adapters::webhook_retry_delay_ms(2, 500, 60000, 1.0) == 1000);
  CHECK(adapters::webhook_retry_delay_ms(4, 500, 60000, 1.0) == 4000);
  CHECK(adapters::webhook_retry_delay_ms(8, 500, 60000, 1.0) == 60000);
  CHECK(adapters::webhook_retry_delay_ms(1000, 500, 60000, 1.0) == 60000);
  CHECK(adapters::webhook_retry_delay_ms(3, 500, 60000, 0.5) == 1000);
  CHECK(adapters::webhook_retry_delay_ms(3, 500, 60000, 1.5) == 3000);
}
