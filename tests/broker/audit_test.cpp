// broker::Audit without sockets: records written by the core's group commit and by
// Audit::write, the chain checked by ChainVerifier (tampered, removed, reordered and
// truncated records), a person's events found by PersonScan, time lookups.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "file_modes.h"
#include "temp_dir.h"
#include "test_events.h"
#include <broker/audit.h>
#include <broker/core.h>
#include <storage/memory_event_log.h>

using namespace kolabus;
using broker::AuditFact;
using broker::ChainVerifier;

namespace {

constexpr TimeMs kNow = 1795000000000;  // 2026-11-17
constexpr TimeMs kDay = 24LL * 3600 * 1000;
const char* kMother = "1271015203950001";    // test::make_birth's mother
const char* kDeceased = "1271011505500003";  // test::make_death's

broker::NikKey key_of(std::uint8_t b) {
  broker::NikKey k{};
  k.fill(b);
  return k;
}

struct Fixture {
  storage::MemoryEventLog log;
  ManualClock clock{kNow};
  broker::Audit audit{log.audit(), clock, key_of(7)};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};

  Fixture() { core.set_audit(&audit); }

  std::vector<broker::PublishOutcome> publish(const std::vector<std::vector<std::uint8_t>>& evs,
                                              std::string_view source) {
    std::vector<broker::PublishRequest> reqs;
    for (const auto& e : evs) reqs.push_back({e, source});
    return core.publish_batch(reqs);
  }

  // Every stored record, key -> bytes (a copy a test may tamper with).
  std::map<std::uint64_t, std::string> records() const {
    std::map<std::uint64_t, std::string> out;
    REQUIRE(log.audit()
                .scan(1, 100000,
                      [&](std::uint64_t k, std::string_view b) {
                        out.emplace(k, std::string(b));
                        return true;
                      })
                .has_value());
    return out;
  }

  const audit::Record* record(std::uint64_t index, std::string& keep) const {
    keep = records().at(index);
    AlignedBytes unused;  // a std::string's bytes are 8-byte aligned: read in place
    const auto* r = broker::verified_record(keep, unused);
    REQUIRE(r != nullptr);
    return r;
  }
};

AuditFact fact(audit::Action action, std::string agency, std::vector<std::uint64_t> seqs = {}) {
  AuditFact f;
  f.action = action;
  f.agency = std::move(agency);
  f.sequences = std::move(seqs);
  return f;
}

std::optional<broker::AuditProblem> verify(const std::map<std::uint64_t, std::string>& recs,
                                           const storage::AuditHead& head) {
  ChainVerifier v;
  for (const auto& [k, b] : recs) {
    if (v.feed(k, b)) return v.problem();
  }
  return v.finish(head);
}

}  // namespace

// A view into a RocksDB block sits at any address; FlatBuffers must not read it in place.
TEST_CASE("Audit: a record at an odd address is read from an aligned copy") {
  Fixture f;
  REQUIRE(f.publish({test::make_birth("1271011001", kNow - kDay)}, "disdukcapil-medan")[0].acked());
  const AlignedBytes shifted("x" + f.records().at(1));
  const std::string_view view = shifted.view().substr(1);  // one byte past an 8-byte boundary
  REQUIRE_FALSE(is_aligned8(view.data()));
  AlignedBytes copy;
  const auto* r = broker::verified_record(view, copy);
  REQUIRE(r != nullptr);
  CHECK(r->index() == 1);
  CHECK(r->action() == audit::Action::Publish);
  CHECK(reinterpret_cast<const std::uint8_t*>(r) >= copy.data());
  CHECK(reinterpret_cast<const std::uint8_t*>(r) < copy.data() + copy.size());
}

