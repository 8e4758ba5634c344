// Durable consumers end to end: a real broker process on loopback, publishers with
// outboxes, consumers with inboxes (the client library), a broker killed with
// SIGKILL while it delivers.
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <doctest/doctest.h>
#include <zmq.hpp>

#include "broker_process.h"
#include "test_events.h"
#include <client/admin.h>
#include <client/consumer.h>
#include <client/publisher.h>
#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

client::PublisherOptions publisher_options(const std::string& endpoint, const std::string& dir) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.outbox_dir = dir;
  o.ack_timeout = 1000ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  return o;
}

client::ConsumerOptions consumer_options(const std::string& endpoint, const std::string& dir,
                                         const std::string& name,
                                         std::vector<std::string> regions) {
  client::ConsumerOptions o;
  o.endpoint = endpoint;
  o.inbox_dir = dir;
  o.name = name;
  o.regions = std::move(regions);
  o.window = 200;
  o.ack_wait_ms = 2000;
  o.heartbeat = 200ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  return o;
}

bool matches(const std::vector<std::string>& regions, const std::string& prefix) {
  for (const auto& r : regions) {
    if (r.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

// A consumer on its own thread. The handler records the event in the inbox's app
// store (atomically with the processed mark) and counts its own calls per id.
class Runner {
 public:
  Runner(client::ConsumerOptions o) {
    auto c = client::Consumer::open(std::move(o));
    REQUIRE(c.has_value());
    consumer_ = std::move(*c);
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        auto n = consumer_->poll(
            [this](const client::Received& r, storage::Inbox::Txn& txn) {
              {
                std::lock_guard lock(mu_);
                calls_[r.id]++;
              }
              txn.put("h/" + r.id.to_string(), std::to_string(r.sequence.value));
              return client::HandlerResult{};
            },
            100ms);
        (void)n;
      }
    });
  }
  ~Runner() { stop(); }
  void stop() {
    stop_.store(true);
    consumer_->interrupt();
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t processed() const { return consumer_->inbox().processed_count(); }
  std::map<EventId, int> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // Ids the handler stored through the inbox transaction.
  std::set<std::string> stored() {
    std::set<std::string> out;
    REQUIRE(consumer_->inbox()
                .scan("h/",
                      [&](std::string_view k, std::string_view) {
                        out.emplace(k.substr(2));
                        return true;
                      })
                .has_value());
    return out;
  }
  client::Consumer& consumer() { return *consumer_; }

 private:
  std::unique_ptr<client::Consumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<EventId, int> calls_;
};

}  // namespace

TEST_CASE(
    "Consume path: a SIGKILL of the broker mid-delivery loses nothing, each handler sees "
    "each of its events once") {
  test::TempDir dir("consume-crash");
  test::BrokerProcess broker(dir.str("broker"));
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {21, "1271", SystemClock().now_ms()});
  std::vector<std::vector<std::uint8_t>> events;
  for (int i = 0; i < 4000; ++i) events.push_back(gen.next());

  // What each consumer must get: the city sees every event (each has an end in
  // Medan), one kecamatan only its own.
  const std::string kec = "127101";
  std::set<std::string> want_city, want_kec;
  for (const auto& e : events) {
    const auto id = test::id_of(e).to_string();
    want_city.insert(id);
    if (matches(test::regions_of(e), kec)) want_kec.insert(id);
  }
  REQUIRE(want_kec.size() > 50);
  REQUIRE(want_kec.size() < want_city.size());

  Runner city(consumer_options(broker.endpoint(), dir.str("inbox-city"), "city", {"1271"}));
  Runner kecamatan(consumer_options(broker.endpoint(), dir.str("inbox-kec"), "kec", {kec}));

  auto pub = client::Publisher::open(publisher_options(broker.endpoint(), dir.str("outbox")));
  REQUIRE(pub.has_value());
  for (std::size_t i = 0; i < events.size(); i += 500) {
    std::vector<std::span<const std::uint8_t>> batch;
    for (std::size_t k = i; k < std::min(events.size(), i + 500); ++k)
      batch.emplace_back(events[k]);
    REQUIRE((*pub)->publish_batch(batch).has_value());
  }

  // Kill the broker while it is delivering, twice; it comes back on its port.
  for (std::uint64_t threshold : {800u, 2400u}) {
    REQUIRE(test::wait_until([&] { return city.processed() >= threshold; }, 60s));
    broker.stop(SIGKILL);
    CHECK(city.processed() < want_city.size());
    broker.restart();
  }
  REQUIRE((*pub)->wait_drained(60s));
  REQUIRE(test::wait_until([&] { return city.processed() == want_city.size(); }, 60s));
  REQUIRE(test::wait_until([&] { return kecamatan.processed() == want_kec.size(); }, 60s));
  city.stop();
  kecamatan.stop();

  CHECK(city.stored() == want_city);      // every event, none other
  CHECK(kecamatan.stored() == want_kec);  // only its own
  for (auto* r : {&city, &kecamatan}) {
    for (const auto& [id, n] : r->calls()) CHECK(n == 1);  // the handler saw it once
  }
  // The broker did deliver some events again (that is what the inbox is for).
  CHECK(city.consumer().stats().delivered >= want_city.size());
}

