// The gateway's parts without HTTP or a broker: its configuration, the body rules
// (ingest_body) and the SQLite status store.
#include <filesystem>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "ingest.h"
#include "status_store.h"
#include "temp_dir.h"
#include "test_events.h"
#include <adapters/gateway.h>
#include <common/clock.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace kolabus::adapters;
using Json = nlohmann::json;

namespace {

Result<GatewayOptions> parse(const std::string& text) {
  return parse_gateway_options(toml::parse(text));
}

}  // namespace

TEST_CASE("Gateway config: defaults, limits and errors that name the key") {
  SUBCASE("listen alone takes the defaults") {
    auto o = parse("listen = \"0.0.0.0:8080\"");
    REQUIRE(o.has_value());
    CHECK(o->host == "0.0.0.0");
    CHECK(o->port == 8080);
    CHECK(o->max_batch == 1000);
    CHECK(o->max_body_bytes == 8u * 1024 * 1024);
    CHECK(o->status_retention_days == 30);
  }
  SUBCASE("every key") {
    auto o = parse(
        "listen = \"[::1]:0\"\nmax_batch = 5\nmax_body_bytes = 1024\nstatus_retention_days = 7");
    REQUIRE(o.has_value());
    CHECK(o->host == "::1");
    CHECK(o->port == 0);
    CHECK(o->max_batch == 5);
    CHECK(o->max_body_bytes == 1024);
    CHECK(o->status_retention_days == 7);
  }
  SUBCASE("errors") {
    auto error_of = [](const std::string& text) {
      auto o = parse(text);
      REQUIRE(!o.has_value());
      CHECK(o.error().code == Errc::kInvalidArgument);
      return o.error().message;
    };
    CHECK(error_of("listen = \"127.0.0.1:1\"\nlisten_port = 3").find("listen_port") !=
          std::string::npos);
    CHECK(error_of("max_batch = 3").find("listen") != std::string::npos);
    CHECK(error_of("listen = \"localhost\"").find("listen") != std::string::npos);
    CHECK(error_of("listen = \"localhost:99999\"").find("listen") != std::string::npos);
    CHECK(error_of("listen = 8080").find("listen") != std::string::npos);
    CHECK(error_of("listen = \"h:1\"\nmax_batch = 0").find("max_batch") != std::string::npos);
    CHECK(error_of("listen = \"h:1\"\nmax_body_bytes = \"8M\"").find("max_body_bytes") !=
          std::string::npos);
    CHECK(error_of("listen = \"h:1\"\nstatus_retention_days = -1").find("status_retention_days") !=
          std::string::npos);
  }
}

TEST_CASE("Gateway factory: needs the publisher and the hub") {
  test::TempDir dir("gateway-factory");
  AgencyContext ctx;
  ctx.data_dir = dir.str("agency");
  auto g = make_gateway(toml::parse("listen = \"127.0.0.1:0\""), ctx);
  REQUIRE(!g.has_value());
  CHECK(g.error().code == Errc::kInvalidArgument);
  auto bad = make_gateway(toml::parse("listen = \"127.0.0.1:0\"\nmaxbatch = 1"), ctx);
  REQUIRE(!bad.has_value());
  CHECK(bad.error().message.find("maxbatch") != std::string::npos);
}

