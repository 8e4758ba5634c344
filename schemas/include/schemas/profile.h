// Field profiles (issue 5, data minimisation under UU 27/2022 PDP): which payload fields
// of which kinds an agency may receive, and strip_event, which removes every other
// payload field from an Event before the broker delivers or replays it. Stored events
// stay whole; only the copy sent to a restricted agency is minimised.
//
// Schema-driven: kinds and fields are checked against the compiled-in events.fbs
// (flatbuffers::Parser), and stripping goes through the schema's JSON form, so a field
// or kind appended to the schema needs no code change here.
//
// Ownership: FieldProfile is a value (field names only, no pointers into the schema).
// Thread-safety: a FieldProfile is immutable after parse and safe to share between
// threads. parse and strip_event use one flatbuffers::Parser per thread (thread_local),
// so they may be called from several threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <common/result.h>
#include <schemas/events_generated.h>

namespace kolabus::schemas {

// A field profile: which payload fields of which kinds an agency may receive.
class FieldProfile {
 public:
  // Parses a profile from its entries, e.g. {"*"} (everything), or
  // {"birth.sex", "birth.born_at", "move.*", "-move.niks"}:
  //   "<kind>.<field>" allows one payload field (kind: the lower-case name of a Payload
  //   member other than Correction — birth, death, move; field: a field of that table in
  //   events.fbs), "<kind>.*" all fields of that kind, "*" everything; a leading "-"
  //   removes, applied in order after all the allows.
  // The envelope (id, schema_version, occurred_at, recorded_at, source, regions, the
  // payload's kind) and a Correction's own fields are always kept.
  // Errors (kInvalidArgument) name the entry: empty entry, unknown kind, unknown field.
  // No entries at all is a valid profile that keeps only the envelope.
  static Result<FieldProfile> parse(const std::vector<std::string>& entries);

  // True if every field of every kind is allowed: strip_event returns its input.
  bool keeps_everything() const { return keeps_everything_; }

  // True if `field` of payload kind `kind` may be delivered. A Correction's own fields
  // are always allowed; its corrected payload follows the corrected kind's rules.
  bool allows(events::Payload kind, std::string_view field) const;

  // True if every field of payload kind `kind` may be delivered: free text about an
  // event of that kind (a correction's or a dead letter's reason) may go where this holds.
  // False for Correction itself and for kinds this build does not know.
  bool allows_whole(events::Payload kind) const;

  // "*", or the allowed fields per kind, e.g. "birth.{born_at,sex} death.{} move.*".
  std::string describe() const;

 private:
  friend Result<std::vector<std::uint8_t>> strip_event(std::span<const std::uint8_t> event,
                                                       const FieldProfile& profile,
                                                       events::Payload target_kind);

  // Lower-case kind name -> allowed field names. Every kind of the schema has an entry.
  std::map<std::string, std::set<std::string>, std::less<>> allowed_;
  // Lower-case kind name -> true if every field of the kind is allowed.
  std::map<std::string, bool, std::less<>> whole_kind_;
  bool keeps_everything_ = false;
};

// Returns the Event bytes with every payload field the profile does not allow removed.
// A field the schema marks (required) is kept present but emptied (empty string / empty
// vector), so the result still verifies. A Correction's reason is free text about the
// person: it is replaced by kReasonWithheld unless the profile allows every field of the
// corrected kind (the kind of `corrected`, or for a void `target_kind`, the kind of the
// event it voids; NONE when unknown: withheld). Numbers and enums not allowed are absent, i.e.
// read as their default (0 / the enum's zero). A Correction keeps its own fields
// (target_id, void; reason as above); its `corrected` payload is stripped by the rules of
// the corrected kind. The envelope, and so the event id, is unchanged. The result has the
// file identifier "KLEV".
// If profile.keeps_everything(), returns a copy of `event` byte for byte.
// REQUIRES: `event` passed schemas::verified_event (the broker stores only such events).
// It is checked again anyway: bytes that do not verify, or a payload kind this build does
// not know, give kInvalidArgument (the broker must not deliver what it cannot minimise);
// never aborts.
inline constexpr std::string_view kReasonWithheld =
    "[withheld: the recipient's field profile does not cover this kind of event in full]";
Result<std::vector<std::uint8_t>> strip_event(std::span<const std::uint8_t> event,
                                              const FieldProfile& profile,
                                              events::Payload target_kind = events::Payload::NONE);

}  // namespace kolabus::schemas
