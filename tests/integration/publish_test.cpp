// The durable publish path end to end: a real broker process on loopback, the
// client library's publisher with its RocksDB outbox.
#include <map>
#include <mutex>
#include <set>

#include <doctest/doctest.h>

#include "broker_process.h"
#include "test_events.h"
#include <broker/core.h>
#include <client/publisher.h>
#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <schemas/log_generated.h>
#include <storage/rocksdb_event_log.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

// Collects the publisher's outcomes (called on its sender thread).
struct Outcomes {
  std::mutex mu;
  std::map<std::uint64_t, client::Outcome> by_local;  // the last outcome per position
  std::size_t calls = 0;

  client::Publisher::OutcomeFn fn() {
    return [this](const client::Outcome& o) {
      std::lock_guard lock(mu);
      by_local[o.local_seq] = o;
      ++calls;
    };
  }
  std::size_t count() {
    std::lock_guard lock(mu);
    return by_local.size();
  }
};

std::vector<std::vector<std::uint8_t>> make_events(std::size_t n, std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  std::vector<std::vector<std::uint8_t>> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
  return out;
}

std::vector<std::uint64_t> enqueue(client::Publisher& p,
                                   const std::vector<std::vector<std::uint8_t>>& evs) {
  std::vector<std::uint64_t> seqs;
  for (std::size_t i = 0; i < evs.size(); i += 1000) {
    std::vector<std::span<const std::uint8_t>> batch;
    for (std::size_t k = i; k < std::min(evs.size(), i + 1000); ++k) batch.emplace_back(evs[k]);
    auto r = p.publish_batch(batch);
    REQUIRE(r.has_value());
    seqs.insert(seqs.end(), r->begin(), r->end());
  }
  return seqs;
}

// Reads the whole log of a stopped broker: id -> sequences it is stored under.
std::map<EventId, std::vector<std::uint64_t>> read_log(const std::string& dir,
                                                       std::uint64_t* records = nullptr) {
  auto log = storage::open_rocksdb_event_log_read_only(dir);
  REQUIRE(log.has_value());
  std::map<EventId, std::vector<std::uint64_t>> ids;
  std::uint64_t n = 0;
  std::uint64_t expect = 1;
  AlignedBytes copy;  // a scan's view into a RocksDB block sits at any address
  auto st = (*log)->scan(Sequence{1}, SIZE_MAX, [&](Sequence seq, std::string_view rec) {
    CHECK(seq.value == expect++);  // no gaps
    const auto* bytes = aligned(rec, copy).data();
    const auto* lr = flatbuffers::GetRoot<kolabus::log::LogRecord>(bytes);
    CHECK(lr->sequence() == seq.value);
    const auto* ev = flatbuffers::GetRoot<events::Event>(lr->event()->data());
    ids[EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16))]
        .push_back(seq.value);
    ++n;
    return true;
  });
  REQUIRE(st.has_value());
  if (records != nullptr) *records = n;
  return ids;
}

client::PublisherOptions options(const std::string& endpoint, const std::string& outbox) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.outbox_dir = outbox;
  o.ack_timeout = 1000ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  return o;
}

}  // namespace

TEST_CASE("Publish path: 10,000 events through the outbox are ACKed in order, once each") {
  test::TempDir dir("publish");
  const auto events = make_events(10000, 11);
  Outcomes out;
  std::vector<std::uint64_t> locals;
  {
    test::BrokerProcess broker(dir.str("broker"));
    auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")), out.fn());
    REQUIRE(pub.has_value());
    locals = enqueue(**pub, events);
    REQUIRE((*pub)->wait_drained(60s));
    CHECK((*pub)->stats().pending == 0);

    // Every event ACKed as new, sequences increasing with the publish order.
    std::uint64_t last = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto& o = out.by_local.at(locals[i]);
      REQUIRE(o.kind == client::OutcomeKind::kAcked);
      CHECK(o.id == test::id_of(events[i]));
      CHECK(o.sequence.value > last);
      last = o.sequence.value;
    }
    CHECK(last == 10000);

    SUBCASE("republishing the same events: all duplicates with their sequences") {
      Outcomes again;
      auto pub2 =
          client::Publisher::open(options(broker.endpoint(), dir.str("outbox2")), again.fn());
      REQUIRE(pub2.has_value());
      const auto locals2 = enqueue(**pub2, events);
      REQUIRE((*pub2)->wait_drained(60s));
      for (std::size_t i = 0; i < events.size(); ++i) {
        const auto& o = again.by_local.at(locals2[i]);
        REQUIRE(o.kind == client::OutcomeKind::kDuplicate);
        CHECK(o.sequence == out.by_local.at(locals[i]).sequence);
      }
    }
  }  // SIGTERM: the broker stops; its log can be read

  std::uint64_t records = 0;
  const auto ids = read_log(dir.str("broker"), &records);
  CHECK(records == 10000);  // nothing stored twice, republished or not
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto it = ids.find(test::id_of(events[i]));
    REQUIRE(it != ids.end());
    CHECK(it->second.size() == 1);
    CHECK(it->second[0] == out.by_local.at(locals[i]).sequence.value);
  }
}

