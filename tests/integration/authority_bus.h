// The fixture of the attack tests on authority (authority_test.cpp, redteam_test.cpp): a
// real broker with CURVE and a roster of agencies whose registry a test may rewrite and
// reload, publishers and consumers that record what they got, and the audit helpers.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <csignal>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

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

namespace kolabus::test::authority {

using namespace std::chrono_literals;

constexpr TimeMs kDay = 24LL * 3600 * 1000;

// Real codes of data/wilayah: two kelurahan of Medan Kota and Gambir, Jakarta Pusat.
inline const std::string kPasarBaru = "1271011001";

inline const std::string kPusatPasar = "1271011002";

inline const std::string kGambir = "3171011001";

// The people in test_events.h's events.
inline const std::string kMotherNik = "1271015203950001";  // make_birth

inline const std::string kKkNumber = "1271012002200001";  // make_birth

inline const std::string kDeceasedNik = "1271011505500003";  // make_death

// The agencies of the bus.
inline const std::string kRegistry = "disdukcapil-medan";  // the registry of record for Medan

inline const std::string kHospital = "rsud-pirngadi";  // reports births in Medan

inline const std::string kJakarta = "disdukcapil-jakpus";  // the registry of Jakarta Pusat

inline const std::string kProvince = "disdukcapil-sumut";  // may correct Medan's births only

inline const std::string kKelurahan = "kel-pasar-baru";  // receives its village's events

inline const std::string kNoc = "noc-diskominfo";  // operates the bus, reads nothing

inline const std::string kLapsed = "inspektorat-medan";  // an operator whose agreement ran out

inline const std::string kAll1271 = "{ kinds = [\"*\"], regions = [\"1271\"] }";

inline KeyPair gen() {
  auto k = client::generate_key_pair();
  REQUIRE(k.has_value());
  return *k;
}

inline bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

inline std::string name_of(client::OutcomeKind k) {
  switch (k) {
    case client::OutcomeKind::kAcked:
      return "acked";
    case client::OutcomeKind::kDuplicate:
      return "duplicate";
    case client::OutcomeKind::kRefused:
      return "refused";
  }
  return "?";
}

constexpr auto kNotAuthorised = static_cast<std::uint16_t>(protocol::ErrorCode::NotAuthorised);

// A correction of `target` whose corrected payload is a birth in `village` (the child's
// name spelled again), naming `regions`.
inline std::vector<std::uint8_t> correct_birth(const EventId& target, const std::string& village,
                                               const std::vector<std::string>& regions,
                                               const std::string& reason, TimeMs when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  const events::Uuid target_uuid(
      flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  auto b =
      events::CreateBirthDirect(fbb, "Putri Ayu Siregar", events::Sex::Female, when_ms, "Medan",
                                village.c_str(), kMotherNik.c_str(), nullptr, kKkNumber.c_str());
  auto c = events::CreateCorrectionDirect(fbb, &target_uuid, reason.c_str(), false,
                                          events::Payload::Birth, b.Union());
  return test::detail::finish_event(fbb, events::Payload::Correction, c.Union(), regions, when_ms);
}

// One agency of the registry. Grants are TOML inline tables; empty: none.
struct Member {
  std::string name;
  KeyPair keys;
  std::string publish, subscribe, correct;
  std::string fields;  // a TOML list; empty: every field
  bool operate = false;
  std::string valid_until;  // the agreement's last day (from 2020-01-01); empty: none
};

inline std::vector<Member> roster() {
  std::vector<Member> m;
  m.push_back({kRegistry, gen(), kAll1271, kAll1271, "", "", true, "2099-12-31"});
  m.push_back({kHospital, gen(), "{ kinds = [\"birth\"], regions = [\"1271\"] }", "", "", "", false,
               "2099-12-31"});
  m.push_back({kJakarta, gen(), "{ kinds = [\"*\"], regions = [\"3171\"] }",
               "{ kinds = [\"*\"], regions = [\"3171\"] }", "", "", false, "2099-12-31"});
  m.push_back({kProvince, gen(), "", "", "{ kinds = [\"birth\"], regions = [\"1271\"] }", "", false,
               "2099-12-31"});
  m.push_back({kKelurahan, gen(), "", "{ kinds = [\"*\"], regions = [\"1271011001\"] }", "",
               "[\"*\", \"-death.cause_of_death\"]", true, "2099-12-31"});
  m.push_back({kNoc, gen(), "", "", "", "", true, ""});
  m.push_back({kLapsed, gen(), "", "", "", "", true, "2021-12-31"});
  return m;
}

// A publisher with every outcome the broker gave it.
struct Pub {
  struct Log {
    std::mutex mu;
    std::vector<client::Outcome> all;
  };
  std::unique_ptr<Log> log = std::make_unique<Log>();
  std::unique_ptr<client::Publisher> p;  // destroyed first: its callback uses `log`

  // Publishes `event` and waits for the broker's answer to it.
  client::Outcome send(const std::vector<std::uint8_t>& event) {
    REQUIRE(p->publish(event).has_value());
    REQUIRE(p->wait_drained(20s));
    auto o = outcome_of(test::id_of(event));
    REQUIRE(o.has_value());
    return *o;
  }
  std::optional<client::Outcome> outcome_of(const EventId& id) {
    std::lock_guard lock(log->mu);
    for (auto it = log->all.rbegin(); it != log->all.rend(); ++it) {
      if (it->id == id) return *it;
    }
    return std::nullopt;
  }
};

// What a consumer received, copied out of the handler.
struct Got {
  std::uint64_t sequence = 0;
  EventId id;
  events::Payload kind = events::Payload::NONE;
  std::string event;  // the Event bytes as delivered
  std::string source;
};

// A client::Consumer that records what it handles. Every wait is bounded.
class Sink {
 public:
  explicit Sink(client::ConsumerOptions o) {
    auto c = client::Consumer::open(std::move(o));
    REQUIRE(c.has_value());
    c_ = std::move(*c);
  }

  // The handler's verdict; default: acknowledge.
  std::function<client::HandlerResult(const client::Received&)> verdict;
  std::vector<Got> got;
  std::string last_error;

  void poll(std::chrono::milliseconds d) {
    auto n = c_->poll(
        [&](const client::Received& r, storage::Inbox::Txn&) {
          got.push_back({r.sequence.value, r.id, r.event_root->payload_type(),
                         std::string(reinterpret_cast<const char*>(r.event.data()), r.event.size()),
                         std::string(r.source)});
          return verdict ? verdict(r) : client::HandlerResult{};
        },
        d);
    // A session refused (the key or grant was taken away) is what some cases expect.
    if (!n) last_error = n.error().to_string();
  }
  // Polls for `d`, whatever arrives (to see that nothing does, or to flush acks).
  void drain_for(std::chrono::milliseconds d) {
    const auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) poll(100ms);
  }
  bool until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 20s) {
    return test::wait_until(
        [&] {
          poll(50ms);
          return done();
        },
        timeout);
  }
  std::size_t count(const EventId& id) const {
    return static_cast<std::size_t>(
        std::count_if(got.begin(), got.end(), [&](const Got& g) { return g.id == id; }));
  }
  const Got* find(const EventId& id) const {
    for (const auto& g : got)
      if (g.id == id) return &g;
    return nullptr;
  }
  client::Consumer& consumer() { return *c_; }

