#include <functional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <schemas/json_codec.h>
#include <schemas/nik.h>
#include <schemas/protocol_generated.h>
#include <schemas/validate.h>

namespace ev = kolabus::events;
using kolabus::Errc;
using kolabus::EventId;
using namespace kolabus::schemas;

namespace {

const kolabus::TimeMs kNow = to_epoch_ms({2025, 7, 1}) + 12 * 3'600'000;

// One valid event of each kind, in the JSON form to_json writes (no default values).
const char* const kBirth =
    R"({"id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e7f","occurred_at":1750390200000,)"
    R"("recorded_at":1750563000000,"regions":["1271011001"],"payload_type":"Birth",)"
    R"("payload":{"child_name":"Budi Santoso","sex":"Male","born_at":1750390200000,)"
    R"("place_of_birth":"RSU Pirngadi","village_code":"1271011001",)"
    R"("mother_nik":"1271015501900001","father_nik":"1271011203880002",)"
    R"("kk_number":"1271011506200004","child_nik":"1271012006250003"}})";
const char* const kDeath =
    R"({"id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e80","occurred_at":1748772000000,)"
    R"("recorded_at":1748858400000,"regions":["1271021001"],"payload_type":"Death",)"
    R"("payload":{"nik":"1271012008500005","name":"Ahmad Siregar","died_at":1748772000000,)"
    R"("village_code":"1271021001","cause_of_death":"sakit tua"}})";
const char* const kMove =
    R"({"id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e81","occurred_at":1751068800000,)"
    R"("recorded_at":1751068800000,"regions":["1271011001","1271021001"],"payload_type":"Move",)"
    R"("payload":{"niks":["1271015501900001","1271011203880002"],"kk_number":"1271011506200004",)"
    R"("origin_village":"1271011001","destination_village":"1271021001",)"
    R"("moved_at":1751068800000,"move_type":"BetweenKecamatan"}})";
const char* const kCorrection =
    R"({"id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e82","occurred_at":1751155200000,)"
    R"("recorded_at":1751155200000,"regions":["1271011001"],"payload_type":"Correction",)"
    R"("payload":{"target_id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e7f",)"
    R"("reason":"name misspelt","corrected_type":"Birth","corrected":{"child_name":"Budi Santosa",)"
    R"("sex":"Male","born_at":1750390200000,"village_code":"1271011001",)"
    R"("mother_nik":"1271015501900001","kk_number":"1271011506200004"}}})";

JsonCodec codec() {
  auto c = JsonCodec::create();
  REQUIRE(c.has_value());
  return std::move(c).value();
}

std::string without_id(const char* json) {
  auto j = nlohmann::json::parse(json);
  j.erase("id");
  return j.dump();
}

}  // namespace

TEST_CASE("JsonCodec: round trip of each kind") {
  auto c = codec();
  for (const char* json : {kBirth, kDeath, kMove, kCorrection}) {
    const std::string input(json);
    CAPTURE(input);
    auto enc = c.from_json(json);
    REQUIRE_MESSAGE(enc.has_value(), enc.error().message);
    CHECK_FALSE(enc->id_derived);
    CHECK(enc->id.to_string() == nlohmann::json::parse(json)["id"].get<std::string>());
    REQUIRE(enc->bytes.size() > 8);
    CHECK(std::string(reinterpret_cast<const char*>(enc->bytes.data()) + 4, 4) == "KLEV");
    const auto v = validate_event(enc->bytes, ValidationContext{RegionTable::embedded(), kNow});
    CHECK_MESSAGE(!v, (v ? v->message : ""));

    auto text = c.to_json(enc->bytes);
    REQUIRE_MESSAGE(text.has_value(), text.error().message);
    CHECK(text->find('\n') == std::string::npos);
    CHECK(nlohmann::json::parse(*text) == nlohmann::json::parse(json));
    auto again = c.from_json(*text);
    REQUIRE(again.has_value());
    CHECK(again->bytes == enc->bytes);
  }
}

