// Upgrades (issue 7, item 6): the data directory of a released broker, opened by this
// broker. Each fixture under fixtures/<commit>/ (README.md: how it was made) holds the
// packed directory and what that version's own tools said about it: every event with
// its sequence, one kelurahan's replay, every consumer's position, the dead letters, the
// audit head. Each case unpacks a fresh copy and starts this build's kolabus-broker on
// it, as an operator upgrading in place would.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <nlohmann/json.hpp>
#include <rocksdb/db.h>
#include <sys/wait.h>
#include <zmq.hpp>

#include "audit_chain.h"
#include "broker_process.h"
#include "file_modes.h"
#include "test_events.h"
#include <client/admin.h>
#include <client/consumer.h>
#include <client/curve.h>
#include <common/clock.h>
#include <common/keys.h>
#include <schemas/audit_generated.h>
#include <schemas/json_codec.h>
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>

using namespace kolabus;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// The environment may point elsewhere, e.g. at a damaged copy, to see the checks fail.
const std::filesystem::path kFixtures = std::getenv("KOLABUS_UPGRADE_FIXTURES") != nullptr
                                            ? std::getenv("KOLABUS_UPGRADE_FIXTURES")
                                            : KOLABUS_UPGRADE_FIXTURES;

// What the old version's `kolabus replay --json` printed for one event.
struct OldEvent {
  std::uint64_t sequence = 0;
  std::int64_t received_at = 0;
  std::string source;
  json event;  // the event as JSON (schemas::JsonCodec of that version)
  std::string kind;
  std::vector<std::string> regions;
};

struct Fixture {
  std::string version;
  bool had_audit = false;                // the version kept an audit chain
  std::vector<OldEvent> events;          // events[i].sequence == i + 1
  std::vector<json> consumers;           // `kolabus consumers --json`
  std::vector<std::uint64_t> kelurahan;  // `kolabus replay --regions 1271011001`
  std::vector<json> dead_letters;        // `kolabus dlq list --json`
  // Acknowledged above the ack floor, per consumer (old_consumer.py's kec-dead.json).
  std::map<std::string, std::set<std::uint64_t>> acked_above;
  std::optional<json> audit_head;  // `kolabus audit verify --json`, if it had one
};

std::vector<json> json_lines(const std::filesystem::path& file) {
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), "cannot read ", file.string());
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = json::parse(line);
    if (!j.contains("summary")) out.push_back(std::move(j));
  }
  return out;
}

Fixture load(const std::string& version, bool had_audit) {
  Fixture f;
  f.version = version;
  f.had_audit = had_audit;
  const auto dir = kFixtures / version;
  for (auto& j : json_lines(dir / "events.jsonl")) {
    OldEvent e;
    e.sequence = j.at("sequence").get<std::uint64_t>();
    e.received_at = j.at("received_at").get<std::int64_t>();
    e.source = j.at("source").get<std::string>();
    e.event = j.at("event");
    e.kind = e.event.at("payload_type").get<std::string>();
    e.regions = e.event.at("regions").get<std::vector<std::string>>();
    REQUIRE(e.sequence == f.events.size() + 1);
    f.events.push_back(std::move(e));
  }
  f.consumers = json_lines(dir / "consumers.json");
  f.dead_letters = json_lines(dir / "dead-letters.jsonl");
  for (const auto& j : json_lines(dir / "kec-dead.json")) {
    f.acked_above[j.at("consumer").get<std::string>()] =
        j.at("acked").get<std::set<std::uint64_t>>();
  }
  for (auto& j : json_lines(dir / "kel-pasar-baru.jsonl")) {
    f.kelurahan.push_back(j.at("sequence").get<std::uint64_t>());
  }
  if (std::filesystem::exists(dir / "audit-head.json")) {
    f.audit_head = json_lines(dir / "audit-head.json").at(0);
  }
  REQUIRE(f.events.size() == 300);
  REQUIRE(f.consumers.size() == 6);
  REQUIRE(f.dead_letters.size() == 1);
  return f;
}

// The releases whose logs this broker must read.
const Fixture& release_520f774() {
  static const Fixture f = load("520f774", true);
  return f;
}
const Fixture& pre_audit_767860f() {
  static const Fixture f = load("767860f", false);
  return f;
}

