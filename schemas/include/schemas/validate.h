// Event validation: every rule the broker applies to a published event that does not
// need the log (the one that does — a correction's target — is split out as
// check_correction_target, called once the broker has looked the target up).
// The rules are listed, with their error codes, in schemas/README.md.
//
// Buffers: an Event may arrive with or without its file identifier "KLEV". Bytes
// nested in a Publish or LogRecord (nested_flatbuffer) are built by other languages'
// builders, which may not write it, so both are accepted; nothing else depends on it.
//
// Safety: every function here takes hostile bytes. The FlatBuffers Verifier runs
// first, then the union consistency checks (PITFALLS.md: a union value with type NONE
// passes the Verifier and aborts GenerateText later); only then is anything read.
// Nothing aborts, nothing reads out of bounds.
//
// Thread-safety: pure functions over their arguments; the RegionTable is only read.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <common/clock.h>
#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>

namespace kolabus::schemas {

struct Violation {
  protocol::ErrorCode code;
  std::string field;    // a path: "id", "regions[1]", "payload.corrected.child_name"
  std::string message;  // plain English, starts with the field
};

struct ValidationContext {
  const RegionTable& regions;
  TimeMs now_ms;
  // Times up to this far ahead of now_ms are accepted: publishers' clocks drift.
  TimeMs max_clock_skew_ms = 5 * 60 * 1000;
};

// The limits validate_event enforces.
inline constexpr std::size_t kMaxNameBytes = 200;     // people's names
inline constexpr std::size_t kMaxTextBytes = 200;     // free text, document numbers
inline constexpr std::size_t kMaxReasonBytes = 1000;  // Correction.reason
inline constexpr std::size_t kMaxMoveNiks = 1000;     // people in one Move
inline constexpr int kMinParentAgeYears = 10;         // at the child's birth

// Verifies `bytes` and applies every rule. Returns the first violation found, or
// nullopt if the event is valid. Never aborts.
std::optional<Violation> validate_event(std::span<const std::uint8_t> bytes,
                                        const ValidationContext& ctx);

// The rules alone, for an event whose bytes passed check_structure (or
// verified_event): validate_event is check_structure, then this. Lets a caller that
// needed the verified root first avoid running the Verifier twice.
// REQUIRES: `event` is the root of bytes that passed check_structure.
std::optional<Violation> check_rules(const events::Event& event, const ValidationContext& ctx);

// The Event root if the bytes pass the Verifier and the union checks (both type and
// value present or both absent, every type known, recursively through
// Correction.corrected); no rule checks. nullptr otherwise. Borrowed: valid while
// `bytes` live.
const events::Event* verified_event(std::span<const std::uint8_t> bytes);

// As verified_event, but says why the bytes were refused (MalformedEvent,
// MissingField for an absent required field, UnknownKind). nullopt if they pass.
std::optional<Violation> check_structure(std::span<const std::uint8_t> bytes);

// The 10-digit village codes a payload names, sorted and unique: Birth/Death
// village_code; Move origin and destination; a Correction its corrected payload's
// (none for a void). REQUIRES: `payload` is a verified table of kind `type` (or null).
std::vector<std::string> payload_villages(events::Payload type, const void* payload);

// The NIKs of the people a payload concerns, sorted and unique: a Birth's child,
// mother and father (those present), a Death's deceased, a Move's movers, a
// Correction its corrected payload's (none for a void). Empty strings are skipped.
// REQUIRES: as payload_villages.
std::vector<std::string> payload_niks(events::Payload type, const void* payload);
// As payload_niks, as views into the payload, replacing the contents of *out (so that
// a caller can reuse one vector: no allocation per NIK or per event).
void payload_nik_views(events::Payload type, const void* payload,
                       std::vector<std::string_view>* out);

// What the broker knows of a correction's target once it has found it in the log.
struct CorrectionTarget {
  events::Payload kind;
  std::vector<std::string> regions;  // the target's Event.regions
};

// For a Correction whose target the broker found: the target must be a Birth, Death
// or Move and the corrected payload (if not a void) of the same kind
// (InvalidCorrection); Event.regions must equal exactly target.regions ∪
// payload_villages(corrected) (InvalidRegions, message lists the expected set).
// REQUIRES: `correction` passed validate_event.
std::optional<Violation> check_correction_target(const events::Event& correction,
                                                 const CorrectionTarget& target);

// "birth", "death", "move", "correction", "unknown".
const char* kind_name(events::Payload kind);

// True if `s` is well-formed UTF-8: no overlong forms, no surrogates, nothing above
// U+10FFFF.
bool is_valid_utf8(std::string_view s);

}  // namespace kolabus::schemas
