// Attacks on authority, against a real broker with CURVE: who may correct or void an
// event, what a registry reload takes away from connections already open, what an
// operator may read, what free text carries, where development mode may listen, and
// that refused handshakes leave a trace. Each case states the behaviour the broker
// must have (docs/OPERATIONS.md, Security).
#include <algorithm>
#include <cctype>
#include <sstream>

#include <doctest/doctest.h>

#include "authority_bus.h"

using namespace kolabus;
using namespace kolabus::test::authority;
using namespace std::chrono_literals;

namespace {

// A run of `n` consecutive ASCII digits anywhere in `s` (a NIK or KK number).
bool has_digit_run(std::string_view s, std::size_t n = 16) {
  std::size_t run = 0;
  for (const char c : s) {
    run = std::isdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    if (run >= n) return true;
  }
  return false;
}

// A correction of make_death's death in `village`, with a cause of death.
std::vector<std::uint8_t> correct_death(const EventId& target, const std::string& village,
                                        const std::string& cause, const std::string& reason,
                                        TimeMs when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  const events::Uuid target_uuid(
      flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  auto d = events::CreateDeathDirect(fbb, kDeceasedNik.c_str(), "Budi Lubis", when_ms, "Medan",
                                     village.c_str(), nullptr, nullptr, cause.c_str());
  auto c = events::CreateCorrectionDirect(fbb, &target_uuid, reason.c_str(), false,
                                          events::Payload::Death, d.Union());
  return test::detail::finish_event(fbb, events::Payload::Correction, c.Union(), {village},
                                    when_ms);
}

// The lines of the broker's log that speak of a handshake.
std::size_t handshake_lines(const std::string& log) {
  std::size_t n = 0;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    std::transform(line.begin(), line.end(), line.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (contains(line, "handshake")) ++n;
  }
  return n;
}

}  // namespace

// ---- 1. Corrections and voids ------------------------------------------------------

TEST_CASE("Authority: a hospital may not void the registry's birth") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  Sink reg(bus.consumer(kRegistry, "reg", {"1271"}));
  const auto birth = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(birth).kind == client::OutcomeKind::kAcked);
  REQUIRE(reg.until([&] { return reg.count(test::id_of(birth)) == 1; }));
  const std::uint64_t next = bus.next_sequence();

  // The hospital may publish births in Medan, but this one is the registry's.
  auto hospital = bus.publisher(kHospital);
  const auto void_ev = test::make_void(test::id_of(birth), {kPasarBaru}, t);
  const auto o = hospital.send(void_ev);
  CHECK(name_of(o.kind) == "refused");
  CHECK(o.refusal.code == kNotAuthorised);
  CHECK_MESSAGE(!contains(o.refusal.message, kPasarBaru), o.refusal.message);
  CHECK(hospital.p->stats().acked == 0);
  auto refused = hospital.p->refused(10);
  REQUIRE(refused.has_value());
  CHECK(refused->size() == 1);

  // Nothing stored, nothing delivered.
  CHECK(bus.next_sequence() == next);
  reg.drain_for(1500ms);
  CHECK(reg.count(test::id_of(void_ev)) == 0);
}

TEST_CASE("Authority: a Medan agency may not correct a Jakarta birth into Medan") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto jakarta = bus.publisher(kJakarta);
  Sink jak(bus.consumer(kJakarta, "jak", {"3171"}));
  const auto birth = test::make_birth(kGambir, t);
  REQUIRE(jakarta.send(birth).kind == client::OutcomeKind::kAcked);
  REQUIRE(jak.until([&] { return jak.count(test::id_of(birth)) == 1; }));
  const std::uint64_t next = bus.next_sequence();

  // Medan's registry may publish anything in 1271, but the birth is Jakarta's: moving
  // it into a Medan village would take it from Jakarta's register.
  auto medan = bus.publisher(kRegistry);
  const auto moved = correct_birth(test::id_of(birth), kPasarBaru, {kGambir, kPasarBaru},
                                   "family lives in Medan", t);
  const auto o = medan.send(moved);
  CHECK(name_of(o.kind) == "refused");
  CHECK(o.refusal.code == kNotAuthorised);
  CHECK_MESSAGE(!contains(o.refusal.message, kGambir), o.refusal.message);

  // Naming only its own village: refused alike, and the answer does not tell it where
  // the birth is.
  const auto probe =
      correct_birth(test::id_of(birth), kPasarBaru, {kPasarBaru}, "family lives in Medan", t);
  const auto p = medan.send(probe);
  CHECK(name_of(p.kind) == "refused");
  CHECK(p.refusal.code == kNotAuthorised);
  CHECK_MESSAGE(!contains(p.refusal.message, kGambir), p.refusal.message);

  CHECK(bus.next_sequence() == next);
  jak.drain_for(1500ms);
  CHECK(jak.count(test::id_of(moved)) == 0);
  CHECK(jak.count(test::id_of(probe)) == 0);
}