TEST_CASE("JsonCodec: id forms") {
  auto c = codec();
  const auto expected = EventId::parse("0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e7f").value();
  auto with_id = [](const nlohmann::json& id) {
    auto j = nlohmann::json::parse(kBirth);
    j["id"] = id;
    return j.dump();
  };
  SUBCASE("UUID string, upper case") {
    auto enc = c.from_json(with_id("0190E5C2-7D1A-7C3E-9B1F-2A3B4C5D6E7F"));
    REQUIRE(enc.has_value());
    CHECK(enc->id == expected);
  }
  SUBCASE("32 hex digits") {
    auto enc = c.from_json(with_id("0190e5c27d1a7c3e9b1f2a3b4c5d6e7f"));
    REQUIRE(enc.has_value());
    CHECK(enc->id == expected);
  }
  SUBCASE("struct form") {
    nlohmann::json bytes = nlohmann::json::array();
    for (auto b : expected.bytes) bytes.push_back(b);
    auto enc = c.from_json(with_id({{"bytes", bytes}}));
    REQUIRE_MESSAGE(enc.has_value(), enc.error().message);
    CHECK(enc->id == expected);
  }
  SUBCASE("not a UUID") {
    auto enc = c.from_json(with_id("0190e5c2-7d1a"));
    REQUIRE_FALSE(enc.has_value());
    CHECK(enc.error().code == Errc::kInvalidArgument);
    CHECK(enc.error().message.find("id: ") == 0);
  }
  SUBCASE("the same id for the same bytes as to_json renders") {
    auto enc = c.from_json(kBirth);
    REQUIRE(enc.has_value());
    auto text = c.to_json(enc->bytes);
    REQUIRE(text.has_value());
    CHECK(text->find(R"("id":"0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e7f")") != std::string::npos);
    CHECK(text->find(R"("target_id")") == std::string::npos);
  }
}

TEST_CASE("JsonCodec: a missing id is derived from the content") {
  auto c = codec();
  const std::string json = without_id(kBirth);
  auto a = c.from_json(json);
  auto b = c.from_json(json);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->id_derived);
  CHECK(a->id == b->id);
  CHECK(a->bytes == b->bytes);
  CHECK(a->id != EventId{});
  CHECK((a->id.bytes[6] >> 4) == 8);       // UUID version 8
  CHECK((a->id.bytes[8] & 0xc0) == 0x80);  // RFC variant
  // The id is in the bytes, and the event is valid.
  const auto* e = verified_event(a->bytes);
  REQUIRE(e != nullptr);
  CHECK(EventId::from_span(std::span<const std::uint8_t, 16>(e->id()->bytes()->data(), 16)) ==
        a->id);
  CHECK_FALSE(validate_event(a->bytes, ValidationContext{RegionTable::embedded(), kNow}));

  SUBCASE("key order and spacing do not matter") {
    auto j = nlohmann::ordered_json::parse(json);
    nlohmann::ordered_json reversed;
    std::vector<std::string> keys;
    for (auto& [k, v] : j.items()) keys.push_back(k);
    for (auto it = keys.rbegin(); it != keys.rend(); ++it) reversed[*it] = j[*it];
    auto r = c.from_json(reversed.dump(2));
    REQUIRE_MESSAGE(r.has_value(), r.error().message);
    CHECK(r->id == a->id);
  }
  SUBCASE("different content, different id") {
    auto j = nlohmann::json::parse(json);
    j["payload"]["child_name"] = "Budi Santosa";
    auto r = c.from_json(j.dump());
    REQUIRE(r.has_value());
    CHECK(r->id != a->id);
  }
  SUBCASE("an explicit null id is derived too") {
    auto j = nlohmann::json::parse(json);
    j["id"] = nullptr;
    auto r = c.from_json(j.dump());
    REQUIRE(r.has_value());
    CHECK(r->id == a->id);
  }
}

