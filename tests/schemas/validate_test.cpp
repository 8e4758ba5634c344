#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <schemas/nik.h>
#include <schemas/protocol_generated.h>
#include <schemas/validate.h>

namespace ev = kolabus::events;
using kolabus::protocol::ErrorCode;
using namespace kolabus::schemas;

namespace {

const kolabus::TimeMs kHour = 3'600'000;
const kolabus::TimeMs kDay = 24 * kHour;
const kolabus::TimeMs kNow = to_epoch_ms({2025, 7, 1}) + 12 * kHour;  // 2025-07-01 12:00Z

// Real Medan villages (data/wilayah/medan.csv) and one outside Medan.
constexpr const char* kPasarBaru = "1271011001";   // Medan Kota
constexpr const char* kPusatPasar = "1271011002";  // Medan Kota
constexpr const char* kLalang = "1271021001";      // Medan Sunggal
constexpr const char* kLubukPakam = "1207281007";  // Deli Serdang, same province
constexpr const char* kBakongan = "1101012001";    // Aceh Selatan, another province

constexpr const char* kMotherNik = "1271015501900001";    // woman, 1990-01-15
constexpr const char* kFatherNik = "1271011203880002";    // man, 1988-03-12
constexpr const char* kChildNik = "1271012006250003";     // boy, 2025-06-20
constexpr const char* kDeceasedNik = "1271012008500005";  // man, 1950-08-20
constexpr const char* kKk = "1271011506200004";           // issued 2020-06-15

ev::Uuid uuid(std::uint8_t fill) {
  std::array<std::uint8_t, 16> b{};
  b.fill(fill);
  return ev::Uuid(flatbuffers::span<const std::uint8_t, 16>(b.data(), 16));
}

ev::BirthT valid_birth() {
  ev::BirthT b;
  b.child_name = "Budi Santoso Siregar";
  b.sex = ev::Sex::Male;
  b.born_at = to_epoch_ms({2025, 6, 20}) + 3 * kHour + 30 * 60'000;
  b.place_of_birth = "RSU Pirngadi";
  b.village_code = kPasarBaru;
  b.mother_nik = kMotherNik;
  b.father_nik = kFatherNik;
  b.kk_number = kKk;
  b.birth_certificate_no = "1271-LU-20062025-0001";
  b.reporting_facility = "Puskesmas Pasar Merah";
  b.child_nik = kChildNik;
  return b;
}

ev::EventT envelope(std::vector<std::string> regions, kolabus::TimeMs occurred) {
  ev::EventT e;
  e.id = std::make_unique<ev::Uuid>(uuid(0x11));
  e.occurred_at = occurred;
  e.recorded_at = occurred + 2 * kDay;
  e.regions = std::move(regions);
  return e;
}

ev::EventT valid_event(ev::Payload kind) {
  switch (kind) {
    case ev::Payload::Birth: {
      auto b = valid_birth();
      auto e = envelope({kPasarBaru}, b.born_at);
      e.payload.Set(std::move(b));
      return e;
    }
    case ev::Payload::Death: {
      ev::DeathT d;
      d.nik = kDeceasedNik;
      d.name = "Ahmad Siregar";
      d.died_at = to_epoch_ms({2025, 6, 1}) + 10 * kHour;
      d.place_of_death = "rumah";
      d.village_code = kLalang;
      d.death_certificate_no = "1271-KM-01062025-0007";
      d.reporter = "Kepala Lingkungan II";
      d.cause_of_death = "sakit tua";
      auto e = envelope({kLalang}, d.died_at);
      e.payload.Set(std::move(d));
      return e;
    }
    case ev::Payload::Move: {
      ev::MoveT m;
      m.niks = {kMotherNik, kFatherNik, kChildNik};
      m.kk_number = kKk;
      m.origin_village = kPasarBaru;
      m.destination_village = kLalang;
      m.moved_at = to_epoch_ms({2025, 6, 28});
      m.skpwni_no = "SKPWNI/1271/2025/0042";
      m.move_type = ev::MoveType::BetweenKecamatan;
      auto e = envelope({kLalang, kPasarBaru}, m.moved_at);
      e.payload.Set(std::move(m));
      return e;
    }
    case ev::Payload::Correction: {
      ev::CorrectionT c;
      c.target_id = std::make_unique<ev::Uuid>(uuid(0x22));
      c.reason = "child's name misspelt on the first report";
      c.corrected.Set(valid_birth());
      auto e = envelope({kPasarBaru}, to_epoch_ms({2025, 6, 29}));
      e.payload.Set(std::move(c));
      return e;
    }
    case ev::Payload::NONE:
      break;
  }
  FAIL("no such kind");
  return {};
}

std::vector<std::uint8_t> pack(const ev::EventT& e, bool identifier = true) {
  flatbuffers::FlatBufferBuilder fbb;
  auto root = ev::Event::Pack(fbb, &e);
  if (identifier) {
    ev::FinishEventBuffer(fbb, root);
  } else {
    fbb.Finish(root);
  }
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::optional<Violation> validate(const std::vector<std::uint8_t>& bytes) {
  return validate_event(bytes, ValidationContext{RegionTable::embedded(), kNow});
}

ev::BirthT& birth(ev::EventT& e) { return *e.payload.AsBirth(); }
ev::DeathT& death(ev::EventT& e) { return *e.payload.AsDeath(); }
ev::MoveT& move(ev::EventT& e) { return *e.payload.AsMove(); }
ev::CorrectionT& correction(ev::EventT& e) { return *e.payload.AsCorrection(); }
ev::BirthT& corrected_birth(ev::EventT& e) { return *correction(e).corrected.AsBirth(); }

struct Case {
  const char* name;
  ev::Payload kind;
  std::function<void(ev::EventT&)> mutate;
  ErrorCode code;
  const char* field;
};

std::string long_text(std::size_t n) { return std::string(n, 'a'); }

}  // namespace

TEST_CASE("validate_event: one valid event of each kind") {
  for (auto kind :
       {ev::Payload::Birth, ev::Payload::Death, ev::Payload::Move, ev::Payload::Correction}) {
    CAPTURE(kind_name(kind));
    const auto bytes = pack(valid_event(kind));
    const auto v = validate(bytes);
    CHECK_MESSAGE(!v, (v ? v->message : ""));
    // Without the file identifier too.
    CHECK_FALSE(validate(pack(valid_event(kind), false)));
    const ev::Event* e = verified_event(bytes);
    REQUIRE(e != nullptr);
    CHECK(e->payload_type() == kind);
  }
}

TEST_CASE("validate_event: valid variants") {
  std::vector<std::pair<const char*, std::function<void(ev::EventT&)>>> variants;
  auto check = [](ev::Payload kind, const std::function<void(ev::EventT&)>& f) {
    auto e = valid_event(kind);
    f(e);
    return validate(pack(e));
  };
  SUBCASE("birth without the optional fields") {
    auto v = check(ev::Payload::Birth, [](ev::EventT& e) {
      auto& b = birth(e);
      b.father_nik.clear();
      b.child_nik.clear();
      b.place_of_birth.clear();
      b.birth_certificate_no.clear();
      b.reporting_facility.clear();
    });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  SUBCASE("birth at 20:00 UTC: the child's NIK shows the local (WIB) date") {
    auto v = check(ev::Payload::Birth, [](ev::EventT& e) {
      birth(e).born_at = to_epoch_ms({2025, 6, 19}) + 20 * kHour;  // 2025-06-20 03:00 WIB
      e.occurred_at = birth(e).born_at;
    });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  SUBCASE("names in UTF-8") {
    auto v = check(ev::Payload::Death,
                   [](ev::EventT& e) { death(e).name = "Nurhayati Br. Tarigan — 𝔸"; });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  SUBCASE("timestamps within the clock skew") {
    auto v = check(ev::Payload::Death, [](ev::EventT& e) { e.recorded_at = kNow + 4 * 60'000; });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  struct MoveCase {
    const char* to;
    ev::MoveType type;
  };
  for (auto mc : {MoveCase{kPusatPasar, ev::MoveType::WithinKecamatan},
                  MoveCase{kLubukPakam, ev::MoveType::BetweenCities},
                  MoveCase{kBakongan, ev::MoveType::BetweenProvinces}}) {
    CAPTURE(mc.to);
    auto v = check(ev::Payload::Move, [&](ev::EventT& e) {
      move(e).destination_village = mc.to;
      move(e).move_type = mc.type;
      e.regions = {kPasarBaru, mc.to};
    });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  SUBCASE("a void correction") {
    auto v = check(ev::Payload::Correction, [](ev::EventT& e) {
      correction(e).void_ = true;
      correction(e).corrected.Reset();
    });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
  SUBCASE("a correction's regions may name more than the corrected payload") {
    auto v = check(ev::Payload::Correction, [](ev::EventT& e) {
      e.regions = {kPasarBaru, kLalang};
    });
    CHECK_MESSAGE(!v, (v ? v->message : ""));
  }
}

TEST_CASE("validate_event: each rule, broken alone") {
  using P = ev::Payload;
  const Case cases[] = {
      // Envelope
      {"schema_version 2", P::Birth, [](ev::EventT& e) { e.schema_version = 2; },
       ErrorCode::InvalidValue, "schema_version"},
      {"source set by the publisher", P::Birth, [](ev::EventT& e) { e.source = "dukcapil-medan"; },
       ErrorCode::InvalidValue, "source"},
      {"occurred_at absent", P::Birth, [](ev::EventT& e) { e.occurred_at = 0; },
       ErrorCode::MissingField, "occurred_at"},
      {"recorded_at absent", P::Birth, [](ev::EventT& e) { e.recorded_at = 0; },
       ErrorCode::MissingField, "recorded_at"},
      {"occurred_at in the future", P::Death,
       [](ev::EventT& e) {
         e.occurred_at = kNow + kHour;
         e.recorded_at = kNow + kHour;
       },
       ErrorCode::InvalidDate, "occurred_at"},
      {"occurred_at before 1900", P::Death,
       [](ev::EventT& e) { e.occurred_at = to_epoch_ms({1899, 12, 31}); }, ErrorCode::InvalidDate,
       "occurred_at"},
      {"recorded_at in the future beyond the skew", P::Death,
       [](ev::EventT& e) { e.recorded_at = kNow + 6 * 60'000; }, ErrorCode::InvalidDate,
       "recorded_at"},
      {"recorded before it occurred", P::Death,
       [](ev::EventT& e) { e.recorded_at = e.occurred_at - 1; }, ErrorCode::InvalidDate,
       "recorded_at"},
      {"regions empty", P::Birth, [](ev::EventT& e) { e.regions.clear(); },
       ErrorCode::MissingField, "regions"},
      {"regions: unknown village", P::Birth, [](ev::EventT& e) { e.regions = {"1271011999"}; },
       ErrorCode::UnknownRegion, "regions[0]"},
      {"regions: a district, not a village", P::Birth,
       [](ev::EventT& e) { e.regions = {kPasarBaru, "127101"}; }, ErrorCode::UnknownRegion,
       "regions[1]"},
      {"regions: duplicate", P::Move,
       [](ev::EventT& e) { e.regions = {kPasarBaru, kLalang, kPasarBaru}; },
       ErrorCode::InvalidRegions, "regions[2]"},
      {"regions: more than the birth names", P::Birth,
       [](ev::EventT& e) { e.regions = {kPasarBaru, kLalang}; }, ErrorCode::InvalidRegions,
       "regions"},
      {"regions: not the birth's village", P::Birth, [](ev::EventT& e) { e.regions = {kLalang}; },
       ErrorCode::InvalidRegions, "regions"},
      // Birth
      {"child_name empty", P::Birth, [](ev::EventT& e) { birth(e).child_name.clear(); },
       ErrorCode::MissingField, "payload.child_name"},
      {"child_name too long", P::Birth, [](ev::EventT& e) { birth(e).child_name = long_text(201); },
       ErrorCode::InvalidValue, "payload.child_name"},
      {"child_name with a newline", P::Birth,
       [](ev::EventT& e) { birth(e).child_name = "Budi\nSantoso"; }, ErrorCode::InvalidValue,
       "payload.child_name"},
      {"child_name with a C1 control", P::Birth,
       [](ev::EventT& e) { birth(e).child_name = "Budi\xC2\x85"; }, ErrorCode::InvalidValue,
       "payload.child_name"},
      {"child_name invalid UTF-8 (overlong)", P::Birth,
       [](ev::EventT& e) { birth(e).child_name = "Budi\xC0\xAF"; }, ErrorCode::InvalidValue,
       "payload.child_name"},
      {"child_name invalid UTF-8 (surrogate)", P::Birth,
       [](ev::EventT& e) { birth(e).child_name = "Budi\xED\xA0\x80"; }, ErrorCode::InvalidValue,
       "payload.child_name"},
      {"child_name invalid UTF-8 (truncated)", P::Birth,
       [](ev::EventT& e) { birth(e).child_name = "Budi\xE2\x82"; }, ErrorCode::InvalidValue,
       "payload.child_name"},
      {"sex Unknown", P::Birth, [](ev::EventT& e) { birth(e).sex = ev::Sex::Unknown; },
       ErrorCode::InvalidValue, "payload.sex"},
      {"sex out of range", P::Birth, [](ev::EventT& e) { birth(e).sex = static_cast<ev::Sex>(7); },
       ErrorCode::InvalidValue, "payload.sex"},
      {"born_at absent", P::Birth, [](ev::EventT& e) { birth(e).born_at = 0; },
       ErrorCode::MissingField, "payload.born_at"},
      {"born_at in the future", P::Birth, [](ev::EventT& e) { birth(e).born_at = kNow + kDay; },
       ErrorCode::InvalidDate, "payload.born_at"},
      {"born_at before 1900", P::Birth,
       [](ev::EventT& e) { birth(e).born_at = to_epoch_ms({1899, 1, 1}); }, ErrorCode::InvalidDate,
       "payload.born_at"},
      {"place_of_birth too long", P::Birth,
       [](ev::EventT& e) { birth(e).place_of_birth = long_text(201); }, ErrorCode::InvalidValue,
       "payload.place_of_birth"},
      {"village_code unknown", P::Birth, [](ev::EventT& e) { birth(e).village_code = "1271011999"; },
       ErrorCode::UnknownRegion, "payload.village_code"},
      {"mother_nik empty", P::Birth, [](ev::EventT& e) { birth(e).mother_nik.clear(); },
       ErrorCode::MissingField, "payload.mother_nik"},
      {"mother_nik is a man's", P::Birth, [](ev::EventT& e) { birth(e).mother_nik = kFatherNik; },
       ErrorCode::InvalidNik, "payload.mother_nik"},
      {"mother_nik 15 digits", P::Birth,
       [](ev::EventT& e) { birth(e).mother_nik = "127101550190000"; }, ErrorCode::InvalidNik,
       "payload.mother_nik"},
      {"father_nik is a woman's", P::Birth, [](ev::EventT& e) { birth(e).father_nik = kMotherNik; },
       ErrorCode::InvalidNik, "payload.father_nik"},
      {"father_nik bad month", P::Birth,
       [](ev::EventT& e) { birth(e).father_nik = "1271011213880002"; }, ErrorCode::InvalidNik,
       "payload.father_nik"},
      {"kk_number serial 0000", P::Birth,
       [](ev::EventT& e) { birth(e).kk_number = "1271011506200000"; }, ErrorCode::InvalidKk,
       "payload.kk_number"},
      {"kk_number empty", P::Birth, [](ev::EventT& e) { birth(e).kk_number.clear(); },
       ErrorCode::MissingField, "payload.kk_number"},
      {"birth_certificate_no with a tab", P::Birth,
       [](ev::EventT& e) { birth(e).birth_certificate_no = "1271\t01"; }, ErrorCode::InvalidValue,
       "payload.birth_certificate_no"},
      {"reporting_facility too long", P::Birth,
       [](ev::EventT& e) { birth(e).reporting_facility = long_text(201); },
       ErrorCode::InvalidValue, "payload.reporting_facility"},
      {"child_nik with another birth date", P::Birth,
       [](ev::EventT& e) { birth(e).child_nik = "1271012106250003"; }, ErrorCode::InvalidNik,
       "payload.child_nik"},
      {"child_nik a girl's for a boy", P::Birth,
       [](ev::EventT& e) { birth(e).child_nik = "1271016006250003"; }, ErrorCode::InvalidNik,
       "payload.child_nik"},
      {"mother under 10 at the birth", P::Birth,
       [](ev::EventT& e) { birth(e).mother_nik = "1271015501180001"; }, ErrorCode::InvalidDate,
       "payload.born_at"},
      {"father under 10 at the birth", P::Birth,
       [](ev::EventT& e) { birth(e).father_nik = "1271011203200002"; }, ErrorCode::InvalidDate,
       "payload.born_at"},
      // Death
      {"nik province 00", P::Death, [](ev::EventT& e) { death(e).nik = "0071012008500005"; },
       ErrorCode::InvalidNik, "payload.nik"},
      {"nik with a letter", P::Death, [](ev::EventT& e) { death(e).nik = "127101200850000X"; },
       ErrorCode::InvalidNik, "payload.nik"},
      {"name empty", P::Death, [](ev::EventT& e) { death(e).name.clear(); },
       ErrorCode::MissingField, "payload.name"},
      {"died_at absent", P::Death, [](ev::EventT& e) { death(e).died_at = 0; },
       ErrorCode::MissingField, "payload.died_at"},
      {"died_at in the future", P::Death, [](ev::EventT& e) { death(e).died_at = kNow + kDay; },
       ErrorCode::InvalidDate, "payload.died_at"},
      {"death before birth", P::Death,
       [](ev::EventT& e) { death(e).died_at = to_epoch_ms({1950, 8, 18}); },
       ErrorCode::InvalidDate, "payload.died_at"},
      {"cause_of_death too long", P::Death,
       [](ev::EventT& e) { death(e).cause_of_death = long_text(201); }, ErrorCode::InvalidValue,
       "payload.cause_of_death"},
      {"village_code a regency", P::Death, [](ev::EventT& e) { death(e).village_code = "1271"; },
       ErrorCode::UnknownRegion, "payload.village_code"},
      {"death regions another village", P::Death, [](ev::EventT& e) { e.regions = {kPasarBaru}; },
       ErrorCode::InvalidRegions, "regions"},
      // Move
      {"niks empty", P::Move, [](ev::EventT& e) { move(e).niks.clear(); },
       ErrorCode::MissingField, "payload.niks"},
      {"niks[1] invalid", P::Move, [](ev::EventT& e) { move(e).niks[1] = "1271013503880002"; },
       ErrorCode::InvalidNik, "payload.niks[1]"},
      {"niks[2] duplicate", P::Move, [](ev::EventT& e) { move(e).niks[2] = kMotherNik; },
       ErrorCode::InvalidValue, "payload.niks[2]"},
      {"more than 1000 niks", P::Move,
       [](ev::EventT& e) {
         move(e).niks.clear();
         for (int i = 1; i <= 1001; ++i) {
           char nik[17];
           std::snprintf(nik, sizeof nik, "127101120388%04d", i % 10000);
           move(e).niks.emplace_back(nik);
         }
       },
       ErrorCode::InvalidValue, "payload.niks"},
      {"kk_number bad day", P::Move, [](ev::EventT& e) { move(e).kk_number = "1271014506200004"; },
       ErrorCode::InvalidKk, "payload.kk_number"},
      {"destination unknown", P::Move,
       [](ev::EventT& e) { move(e).destination_village = "1271021999"; }, ErrorCode::UnknownRegion,
       "payload.destination_village"},
      {"origin empty", P::Move, [](ev::EventT& e) { move(e).origin_village.clear(); },
       ErrorCode::MissingField, "payload.origin_village"},
      {"origin equals destination", P::Move,
       [](ev::EventT& e) {
         move(e).destination_village = kPasarBaru;
         e.regions = {kPasarBaru};
       },
       ErrorCode::InvalidValue, "payload.destination_village"},
      {"moved_at absent", P::Move, [](ev::EventT& e) { move(e).moved_at = 0; },
       ErrorCode::MissingField, "payload.moved_at"},
      {"skpwni_no with a control character", P::Move,
       [](ev::EventT& e) { move(e).skpwni_no = std::string("SKP\x7fWNI"); },
       ErrorCode::InvalidValue, "payload.skpwni_no"},
      {"move_type Unspecified", P::Move,
       [](ev::EventT& e) { move(e).move_type = ev::MoveType::Unspecified; },
       ErrorCode::InvalidValue, "payload.move_type"},
      {"move_type out of range", P::Move,
       [](ev::EventT& e) { move(e).move_type = static_cast<ev::MoveType>(9); },
       ErrorCode::InvalidValue, "payload.move_type"},
      {"move_type does not match the codes", P::Move,
       [](ev::EventT& e) { move(e).move_type = ev::MoveType::WithinKecamatan; },
       ErrorCode::InvalidValue, "payload.move_type"},
      {"move regions only the origin", P::Move, [](ev::EventT& e) { e.regions = {kPasarBaru}; },
       ErrorCode::InvalidRegions, "regions"},
      // Correction
      {"target_id is its own id", P::Correction,
       [](ev::EventT& e) { *correction(e).target_id = *e.id; }, ErrorCode::InvalidCorrection,
       "payload.target_id"},
      {"reason empty", P::Correction, [](ev::EventT& e) { correction(e).reason.clear(); },
       ErrorCode::MissingField, "payload.reason"},
      {"reason too long", P::Correction,
       [](ev::EventT& e) { correction(e).reason = long_text(1001); }, ErrorCode::InvalidValue,
       "payload.reason"},
      {"void with a corrected payload", P::Correction,
       [](ev::EventT& e) { correction(e).void_ = true; }, ErrorCode::InvalidCorrection,
       "payload.corrected"},
      {"not void, no corrected payload", P::Correction,
       [](ev::EventT& e) { correction(e).corrected.Reset(); }, ErrorCode::InvalidCorrection,
       "payload.corrected"},
      {"a correction of a correction", P::Correction,
       [](ev::EventT& e) {
         ev::CorrectionT inner;
         inner.target_id = std::make_unique<ev::Uuid>(uuid(0x33));
         inner.reason = "nested";
         inner.void_ = true;
         correction(e).corrected.Set(std::move(inner));
       },
       ErrorCode::InvalidCorrection, "payload.corrected"},
      {"corrected child_name empty", P::Correction,
       [](ev::EventT& e) { corrected_birth(e).child_name.clear(); }, ErrorCode::MissingField,
       "payload.corrected.child_name"},
      {"corrected mother_nik a man's", P::Correction,
       [](ev::EventT& e) { corrected_birth(e).mother_nik = kFatherNik; }, ErrorCode::InvalidNik,
       "payload.corrected.mother_nik"},
      {"corrected born_at in the future", P::Correction,
       [](ev::EventT& e) { corrected_birth(e).born_at = kNow + kDay; }, ErrorCode::InvalidDate,
       "payload.corrected.born_at"},
      {"corrected village not in regions", P::Correction,
       [](ev::EventT& e) { corrected_birth(e).village_code = kLalang; },
       ErrorCode::InvalidRegions, "regions"},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    auto e = valid_event(c.kind);
    c.mutate(e);
    const auto v = validate(pack(e));
    REQUIRE_MESSAGE(v.has_value(), c.name);
    CHECK_MESSAGE(v->code == c.code, v->message);
    CHECK_MESSAGE(v->field == c.field, v->message);
    // The message starts with the field and says something.
    CHECK(v->message.rfind(std::string(c.field) + ": ", 0) == 0);
    CHECK(v->message.size() > std::string(c.field).size() + 10);
  }
}

TEST_CASE("validate_event: messages name the rule") {
  auto message = [](ev::Payload kind, const std::function<void(ev::EventT&)>& f) {
    auto e = valid_event(kind);
    f(e);
    auto v = validate(pack(e));
    REQUIRE(v.has_value());
    return v->message;
  };
  CHECK(message(ev::Payload::Birth, [](ev::EventT& e) { birth(e).mother_nik = kFatherNik; }) ==
        "payload.mother_nik: day part 12 is a man's; a mother's NIK must have 40 added to the day");
  CHECK(message(ev::Payload::Birth, [](ev::EventT& e) { e.regions = {"1271011999"}; }) ==
        "regions[0]: 1271011999 is not a village code in the Kemendagri list (edition 2025)");
  CHECK(message(ev::Payload::Birth, [](ev::EventT& e) { e.source = "x"; }) ==
        "source: set by the broker from the authenticated connection; a publisher must leave it "
        "empty");
  CHECK(message(ev::Payload::Move, [](ev::EventT& e) {
          e.regions = {kPasarBaru};
        }).find("expected [1271011001, 1271021001]") != std::string::npos);
  CHECK(message(ev::Payload::Death, [](ev::EventT& e) {
          death(e).died_at = to_epoch_ms({1950, 8, 18});
        }).find("death before birth") != std::string::npos);
  CHECK(message(ev::Payload::Birth, [](ev::EventT& e) {
          e.schema_version = 3;
        }).find("understands version 1") != std::string::npos);
  CHECK(message(ev::Payload::Birth, [](ev::EventT& e) {
          birth(e).mother_nik = "1271015501180001";
        }).find("10 years") != std::string::npos);
}

TEST_CASE("validate_event: a repeat names the first earlier copy, in short and long lists") {
  // Lists of up to 16 are scanned, longer ones hashed: both must answer alike.
  for (const int n : {3, 16, 17, 40}) {
    CAPTURE(n);
    auto e = valid_event(ev::Payload::Move);
    auto& niks = move(e).niks;
    niks.clear();
    for (int i = 1; i <= n; ++i) {
      char nik[32];
      std::snprintf(nik, sizeof nik, "127101120388%04d", i);
      niks.push_back(nik);
    }
    niks[n - 1] = niks[1];
    auto v = validate(pack(e));
    REQUIRE(v.has_value());
    CHECK(v->code == ErrorCode::InvalidValue);
    const std::string field = "payload.niks[" + std::to_string(n - 1) + "]";
    CHECK(v->field == field);
    CHECK(v->message == field + ": duplicate of payload.niks[1]");
  }
  std::vector<std::string> villages;
  for (const Region& r : RegionTable::embedded().all()) {
    if (r.level == RegionLevel::kVillage && r.code.substr(0, 4) == "1271") {
      villages.emplace_back(r.code);
    }
  }
  REQUIRE(villages.size() >= 40);
  for (const int n : {3, 16, 17, 40}) {
    CAPTURE(n);
    auto e = valid_event(ev::Payload::Birth);
    e.regions.assign(villages.begin(), villages.begin() + n);
    e.regions[n - 1] = e.regions[2 % (n - 1)];
    e.regions.push_back(villages[n]);  // after the repeat: never reached
    auto v = validate(pack(e));
    REQUIRE(v.has_value());
    CHECK(v->code == ErrorCode::InvalidRegions);
    const std::string field = "regions[" + std::to_string(n - 1) + "]";
    CHECK(v->message == field + ": duplicate of regions[" + std::to_string(2 % (n - 1)) + "]");
  }
}

TEST_CASE("validate_event: hostile bytes never abort") {
  SUBCASE("empty and garbage") {
    CHECK(validate({})->code == ErrorCode::MalformedEvent);
    std::vector<std::uint8_t> garbage(300);
    std::uint32_t x = 12345;
    for (auto& b : garbage) {
      x = x * 1103515245 + 12345;
      b = static_cast<std::uint8_t>(x >> 16);
    }
    CHECK(validate(garbage)->code == ErrorCode::MalformedEvent);
    CHECK(verified_event(garbage) == nullptr);
  }
  SUBCASE("every truncation of a valid event") {
    for (auto kind : {ev::Payload::Birth, ev::Payload::Move, ev::Payload::Correction}) {
      const auto bytes = pack(valid_event(kind));
      for (std::size_t n = 0; n < bytes.size(); ++n) {
        std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
        const auto v = validate(cut);
        CAPTURE(n);
        if (v) {
          CHECK(v->code == ErrorCode::MalformedEvent);
        } else {
          CHECK(n + 8 > bytes.size());  // only the builder's trailing alignment padding was cut
        }
      }
    }
  }
  SUBCASE("every single-byte flip of a valid event") {
    const auto bytes = pack(valid_event(ev::Payload::Correction));
    int refused = 0;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      for (std::uint8_t flip : {0x01, 0x80, 0xff}) {
        auto mutated = bytes;
        mutated[i] ^= flip;
        if (validate(mutated)) ++refused;  // must return, whatever it says
      }
    }
    CHECK(refused > 0);
  }
  SUBCASE("random multi-byte corruption (deterministic seed)") {
    std::uint64_t x = 0x9E3779B97F4A7C15ULL;
    auto next = [&x] {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return x;
    };
    for (auto kind :
         {ev::Payload::Birth, ev::Payload::Death, ev::Payload::Move, ev::Payload::Correction}) {
      const auto bytes = pack(valid_event(kind));
      for (int round = 0; round < 2000; ++round) {
        auto mutated = bytes;
        const int flips = 1 + static_cast<int>(next() % 4);
        for (int k = 0; k < flips; ++k) {
          mutated[next() % mutated.size()] = static_cast<std::uint8_t>(next());
        }
        (void)validate(mutated);  // must return; ASan/UBSan builds check the reads
        (void)verified_event(mutated);
      }
    }
  }
}

namespace {

// Hand-built buffers, for shapes the generated builders refuse to make.
struct Raw {
  flatbuffers::FlatBufferBuilder fbb;

  flatbuffers::Offset<void> birth_table(bool with_mother = true) {
    auto name = fbb.CreateString("Budi");
    auto village = fbb.CreateString(kPasarBaru);
    auto mother = fbb.CreateString(kMotherNik);
    auto kk = fbb.CreateString(kKk);
    const auto start = fbb.StartTable();
    fbb.AddOffset(ev::Birth::VT_CHILD_NAME, name);
    fbb.AddElement<std::int8_t>(ev::Birth::VT_SEX, 1, 0);
    fbb.AddElement<std::int64_t>(ev::Birth::VT_BORN_AT, to_epoch_ms({2025, 6, 20}), 0);
    fbb.AddOffset(ev::Birth::VT_VILLAGE_CODE, village);
    if (with_mother) fbb.AddOffset(ev::Birth::VT_MOTHER_NIK, mother);
    fbb.AddOffset(ev::Birth::VT_KK_NUMBER, kk);
    return flatbuffers::Offset<void>(fbb.EndTable(start));
  }

  // A correction whose corrected union is (type, value); value may be null.
  flatbuffers::Offset<void> correction_table(std::uint8_t type, flatbuffers::Offset<void> value) {
    auto reason = fbb.CreateString("why");
    const auto start = fbb.StartTable();
    const auto target = uuid(0x22);
    fbb.AddStruct(ev::Correction::VT_TARGET_ID, &target);
    fbb.AddOffset(ev::Correction::VT_REASON, reason);
    if (type != 0) fbb.AddElement<std::uint8_t>(ev::Correction::VT_CORRECTED_TYPE, type, 0);
    if (!value.IsNull()) fbb.AddOffset(ev::Correction::VT_CORRECTED, value);
    return flatbuffers::Offset<void>(fbb.EndTable(start));
  }

  std::vector<std::uint8_t> event(std::uint8_t type, flatbuffers::Offset<void> value,
                                  bool with_id = true, bool with_regions = true) {
    auto regions = fbb.CreateVectorOfStrings(std::vector<std::string>{kPasarBaru});
    const auto start = fbb.StartTable();
    const auto id = uuid(0x11);
    if (with_id) fbb.AddStruct(ev::Event::VT_ID, &id);
    fbb.AddElement<std::int64_t>(ev::Event::VT_OCCURRED_AT, to_epoch_ms({2025, 6, 20}), 0);
    fbb.AddElement<std::int64_t>(ev::Event::VT_RECORDED_AT, to_epoch_ms({2025, 6, 21}), 0);
    if (with_regions) fbb.AddOffset(ev::Event::VT_REGIONS, regions);
    if (type != 0) fbb.AddElement<std::uint8_t>(ev::Event::VT_PAYLOAD_TYPE, type, 0);
    if (!value.IsNull()) fbb.AddOffset(ev::Event::VT_PAYLOAD, value);
    fbb.Finish(flatbuffers::Offset<ev::Event>(fbb.EndTable(start)), ev::EventIdentifier());
    return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
  }
};

constexpr std::uint8_t kBirthType = static_cast<std::uint8_t>(ev::Payload::Birth);
constexpr std::uint8_t kCorrectionType = static_cast<std::uint8_t>(ev::Payload::Correction);

}  // namespace

TEST_CASE("validate_event: union and required-field structure") {
  SUBCASE("the hand-built control event is valid") {
    Raw r;
    auto bytes = r.event(kBirthType, r.birth_table());
    CHECK_FALSE(validate(bytes));
  }
  SUBCASE("union type without value") {
    Raw r;
    auto bytes = r.event(kBirthType, {});
    auto v = validate(bytes);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::MalformedEvent);
    CHECK(v->field == "payload");
    CHECK(verified_event(bytes) == nullptr);
  }
  SUBCASE("union value without type") {
    Raw r;
    auto bytes = r.event(0, r.birth_table());
    auto v = validate(bytes);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::MalformedEvent);
    CHECK(v->field == "payload");
    CHECK(verified_event(bytes) == nullptr);
  }
  SUBCASE("unknown union type 9 (a newer kind)") {
    Raw r;
    auto bytes = r.event(9, r.birth_table());
    auto v = validate(bytes);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::UnknownKind);
    CHECK(v->field == "payload");
    CHECK(verified_event(bytes) == nullptr);
  }
  SUBCASE("corrected: type without value, value without type, unknown type") {
    {
      Raw r;
      auto bytes = r.event(kCorrectionType, r.correction_table(kBirthType, {}));
      auto v = validate(bytes);
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MalformedEvent);
      CHECK(v->field == "payload.corrected");
    }
    {
      Raw r;
      auto bytes = r.event(kCorrectionType, r.correction_table(0, r.birth_table()));
      auto v = validate(bytes);
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MalformedEvent);
      CHECK(v->field == "payload.corrected");
    }
    {
      Raw r;
      auto bytes = r.event(kCorrectionType, r.correction_table(9, r.birth_table()));
      auto v = validate(bytes);
      REQUIRE(v);
      CHECK(v->code == ErrorCode::UnknownKind);
      CHECK(v->field == "payload.corrected");
      CHECK(verified_event(bytes) == nullptr);
    }
  }
  SUBCASE("deep nesting of corrections") {
    Raw r;
    auto inner = r.birth_table();
    std::uint8_t type = kBirthType;
    for (int i = 0; i < 200; ++i) {
      inner = r.correction_table(type, inner);
      type = kCorrectionType;
    }
    auto bytes = r.event(kCorrectionType, inner);
    auto v = validate(bytes);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::MalformedEvent);  // the Verifier's depth limit
  }
  SUBCASE("two levels of corrections verify but break a rule") {
    Raw r;
    auto bytes = r.event(
        kCorrectionType,
        r.correction_table(kCorrectionType, r.correction_table(kBirthType, r.birth_table())));
    CHECK(verified_event(bytes) != nullptr);
    auto v = validate(bytes);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::InvalidCorrection);
  }
  SUBCASE("absent required fields are MissingField with their path") {
    {
      Raw r;
      auto v = validate(r.event(kBirthType, r.birth_table(), /*with_id=*/false));
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MissingField);
      CHECK(v->field == "id");
    }
    {
      Raw r;
      auto v = validate(r.event(kBirthType, r.birth_table(), true, /*with_regions=*/false));
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MissingField);
      CHECK(v->field == "regions");
    }
    {
      Raw r;
      auto v = validate(r.event(0, {}));
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MissingField);
      CHECK(v->field == "payload");
    }
    {
      Raw r;
      auto v = validate(r.event(kBirthType, r.birth_table(/*with_mother=*/false)));
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MissingField);
      CHECK(v->field == "payload.mother_nik");
    }
    {
      Raw r;
      auto v =
          validate(r.event(kCorrectionType, r.correction_table(kBirthType, r.birth_table(false))));
      REQUIRE(v);
      CHECK(v->code == ErrorCode::MissingField);
      CHECK(v->field == "payload.corrected.mother_nik");
    }
  }
}