TEST_CASE("Authority: the registry may void its own birth") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  Sink reg(bus.consumer(kRegistry, "reg", {"1271"}));
  const auto birth = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(birth).kind == client::OutcomeKind::kAcked);
  const std::uint64_t next = bus.next_sequence();

  const auto void_ev = test::make_void(test::id_of(birth), {kPasarBaru}, t);
  const auto o = registry.send(void_ev);
  CHECK_MESSAGE(name_of(o.kind) == "acked", o.refusal.message);
  CHECK(o.sequence.value == next);
  CHECK(bus.next_sequence() == next + 1);
  CHECK(reg.until([&] { return reg.count(test::id_of(void_ev)) == 1; }));
}

TEST_CASE("Authority: a correct grant lets an agency correct another agency's birth") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto hospital = bus.publisher(kHospital);
  Sink reg(bus.consumer(kRegistry, "reg", {"1271"}));
  const auto birth = test::make_birth(kPasarBaru, t);
  REQUIRE(hospital.send(birth).kind == client::OutcomeKind::kAcked);

  // The province's registry publishes nothing of its own; it may correct Medan's births.
  auto province = bus.publisher(kProvince);
  const auto fix =
      correct_birth(test::id_of(birth), kPasarBaru, {kPasarBaru}, "child's name misspelled", t);
  const auto o = province.send(fix);
  CHECK_MESSAGE(name_of(o.kind) == "acked", o.refusal.message);
  REQUIRE(reg.until([&] { return reg.count(test::id_of(fix)) == 1; }, 10s));
  CHECK(reg.find(test::id_of(fix))->source == kProvince);
}

TEST_CASE("Authority: an agency without a publish grant gets NotAuthorised for an id in the log") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  const auto birth = test::make_birth(kPasarBaru, t);
  const auto void_ev = test::make_void(test::id_of(birth), {kPasarBaru}, t);
  REQUIRE(registry.send(birth).kind == client::OutcomeKind::kAcked);
  REQUIRE(registry.send(void_ev).kind == client::OutcomeKind::kAcked);
  const std::uint64_t next = bus.next_sequence();

  // The kelurahan sends the very bytes the registry published: whether an id exists is
  // not its to learn, and the log's sequence of it least of all.
  auto kel = bus.publisher(kKelurahan);
  const auto b = kel.send(birth);
  CHECK(name_of(b.kind) == "refused");
  CHECK(b.refusal.code == kNotAuthorised);
  const auto v = kel.send(void_ev);
  CHECK(name_of(v.kind) == "refused");
  CHECK(v.refusal.code == kNotAuthorised);
  CHECK(v.sequence.value == 0);
  CHECK(kel.p->stats().acked == 0);
  CHECK(kel.p->stats().duplicates == 0);
  CHECK(bus.next_sequence() == next);
}

// ---- 2. Revocation reaches live connections --------------------------------------

