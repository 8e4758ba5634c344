// broker::Consumers driven without sockets: the real core publishing into a memory
// log, a memory consumer store, a manual clock. One test per behaviour of
// docs/PROTOCOL.md's consumer section.
#include <map>
#include <numeric>
#include <set>
#include <tuple>

#include <doctest/doctest.h>

#include "test_events.h"
#include <broker/consumers.h>
#include <broker/core.h>
#include <broker/delivery_frames.h>
#include <schemas/log_generated.h>
#include <storage/memory_consumer_store.h>
#include <storage/memory_event_log.h>

using namespace kolabus;
using broker::ClientId;
using protocol::ErrorCode;
using protocol::StartPolicy;

namespace {

constexpr TimeMs kNow = 1795000000000;  // 2026-11-17
constexpr TimeMs kDay = 24LL * 3600 * 1000;
constexpr std::uint8_t kBirth = 1, kDeath = 2, kMove = 3;

struct Bus {
  storage::MemoryEventLog log;
  storage::MemoryConsumerStore store;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  broker::ConsumersOptions options;
  std::unique_ptr<broker::Consumers> consumers = fresh_consumers();

  explicit Bus(broker::ConsumersOptions o = {}) : options(o) {}

  std::unique_ptr<broker::Consumers> fresh_consumers() {
    auto c = std::make_unique<broker::Consumers>(log, store, schemas::RegionTable::embedded(),
                                                 clock, options);
    REQUIRE(c->load().has_value());
    return c;
  }

  std::vector<std::uint64_t> publish(const std::vector<std::vector<std::uint8_t>>& evs) {
    std::vector<broker::PublishRequest> reqs;
    for (const auto& e : evs) reqs.push_back({e, "disdukcapil"});
    const auto out = core.publish_batch(reqs);
    consumers->on_appended(core.last_appended());
    std::vector<std::uint64_t> seqs;
    for (const auto& o : out) {
      REQUIRE(o.acked());
      seqs.push_back(std::get<broker::Ack>(o.result).sequence.value);
    }
    return seqs;
  }

  broker::ConsumerStatus subscribe(const std::string& client, const std::string& name,
                                   std::vector<std::uint8_t> kinds,
                                   std::vector<std::string> regions, std::uint32_t window = 100,
                                   std::uint32_t ack_wait_ms = 30000, std::uint32_t max_deliver = 5,
                                   StartPolicy start = StartPolicy::Earliest,
                                   std::uint64_t start_seq = 0, TimeMs start_time = 0) {
    auto f = consumers->make_filter(kinds, regions);
    REQUIRE(std::holds_alternative<broker::Filter>(f));
    broker::ConsumerSpec spec{
        name, std::get<broker::Filter>(f), start, start_seq, start_time, ack_wait_ms, max_deliver};
    auto r = consumers->subscribe(ClientId{client}, "dinkes", spec, window);
    REQUIRE(std::holds_alternative<broker::ConsumerStatus>(r));
    return std::get<broker::ConsumerStatus>(r);
  }

  // Pumps and groups what is due by consumer: consumer -> [(seq, attempt, client)].
  struct Got {
    std::uint64_t seq;
    std::uint32_t attempt;
    std::string client;
  };
  std::map<std::string, std::vector<Got>> pump() {
    std::map<std::string, std::vector<Got>> out;
    for (auto& d : consumers->pump()) {
      out[d.consumer].push_back({d.sequence.value, d.attempt, d.client.bytes});
    }
    return out;
  }

  void ack(const std::string& consumer, std::vector<std::uint64_t> seqs) {
    REQUIRE_FALSE(consumers->ack("dinkes", consumer, seqs).has_value());
  }

  const broker::ConsumerStatus status(const std::string& name) {
    for (auto& s : consumers->list()) {
      if (s.spec.name == name) return s;
    }
    FAIL("no consumer " << name);
    return {};
  }
};

std::vector<std::uint64_t> seqs(const std::vector<Bus::Got>& got) {
  std::vector<std::uint64_t> out;
  for (const auto& g : got) out.push_back(g.seq);
  return out;
}

}  // namespace

// Deliveries come from a cache of recent records when they can; whatever it holds or
// has evicted, each delivery must carry its own sequence's stored record.
TEST_CASE("Consumers: every delivery carries its own record, whatever the record cache holds") {
  for (const auto& [slots, bytes] : std::vector<std::pair<std::size_t, std::size_t>>{
           {3, 1 << 20}, {64, 1500}, {16384, 32 << 20}}) {
    CAPTURE(slots);
    CAPTURE(bytes);
    broker::ConsumersOptions o;
    o.record_cache_slots = slots;
    o.record_cache_bytes = bytes;
    Bus bus(o);
    const TimeMs t = kNow - kDay;
    // Caught up from the log (before the first pump) and then fanned out as published.
    for (int i = 0; i < 10; ++i) bus.publish({test::make_birth("1271011001", t + i)});
    bus.subscribe("c1", "all", {}, {}, 1000);
    bus.subscribe("c2", "kel", {}, {"1271011002"}, 1000);
    std::vector<std::vector<std::uint8_t>> batch;
    for (int i = 0; i < 30; ++i) {
      batch.push_back(test::make_birth(i % 3 == 0 ? "1271011002" : "1271021002", t + 100 + i));
    }
    std::map<std::string, std::vector<std::uint64_t>> got;
    const auto check = [&] {
      for (auto& d : bus.consumers->pump()) {
        auto stored = bus.log.read(d.sequence);
        REQUIRE(stored.has_value());
        REQUIRE(stored->has_value());
        REQUIRE(d.record != nullptr);
        CHECK(*d.record == **stored);
        got[d.consumer].push_back(d.sequence.value);
      }
    };
    check();
    bus.publish({batch.begin(), batch.begin() + 15});
    check();
    bus.publish({batch.begin() + 15, batch.end()});
    check();
    // Each sequence once, in order: cached runs, evicted or refused records between
    // them, and the log read from where the cache stops.
    std::vector<std::uint64_t> all(40);
    std::iota(all.begin(), all.end(), 1);
    CHECK(got["all"] == all);
    CHECK(got["kel"].size() == 10);
  }
}

