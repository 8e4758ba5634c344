// CURVE per agency on a real broker: only the registry's keys connect; each agency
// publishes, receives and operates only within its grants; the source of an event
// is the agency its key authenticates.
#include <csignal>
#include <fstream>
#include <set>

#include <doctest/doctest.h>

#include "broker_process.h"
#include "test_events.h"
#include <client/admin.h>
#include <client/consumer.h>
#include <client/curve.h>
#include <client/publisher.h>
#include <common/keys.h>
#include <schemas/log_generated.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

constexpr TimeMs kDay = 24LL * 3600 * 1000;

struct SecureBus {
  test::TempDir dir{"secure"};
  KeyPair broker_keys = gen(), registry_keys = gen(), kelurahan_keys = gen(), stranger = gen();
  std::unique_ptr<test::BrokerProcess> broker;

  static KeyPair gen() {
    auto k = client::generate_key_pair();
    REQUIRE(k.has_value());
    return *k;
  }

  SecureBus() {
    REQUIRE(write_key_pair(dir.str(), "broker", broker_keys, false).has_value());
    write_registry("2099-12-31");
    broker = std::make_unique<test::BrokerProcess>(
        dir.str("data"), "tcp://127.0.0.1:*",
        std::vector<std::string>{"--key", dir.str("broker.key"), "--agencies",
                                 dir.str("agencies.toml")});
  }

  // The registry; the kelurahan's agreement runs until `kelurahan_until`.
  void write_registry(const std::string& kelurahan_until) {
    std::ofstream(dir.str("agencies.toml"))
        << "[[agency]]\nname = \"disdukcapil-medan\"\npublic_key = \"" << registry_keys.public_key
        << "\"\npublish = { kinds = [\"*\"], regions = [\"1271\"] }\n"
           "subscribe = { kinds = [\"*\"], regions = [\"1271\"] }\noperate = true\n"
           "agreement = { pks = \"PKS/1\", purpose = \"registry\", valid_from = 2020-01-01, "
           "valid_until = 2099-12-31 }\n\n"
           "[[agency]]\nname = \"kel-pasar-baru\"\npublic_key = \""
        << kelurahan_keys.public_key
        << "\"\nsubscribe = { kinds = [\"*\"], regions = [\"1271011001\"] }\n"
           // The kelurahan sees its residents, not the parents' NIKs nor a cause of death.
           "fields = [\"*\", \"-birth.mother_nik\", \"-birth.father_nik\", "
           "\"-death.cause_of_death\"]\n"
           "agreement = { pks = \"PKS/2\", purpose = \"ward register\", valid_from = "
           "2020-01-01, valid_until = "
        << kelurahan_until << " }\n";
  }
  void reload() { ::kill(broker->pid(), SIGHUP); }

  client::CurveOptions as(const KeyPair& who) const { return {broker_keys.public_key, who}; }

  std::unique_ptr<client::Publisher> publisher(const KeyPair& who, const std::string& name) {
    client::PublisherOptions o;
    o.endpoint = broker->endpoint();
    o.outbox_dir = dir.str("outbox-" + name);
    o.curve = as(who);
    o.ack_timeout = 1000ms;
    auto p = client::Publisher::open(o);
    REQUIRE(p.has_value());
    return std::move(*p);
  }

  client::ConsumerOptions consumer(const KeyPair& who, const std::string& name,
                                   std::vector<std::string> regions) {
    client::ConsumerOptions o;
    o.endpoint = broker->endpoint();
    o.inbox_dir = dir.str("inbox-" + name);
    o.name = name;
    o.regions = std::move(regions);
    o.curve = as(who);
    o.heartbeat = 200ms;
    return o;
  }
};

void publish_all(client::Publisher& p, const std::vector<std::vector<std::uint8_t>>& evs) {
  std::vector<std::span<const std::uint8_t>> batch(evs.begin(), evs.end());
  REQUIRE(p.publish_batch(batch).has_value());
  REQUIRE(p.wait_drained(30s));
}

}  // namespace