bool matches(const OldEvent& e, const std::vector<std::string>& kinds,
             const std::vector<std::string>& prefixes) {
  if (!kinds.empty()) {
    std::string kind = e.kind;
    std::transform(kind.begin(), kind.end(), kind.begin(), ::tolower);
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) return false;
  }
  if (prefixes.empty()) return true;
  return std::any_of(e.regions.begin(), e.regions.end(), [&](const std::string& r) {
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](const std::string& p) { return r.compare(0, p.size(), p) == 0; });
  });
}

std::vector<std::uint64_t> expected(const Fixture& f, const std::vector<std::string>& kinds,
                                    const std::vector<std::string>& prefixes,
                                    std::uint64_t after = 0) {
  std::vector<std::uint64_t> out;
  for (const auto& e : f.events) {
    if (e.sequence > after && matches(e, kinds, prefixes)) out.push_back(e.sequence);
  }
  return out;
}

// Sequence lists as text, so that a failed CHECK shows both.
std::string text(const std::vector<std::uint64_t>& sequences) { return json(sequences).dump(); }

std::uint8_t kind_value(const std::string& name) {
  if (name == "birth") return static_cast<std::uint8_t>(events::Payload::Birth);
  if (name == "death") return static_cast<std::uint8_t>(events::Payload::Death);
  if (name == "move") return static_cast<std::uint8_t>(events::Payload::Move);
  FAIL("unknown kind ", name);
  return 0;
}

// A fixture's data directory unpacked into a fresh temporary directory, and this
// build's broker started on it.
class Upgraded {
 public:
  explicit Upgraded(const Fixture& f) : dir_("upgrade-" + f.version) {
    const std::string cmd = "tar -xzf '" + (kFixtures / f.version / "data.tar.gz").string() +
                            "' -C '" + dir_.str() + "'";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
    REQUIRE(std::filesystem::exists(data_dir()));
    try {
      broker_ = std::make_unique<test::BrokerProcess>(data_dir());
    } catch (const std::exception& e) {
      // The broker says why it refused the directory in its log, which goes with dir_.
      std::ifstream log(data_dir() + ".log");
      std::string why((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      FAIL("the broker did not start on the ", f.version, " log (", std::string(e.what()),
           "): ", why);
    }
    auto a = client::AdminClient::connect(broker_->endpoint());
    REQUIRE(a.has_value());
    admin_ = std::move(*a);
  }

  std::string data_dir() const { return dir_.str("data"); }
  std::string scratch(const std::string& name) const { return dir_.str(name); }
  const std::string& endpoint() const { return broker_->endpoint(); }
  client::AdminClient& admin() { return *admin_; }
  void reconnect(std::unique_ptr<client::AdminClient> admin) { admin_ = std::move(admin); }
  test::BrokerProcess& broker() { return *broker_; }

  // The log records a ReadRange returns, paging `page` at a time.
  std::vector<std::string> read_range(const client::FilterView& filter, std::uint64_t from,
                                      std::uint64_t to, std::uint32_t page) {
    std::vector<std::string> out;
    while (true) {
      auto p = admin_->read_range(filter, from, 0, to, page);
      if (!p) FAIL(p.error().to_string());  // not REQUIRE_MESSAGE: -s would evaluate it
      for (auto& r : p->records) out.push_back(std::move(r));
      if (p->done) return out;
      REQUIRE(p->next > from);
      from = p->next;
    }
  }

  std::vector<std::uint64_t> range_sequences(const client::FilterView& filter,
                                             std::uint64_t from = 1, std::uint64_t to = 0,
                                             std::uint32_t page = 64) {
    std::vector<std::uint64_t> out;
    for (const auto& r : read_range(filter, from, to, page)) {
      out.push_back(flatbuffers::GetRoot<log::LogRecord>(r.data())->sequence());
    }
    return out;
  }

 private:
  test::TempDir dir_;
  std::unique_ptr<test::BrokerProcess> broker_;
  std::unique_ptr<client::AdminClient> admin_;
};

const protocol::Response* response(const std::string& body) {
  return flatbuffers::GetRoot<protocol::Response>(body.data());
}

// One Publish over a raw DEALER socket; the verified Response body.
std::string publish_raw(const std::string& endpoint, std::span<const std::uint8_t> event) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 20000);
  s.connect(endpoint);
  flatbuffers::FlatBufferBuilder fbb;
  auto vec = fbb.CreateVector(event.data(), event.size());
  fbb.Finish(protocol::CreateRequest(fbb, 1, 7, protocol::Command::Publish,
                                     protocol::CreatePublish(fbb, vec).Union()));
  s.send(zmq::buffer(fbb.GetBufferPointer(), fbb.GetSize()));
  zmq::message_t reply;
  REQUIRE(s.recv(reply).has_value());
  std::string body = reply.to_string();
  flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
  REQUIRE(v.VerifyBuffer<protocol::Response>(nullptr));
  return body;
}