TEST_CASE("Gateway ingest: bodies to validated events") {
  auto codec_r = schemas::JsonCodec::create();
  REQUIRE(codec_r.has_value());
  auto& codec = *codec_r;
  const TimeMs now = SystemClock().now_ms();
  const schemas::ValidationContext rules{schemas::RegionTable::embedded(), now};
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {21, "1271", now});
  auto json_of = [&](const std::vector<std::uint8_t>& e) {
    auto t = codec.to_json(e);
    REQUIRE(t.has_value());
    return Json::parse(*t);
  };

  SUBCASE("one object is index 0; ids come from the events") {
    const Json e = json_of(gen.next());
    auto r = gateway::ingest_body(e.dump(), 10, codec, rules);
    REQUIRE(r.has_value());
    REQUIRE(r->errors.empty());
    REQUIRE(r->events.size() == 1);
    CHECK(r->events[0].id.to_string() == e["id"]);
    CHECK(!r->events[0].id_derived);
  }
  SUBCASE("without an id, the same content gives the same id whatever the key order") {
    Json e = json_of(gen.make(tools::GenKind::kDeath));
    e.erase("id");
    nlohmann::ordered_json reversed;
    std::vector<std::string> keys;
    for (auto it = e.begin(); it != e.end(); ++it) keys.push_back(it.key());
    for (auto k = keys.rbegin(); k != keys.rend(); ++k) reversed[*k] = e[*k];
    auto a = gateway::ingest_body(e.dump(), 10, codec, rules);
    auto b = gateway::ingest_body(reversed.dump(), 10, codec, rules);
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    REQUIRE(a->events.size() == 1);
    REQUIRE(b->events.size() == 1);
    CHECK(a->events[0].id_derived);
    CHECK(a->events[0].id == b->events[0].id);
  }
  SUBCASE("every invalid element is reported, and then no event is returned") {
    Json arr = Json::array();
    for (int i = 0; i < 4; ++i) arr.push_back(json_of(gen.make(tools::GenKind::kBirth)));
    arr[1]["payload"]["kk_number"] = "12";
    arr[2] = "not an event";
    arr[3]["payload"].erase("child_name");
    auto r = gateway::ingest_body(arr.dump(), 10, codec, rules);
    REQUIRE(r.has_value());
    CHECK(r->events.empty());
    CHECK(r->total == 4);
    REQUIRE(r->errors.size() == 3);
    CHECK(r->errors[0].index == 1);
    CHECK(r->errors[0].code == "InvalidKk");
    CHECK(r->errors[0].field == "payload.kk_number");
    CHECK(r->errors[1].index == 2);
    CHECK(r->errors[1].code == "MalformedEvent");
    CHECK(r->errors[2].index == 3);
    CHECK(r->errors[2].code == "MissingField");
    CHECK(r->errors[2].field == "payload.child_name");
  }
  SUBCASE("an id that is not a UUID names the field") {
    Json e = json_of(gen.next());
    e["id"] = "nope";
    auto r = gateway::ingest_body(e.dump(), 10, codec, rules);
    REQUIRE(r.has_value());
    REQUIRE(r->errors.size() == 1);
    CHECK(r->errors[0].field == "id");
  }
  SUBCASE("a wrong type names the field") {
    Json e = json_of(gen.next());
    e["occurred_at"] = "yesterday";
    auto r = gateway::ingest_body(e.dump(), 10, codec, rules);
    REQUIRE(r.has_value());
    REQUIRE(r->errors.size() == 1);
    CHECK(r->errors[0].code == "MalformedEvent");
    CHECK(r->errors[0].field == "occurred_at");
  }
  SUBCASE("body-level errors") {
    CHECK(!gateway::ingest_body("", 10, codec, rules).has_value());
    CHECK(!gateway::ingest_body("[1,", 10, codec, rules).has_value());
    CHECK(!gateway::ingest_body("\"event\"", 10, codec, rules).has_value());
    CHECK(!gateway::ingest_body("[]", 10, codec, rules).has_value());
    Json three = Json::array({json_of(gen.next()), json_of(gen.next()), json_of(gen.next())});
    auto over = gateway::ingest_body(three.dump(), 2, codec, rules);
    REQUIRE(!over.has_value());
    CHECK(over.error().code == Errc::kInvalidArgument);
    CHECK(gateway::ingest_body(three.dump(), 3, codec, rules).has_value());
  }
}

TEST_CASE("Gateway status store: queued, outcomes, rollback, pruning, reopening") {
  test::TempDir dir("gateway-store");
  const std::string path = dir.str("status.sqlite");
  const EventId a = new_uuid_v7(), b = new_uuid_v7(), stranger = new_uuid_v7();
  const EventId ab[] = {a, b};
  auto ok = []() -> Status { return {}; };
  {
    auto s = gateway::StatusStore::open(path);
    REQUIRE(s.has_value());
    auto& store = **s;
    REQUIRE(store.accept(ab, 1000, ok).has_value());
    auto qa = store.get(a);
    REQUIRE(qa.has_value());
    REQUIRE(qa->has_value());
    CHECK((*qa)->state == gateway::EventState::kQueued);
    CHECK((*qa)->updated_at == 1000);

    client::Outcome acked;
    acked.id = a;
    acked.kind = client::OutcomeKind::kAcked;
    acked.sequence = Sequence{42};
    REQUIRE(store.record(acked, 2000).has_value());
    client::Outcome refused;
    refused.id = b;
    refused.kind = client::OutcomeKind::kRefused;
    refused.refusal = {b, static_cast<std::uint16_t>(protocol::ErrorCode::UnknownTarget),
                       "payload.target_id", "payload.target_id: no such event", 2000};
    REQUIRE(store.record(refused, 2000).has_value());
    client::Outcome other = acked;
    other.id = stranger;
    REQUIRE(store.record(other, 2000).has_value());  // not ours: ignored
    auto none = store.get(stranger);
    REQUIRE(none.has_value());
    CHECK(!none->has_value());

    // A failed publish leaves every status as it was and records nothing new.
    const EventId ac[] = {a, stranger};
    auto failed = store.accept(ac, 3000, [] { return Status(unexpected(Errc::kIoError, "disk")); });
    REQUIRE(!failed.has_value());
    CHECK(failed.error().message == "disk");
    CHECK((*store.get(a))->state == gateway::EventState::kAcknowledged);
    CHECK(!store.get(stranger)->has_value());
  }
  {
    auto s = gateway::StatusStore::open(path);
    REQUIRE(s.has_value());
    auto& store = **s;
    auto sa = *store.get(a);
    REQUIRE(sa.has_value());
    CHECK(sa->state == gateway::EventState::kAcknowledged);
    CHECK(sa->sequence == 42);
    CHECK(!sa->duplicate);
    auto sb = *store.get(b);
    REQUIRE(sb.has_value());
    CHECK(sb->state == gateway::EventState::kRefused);
    CHECK(sb->code == "UnknownTarget");
    CHECK(sb->field == "payload.target_id");
    CHECK(sb->message == "payload.target_id: no such event");

    // Accepted again: queued again, until the new outcome.
    const EventId just_a[] = {a};
    REQUIRE(store.accept(just_a, 5000, ok).has_value());
    CHECK((*store.get(a))->state == gateway::EventState::kQueued);

    auto pruned = store.prune(4000);  // b was last updated at 2000
    REQUIRE(pruned.has_value());
    CHECK(*pruned == 1);
    CHECK(!store.get(b)->has_value());
    CHECK(store.get(a)->has_value());
  }
}