// A catch-up copies each record it reads from the log into a buffer that is reused once
// no delivery holds it. Deliveries kept across pumps and operator reads, more of them
// than buffers are kept, and records skipped by a kind filter must all stay their own.
TEST_CASE("Consumers: records read by a scan stay intact while deliveries hold them") {
  broker::ConsumersOptions o;
  o.record_cache_slots = 3;  // the ring holds almost nothing: the log is read
  o.read_batch = 2;
  o.max_window = 50;  // about 50 buffers kept; a pump fills two windows of 50
  Bus bus(o);
  const TimeMs t = kNow - kDay;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 120; ++i) {
    evs.push_back(i % 3 == 1 ? test::make_death("1271011001", t + i)
                             : test::make_birth("1271021002", t + i));
  }
  bus.publish(evs);
  bus.subscribe("c1", "all", {}, {}, 50);
  bus.subscribe("c2", "births", {kBirth}, {}, 50);
  std::vector<broker::Delivery> kept;
  std::map<std::string, std::vector<std::uint64_t>> got;
  for (int round = 0; round < 6; ++round) {
    auto due = bus.consumers->pump();
    std::map<std::string, std::vector<std::uint64_t>> acks;
    for (auto& d : due) {
      got[d.consumer].push_back(d.sequence.value);
      acks[d.consumer].push_back(d.sequence.value);
      kept.push_back(std::move(d));
    }
    for (const auto& [name, seqs] : acks) bus.ack(name, seqs);
    // An operator's read between pumps reuses the buffers no delivery holds.
    auto f = bus.consumers->make_filter({}, {});
    REQUIRE(std::holds_alternative<broker::Filter>(f));
    auto page = bus.consumers->read_range(std::get<broker::Filter>(f), 1, 0, 0, 40);
    REQUIRE(std::holds_alternative<broker::RangePage>(page));
    const auto& records = std::get<broker::RangePage>(page).records;
    REQUIRE(records.size() == 40);
    for (std::size_t i = 0; i < records.size(); ++i) {
      auto stored = bus.log.read(Sequence{i + 1});
      REQUIRE(stored.has_value());
      REQUIRE(stored->has_value());
      CHECK(records[i] == **stored);
    }
  }
  CHECK(got["all"].size() == 120);
  CHECK(got["births"].size() == 80);
  for (const auto& d : kept) {
    auto stored = bus.log.read(d.sequence);
    REQUIRE(stored.has_value());
    REQUIRE(stored->has_value());
    REQUIRE(d.record != nullptr);
    CHECK(*d.record == **stored);
  }
}