// Publishes `events` pipelined on one socket, so that the broker takes many of them in
// one group commit; the sequences, in the order of `events`.
std::vector<std::uint64_t> publish_many(const std::string& endpoint,
                                        const std::vector<std::vector<std::uint8_t>>& events) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 20000);
  s.connect(endpoint);
  for (std::size_t i = 0; i < events.size(); ++i) {
    flatbuffers::FlatBufferBuilder fbb;
    auto vec = fbb.CreateVector(events[i].data(), events[i].size());
    fbb.Finish(protocol::CreateRequest(fbb, 1, 1 + i, protocol::Command::Publish,
                                       protocol::CreatePublish(fbb, vec).Union()));
    s.send(zmq::buffer(fbb.GetBufferPointer(), fbb.GetSize()));
  }
  std::vector<std::uint64_t> out(events.size(), 0);
  for (std::size_t n = 0; n < events.size(); ++n) {
    zmq::message_t reply;
    REQUIRE(s.recv(reply).has_value());
    const std::string body = reply.to_string();
    const auto* r = flatbuffers::GetRoot<protocol::Response>(body.data());
    REQUIRE(r->reply_type() == protocol::Reply::PublishAck);
    REQUIRE(r->corr() >= 1);
    REQUIRE(r->corr() <= events.size());
    out[r->corr() - 1] = r->reply_as_PublishAck()->sequence();
  }
  return out;
}

// Attaches to a durable consumer and takes deliveries until `want` arrived (and then
// a little longer, to see that nothing more comes) or the time runs out.
std::vector<std::uint64_t> consume(const std::string& endpoint, const std::string& inbox,
                                   const std::string& name, std::vector<events::Payload> kinds,
                                   std::vector<std::string> regions, std::size_t want) {
  client::ConsumerOptions o;
  o.endpoint = endpoint;
  o.inbox_dir = inbox;
  o.name = name;
  o.kinds = std::move(kinds);
  o.regions = std::move(regions);
  o.window = 500;
  o.heartbeat = 200ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  auto c = client::Consumer::open(o);
  REQUIRE(c.has_value());
  std::vector<std::uint64_t> got;
  auto handler = [&](const client::Received& r, storage::Inbox::Txn&) {
    got.push_back(r.sequence.value);
    return client::HandlerResult{};
  };
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
    auto n = (*c)->poll(handler, 200ms, want - got.size());
    if (!n) FAIL(n.error().to_string());
  }
  auto n = (*c)->poll(handler, 300ms);  // anything beyond `want` is a failure
  REQUIRE(n.has_value());
  (*c)->close();
  return got;
}

std::vector<std::string> audit_actions(const std::vector<std::string>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) {
    out.emplace_back(audit::EnumNameAction(audit::GetRecord(r.data())->action()));
  }
  return out;
}

// ---- the checks, each run on every fixture ----

