// The gateway's parts without HTTP or a broker: its configuration, the body rules
// (ingest_body) and the SQLite status store.
#include <filesystem>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "auth.h"
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
  SUBCASE("an empty table takes the defaults: loopback, no TLS, no tokens") {
    auto o = parse("");
    REQUIRE(o.has_value());
    CHECK(o->host == "127.0.0.1");
    CHECK(o->port == 8080);
    CHECK(o->max_batch == 1000);
    CHECK(o->max_body_bytes == 8u * 1024 * 1024);
    CHECK(o->status_retention_days == 30);
    CHECK(o->tls_cert.empty());
    CHECK(o->tokens.empty());
    CHECK(o->header_timeout_seconds == 5);
    CHECK(o->body_timeout_seconds == 30);
    CHECK(o->max_header_bytes == 16384);
    CHECK(o->max_headers == 64);
    CHECK(o->max_connections == 64);
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

TEST_CASE("Gateway config: the edge: TLS, tokens, limits, and off loopback only with both") {
  const std::string hash(64, 'a');
  const std::string tls = "tls_cert = \"gw.crt\"\ntls_key = \"gw.key\"\n";
  const std::string tokens = "tokens = [{ name = \"simrs\", sha256 = \"" + hash + "\" }]\n";
  auto error_of = [](const std::string& text) {
    auto o = parse(text);
    REQUIRE(!o.has_value());
    CHECK(o.error().code == Errc::kInvalidArgument);
    return o.error().message;
  };
  SUBCASE("every edge key") {
    auto o = parse(tls + tokens +
                   "header_timeout_seconds = 2\nbody_timeout_seconds = 9\nmax_header_bytes = "
                   "4096\nmax_headers = 10\nmax_connections = 16\nlisten = \"0.0.0.0:8443\"");
    REQUIRE_MESSAGE(o.has_value(), o.error().message);
    CHECK(o->host == "0.0.0.0");
    CHECK(o->tls_cert == "gw.crt");
    CHECK(o->tls_key == "gw.key");
    REQUIRE(o->tokens.size() == 1);
    CHECK(o->tokens[0].name == "simrs");
    CHECK(o->tokens[0].sha256[0] == 0xaa);
    CHECK(o->header_timeout_seconds == 2);
    CHECK(o->body_timeout_seconds == 9);
    CHECK(o->max_header_bytes == 4096);
    CHECK(o->max_headers == 10);
    CHECK(o->max_connections == 16);
  }
  SUBCASE("loopback addresses need neither") {
    for (const char* host :
         {"127.0.0.1", "127.1.2.3", "localhost", "[::1]", "[::ffff:127.0.0.1]"}) {
      INFO(host);
      CHECK(parse(std::string("listen = \"") + host + ":8080\"").has_value());
    }
  }
  SUBCASE("any other address needs TLS and tokens, and says which is missing") {
    for (const char* host : {"0.0.0.0", "[::]", "10.1.2.3", "gateway.example"}) {
      INFO(host);
      const std::string listen = std::string("listen = \"") + host + ":8443\"\n";
      const auto neither = error_of(listen);
      CHECK(neither.find("loopback") != std::string::npos);
      CHECK(neither.find("TLS") != std::string::npos);
      CHECK(neither.find("tokens") != std::string::npos);
      const auto no_tokens = error_of(listen + tls);
      CHECK(no_tokens.find("missing tokens") != std::string::npos);
      const auto no_tls = error_of(listen + tokens);
      CHECK(no_tls.find("missing TLS") != std::string::npos);
      CHECK(parse(listen + tls + tokens).has_value());
    }
  }
  SUBCASE("errors") {
    CHECK(error_of("tls_cert = \"a.crt\"").find("tls_key") != std::string::npos);
    CHECK(error_of("tls_key = \"a.key\"").find("tls_cert") != std::string::npos);
    CHECK(error_of("tokens = \"secret\"").find("tokens") != std::string::npos);
    CHECK(error_of("tokens = [{ name = \"a\" }]").find("tokens[0]") != std::string::npos);
    CHECK(error_of("tokens = [{ name = \"a\", sha256 = \"abc\" }]").find("tokens[0].sha256") !=
          std::string::npos);
    CHECK(error_of("tokens = [{ name = \"a b\", sha256 = \"" + hash + "\" }]")
              .find("tokens[0].name") != std::string::npos);
    CHECK(error_of("tokens = [{ name = \"a\", sha256 = \"" + hash + "\", token = \"x\" }]")
              .find("tokens[0].token") != std::string::npos);
    CHECK(error_of(tokens.substr(0, tokens.size() - 2) + ", { name = \"simrs\", sha256 = \"" +
                   std::string(64, 'b') + "\" }]")
              .find("twice") != std::string::npos);
    CHECK(error_of(tokens.substr(0, tokens.size() - 2) + ", { name = \"other\", sha256 = \"" +
                   std::string(64, 'A') + "\" }]")
              .find("twice") != std::string::npos);
    CHECK(error_of("header_timeout_seconds = 0").find("header_timeout_seconds") !=
          std::string::npos);
    CHECK(error_of("max_header_bytes = 10").find("max_header_bytes") != std::string::npos);
    CHECK(error_of("max_connections = 100000").find("max_connections") != std::string::npos);
  }
}

TEST_CASE("Gateway tokens: the client a bearer token names, anything else is nobody") {
  REQUIRE(sodium_init() >= 0);
  auto entry = [](const std::string& name, const std::string& token) {
    GatewayToken t;
    t.name = name;
    crypto_hash_sha256(t.sha256.data(), reinterpret_cast<const unsigned char*>(token.data()),
                       token.size());
    return t;
  };
  const gateway::TokenSet set({entry("simrs", "kgw_one"), entry("lab", "kgw_two")});
  CHECK(set.authenticate("Bearer kgw_one") == "simrs");
  CHECK(set.authenticate("bearer kgw_two") == "lab");
  CHECK(set.authenticate("BEARER   kgw_two  ") == "lab");
  CHECK(!set.authenticate("Bearer kgw_three"));
  CHECK(!set.authenticate("Bearer kgw_on"));
  CHECK(!set.authenticate("Bearer "));
  CHECK(!set.authenticate("kgw_one"));
  CHECK(!set.authenticate("Basic kgw_one"));
  CHECK(!set.authenticate(""));
  CHECK(gateway::parse_sha256_hex(std::string(64, 'F')).has_value());
  CHECK(!gateway::parse_sha256_hex(std::string(63, 'a')));
  CHECK(!gateway::parse_sha256_hex(std::string(64, 'g')));
}

TEST_CASE("Gateway ingest: empty, deep, non-UTF-8 bodies are 400s with printable messages") {
  auto codec = schemas::JsonCodec::create();
  REQUIRE(codec.has_value());
  const schemas::ValidationContext rules{schemas::RegionTable::embedded(), SystemClock().now_ms()};
  for (const std::string& body :
       {std::string(), std::string(33, '[') + std::string(33, ']'), std::string("\xff\xfe"),
        std::string("{\"a\": \"\xff\"}"), std::string("[{\"a\": [") + std::string(40, '{')}) {
    auto r = gateway::ingest_body(body, 10, *codec, rules);
    REQUIRE(!r.has_value());
    CHECK(r.error().code == Errc::kInvalidArgument);
  }
  // Brackets inside strings do not count as nesting.
  const std::string in_string = "{\"x\": \"" + std::string(100, '[') + "\"}";
  auto r = gateway::ingest_body(in_string, 10, *codec, rules);
  REQUIRE(r.has_value());
  CHECK(r->errors.size() == 1);
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