TEST_CASE("JsonCodec: errors are values with readable messages") {
  auto c = codec();
  struct Bad {
    std::string json;
    const char* expect;
  };
  auto edit = [](const char* base, const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(base);
    f(j);
    return j.dump();
  };
  const Bad cases[] = {
      {"{\"id\": ", "invalid JSON"},
      {"[1, 2]", "must be a JSON object"},
      {"", "invalid JSON"},
      {edit(kBirth, [](auto& j) { j["colour"] = "blue"; }), "unknown field: colour"},
      {edit(kBirth, [](auto& j) { j["payload"]["eye_colour"] = "brown"; }),
       "unknown field: eye_colour"},
      {edit(kBirth, [](auto& j) { j["occurred_at"] = "yesterday"; }), "occurred_at"},
      {edit(kBirth, [](auto& j) { j["regions"] = {1271011001}; }), "regions"},
      {edit(kBirth, [](auto& j) { j["payload"]["sex"] = "Other"; }), "Other"},
      {edit(kBirth, [](auto& j) { j["payload_type"] = "Marriage"; }), "Marriage"},
      {edit(kBirth, [](auto& j) { j["payload"].erase("mother_nik"); }),
       "required field is missing: mother_nik"},
  };
  for (const auto& b : cases) {
    CAPTURE(b.json);
    auto r = c.from_json(b.json);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::kInvalidArgument);
    CHECK_MESSAGE(r.error().message.find(b.expect) != std::string::npos, r.error().message);
  }
  // The codec still works after errors.
  CHECK(c.from_json(kDeath).has_value());
}

TEST_CASE("JsonCodec: to_json refuses bad bytes without aborting") {
  auto c = codec();
  std::vector<std::uint8_t> garbage(64, 0xAB);
  CHECK_FALSE(c.to_json(garbage).has_value());
  CHECK_FALSE(c.to_json({}).has_value());

  // A union value whose type is NONE: GenerateText would abort on it.
  flatbuffers::FlatBufferBuilder fbb;
  auto name = fbb.CreateString("x");
  const auto bstart = fbb.StartTable();
  fbb.AddOffset(ev::Birth::VT_CHILD_NAME, name);
  const auto birth = fbb.EndTable(bstart);
  auto regions = fbb.CreateVectorOfStrings(std::vector<std::string>{"1271011001"});
  const auto start = fbb.StartTable();
  const ev::Uuid id;
  fbb.AddStruct(ev::Event::VT_ID, &id);
  fbb.AddOffset(ev::Event::VT_REGIONS, regions);
  fbb.AddOffset(ev::Event::VT_PAYLOAD, flatbuffers::Offset<void>(birth));
  fbb.Finish(flatbuffers::Offset<ev::Event>(fbb.EndTable(start)));
  std::vector<std::uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  auto r = c.to_json(bytes);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::kInvalidArgument);
}

TEST_CASE("JsonCodec: an event nested in a LogRecord-like buffer") {
  auto c = codec();
  auto enc = c.from_json(kMove);
  REQUIRE(enc.has_value());
  flatbuffers::FlatBufferBuilder fbb;
  auto nested = fbb.CreateVector(enc->bytes);
  auto publish = kolabus::protocol::CreatePublish(fbb, nested);
  fbb.Finish(kolabus::protocol::CreateRequest(fbb, 1, 1, kolabus::protocol::Command::Publish,
                                              publish.Union()));
  const auto* event =
      kolabus::protocol::GetRequest(fbb.GetBufferPointer())->command_as_Publish()->event();
  auto text = c.to_json(std::span<const std::uint8_t>(event->data(), event->size()));
  REQUIRE_MESSAGE(text.has_value(), text.error().message);
  CHECK(nlohmann::json::parse(*text) == nlohmann::json::parse(kMove));
}

TEST_CASE("JsonCodec: strings survive, non-ASCII included") {
  auto c = codec();
  auto j = nlohmann::json::parse(kDeath);
  j["payload"]["name"] = "Nurhayati Br. Tarigan — Ṡ 😀";
  j["payload"]["cause_of_death"] = "line one\nline two \"quoted\"";
  auto enc = c.from_json(j.dump());
  REQUIRE(enc.has_value());
  auto text = c.to_json(enc->bytes);
  REQUIRE(text.has_value());
  CHECK(text->find('\n') == std::string::npos);
  CHECK(nlohmann::json::parse(*text) == j);
}

TEST_CASE("JsonCodec: to_json over every single-byte flip never aborts") {
  auto c = codec();
  auto enc = c.from_json(kCorrection);
  REQUIRE(enc.has_value());
  int rendered = 0;
  for (std::size_t i = 0; i < enc->bytes.size(); ++i) {
    for (std::uint8_t flip : {0x01, 0x04, 0x80, 0xff}) {
      auto mutated = enc->bytes;
      mutated[i] ^= flip;
      if (c.to_json(mutated).has_value()) ++rendered;
    }
  }
  CHECK(rendered > 0);  // flips inside strings still render
}