TEST_CASE("Authority: a replaced key loses its open connections at once") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  LiveSink old_kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  auto old_admin = bus.admin(kKelurahan, 2s);
  const auto e1 = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(e1).kind == client::OutcomeKind::kAcked);
  REQUIRE(test::wait_until([&] { return old_kel.count(test::id_of(e1)) == 1; }));
  REQUIRE(old_admin->list_consumers().has_value());

  // The kelurahan's key leaked: the registry gets a new one.
  bus.member(kKelurahan).keys = gen();
  bus.reload();

  // The old, still open admin connection is no longer answered as the agency.
  std::string refusal;
  const bool cut = test::wait_until(
      [&] {
        auto r = old_admin->list_consumers();
        if (r.has_value()) return false;
        refusal = r.error().to_string();
        return contains(refusal, "not authorised") || contains(refusal, "NotAuthorised");
      },
      3s);
  CHECK_MESSAGE(cut, "the old key's admin connection still works after the reload: " << refusal);

  // An event published now reaches the new key's consumer, never the old connection
  // (which kept polling all along, as a running adapter does).
  const auto e2 = test::make_birth(kPasarBaru, t);
  const auto id2 = test::id_of(e2);
  REQUIRE(registry.send(e2).kind == client::OutcomeKind::kAcked);
  LiveSink new_kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  test::wait_until([&] { return old_kel.count(id2) + new_kel.count(id2) >= 1; }, 10s);
  // A second copy would come soon after the first: give it a second.
  test::wait_until([&] { return old_kel.count(id2) + new_kel.count(id2) >= 2; }, 1s);
  old_kel.stop();
  new_kel.stop();
  CHECK_MESSAGE(old_kel.count(id2) == 0, "the revoked connection received it");
  CHECK_MESSAGE(new_kel.count(id2) == 1, "new key's consumer: " << new_kel.last_error());
  CHECK(old_kel.count(id2) + new_kel.count(id2) == 1);
}

TEST_CASE("Authority: a narrowed grant pauses an attached consumer and a restored one resumes it") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  auto ops = bus.admin(kRegistry);
  LiveSink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  const auto e0 = test::make_birth(kPasarBaru, t);
  REQUIRE(registry.send(e0).kind == client::OutcomeKind::kAcked);
  REQUIRE(test::wait_until([&] { return kel.count(test::id_of(e0)) == 1; }));

  // The kelurahan's grant now covers the neighbouring village only.
  const std::string granted = bus.member(kKelurahan).subscribe;
  bus.member(kKelurahan).subscribe = "{ kinds = [\"*\"], regions = [\"" + kPusatPasar + "\"] }";
  bus.reload();
  const auto e1 = test::make_birth(kPasarBaru, t);
  const auto id1 = test::id_of(e1);
  REQUIRE(registry.send(e1).kind == client::OutcomeKind::kAcked);
  CHECK_FALSE_MESSAGE(test::wait_until([&] { return kel.count(id1) > 0; }, 1500ms),
                      "delivered outside the narrowed grant");
  std::string paused;
  CHECK_MESSAGE(test::wait_until(
                    [&] {
                      auto c = consumer_info(*ops, kKelurahan, "kel");
                      paused = c ? c->paused : "";
                      return !paused.empty();
                    },
                    3s),
                "list_consumers does not show the consumer paused");

  // Restored: the waiting event comes, once.
  bus.member(kKelurahan).subscribe = granted;
  bus.reload();
  CHECK(test::wait_until([&] { return kel.count(id1) >= 1; }, 10s));
  test::wait_until([&] { return kel.count(id1) >= 2; }, 500ms);  // a second copy: none
  CHECK(kel.count(id1) == 1);
  CHECK_MESSAGE(test::wait_until(
                    [&] {
                      auto c = consumer_info(*ops, kKelurahan, "kel");
                      paused = c ? c->paused : "(not listed)";
                      return paused.empty();
                    },
                    3s),
                "still paused: " << paused);
}

// ---- 3. Operating is not reading -------------------------------------------------

TEST_CASE("Authority: an operator without a receive grant sees a dead letter's metadata only") {
  AuthorityBus bus;
  auto registry = bus.publisher(kRegistry);
  Sink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  const std::uint64_t seq =
      make_dead_letter(registry, kel, "mother " + kMotherNik + " is not in our register");

  auto noc = bus.admin(kNoc);
  auto r = dead_letters(*noc, "kel", kKelurahan);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  REQUIRE(r->size() == 1);
  const auto& d = r->front();
  CHECK(d.consumer == "kel");
  CHECK(d.sequence == seq);
  CHECK(d.attempts >= 1);
  CHECK(d.dead_at > 0);
  CHECK(d.kind == static_cast<std::uint8_t>(events::Payload::Birth));
  CHECK(d.regions == std::vector<std::string>{kPasarBaru});
  CHECK(d.record.empty());  // no event content
  CHECK_MESSAGE(!contains(d.reason, kMotherNik), d.reason);
  CHECK(!contains(d.reason, kKkNumber));
  CHECK_MESSAGE(!contains(d.record, kMotherNik), "the record holds the mother's NIK");
  CHECK(!contains(d.record, kKkNumber));
  CHECK(!contains(d.record, "Putri Siregar"));
}