TEST_CASE("Publish path: a broker killed with SIGKILL mid-stream loses nothing ACKed") {
  test::TempDir dir("crash");
  const auto events = make_events(20000, 12);
  Outcomes out;
  test::BrokerProcess broker(dir.str("broker"));
  auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")), out.fn());
  REQUIRE(pub.has_value());
  const auto locals = enqueue(**pub, events);

  // Two power cuts while events are in flight; the broker comes back on its port.
  for (std::size_t threshold : {3000u, 9000u}) {
    REQUIRE(test::wait_until([&] { return out.count() >= threshold; }));
    broker.stop(SIGKILL);
    const auto acked_before_restart = out.count();
    broker.restart();
    CHECK(acked_before_restart < events.size());  // the kill really was mid-stream
  }
  REQUIRE((*pub)->wait_drained(120s));
  CHECK((*pub)->stats().pending == 0);
  pub->reset();
  broker.stop(SIGKILL);

  std::uint64_t records = 0;
  const auto ids = read_log(dir.str("broker"), &records);
  std::set<EventId> sent;
  for (const auto& e : events) sent.insert(test::id_of(e));
  CHECK(records == events.size());  // every event once: none lost, none twice
  for (const auto& [id, seqs] : ids) {
    CHECK(sent.contains(id));  // nothing in the log that nobody sent
    CHECK(seqs.size() == 1);
  }
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& o = out.by_local.at(locals[i]);
    REQUIRE(o.kind != client::OutcomeKind::kRefused);
    const auto it = ids.find(o.id);
    REQUIRE(it != ids.end());
    CHECK(it->second[0] == o.sequence.value);  // the ACKed sequence is where it is stored
  }
}

TEST_CASE("Publish path: the outbox keeps events while the broker is away and across restarts") {
  test::TempDir dir("outbox");
  const auto events = make_events(500, 13);
  // No broker yet: the endpoint names a port nobody listens on.
  const std::string endpoint = [&] {
    test::BrokerProcess probe(dir.str("probe"));
    return probe.endpoint();
  }();
  {
    Outcomes out;
    auto pub = client::Publisher::open(options(endpoint, dir.str("outbox")), out.fn());
    REQUIRE(pub.has_value());
    enqueue(**pub, events);
    CHECK_FALSE((*pub)->wait_drained(300ms));
    CHECK((*pub)->stats().pending == 500);
    CHECK(out.count() == 0);
  }  // the adapter stops (or crashes) with everything queued

  test::BrokerProcess broker(dir.str("broker"), endpoint);
  Outcomes out;
  auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")), out.fn());
  REQUIRE(pub.has_value());
  REQUIRE((*pub)->wait_drained(60s));  // resumed without being asked
  CHECK(out.count() == 500);
  for (const auto& [local, o] : out.by_local) CHECK(o.kind == client::OutcomeKind::kAcked);
}

TEST_CASE("Publish path: refused events are kept with the broker's reason") {
  test::TempDir dir("refused");
  test::BrokerProcess broker(dir.str("broker"));
  auto events = make_events(3, 14);
  // A void of an event the broker never saw.
  events.push_back(test::make_void(new_uuid_v7(), {"1271011001"}, SystemClock().now_ms() - 1000));
  Outcomes out;
  auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")), out.fn());
  REQUIRE(pub.has_value());
  enqueue(**pub, events);
  REQUIRE((*pub)->wait_drained(30s));
  auto refused = (*pub)->refused(10);
  REQUIRE(refused.has_value());
  REQUIRE(refused->size() == 1);
  const auto& r = refused->front();
  CHECK(r.refusal.code == static_cast<std::uint16_t>(protocol::ErrorCode::UnknownTarget));
  CHECK(r.refusal.field == "payload.target_id");
  CHECK(r.refusal.id == test::id_of(events[3]));
  CHECK(r.event.size() == events[3].size());
  CHECK((*pub)->stats().refused == 1);
  CHECK((*pub)->stats().acked == 3);
  REQUIRE((*pub)->clear_refused().has_value());
  CHECK((*pub)->refused(10)->empty());
}
