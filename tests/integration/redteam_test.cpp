// Red-team attacks on the authority guarantees of docs/SECURITY.md, against a real
// broker with CURVE. Each case states the behaviour the broker must have; each failed
// on the code it was written against. The fixture (authority_bus.h) is shared with
// authority_test.cpp.
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
#include <zmq_addon.hpp>

#include "authority_bus.h"

using namespace kolabus;
using namespace kolabus::test::authority;
using namespace std::chrono_literals;

namespace {

const std::string kCideng = "3171011002";  // Gambir's neighbour, Jakarta Pusat

// `event` with its id replaced by `id` (the Uuid struct is stored inline: found by its
// bytes and overwritten).
std::vector<std::uint8_t> with_id(std::vector<std::uint8_t> event, const EventId& id) {
  const EventId old = test::id_of(event);
  auto it = std::search(event.begin(), event.end(), old.bytes.begin(), old.bytes.end());
  REQUIRE(it != event.end());
  std::copy(id.bytes.begin(), id.bytes.end(), it);
  REQUIRE(test::id_of(event) == id);
  return event;
}

// A correction of the move `target` into a move from `origin` to `dest`.
std::vector<std::uint8_t> correct_move(const EventId& target, const std::string& origin,
                                       const std::string& dest, events::MoveType type,
                                       const std::vector<std::string>& regions, TimeMs when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  const events::Uuid target_uuid(
      flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  std::vector<flatbuffers::Offset<flatbuffers::String>> niks{fbb.CreateString("1271010101800001")};
  auto m = events::CreateMoveDirect(fbb, &niks, "1271012002200001", origin.c_str(), dest.c_str(),
                                    when_ms, nullptr, type);
  auto c = events::CreateCorrectionDirect(fbb, &target_uuid, "destination misread", false,
                                          events::Payload::Move, m.Union());
  return test::detail::finish_event(fbb, events::Payload::Correction, c.Union(), regions, when_ms);
}

// A DEALER with CURVE (`keys` as the client's pair) that connects and sends one frame.
std::unique_ptr<zmq::socket_t> knock(zmq::context_t& ctx, const std::string& endpoint,
                                     const std::optional<client::CurveOptions>& curve) {
  auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
  s->set(zmq::sockopt::linger, 0);
  if (curve) client::apply_curve(*s, *curve);
  s->connect(endpoint);
  (void)s->send(zmq::str_buffer("hello"), zmq::send_flags::dontwait);
  return s;
}

}  // namespace

// ---- 1. A correction is a publish into the regions it names ----------------------

// The correction's regions are always the target's plus the corrected payload's
// villages, so "the grant holds the correction's regions" with the publish rule (one
// region inside is enough) never refuses anything the target check let through: a
// correction can put an event into any village of the country.
TEST_CASE(
    "Redteam: a correction may not place an event in a village outside the corrector's grant") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  Sink jak(bus.consumer(kJakarta, "jak", {"3171"}));
  const auto birth = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(birth).kind == client::OutcomeKind::kAcked);

  // Medan's registry may not publish a birth in Gambir (Jakarta Pusat) ...
  const auto direct = test::make_birth(kGambir, t);
  const auto d = registry.send(direct);
  REQUIRE(name_of(d.kind) == "refused");
  REQUIRE(d.refusal.code == kNotAuthorised);

  // ... nor, then, correct its own Medan birth into Gambir.
  const auto own = correct_birth(test::id_of(birth), kGambir, {kPasarBaru, kGambir},
                                 "the family lives in Gambir", t);
  const auto o = registry.send(own);
  CHECK_MESSAGE(name_of(o.kind) == "refused", "the owner moved its birth into Jakarta");

  // The province's correct grant covers Medan's births only: not Jakarta's villages.
  auto hospital = bus.publisher(kHospital);
  const auto birth2 = test::make_birth(kPasarBaru, t);
  REQUIRE(hospital.send(birth2).kind == client::OutcomeKind::kAcked);
  auto province = bus.publisher(kProvince);
  const auto other = correct_birth(test::id_of(birth2), kGambir, {kPasarBaru, kGambir},
                                   "the family lives in Gambir", t);
  const auto p = province.send(other);
  CHECK_MESSAGE(name_of(p.kind) == "refused", "a Medan correct grant placed a birth in Jakarta");

  // Jakarta's registry never hears of a birth in its village from Medan.
  jak.drain_for(1500ms);
  CHECK(jak.count(test::id_of(own)) == 0);
  CHECK(jak.count(test::id_of(other)) == 0);
}