void check_events_read_as_stored(const Fixture& f) {
  Upgraded u(f);
  auto info = u.admin().ping();
  REQUIRE(info.has_value());
  CHECK(info->next_sequence == f.events.size() + 1);

  auto codec = schemas::JsonCodec::create();
  REQUIRE(codec.has_value());
  const auto records = u.read_range({}, 1, 0, 128);
  REQUIRE(records.size() == f.events.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& old = f.events[i];
    flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(records[i].data()),
                            records[i].size());
    REQUIRE(v.VerifyBuffer<log::LogRecord>(nullptr));
    const auto* rec = flatbuffers::GetRoot<log::LogRecord>(records[i].data());
    INFO("sequence ", old.sequence);
    CHECK(rec->sequence() == old.sequence);
    CHECK(rec->received_at() == old.received_at);
    CHECK(rec->source()->str() == old.source);
    REQUIRE(rec->event() != nullptr);
    auto text = codec->to_json({rec->event()->data(), rec->event()->size()});
    REQUIRE(text.has_value());
    CHECK(json::parse(*text) == old.event);
  }

  // The upgrade holds: stopped and started again, the new broker opens its own result.
  u.broker().stop(SIGTERM);
  std::vector<std::string> families;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), u.data_dir(), &families).ok());
  for (const char* cf : {"log", "ids", "regions", "consumers", "dead_letters", "audit"}) {
    CHECK_MESSAGE(std::find(families.begin(), families.end(), cf) != families.end(), cf);
  }
  u.broker().restart();
  auto a = client::AdminClient::connect(u.broker().endpoint());
  REQUIRE(a.has_value());
  auto again = (*a)->ping();
  REQUIRE(again.has_value());
  CHECK(again->next_sequence == f.events.size() + 1);
}

void check_region_index(const Fixture& f) {
  Upgraded u(f);
  // The kelurahan: what the old broker's own replay answered, and what its events say.
  CHECK(text(expected(f, {}, {"1271011001"})) == text(f.kelurahan));
  CHECK(text(u.range_sequences({{}, {"1271011001"}})) == text(f.kelurahan));
  // Every prefix length of the index, one kind, several prefixes, a window of the log.
  for (const std::vector<std::string>& prefixes :
       std::vector<std::vector<std::string>>{{"12"},
                                             {"1271"},
                                             {"127101"},
                                             {"127101", "127105"},
                                             {"1271011012"},
                                             {"1271011001", "1271071009"}}) {
    INFO("prefixes ", json(prefixes).dump());
    const auto want = expected(f, {}, prefixes);
    CHECK(!want.empty());
    CHECK(text(u.range_sequences({{}, prefixes})) == text(want));
    CHECK(text(u.range_sequences({{kind_value("death")}, prefixes})) ==
          text(expected(f, {"death"}, prefixes)));
    std::vector<std::uint64_t> window;
    std::copy_if(want.begin(), want.end(), std::back_inserter(window),
                 [](std::uint64_t s) { return s >= 100 && s <= 250; });
    CHECK(text(u.range_sequences({{}, prefixes}, 100, 250)) == text(window));
  }
}

void check_consumers_resume(const Fixture& f) {
  Upgraded u(f);
  auto listed = u.admin().list_consumers();
  REQUIRE(listed.has_value());
  REQUIRE(listed->size() == f.consumers.size());
  std::map<std::string, client::ConsumerInfoView> now;
  for (auto& c : *listed) now[c.name] = c;

  for (const auto& old : f.consumers) {
    const auto name = old.at("name").get<std::string>();
    INFO("consumer ", name);
    REQUIRE(now.count(name) == 1);
    const auto& c = now[name];
    const auto kinds = old.at("kinds").get<std::vector<std::string>>();
    const auto regions = old.at("regions").get<std::vector<std::string>>();
    const auto floor = old.at("ack_floor").get<std::uint64_t>();
    CHECK(c.filter.regions == regions);
    CHECK(c.filter.kinds.size() == kinds.size());
    CHECK(c.ack_floor == floor);
    CHECK(c.lag == old.at("lag").get<std::uint64_t>());

    // What is left: every matching event after the floor but those acknowledged above it.
    auto rest = expected(f, kinds, regions, floor);
    if (f.acked_above.count(name) == 1) {
      const auto& acked = f.acked_above.at(name);
      CHECK(!acked.empty());
      std::erase_if(rest, [&](std::uint64_t s) { return acked.count(s) == 1; });
    }
    CHECK(rest.size() == old.at("lag").get<std::uint64_t>());
    std::vector<events::Payload> k;
    for (const auto& n : kinds) k.push_back(static_cast<events::Payload>(kind_value(n)));
    auto got = consume(u.endpoint(), u.scratch("inbox-" + name), name, k, regions, rest.size());
    CHECK(text(got) == text(rest));
  }

  // Every consumer has now acknowledged the whole log.
  CHECK(test::wait_until([&] {
    auto l = u.admin().list_consumers();
    return l.has_value() && std::all_of(l->begin(), l->end(),
                                        [](const auto& c) { return c.lag == 0 && c.pending == 0; });
  }));
}

