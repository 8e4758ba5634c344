// The ward register end to end: events published across several kelurahan of Medan
// reach a kelurahan's and a kecamatan's registers exactly once each, across an adapter
// restart and a replay from the start with the inbox lost; and the report counts them.
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "broker_process.h"
#include "file_modes.h"
#include "sinks_support.h"
#include "temp_dir.h"
#include "test_events.h"
#include <adapters/ward.h>
#include <common/clock.h>
#include <schemas/events_generated.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

// Two kelurahan of kecamatan Medan Kota, one of Medan Area, one in Kota Binjai.
const std::string kK1 = "1271011001";  // Pasar Baru
const std::string kK2 = "1271011002";  // Pusat Pasar
const std::string kK3 = "1271021001";  // Lalang (127102)
const std::string kBinjai = "1275011001";
const std::string kKecamatan = "127101";

struct Expect {
  std::string change;
  std::string village;
  std::string target;  // corrections
  bool operator==(const Expect&) const = default;
};
using Expected = std::map<std::string, Expect>;  // by event id

bool in(const std::string& village, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (village.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

// What the register of `prefixes` must hold: the oracle, written apart from the adapter.
Expected expected(const test::Events& evs, const std::vector<std::string>& prefixes) {
  Expected out;
  for (const auto& bytes : evs) {
    const auto* ev = flatbuffers::GetRoot<events::Event>(bytes.data());
    std::string first_inside;
    for (const auto& r : test::regions_of(bytes)) {
      if (first_inside.empty() && in(r, prefixes)) first_inside = r;
    }
    if (first_inside.empty()) continue;
    Expect e;
    switch (ev->payload_type()) {
      case events::Payload::Birth:
        e = {"born", ev->payload_as_Birth()->village_code()->str(), ""};
        break;
      case events::Payload::Death:
        e = {"died", ev->payload_as_Death()->village_code()->str(), ""};
        break;
      case events::Payload::Move: {
        const std::string o = ev->payload_as_Move()->origin_village()->str();
        const std::string d = ev->payload_as_Move()->destination_village()->str();
        if (in(o, prefixes) && in(d, prefixes)) {
          e = {"moved_within", d, ""};
        } else if (in(o, prefixes)) {
          e = {"moved_out", o, ""};
        } else {
          e = {"moved_in", d, ""};
        }
        break;
      }
      case events::Payload::Correction: {
        const auto* c = ev->payload_as_Correction();
        REQUIRE(c->void_());  // the tests publish voids only
        const EventId target = EventId::from_span(
            std::span<const std::uint8_t, 16>(c->target_id()->bytes()->data(), 16));
        e = {"voided", first_inside, target.to_string()};
        break;
      }
      case events::Payload::NONE:
        FAIL("an event without a payload");
    }
    out[test::id_of(bytes).to_string()] = e;
  }
  return out;
}

// The register as the test reads it; and its row count, which the primary key alone
// would not make equal to the map's size if the table were changed.
struct Snapshot {
  Expected rows;
  std::size_t count = 0;
};

Snapshot read_register(const std::string& path) {
  Snapshot s;
  if (!std::filesystem::exists(path)) return s;
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 2000);
  sqlite3_stmt* st = nullptr;
  const int rc = sqlite3_prepare_v2(
      db, "SELECT event_id, change, village, IFNULL(target_id, '') FROM events", -1, &st, nullptr);
  if (rc == SQLITE_OK) {  // the table may not exist yet
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto text = [&](int i) {
        return std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, i)));
      };
      s.rows[text(0)] = {text(1), text(2), text(3)};
      ++s.count;
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return s;
}

bool holds_exactly(const std::string& path, const Expected& want) {
  const Snapshot s = read_register(path);
  return s.count == want.size() && s.rows == want;
}

toml::table ward_table(const std::string& consumer, std::vector<std::string> regions) {
  toml::table t;
  t.insert("consumer", consumer);
  toml::array a;
  for (const auto& r : regions) a.push_back(r);
  t.insert("regions", a);
  return t;
}

adapters::AgencyContext context(const test::TempDir& dir, const test::BrokerProcess& broker) {
  adapters::AgencyContext ctx;
  ctx.agency = "kelurahan-office";
  ctx.broker = broker.endpoint();
  ctx.data_dir = dir.str("agency");
  return ctx;
}

