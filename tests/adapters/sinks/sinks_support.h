// Helpers shared by the sink adapters' end-to-end tests: publishing through the client
// library's Publisher, and reading a consumer's state with the AdminClient.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <adapters/adapter.h>
#include <client/admin.h>
#include <client/publisher.h>

namespace kolabus::test {

using Events = std::vector<std::vector<std::uint8_t>>;

inline void publish_all(const std::string& endpoint, const std::string& outbox, const Events& evs) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.outbox_dir = outbox;
  o.ack_timeout = std::chrono::milliseconds(1000);
  o.backoff_initial = std::chrono::milliseconds(20);
  o.backoff_max = std::chrono::milliseconds(300);
  auto pub = client::Publisher::open(o);
  REQUIRE(pub.has_value());
  for (const auto& e : evs) REQUIRE((*pub)->publish(e).has_value());
  REQUIRE((*pub)->wait_drained(std::chrono::seconds(20)));
  REQUIRE((*pub)->stats().refused == 0);
}

// The consumer as the broker reports it, if it exists.
inline std::optional<client::ConsumerInfoView> consumer_info(const std::string& endpoint,
                                                             const std::string& name) {
  auto admin = client::AdminClient::connect(endpoint, std::chrono::seconds(5));
  REQUIRE(admin.has_value());
  auto list = (*admin)->list_consumers();
  REQUIRE(list.has_value());
  for (auto& c : *list) {
    if (c.name == name) return c;
  }
  return std::nullopt;
}

// Every matching event acknowledged (or dead) and nothing out for delivery.
inline bool caught_up(const std::string& endpoint, const std::string& name) {
  auto c = consumer_info(endpoint, name);
  return c && c->lag == 0 && c->pending == 0;
}

// Starts the adapter; a failure is reported with its message.
inline bool started(adapters::Adapter& a) {
  auto s = a.start();
  if (!s) MESSAGE("start failed: " << s.error().message);
  return s.has_value();
}

}  // namespace kolabus::test