 private:
  std::unique_ptr<client::Consumer> c_;
};

// A consumer polled on its own thread, as a running adapter polls it: it stays
// attached whatever the test's thread is waiting for.
class LiveSink {
 public:
  explicit LiveSink(client::ConsumerOptions o) {
    auto c = client::Consumer::open(std::move(o));
    REQUIRE(c.has_value());
    c_ = std::move(*c);
    thread_ = std::thread([this] {
      while (!stop_) {
        auto n = c_->poll(
            [this](const client::Received& r, storage::Inbox::Txn&) {
              std::lock_guard lock(mu_);
              ids_.push_back(r.id);
              return client::HandlerResult{};
            },
            100ms);
        if (!n) {
          {
            std::lock_guard lock(mu_);
            last_error_ = n.error().to_string();
          }
          std::this_thread::sleep_for(50ms);  // refused: try again a little later
        }
      }
    });
  }
  ~LiveSink() { stop(); }
  LiveSink(const LiveSink&) = delete;
  LiveSink& operator=(const LiveSink&) = delete;

  void stop() {
    if (!thread_.joinable()) return;
    stop_ = true;
    c_->interrupt();
    thread_.join();
  }
  std::size_t count(const EventId& id) const {
    std::lock_guard lock(mu_);
    return static_cast<std::size_t>(std::count(ids_.begin(), ids_.end(), id));
  }
  std::string last_error() const {
    std::lock_guard lock(mu_);
    return last_error_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<EventId> ids_;
  std::string last_error_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<client::Consumer> c_;
  std::thread thread_;
};

// A CURVE broker with the agencies of roster() (or the case's own changes of them).
struct AuthorityBus {
  test::TempDir dir{"authority"};
  KeyPair broker_keys = gen();
  std::vector<Member> members = roster();
  std::unique_ptr<test::BrokerProcess> broker;
  int inboxes = 0;

  AuthorityBus() {
    REQUIRE(write_key_pair(dir.str(), "broker", broker_keys, false).has_value());
    write_registry();
    broker = std::make_unique<test::BrokerProcess>(
        dir.str("data"), "tcp://127.0.0.1:*",
        std::vector<std::string>{"--key", dir.str("broker.key"), "--agencies",
                                 dir.str("agencies.toml")});
  }

  Member& member(const std::string& name) {
    for (auto& m : members)
      if (m.name == name) return m;
    FAIL("no agency " << name);
    throw std::logic_error("unreachable");
  }