TEST_CASE("Consume path: the inbox skips what a restarted consumer already processed") {
  test::TempDir dir("consume-inbox");
  test::BrokerProcess broker(dir.str("broker"));
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {22, "1271", SystemClock().now_ms()});
  auto pub = client::Publisher::open(publisher_options(broker.endpoint(), dir.str("outbox")));
  REQUIRE(pub.has_value());
  std::vector<std::vector<std::uint8_t>> events;
  for (int i = 0; i < 300; ++i) events.push_back(gen.next());
  std::vector<std::span<const std::uint8_t>> batch(events.begin(), events.end());
  REQUIRE((*pub)->publish_batch(batch).has_value());
  REQUIRE((*pub)->wait_drained(30s));

  auto opts = consumer_options(broker.endpoint(), dir.str("inbox"), "all", {});
  std::size_t handled = 0;
  auto handler = [&](const client::Received&, storage::Inbox::Txn&) {
    ++handled;
    return client::HandlerResult{};
  };
  {
    auto c = client::Consumer::open(opts);
    REQUIRE(c.has_value());
    REQUIRE(test::wait_until([&] {
      REQUIRE((*c)->poll(handler, 50ms).has_value());
      return handled == 300;
    }));
    (*c)->close();
  }
  // An operator replays the consumer from the start; the consumer process restarts.
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto name = fbb.CreateString("all");
    auto seek = protocol::CreateSeekConsumer(fbb, name, protocol::StartPolicy::Earliest);
    fbb.Finish(protocol::CreateRequest(fbb, 1, 77, protocol::Command::SeekConsumer, seek.Union()));
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.connect(broker.endpoint());
    s.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()));
    zmq::message_t reply;
    REQUIRE(s.recv(reply));
    const AlignedBytes body(reply.data(), reply.size());  // a frame sits at any address
    const auto* r = flatbuffers::GetRoot<protocol::Response>(body.data());
    REQUIRE(r->reply_type() == protocol::Reply::Subscribed);
    CHECK(r->reply_as_Subscribed()->info()->next_sequence() == 1);
  }
  auto c = client::Consumer::open(opts);
  REQUIRE(c.has_value());
  REQUIRE(test::wait_until([&] {
    REQUIRE((*c)->poll(handler, 50ms).has_value());
    return (*c)->stats().duplicates_skipped == 300;
  }));
  CHECK(handled == 300);  // not one more handler call
}