TEST_CASE("Audit: a group commit stores its Publish record with the events, per agency") {
  Fixture f;
  const TimeMs t = kNow - kDay;
  const auto out = f.publish({test::make_birth("1271011001", t), test::make_death("1271011002", t)},
                             "disdukcapil-medan");
  REQUIRE(out[0].acked());
  REQUIRE(out[1].acked());
  REQUIRE(f.log.audit().head().index == 1);
  std::string keep;
  const auto* r = f.record(1, keep);
  CHECK(r->index() == 1);
  CHECK(r->action() == audit::Action::Publish);
  CHECK(r->agency()->str() == "disdukcapil-medan");
  CHECK(r->first_sequence() == 1);
  CHECK(r->last_sequence() == 2);
  CHECK(r->sequences() == nullptr);  // contiguous: the range says it all
  CHECK(r->count() == 2);
  CHECK(r->time() == kNow);
  REQUIRE(r->persons() != nullptr);
  REQUIRE(r->persons()->size() == 2);
  // The chain holds keyed hashes of NIKs, never the NIKs.
  CHECK(keep.find(kMother) == std::string::npos);
  CHECK(keep.find(kDeceased) == std::string::npos);
  const auto mother = f.audit.hash_nik(kMother);
  const auto* first = r->persons()->Get(0);
  CHECK(first->sequence() == 1);
  REQUIRE(first->nik_hashes()->size() == 16);  // the birth names only its mother
  CHECK(std::equal(mother.begin(), mother.end(), first->nik_hashes()->begin()));
  CHECK(broker::nik_hash(kMother, key_of(8)) != mother);  // another key, another hash
  // The Audit's precomputed keyed state gives the documented hash, NIK after NIK.
  CHECK(mother == broker::nik_hash(kMother, key_of(7)));
  CHECK(f.audit.hash_nik(kDeceased) == broker::nik_hash(kDeceased, key_of(7)));
  CHECK(f.audit.hash_nik(kMother) == mother);
  // Known answer, from Python: hashlib.blake2b(b"1271015203950001", key=bytes([7] * 32),
  // digest_size=32).hexdigest()[:32]
  const auto known = f.audit.hash_nik("1271015203950001");
  CHECK(broker::to_hex(known) == "a172a65d8f664fe3f6982acc4153a211");

  SUBCASE("a batch of two agencies gives each its own record") {
    // Development-mode core (no registry) lets both publish.
    std::vector<broker::PublishRequest> reqs;
    const auto a = test::make_birth("1271011001", t), b = test::make_birth("1271011002", t),
               c = test::make_birth("1271011003", t);
    reqs.push_back({a, "disdukcapil-medan"});
    reqs.push_back({b, "rsud-pirngadi"});
    reqs.push_back({c, "disdukcapil-medan"});
    f.core.publish_batch(reqs);
    REQUIRE(f.log.audit().head().index == 3);
    std::string k2, k3;
    const auto* r2 = f.record(2, k2);
    const auto* r3 = f.record(3, k3);
    CHECK(r2->agency()->str() == "disdukcapil-medan");
    REQUIRE(r2->sequences() != nullptr);  // 3 and 5: not every sequence of 3..5
    CHECK(std::vector<std::uint64_t>(r2->sequences()->begin(), r2->sequences()->end()) ==
          std::vector<std::uint64_t>{3, 5});
    CHECK(r3->agency()->str() == "rsud-pirngadi");
    CHECK(r3->first_sequence() == 4);
    CHECK(r3->last_sequence() == 4);
  }
  SUBCASE("a batch that stores nothing writes no Publish record") {
    f.publish({test::make_birth("9999999999", t)}, "disdukcapil-medan");  // unknown region
    CHECK(f.log.audit().head().index == 1);
  }
  SUBCASE("a failed append stores neither events nor their record") {
    f.log.fail_appends(true);
    const auto failed = f.publish({test::make_birth("1271011001", t)}, "disdukcapil-medan");
    CHECK_FALSE(failed[0].acked());
    f.log.fail_appends(false);
    CHECK(f.log.audit().head().index == 1);
    CHECK(f.log.next_sequence().value == 3);
  }
}