  void write_registry() {
    std::ostringstream out;
    for (const auto& m : members) {
      out << "[[agency]]\nname = \"" << m.name << "\"\npublic_key = \"" << m.keys.public_key
          << "\"\n";
      if (!m.publish.empty()) out << "publish = " << m.publish << "\n";
      if (!m.subscribe.empty()) out << "subscribe = " << m.subscribe << "\n";
      if (!m.correct.empty()) out << "correct = " << m.correct << "\n";
      if (!m.fields.empty()) out << "fields = " << m.fields << "\n";
      if (m.operate) out << "operate = true\n";
      if (!m.valid_until.empty()) {
        out << "agreement = { pks = \"PKS/" << m.name << "\", purpose = \"tests\", "
            << "valid_from = 2020-01-01, valid_until = " << m.valid_until << " }\n";
      }
      out << "\n";
    }
    std::ofstream(dir.str("agencies.toml")) << out.str();
  }

  // Writes the registry and has the registry's operator load it (synchronous).
  void reload() {
    write_registry();
    auto ops = admin(kRegistry);
    auto n = ops->reload_registry();
    REQUIRE_MESSAGE(n.has_value(), n.error().to_string());
    CHECK(*n == members.size());
  }

  client::CurveOptions as(const std::string& name) {
    return {broker_keys.public_key, member(name).keys};
  }

  Pub publisher(const std::string& name) {
    client::PublisherOptions o;
    o.endpoint = broker->endpoint();
    o.outbox_dir = dir.str("outbox-" + name);
    o.curve = as(name);
    o.ack_timeout = 1000ms;
    Pub pub;
    auto p = client::Publisher::open(o, [log = pub.log.get()](const client::Outcome& out) {
      std::lock_guard lock(log->mu);
      log->all.push_back(out);
    });
    REQUIRE(p.has_value());
    pub.p = std::move(*p);
    return pub;
  }

  client::ConsumerOptions consumer(const std::string& agency, const std::string& name,
                                   std::vector<std::string> regions) {
    client::ConsumerOptions o;
    o.endpoint = broker->endpoint();
    o.inbox_dir = dir.str("inbox-" + agency + "-" + name + "-" + std::to_string(inboxes++));
    o.name = name;
    o.regions = std::move(regions);
    o.curve = as(agency);
    o.heartbeat = 200ms;
    return o;
  }

  std::unique_ptr<client::AdminClient> admin(const std::string& name,
                                             std::chrono::milliseconds timeout = 10s) {
    auto a = client::AdminClient::connect(broker->endpoint(), timeout, as(name));
    REQUIRE(a.has_value());
    return std::move(*a);
  }

  // What the next stored event would get: unchanged when nothing was stored.
  std::uint64_t next_sequence() {
    auto p = admin(kRegistry)->ping();
    REQUIRE_MESSAGE(p.has_value(), p.error().to_string());
    return p->next_sequence;
  }

  std::string log_text() const {
    std::ifstream in(dir.str("data") + ".log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

inline std::vector<std::string> audit_records(client::AdminClient& admin) {
  auto chain = test::read_audit_chain(admin, 50);
  CHECK_FALSE(chain.problem.has_value());
  return chain.records;
}

inline std::size_t count_action(const std::vector<std::string>& recs, audit::Action action) {
  std::size_t n = 0;
  for (const auto& b : recs) {
    AlignedBytes unused;
    const auto* r = broker::verified_record(b, unused);
    REQUIRE(r != nullptr);
    if (r->action() == action) ++n;
  }
  return n;
}

// The dead letters `owner`'s consumer `consumer` has, as `admin` lists them, once there
// is at least one (or the last answer after 10 s).
inline Result<std::vector<client::DeadLetterView>> dead_letters(client::AdminClient& admin,
                                                                const std::string& consumer,
                                                                const std::string& owner = {}) {
  Result<std::vector<client::DeadLetterView>> r = std::vector<client::DeadLetterView>{};
  test::wait_until(
      [&] {
        r = admin.dlq_list(consumer, 0, 100, owner);
        return !r.has_value() || !r->empty();
      },
      10s);
  return r;
}

// The kelurahan's consumer "kel" rejects the registry's next birth in its village with
// `reason`. Returns the birth's sequence once the consumer has sent the Reject.
inline std::uint64_t make_dead_letter(Pub& registry, Sink& kel, const std::string& reason) {
  kel.verdict = [reason](const client::Received&) {
    return client::HandlerResult{client::Verdict::kReject, reason, 0};
  };
  const auto birth = test::make_birth(kPasarBaru, SystemClock().now_ms() - kDay);
  const auto o = registry.send(birth);
  REQUIRE(o.kind == client::OutcomeKind::kAcked);
  REQUIRE(kel.until([&] { return kel.consumer().stats().rejected >= 1; }));
  kel.drain_for(200ms);  // the Reject is on its way
  return o.sequence.value;
}

// The consumer `name` of `owner` as an operator lists it.
inline std::optional<client::ConsumerInfoView> consumer_info(client::AdminClient& ops,
                                                             const std::string& owner,
                                                             const std::string& name) {
  auto list = ops.list_consumers();
  if (!list) return std::nullopt;
  for (const auto& c : *list) {
    if (c.owner == owner && c.name == name) return c;
  }
  return std::nullopt;
}

}  // namespace kolabus::test::authority