TEST_CASE("Security: a key that is not in the registry is refused, and told so") {
  SecureBus bus;
  auto admin = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.stranger));
  REQUIRE(admin.has_value());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*admin)->list_consumers();
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("not authorised") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // told, not left waiting

  auto pub = bus.publisher(bus.stranger, "stranger");
  REQUIRE(pub->publish(test::make_birth("1271011001", SystemClock().now_ms() - kDay)));
  REQUIRE(test::wait_until([&] { return pub->stats().unauthorised; }));
  CHECK(pub->stats().pending == 1);  // kept, in case the registry is fixed
}

TEST_CASE("Security: an agency publishes as itself and only within its grant") {
  SecureBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(bus.registry_keys, "registry");
  publish_all(*registry, {test::make_birth("1271011001", t), test::make_birth("3101011001", t)});
  CHECK(registry->stats().acked == 1);
  auto refused = registry->refused(10);
  REQUIRE(refused.has_value());
  REQUIRE(refused->size() == 1);  // the Jakarta birth: outside Medan
  CHECK(refused->front().refusal.code ==
        static_cast<std::uint16_t>(protocol::ErrorCode::NotAuthorised));

  // The kelurahan has no publish grant at all.
  auto kel = bus.publisher(bus.kelurahan_keys, "kel");
  publish_all(*kel, {test::make_birth("1271011001", t)});
  CHECK(kel->stats().refused == 1);
  CHECK(kel->stats().acked == 0);

  // The stored event's source is the agency the key authenticated.
  auto admin = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
  REQUIRE(admin.has_value());
  auto page = (*admin)->read_range({{}, {"1271"}}, 1, 0, 0, 100);
  REQUIRE(page.has_value());
  REQUIRE(page->records.size() == 1);
  const auto* rec = flatbuffers::GetRoot<kolabus::log::LogRecord>(page->records[0].data());
  CHECK(rec->source()->str() == "disdukcapil-medan");
}

TEST_CASE("Security: kelurahan X never receives an event of kelurahan Y, live or replayed") {
  SecureBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(bus.registry_keys, "registry");
  std::vector<std::vector<std::uint8_t>> evs;
  std::set<EventId> mine;
  for (int i = 0; i < 20; ++i) {
    evs.push_back(test::make_birth(i % 2 ? "1271011001" : "1271011002", t));
    if (i % 2) mine.insert(test::id_of(evs.back()));
  }
  evs.push_back(test::make_move("1271011002", "1271011001", events::MoveType::WithinKecamatan, t));
  mine.insert(test::id_of(evs.back()));  // moved in: its own
  publish_all(*registry, evs);

  SUBCASE("a filter outside its grant is refused") {
    auto c = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "spy", {"1271011002"}));
    REQUIRE(c.has_value());
    auto r = (*c)->poll(
        [](const client::Received&, storage::Inbox::Txn&) { return client::HandlerResult{}; }, 2s);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("NotAuthorised") != std::string::npos);
    auto wide = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "wide", {"127101"}));
    auto r2 = (*wide)->poll(
        [](const client::Received&, storage::Inbox::Txn&) { return client::HandlerResult{}; }, 2s);
    CHECK_FALSE(r2.has_value());
  }
  SUBCASE("its own filter gets exactly its events") {
    auto c = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "kel", {"1271011001"}));
    REQUIRE(c.has_value());
    std::set<EventId> got;
    REQUIRE(test::wait_until([&] {
      auto n = (*c)->poll(
          [&](const client::Received& r, storage::Inbox::Txn&) {
            got.insert(r.id);
            return client::HandlerResult{};
          },
          100ms);
      REQUIRE(n.has_value());
      return got.size() >= mine.size();
    }));
    CHECK(got == mine);
  }
  SUBCASE("replay needs the operate permission, and reads only within the grant") {
    auto kel_admin =
        client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.kelurahan_keys));
    REQUIRE(kel_admin.has_value());
    auto page = (*kel_admin)->read_range({{}, {"1271011002"}}, 1, 0, 0, 100);
    REQUIRE_FALSE(page.has_value());
    CHECK(page.error().message.find("NotAuthorised") != std::string::npos);
    auto own = (*kel_admin)->read_range({{}, {"1271011001"}}, 1, 0, 0, 100);
    CHECK_FALSE(own.has_value());  // no operate permission at all
    auto ops = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
    auto all = (*ops)->read_range({{}, {"1271011001"}}, 1, 0, 0, 100);
    REQUIRE(all.has_value());
    CHECK(all->records.size() == mine.size());
  }
}