std::unique_ptr<adapters::Adapter> make(const toml::table& t, const adapters::AgencyContext& ctx) {
  auto a = adapters::make_ward(t, ctx);
  REQUIRE_MESSAGE(a.has_value(), (a.has_value() ? "" : a.error().message));
  return std::move(*a);
}

void append_noise(test::Events& evs, std::size_t n, std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  for (std::size_t i = 0; i < n; ++i) evs.push_back(gen.next());
}

// Counts per village and change from the oracle, for events that occurred in [from, to).
std::map<std::string, std::map<std::string, std::uint64_t>> counts(const test::Events& evs,
                                                                   const Expected& want,
                                                                   TimeMs from, TimeMs to) {
  std::map<std::string, std::map<std::string, std::uint64_t>> out;
  for (const auto& bytes : evs) {
    const auto it = want.find(test::id_of(bytes).to_string());
    if (it == want.end()) continue;
    const TimeMs t = flatbuffers::GetRoot<events::Event>(bytes.data())->occurred_at();
    if (t >= from && t < to) ++out[it->second.village][it->second.change];
  }
  return out;
}

const char* const kChanges[] = {"born",         "died",      "moved_in", "moved_out",
                                "moved_within", "corrected", "voided"};

void check_report_json(const std::string& json, const test::Events& evs, const Expected& want,
                       TimeMs from, TimeMs to) {
  const auto report = nlohmann::json::parse(json);
  const auto want_counts = counts(evs, want, from, to);
  std::map<std::string, std::uint64_t> totals;
  std::set<std::string> listed;
  for (const auto& v : report["villages"]) {
    const std::string code = v["code"];
    listed.insert(code);
    for (const char* c : kChanges) {
      const auto vit = want_counts.find(code);
      const std::uint64_t n =
          vit == want_counts.end() || vit->second.count(c) == 0 ? 0 : vit->second.at(c);
      CHECK_MESSAGE(v[c].get<std::uint64_t>() == n, code << " " << c);
      totals[c] += n;
    }
  }
  for (const auto& [village, by_change] : want_counts) CHECK(listed.count(village) == 1);
  for (const char* c : kChanges) CHECK(report["totals"][c].get<std::uint64_t>() == totals[c]);
  CHECK(report["foreign"] == 0);
  CHECK(report["rows"].get<std::size_t>() == want.size());
}

}  // namespace

