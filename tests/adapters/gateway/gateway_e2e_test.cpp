// The HTTP gateway end to end: an httplib client posts JSON to a GatewayAdapter whose
// Publisher sends to a real kolabus-broker process; statuses come back through the
// OutcomeHub, exactly as the adapter runner wires it.
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "gateway_support.h"

using namespace kolabus;
using namespace kolabus::gwtest;

TEST_CASE("Gateway: a single event is accepted, then acknowledged with its sequence") {
  Agency a;
  auto c = a.http();
  const Json event = generate(1, 1)[0];
  auto r = post(c, event);
  const Json body = body_of(r);
  REQUIRE(r->status == 202);
  REQUIRE(body["ids"].size() == 1);
  CHECK(body["ids"][0] == event["id"]);

  const Json st = wait_status(c, event["id"], "acknowledged");
  CHECK(st["id"] == event["id"]);
  CHECK(st["sequence"].get<std::uint64_t>() >= 1);
  CHECK(st["duplicate"] == false);

  auto h = c.Get("/v1/health");
  REQUIRE(h);
  CHECK(h->status == 200);
  const Json health = Json::parse(h->body);
  CHECK(health["status"] == "ok");
  CHECK(health["pending"] == 0);
}

TEST_CASE("Gateway: an event without an id gets one derived from its content") {
  Agency a;
  auto c = a.http();
  Json event = generate(1, 2)[0];
  event.erase("id");
  auto first = post(c, event);
  REQUIRE(first);
  REQUIRE(first->status == 202);
  const auto id = ids_of(Json::parse(first->body)).at(0);
  CHECK(id.substr(14, 1) == "8");  // UUID version 8: derived
  wait_status(c, id, "acknowledged");
  auto again = post(c, event);
  REQUIRE(again);
  REQUIRE(again->status == 202);
  CHECK(ids_of(Json::parse(again->body)).at(0) == id);
  // The resubmission was queued again and the broker recognised it.
  test::wait_until([&] { return status_of(c, id)["duplicate"] == true; }, 20s);
  CHECK(status_of(c, id)["duplicate"] == true);
}

TEST_CASE("Gateway: a batch of 100 is acknowledged, and sent again is a duplicate") {
  Agency a;
  auto c = a.http();
  const auto events = generate(100, 3);
  const Json batch = events;

  auto r = post(c, batch);
  const Json body = body_of(r);
  REQUIRE(r->status == 202);
  const auto ids = ids_of(body);
  REQUIRE(ids.size() == 100);
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == events[i]["id"]);

  std::set<std::uint64_t> sequences;
  for (const auto& id : ids) {
    const Json st = wait_status(c, id, "acknowledged");
    CHECK(st["duplicate"] == false);
    sequences.insert(st["sequence"].get<std::uint64_t>());
  }
  CHECK(sequences.size() == 100);
  CHECK(a.publisher->stats().acked == 100);

  auto again = post(c, batch);
  REQUIRE(again);
  REQUIRE(again->status == 202);
  CHECK(ids_of(Json::parse(again->body)) == ids);
  // Not wait_drained(): the outbox empties just before the outcome callbacks run.
  for (const auto& id : ids) {
    test::wait_until([&] { return status_of(c, id)["duplicate"] == true; }, 20s);
    const Json st = status_of(c, id);
    CHECK(st["status"] == "acknowledged");
    CHECK(st["duplicate"] == true);
    CHECK(sequences.count(st["sequence"].get<std::uint64_t>()) == 1);
  }
  CHECK(a.publisher->stats().duplicates == 100);
}

