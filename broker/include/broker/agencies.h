// broker::Agencies: the agency registry (agencies.toml) — who may connect (their
// CURVE public keys) and what each may do: publish (kinds x region prefixes),
// subscribe (kinds x region prefixes), correct (authority over other agencies'
// events), operate (consumers of others, replay, dead letters). What each grant
// allows is decided in one place, broker::Policy (policy.h).
//
// An agency is identified by the key its connection authenticated with (the ZAP
// handler maps the key to the agency's name, which ZeroMQ hands the server as the
// User-Id of every message); never by a field of a message.
//
// Thread-safety: immutable after load; share it through a shared_ptr<const
// Agencies> (shared: the ZAP thread and the server loop both hold the current
// registry while a reload swaps in a new one).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <common/clock.h>
#include <common/result.h>
#include <schemas/profile.h>
#include <schemas/regions.h>

namespace kolabus::broker {

// A permission over events: kinds x region prefixes. `all_*` stands for "*".
struct Grant {
  bool all_kinds = false;
  std::vector<std::uint8_t> kinds;  // kolabus.events.Payload values, sorted
  bool all_regions = false;
  std::vector<std::string> regions;  // prefixes of 2, 4, 6 or 10 digits

  // An event of routing kind `kind` (corrections: the corrected kind) concerning
  // `event_regions` (10-digit codes), at least one of which lies inside the grant
  // (a move out of the city is the city's registry's to publish).
  bool allows_event(std::uint8_t kind, const std::vector<std::string>& event_regions) const;
  // A consumer filter (empty = every kind / every region) lies within the grant.
  bool covers(const std::vector<std::uint8_t>& kinds,
              const std::vector<std::string>& prefixes) const;
  std::string describe() const;  // "births, deaths in 1271, 1207"
};

// The data-sharing agreement (perjanjian kerja sama, PKS) an agency's grants rest
// on. Outside its validity, or revoked, the agency's publishing and deliveries
// stop until a renewed agreement is loaded.
struct Agreement {
  std::string pks;         // the agreement's number
  std::string purpose;     // what the data is for
  TimeMs valid_from = 0;   // 00:00 WIB of the first day
  TimeMs valid_until = 0;  // 00:00 WIB of the day after the last day
  bool revoked = false;
};

// What one agency may hold of the broker at once, so that no agency — careless or
// hostile — can grow the broker or slow the others (the registry's `limits = { ... }`,
// each key optional; docs/OPERATIONS.md, "Limits").
struct Limits {
  // Connections that hold a consumer or sent a request within the client timeout (at
  // the limit, those idle for a second and holding no consumer do not count).
  std::uint32_t connections = 64;
  // Durable consumers it owns.
  std::uint32_t consumers = 200;
  // Deliveries out and not acknowledged: the windows of all its attached clients.
  std::uint32_t unacked = 50000;
  // Deliveries sent that a connection has not yet shown it read (by acknowledging,
  // NAKing or rejecting a later one): per connection, and all its connections together.
  // A connection at its bound is stalled: it gets nothing more until it reads.
  std::uint64_t queued_bytes_per_connection = 16ULL << 20;
  std::uint64_t queued_bytes = 64ULL << 20;
};

struct Agency {
  std::string name;
  std::string public_key;  // Z85
  std::optional<Grant> publish;
  std::optional<Grant> subscribe;
  // Authority over events other agencies published: corrections and voids of events
  // whose kind and regions lie inside it (the civil registry of record). An agency
  // may always correct its own events within its publish grant.
  std::optional<Grant> correct;
  bool operate = false;
  std::optional<Agreement> agreement;  // required with a publish or subscribe grant
  // The payload fields the agency may receive; the broker removes the others from
  // every event it delivers or replays to it. Default: every field.
  schemas::FieldProfile fields;
  Limits limits;

  // Why the agency may not exchange data at `now` (its agreement is not yet valid,
  // has expired or was revoked), or nullopt when it may.
  std::optional<std::string> inactive_reason(TimeMs now) const;
};

class Agencies {
 public:
  // Reads agencies.toml. Errors name the file, the agency and the key.
  static Result<Agencies> load(const std::string& path, const schemas::RegionTable& regions);
  static Result<Agencies> parse(std::string_view toml_text, const std::string& path,
                                const schemas::RegionTable& regions);

  const Agency* by_key(std::string_view public_key_z85) const;
  const Agency* by_name(std::string_view name) const;
  std::size_t size() const { return agencies_.size(); }
  const std::vector<Agency>& all() const { return agencies_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<Agency> agencies_;
  std::map<std::string, std::size_t, std::less<>> by_key_, by_name_;
};

}  // namespace kolabus::broker