TEST_CASE("Consume path: a stalled consumer slows neither the publisher nor another consumer") {
  test::TempDir dir("consume-stall");
  test::BrokerProcess broker(dir.str("broker"));
  // The stalled one subscribes, takes a window of events and never acknowledges
  // nor reads again.
  auto stalled = client::Consumer::open(
      consumer_options(broker.endpoint(), dir.str("inbox-stalled"), "stalled", {"1271"}));
  REQUIRE(stalled.has_value());
  auto first = (*stalled)->poll(
      [](const client::Received&, storage::Inbox::Txn&) {
        return client::HandlerResult{client::Verdict::kNak, "", 600000};
      },
      200ms, 1);
  REQUIRE(first.has_value());

  Runner healthy(consumer_options(broker.endpoint(), dir.str("inbox-ok"), "healthy", {"1271"}));
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {23, "1271", SystemClock().now_ms()});
  std::vector<std::vector<std::uint8_t>> events;
  for (int i = 0; i < 5000; ++i) events.push_back(gen.next());
  auto pub = client::Publisher::open(publisher_options(broker.endpoint(), dir.str("outbox")));
  REQUIRE(pub.has_value());
  std::vector<std::span<const std::uint8_t>> batch(events.begin(), events.end());
  REQUIRE((*pub)->publish_batch(batch).has_value());
  REQUIRE((*pub)->wait_drained(60s));
  REQUIRE(test::wait_until([&] { return healthy.processed() == events.size(); }, 60s));
  CHECK((*pub)->stats().retries == 0);  // never held back
}

TEST_CASE(
    "Consume path: a batched and an unbatched consumer each get every event once, across a "
    "broker kill, and acknowledge all of it") {
  test::TempDir dir("consume-batch");
  test::BrokerProcess broker(dir.str("broker"));
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {24, "1271", SystemClock().now_ms()});
  std::vector<std::vector<std::uint8_t>> events;
  std::set<std::string> want;
  for (int i = 0; i < 3000; ++i) {
    events.push_back(gen.next());
    want.insert(test::id_of(events.back()).to_string());
  }
  auto batched_opts = consumer_options(broker.endpoint(), dir.str("inbox-b"), "batched", {});
  batched_opts.batch = 64;
  auto single_opts = consumer_options(broker.endpoint(), dir.str("inbox-s"), "single", {});
  single_opts.batch = 1;  // as clients before batching
  Runner batched(batched_opts);
  Runner single(single_opts);

  auto pub = client::Publisher::open(publisher_options(broker.endpoint(), dir.str("outbox")));
  REQUIRE(pub.has_value());
  std::vector<std::span<const std::uint8_t>> all(events.begin(), events.end());
  REQUIRE((*pub)->publish_batch(all).has_value());
  REQUIRE(test::wait_until([&] { return batched.processed() >= 1000; }, 60s));
  broker.stop(SIGKILL);
  broker.restart();
  REQUIRE((*pub)->wait_drained(60s));
  REQUIRE(test::wait_until([&] { return batched.processed() == want.size(); }, 60s));
  REQUIRE(test::wait_until([&] { return single.processed() == want.size(); }, 60s));

  // The broker has every event acknowledged by both (Acks of batched deliveries count
  // one by one, as any other).
  auto admin = client::AdminClient::connect(broker.endpoint(), 10s);
  REQUIRE(admin.has_value());
  REQUIRE(test::wait_until(
      [&] {
        auto list = (*admin)->list_consumers();
        REQUIRE(list.has_value());
        std::size_t done = 0;
        for (const auto& c : *list) {
          if (c.lag == 0 && c.pending == 0 && c.ack_floor == events.size()) ++done;
        }
        return done == 2;
      },
      30s));
  batched.stop();
  single.stop();
  CHECK(batched.stored() == want);
  CHECK(single.stored() == want);
  for (auto* r : {&batched, &single}) {
    for (const auto& [id, n] : r->calls()) CHECK(n == 1);  // the handler saw it once
  }
  CHECK(batched.consumer().stats().batches > 0);
  CHECK(single.consumer().stats().batches == 0);
}