TEST_CASE("Audit: publishing outside a grant leaves a Refused record") {
  Fixture f;
  auto agencies = broker::Agencies::parse(
      "[[agency]]\nname = \"rsud\"\npublic_key = \"" + std::string(40, 'A') +
          "\"\npublish = { kinds = [\"birth\"], regions = [\"1271\"] }\n"
          "agreement = { pks = \"PKS/1\", purpose = \"births\", valid_from = 2020-01-01, "
          "valid_until = 2099-12-31 }\n",
      "agencies.toml", schemas::RegionTable::embedded());
  REQUIRE_MESSAGE(agencies.has_value(), agencies.error().message);
  f.core.set_agencies(std::make_shared<const broker::Agencies>(std::move(*agencies)));
  const TimeMs t = kNow - kDay;
  const auto out =
      f.publish({test::make_death("1271011001", t), test::make_death("1271011002", t)}, "rsud");
  CHECK_FALSE(out[0].acked());
  REQUIRE(f.log.audit().head().index == 1);
  std::string keep;
  const auto* r = f.record(1, keep);
  CHECK(r->action() == audit::Action::Refused);
  CHECK(r->agency()->str() == "rsud");
  CHECK(r->count() == 2);
  CHECK(r->detail()->str().find("publish: agency 'rsud' may not publish") == 0);
}

TEST_CASE("ChainVerifier: an intact chain verifies, any edit names the first bad record") {
  Fixture f;
  for (int i = 0; i < 6; ++i) {
    f.clock.advance(1000);
    REQUIRE(f.audit.write(fact(audit::Action::Deliver, "kel-" + std::to_string(i), {1, 2, 3}))
                .has_value());
  }
  auto recs = f.records();
  const auto head = f.log.audit().head();
  REQUIRE(recs.size() == 6);
  CHECK_FALSE(verify(recs, head).has_value());
  auto v = broker::verify_chain(f.log.audit());
  REQUIRE(v.has_value());
  CHECK_FALSE(v->problem().has_value());
  CHECK(v->checked() == 6);
  CHECK(v->last() == head);

  SUBCASE("one byte of a record changed") {
    auto& bytes = recs.at(3);
    const auto at = bytes.find("kel-2");
    REQUIRE(at != std::string::npos);
    bytes[at + 4] = '9';  // kel-2 -> kel-9: still decodes, but its hash moved
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 3);
    CHECK(p->what.find("record 3 was altered") == 0);
  }
  SUBCASE("the last record changed: only the recorded head can tell") {
    auto& bytes = recs.at(6);
    bytes[bytes.find("kel-5") + 4] = '0';
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 6);
    CHECK(p->what.find("does not match the recorded head") != std::string::npos);
  }
  SUBCASE("a record in the middle removed") {
    recs.erase(4);
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 4);
    CHECK(p->what == "record 4 is missing: the next stored record is 5");
  }
  SUBCASE("the last two records removed") {
    recs.erase(5);
    recs.erase(6);
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 5);
    CHECK(p->what == "record 5 to 6 are missing: the recorded head is record 6");
  }
  SUBCASE("two records swapped, keys and all") {
    std::swap(recs.at(2), recs.at(3));
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 2);
    CHECK(p->what == "record 2 says it is record 3");
  }
  SUBCASE("a record that no longer decodes") {
    recs.at(2) = "garbage";
    auto p = verify(recs, head);
    REQUIRE(p.has_value());
    CHECK(p->index == 2);
    CHECK(p->what == "record 2 does not decode");
  }
  SUBCASE("a whole chain rebuilt from record 4 on, head and all: only an anchor tells") {
    ChainVerifier anchored;
    anchored.add_anchor(5, head.hash);  // wrong on purpose: 5's real hash differs
    for (const auto& [k, b] : recs) anchored.feed(k, b);
    REQUIRE(anchored.finish(head).has_value());
    CHECK(anchored.problem()->index == 5);

    ChainVerifier right;
    right.add_anchor(6, head.hash);
    for (const auto& [k, b] : recs) right.feed(k, b);
    CHECK_FALSE(right.finish(head).has_value());
  }
}

