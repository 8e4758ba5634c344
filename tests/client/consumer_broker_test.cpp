// client::Consumer against a real kolabus-broker process: what the Publisher stored
// reaches the consumer once, acknowledgements stick, and a broker restart is survived.
#include <set>

#include <doctest/doctest.h>

#include "broker_process.h"
#include "temp_dir.h"
#include "test_events.h"
#include <client/consumer.h>
#include <client/publisher.h>
#include <common/clock.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

std::vector<std::vector<std::uint8_t>> generate(std::size_t n, std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  std::vector<std::vector<std::uint8_t>> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
  return out;
}

void publish_all(const std::string& endpoint, const std::string& outbox,
                 const std::vector<std::vector<std::uint8_t>>& evs) {
  auto pub = client::Publisher::open({.endpoint = endpoint, .outbox_dir = outbox});
  REQUIRE(pub.has_value());
  for (const auto& e : evs) REQUIRE((*pub)->publish(e).has_value());
  REQUIRE((*pub)->wait_drained(20s));
  CHECK((*pub)->stats().acked == evs.size());
}

client::ConsumerOptions consumer_options(const std::string& endpoint, const std::string& inbox) {
  client::ConsumerOptions o;
  o.endpoint = endpoint;
  o.inbox_dir = inbox;
  o.name = "sanity";
  o.regions = {"1271"};  // every generated event has at least one end in Medan
  o.heartbeat = 200ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  return o;
}

struct Collected {
  std::vector<std::uint64_t> sequences;
  std::set<EventId> ids;
  client::Handler handler() {
    return [this](const client::Received& r, storage::Inbox::Txn& txn) {
      sequences.push_back(r.sequence.value);
      ids.insert(r.id);
      txn.put(r.id.to_string(), std::to_string(r.sequence.value));
      return client::HandlerResult{};
    };
  }
};

template <typename F>
void poll_until(client::Consumer& c, const client::Handler& h, F done,
                std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    auto r = c.poll(h, 50ms);
    REQUIRE(r.has_value());
  }
}

}  // namespace

TEST_CASE("Consumer on a real broker: gets each published event once, acks stick") {
  test::TempDir dir("consumer-broker");
  test::BrokerProcess broker(dir.str("broker"));
  const auto evs = generate(30, 11);
  publish_all(broker.endpoint(), dir.str("outbox"), evs);

  Collected got;
  {
    auto c = client::Consumer::open(consumer_options(broker.endpoint(), dir.str("inbox")));
    REQUIRE(c.has_value());
    poll_until(**c, got.handler(), [&] { return got.sequences.size() == evs.size(); });
    std::set<EventId> want;
    for (const auto& e : evs) want.insert(test::id_of(e));
    CHECK(got.ids == want);
    for (std::size_t i = 0; i < got.sequences.size(); ++i) CHECK(got.sequences[i] == i + 1);
    CHECK((*c)->stats().subscribed);
    CHECK((*c)->stats().reconnects == 0);
    (*c)->close();
    CHECK((*c)->stats().acked == evs.size());
  }

  // A new client with an empty inbox: had the broker not recorded the Acks, the
  // Unsubscribe would have handed it all 30 events again at once.
  auto c = client::Consumer::open(consumer_options(broker.endpoint(), dir.str("inbox2")));
  REQUIRE(c.has_value());
  Collected again;
  poll_until(**c, again.handler(), [&] { return (*c)->stats().subscribed; });
  auto n = (*c)->poll(again.handler(), 1500ms);
  REQUIRE(n.has_value());
  CHECK(*n == 0);

  // Only what is published now arrives.
  const auto more = generate(5, 12);
  publish_all(broker.endpoint(), dir.str("outbox"), more);
  poll_until(**c, again.handler(), [&] { return again.sequences.size() == more.size(); });
  CHECK(again.sequences.front() == evs.size() + 1);
}

TEST_CASE("Consumer on a real broker: subscribes again after the broker restarts") {
  test::TempDir dir("consumer-broker");
  test::BrokerProcess broker(dir.str("broker"));
  auto c = client::Consumer::open(consumer_options(broker.endpoint(), dir.str("inbox")));
  REQUIRE(c.has_value());
  Collected got;
  poll_until(**c, got.handler(), [&] { return (*c)->stats().subscribed; });

  broker.stop(SIGKILL);
  broker.restart();
  poll_until(**c, got.handler(),
             [&] { return (*c)->stats().reconnects >= 1 && (*c)->stats().subscribed; });
  const auto evs = generate(3, 13);
  publish_all(broker.endpoint(), dir.str("outbox"), evs);
  poll_until(**c, got.handler(), [&] { return got.sequences.size() == evs.size(); });
}