TEST_CASE("Authority: an operator whose agreement expired may not ask who saw a person") {
  AuthorityBus bus;
  auto registry = bus.publisher(kRegistry);
  Sink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  make_dead_letter(registry, kel, "village not served");
  auto ops = bus.admin(kRegistry);
  auto present = dead_letters(*ops, "kel", kKelurahan);
  REQUIRE_MESSAGE(present.has_value(), present.error().to_string());
  REQUIRE(present->size() == 1);  // there is something to read

  auto lapsed = bus.admin(kLapsed);
  auto who = lapsed->audit_person(kMotherNik, 1, 100, {});
  CHECK_FALSE(who.has_value());
  if (!who.has_value())
    CHECK_MESSAGE(contains(who.error().message, "NotAuthorised"), who.error().to_string());

  auto dl = lapsed->dlq_list("kel", 0, 100, kKelurahan);
  if (dl.has_value()) {
    for (const auto& d : *dl) {
      CHECK(d.record.empty());
      CHECK(!contains(d.record, kMotherNik));
      CHECK(!contains(d.reason, kMotherNik));
    }
  } else {
    MESSAGE("dlq_list refused: " << dl.error().to_string());
  }
}

TEST_CASE("Authority: every page of a person query is in the audit chain") {
  AuthorityBus bus;
  auto registry = bus.publisher(kRegistry);
  REQUIRE(registry.send(test::make_birth(kPasarBaru, SystemClock().now_ms() - kDay)).kind ==
          client::OutcomeKind::kAcked);
  auto ops = bus.admin(kRegistry);
  const std::size_t before = count_action(audit_records(*ops), audit::Action::PersonQuery);

  auto first = ops->audit_person(kMotherNik, 1, 100, {});
  REQUIRE_MESSAGE(first.has_value(), first.error().to_string());
  CHECK(count_action(audit_records(*ops), audit::Action::PersonQuery) == before + 1);

  // A question starting past the first record is a question about the person too.
  auto later = ops->audit_person(kMotherNik, 2, 100, {});
  REQUIRE_MESSAGE(later.has_value(), later.error().to_string());
  CHECK(count_action(audit_records(*ops), audit::Action::PersonQuery) == before + 2);
}

// ---- 4. Free text ------------------------------------------------------------------

TEST_CASE("Authority: a correction's reason reaches only agencies with the full field profile") {
  AuthorityBus bus;
  const TimeMs t = SystemClock().now_ms() - kDay;
  auto registry = bus.publisher(kRegistry);
  Sink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  Sink reg(bus.consumer(kRegistry, "reg", {"1271"}));
  const auto death = test::make_death(kPasarBaru, t);
  REQUIRE(registry.send(death).kind == client::OutcomeKind::kAcked);
  const std::string reason = "cause of death corrected to tuberculosis for NIK " + kDeceasedNik;
  const auto fix = correct_death(test::id_of(death), kPasarBaru, "tuberculosis", reason, t);
  REQUIRE(registry.send(fix).kind == client::OutcomeKind::kAcked);
  const auto fix_id = test::id_of(fix);

  REQUIRE(kel.until([&] { return kel.count(fix_id) == 1; }));
  REQUIRE(reg.until([&] { return reg.count(fix_id) == 1; }));

  // The kelurahan may not know a cause of death: not in a field, not in the reason.
  const Got* k = kel.find(fix_id);
  CHECK_FALSE(contains(k->event, "cause of death corrected"));
  CHECK_FALSE(contains(k->event, "tuberculosis"));
  const auto* kev = flatbuffers::GetRoot<events::Event>(k->event.data());
  REQUIRE(kev->payload_as_Correction() != nullptr);
  const std::string kel_reason =
      kev->payload_as_Correction()->reason() ? kev->payload_as_Correction()->reason()->str() : "";
  CHECK_MESSAGE(!has_digit_run(kel_reason), kel_reason);

  // Replayed, the same.
  auto kel_admin = bus.admin(kKelurahan);
  auto page = kel_admin->read_range({{}, {kPasarBaru}}, 1, 0, 0, 100);
  REQUIRE_MESSAGE(page.has_value(), page.error().to_string());
  CHECK(page->records.size() == 2);
  for (const auto& rec : page->records) {
    CHECK_FALSE(contains(rec, "cause of death corrected"));
    CHECK_FALSE(contains(rec, "tuberculosis"));
  }

  // The registry (every field) reads the reason as written.
  const auto* rev = flatbuffers::GetRoot<events::Event>(reg.find(fix_id)->event.data());
  REQUIRE(rev->payload_as_Correction() != nullptr);
  CHECK(rev->payload_as_Correction()->reason()->str() == reason);
}