void check_dead_letters(const Fixture& f) {
  Upgraded u(f);
  const auto& old = f.dead_letters.at(0);
  const auto name = old.at("consumer").get<std::string>();
  auto listed = u.admin().dlq_list(name, 0, 100);
  REQUIRE(listed.has_value());
  REQUIRE(listed->size() == 1);
  const auto& d = listed->at(0);
  CHECK(d.sequence == old.at("sequence").get<std::uint64_t>());
  CHECK(d.attempts == old.at("attempts").get<std::uint32_t>());
  CHECK(d.reason == old.at("reason").get<std::string>());
  CHECK(d.dead_at == old.at("dead_at").get<std::int64_t>());
  const auto* rec = flatbuffers::GetRoot<log::LogRecord>(d.record.data());
  REQUIRE(rec->event() != nullptr);
  const auto* ev = flatbuffers::GetRoot<events::Event>(rec->event()->data());
  CHECK(EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16))
            .to_string() == old.at("event_id").get<std::string>());

  // Redriven, it comes again with the consumer's rest (its acknowledgements above the
  // floor still skipped), and the dead letter is gone once acknowledged.
  auto redriven = u.admin().dlq_redrive(name, {});  // every dead letter of the consumer
  REQUIRE(redriven.has_value());
  CHECK(*redriven == 1);
  std::uint64_t floor = 0;
  for (const auto& c : f.consumers) {
    if (c.at("name") == name) floor = c.at("ack_floor").get<std::uint64_t>();
  }
  auto want = expected(f, {}, {"127101"}, floor);
  std::erase_if(want, [&](std::uint64_t s) { return f.acked_above.at(name).count(s) == 1; });
  want.push_back(d.sequence);
  std::sort(want.begin(), want.end());
  auto got = consume(u.endpoint(), u.scratch("inbox-dead"), name, {}, {"127101"}, want.size());
  std::sort(got.begin(), got.end());
  CHECK(text(got) == text(want));
  CHECK(test::wait_until([&] {
    auto l = u.admin().dlq_list(name, 0, 100);
    return l.has_value() && l->empty();
  }));
}

void check_publish_after_upgrade(const Fixture& f) {
  Upgraded u(f);
  auto codec = schemas::JsonCodec::create();
  REQUIRE(codec.has_value());

  // A resend of an event the old broker stored: a duplicate, with its old sequence.
  for (std::size_t seq : {1, 150, 250, 300}) {
    const auto& old = f.events[seq - 1];
    auto encoded = codec->from_json(old.event.dump());
    REQUIRE(encoded.has_value());
    CHECK(encoded->id.to_string() == old.event.at("id").get<std::string>());
    const auto body = publish_raw(u.endpoint(), encoded->bytes);
    const auto* ack = response(body)->reply_as_PublishAck();
    REQUIRE(ack != nullptr);
    CHECK(ack->sequence() == seq);
    CHECK(ack->duplicate());
  }

  // New events go on from the old log's end, indexed by region with the old ones.
  const auto when = SystemClock().now_ms() - 3 * 3600 * 1000;
  const std::vector<std::vector<std::uint8_t>> fresh{test::make_birth("1271011001", when),
                                                     test::make_death("1271011001", when),
                                                     test::make_birth("1271051003", when)};
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    const auto body = publish_raw(u.endpoint(), fresh[i]);
    const auto* ack = response(body)->reply_as_PublishAck();
    REQUIRE(ack != nullptr);
    CHECK(ack->sequence() == f.events.size() + 1 + i);
    CHECK(!ack->duplicate());
  }
  auto kel = f.kelurahan;
  kel.push_back(301);
  kel.push_back(302);
  CHECK(text(u.range_sequences({{}, {"1271011001"}})) == text(kel));

  // The consumer that started at the old log's end gets exactly the new events; the
  // kelurahan consumer gets its rest and then the two new ones.
  CHECK(text(consume(u.endpoint(), u.scratch("inbox-new"), "sumut-new", {}, {"12"}, 3)) ==
        "[301,302,303]");
  for (const auto& old : f.consumers) {
    if (old.at("name") != "kel-pasar-baru") continue;
    auto rest = expected(f, {}, {"1271011001"}, old.at("ack_floor").get<std::uint64_t>());
    rest.push_back(301);
    rest.push_back(302);
    CHECK(text(consume(u.endpoint(), u.scratch("inbox-kel"), "kel-pasar-baru", {}, {"1271011001"},
                       rest.size())) == text(rest));
  }
}

