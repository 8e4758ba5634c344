// Helpers of the gateway's end-to-end tests: a real broker, the agency's publisher and
// outcome hub, and a GatewayAdapter built from a [[gateway]] table on a free port.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "broker_process.h"
#include "temp_dir.h"
#include "test_events.h"
#include <adapters/gateway.h>
#include <client/publisher.h>
#include <common/clock.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace kolabus::gwtest {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// A broker, the agency's publisher and hub, and a gateway on a free port.
struct Agency {
  explicit Agency(const std::string& extra_toml = "")
      : dir("gateway-e2e"), broker(dir.str("broker")) {
    client::PublisherOptions po;
    po.endpoint = broker.endpoint();
    po.outbox_dir = dir.str("agency/outbox");
    po.backoff_initial = 20ms;
    po.backoff_max = 200ms;
    std::filesystem::create_directories(dir.str("agency"));
    auto p = client::Publisher::open(po, [this](const client::Outcome& o) { hub.notify(o); });
    REQUIRE_MESSAGE(p.has_value(), (p.has_value() ? "" : p.error().to_string()));
    publisher = std::move(*p);
    ctx.agency = "disdukcapil-medan";
    ctx.broker = broker.endpoint();
    ctx.data_dir = dir.str("agency");
    ctx.publisher = publisher.get();
    ctx.outcomes = &hub;
    toml = "listen = \"127.0.0.1:0\"\n" + extra_toml;
    start_gateway();
  }
  ~Agency() {
    gateway.reset();  // before the publisher, whose thread calls into the hub
    publisher.reset();
  }

  void start_gateway() {
    auto table = toml::parse(toml);
    auto g = adapters::make_gateway(table, ctx);
    REQUIRE_MESSAGE(g.has_value(), (g.has_value() ? "" : g.error().to_string()));
    gateway = std::move(*g);
    REQUIRE(gateway->start().has_value());
    hub.open();  // as the runner does once its adapters are built (a no-op the second time)
    port = dynamic_cast<adapters::GatewayAdapter&>(*gateway).port();
    REQUIRE(port > 0);
  }

  httplib::Client http() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5s);
    c.set_read_timeout(20s);
    return c;
  }

  test::TempDir dir;
  test::BrokerProcess broker;
  adapters::OutcomeHub hub;  // declared before the publisher, which calls it
  std::unique_ptr<client::Publisher> publisher;
  adapters::AgencyContext ctx;
  std::string toml;
  std::unique_ptr<adapters::Adapter> gateway;
  int port = 0;
};

inline schemas::JsonCodec& codec() {
  static schemas::JsonCodec c = [] {
    auto r = schemas::JsonCodec::create();
    KOLABUS_CHECK(r.has_value());
    return std::move(*r);
  }();
  return c;
}

inline Json to_json(const std::vector<std::uint8_t>& event) {
  auto text = codec().to_json(event);
  REQUIRE(text.has_value());
  return Json::parse(*text);
}

// `n` realistic events as JSON objects (births only if `births`).
inline std::vector<Json> generate(std::size_t n, std::uint64_t seed, bool births = false) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  std::vector<Json> out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(to_json(births ? gen.make(tools::GenKind::kBirth) : gen.next()));
  }
  return out;
}

inline httplib::Result post(httplib::Client& c, const Json& body) {
  return c.Post("/v1/events", body.dump(), "application/json");
}

inline Json body_of(const httplib::Result& r) {
  REQUIRE(r);
  INFO("body: " << r->body);
  REQUIRE(r->get_header_value("Content-Type") == "application/json");
  return Json::parse(r->body);
}

inline Json status_of(httplib::Client& c, const std::string& id) {
  auto r = c.Get("/v1/events/" + id);
  REQUIRE(r);
  REQUIRE_MESSAGE(r->status == 200, r->body);
  return Json::parse(r->body);
}

// Polls GET /v1/events/{id} until its status is `want`; returns the last answer.
inline Json wait_status(httplib::Client& c, const std::string& id, const std::string& want) {
  Json last;
  const bool ok = test::wait_until(
      [&] {
        last = status_of(c, id);
        return last["status"] == want;
      },
      20s);
  INFO("last status of " << id << ": " << last.dump());
  REQUIRE(ok);
  return last;
}

inline std::vector<std::string> ids_of(const Json& accepted) {
  std::vector<std::string> out;
  for (const auto& id : accepted.at("ids")) out.push_back(id.get<std::string>());
  return out;
}

}  // namespace kolabus::gwtest
