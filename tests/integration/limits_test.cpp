// Per-agency limits on a real CURVE broker (docs/OPERATIONS.md, "Limits"): a consumer
// that never reads is held at its outgoing bound and shown stalled while another agency
// is served; an agency cannot create consumers, windows or connections beyond its limits.
#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "broker_process.h"
#include "test_events.h"
#include <client/admin.h>
#include <client/consumer.h>
#include <client/curve.h>
#include <client/publisher.h>
#include <common/keys.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;

namespace {

KeyPair gen() {
  auto k = client::generate_key_pair();
  REQUIRE(k.has_value());
  return *k;
}

// A broker whose kelurahan may hold 2 MiB unread per connection, 4 MiB in all, 3
// consumers and 3 connections; the registry (operator) has the defaults.
struct LimitedBus {
  test::TempDir dir{"limits"};
  KeyPair broker_keys = gen(), registry_keys = gen(), kelurahan_keys = gen();
  std::unique_ptr<test::BrokerProcess> broker;

  LimitedBus() {
    REQUIRE(write_key_pair(dir.str(), "broker", broker_keys, false).has_value());
    std::ofstream(dir.str("agencies.toml"))
        << "[[agency]]\nname = \"disdukcapil-medan\"\npublic_key = \"" << registry_keys.public_key
        << "\"\npublish = { kinds = [\"*\"], regions = [\"1271\"] }\n"
           "subscribe = { kinds = [\"*\"], regions = [\"1271\"] }\noperate = true\n"
           "agreement = { pks = \"PKS/1\", purpose = \"registry\", valid_from = 2020-01-01, "
           "valid_until = 2099-12-31 }\n\n"
           "[[agency]]\nname = \"kel-pasar-baru\"\npublic_key = \""
        << kelurahan_keys.public_key
        << "\"\nsubscribe = { kinds = [\"*\"], regions = [\"1271\"] }\n"
           "limits = { queued_mib_per_connection = 2, queued_mib = 4, consumers = 3, "
           "connections = 3, unacked = 10015 }\n"
           "agreement = { pks = \"PKS/2\", purpose = \"ward register\", valid_from = "
           "2020-01-01, valid_until = 2099-12-31 }\n";
    broker = std::make_unique<test::BrokerProcess>(
        dir.str("data"), "tcp://127.0.0.1:*",
        std::vector<std::string>{"--key", dir.str("broker.key"), "--agencies",
                                 dir.str("agencies.toml")});
  }
  client::CurveOptions as(const KeyPair& who) const { return {broker_keys.public_key, who}; }
};

Bytes subscribe_request(const std::string& name, std::uint32_t window, std::uint32_t batch) {
  flatbuffers::FlatBufferBuilder fbb;
  // Every kind in Medan: within the kelurahan's grant of this test.
  const std::vector<flatbuffers::Offset<flatbuffers::String>> regions{fbb.CreateString("1271")};
  auto filter = protocol::CreateFilterDirect(fbb, nullptr, &regions);
  auto cfg = protocol::CreateConsumerConfigDirect(fbb, name.c_str(), filter,
                                                  protocol::StartPolicy::Earliest, 0, 0, 100, 1000);
  fbb.Finish(protocol::CreateRequest(fbb, 1, 1, protocol::Command::Subscribe,
                                     protocol::CreateSubscribe(fbb, cfg, window, batch).Union()),
             protocol::RequestIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

Bytes ping_request() {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(protocol::CreateRequest(fbb, 1, 9, protocol::Command::Ping,
                                     protocol::CreatePing(fbb).Union()),
             protocol::RequestIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// A raw CURVE DEALER of the kelurahan: subscribes with a large window, batches of 1000
// and a 100 ms ack_wait, then never reads (its receive queue is one message), but pings
// twice a second so that the broker keeps it attached, as a hostile client would.
struct NeverReads {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  NeverReads(const std::string& endpoint, const client::CurveOptions& curve,
             const std::string& name) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvhwm, 1);
    s.set(zmq::sockopt::rcvbuf, 4096);
    s.set(zmq::sockopt::curve_serverkey, curve.server_public_key);
    s.set(zmq::sockopt::curve_publickey, curve.client.public_key);
    s.set(zmq::sockopt::curve_secretkey, curve.client.secret_key);
    s.connect(endpoint);
    const auto req = subscribe_request(name, 10000, 1000);
    REQUIRE(s.send(zmq::buffer(req), zmq::send_flags::none));
    pinger = std::thread([this] {
      const auto ping = ping_request();
      while (!stop.load()) {
        (void)s.send(zmq::buffer(ping), zmq::send_flags::dontwait);
        for (int i = 0; i < 50 && !stop.load(); ++i) std::this_thread::sleep_for(10ms);
      }
    });
  }
  ~NeverReads() {
    stop.store(true);
    pinger.join();
  }
  std::atomic<bool> stop{false};
  std::thread pinger;
};

std::uint64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key, unit;
  std::uint64_t value = 0;
  while (in >> key) {
    if (key == "VmRSS:" && in >> value >> unit) return value;
  }
  return 0;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kMemoryBounds = false;  // quarantine and shadow memory say nothing here
#else
constexpr bool kMemoryBounds = true;
#endif

// Sends one request on a raw CURVE DEALER and waits for its Response: the reply type,
// or the Nack's code.
struct RawClient {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  RawClient(const std::string& endpoint, const client::CurveOptions& curve) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::curve_serverkey, curve.server_public_key);
    s.set(zmq::sockopt::curve_publickey, curve.client.public_key);
    s.set(zmq::sockopt::curve_secretkey, curve.client.secret_key);
    s.connect(endpoint);
  }
  std::optional<protocol::ErrorCode> nack_of(const Bytes& request) {
    REQUIRE(s.send(zmq::buffer(request), zmq::send_flags::none));
    s.set(zmq::sockopt::rcvtimeo, 10000);
    while (true) {
      zmq::message_t m;
      REQUIRE(s.recv(m));
      std::vector<std::uint64_t> aligned((m.size() + 7) / 8);
      std::memcpy(aligned.data(), m.data(), m.size());
      const auto* r = flatbuffers::GetRoot<protocol::Response>(aligned.data());
      if (r->reply_type() == protocol::Reply::Nack) return r->reply_as_Nack()->code();
      if (r->reply_type() == protocol::Reply::Subscribed ||
          r->reply_type() == protocol::Reply::Pong) {
        return std::nullopt;
      }
      // Deliveries of a consumer it subscribed to before: not what is waited for.
    }
  }
};

// Takes every delivery the consumer has now (or within `wait`), acknowledging each.
std::size_t drain(client::Consumer& c, std::chrono::milliseconds wait) {
  std::size_t n = 0;
  auto r = c.poll(
      [&](const client::Received&, storage::Inbox::Txn&) {
        ++n;
        return client::HandlerResult{};
      },
      wait);
  REQUIRE(r.has_value());
  return n;
}

}  // namespace

