// broker::Policy: who may do what, decided in one place (docs/SECURITY.md prints the
// same decisions as a table).
//
// Every request the broker serves and every event it delivers is judged here, by the
// agency registry as it is now and the time as it is now — never by what was true when
// a connection opened. The server asks on each request and before each delivery; a
// registry reload replaces the snapshot, and the next question gets the new answer.
//
// A decision is std::nullopt (allowed) or a Denial: the protocol code, the field it
// concerns, the rule that refused it (a stable name, listed in docs/SECURITY.md) and a
// message for the asking agency. A message names the rule and the asking agency's own
// grant, never another agency's data (no target regions, no other agency's names).
//
// Development mode (no registry) allows everything and strips nothing; the server runs
// it only on loopback.
//
// Ownership: holds a shared snapshot of the registry (shared with the ZAP thread and
// later snapshots' readers) and borrows the clock, which must outlive it.
// Thread-safety: const member functions only; safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <broker/agencies.h>
#include <common/clock.h>
#include <schemas/profile.h>
#include <schemas/protocol_generated.h>

namespace kolabus::broker {

struct Denial {
  protocol::ErrorCode code = protocol::ErrorCode::NotAuthorised;
  std::string field;
  std::string rule;     // e.g. "correct.authority"; see docs/SECURITY.md
  std::string message;  // for the asking agency: the rule and its own grant only
};
using Decision = std::optional<Denial>;

// What a routed event is, as the region index knows it: its routing kind (a
// correction: the corrected kind with the high bit set) and its village codes.
struct EventFacts {
  std::uint8_t routing_kind = 0;
  const std::vector<std::string>& regions;
};

// The high bit of a routing kind: the event is a correction of an event of the kind
// in the low bits.
inline constexpr std::uint8_t kCorrectionBit = 0x80;

class Policy {
 public:
  // `agencies` null: development mode.
  Policy(std::shared_ptr<const Agencies> agencies, const Clock& clock);

  bool dev() const { return agencies_ == nullptr; }
  const std::shared_ptr<const Agencies>& agencies() const { return agencies_; }

  // ---- who is asking ----
  // The agency a connection's CURVE key belongs to now, or nullptr (a key replaced
  // or removed since the connection opened). REQUIRES: !dev().
  const Agency* identify(std::string_view public_key_z85) const;
  // A connection that authenticated with `key` may act as `agency` now (the key is
  // still that agency's). Rule "connection.key".
  Decision connection(std::string_view key, std::string_view agency) const;

  // ---- publishing ----
  // Publish an event (not a correction) of `kind` concerning `regions`.
  // Rules "agreement", "publish.grant".
  Decision publish(std::string_view agency, std::uint8_t kind,
                   const std::vector<std::string>& regions) const;
  // Whether the agency may publish corrections at all (a publish or correct grant and
  // a valid agreement): asked before the target is looked up or the id deduplicated,
  // so an agency without either learns nothing about stored ids. Rule "correct.none".
  Decision may_correct(std::string_view agency) const;
  // Correct or void the event `target_owner` published, of `target_kind` concerning
  // `target_regions`, with a correction concerning `regions`: allowed to the target's
  // owner within its publish grant, or to an agency whose correct grant covers the
  // target and the correction. Rules "agreement", "correct.authority".
  Decision correct(std::string_view agency, std::string_view target_owner, std::uint8_t target_kind,
                   const std::vector<std::string>& target_regions,
                   const std::vector<std::string>& regions) const;

  // ---- receiving ----
  // Create, attach to or read through a consumer with this filter (empty kinds /
  // prefixes: all). Rules "agreement", "subscribe.grant".
  Decision subscribe(std::string_view agency, const std::vector<std::uint8_t>& kinds,
                     const std::vector<std::string>& prefixes) const;
  // Why the consumer of `owner` with this filter gets no deliveries now (its agreement
  // or its grant no longer allows it), or nullopt when it may receive.
  std::optional<std::string> paused(std::string_view owner, const std::vector<std::uint8_t>& kinds,
                                    const std::vector<std::string>& prefixes) const;
  // The payload fields `agency` may receive; nullptr when it is not in the registry
  // (then it receives nothing). In development mode a profile that keeps everything.
  const schemas::FieldProfile* profile(std::string_view agency) const;

  // The agency's limits (agencies.h); nullptr when none apply: development mode (the
  // broker-wide outgoing bound still does), or an agency not in the registry (which
  // may do nothing anyway).
  const Limits* limits(std::string_view agency) const;

  // ---- operating ----
  // Manage consumers of other agencies, dead letters, the registry, the audit chain.
  // Rule "operate".
  Decision operate(std::string_view agency) const;
  // Move a consumer of `owner` (replay): the operator operates and the owner's grant
  // and agreement still cover the consumer's filter. Rules "operate", "agreement",
  // "subscribe.grant".
  Decision replay(std::string_view agency, std::string_view owner,
                  const std::vector<std::uint8_t>& kinds,
                  const std::vector<std::string>& prefixes) const;
  // A one-off range read: operate, and the filter within the reader's own grant.
  Decision read_range(std::string_view agency, const std::vector<std::uint8_t>& kinds,
                      const std::vector<std::string>& prefixes) const;
  // Whether `agency` may see the content of an event (a dead letter it lists): within
  // its own receive grant and a valid agreement. Otherwise it sees metadata only.
  bool may_read_content(std::string_view agency, const EventFacts& event) const;
  // Ask which agencies received a person's events: operate and a valid agreement.
  // Rules "operate", "person.agreement".
  Decision person_query(std::string_view agency) const;

 private:
  const Agency* find(std::string_view agency) const;
  Decision inactive(const Agency* a, std::string_view what) const;

  std::shared_ptr<const Agencies> agencies_;  // shared: see the header comment
  const Clock* clock_;                        // borrowed
};

}  // namespace kolabus::broker