TEST_CASE(
    "Consumers: a filter is kinds x region prefixes at every level, a move matches at "
    "either end") {
  Bus bus;
  const TimeMs t = kNow - 10 * kDay;
  // Medan Kota (127101): Pasar Baru 1001, Pusat Pasar 1002. Medan Sunggal (127102):
  // Lalang 1001, Sei Sikambing B 1002. Deli Serdang (1207): Lubuk Pakam I,II.
  // Jakarta (31): Pulau Panggang.
  const auto seq = bus.publish({
      test::make_birth("1271011001", t),                                                   // 1
      test::make_death("1271021001", t),                                                   // 2
      test::make_move("1271011002", "1271021002", events::MoveType::BetweenKecamatan, t),  // 3
      test::make_move("1271011001", "1207281007", events::MoveType::BetweenCities,
                      t),                 // 4
      test::make_birth("3101011001", t),  // 5
  });
  REQUIRE(seq == std::vector<std::uint64_t>{1, 2, 3, 4, 5});

  struct Row {
    const char* name;
    std::vector<std::uint8_t> kinds;
    std::vector<std::string> regions;
    std::vector<std::uint64_t> expected;
  };
  const std::vector<Row> table = {
      {"province-12", {}, {"12"}, {1, 2, 3, 4}},
      {"medan", {}, {"1271"}, {1, 2, 3, 4}},
      {"kec-medan-kota", {}, {"127101"}, {1, 3, 4}},
      {"kel-pasar-baru", {}, {"1271011001"}, {1, 4}},
      {"kel-sei-sikambing-b", {}, {"1271021002"}, {3}},  // a move's destination
      {"kel-pusat-pasar", {}, {"1271011002"}, {3}},      // a move's origin
      {"deli-serdang", {}, {"1207"}, {4}},               // the other end, outside Medan
      {"jakarta", {}, {"31"}, {5}},
      {"births-medan", {kBirth}, {"1271"}, {1}},
      {"deaths-medan", {kDeath}, {"1271"}, {2}},
      {"moves-medan", {kMove}, {"1271"}, {3, 4}},
      {"deaths-moves-sunggal", {kDeath, kMove}, {"127102"}, {2, 3}},
      {"births-everywhere", {kBirth}, {}, {1, 5}},
      {"everything", {}, {}, {1, 2, 3, 4, 5}},
      {"two-kelurahan", {}, {"1271011001", "1271021001"}, {1, 2, 4}},
      {"overlapping-prefixes", {}, {"1271", "127101", "1271011001"}, {1, 2, 3, 4}},
  };
  for (const auto& row : table)
    bus.subscribe("client-" + std::string(row.name), row.name, row.kinds, row.regions);
  auto got = bus.pump();
  for (const auto& row : table) {
    CAPTURE(row.name);
    CHECK(seqs(got[row.name]) == row.expected);
  }

  SUBCASE("live: new events reach exactly the consumers they match") {
    for (const auto& row : table) {
      std::vector<std::uint64_t> all = seqs(got[row.name]);
      bus.ack(row.name, all);
    }
    bus.publish({test::make_death("1271011001", t)});  // 6
    got = bus.pump();
    std::set<std::string> reached;
    for (const auto& [name, list] : got) {
      REQUIRE(list.size() == 1);
      CHECK(list[0].seq == 6);
      reached.insert(name);
    }
    CHECK(reached == std::set<std::string>{"province-12", "medan", "kec-medan-kota",
                                           "kel-pasar-baru", "deaths-medan", "everything",
                                           "two-kelurahan", "overlapping-prefixes"});
  }
  SUBCASE("a correction follows the kind of the event it corrects") {
    const EventId birth_id = [&] {
      auto rec = bus.log.read(Sequence{1});
      const auto* lr = flatbuffers::GetRoot<kolabus::log::LogRecord>((*rec)->data());
      const auto* ev = flatbuffers::GetRoot<events::Event>(lr->event()->data());
      return EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
    }();
    for (const auto& row : table) bus.ack(row.name, seqs(got[row.name]));
    bus.publish({test::make_void(birth_id, {"1271011001"}, t)});  // 6
    got = bus.pump();
    CHECK(seqs(got["births-medan"]) == std::vector<std::uint64_t>{6});
    CHECK(got["deaths-medan"].empty());
    CHECK(seqs(got["kel-pasar-baru"]) == std::vector<std::uint64_t>{6});
  }
}

TEST_CASE("Consumers: filters are checked") {
  Bus bus;
  SUBCASE("a region that does not exist") {
    auto f = bus.consumers->make_filter({}, {"1271019999"});
    REQUIRE(std::holds_alternative<broker::CommandError>(f));
    CHECK(std::get<broker::CommandError>(f).code == ErrorCode::InvalidFilter);
  }
  SUBCASE("a prefix that is not a level") {
    auto f = bus.consumers->make_filter({}, {"127"});
    REQUIRE(std::holds_alternative<broker::CommandError>(f));
  }
  SUBCASE("an unknown kind") {
    const std::vector<std::uint8_t> kinds{9};
    auto f = bus.consumers->make_filter(kinds, {});
    REQUIRE(std::holds_alternative<broker::CommandError>(f));
    CHECK(std::get<broker::CommandError>(f).field == "filter.kinds");
  }
  SUBCASE("the same name with another filter: ConsumerMismatch") {
    bus.subscribe("a", "kel", {}, {"1271011001"});
    auto f = bus.consumers->make_filter({}, {"1271011002"});
    broker::ConsumerSpec spec{"kel", std::get<broker::Filter>(f)};
    auto r = bus.consumers->subscribe(ClientId{"b"}, "dinkes", spec, 10);
    REQUIRE(std::holds_alternative<broker::CommandError>(r));
    CHECK(std::get<broker::CommandError>(r).code == ErrorCode::ConsumerMismatch);
  }
}

TEST_CASE("Consumers: deliveries come in sequence order within the window") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 20; ++i) evs.push_back(test::make_birth("1271011001", kNow - kDay));
  bus.publish(evs);
  bus.subscribe("c1", "kel", {}, {"1271011001"}, /*window=*/3);
  auto got = bus.pump();
  CHECK(seqs(got["kel"]) == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(bus.pump().empty());  // no credit left: nothing more
  bus.publish({test::make_birth("1271011001", kNow - kDay)});
  CHECK(bus.pump().empty());  // a new event does not exceed the window either
  bus.ack("kel", {2});
  got = bus.pump();
  CHECK(seqs(got["kel"]) == std::vector<std::uint64_t>{4});  // one freed, one sent
  bus.ack("kel", {1, 3, 4});
  got = bus.pump();
  CHECK(seqs(got["kel"]) == std::vector<std::uint64_t>{5, 6, 7});
  CHECK(bus.status("kel").ack_floor == 4);
  CHECK(bus.status("kel").pending == 3);
}

