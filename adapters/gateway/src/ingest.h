// gateway::ingest_body: a POST /v1/events body -> encoded, validated events, or the
// reasons why not. Kept apart from HTTP so the rules are tested without a server.
//
// Thread-safety: pure function of its arguments, but the JsonCodec is not
// thread-safe: one per thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <common/result.h>
#include <schemas/json_codec.h>
#include <schemas/validate.h>

namespace kolabus::adapters::gateway {

// One event that cannot be queued.
struct EventError {
  std::size_t index = 0;  // its position in the array (0 for a single object)
  std::string code;       // a protocol ErrorCode name: "InvalidNik", "MalformedEvent", ...
  std::string field;      // a path such as "payload.mother_nik"; may be empty
  std::string message;
};

struct Ingested {
  std::vector<schemas::EncodedEvent> events;  // in request order; empty if any error
  std::vector<EventError> errors;             // every invalid event, in order
  std::size_t total = 0;                      // events in the request
};

// Arrays and objects nest at most this deep in a body (an event needs 4).
inline constexpr std::size_t kMaxNesting = 32;

// kInvalidArgument (HTTP 400) for a body that is empty, nested deeper than kMaxNesting,
// not JSON (not UTF-8 included; the message may quote the bad bytes), neither an object
// nor an array, an empty array or one longer than max_batch. Otherwise every element is
// converted with the codec and checked with validate_event; each failure is one
// EventError.
Result<Ingested> ingest_body(std::string_view body, std::size_t max_batch,
                             schemas::JsonCodec& codec, const schemas::ValidationContext& rules);

}  // namespace kolabus::adapters::gateway
