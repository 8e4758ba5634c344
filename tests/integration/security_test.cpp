// CURVE per agency on a real broker: only the registry's keys connect; each agency
// publishes, receives and operates only within its grants; the source of an event
// is the agency its key authenticates.
#include <csignal>
#include <fstream>
#include <set>

#include <doctest/doctest.h>

#include "audit_chain.h"
#include "broker_process.h"
#include "test_events.h"
#include <broker/audit.h>
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

// Every record of the broker's audit chain, checked link by link on the way.
std::vector<std::string> audit_records(client::AdminClient& admin) {
  auto chain = test::read_audit_chain(admin, 3);  // small pages: paging is exercised too
  CHECK_FALSE(chain.problem.has_value());
  return chain.records;
}

// The records of `action`, decoded.
std::vector<const audit::Record*> of_action(const std::vector<std::string>& recs,
                                            audit::Action action) {
  std::vector<const audit::Record*> out;
  for (const auto& b : recs) {
    AlignedBytes unused;  // a std::string's bytes are 8-byte aligned: read in place
    const auto* r = broker::verified_record(b, unused);
    REQUIRE(r != nullptr);
    if (r->action() == action) out.push_back(r);
  }
  return out;
}

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

TEST_CASE("Security: an expired agreement stops deliveries, a renewed one resumes them") {
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
    // While the agreement is expired, a consumer that lost its session (a slow broker
    // on a loaded machine) is refused when it subscribes again: that is the rule too.
    if (!n)
      CHECK_MESSAGE(n.error().message.find("NotAuthorised") != std::string::npos,
                    n.error().to_string());
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

  // Renewed, and loaded by an operator's command this time (no signal needed). A
  // registry file with an error is refused first; the old registry stays.
  auto ops = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
  REQUIRE(ops.has_value());
  std::ofstream(bus.dir.str("agencies.toml")) << "[[agency]]\nname = \"broken\"\n";
  auto refused = (*ops)->reload_registry();
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().message.find("not reloaded, the old one stays") != std::string::npos);
  bus.write_registry("2099-12-31");
  auto reloaded = (*ops)->reload_registry();
  REQUIRE_MESSAGE(reloaded.has_value(), reloaded.error().to_string());
  CHECK(*reloaded == 2);
  REQUIRE(test::wait_until([&] {
    poll(100ms);
    return got.size() == 3;
  }));

  // The stop and the resumption are in the audit chain, with the reason.
  const auto recs = audit_records(**ops);
  const auto stopped = of_action(recs, audit::Action::AgreementStopped);
  REQUIRE(stopped.size() == 1);
  CHECK(stopped[0]->agency()->str() == "kel-pasar-baru");
  CHECK(stopped[0]->detail()->str().find("expired on 2021-12-31") != std::string::npos);
  CHECK(of_action(recs, audit::Action::AgreementResumed).size() == 1);
  CHECK(of_action(recs, audit::Action::RegistryLoaded).size() == 3);  // start, two reloads
}