TEST_CASE("Consumers: unacknowledged events come again after ack_wait, then go to dead letters") {
  Bus bus;
  bus.publish(
      {test::make_birth("1271011001", kNow - kDay), test::make_birth("1271011001", kNow - kDay)});
  bus.subscribe("c1", "kel", {}, {"1271011001"}, 10, /*ack_wait_ms=*/1000, /*max_deliver=*/3);
  auto got = bus.pump();
  REQUIRE(got["kel"].size() == 2);
  CHECK(got["kel"][0].attempt == 1);
  bus.ack("kel", {2});

  bus.clock.advance(999);
  CHECK(bus.pump().empty());  // not yet
  bus.clock.advance(2);
  got = bus.pump();
  REQUIRE(got["kel"].size() == 1);
  CHECK(got["kel"][0].seq == 1);
  CHECK(got["kel"][0].attempt == 2);

  bus.clock.advance(1001);
  got = bus.pump();
  CHECK(got["kel"][0].attempt == 3);

  bus.clock.advance(1001);
  CHECK(bus.pump().empty());  // attempt 3 was the last: dead letter
  const auto st = bus.status("kel");
  CHECK(st.dead_letters == 1);
  CHECK(st.ack_floor == 2);  // the consumer moved on
  CHECK(st.pending == 0);
  REQUIRE(bus.consumers->flush().has_value());
  auto dead = bus.consumers->dead_letters("dinkes", "kel", 0, 10);
  REQUIRE(std::holds_alternative<std::vector<broker::DeadLetter>>(dead));
  const auto& list = std::get<std::vector<broker::DeadLetter>>(dead);
  REQUIRE(list.size() == 1);
  CHECK(list[0].entry.sequence == 1);
  CHECK(list[0].entry.attempts == 3);
  CHECK(list[0].entry.reason.find("max_deliver 3") != std::string::npos);
  CHECK_FALSE(list[0].record.empty());

  SUBCASE("redrive: delivered again, and an ACK clears the dead letter") {
    auto n = bus.consumers->redrive("dinkes", "kel", {});
    CHECK(std::get<std::uint64_t>(n) == 1);
    got = bus.pump();
    REQUIRE(got["kel"].size() == 1);
    CHECK(got["kel"][0].seq == 1);
    CHECK(got["kel"][0].attempt == 1);
    bus.ack("kel", {1});
    REQUIRE(bus.consumers->flush().has_value());
    CHECK(bus.status("kel").dead_letters == 0);
    auto after = bus.consumers->dead_letters("dinkes", "kel", 0, 10);
    CHECK(std::get<std::vector<broker::DeadLetter>>(after).empty());
    CHECK(bus.status("kel").ack_floor == 2);  // a redrive never moves the position back
  }
  SUBCASE("drop: gone") {
    const std::vector<std::uint64_t> one{1};
    CHECK(std::get<std::uint64_t>(bus.consumers->drop_dead_letters("dinkes", "kel", one)) == 1);
    REQUIRE(bus.consumers->flush().has_value());
    CHECK(std::get<std::vector<broker::DeadLetter>>(
              bus.consumers->dead_letters("dinkes", "kel", 0, 10))
              .empty());
  }
}

TEST_CASE("Consumers: NAK means later, REJECT means dead letter now") {
  Bus bus;
  bus.publish(
      {test::make_birth("1271011001", kNow - kDay), test::make_birth("1271011001", kNow - kDay)});
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  auto got = bus.pump();
  REQUIRE(got["kel"].size() == 2);

  CHECK_FALSE(bus.consumers->nak("dinkes", "kel", 1, 500).has_value());
  CHECK_FALSE(bus.consumers->reject("dinkes", "kel", 2, "no such person in our system"));
  CHECK(bus.pump().empty());
  bus.clock.advance(501);
  got = bus.pump();
  REQUIRE(got["kel"].size() == 1);
  CHECK(got["kel"][0].seq == 1);
  CHECK(got["kel"][0].attempt == 2);

  REQUIRE(bus.consumers->flush().has_value());
  auto dead = std::get<std::vector<broker::DeadLetter>>(
      bus.consumers->dead_letters("dinkes", "kel", 0, 10));
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].entry.sequence == 2);
  CHECK(dead[0].entry.attempts == 1);
  CHECK(dead[0].entry.reason.find("no such person") != std::string::npos);
}

TEST_CASE(
    "Consumers: clients of one consumer share its work, a silent one's events go to the "
    "others") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 10; ++i) evs.push_back(test::make_death("1271021001", kNow - kDay));
  bus.publish(evs);
  bus.subscribe("worker-a", "dinsos", {kDeath}, {"1271"}, 4);
  bus.subscribe("worker-b", "dinsos", {kDeath}, {"1271"}, 4);
  auto got = bus.pump();
  std::map<std::string, std::vector<std::uint64_t>> by_client;
  for (const auto& g : got["dinsos"]) by_client[g.client].push_back(g.seq);
  CHECK(by_client["worker-a"].size() == 4);
  CHECK(by_client["worker-b"].size() == 4);
  std::set<std::uint64_t> all;
  for (auto& [c, s] : by_client) all.insert(s.begin(), s.end());
  CHECK(all.size() == 8);  // each event to one of them

  // worker-a goes silent; worker-b keeps talking and acknowledging.
  bus.ack("dinsos", by_client["worker-b"]);
  bus.clock.advance(10000);
  bus.consumers->touch(ClientId{"worker-b"});
  got = bus.pump();
  bus.clock.advance(6000);  // past client_timeout (15 s) for worker-a only
  bus.consumers->touch(ClientId{"worker-b"});
  for (const auto& g : got["dinsos"]) bus.ack("dinsos", {g.seq});
  got = bus.pump();
  std::set<std::uint64_t> taken_over;
  for (const auto& g : got["dinsos"]) {
    CHECK(g.client == "worker-b");
    taken_over.insert(g.seq);
  }
  for (std::uint64_t s : by_client["worker-a"]) CHECK(taken_over.contains(s));
}