TEST_CASE("PersonScan: a person's events, and every agency that received them") {
  Fixture f;
  const TimeMs t = kNow - kDay;
  f.publish({test::make_birth("1271011001", t), test::make_death("1271011002", t),
             test::make_birth("1271011003", t)},
            "disdukcapil-medan");
  REQUIRE(f.audit.write(fact(audit::Action::Deliver, "dinkes", {1, 2, 3})).has_value());
  REQUIRE(f.audit.write(fact(audit::Action::Deliver, "kel-a", {2})).has_value());
  REQUIRE(f.audit.write(fact(audit::Action::Read, "bps", {3})).has_value());
  REQUIRE(f.audit.write(fact(audit::Action::Seek, "dinkes", {1})).has_value());  // not access

  auto scan_all = [&](std::string_view nik) {
    broker::PersonScan scan(f.audit.hash_nik(nik));
    std::vector<broker::PersonHit> hits;
    for (const auto& [k, b] : f.records()) scan.feed(k, b, hits);
    return std::make_pair(scan.sequences(), hits);
  };
  auto [seqs, hits] = scan_all(kMother);
  CHECK(seqs == std::vector<std::uint64_t>{1, 3});
  std::vector<std::tuple<audit::Action, std::string, std::uint64_t>> got;
  for (const auto& h : hits) got.emplace_back(h.action, h.agency, h.sequence);
  CHECK(got == std::vector<std::tuple<audit::Action, std::string, std::uint64_t>>{
                   {audit::Action::Publish, "disdukcapil-medan", 1},
                   {audit::Action::Publish, "disdukcapil-medan", 3},
                   {audit::Action::Deliver, "dinkes", 1},
                   {audit::Action::Deliver, "dinkes", 3},
                   {audit::Action::Read, "bps", 3}});

  auto [dseqs, dhits] = scan_all(kDeceased);
  CHECK(dseqs == std::vector<std::uint64_t>{2});
  CHECK(dhits.size() == 3);  // published, delivered to dinkes and to kel-a

  CHECK(scan_all("1271019999990001").first.empty());

  SUBCASE("paged: the sequences carried from one page to the next") {
    const auto recs = f.records();
    broker::PersonScan page1(f.audit.hash_nik(kMother));
    std::vector<broker::PersonHit> h1, h2;
    page1.feed(1, recs.at(1), h1);
    broker::PersonScan page2(f.audit.hash_nik(kMother), page1.sequences());
    for (std::uint64_t k = 2; k <= recs.size(); ++k) page2.feed(k, recs.at(k), h2);
    CHECK(h1.size() + h2.size() == hits.size());
  }
}

TEST_CASE("Audit: record times never decrease, first_index_at finds a time") {
  Fixture f;
  for (int i = 0; i < 10; ++i) {
    f.clock.set(kNow + i * 1000);
    REQUIRE(f.audit.write(fact(audit::Action::Subscribe, "a")).has_value());
  }
  f.clock.set(kNow);  // the wall clock stepped back
  REQUIRE(f.audit.write(fact(audit::Action::Subscribe, "a")).has_value());
  std::string keep;
  CHECK(f.record(11, keep)->time() == kNow + 9000);

  CHECK(*broker::first_index_at(f.log.audit(), 0) == 1);
  CHECK(*broker::first_index_at(f.log.audit(), kNow + 4500) == 6);
  CHECK(*broker::first_index_at(f.log.audit(), kNow + 5000) == 6);
  CHECK(*broker::first_index_at(f.log.audit(), kNow + 99000) == 12);

  // A new Audit on the same chain carries on from the last record's time.
  broker::Audit again(f.log.audit(), f.clock, key_of(7));
  REQUIRE(again.write(fact(audit::Action::Subscribe, "a")).has_value());
  CHECK(f.record(12, keep)->time() == kNow + 9000);
  CHECK_FALSE(broker::verify_chain(f.log.audit())->problem().has_value());
}

