#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>

#include "test_events.h"
#include <schemas/profile.h>
#include <schemas/regions.h>
#include <schemas/validate.h>
#include <tools/event_generator.h>

namespace ev = kolabus::events;
using kolabus::Errc;
using kolabus::EventId;
using namespace kolabus::schemas;

namespace {

const std::int64_t kWhen = 1750390200000;  // 2025-06-20

// What a statistics office may receive: kind, dates, village codes, sex, move type.
const std::vector<std::string> kStatistics = {
    "birth.sex",          "birth.born_at", "birth.village_code",  "death.died_at",
    "death.village_code", "move.moved_at", "move.origin_village", "move.destination_village",
    "move.move_type"};

FieldProfile profile(const std::vector<std::string>& entries) {
  auto p = FieldProfile::parse(entries);
  REQUIRE_MESSAGE(p.has_value(), p.error().message);
  return std::move(*p);
}

std::string parse_error(const std::vector<std::string>& entries) {
  auto p = FieldProfile::parse(entries);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().code == Errc::kInvalidArgument);
  return p.error().message;
}

std::vector<std::uint8_t> finish(flatbuffers::FlatBufferBuilder& fbb, ev::Payload type,
                                 flatbuffers::Offset<void> payload,
                                 const std::vector<std::string>& regions) {
  const EventId id = kolabus::new_uuid_v7();
  const ev::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  auto regs = fbb.CreateVectorOfStrings(regions);
  fbb.Finish(ev::CreateEvent(fbb, &uuid, 1, kWhen, kWhen + 3'600'000, fbb.CreateString("disduk"),
                             regs, type, payload),
             ev::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// Payloads with every field set, so that each one's removal can be seen.
flatbuffers::Offset<ev::Birth> full_birth(flatbuffers::FlatBufferBuilder& fbb) {
  return ev::CreateBirthDirect(fbb, "Putri Siregar", ev::Sex::Female, kWhen, "RSU Pirngadi",
                               "1271011001", "1271015203950001", "1271011203900002",
                               "1271012002200001", "AKL-1271-2025-0042", "Puskesmas Medan Kota",
                               "1271016006250001");
}

std::vector<std::uint8_t> full_birth_event() {
  flatbuffers::FlatBufferBuilder fbb;
  auto b = full_birth(fbb);
  return finish(fbb, ev::Payload::Birth, b.Union(), {"1271011001"});
}

std::vector<std::uint8_t> full_death_event() {
  flatbuffers::FlatBufferBuilder fbb;
  auto d =
      ev::CreateDeathDirect(fbb, "1271011505500003", "Budi Lubis", kWhen, "Medan", "1271011001",
                            "AKM-1271-2025-0007", "RSU Pirngadi", "gagal jantung");
  return finish(fbb, ev::Payload::Death, d.Union(), {"1271011001"});
}

std::vector<std::uint8_t> full_move_event() {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<flatbuffers::String>> niks{fbb.CreateString("1271010101800001"),
                                                             fbb.CreateString("1271014101820002")};
  auto m = ev::CreateMoveDirect(fbb, &niks, "1271012002200001", "1271011001", "1271021001", kWhen,
                                "SKPWNI-2025-0099", ev::MoveType::BetweenKecamatan);
  return finish(fbb, ev::Payload::Move, m.Union(), {"1271011001", "1271021001"});
}

bool contains(const std::vector<std::uint8_t>& bytes, const std::string& text) {
  return std::search(bytes.begin(), bytes.end(), text.begin(), text.end()) != bytes.end();
}

const ev::Event& stripped_event(const std::vector<std::uint8_t>& bytes) {
  const ev::Event* e = verified_event(bytes);
  REQUIRE(e != nullptr);
  return *e;
}

// The envelope is untouched: same id, times, source and regions.
void check_envelope(const std::vector<std::uint8_t>& original,
                    const std::vector<std::uint8_t>& stripped) {
  const ev::Event& a = stripped_event(original);
  const ev::Event& b = stripped_event(stripped);
  CHECK(kolabus::test::id_of(original) == kolabus::test::id_of(stripped));
  CHECK(a.schema_version() == b.schema_version());
  CHECK(a.occurred_at() == b.occurred_at());
  CHECK(a.recorded_at() == b.recorded_at());
  CHECK(flatbuffers::GetString(a.source()) == flatbuffers::GetString(b.source()));
  CHECK(kolabus::test::regions_of(original) == kolabus::test::regions_of(stripped));
  CHECK(a.payload_type() == b.payload_type());
  CHECK(flatbuffers::BufferHasIdentifier(stripped.data(), ev::EventIdentifier()));
}

void check_statistics_birth(const ev::Birth& b) {
  CHECK(b.child_name()->str().empty());  // required: emptied
  CHECK(b.mother_nik()->str().empty());
  CHECK(b.kk_number()->str().empty());
  CHECK(b.father_nik() == nullptr);
  CHECK(b.place_of_birth() == nullptr);
  CHECK(b.birth_certificate_no() == nullptr);
  CHECK(b.reporting_facility() == nullptr);
  CHECK(b.child_nik() == nullptr);
}

}  // namespace

TEST_CASE("FieldProfile: parse errors name the entry") {
  SUBCASE("unknown kind") {
    auto msg = parse_error({"birth.sex", "marriage.date"});
    CHECK(msg.find("\"marriage.date\"") != std::string::npos);
    CHECK(msg.find("unknown kind \"marriage\"") != std::string::npos);
    CHECK(msg.find("birth, death, move") != std::string::npos);
  }
  SUBCASE("unknown field, checked against the schema") {
    auto msg = parse_error({"death.cause"});
    CHECK(msg.find("\"death.cause\"") != std::string::npos);
    CHECK(msg.find("unknown field \"cause\"") != std::string::npos);
    CHECK(msg.find("cause_of_death") != std::string::npos);
    // A field of another kind is not a field of this one.
    CHECK(parse_error({"birth.cause_of_death"}).find("unknown field") != std::string::npos);
  }
  SUBCASE("unknown field in a removal") {
    CHECK(parse_error({"*", "-move.nik"}).find("\"-move.nik\"") != std::string::npos);
  }
  SUBCASE("malformed entries") {
    CHECK(parse_error({""}).find("empty") != std::string::npos);
    CHECK(parse_error({"-"}).find("empty") != std::string::npos);
    CHECK(parse_error({"birth"}).find("\"birth\"") != std::string::npos);
    CHECK(parse_error({"Birth.sex"}).find("unknown kind") != std::string::npos);
  }
  SUBCASE("correction is not a kind of its own") {
    CHECK(parse_error({"correction.reason"}).find("always kept") != std::string::npos);
  }
}

TEST_CASE("FieldProfile: allows, keeps_everything and describe") {
  SUBCASE("everything") {
    auto p = profile({"*"});
    CHECK(p.keeps_everything());
    CHECK(p.describe() == "*");
    CHECK(p.allows(ev::Payload::Death, "cause_of_death"));
  }
  SUBCASE("every kind spelled out is everything too") {
    CHECK(profile({"birth.*", "death.*", "move.*"}).keeps_everything());
  }
  SUBCASE("removals apply after the allows, whatever their position") {
    auto p = profile({"-move.niks", "move.*", "birth.sex"});
    CHECK_FALSE(p.keeps_everything());
    CHECK(p.allows(ev::Payload::Move, "kk_number"));
    CHECK_FALSE(p.allows(ev::Payload::Move, "niks"));
    CHECK(p.allows(ev::Payload::Birth, "sex"));
    CHECK_FALSE(p.allows(ev::Payload::Birth, "child_name"));
    CHECK_FALSE(p.allows(ev::Payload::Death, "died_at"));
    CHECK(p.allows(ev::Payload::Correction, "reason"));
    CHECK(p.describe() ==
          "birth.{sex} death.{} move.{destination_village,kk_number,move_type,moved_at,"
          "origin_village,skpwni_no}");
  }
  SUBCASE("no entries: the envelope only") {
    auto p = profile({});
    CHECK_FALSE(p.keeps_everything());
    CHECK(p.describe() == "birth.{} death.{} move.{}");
  }
}

TEST_CASE("FieldProfile: strip_event \"*\" keeps the bytes identical") {
  auto p = profile({"*"});
  for (const auto& bytes : {full_birth_event(), full_death_event(), full_move_event()}) {
    auto out = strip_event(bytes, p);
    REQUIRE(out.has_value());
    CHECK(*out == bytes);
  }
}

TEST_CASE(
    "FieldProfile: strip_event with a statistics profile removes personal data from each kind") {
  auto p = profile(kStatistics);
  SUBCASE("birth") {
    auto in = full_birth_event();
    auto out = strip_event(in, p);
    REQUIRE_MESSAGE(out.has_value(), out.error().message);
    check_envelope(in, *out);
    const ev::Birth* b = stripped_event(*out).payload_as_Birth();
    REQUIRE(b != nullptr);
    check_statistics_birth(*b);
    CHECK(b->sex() == ev::Sex::Female);
    CHECK(b->born_at() == kWhen);
    CHECK(b->village_code()->str() == "1271011001");
    // Nothing withheld is left anywhere in the bytes.
    for (const char* s : {"Putri", "1271015203950001", "1271012002200001", "AKL-", "Puskesmas",
                          "RSU Pirngadi", "1271016006250001"}) {
      CHECK_MESSAGE(!contains(*out, s), s);
    }
  }
  SUBCASE("death") {
    auto in = full_death_event();
    auto out = strip_event(in, p);
    REQUIRE_MESSAGE(out.has_value(), out.error().message);
    check_envelope(in, *out);
    const ev::Death* d = stripped_event(*out).payload_as_Death();
    REQUIRE(d != nullptr);
    CHECK(d->nik()->str().empty());
    CHECK(d->name()->str().empty());
    CHECK(d->place_of_death() == nullptr);
    CHECK(d->death_certificate_no() == nullptr);
    CHECK(d->reporter() == nullptr);
    CHECK(d->cause_of_death() == nullptr);
    CHECK(d->died_at() == kWhen);
    CHECK(d->village_code()->str() == "1271011001");
    for (const char* s : {"Budi", "1271011505500003", "AKM-", "jantung"}) {
      CHECK_MESSAGE(!contains(*out, s), s);
    }
  }
  SUBCASE("move") {
    auto in = full_move_event();
    auto out = strip_event(in, p);
    REQUIRE_MESSAGE(out.has_value(), out.error().message);
    check_envelope(in, *out);
    const ev::Move* m = stripped_event(*out).payload_as_Move();
    REQUIRE(m != nullptr);
    CHECK(m->niks()->size() == 0);
    CHECK(m->kk_number()->str().empty());
    CHECK(m->skpwni_no() == nullptr);
    CHECK(m->origin_village()->str() == "1271011001");
    CHECK(m->destination_village()->str() == "1271021001");
    CHECK(m->moved_at() == kWhen);
    CHECK(m->move_type() == ev::MoveType::BetweenKecamatan);
    for (const char* s : {"1271010101800001", "1271014101820002", "1271012002200001", "SKPWNI"}) {
      CHECK_MESSAGE(!contains(*out, s), s);
    }
  }
  SUBCASE("numbers and enums not allowed read as their default") {
    auto out = strip_event(full_birth_event(), profile({"birth.child_name"}));
    REQUIRE(out.has_value());
    const ev::Birth* b = stripped_event(*out).payload_as_Birth();
    CHECK(b->child_name()->str() == "Putri Siregar");
    CHECK(b->sex() == ev::Sex::Unknown);
    CHECK(b->born_at() == 0);
    CHECK(b->village_code()->str().empty());
  }
}

TEST_CASE("FieldProfile: strip_event \"-death.cause_of_death\" on \"*\" removes only the cause") {
  auto p = profile({"*", "-death.cause_of_death"});
  CHECK_FALSE(p.keeps_everything());
  auto in = full_death_event();
  auto out = strip_event(in, p);
  REQUIRE(out.has_value());
  check_envelope(in, *out);
  const ev::Death* a = stripped_event(in).payload_as_Death();
  const ev::Death* d = stripped_event(*out).payload_as_Death();
  REQUIRE(d != nullptr);
  CHECK(d->cause_of_death() == nullptr);
  CHECK_FALSE(contains(*out, "jantung"));
  CHECK(d->nik()->str() == a->nik()->str());
  CHECK(d->name()->str() == a->name()->str());
  CHECK(d->died_at() == a->died_at());
  CHECK(d->place_of_death()->str() == a->place_of_death()->str());
  CHECK(d->village_code()->str() == a->village_code()->str());
  CHECK(d->death_certificate_no()->str() == a->death_certificate_no()->str());
  CHECK(d->reporter()->str() == a->reporter()->str());
  // Other kinds pass whole (though rebuilt, every field keeps its value).
  auto birth = strip_event(full_birth_event(), p);
  REQUIRE(birth.has_value());
  CHECK(stripped_event(*birth).payload_as_Birth()->child_name()->str() == "Putri Siregar");
  CHECK(stripped_event(*birth).payload_as_Birth()->child_nik()->str() == "1271016006250001");
}

TEST_CASE(
    "FieldProfile: strip_event of a correction keeps its target and void, strips its corrected "
    "payload and withholds its reason") {
  const EventId target = kolabus::new_uuid_v7();
  const ev::Uuid target_uuid(flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  auto p = profile(kStatistics);
  SUBCASE("a corrected birth") {
    flatbuffers::FlatBufferBuilder fbb;
    auto b = full_birth(fbb);
    auto c = ev::CreateCorrection(fbb, &target_uuid, fbb.CreateString("wrong birth date"), false,
                                  ev::Payload::Birth, b.Union());
    auto in = finish(fbb, ev::Payload::Correction, c.Union(), {"1271011001"});
    auto out = strip_event(in, p);
    REQUIRE_MESSAGE(out.has_value(), out.error().message);
    check_envelope(in, *out);
    const ev::Correction* corr = stripped_event(*out).payload_as_Correction();
    REQUIRE(corr != nullptr);
    CHECK(std::equal(corr->target_id()->bytes()->begin(), corr->target_id()->bytes()->end(),
                     target.bytes.begin()));
    // Free text about the person: a statistics office does not get all of a birth.
    CHECK(corr->reason()->str() == kolabus::schemas::kReasonWithheld);
    CHECK_FALSE(contains(*out, "wrong birth date"));
    CHECK_FALSE(corr->void_());
    const ev::Birth* cb = corr->corrected_as_Birth();
    REQUIRE(cb != nullptr);
    check_statistics_birth(*cb);
    CHECK(cb->sex() == ev::Sex::Female);
    CHECK(cb->born_at() == kWhen);
    CHECK(cb->village_code()->str() == "1271011001");
    CHECK_FALSE(contains(*out, "Putri"));
  }
  SUBCASE("a void") {
    auto in = kolabus::test::make_void(target, {"1271011001"}, kWhen);
    auto out = strip_event(in, p, ev::Payload::Birth);
    REQUIRE(out.has_value());
    check_envelope(in, *out);
    const ev::Correction* corr = stripped_event(*out).payload_as_Correction();
    REQUIRE(corr != nullptr);
    CHECK(corr->void_());
    CHECK(corr->reason()->str() == kolabus::schemas::kReasonWithheld);
    CHECK(corr->corrected_type() == ev::Payload::NONE);
  }
}

TEST_CASE("FieldProfile: a death's correction reason goes only where the cause of death goes") {
  const EventId target = kolabus::new_uuid_v7();
  const ev::Uuid target_uuid(flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  const std::string reason = "cause of death corrected to stroke for NIK 1271016006250001";
  flatbuffers::FlatBufferBuilder fbb;
  auto d = ev::CreateCorrection(fbb, &target_uuid, fbb.CreateString(reason), true);
  auto in = finish(fbb, ev::Payload::Correction, d.Union(), {"1271011001"});
  SUBCASE("a kelurahan without the cause: withheld, live and replayed alike") {
    auto out = strip_event(in, profile({"*", "-death.cause_of_death"}), ev::Payload::Death);
    REQUIRE(out.has_value());
    CHECK_FALSE(contains(*out, "cause of death"));
    CHECK_FALSE(contains(*out, "1271016006250001"));
    // Its other kinds are whole: a birth's correction reason reaches it.
    auto birth = strip_event(in, profile({"*", "-death.cause_of_death"}), ev::Payload::Birth);
    REQUIRE(birth.has_value());
    CHECK(contains(*birth, "cause of death corrected"));
  }
  SUBCASE("the void's kind unknown: withheld from any restricted profile") {
    auto out = strip_event(in, profile({"*", "-death.cause_of_death"}));
    REQUIRE(out.has_value());
    CHECK_FALSE(contains(*out, "cause of death"));
  }
  SUBCASE("a profile with every field: verbatim") {
    auto out = strip_event(in, profile({"*"}), ev::Payload::Death);
    REQUIRE(out.has_value());
    CHECK(stripped_event(*out).payload_as_Correction()->reason()->str() == reason);
  }
}

TEST_CASE(
    "FieldProfile: strip_event with kinds this build does not know are an error and never an "
    "abort") {
  const auto stats = profile(kStatistics);
  const auto all = profile({"*"});
  SUBCASE("unknown payload kind") {
    flatbuffers::FlatBufferBuilder fbb;
    auto b = full_birth(fbb);
    auto in = finish(fbb, static_cast<ev::Payload>(9), b.Union(), {"1271011001"});
    for (const auto* pr : {&stats, &all}) {
      auto out = strip_event(in, *pr);
      REQUIRE_FALSE(out.has_value());
      CHECK(out.error().code == Errc::kInvalidArgument);
      CHECK(out.error().message.find("cannot minimise") != std::string::npos);
    }
  }
  SUBCASE("unknown corrected kind") {
    flatbuffers::FlatBufferBuilder fbb;
    const EventId target = kolabus::new_uuid_v7();
    const ev::Uuid t(flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
    auto b = full_birth(fbb);
    auto c = ev::CreateCorrection(fbb, &t, fbb.CreateString("x"), false,
                                  static_cast<ev::Payload>(9), b.Union());
    auto in = finish(fbb, ev::Payload::Correction, c.Union(), {"1271011001"});
    CHECK_FALSE(strip_event(in, stats).has_value());
  }
  SUBCASE("union value with type NONE (would abort GenerateText)") {
    flatbuffers::FlatBufferBuilder fbb;
    auto b = full_birth(fbb);
    auto in = finish(fbb, ev::Payload::NONE, b.Union(), {"1271011001"});
    CHECK_FALSE(strip_event(in, stats).has_value());
  }
  SUBCASE("garbage") {
    std::vector<std::uint8_t> junk(64, 0xab);
    CHECK_FALSE(strip_event(junk, stats).has_value());
    CHECK_FALSE(strip_event({}, stats).has_value());
  }
}

TEST_CASE("FieldProfile: strip_event over generated events all verify after stripping") {
  const auto& regions = RegionTable::embedded();
  kolabus::tools::EventGenerator gen(regions, {7, "1271", kWhen});
  const auto stats = profile(kStatistics);
  const auto no_cause = profile({"*", "-death.cause_of_death"});
  constexpr int kEvents = 300;
  std::vector<std::vector<std::uint8_t>> events;
  for (int i = 0; i < kEvents; ++i) events.push_back(gen.next());

  int kinds[4] = {0, 0, 0, 0};
  for (const auto& in : events) {
    auto out = strip_event(in, stats);
    REQUIRE_MESSAGE(out.has_value(), out.error().message);
    check_envelope(in, *out);
    const ev::Event& e = stripped_event(*out);
    switch (e.payload_type()) {
      case ev::Payload::Birth:
        check_statistics_birth(*e.payload_as_Birth());
        CHECK(e.payload_as_Birth()->born_at() == stripped_event(in).payload_as_Birth()->born_at());
        ++kinds[0];
        break;
      case ev::Payload::Death:
        CHECK(e.payload_as_Death()->name()->str().empty());
        CHECK(e.payload_as_Death()->cause_of_death() == nullptr);
        CHECK(e.payload_as_Death()->village_code()->str() ==
              stripped_event(in).payload_as_Death()->village_code()->str());
        ++kinds[1];
        break;
      case ev::Payload::Move:
        CHECK(e.payload_as_Move()->niks()->size() == 0);
        CHECK(e.payload_as_Move()->move_type() ==
              stripped_event(in).payload_as_Move()->move_type());
        ++kinds[2];
        break;
      case ev::Payload::Correction:
      case ev::Payload::NONE:
        ++kinds[3];
        break;
    }
    auto whole = strip_event(in, no_cause);
    REQUIRE(whole.has_value());
    check_envelope(in, *whole);
  }
  CHECK(kinds[0] > 0);
  CHECK(kinds[1] > 0);
  CHECK(kinds[2] > 0);

  // A rough figure for the delivery path (no assertion: shared, noisy machines).
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t bytes = 0;
  for (int round = 0; round < 3; ++round) {
    for (const auto& in : events) bytes += strip_event(in, stats)->size();
  }
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count() /
      (3 * kEvents);
  MESSAGE("strip_event (statistics profile): ~" << ns << " ns/event over " << 3 * kEvents
                                                << " events, " << bytes << " bytes out");
}