TEST_CASE("Consumers: a client whose connection is gone hands its events over at once") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 6; ++i) evs.push_back(test::make_death("1271021001", kNow - kDay));
  bus.publish(evs);
  bus.subscribe("worker-a", "dinsos", {kDeath}, {"1271"}, 3);
  bus.subscribe("worker-b", "dinsos", {kDeath}, {"1271"}, 3);
  auto got = bus.pump();
  std::vector<std::uint64_t> held_by_a;
  for (const auto& g : got["dinsos"]) {
    if (g.client == "worker-a") held_by_a.push_back(g.seq);
  }
  REQUIRE(held_by_a.size() == 3);
  for (const auto& g : got["dinsos"]) {
    if (g.client == "worker-b") bus.ack("dinsos", {g.seq});
  }
  // No time passes: without client_gone these would wait for ack_wait or the client
  // timeout.
  bus.consumers->client_gone(ClientId{"worker-a"});
  REQUIRE(bus.consumers->next_deadline().has_value());
  CHECK(*bus.consumers->next_deadline() <= bus.clock.now_ms());
  got = bus.pump();
  std::set<std::uint64_t> taken_over;
  for (const auto& g : got["dinsos"]) {
    CHECK(g.client == "worker-b");
    taken_over.insert(g.seq);
  }
  CHECK(taken_over == std::set<std::uint64_t>(held_by_a.begin(), held_by_a.end()));
}

TEST_CASE("Consumers: a restart resumes from the stored position") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 6; ++i) evs.push_back(test::make_birth("1271011001", kNow - kDay));
  bus.publish(evs);
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  REQUIRE(bus.pump()["kel"].size() == 6);
  bus.ack("kel", {1, 2, 4});  // 3 is still out: floor 2, 4 acknowledged above it
  REQUIRE(bus.consumers->flush().has_value());

  bus.consumers = bus.fresh_consumers();  // the broker restarts
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  auto got = bus.pump();
  CHECK(seqs(got["kel"]) == std::vector<std::uint64_t>{3, 5, 6});  // 4 is not redelivered
}

// An acknowledgement at or below the floor never enters the acknowledged set (the
// in-order case); the stored position must be the same whatever the order.
TEST_CASE("Consumers: acknowledgements in any order give the same stored position") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 8; ++i) evs.push_back(test::make_birth("1271011001", kNow - kDay));
  bus.publish(evs);
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  REQUIRE(bus.pump()["kel"].size() == 8);
  const auto stored = [&] {
    REQUIRE(bus.consumers->flush().has_value());
    auto all = bus.store.load_all();
    REQUIRE(all.has_value());
    REQUIRE(all->size() == 1);
    return std::pair{all->front().ack_floor, all->front().acked_above};
  };
  using Position = std::pair<std::uint64_t, std::vector<std::uint64_t>>;
  bus.ack("kel", {5, 1, 2});  // 1 and 2 at the floor as they come, 5 above it
  CHECK(stored() == Position{2, {5}});
  bus.ack("kel", {4, 3});  // 4 above the floor when acknowledged, then 3 settles both
  CHECK(stored() == Position{5, {}});
  bus.ack("kel", {8, 7});  // 7 still above the floor: 6 is out
  CHECK(stored() == Position{5, {7, 8}});
  CHECK(bus.status("kel").ack_floor == 5);
  bus.ack("kel", {6});
  CHECK(stored() == Position{8, {}});
  bus.consumers = bus.fresh_consumers();  // the broker restarts: nothing comes again
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  CHECK(bus.pump()["kel"].empty());
}

TEST_CASE("Consumers: replay moves a consumer back by sequence or by time") {
  Bus bus;
  bus.publish({test::make_birth("1271011001", kNow - kDay)});  // received at kNow
  bus.clock.advance(60000);
  bus.publish({test::make_birth("1271011001", kNow - kDay)});  // at kNow + 1 min
  bus.clock.advance(60000);
  bus.publish({test::make_birth("1271011001", kNow - kDay)});  // at kNow + 2 min
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  bus.ack("kel", seqs(bus.pump()["kel"]));
  CHECK(bus.status("kel").ack_floor == 3);

  SUBCASE("to a sequence") {
    auto r = bus.consumers->seek("dinkes", "kel", StartPolicy::AtSequence, 2, 0);
    REQUIRE(std::holds_alternative<broker::ConsumerStatus>(r));
    CHECK(seqs(bus.pump()["kel"]) == std::vector<std::uint64_t>{2, 3});
  }
  SUBCASE("past the end of the log: to the end, never beyond") {
    auto r = bus.consumers->seek("dinkes", "kel", StartPolicy::AtSequence, 99999, 0);
    CHECK(std::get<broker::ConsumerStatus>(r).next_sequence == 4);
    bus.publish({test::make_birth("1271011001", kNow - kDay)});
    CHECK(seqs(bus.pump()["kel"]) == std::vector<std::uint64_t>{4});  // nothing skipped
  }
  SUBCASE("to a time") {
    bus.consumers->seek("dinkes", "kel", StartPolicy::AtTime, 0, kNow + 30000);
    CHECK(seqs(bus.pump()["kel"]) == std::vector<std::uint64_t>{2, 3});
  }
  SUBCASE("a new consumer starting at a time, or at the latest") {
    bus.subscribe("c2", "from-time", {}, {"1271"}, 100, 30000, 5, StartPolicy::AtTime, 0,
                  kNow + 120000);
    bus.subscribe("c3", "latest", {}, {"1271"}, 100, 30000, 5, StartPolicy::Latest);
    auto got = bus.pump();
    CHECK(seqs(got["from-time"]) == std::vector<std::uint64_t>{3});
    CHECK(got["latest"].empty());
  }
}