TEST_CASE("Security: the audit chain records access and refusals, and answers who saw a person") {
  SecureBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(bus.registry_keys, "registry");
  // Two births to the kelurahan's village (mother 1271015203950001), a death elsewhere.
  publish_all(*registry, {test::make_birth("1271011001", t), test::make_birth("1271011001", t),
                          test::make_death("1271011002", t)});
  auto c = client::Consumer::open(bus.consumer(bus.kelurahan_keys, "kel", {"1271011001"}));
  REQUIRE(c.has_value());
  std::size_t got = 0;
  REQUIRE(test::wait_until([&] {
    auto n = (*c)->poll(
        [&](const client::Received&, storage::Inbox::Txn&) {
          ++got;
          return client::HandlerResult{};
        },
        100ms);
    REQUIRE(n.has_value());
    return got == 2;
  }));
  auto ops = client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.registry_keys));
  REQUIRE(ops.has_value());
  REQUIRE((*ops)->read_range({{}, {"1271011002"}}, 1, 0, 0, 100).has_value());  // a replay
  // Refused: a kelurahan replaying, and a key the registry does not know.
  auto kel_admin =
      client::AdminClient::connect(bus.broker->endpoint(), 10s, bus.as(bus.kelurahan_keys));
  CHECK_FALSE((*kel_admin)->read_range({{}, {"1271011001"}}, 1, 0, 0, 100).has_value());
  CHECK_FALSE((*kel_admin)->audit_read(1, 0, 10).has_value());  // nor read the chain
  auto stranger = client::AdminClient::connect(bus.broker->endpoint(), 2s, bus.as(bus.stranger));
  CHECK_FALSE((*stranger)->ping().has_value());

  std::vector<std::string> recs;
  REQUIRE(test::wait_until([&] {
    recs = audit_records(**ops);
    return !of_action(recs, audit::Action::ConnectionRefused).empty();
  }));
  // One Publish record per group commit: the three events came in one or, on a slow
  // machine (a sanitizer build), in several.
  const auto publish = of_action(recs, audit::Action::Publish);
  REQUIRE_FALSE(publish.empty());
  std::uint64_t published = 0;
  for (const auto* p : publish) {
    CHECK(p->agency()->str() == "disdukcapil-medan");
    published += p->count();
  }
  CHECK(published == 3);
  const auto deliver = of_action(recs, audit::Action::Deliver);
  REQUIRE_FALSE(deliver.empty());
  CHECK(deliver[0]->agency()->str() == "kel-pasar-baru");
  CHECK(deliver[0]->consumer()->str() == "kel");
  const auto read = of_action(recs, audit::Action::Read);
  REQUIRE(read.size() == 1);
  CHECK(read[0]->first_sequence() == 3);
  const auto refused = of_action(recs, audit::Action::Refused);
  REQUIRE(refused.size() == 2);
  CHECK(refused[0]->agency()->str() == "kel-pasar-baru");
  CHECK(refused[0]->detail()->str().find("ReadRange: ") == 0);
  CHECK(refused[1]->detail()->str().find("AuditRead: ") == 0);
  CHECK(of_action(recs, audit::Action::ConnectionRefused)[0]->detail()->str().find(
            bus.stranger.public_key) != std::string::npos);
  for (const auto& r : recs) {
    CHECK(r.find("1271015203950001") == std::string::npos);  // no NIK in the chain
  }

  // Who received the mother's data? The registry published it, the kelurahan got it.
  std::vector<client::PersonHitView> hits;
  std::vector<std::uint64_t> seqs;
  std::uint64_t from = 1;
  std::size_t pages = 0;
  while (true) {
    auto page = (*ops)->audit_person("1271015203950001", from, 4, seqs);  // pages of 4
    REQUIRE_MESSAGE(page.has_value(), page.error().to_string());
    ++pages;
    hits.insert(hits.end(), page->hits.begin(), page->hits.end());
    seqs = page->sequences;
    if (page->done) break;
    from = page->next_index;
  }
  CHECK(seqs == std::vector<std::uint64_t>{1, 2});
  std::set<std::pair<std::string, std::uint64_t>> received;
  for (const auto& h : hits) {
    CHECK(h.kind == static_cast<std::uint8_t>(events::Payload::Birth));
    CHECK(h.event_id.size() == 16);
    if (h.action == static_cast<std::uint8_t>(audit::Action::Deliver)) {
      received.emplace(h.agency, h.sequence);
    }
  }
  CHECK(received == std::set<std::pair<std::string, std::uint64_t>>{{"kel-pasar-baru", 1},
                                                                    {"kel-pasar-baru", 2}});
  // The deceased's event went to nobody but the replaying operator.
  auto dead = (*ops)->audit_person("1271011505500003", 1, 100000, {});
  REQUIRE(dead.has_value());
  CHECK(dead->sequences == std::vector<std::uint64_t>{3});
  CHECK(dead->hits.size() == 2);  // published, read
  auto bad = (*ops)->audit_person("12710115055", 1, 100, {});
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("16 digits") != std::string::npos);
  // The questions themselves were recorded, every page of them (the refused one not).
  CHECK(pages > 1);
  CHECK(of_action(audit_records(**ops), audit::Action::PersonQuery).size() == pages + 1);
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