TEST_CASE(
    "Redteam: a correct grant over one end of a move may not rewrite it into the other city") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  // The province may correct Medan's moves too.
  bus.member(kProvince).correct = "{ kinds = [\"birth\", \"move\"], regions = [\"1271\"] }";
  bus.reload();

  // Jakarta's registry records a family moving from Gambir to Pasar Baru (Medan).
  auto jakarta = bus.publisher(kJakarta);
  const auto move = test::make_move(kGambir, kPasarBaru, events::MoveType::BetweenProvinces, t);
  REQUIRE(jakarta.send(move).kind == client::OutcomeKind::kAcked);

  // The province rewrites it into a move inside Jakarta: Gambir to Cideng. Nothing of
  // the corrected event is Medan's any more.
  auto province = bus.publisher(kProvince);
  const auto fix =
      correct_move(test::id_of(move), kGambir, kCideng, events::MoveType::WithinKecamatan,
                   {kGambir, kPasarBaru, kCideng}, t);
  const auto o = province.send(fix);
  CHECK_MESSAGE(name_of(o.kind) == "refused",
                "Medan's correct grant rewrote a move into one wholly inside Jakarta");
}

// ---- 2. Deduplication as an oracle ------------------------------------------------

TEST_CASE("Redteam: an agency learns nothing of another agency's event by reusing its id") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto jakarta = bus.publisher(kJakarta);
  const auto death = test::make_death(kGambir, t);
  const auto stored = jakarta.send(death);
  REQUIRE(stored.kind == client::OutcomeKind::kAcked);

  // The hospital may publish births in Medan; the id it sends is Jakarta's death's.
  auto hospital = bus.publisher(kHospital);
  const auto probe = with_id(test::make_birth(kPasarBaru, t), test::id_of(death));
  const auto o = hospital.send(probe);
  CHECK_MESSAGE(name_of(o.kind) != "duplicate",
                "the hospital was told Jakarta's death exists, at sequence " << o.sequence.value);
  CHECK(o.sequence.value != stored.sequence.value);
}

// ---- 3. Refused handshakes: aggregated, whatever varies -------------------------

TEST_CASE("Redteam: a flood of unknown keys adds a bounded number of audit records") {
  AuthorityBus bus;
  auto ops = bus.admin(kRegistry);
  const std::size_t before = count_action(audit_records(*ops), audit::Action::ConnectionRefused);

  // 30 connections from one address, each with a fresh key pair nobody registered.
  constexpr int kKeys = 30;
  zmq::context_t ctx;
  std::vector<std::unique_ptr<zmq::socket_t>> sockets;
  for (int i = 0; i < kKeys; ++i) {
    sockets.push_back(knock(ctx, bus.broker->endpoint(),
                            client::CurveOptions{bus.broker_keys.public_key, gen()}));
  }
  std::size_t added = 0;
  test::wait_until(
      [&] {
        added = count_action(audit_records(*ops), audit::Action::ConnectionRefused) - before;
        return added >= static_cast<std::size_t>(kKeys);
      },
      5s);
  // The first at once, the rest of the minute as one record with their count.
  CHECK_MESSAGE(added <= 2, added << " ConnectionRefused records for " << kKeys
                                  << " attempts within a second from one address");
}

// ---- 4. Free text -------------------------------------------------------------------

// A consumer's Reject reason is free text about the person like a correction's reason:
// an operator whose profile withholds a cause of death must not read one in it.
TEST_CASE("Redteam: a dead letter's reason follows the reader's field profile") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  Sink reg(bus.consumer(kRegistry, "reg", {"1271"}));
  reg.verdict = [](const client::Received&) {
    return client::HandlerResult{client::Verdict::kReject,
                                 "cause of death tuberculosis is not coded in ICD-10 here", 0};
  };
  const auto death = test::make_death(kPasarBaru, t);
  REQUIRE(registry.send(death).kind == client::OutcomeKind::kAcked);
  REQUIRE(reg.until([&] { return reg.consumer().stats().rejected >= 1; }));
  reg.drain_for(200ms);

  // The kelurahan operates the bus and may receive Pasar Baru's events, but never a
  // cause of death (its profile: "*", "-death.cause_of_death").
  auto kel = bus.admin(kKelurahan);
  auto r = dead_letters(*kel, "reg", kRegistry);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  REQUIRE(r->size() == 1);
  CHECK_FALSE(contains(r->front().record, "tuberculosis"));
  CHECK_MESSAGE(!contains(r->front().reason, "tuberculosis"), r->front().reason);
}

