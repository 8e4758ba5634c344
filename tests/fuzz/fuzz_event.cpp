// fuzz_event: bytes as an Event, the way the broker and the tools meet one: validation
// (schemas/validate.h), the structure checks, field-profile minimisation (profile.h,
// what the broker does before every delivery to a restricted agency) and JSON
// (json_codec.h, what `kolabus tail` prints and `kolabus publish` reads).
//
// Properties checked beyond "no crash":
//  - verified_event and check_structure agree; validate_event reports a structural
//    fault as check_structure does (same code and field);
//  - every violation has a message that starts with its field;
//  - a valid event (the only kind the broker stores) can be minimised under every
//    profile, and the result keeps the id, kind and regions and still verifies;
//  - a valid event goes to JSON and back to an event with the same id that is still
//    valid, and from there JSON and bytes are a fixed point.
#include <string>
#include <vector>

#include "fuzz_targets.h"
#include <schemas/json_codec.h>
#include <schemas/profile.h>
#include <schemas/regions.h>
#include <schemas/validate.h>

namespace kolabus::fuzz {

namespace {

std::string describe(const schemas::Violation& v) {
  return std::string(protocol::EnumNameErrorCode(v.code)) + " '" + v.field + "': " + v.message;
}

const std::vector<schemas::FieldProfile>& profiles() {
  static const auto list = [] {
    std::vector<schemas::FieldProfile> out;
    // The README's statistics office, a kelurahan, the envelope only.
    const std::vector<std::vector<std::string>> entries{
        {"birth.sex", "birth.born_at", "birth.village_code", "death.died_at", "death.village_code",
         "move.moved_at", "move.origin_village", "move.destination_village", "move.move_type"},
        {"*", "-death.cause_of_death"},
        {}};
    for (const auto& e : entries) {
      auto p = schemas::FieldProfile::parse(e);
      if (!p)
        report("setup: a field profile of the README does not parse");
      else
        out.push_back(std::move(*p));
    }
    return out;
  }();
  return list;
}

schemas::JsonCodec& codec() {
  static auto c = [] {
    auto r = schemas::JsonCodec::create();
    if (!r) {
      report("setup: JsonCodec::create failed");
      std::abort();  // nothing below can run without it
    }
    return std::move(*r);
  }();
  return c;
}

EventId id_of(const events::Event* ev) {
  return EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
}

std::vector<std::string> regions_of(const events::Event* ev) {
  std::vector<std::string> out;
  for (const auto* r : *ev->regions()) out.push_back(r->str());
  return out;
}

void check_minimised(std::span<const std::uint8_t> data, const events::Event* ev) {
  for (const auto& profile : profiles()) {
    auto stripped = schemas::strip_event(data, profile);
    if (!stripped) {
      return report("strip_event fails on a valid event (the broker could never deliver it to " +
                    profile.describe() + "): " + stripped.error().to_string());
    }
    const auto* out = schemas::verified_event(*stripped);
    if (out == nullptr) return report("strip_event's result does not verify");
    if (id_of(out) != id_of(ev) || out->payload_type() != ev->payload_type() ||
        regions_of(out) != regions_of(ev)) {
      return report("strip_event changed the envelope (id, kind or regions)");
    }
  }
}

void check_json_round_trip(std::span<const std::uint8_t> data, const events::Event* ev) {
  auto json = codec().to_json(data);
  if (!json) return report("to_json fails on a valid event: " + json.error().to_string());
  auto back = codec().from_json(*json);
  if (!back) {
    return report("from_json refuses what to_json wrote: " + back.error().to_string() + " in " +
                  *json);
  }
  if (back->id != id_of(ev) || back->id_derived) {
    return report("the JSON round trip changed the event id");
  }
  const schemas::ValidationContext ctx{schemas::RegionTable::embedded(), kNow};
  if (auto v = schemas::validate_event(back->bytes, ctx)) {
    return report("a valid event is no longer valid after a JSON round trip: " + describe(*v));
  }
  // A field stored with its default value is printed the first time and then omitted
  // (the Parser does not store defaults), so the text is stable from the second pass.
  auto json2 = codec().to_json(back->bytes);
  if (!json2) return report("to_json fails on its own round trip: " + json2.error().to_string());
  auto back2 = codec().from_json(*json2);
  if (!back2 || back2->bytes != back->bytes) {
    return report("the JSON round trip does not settle (bytes): " + *json2);
  }
  auto json3 = codec().to_json(back2->bytes);
  if (!json3 || *json3 != *json2) {
    return report("the JSON round trip does not settle (text): " + *json2);
  }
}

}  // namespace

void event_one(std::span<const std::uint8_t> data) {
  const schemas::ValidationContext ctx{schemas::RegionTable::embedded(), kNow};
  const auto violation = schemas::validate_event(data, ctx);
  const auto structure = schemas::check_structure(data);
  const events::Event* ev = schemas::verified_event(data);

  if ((ev == nullptr) != structure.has_value()) {
    return report("verified_event and check_structure disagree");
  }
  if (structure) {
    count(std::string("structure.") + protocol::EnumNameErrorCode(structure->code));
    if (!violation || violation->code != structure->code || violation->field != structure->field) {
      return report("validate_event does not report the structural fault " + describe(*structure));
    }
  }
  if (violation) {
    count(std::string("violation.") + protocol::EnumNameErrorCode(violation->code));
    if (violation->message.empty()) return report("a violation without a message");
    if (!violation->field.empty() && violation->message.rfind(violation->field, 0) != 0) {
      return report("the message does not start with the field: " + describe(*violation));
    }
  }
  if (ev == nullptr) return;

  // Whatever verifies must be safe to read, minimise and print, valid or not.
  (void)schemas::kind_name(ev->payload_type());
  (void)schemas::payload_villages(ev->payload_type(), ev->payload());
  (void)codec().to_json(data);
  for (const auto& profile : profiles()) (void)schemas::strip_event(data, profile);

  if (violation) return;
  count(std::string("valid.") + schemas::kind_name(ev->payload_type()));
  if (ev->payload_type() == events::Payload::Correction) {
    // As the broker does once it found the target: any kind, the event's own regions.
    for (auto kind : {events::Payload::Birth, events::Payload::Death, events::Payload::Move}) {
      (void)schemas::check_correction_target(*ev, {kind, regions_of(ev)});
    }
  }
  check_minimised(data, ev);
  check_json_round_trip(data, ev);
}

}  // namespace kolabus::fuzz

#ifdef KOLABUS_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kolabus::fuzz::event_one({data, size});
  return 0;
}
#endif