namespace {

std::string text_of(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_key_text(const std::string& path, const std::string& text, mode_t mode) {
  std::filesystem::remove(path);
  std::ofstream(path) << text;
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

}  // namespace

TEST_CASE("Audit key: made once (0600, whatever the umask), then read back") {
  const test::Umask mask(022);
  test::TempDir dir("nik-key");
  const std::string path = dir.str("keys/audit.key");  // its directory made 0700
  auto made = broker::open_nik_key(path, dir.str("data/audit.key"), true);
  REQUIRE_MESSAGE(made.has_value(), made.error().to_string());
  CHECK(made->origin == broker::NikKeyFile::Origin::kCreated);
  CHECK(test::mode_of(path) == 0600);
  CHECK(test::mode_of(dir.str("keys")) == 0700);
  CHECK(text_of(path) == broker::to_hex(made->key) + "\n");
  auto again = broker::open_nik_key(path, dir.str("data/audit.key"), false);
  REQUIRE(again.has_value());
  CHECK(again->origin == broker::NikKeyFile::Origin::kLoaded);
  CHECK(again->key == made->key);
  // Not made when the caller says the chain already has records.
  auto none = broker::open_nik_key(dir.str("other/audit.key"), "", false);
  REQUIRE_FALSE(none.has_value());
  CHECK(none.error().code == Errc::kNotFound);
  CHECK(!std::filesystem::exists(dir.str("other/audit.key")));
}

TEST_CASE("Audit key: the data directory's key of older releases moves, the same bytes") {
  test::TempDir dir("nik-key-move");
  std::filesystem::create_directories(dir.str("data"));
  const std::string old_path = dir.str("data/audit.key"), path = dir.str("keys/audit.key");
  const std::string hex(64, 'a');
  write_key_text(old_path, hex + "\n", 0600);
  auto moved = broker::open_nik_key(path, old_path, false);
  REQUIRE_MESSAGE(moved.has_value(), moved.error().to_string());
  CHECK(moved->origin == broker::NikKeyFile::Origin::kMoved);
  CHECK(broker::to_hex(moved->key) == hex);
  CHECK(!std::filesystem::exists(old_path));
  CHECK(text_of(path) == hex + "\n");
  CHECK(test::mode_of(path) == 0600);

  SUBCASE("an identical copy left behind is removed") {
    write_key_text(old_path, hex + "\n", 0600);
    auto r = broker::open_nik_key(path, old_path, false);
    REQUIRE(r.has_value());
    CHECK(r->origin == broker::NikKeyFile::Origin::kLoaded);
    CHECK(r->removed_old_copy);
    CHECK(!std::filesystem::exists(old_path));
  }
  SUBCASE("a different one is refused, and both stay") {
    write_key_text(old_path, std::string(64, 'b') + "\n", 0600);
    auto r = broker::open_nik_key(path, old_path, false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::kInvalidArgument);
    CHECK(r.error().message.find("two different audit keys") != std::string::npos);
    CHECK(std::filesystem::exists(old_path));
  }
  SUBCASE("the same place twice is one key, not a move") {
    auto r = broker::open_nik_key(path, dir.str("keys/../keys/audit.key"), false);
    REQUIRE(r.has_value());
    CHECK(r->origin == broker::NikKeyFile::Origin::kLoaded);
    CHECK(std::filesystem::exists(path));
  }
}

TEST_CASE("Audit key: one that group or others may read is refused, naming it and the fix") {
  test::TempDir dir("nik-key-mode");
  const std::string path = dir.str("audit.key");
  for (mode_t mode : {0640, 0604, 0644, 0620}) {
    write_key_text(path, std::string(64, 'c') + "\n", mode);
    auto r = broker::open_nik_key(path, "", false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::kInvalidArgument);
    CHECK(r.error().message.find("audit key file " + path) != std::string::npos);
    CHECK(r.error().message.find("chmod 600 " + path) != std::string::npos);
  }
  write_key_text(path, std::string(64, 'c') + "\n", 0400);  // owner-only, read-only: fine
  CHECK(broker::open_nik_key(path, "", false).has_value());
  write_key_text(path, "not a key\n", 0600);
  auto bad = broker::open_nik_key(path, "", false);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == Errc::kCorruption);
}