TEST_CASE("Ward: each register holds exactly its region's events, across a restart") {
  test::TempDir dir("ward");
  test::BrokerProcess broker(dir.str("broker"));
  const auto ctx = context(dir, broker);
  const TimeMs now = SystemClock().now_ms();
  const TimeMs t0 = now - 2 * 24 * 3600 * 1000LL;

  test::Events first;
  first.push_back(test::make_birth(kK1, t0));
  first.push_back(test::make_birth(kK1, t0 + 1000));
  first.push_back(test::make_birth(kK2, t0 + 2000));
  first.push_back(test::make_birth(kK3, t0 + 3000));
  first.push_back(test::make_death(kK1, t0 + 4000));
  first.push_back(test::make_move(kK1, kK2, events::MoveType::WithinKecamatan, t0 + 5000));
  first.push_back(test::make_move(kK3, kK1, events::MoveType::BetweenKecamatan, t0 + 6000));
  first.push_back(test::make_move(kK1, kBinjai, events::MoveType::BetweenCities, t0 + 7000));
  append_noise(first, 40, 31);

  const TimeMs t_late = t0 + 3600 * 1000;  // the one event of the narrow report below
  test::Events second;
  second.push_back(test::make_birth(kK1, t_late));
  second.push_back(test::make_death(kK2, t0 + 8000));
  second.push_back(test::make_move(kK2, kK3, events::MoveType::BetweenKecamatan, t0 + 9000));
  second.push_back(test::make_move(kK1, kK3, events::MoveType::BetweenKecamatan, t0 + 10000));
  second.push_back(test::make_void(test::id_of(first[0]), test::regions_of(first[0]), t0 + 11000));
  append_noise(second, 40, 32);

  test::Events all = first;
  all.insert(all.end(), second.begin(), second.end());

  const toml::table kel = ward_table("kel", {kK1});
  toml::table kec = ward_table("kec", {kKecamatan});
  kec.insert("register", dir.str("kec/register.sqlite"));
  const std::string kel_path = ctx.data_dir + "/register.sqlite";
  const std::string kec_path = dir.str("kec/register.sqlite");

  test::publish_all(broker.endpoint(), dir.str("outbox"), first);
  auto kel_ward = make(kel, ctx);
  auto kec_ward = make(kec, ctx);
  REQUIRE(test::started(*kel_ward));
  REQUIRE(test::started(*kec_ward));
  REQUIRE(test::wait_until([&] { return read_register(kel_path).count >= 1; }));
  kel_ward->stop();
  kel_ward.reset();
  const std::size_t before_restart = read_register(kel_path).count;
  CHECK(before_restart <= expected(first, {kK1}).size());

  test::publish_all(broker.endpoint(), dir.str("outbox"), second);
  kel_ward = make(kel, ctx);  // a new adapter on the same data_dir
  REQUIRE(test::started(*kel_ward));

  const Expected want_kel = expected(all, {kK1});
  const Expected want_kec = expected(all, {kKecamatan});
  // The hand-built events alone give the kelurahan 9 rows: 3 born, 1 died, 1 moved in,
  // 3 moved out, 1 voided.
  CHECK(want_kel.size() >= 9);
  REQUIRE(test::wait_until([&] { return holds_exactly(kel_path, want_kel); }));
  REQUIRE(test::wait_until([&] { return holds_exactly(kec_path, want_kec); }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "kel"); }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "kec"); }));
  CHECK(holds_exactly(kel_path, want_kel));  // nothing more arrived while catching up

  // Spot checks of the oracle against the story told above.
  const auto kel_rows = read_register(kel_path).rows;
  CHECK(kel_rows.at(test::id_of(first[5]).to_string()).change == "moved_out");
  CHECK(kel_rows.at(test::id_of(first[6]).to_string()).change == "moved_in");
  CHECK(kel_rows.at(test::id_of(second[4]).to_string()) ==
        Expect{"voided", kK1, test::id_of(first[0]).to_string()});
  const auto kec_rows = read_register(kec_path).rows;
  CHECK(kec_rows.at(test::id_of(first[5]).to_string()) == Expect{"moved_within", kK2, ""});
  CHECK(kec_rows.count(test::id_of(first[3]).to_string()) == 0);  // a birth in 127102

  kel_ward->stop();
  kec_ward->stop();

  {  // the report as JSON: counts per village and change, nothing foreign
    const TimeMs end = std::numeric_limits<TimeMs>::max();
    auto kel_report = adapters::ward_report(kel, ctx, 0, end, true);
    REQUIRE_MESSAGE(kel_report.has_value(), kel_report.error().message);
    check_report_json(*kel_report, all, want_kel, 0, end);

    auto kec_report = adapters::ward_report(kec, ctx, 0, end, true);
    REQUIRE(kec_report.has_value());
    check_report_json(*kec_report, all, want_kec, 0, end);
    // Every kelurahan of the kecamatan is listed, with or without events.
    CHECK(nlohmann::json::parse(*kec_report)["villages"].size() ==
          schemas::RegionTable::embedded().children(kKecamatan).size());

    // [from, to): only the birth at t_late.
    auto narrow = adapters::ward_report(kel, ctx, t_late, t_late + 1, true);
    REQUIRE(narrow.has_value());
    const auto n = nlohmann::json::parse(*narrow);
    CHECK(n["totals"]["born"] == 1);
    CHECK(n["totals"]["total"] == 1);
  }
  {  // the report as a table
    auto text = adapters::ward_report(kel, ctx, 0, std::numeric_limits<TimeMs>::max(), false);
    REQUIRE(text.has_value());
    INFO(*text);
    CHECK(text->find("1271011001  Pasar Baru") != std::string::npos);
    CHECK(text->find("moved within") != std::string::npos);
    CHECK(text->find("Foreign rows (village outside 1271011001): 0.") != std::string::npos);
  }
}