TEST_CASE("Consumers: a one-off range is read page by page with a filter") {
  Bus bus;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 30; ++i) {
    evs.push_back(i % 3 == 0 ? test::make_death("1271021001", kNow - kDay)
                             : test::make_birth("1271011001", kNow - kDay));
  }
  bus.publish(evs);
  auto f = std::get<broker::Filter>(bus.consumers->make_filter({}, {"127102"}));
  std::vector<std::uint64_t> read;
  std::uint64_t from = 1;
  for (int page = 0; page < 20; ++page) {
    auto r = bus.consumers->read_range(f, from, 0, 0, 4);
    REQUIRE(std::holds_alternative<broker::RangePage>(r));
    const auto& p = std::get<broker::RangePage>(r);
    CHECK(p.records.size() <= 4);
    for (const auto& rec : p.records) {
      read.push_back(flatbuffers::GetRoot<kolabus::log::LogRecord>(rec.data())->sequence());
    }
    if (p.done) break;
    from = p.next;
  }
  std::vector<std::uint64_t> expected;
  for (std::uint64_t s = 1; s <= 30; s += 3) expected.push_back(s);
  CHECK(read == expected);
}

TEST_CASE("Consumers: a stalled consumer holds back nobody else") {
  Bus bus;
  bus.subscribe("stuck", "stalled", {}, {"1271"}, 1);
  bus.subscribe("ok", "healthy", {}, {"1271"}, 1000);
  std::uint64_t healthy = 0;
  for (int round = 0; round < 10; ++round) {
    std::vector<std::vector<std::uint8_t>> evs;
    for (int i = 0; i < 50; ++i) evs.push_back(test::make_birth("1271011001", kNow - kDay));
    CHECK(bus.publish(evs).size() == 50);  // the publisher is never refused or held
    auto got = bus.pump();
    healthy += got["healthy"].size();
    bus.ack("healthy", seqs(got["healthy"]));
  }
  CHECK(healthy == 500);
  CHECK(bus.status("stalled").pending == 1);
  CHECK(bus.status("stalled").lag == 500);
}

TEST_CASE("Consumers: an event's routing touches only the consumers it matches") {
  // 2,000 consumers over Medan's 151 kelurahan (about 13 each, like its
  // kepala lingkungan), plus kecamatan and city-wide ones.
  Bus bus;
  const auto& regions = schemas::RegionTable::embedded();
  std::vector<std::string> kelurahan;
  for (const auto* d : regions.children("1271")) {
    for (const auto* v : regions.children(d->code)) kelurahan.emplace_back(v->code);
  }
  REQUIRE(kelurahan.size() == 151);
  for (int i = 0; i < 2000; ++i) {
    const auto& k = kelurahan[i % kelurahan.size()];
    bus.subscribe("ling-" + std::to_string(i), "ling-" + std::to_string(i), {}, {k});
  }
  bus.pump();
  bus.publish({test::make_birth(kelurahan[7], kNow - kDay)});
  const auto got = bus.pump();
  std::size_t deliveries = 0;
  for (const auto& [name, list] : got) deliveries += list.size();
  // 2000 / 151: 13 or 14 consumers share each kelurahan.
  CHECK(deliveries >= 13);
  CHECK(deliveries <= 14);
  for (const auto& [name, list] : got) {
    const int i = std::stoi(name.substr(5));
    CHECK(kelurahan[i % kelurahan.size()] == kelurahan[7]);
  }
}

TEST_CASE("Consumers: a paused owner gets nothing until it may receive again") {
  Bus bus;
  bool paused = false;
  bus.consumers->set_paused([&](std::string_view owner, std::string_view,
                                const broker::Filter&) -> std::optional<std::string> {
    if (paused && owner == "dinkes") return "agreement PKS/1 expired";
    return std::nullopt;
  });
  bus.subscribe("c1", "kel", {}, {"1271011001"});
  bus.publish({test::make_birth("1271011001", kNow - kDay)});
  CHECK(seqs(bus.pump()["kel"]) == std::vector<std::uint64_t>{1});
  bus.ack("kel", {1});
  CHECK(bus.consumers->list().front().paused.empty());
  paused = true;  // the agreement expires
  bus.publish({test::make_birth("1271011001", kNow - kDay)});
  CHECK(bus.pump().empty());
  CHECK(bus.pump().empty());
  CHECK(bus.consumers->list().front().paused == "agreement PKS/1 expired");
  paused = false;  // a renewed agreement is loaded
  CHECK(seqs(bus.pump()["kel"]) == std::vector<std::uint64_t>{2});
  CHECK(bus.consumers->list().front().paused.empty());
}

// ---- batched deliveries (Subscribe.batch; broker/delivery_frames.h) --------------

