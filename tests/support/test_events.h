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

namespace detail {
inline std::vector<std::uint8_t> finish_event(flatbuffers::FlatBufferBuilder& fbb,
                                              events::Payload type,
                                              flatbuffers::Offset<void> payload,
                                              const std::vector<std::string>& regions,
                                              std::int64_t occurred_ms) {
  const EventId id = new_uuid_v7();
  const events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  auto regs = fbb.CreateVectorOfStrings(regions);
  fbb.Finish(events::CreateEvent(fbb, &uuid, 1, occurred_ms, occurred_ms + 3600 * 1000, 0, regs,
                                 type, payload),
             events::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}
}  // namespace detail

// Valid events in chosen villages, `when_ms` being their time (recorded an hour later).
inline std::vector<std::uint8_t> make_birth(const std::string& village, std::int64_t when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  auto b =
      events::CreateBirthDirect(fbb, "Putri Siregar", events::Sex::Female, when_ms, "Medan",
                                village.c_str(), "1271015203950001", nullptr, "1271012002200001");
  return detail::finish_event(fbb, events::Payload::Birth, b.Union(), {village}, when_ms);
}

inline std::vector<std::uint8_t> make_death(const std::string& village, std::int64_t when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  auto d = events::CreateDeathDirect(fbb, "1271011505500003", "Budi Lubis", when_ms, "Medan",
                                     village.c_str());
  return detail::finish_event(fbb, events::Payload::Death, d.Union(), {village}, when_ms);
}

// REQUIRES: `type` matches the two codes.
inline std::vector<std::uint8_t> make_move(const std::string& origin, const std::string& dest,
                                           events::MoveType type, std::int64_t when_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<flatbuffers::String>> niks{fbb.CreateString("1271010101800001")};
  auto m = events::CreateMoveDirect(fbb, &niks, "1271012002200001", origin.c_str(), dest.c_str(),
                                    when_ms, nullptr, type);
  return detail::finish_event(fbb, events::Payload::Move, m.Union(), {origin, dest}, when_ms);
}

}  // namespace kolabus::test