TEST_CASE("Authority: a dead letter's reason is short and holds no NIK") {
  AuthorityBus bus;
  auto registry = bus.publisher(kRegistry);
  Sink kel(bus.consumer(kKelurahan, "kel", {kPasarBaru}));
  make_dead_letter(registry, kel, "bad NIK 1271011234560001 in row " + std::string(1000, '.'));

  auto own = bus.admin(kKelurahan);
  auto r = dead_letters(*own, "kel");
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  REQUIRE(r->size() == 1);
  const std::string& reason = r->front().reason;
  CHECK_MESSAGE(!has_digit_run(reason), reason.substr(0, 80));
  CHECK(!contains(reason, "1271011234560001"));
  CHECK(reason.size() <= 256);
}

// ---- 5. Development mode only on loopback ----------------------------------------

TEST_CASE("Authority: development mode refuses a wildcard address after a loopback source") {
  test::TempDir dir("authority-dev");
  // A free port, chosen now.
  int port = 0;
  {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(s >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = 0;
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    ::close(s);
  }
  // ZeroMQ reads "source;address": the broker would listen on every interface.
  const std::string endpoint = "tcp://127.0.0.1:0;0.0.0.0:" + std::to_string(port);
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
  const std::string err = slurp(err_file), out = slurp(out_file);
  CHECK_MESSAGE(exited, "the broker still ran in development mode on "
                            << endpoint << "; it said: " << out << err);
  if (exited) {
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
  }
  // The broker logs through spdlog's console sink (stdout).
  CHECK_MESSAGE(contains(out + err, "0.0.0.0"), "stderr: " << err << "\nstdout: " << out);
}

// ---- 6. Refused handshakes are logged -------------------------------------------

TEST_CASE("Authority: a plain ZeroMQ client's refused handshake is logged") {
  AuthorityBus bus;
  const std::size_t before = handshake_lines(bus.log_text());
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(bus.broker->endpoint());  // NULL mechanism
  CHECK(s.send(zmq::str_buffer("hello"), zmq::send_flags::dontwait).has_value());
  CHECK_MESSAGE(test::wait_until([&] { return handshake_lines(bus.log_text()) > before; }, 5s),
                "broker log:\n"
                    << bus.log_text());
}

TEST_CASE("Authority: a CURVE client with the wrong server key is refused and logged") {
  AuthorityBus bus;
  const std::size_t before = handshake_lines(bus.log_text());
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  // A registered agency's own key pair, but a server key that is not the broker's.
  const client::CurveOptions wrong{gen().public_key, bus.member(kRegistry).keys};
  REQUIRE(client::check_curve(wrong).has_value());
  client::apply_curve(s, wrong);
  s.connect(bus.broker->endpoint());
  CHECK(s.send(zmq::str_buffer("hello"), zmq::send_flags::dontwait).has_value());
  CHECK_MESSAGE(test::wait_until([&] { return handshake_lines(bus.log_text()) > before; }, 5s),
                "broker log:\n"
                    << bus.log_text());
}