namespace {

// Subscribes `client` to a consumer of kelurahan 1271011001 with `batch`.
void subscribe_batched(Bus& bus, const std::string& client, std::uint32_t window,
                       std::uint32_t batch, std::uint32_t ack_wait_ms = 30000) {
  auto f = bus.consumers->make_filter({}, {"1271011001"});
  REQUIRE(std::holds_alternative<broker::Filter>(f));
  broker::ConsumerSpec spec{
      "kel", std::get<broker::Filter>(f), StartPolicy::Earliest, 0, 0, ack_wait_ms, 5};
  auto r = bus.consumers->subscribe(ClientId{client}, "dinkes", spec, window, batch);
  REQUIRE(std::holds_alternative<broker::ConsumerStatus>(r));
}

void publish_births(Bus& bus, int n) {
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < n; ++i) evs.push_back(test::make_birth("1271011001", kNow - kDay + i));
  bus.publish(evs);
}

// One decoded message: its reply type and (sequence, attempt, record) per delivery.
struct Message {
  protocol::Reply type = protocol::Reply::NONE;
  std::string consumer;
  bool inner_consumer = false;  // an inner Delivery of a batch named a consumer
  std::vector<std::tuple<std::uint64_t, std::uint32_t, std::string>> deliveries;
  std::size_t bytes = 0;
};

Message decode(const flatbuffers::DetachedBuffer& frame) {
  const auto* start = frame.data();
  flatbuffers::Verifier v(frame.data(), frame.size());
  REQUIRE(v.VerifyBuffer<protocol::Response>(nullptr));
  const auto* resp = flatbuffers::GetRoot<protocol::Response>(frame.data());
  CHECK(resp->corr() == 0);
  Message m;
  m.type = resp->reply_type();
  m.bytes = frame.size();
  auto add = [&](const protocol::Delivery& d) {
    REQUIRE(d.record() != nullptr);
    CHECK((d.record()->data() - start) % 8 == 0);  // a nested buffer, aligned in the frame
    m.deliveries.emplace_back(
        d.sequence(), d.attempt(),
        std::string(reinterpret_cast<const char*>(d.record()->data()), d.record()->size()));
  };
  if (const auto* d = resp->reply_as_Delivery()) {
    m.consumer = d->consumer() ? d->consumer()->str() : "";
    add(*d);
  } else if (const auto* b = resp->reply_as_DeliveryBatch()) {
    m.consumer = b->consumer() ? b->consumer()->str() : "";
    REQUIRE(b->deliveries() != nullptr);
    for (const auto* item : *b->deliveries()) {
      m.inner_consumer = m.inner_consumer || item->consumer() != nullptr;
      add(*item);
    }
  }
  return m;
}

// What the server sends for one pump: the messages per client, in order.
std::map<std::string, std::vector<Message>> messages(
    std::vector<broker::Delivery>& due, std::size_t max_bytes = broker::kDeliveryBatchBytes) {
  std::vector<const broker::Delivery*> ready;
  for (auto& d : due) ready.push_back(&d);
  std::map<std::string, std::vector<Message>> out;
  for (const auto& g : broker::group_deliveries(ready, max_bytes)) {
    for (const auto* d : g) REQUIRE(d->client == g.front()->client);
    out[g.front()->client.bytes].push_back(decode(broker::delivery_frame(g)));
  }
  return out;
}

std::vector<std::uint64_t> seqs_of(const std::vector<Message>& ms) {
  std::vector<std::uint64_t> out;
  for (const auto& m : ms) {
    for (const auto& d : m.deliveries) out.push_back(std::get<0>(d));
  }
  return out;
}

}  // namespace