TEST_CASE("validate_event: an event nested in a Publish request") {
  const auto event = pack(valid_event(ev::Payload::Move), /*identifier=*/false);
  flatbuffers::FlatBufferBuilder fbb;
  auto bytes = fbb.CreateVector(event);
  auto publish = kolabus::protocol::CreatePublish(fbb, bytes);
  auto req = kolabus::protocol::CreateRequest(fbb, 1, 7, kolabus::protocol::Command::Publish,
                                              publish.Union());
  kolabus::protocol::FinishRequestBuffer(fbb, req);
  flatbuffers::Verifier verifier(fbb.GetBufferPointer(), fbb.GetSize());
  REQUIRE(kolabus::protocol::VerifyRequestBuffer(verifier));
  const auto* nested =
      kolabus::protocol::GetRequest(fbb.GetBufferPointer())->command_as_Publish()->event();
  std::span<const std::uint8_t> span(nested->data(), nested->size());
  CHECK_FALSE(validate_event(span, ValidationContext{RegionTable::embedded(), kNow}));
  REQUIRE(verified_event(span) != nullptr);
  CHECK(verified_event(span)->payload_type() == ev::Payload::Move);
}

TEST_CASE("payload_villages: the villages a payload names") {
  for (auto [kind, expected] :
       {std::pair{ev::Payload::Birth, std::vector<std::string>{kPasarBaru}},
        std::pair{ev::Payload::Death, std::vector<std::string>{kLalang}},
        std::pair{ev::Payload::Move, std::vector<std::string>{kPasarBaru, kLalang}},
        std::pair{ev::Payload::Correction, std::vector<std::string>{kPasarBaru}}}) {
    const auto bytes = pack(valid_event(kind));
    const auto* e = verified_event(bytes);
    REQUIRE(e != nullptr);
    CHECK(payload_villages(e->payload_type(), e->payload()) == expected);
  }
  auto e = valid_event(ev::Payload::Correction);
  correction(e).void_ = true;
  correction(e).corrected.Reset();
  const auto bytes = pack(e);
  const auto* root = verified_event(bytes);
  REQUIRE(root != nullptr);
  CHECK(payload_villages(root->payload_type(), root->payload()).empty());
  CHECK(std::string(kind_name(ev::Payload::Move)) == "move");
  CHECK(std::string(kind_name(static_cast<ev::Payload>(9))) == "unknown");
}