// Index entries written by the old release and by this build, side by side: a scan of
// one prefix must cross from one to the other, start in either, and page anywhere.
void check_mixed_region_index(const Fixture& f) {
  Upgraded u(f);
  const std::vector<std::string> villages{"1271011001", "1271011002", "1271011001", "1271011012",
                                          "1271051003"};
  const auto when = SystemClock().now_ms() - 3 * 3600 * 1000;
  std::vector<std::vector<std::uint8_t>> fresh;
  for (std::size_t i = 0; i < 60; ++i) {
    fresh.push_back(i % 2 == 0 ? test::make_birth(villages[i % villages.size()], when)
                               : test::make_death(villages[i % villages.size()], when));
  }
  const auto seqs = publish_many(u.endpoint(), fresh);
  for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == f.events.size() + 1 + i);

  auto check_all = [&] {
    for (const std::vector<std::string>& prefixes : std::vector<std::vector<std::string>>{
             {"1271011001"}, {"127101"}, {"1271"}, {"12"}, {"1271011012", "127105"}}) {
      for (const std::string& kind : {std::string(), std::string("death")}) {
        INFO("prefixes ", json(prefixes).dump(), " kind '", kind, "'");
        std::vector<std::string> kinds;
        if (!kind.empty()) kinds.push_back(kind);
        auto want = expected(f, kinds, prefixes);
        for (std::size_t i = 0; i < fresh.size(); ++i) {
          const bool kind_ok = kind.empty() || i % 2 == 1;
          const auto& v = villages[i % villages.size()];
          const bool region_ok = std::any_of(prefixes.begin(), prefixes.end(), [&](const auto& p) {
            return v.compare(0, p.size(), p) == 0;
          });
          if (kind_ok && region_ok) want.push_back(seqs[i]);
        }
        client::FilterView filter{{}, prefixes};
        if (!kind.empty()) filter.kinds.push_back(kind_value(kind));
        CHECK(text(u.range_sequences(filter)) == text(want));
        // Windows: from the old part into the new, inside the new, small pages.
        for (const auto& [from, to] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
                 {250, 0}, {305, 0}, {303, 333}, {301, 360}}) {
          std::vector<std::uint64_t> window;
          std::copy_if(want.begin(), want.end(), std::back_inserter(window),
                       [&](std::uint64_t q) { return q >= from && (to == 0 || q <= to); });
          INFO("from ", from, " to ", to);
          CHECK(text(u.range_sequences(filter, from, to, 3)) == text(window));
        }
      }
    }
  };
  check_all();
  // And again from disk, after a restart.
  u.broker().stop(SIGTERM);
  u.broker().restart();
  auto a = client::AdminClient::connect(u.broker().endpoint());
  REQUIRE(a.has_value());
  u.reconnect(std::move(*a));
  check_all();
}