TEST_CASE("Gateway: bad requests are refused with JSON errors and queue nothing") {
  Agency a("max_batch = 10\nmax_body_bytes = 65536\n");
  auto c = a.http();

  SUBCASE("not JSON is a 400") {
    auto r = c.Post("/v1/events", "{\"id\": ", "application/json");
    const Json body = body_of(r);
    CHECK(r->status == 400);
    CHECK(body["error"].get<std::string>().find("not JSON") != std::string::npos);
  }
  SUBCASE("JSON that is neither an object nor an array is a 400") {
    auto r = c.Post("/v1/events", "42", "application/json");
    CHECK(body_of(r).contains("error"));
    CHECK(r->status == 400);
  }
  SUBCASE("an array longer than max_batch is a 400") {
    auto r = post(c, Json(generate(11, 4)));
    const Json body = body_of(r);
    CHECK(r->status == 400);
    CHECK(body["error"].get<std::string>().find("max_batch") != std::string::npos);
  }
  SUBCASE("a body over max_body_bytes is a 400") {
    auto r = c.Post("/v1/events", std::string(70000, ' ') + "{}", "application/json");
    const Json body = body_of(r);
    CHECK(r->status == 400);
    CHECK(body["error"].get<std::string>().find("max_body_bytes") != std::string::npos);
  }
  SUBCASE("another content type is a 415") {
    auto r = c.Post("/v1/events", generate(1, 5)[0].dump(), "text/plain");
    CHECK(body_of(r).contains("error"));
    CHECK(r->status == 415);
  }
  SUBCASE("an unknown field is a 422 naming it") {
    Json event = generate(1, 6)[0];
    event["colour"] = "blue";
    auto r = post(c, event);
    const Json body = body_of(r);
    CHECK(r->status == 422);
    CHECK(body["errors"][0]["index"] == 0);
    CHECK(body["errors"][0]["code"] == "MalformedEvent");
    CHECK(body["errors"][0]["field"] == "colour");
  }
  SUBCASE("an invalid NIK in the 3rd of 5 is a 422 naming index 2; none is queued") {
    auto events = generate(5, 7, /*births=*/true);
    events[2]["payload"]["mother_nik"] = "12710152039500";  // 14 digits
    auto r = post(c, Json(events));
    const Json body = body_of(r);
    REQUIRE(r->status == 422);
    REQUIRE(body["errors"].size() == 1);
    CHECK(body["errors"][0]["index"] == 2);
    CHECK(body["errors"][0]["code"] == "InvalidNik");
    CHECK(body["errors"][0]["field"] == "payload.mother_nik");
    CHECK(body["errors"][0]["message"].get<std::string>().find("16 digits") != std::string::npos);
    CHECK(body["error"] == "1 of 5 events break the rules; none was queued");

    // Nothing reached the outbox, and no status was recorded.
    CHECK(a.publisher->stats().pending == 0);
    for (const auto& e : events) {
      auto g = c.Get("/v1/events/" + e["id"].get<std::string>());
      REQUIRE(g);
      CHECK(g->status == 404);
    }
    // A later event is the first the broker sees: had the four valid ones been queued,
    // they would have been acknowledged before it (outbox order).
    const Json sentinel = generate(1, 8)[0];
    auto s = post(c, sentinel);
    REQUIRE(s);
    REQUIRE(s->status == 202);
    const Json st = wait_status(c, sentinel["id"], "acknowledged");
    CHECK(st["sequence"] == 1);
    CHECK(a.publisher->stats().acked == 1);
  }
  SUBCASE("an unknown id is a 404, a malformed one a 400") {
    auto r = c.Get("/v1/events/" + new_uuid_v7().to_string());
    CHECK(body_of(r).contains("error"));
    CHECK(r->status == 404);
    auto m = c.Get("/v1/events/not-a-uuid");
    CHECK(body_of(m).contains("error"));
    CHECK(m->status == 400);
  }
  SUBCASE("unknown paths are 404, wrong methods 405") {
    auto r = c.Get("/v2/things");
    CHECK(body_of(r).contains("error"));
    CHECK(r->status == 404);
    auto g = c.Get("/v1/events");
    CHECK(body_of(g).contains("error"));
    CHECK(g->status == 405);
    CHECK(g->get_header_value("Allow") == "POST");
    auto d = c.Delete("/v1/events/" + new_uuid_v7().to_string());
    CHECK(body_of(d).contains("error"));
    CHECK(d->status == 405);
    auto p = c.Post("/v1/health", "{}", "application/json");
    CHECK(body_of(p).contains("error"));
    CHECK(p->status == 405);
  }
  CHECK(a.publisher->stats().acked <= 1);
}

TEST_CASE("Gateway: a correction of an event the broker does not hold is refused") {
  Agency a;
  auto c = a.http();
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {9, "1271", SystemClock().now_ms()});
  const std::string village = gen.city_villages().front();
  const Json correction =
      to_json(test::make_void(new_uuid_v7(), {village}, SystemClock().now_ms()));

  auto r = post(c, correction);
  const Json body = body_of(r);
  REQUIRE(r->status == 202);  // the local rules cannot know the broker's log
  const Json st = wait_status(c, body["ids"][0], "refused");
  CHECK(st["code"] == "UnknownTarget");
  CHECK(st.contains("field"));
  CHECK(!st["message"].get<std::string>().empty());
}

TEST_CASE("Gateway: statuses survive a restart of the gateway") {
  Agency a;
  auto c = a.http();
  const auto events = generate(3, 10);
  auto r = post(c, Json(events));
  REQUIRE(r);
  REQUIRE(r->status == 202);
  const auto ids = ids_of(Json::parse(r->body));
  const Json void_of_nothing =
      to_json(test::make_void(new_uuid_v7(), {events[0]["regions"][0]}, SystemClock().now_ms()));
  auto v = post(c, void_of_nothing);
  REQUIRE(v);
  REQUIRE(v->status == 202);
  const std::string refused_id = void_of_nothing["id"];
  std::vector<Json> before;
  for (const auto& id : ids) before.push_back(wait_status(c, id, "acknowledged"));
  before.push_back(wait_status(c, refused_id, "refused"));

  a.gateway->stop();
  a.gateway.reset();
  a.start_gateway();  // same data_dir, possibly another port
  auto c2 = a.http();
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(status_of(c2, ids[i]) == before[i]);
  CHECK(status_of(c2, refused_id) == before.back());

  // And the new instance records outcomes of what it accepts.
  const Json more = generate(1, 11)[0];
  auto m = post(c2, more);
  REQUIRE(m);
  REQUIRE(m->status == 202);
  wait_status(c2, more["id"], "acknowledged");
}

TEST_CASE("Gateway: stop() returns promptly and start() again serves") {
  Agency a;
  auto c = a.http();
  auto h = c.Get("/v1/health");
  REQUIRE(h);
  CHECK(h->status == 200);
  const auto t0 = std::chrono::steady_clock::now();
  a.gateway->stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  auto gone = c.Get("/v1/health");
  CHECK(!gone);  // connection refused
  REQUIRE(a.gateway->start().has_value());
  a.port = dynamic_cast<adapters::GatewayAdapter&>(*a.gateway).port();
  auto c2 = a.http();
  auto back = c2.Get("/v1/health");
  REQUIRE(back);
  CHECK(back->status == 200);
}