TEST_CASE("Consumers: a batched client gets DeliveryBatches of at most `batch`, in order") {
  Bus bus;
  publish_births(bus, 10);
  subscribe_batched(bus, "c1", 100, 4);
  auto due = bus.consumers->pump();
  REQUIRE(due.size() == 10);
  for (const auto& d : due) CHECK(d.batch == 4);
  auto got = messages(due);
  const auto& ms = got["c1"];
  REQUIRE(ms.size() == 3);
  CHECK(ms[0].deliveries.size() == 4);
  CHECK(ms[1].deliveries.size() == 4);
  CHECK(ms[2].deliveries.size() == 2);
  for (const auto& m : ms) {
    CHECK(m.type == protocol::Reply::DeliveryBatch);
    CHECK(m.consumer == "kel");
    CHECK_FALSE(m.inner_consumer);  // said once, by the batch
    for (const auto& [seq, attempt, record] : m.deliveries) {
      CHECK(attempt == 1);
      auto stored = bus.log.read(Sequence{seq});
      REQUIRE(stored.has_value());
      REQUIRE(stored->has_value());
      CHECK(record == **stored);
    }
  }
  CHECK(seqs_of(ms) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE("Consumers: Subscribe.batch is capped, and 0 means one Delivery per message") {
  Bus bus;
  publish_births(bus, 3);
  subscribe_batched(bus, "c1", 100, 1'000'000);
  auto due = bus.consumers->pump();
  REQUIRE(due.size() == 3);
  CHECK(due[0].batch == bus.options.max_delivery_batch);

  Bus old;
  publish_births(old, 3);
  subscribe_batched(old, "c1", 100, 0);
  due = old.consumers->pump();
  for (const auto& d : due) CHECK(d.batch == 1);
  auto got = messages(due);
  REQUIRE(got["c1"].size() == 3);
  for (const auto& m : got["c1"]) CHECK(m.type == protocol::Reply::Delivery);
}

TEST_CASE("Consumers: a DeliveryBatch stays under the byte cap, a larger record goes alone") {
  Bus bus;
  publish_births(bus, 12);
  subscribe_batched(bus, "c1", 100, 100);
  auto due = bus.consumers->pump();
  REQUIRE(due.size() == 12);
  // A cap of about three records' worth: batches of three, each message under it.
  const std::size_t per = due[0].record->size() + broker::kDeliveryOverheadBytes;
  const std::size_t cap = 3 * per + per / 2;
  auto got = messages(due, cap);
  CHECK(seqs_of(got["c1"]) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  for (const auto& m : got["c1"]) {
    CHECK(m.deliveries.size() <= 3);
    CHECK(m.bytes <= cap + 256);  // the Response around them
  }

  // The real cap, with records of 300 KiB and one of 2 MiB (synthetic bytes: framing
  // does not read them).
  std::vector<broker::Delivery> big;
  for (std::uint64_t i = 1; i <= 8; ++i) {
    const std::size_t size = i == 5 ? (2u << 20) : (300u << 10);
    big.push_back(broker::Delivery{ClientId{"c1"}, "dinkes", "kel", Sequence{i}, 1,
                                   std::make_shared<const std::string>(size, 'x'), 1000});
  }
  got = messages(big);
  std::vector<std::size_t> sizes;
  for (const auto& m : got["c1"]) {
    sizes.push_back(m.deliveries.size());
    if (m.deliveries.size() > 1) CHECK(m.bytes <= broker::kDeliveryBatchBytes);
  }
  CHECK(sizes == std::vector<std::size_t>{3, 1, 1, 3});  // 1-3, 4, 5 (alone), 6-8
  CHECK(seqs_of(got["c1"]) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("Consumers: with batches the window still counts events") {
  Bus bus;
  publish_births(bus, 12);
  subscribe_batched(bus, "c1", /*window=*/5, /*batch=*/100);
  auto due = bus.consumers->pump();
  auto got = messages(due);
  REQUIRE(got["c1"].size() == 1);
  CHECK(seqs_of(got["c1"]) == std::vector<std::uint64_t>{1, 2, 3, 4, 5});
  CHECK(bus.consumers->pump().empty());  // the window is full
  bus.ack("kel", {1, 2});
  due = bus.consumers->pump();
  got = messages(due);
  CHECK(seqs_of(got["c1"]) == std::vector<std::uint64_t>{6, 7});
  CHECK(bus.status("kel").pending == 5);
}

TEST_CASE("Consumers: unacknowledged events of a batch come again together after ack_wait") {
  Bus bus;
  publish_births(bus, 6);
  subscribe_batched(bus, "c1", 100, 10, /*ack_wait_ms=*/1000);
  auto due = bus.consumers->pump();
  REQUIRE(messages(due)["c1"].size() == 1);
  // The server could not send that message (a full queue), or the client lost some:
  // whatever is not acknowledged comes again, attempt 2, in one batch.
  bus.ack("kel", {2, 5});
  bus.clock.advance(999);
  CHECK(bus.consumers->pump().empty());
  bus.clock.advance(2);
  due = bus.consumers->pump();
  auto got = messages(due);
  REQUIRE(got["c1"].size() == 1);
  CHECK(got["c1"][0].type == protocol::Reply::DeliveryBatch);
  CHECK(seqs_of(got["c1"]) == std::vector<std::uint64_t>{1, 3, 4, 6});
  for (const auto& d : got["c1"][0].deliveries) CHECK(std::get<1>(d) == 2);
  bus.ack("kel", {1, 3, 4, 6});
  CHECK(bus.status("kel").ack_floor == 6);
  CHECK(bus.status("kel").pending == 0);
}

TEST_CASE("Consumers: one consumer, a batched and an unbatched client") {
  Bus bus;
  publish_births(bus, 10);
  subscribe_batched(bus, "new", 100, 50);
  subscribe_batched(bus, "old", 100, 1);
  auto due = bus.consumers->pump();
  REQUIRE(due.size() == 10);
  auto got = messages(due);
  // Shared round robin, as without batches; each client's share in sequence order.
  REQUIRE(got["new"].size() == 1);
  CHECK(got["new"][0].type == protocol::Reply::DeliveryBatch);
  CHECK(seqs_of(got["new"]) == std::vector<std::uint64_t>{1, 3, 5, 7, 9});
  REQUIRE(got["old"].size() == 5);
  CHECK(seqs_of(got["old"]) == std::vector<std::uint64_t>{2, 4, 6, 8, 10});
  // The unbatched client gets exactly the bytes brokers sent before batching.
  std::size_t i = 0;
  for (const auto& d : due) {
    if (d.client.bytes != "old") continue;
    flatbuffers::FlatBufferBuilder fbb(d.record->size() + 128);
    fbb.ForceVectorAlignment(d.record->size(), 1, 8);
    auto record =
        fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(d.record->data()), d.record->size());
    auto consumer = fbb.CreateString(d.consumer);
    fbb.Finish(protocol::CreateResponse(
        fbb, 1, 0, protocol::Reply::Delivery,
        protocol::CreateDelivery(fbb, consumer, d.sequence.value, d.attempt, record).Union()));
    const broker::Delivery* one[] = {&d};
    const auto frame = broker::delivery_frame(one);
    CHECK(std::string_view(reinterpret_cast<const char*>(frame.data()), frame.size()) ==
          std::string_view(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()));
    ++i;
  }
  CHECK(i == 5);
  bus.ack("kel", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(bus.status("kel").ack_floor == 10);
}