TEST_CASE("check_correction_target: kind and regions against the target") {
  auto run = [](const ev::EventT& e, CorrectionTarget target) {
    const auto bytes = pack(e);
    REQUIRE_FALSE(validate(bytes));
    return check_correction_target(*verified_event(bytes), target);
  };
  SUBCASE("a birth corrected by a birth, same village") {
    CHECK_FALSE(run(valid_event(ev::Payload::Correction), {ev::Payload::Birth, {kPasarBaru}}));
  }
  SUBCASE("the target is a death") {
    auto v = run(valid_event(ev::Payload::Correction), {ev::Payload::Death, {kPasarBaru}});
    REQUIRE(v);
    CHECK(v->code == ErrorCode::InvalidCorrection);
    CHECK(v->field == "payload.corrected");
  }
  SUBCASE("the target is itself a correction") {
    auto v = run(valid_event(ev::Payload::Correction), {ev::Payload::Correction, {kPasarBaru}});
    REQUIRE(v);
    CHECK(v->code == ErrorCode::InvalidCorrection);
    CHECK(v->field == "payload.target_id");
  }
  SUBCASE("a move's destination corrected: regions must name old and new") {
    auto e = valid_event(ev::Payload::Correction);
    auto m = valid_event(ev::Payload::Move);
    auto moved = *m.payload.AsMove();
    moved.destination_village = kPusatPasar;  // was Lalang
    moved.move_type = ev::MoveType::WithinKecamatan;
    correction(e).corrected.Set(std::move(moved));
    e.regions = {kPasarBaru, kPusatPasar};
    const CorrectionTarget target{ev::Payload::Move, {kPasarBaru, kLalang}};
    auto v = run(e, target);
    REQUIRE(v);
    CHECK(v->code == ErrorCode::InvalidRegions);
    CHECK(v->field == "regions");
    CHECK(v->message.find("expected [1271011001, 1271011002, 1271021001]") != std::string::npos);
    e.regions = {kLalang, kPasarBaru, kPusatPasar};
    CHECK_FALSE(run(e, target));
  }
  SUBCASE("a void takes exactly the target's regions") {
    auto e = valid_event(ev::Payload::Correction);
    correction(e).void_ = true;
    correction(e).corrected.Reset();
    e.regions = {kLalang};
    CHECK_FALSE(run(e, {ev::Payload::Death, {kLalang}}));
    e.regions = {kLalang, kPasarBaru};
    auto v = run(e, {ev::Payload::Death, {kLalang}});
    REQUIRE(v);
    CHECK(v->code == ErrorCode::InvalidRegions);
  }
}

TEST_CASE("is_valid_utf8: strict") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("Medan"));
  CHECK(is_valid_utf8("\xC3\xA9"));          // é
  CHECK(is_valid_utf8("\xE2\x82\xAC"));      // €
  CHECK(is_valid_utf8("\xF0\x9F\x98\x80"));  // U+1F600
  CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  CHECK_FALSE(is_valid_utf8("\x80"));
  CHECK_FALSE(is_valid_utf8("\xC0\x80"));          // overlong NUL
  CHECK_FALSE(is_valid_utf8("\xC1\xBF"));          // overlong
  CHECK_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong
  CHECK_FALSE(is_valid_utf8("\xF0\x80\x80\xAF"));  // overlong
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate U+D800
  CHECK_FALSE(is_valid_utf8("\xED\xBF\xBF"));      // surrogate U+DFFF
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // U+110000
  CHECK_FALSE(is_valid_utf8("\xF5\x80\x80\x80"));
  CHECK_FALSE(is_valid_utf8("\xE2\x82"));  // truncated
  CHECK_FALSE(is_valid_utf8("\xC3\x28"));  // bad continuation
}
