// The crash suite's checker on hand-made runs: a consistent one passes, and each
// broken guarantee (an ACKed event lost, an event nobody sent, a consumer that
// handled an event twice, missed one, handled one outside its filter, did not catch
// up) is reported in its row and fails the run.
#include "checker.h"

#include <filesystem>
#include <set>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>

#include "crash_suite.h"
#include "journal.h"
#include "temp_dir.h"
#include <common/clock.h>
#include <schemas/events_generated.h>
#include <schemas/log_generated.h>
#include <storage/inbox.h>
#include <storage/rocksdb_broker_store.h>

using namespace kolabus;

namespace {

struct Event {
  EventId id;
  std::uint8_t kind = 0;
  std::vector<std::string> regions;
  std::vector<std::uint8_t> bytes;
};

constexpr std::uint64_t kSeed = 7;
const TimeMs kNow = SystemClock().now_ms();

// Publisher `publisher`'s first n events of the run with kSeed.
std::vector<Event> make_events(int n, int publisher = 0) {
  std::vector<Event> out;
  for (auto& bytes : crash::publisher_events(kSeed, publisher, n, kNow)) {
    Event e;
    e.bytes = std::move(bytes);
    const auto* ev = flatbuffers::GetRoot<events::Event>(e.bytes.data());
    e.id = EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
    e.kind = static_cast<std::uint8_t>(ev->payload_type());
    for (const auto* r : *ev->regions()) e.regions.push_back(r->str());
    out.push_back(std::move(e));
  }
  return out;
}

bool in_focus(const Event& e) {
  for (const auto& r : e.regions) {
    if (r.rfind(crash::kFocusKecamatan, 0) == 0) return true;
  }
  return false;
}

// Changes one letter inside a string of the event (a run of 5 lowercase letters: a
// name), so the bytes still verify but differ from what was sent.
void upcase_a_name(std::vector<std::uint8_t>& event) {
  int run = 0;
  for (std::size_t i = 0; i < event.size(); ++i) {
    run = (event[i] >= 'a' && event[i] <= 'z') ? run + 1 : 0;
    if (run == 5) {
      event[i] = static_cast<std::uint8_t>(event[i] - 'a' + 'A');
      return;
    }
  }
  FAIL("no name in the event");
}

// A run's work directory as the suite leaves it: one publisher, the broker's log and
// two consumers (0: every event, 1: the focus kecamatan). What each part holds is
// the test's to choose.
class FakeRun {
 public:
  FakeRun() : dir_("crash-checker") {
    std::filesystem::create_directories(crash::publisher_dir(dir_.str(), 0));
    for (int c = 0; c < 2; ++c) {
      std::filesystem::create_directories(crash::consumer_dir(dir_.str(), c));
    }
  }

  void journal_sent(const std::vector<Event>& evs) {
    auto j = crash::Journal::open(crash::publisher_dir(dir_.str(), 0) + "/sent.log");
    REQUIRE(j.has_value());
    std::string line = "I 0 " + std::to_string(evs.size());
    for (const auto& e : evs) line += " " + e.id.to_string();
    REQUIRE(j->append(line, crash::Sync::kNo).has_value());
    REQUIRE(j->append("E " + std::to_string(evs.size()), crash::Sync::kNo).has_value());
    REQUIRE(j->append("D", crash::Sync::kNo).has_value());
  }

  void journal_ack(const EventId& id, std::uint64_t seq) {
    auto j = crash::Journal::open(crash::publisher_dir(dir_.str(), 0) + "/acked.log");
    REQUIRE(j.has_value());
    REQUIRE(j->append("A " + id.to_string() + " " + std::to_string(seq) + " 0", crash::Sync::kNo)
                .has_value());
  }

  // Appends to the broker's log in order; returns the sequences.
  std::vector<std::uint64_t> store(const std::vector<Event>& evs) {
    auto st = storage::open_rocksdb_broker_store(dir_.str("broker"));
    REQUIRE(st.has_value());
    std::vector<std::uint64_t> seqs;
    std::vector<flatbuffers::FlatBufferBuilder> records(evs.size());
    std::vector<storage::AppendRecord> batch;
    for (std::size_t i = 0; i < evs.size(); ++i) {
      const auto& e = evs[i];
      const Sequence seq{st->log->next_sequence().value + i};
      std::vector<std::uint8_t> event = e.bytes;
      if (tamper_ == e.id) upcase_a_name(event);
      auto& fbb = records[i];
      auto bytes = fbb.CreateVector(event);
      fbb.Finish(log::CreateLogRecord(fbb, seq.value, 1, fbb.CreateString("dev"), bytes, e.kind));
      batch.push_back({seq, e.id, e.kind, e.regions, {fbb.GetBufferPointer(), fbb.GetSize()}});
      seqs.push_back(seq.value);
    }
    REQUIRE(st->log->append(batch).has_value());
    return seqs;
  }

  // Consumer `c` commits one handler call per key suffix in `calls`.
  void handle(int c, const Event& e, std::uint64_t seq, std::vector<std::string> calls = {"1.1"}) {
    auto& inbox = inboxes_[c];
    if (!inbox) {
      auto opened = storage::Inbox::open(crash::consumer_dir(dir_.str(), c) + "/inbox");
      REQUIRE(opened.has_value());
      inbox = std::move(*opened);
    }
    auto txn = inbox->begin();
    for (const auto& call : calls) {
      txn->put("h/" + e.id.to_string() + "/" + call, std::to_string(seq));
    }
    REQUIRE(inbox->commit(std::move(txn), e.id, seq, 1).has_value());
  }