TEST_CASE("Limits: a consumer that never reads is held at its bound while another is served") {
  LimitedBus bus;
  auto ops = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
  REQUIRE(ops.has_value());
  REQUIRE((*ops)->ping().has_value());
  const auto base_kb = rss_kb(bus.broker->pid());

  NeverReads bad(bus.broker->endpoint(), bus.as(bus.kelurahan_keys), "never-reads");
  REQUIRE(test::wait_until([&] {
    auto l = (*ops)->list_consumers();
    return l && l->size() == 1 && l->front().clients == 1;
  }));

  // The registry's own consumer, well behaved, beside it.
  client::ConsumerOptions co;
  co.endpoint = bus.broker->endpoint();
  co.inbox_dir = bus.dir.str("inbox-good");
  co.name = "good";
  co.regions = {"1271"};
  co.curve = bus.as(bus.registry_keys);
  co.heartbeat = 200ms;
  co.window = 1000;
  auto good = client::Consumer::open(co);
  REQUIRE(good.has_value());

  // 20,000 events (about 12 MB of deliveries) for both; 5,000 (3 MB, still past the
  // kelurahan's 2 MiB per connection) under a sanitizer, whose broker is many times slower.
  client::PublisherOptions po;
  po.endpoint = bus.broker->endpoint();
  po.outbox_dir = bus.dir.str("outbox");
  po.curve = bus.as(bus.registry_keys);
  auto pub = client::Publisher::open(po);
  REQUIRE(pub.has_value());
  tools::EventGenerator gen(schemas::RegionTable::embedded(), {7, "1271", SystemClock().now_ms()});
  constexpr std::size_t kEvents = kMemoryBounds ? 20000 : 5000;
  std::size_t received = 0;
  for (std::size_t i = 0; i < kEvents; ++i) {
    REQUIRE((*pub)->publish(gen.next()).has_value());
    if (i % 1000 == 999) {
      REQUIRE((*pub)->wait_drained(120s));
      received += drain(**good, 10ms);
    }
  }
  REQUIRE(test::wait_until(
      [&] {
        received += drain(**good, 50ms);
        return received >= kEvents;
      },
      120s));
  CHECK(received == kEvents);  // the other agency got everything

  // The never-reading client is shown stalled, and what the broker holds for it is
  // bounded (its agency's 4 MiB, plus at most one window; generous slack for RocksDB).
  REQUIRE(test::wait_until([&] {
    auto l = (*ops)->list_consumers();
    if (!l) return false;
    for (const auto& c : *l) {
      if (c.name == "never-reads") return c.stalled_clients == 1;
    }
    return false;
  }));
  const auto peak_kb = rss_kb(bus.broker->pid());
  MESSAGE("never-reading consumer: broker VmRSS " << base_kb / 1024.0 << " MB before, "
                                                  << peak_kb / 1024.0 << " MB after " << kEvents
                                                  << " events");
  if (kMemoryBounds) CHECK((peak_kb - base_kb) / 1024.0 < 64.0);
}

