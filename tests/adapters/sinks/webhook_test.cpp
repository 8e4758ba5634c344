// The webhook sink end to end: a real broker, events from the Publisher, and an
// httplib server on 127.0.0.1 (port chosen at run time) playing the agency's endpoint,
// scripted to fail, refuse or hang. Signatures: webhook_signing_test.cpp.
#include <algorithm>
#include <map>
#include <set>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "webhook_support.h"
#include <adapters/webhook.h>
#include <adapters/webhook_signature.h>
#include <schemas/free_text.h>

using namespace kolabus;
using namespace std::chrono_literals;
using test::context;
using test::Endpoint;
using test::error_of;
using test::generate;
using test::Hit;
using test::ids_of;
using test::make;
using test::Reply;
using test::webhook_table;

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
      // Standard Webhooks: the event id on every attempt, each attempt's own time, and
      // a signature of both and the body.
      CHECK(tries[i].webhook_id == key);
      const std::int64_t ts = std::stoll("0" + tries[i].webhook_timestamp);
      CHECK(std::llabs(ts - tries[i].received_s) <= 2);
      auto verified =
          adapters::verify_webhook({test::key_of(test::shared_secret_file())}, tries[i].webhook_id,
                                   tries[i].webhook_timestamp, tries[i].webhook_signature,
                                   tries[i].body, tries[i].received_s);
      CHECK_MESSAGE(verified.has_value(), (verified ? "" : verified.error().message));
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
    t.insert_or_assign("headers", toml::table{{"Webhook-Signature", "v1,x"}});
    CHECK(error_of(t).find("Webhook-Signature") != std::string::npos);
  }
  SUBCASE("no secret_file") {
    toml::table t = ok;
    t.erase("secret_file");
    const std::string e = error_of(t);
    CHECK(e.find("secret_file") != std::string::npos);
    CHECK(e.find("kolabus keygen c --webhook") != std::string::npos);
  }
  SUBCASE("a secret_file that does not exist") {
    toml::table t = ok;
    t.insert_or_assign("secret_file", "/nonexistent/c.whsec");
    const std::string e = error_of(t);
    CHECK(e.find("secret_file") != std::string::npos);
    CHECK(e.find("/nonexistent/c.whsec") != std::string::npos);
  }
  SUBCASE("the same secret as previous_secret_file") {
    toml::table t = ok;
    t.insert("previous_secret_file", test::shared_secret_file());
    CHECK(error_of(t).find("previous_secret_file") != std::string::npos);
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