TEST_CASE("Ward: a replay from the start with the inbox lost adds nothing") {
  test::TempDir dir("ward");
  test::BrokerProcess broker(dir.str("broker"));
  const auto ctx = context(dir, broker);
  const TimeMs t0 = SystemClock().now_ms() - 24 * 3600 * 1000LL;
  test::Events evs;
  evs.push_back(test::make_birth(kK1, t0));
  evs.push_back(test::make_move(kK2, kK1, events::MoveType::WithinKecamatan, t0 + 1));
  append_noise(evs, 60, 33);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  const toml::table kec = ward_table("kec", {kKecamatan});
  const std::string path = ctx.data_dir + "/register.sqlite";
  const Expected want = expected(evs, {kKecamatan});

  auto ward = make(kec, ctx);
  REQUIRE(test::started(*ward));
  REQUIRE(test::wait_until([&] { return holds_exactly(path, want); }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "kec"); }));
  ward->stop();

  // As if every inbox commit after a register insert had been lost: the register is
  // the only memory left, and the broker delivers everything again.
  std::filesystem::remove_all(ctx.data_dir + "/inbox-kec");
  auto admin = client::AdminClient::connect(broker.endpoint(), 5s);
  REQUIRE(admin.has_value());
  auto moved = (*admin)->seek("kec", client::SeekPolicy::kEarliest, 0, 0);
  REQUIRE(moved.has_value());
  CHECK(moved->lag == want.size());

  ward = make(kec, ctx);
  REQUIRE(test::started(*ward));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "kec"); }));
  ward->stop();
  CHECK(holds_exactly(path, want));
}

TEST_CASE("Ward: the table is checked, errors name the key") {
  const adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", "/tmp/none"};
  auto error_of = [&](const toml::table& t) {
    auto a = adapters::make_ward(t, ctx);
    REQUIRE_FALSE(a.has_value());
    return a.error().message;
  };
  {
    auto a = adapters::make_ward(ward_table("w", {kK1}), ctx);
    REQUIRE(a.has_value());
    CHECK((*a)->describe().find("/tmp/none/register.sqlite") != std::string::npos);
  }
  SUBCASE("regions missing or empty") {
    toml::table t;
    t.insert("consumer", "w");
    CHECK(error_of(t).find("regions") != std::string::npos);
    CHECK(error_of(ward_table("w", {})).find("regions") != std::string::npos);
  }
  SUBCASE("not a region prefix") {
    CHECK(error_of(ward_table("w", {"1271011"})).find("1271011") != std::string::npos);
    CHECK(error_of(ward_table("w", {"9999"})).find("9999") != std::string::npos);
  }
  SUBCASE("unknown key") {
    toml::table t = ward_table("w", {kK1});
    t.insert("databse", "x.sqlite");
    CHECK(error_of(t).find("databse") != std::string::npos);
  }
  SUBCASE("consumer missing") {
    toml::table t = ward_table("w", {kK1});
    t.erase("consumer");
    CHECK(error_of(t).find("consumer") != std::string::npos);
  }
  SUBCASE("report of a register that was never written") {
    auto r = adapters::ward_report(ward_table("w", {kK1}), ctx, 0, 1, false);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::kNotFound);
  }
}

TEST_CASE("Ward: the register, its WAL and the inbox are private under umask 022") {
  const test::Umask mask(022);
  test::TempDir dir("ward-private");
  test::BrokerProcess broker(dir.str("broker"));
  const auto ctx = context(dir, broker);
  const TimeMs t0 = SystemClock().now_ms() - 24 * 3600 * 1000LL;
  test::Events evs;
  evs.push_back(test::make_birth(kK1, t0));
  evs.push_back(test::make_death(kK1, t0 + 1));
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  const std::string path = ctx.data_dir + "/register.sqlite";
  // A register elsewhere, in a directory the ward makes.
  toml::table elsewhere = ward_table("kec", {kKecamatan});
  elsewhere.insert("register", dir.str("registers/kec/register.sqlite"));

  auto kel = make(ward_table("kel", {kK1}), ctx);
  auto kec = make(elsewhere, ctx);
  REQUIRE(test::started(*kel));
  REQUIRE(test::started(*kec));
  REQUIRE(test::wait_until([&] { return read_register(path).count == 2; }));
  // While it runs: the database with its -wal and -shm files (residents' names, NIKs).
  CHECK(std::filesystem::exists(path + "-wal"));
  auto open = test::not_private(ctx.data_dir);
  CHECK_MESSAGE(open.empty(), test::joined(open));
  kel->stop();
  kec->stop();
  open = test::not_private(ctx.data_dir);
  CHECK_MESSAGE(open.empty(), test::joined(open));
  open = test::not_private(dir.str("registers"));
  CHECK_MESSAGE(open.empty(), test::joined(open));

  // A register an older release made 0644 is narrowed when the ward opens it.
  std::filesystem::permissions(path, std::filesystem::perms(0644));
  kel = make(ward_table("kel", {kK1}), ctx);
  REQUIRE(test::started(*kel));
  kel->stop();
  CHECK(test::mode_of(path) == 0600);
}