TEST_CASE("Limits: consumers, windows and connections beyond an agency's limits are refused") {
  LimitedBus bus;
  RawClient kel(bus.broker->endpoint(), bus.as(bus.kelurahan_keys));
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(kel.nack_of(subscribe_request("c" + std::to_string(i), 10, 1)).has_value());
  }
  // A fourth consumer: limits.consumers = 3.
  CHECK(kel.nack_of(subscribe_request("c3", 10, 1)) == protocol::ErrorCode::LimitExceeded);
  // Windows: 20 of 10,015 are taken by c1 and c2; c0's own 10 is replaced, not added.
  CHECK_FALSE(kel.nack_of(subscribe_request("c0", 9995, 1)).has_value());
  CHECK(kel.nack_of(subscribe_request("c0", 9996, 1)) == protocol::ErrorCode::LimitExceeded);
  // Connections: this one and two more; a fourth is refused.
  RawClient second(bus.broker->endpoint(), bus.as(bus.kelurahan_keys));
  RawClient third(bus.broker->endpoint(), bus.as(bus.kelurahan_keys));
  RawClient fourth(bus.broker->endpoint(), bus.as(bus.kelurahan_keys));
  CHECK_FALSE(second.nack_of(ping_request()).has_value());
  CHECK_FALSE(third.nack_of(ping_request()).has_value());
  CHECK(fourth.nack_of(ping_request()) == protocol::ErrorCode::LimitExceeded);
  // Another agency is not held by the kelurahan's limits.
  RawClient registry(bus.broker->endpoint(), bus.as(bus.registry_keys));
  CHECK_FALSE(registry.nack_of(ping_request()).has_value());
}