void check_audit_chain(const Fixture& f) {
  Upgraded u(f);
  // Something after the upgrade for the chain to record.
  const auto when = SystemClock().now_ms() - 3 * 3600 * 1000;
  const auto body = publish_raw(u.endpoint(), test::make_birth("1271011001", when));
  REQUIRE(response(body)->reply_type() == protocol::Reply::PublishAck);
  REQUIRE(u.range_sequences({{}, {"1271011001"}}).size() == f.kelurahan.size() + 1);

  const auto chain = test::read_audit_chain(u.admin(), 7);
  if (chain.problem) FAIL_CHECK("record ", chain.problem->index, ": ", chain.problem->what);
  const auto actions = audit_actions(chain.records);
  REQUIRE(!actions.empty());
  const auto starts = std::count(actions.begin(), actions.end(), "BrokerStarted");
  REQUIRE(starts >= 1);
  // The new broker's start is the last BrokerStarted; what follows is its own work.
  const auto last_start =
      std::find(actions.rbegin(), actions.rend(), "BrokerStarted").base() - actions.begin() - 1;
  const std::vector<std::string> after(actions.begin() + last_start + 1, actions.end());
  CHECK(std::find(after.begin(), after.end(), "Publish") != after.end());
  CHECK(std::find(after.begin(), after.end(), "Read") != after.end());
  if (f.had_audit) {
    // The old chain is kept whole (two starts and 300 events published before), and
    // the new records extend it.
    CHECK(starts == 3);
    std::uint64_t published = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(last_start); ++i) {
      const auto* r = audit::GetRecord(chain.records[i].data());
      if (r->action() == audit::Action::Publish) published += r->count();
    }
    CHECK(published == f.events.size());
    // And it is the very chain the old broker ended with: its head, as the old
    // `kolabus audit verify` printed it, is a record of the chain now.
    REQUIRE(f.audit_head.has_value());
    const auto head = f.audit_head->at("head_index").get<std::uint64_t>();
    REQUIRE(chain.records.size() > head);
    broker::ChainVerifier old_part;
    for (std::uint64_t i = 1; i <= head; ++i) REQUIRE(!old_part.feed(i, chain.records[i - 1]));
    CHECK(broker::to_hex(old_part.last().hash) == f.audit_head->at("head_hash").get<std::string>());
  } else {
    // No chain before: it starts at the upgrade.
    CHECK(starts == 1);
    CHECK(last_start == 0);
  }
}

// The sequences of the events that name `nik` (a parent, the deceased, a mover).
std::vector<std::uint64_t> events_of(const Fixture& f, const std::string& nik) {
  std::vector<std::uint64_t> out;
  for (const auto& e : f.events) {
    for (const auto& [field, value] : e.event.at("payload").items()) {
      if (field.find("nik") == std::string::npos) continue;
      const bool hit = value.is_array() ? std::find(value.begin(), value.end(), nik) != value.end()
                                        : value == nik;
      if (hit) {
        out.push_back(e.sequence);
        break;
      }
    }
  }
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs the kolabus tool; its exit status and standard output.
std::pair<int, std::string> kolabus_cli(const std::string& args, const std::string& out_file) {
  const std::string cmd = std::string(KOLABUS_CLI_BIN) + " " + args + " > '" + out_file + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text(out_file)};
}

