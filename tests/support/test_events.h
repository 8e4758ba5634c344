// Helpers shared by the broker and integration tests: valid events from the
// generator, and hand-built corrections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include <common/ids.h>
#include <schemas/events_generated.h>

namespace kolabus::test {

inline EventId id_of(const std::vector<std::uint8_t>& event) {
  const auto* ev = flatbuffers::GetRoot<events::Event>(event.data());
  return EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
}

inline std::vector<std::string> regions_of(const std::vector<std::uint8_t>& event) {
  const auto* ev = flatbuffers::GetRoot<events::Event>(event.data());
  std::vector<std::string> out;
  for (const auto* r : *ev->regions()) out.push_back(r->str());
  return out;
}

// A void of `target` (no corrected payload) naming `regions`.
inline std::vector<std::uint8_t> make_void(const EventId& target,
                                           const std::vector<std::string>& regions,
                                           std::int64_t when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  const EventId id = new_uuid_v7();
  const events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  const events::Uuid target_uuid(
      flatbuffers::span<const std::uint8_t, 16>(target.bytes.data(), 16));
  auto corr = events::CreateCorrectionDirect(fbb, &target_uuid, "recorded in error", true);
  auto regs = fbb.CreateVectorOfStrings(regions);
  fbb.Finish(events::CreateEvent(fbb, &uuid, 1, when_ms, when_ms, 0, regs,
                                 events::Payload::Correction, corr.Union()),
             events::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

}  // namespace kolabus::test