TEST_CASE("Security: an expired agreement stops deliveries; a renewed one resumes them") {
  SecureBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(bus.registry_keys, "registry");
  auto c = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "kel", {"1271011001"}));
  REQUIRE(c.has_value());
  std::set<EventId> got;
  auto poll = [&](std::chrono::milliseconds d) {
    auto n = (*c)->poll(
        [&](const client::Received& r, storage::Inbox::Txn&) {
          got.insert(r.id);
          return client::HandlerResult{};
        },
        d);
    REQUIRE(n.has_value());
  };
  publish_all(*registry, {test::make_birth("1271011001", t)});
  REQUIRE(test::wait_until([&] {
    poll(100ms);
    return got.size() == 1;
  }));

  bus.write_registry("2021-12-31");  // the agreement has run out
  bus.reload();
  // Wait until the broker applied it: a Subscribe of a new consumer is refused.
  REQUIRE(test::wait_until([&] {
    auto probe = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "probe", {"1271011001"}));
    auto r = (*probe)->poll(
        [](const client::Received&, storage::Inbox::Txn&) { return client::HandlerResult{}; },
        300ms);
    return !r.has_value() && r.error().message.find("expired on 2021-12-31") != std::string::npos;
  }));
  publish_all(*registry, {test::make_birth("1271011001", t), test::make_birth("1271011001", t)});
  poll(1500ms);
  CHECK(got.size() == 1);  // nothing delivered while the agreement is expired

  bus.write_registry("2099-12-31");  // renewed
  bus.reload();
  REQUIRE(test::wait_until([&] {
    poll(100ms);
    return got.size() == 3;
  }));
}

TEST_CASE("Security: fields outside an agency's profile are absent from the bytes it receives") {
  SecureBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(bus.registry_keys, "registry");
  const auto birth = test::make_birth("1271011001", t);  // mother 1271015203950001
  publish_all(*registry, {birth});
  auto c = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "kel", {"1271011001"}));
  REQUIRE(c.has_value());
  std::string delivered;
  std::string child, mother;
  REQUIRE(test::wait_until([&] {
    auto n = (*c)->poll(
        [&](const client::Received& r, storage::Inbox::Txn&) {
          delivered.assign(reinterpret_cast<const char*>(r.event.data()), r.event.size());
          const auto* b = r.event_root->payload_as_Birth();
          child = b->child_name()->str();
          mother = b->mother_nik() ? b->mother_nik()->str() : "";
          return client::HandlerResult{};
        },
        100ms);
    REQUIRE(n.has_value());
    return !delivered.empty();
  }));
  CHECK(child == "Putri Siregar");                                 // allowed: kept
  CHECK(mother.empty());                                           // required: kept, empty
  CHECK(delivered.find("1271015203950001") == std::string::npos);  // not in the bytes
  CHECK(test::id_of(std::vector<std::uint8_t>(delivered.begin(), delivered.end())) ==
        test::id_of(birth));  // the same event

  // The operator (profile "*") still reads the whole stored event.
  auto ops = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
  auto page = (*ops)->read_range({{}, {"1271011001"}}, 1, 0, 0, 10);
  REQUIRE(page.has_value());
  REQUIRE(page->records.size() == 1);
  CHECK(page->records[0].find("1271015203950001") != std::string::npos);
}