  crash::Report check(std::uint64_t lag0 = 0) {
    for (auto& inbox : inboxes_) inbox.reset();  // the checker opens them itself
    crash::RunFacts facts;
    facts.work_dir = dir_.str();
    facts.publishers = 1;
    facts.consumers = 2;
    facts.events_per_publisher = events_;
    facts.seed = kSeed;
    facts.now_ms = kNow;
    for (int c = 0; c < 2; ++c) {
      client::ConsumerInfoView info;
      info.name = crash::consumer_name(c);
      info.lag = c == 0 ? lag0 : 0;
      facts.final_info.push_back(info);
    }
    return crash::check_run(facts);
  }

  int events_ = 0;
  EventId tamper_;  // store this event with a letter changed

 private:
  std::unique_ptr<storage::Inbox> inboxes_[2];
  test::TempDir dir_;
};

std::uint64_t row(const crash::Report& r, const std::string& label) {
  for (const auto& x : r.publish) {
    if (x.label == label) return x.value;
  }
  FAIL("no row " << label);
  return 0;
}

}  // namespace

TEST_CASE("Crash checker: a consistent run passes, each broken guarantee fails it") {
  const auto evs = make_events(30);
  std::size_t focus = 0;
  for (const auto& e : evs) focus += in_focus(e) ? 1 : 0;
  REQUIRE(focus > 0);
  REQUIRE(focus < evs.size());

  FakeRun run;
  run.events_ = static_cast<int>(evs.size());
  run.journal_sent(evs);
  std::vector<Event> logged = evs;
  bool handled_all = true;
  std::optional<Event> foreign;  // in the log, sent by nobody

  SUBCASE("consistent") {}
  SUBCASE("an ACKed event is not in the log") { logged.pop_back(); }
  SUBCASE("the log holds an event no publisher sent") {
    foreign = make_events(1, 5).front();  // publisher 5's: there is none
    logged.push_back(*foreign);
  }
  SUBCASE("a consumer misses an event") { handled_all = false; }
  SUBCASE("the log holds other bytes than were sent") { run.tamper_ = evs[9].id; }

  const auto seqs = run.store(logged);
  for (std::size_t i = 0; i < evs.size(); ++i) {
    run.journal_ack(evs[i].id, i < seqs.size() ? seqs[i] : 999999);
  }
  for (std::size_t i = 0; i < logged.size(); ++i) {
    if (handled_all || i != 3) run.handle(0, logged[i], seqs[i]);
    if (in_focus(logged[i])) run.handle(1, logged[i], seqs[i]);
  }

  const auto report = run.check();
  const bool tampered = run.tamper_ == evs[9].id;
  const bool broken = logged.size() != evs.size() || !handled_all || tampered;
  CHECK(report.ok() == !broken);
  CHECK(row(report, "ACKed but missing from the log") == (logged.size() < evs.size() ? 1 : 0));
  CHECK(row(report, "sent but missing from the log") == (logged.size() < evs.size() ? 1 : 0));
  CHECK(row(report, "in the log, sent by no publisher") == (foreign ? 1 : 0));
  CHECK(row(report, "stored twice") == 0);
  CHECK(row(report, "stored bytes differ from the sent event") == (tampered ? 1 : 0));
  REQUIRE(report.consumers.size() == 2);
  CHECK(report.consumers[0].matching == logged.size());
  CHECK(report.consumers[0].missing == (handled_all ? 0 : 1));
  CHECK(report.consumers[1].ok());
}

TEST_CASE("Crash checker: consumer rows count duplicates, strays and lag") {
  const auto evs = make_events(20);
  FakeRun run;
  run.events_ = static_cast<int>(evs.size());
  run.journal_sent(evs);
  const auto seqs = run.store(evs);
  for (std::size_t i = 0; i < evs.size(); ++i) run.journal_ack(evs[i].id, seqs[i]);
  std::size_t outside = evs.size();
  for (std::size_t i = 0; i < evs.size(); ++i) {
    if (!in_focus(evs[i])) outside = i;
  }
  REQUIRE(outside < evs.size());

  std::uint64_t lag = 0;
  SUBCASE("an event handled twice (two committed handler calls)") {
    for (std::size_t i = 0; i < evs.size(); ++i) {
      run.handle(0, evs[i], seqs[i],
                 i == 5 ? std::vector<std::string>{"1.1", "2.1"} : std::vector<std::string>{"1.1"});
    }
    const auto r = run.check();
    CHECK(r.consumers[0].duplicates == 1);
    CHECK(r.consumers[0].handled_once == evs.size() - 1);
    CHECK_FALSE(r.ok());
  }
  SUBCASE("an event outside the filter handled") {
    for (std::size_t i = 0; i < evs.size(); ++i) {
      run.handle(0, evs[i], seqs[i]);
      if (in_focus(evs[i]) || i == outside) run.handle(1, evs[i], seqs[i]);
    }
    const auto r = run.check();
    CHECK(r.consumers[0].ok());
    CHECK(r.consumers[1].not_matching == 1);
    CHECK_FALSE(r.ok());
  }
  SUBCASE("handled under another sequence") {
    for (std::size_t i = 0; i < evs.size(); ++i) run.handle(0, evs[i], i == 2 ? 77 : seqs[i]);
    const auto r = run.check();
    CHECK(r.consumers[0].wrong_sequence == 1);
    CHECK_FALSE(r.ok());
  }
  SUBCASE("all handled, but the broker still reports lag") {
    for (std::size_t i = 0; i < evs.size(); ++i) {
      run.handle(0, evs[i], seqs[i]);
      if (in_focus(evs[i])) run.handle(1, evs[i], seqs[i]);
    }
    lag = 3;
    const auto r = run.check(lag);
    CHECK_FALSE(r.consumers[0].caught_up);
    CHECK(r.consumers[1].ok());
    CHECK_FALSE(r.ok());
  }
}