// Releases before this one kept audit.key in the data directory. Upgraded with keys
// (CURVE), the broker moves it beside its own key, the same key: the old chain still
// verifies and still answers for a person named in the old log's events.
void check_audit_key_moves_out(const Fixture& f) {
  test::TempDir dir("upgrade-keys-" + f.version);
  const std::string cmd =
      "tar -xzf '" + (kFixtures / f.version / "data.tar.gz").string() + "' -C '" + dir.str() + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  const std::string data = dir.str("data"), old_key = dir.str("data/audit.key");
  REQUIRE(std::filesystem::exists(old_key));
  const std::string key_text = read_text(old_key);
  REQUIRE(key_text.size() == 65);

  auto gen = [] {
    auto k = client::generate_key_pair();
    REQUIRE(k.has_value());
    return *k;
  };
  const KeyPair broker_keys = gen(), ops_keys = gen();
  REQUIRE(write_key_pair(dir.str("keys"), "broker", broker_keys, false).has_value());
  REQUIRE(write_key_pair(dir.str("keys"), "ops", ops_keys, false).has_value());
  std::ofstream(dir.str("agencies.toml"))
      << "[[agency]]\nname = \"disdukcapil-medan\"\npublic_key = \"" << ops_keys.public_key
      // A person query reports only events within the asker's own receive grant.
      << "\"\nsubscribe = { kinds = [\"*\"], regions = [\"*\"] }\noperate = true\n"
         "agreement = { pks = \"PKS/1\", purpose = \"registry\", "
         "valid_from = 2020-01-01, valid_until = 2099-12-31 }\n";
  const std::vector<std::string> curve{"--key", dir.str("keys/broker.key"), "--agencies",
                                       dir.str("agencies.toml")};
  const std::string new_key = dir.str("keys/audit.key");
  // A person of the old log: the first event's first NIK.
  const auto& payload = f.events.at(0).event.at("payload");
  const std::string nik = payload.contains("mother_nik")
                              ? payload.at("mother_nik").get<std::string>()
                              : payload.at("nik").get<std::string>();
  const auto want = events_of(f, nik);
  REQUIRE(!want.empty());
  REQUIRE(f.audit_head.has_value());
  const std::string anchor = std::to_string(f.audit_head->at("head_index").get<std::uint64_t>()) +
                             ":" + f.audit_head->at("head_hash").get<std::string>();
  const std::string as_ops =
      " --key '" + dir.str("keys/ops.key") + "' --server-key '" + dir.str("keys/broker.pub") + "'";

  for (int start = 0; start < 2; ++start) {  // the move, then a start with nothing to move
    INFO("start ", start + 1);
    test::BrokerProcess broker(data, "tcp://127.0.0.1:*", curve);
    CHECK(!std::filesystem::exists(old_key));
    CHECK(read_text(new_key) == key_text);
    CHECK(test::mode_of(new_key) == 0600);
    if (start == 0) {
      CHECK(read_text(data + ".log").find("audit key moved from " + old_key + " to " + new_key) !=
            std::string::npos);
    }

    // The old chain, extended, verifies and still holds the old head.
    const auto [rc, out] =
        kolabus_cli("audit verify -b " + broker.endpoint() + as_ops + " --json --anchor " + anchor,
                    dir.str("verify.json"));
    CHECK_MESSAGE(rc == 0, out);
    CHECK_MESSAGE(out.find("\"ok\":true") != std::string::npos, out);

    // The person's old events are found: their hashes were made with this very key.
    auto ops = client::AdminClient::connect(broker.endpoint(), 10s,
                                            client::CurveOptions{broker_keys.public_key, ops_keys});
    REQUIRE(ops.has_value());
    std::vector<std::uint64_t> seqs;
    std::uint64_t from = 1;
    while (true) {
      auto page = (*ops)->audit_person(nik, from, 1000, seqs);
      if (!page) FAIL(page.error().to_string());
      seqs = page->sequences;
      if (page->done) break;
      from = page->next_index;
    }
    CHECK(text(seqs) == text(want));
    broker.stop(SIGTERM);
  }
  // Offline too, on the stopped broker's directory.
  const auto [rc, out] =
      kolabus_cli("audit verify --dir '" + data + "' --anchor " + anchor, dir.str("offline.txt"));
  CHECK_MESSAGE(rc == 0, out);
  CHECK(!std::filesystem::exists(old_key));
}

}  // namespace

TEST_CASE(
    "Upgrade 520f774 with keys: audit.key moves out of the data directory, NIKs still match") {
  check_audit_key_moves_out(release_520f774());
}

TEST_CASE("Upgrade 520f774: the new broker reads every event of the old log as stored") {
  check_events_read_as_stored(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): the new broker reads every event as stored") {
  check_events_read_as_stored(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: range reads by region through the old region index") {
  check_region_index(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): range reads by region through the old index") {
  check_region_index(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: consumers resume at their acknowledged positions") {
  check_consumers_resume(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): consumers resume at their acknowledged positions") {
  check_consumers_resume(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: a dead letter of the old log is listed and redriven") {
  check_dead_letters(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): a dead letter of the old log is listed, redriven") {
  check_dead_letters(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: old ids are duplicates and new events continue the sequence") {
  check_publish_after_upgrade(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): old ids are duplicates, new events continue") {
  check_publish_after_upgrade(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: range reads across old and new region index entries") {
  check_mixed_region_index(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): range reads across old and new index entries") {
  check_mixed_region_index(pre_audit_767860f());
}
TEST_CASE("Upgrade 520f774: the old audit chain is kept and extended, and verifies") {
  check_audit_chain(release_520f774());
}
TEST_CASE("Upgrade 767860f (no audit chain): a chain starts at the upgrade and verifies") {
  check_audit_chain(pre_audit_767860f());
}