TEST_CASE(
    "Redteam: a NIK written with double spaces, a no-break space or spaced dashes is withheld") {
  AuthorityBus bus;
  auto registry = bus.publisher(kRegistry);
  Sink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  // Three spellings of one NIK, as people copy it from forms and spreadsheets.
  const std::string reason =
      "a 1271  0112  3456  0001 b 1271\xC2\xA0"
      "0112\xC2\xA0"
      "3456\xC2\xA0"
      "0001 c 1271 - 0112 - 3456 - 0001";
  make_dead_letter(registry, kel, reason);
  auto own = bus.admin(kKelurahan);
  auto r = dead_letters(*own, "kel");
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  REQUIRE(r->size() == 1);
  const std::string& got = r->front().reason;
  // The NIK's middle digits stand for it: none of them may remain.
  CHECK_MESSAGE(!contains(got, "3456"), got);
}

// ---- 5. Operating is not reading: the person query ----------------------------------

// An operator with an agreement but no receive grant over Jakarta asks about a NIK it
// picked: the answer must not tell it that the person has a death in Jakarta's log.
TEST_CASE("Redteam: a person query does not reveal events outside the operator's receive grant") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto jakarta = bus.publisher(kJakarta);
  Sink jak(bus.consumer(kJakarta, "jak", {"3171"}));
  const auto death = test::make_death(kGambir, t);
  const auto stored = jakarta.send(death);
  REQUIRE(stored.kind == client::OutcomeKind::kAcked);
  REQUIRE(jak.until([&] { return jak.count(test::id_of(death)) == 1; }));

  auto kel = bus.admin(kKelurahan);  // operate, agreement, receives Pasar Baru only
  auto who = kel->audit_person(kDeceasedNik, 1, 100000, {});
  REQUIRE_MESSAGE(who.has_value(), who.error().to_string());
  for (const auto& h : who->hits) {
    CHECK_MESSAGE(h.sequence != stored.sequence.value, "hit on Jakarta's death: action "
                                                           << int(h.action) << " by " << h.agency
                                                           << ", kind " << int(h.kind));
  }
}

// ---- 6. Development mode only on loopback ----------------------------------------

// ZeroMQ resolves an address with getaddrinfo, which reads a leading 0 as octal:
// "0127.0.0.1" is 87.0.0.1 (a public address block), yet reads as 127 to "%d".
TEST_CASE("Redteam: development mode refuses an octal address that is not loopback") {
  test::TempDir dir("redteam-dev");
  const std::string endpoint = "tcp://0127.0.0.1:0";
  const std::string out_file = dir.str("stdout"), err_file = dir.str("stderr");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<std::string> args{KOLABUS_BROKER_BIN, "--dev",         "--endpoint",  endpoint,
                                  "--data-dir",       dir.str("data"), "--log-level", "info"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) ::dup2(out, 1);
    if (err >= 0) ::dup2(err, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  const bool exited = test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 5s);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  const std::string said = slurp(out_file) + slurp(err_file);
  REQUIRE(exited);
  // Refused by the loopback check (a configuration error), not by a failed bind.
  CHECK_MESSAGE(contains(said, "--dev is refused"), said);
}

// ---- 7. A revoked connection's holdings ---------------------------------------------

namespace {

// A consumer client speaking the wire protocol itself (docs/PROTOCOL.md): it subscribes,
// takes deliveries and never acknowledges them.
class RawHolder {
 public:
  RawHolder(const std::string& endpoint, const client::CurveOptions& curve)
      : socket_(ctx_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    client::apply_curve(socket_, curve);
    socket_.connect(endpoint);
  }
  void subscribe(const std::string& name, const std::string& region, std::uint32_t ack_wait_ms) {
    flatbuffers::FlatBufferBuilder fbb;
    auto filter = protocol::CreateFilter(fbb, 0, fbb.CreateVectorOfStrings({region}));
    auto cfg = protocol::CreateConsumerConfig(fbb, fbb.CreateString(name), filter,
                                              protocol::StartPolicy::Latest, 0, 0, ack_wait_ms, 5);
    send(fbb, protocol::Command::Subscribe, protocol::CreateSubscribe(fbb, cfg, 10, 0).Union());
  }
  void ping() {
    flatbuffers::FlatBufferBuilder fbb;
    send(fbb, protocol::Command::Ping, protocol::CreatePing(fbb).Union());
  }
  // Reads what has arrived; returns the reply types seen.
  std::vector<protocol::Reply> read(std::chrono::milliseconds wait) {
    std::vector<protocol::Reply> out;
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    const auto end = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < end) {
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket_, std::back_inserter(parts), zmq::recv_flags::dontwait))
        continue;
      const auto body = parts.back().to_string();
      flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
      if (!v.VerifyBuffer<protocol::Response>(nullptr)) continue;
      out.push_back(flatbuffers::GetRoot<protocol::Response>(body.data())->reply_type());
    }
    return out;
  }

 private:
  void send(flatbuffers::FlatBufferBuilder& fbb, protocol::Command type,
            flatbuffers::Offset<void> cmd) {
    fbb.Finish(protocol::CreateRequest(fbb, 1, ++corr_, type, cmd));
    zmq::message_t m(fbb.GetBufferPointer(), fbb.GetSize());
    (void)socket_.send(m, zmq::send_flags::dontwait);
  }
  zmq::context_t ctx_{1};
  zmq::socket_t socket_;
  std::uint64_t corr_ = 0;
};

}  // namespace

// docs/SECURITY.md: a connection whose key is replaced is refused every request, "deliveries
// stop and what it held goes to the consumer's other clients", within a second of the
// reload. A revoked connection that still holds an unacknowledged event and keeps talking
// (every request refused) must not keep that event from the consumer's new client.
TEST_CASE(
    "Redteam: a revoked connection's unacknowledged events go to the consumer's other client") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  RawHolder old(bus.broker->endpoint(), bus.as(kKelurahan));
  old.subscribe("kel", kPasarBaru, 60000);
  {
    auto r = old.read(1000ms);
    REQUIRE(std::count(r.begin(), r.end(), protocol::Reply::Subscribed) == 1);
  }
  const auto e1 = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(e1).kind == client::OutcomeKind::kAcked);
  bool held = false;
  test::wait_until(
      [&] {
        auto r = old.read(100ms);
        held = held || std::count(r.begin(), r.end(), protocol::Reply::Delivery) +
                               std::count(r.begin(), r.end(), protocol::Reply::DeliveryBatch) >
                           0;
        return held;
      },
      10s);
  REQUIRE(held);

  // The key leaked: replaced. The old connection keeps sending (refused) requests.
  bus.member(kKelurahan).keys = gen();
  bus.reload();
  LiveSink fresh(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  const bool moved = test::wait_until(
      [&] {
        old.ping();
        (void)old.read(200ms);
        return fresh.count(test::id_of(e1)) >= 1;
      },
      8s);
  // The new client itself is served: a new event reaches it (the broker then tries the
  // old connection too, finds it revoked, and lets go of what it held).
  const auto e2 = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(e2).kind == client::OutcomeKind::kAcked);
  CHECK(test::wait_until([&] { return fresh.count(test::id_of(e2)) >= 1; }, 10s));
  fresh.stop();
  CHECK_MESSAGE(moved,
                "the event stays with the revoked connection until its ack_wait (60 s) "
                "ends: "
                    << fresh.last_error());
}

// ---- 8. Who published an event --------------------------------------------------

// An agency is its key (broker/include/broker/agencies.h), but the log remembers a
// publisher by name: renaming an agency and giving its old name to another key hands
// the newcomer authority over every event the old agency published.
TEST_CASE("Redteam: an agency's events stay its own when its old name goes to another key") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  std::vector<std::uint8_t> birth = test::make_birth(kPasarBaru, t);
  {
    auto hospital = bus.publisher(kHospital);
    REQUIRE(hospital.send(birth).kind == client::OutcomeKind::kAcked);
  }
  // The hospital is renamed (same key); a clinic that registers later gets the old name:
  // the reload is refused, so the old name's events cannot pass to the newcomer.
  bus.member(kHospital).name = "rsud-pirngadi-kota";
  bus.members.push_back({kHospital, gen(), "{ kinds = [\"birth\"], regions = [\"1271\"] }", "", "",
                         "", false, "2099-12-31"});
  bus.write_registry();
  auto ops = bus.admin(kRegistry);
  auto n = ops->reload_registry();
  REQUIRE_FALSE(n.has_value());
  CHECK_MESSAGE(n.error().message.find("identity") != std::string::npos, n.error().message);

  // The newcomer's key is not admitted (the old registry stays): its void goes nowhere,
  // and the hospital's birth stays the hospital's.
  client::PublisherOptions o;
  o.endpoint = bus.broker->endpoint();
  o.outbox_dir = bus.dir.str("outbox-newcomer");
  o.curve = client::CurveOptions{bus.broker_keys.public_key, bus.members.back().keys};
  o.ack_timeout = 1000ms;
  auto p = client::Publisher::open(o);
  REQUIRE(p.has_value());
  const auto void_ev = test::make_void(test::id_of(birth), {kPasarBaru}, t);
  REQUIRE((*p)->publish(void_ev).has_value());
  REQUIRE(test::wait_until([&] { return (*p)->stats().unauthorised > 0; }));
  CHECK((*p)->stats().pending == 1);
}
