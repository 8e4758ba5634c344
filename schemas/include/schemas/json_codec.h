// JSON <-> FlatBuffers for kolabus Events, through the schema itself
// (flatbuffers::Parser over the compiled-in events.fbs), never field by field: a field
// added to the schema is understood here without a code change.
//
// JSON form: the FlatBuffers strict-JSON form of an Event (field names as in
// events.fbs, "payload_type": "Birth" beside "payload": {...}), with two conveniences:
// "id" and a correction's "payload.target_id" may be UUID strings
// ("0190e5c2-7d1a-7c3e-9b1f-2a3b4c5d6e7f", or 32 hex digits) instead of the struct
// form {"bytes": [16 numbers]}; to_json always writes the UUID string.
//
// Derived ids: an event without "id" gets one computed from its content (BLAKE2b-128
// of the canonical bytes with an all-zero id, then UUID version 8 and the RFC variant
// bits), so feeding the same file twice publishes nothing twice. "Canonical" means the
// bytes the Parser builds from the schema-ordered JSON that GenerateText writes, so
// key order and spacing in the input do not change the id.
//
// Thread-safety: not thread-safe (flatbuffers::Parser keeps state): one JsonCodec per
// thread. Movable, not copyable.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <common/ids.h>
#include <common/result.h>

namespace flatbuffers {
class Parser;
}

namespace kolabus::schemas {

struct EncodedEvent {
  std::vector<std::uint8_t> bytes;  // an Event with the file identifier "KLEV"
  EventId id;
  bool id_derived = false;  // true: "id" was absent and was computed from the content
};

class JsonCodec {
 public:
  // kInternal if the compiled-in schema does not parse (a build bug).
  static Result<JsonCodec> create();

  JsonCodec(JsonCodec&&) noexcept;
  JsonCodec& operator=(JsonCodec&&) noexcept;
  ~JsonCodec();

  // One JSON object (one line of JSON Lines) -> Event bytes. Errors (kInvalidArgument):
  // invalid JSON, not an object, an id that is not a UUID, unknown field, wrong type,
  // missing required field; the message names the field where it can. The event is
  // NOT validated: run validate_event on the bytes.
  Result<EncodedEvent> from_json(std::string_view json);

  // Event bytes (with or without the file identifier, possibly nested inside another
  // buffer) -> one line of strict JSON without newlines. Bytes that fail
  // verified_event, or strings that are not UTF-8, give kInvalidArgument; never aborts.
  Result<std::string> to_json(std::span<const std::uint8_t> event);

 private:
  explicit JsonCodec(std::unique_ptr<flatbuffers::Parser> parser);
  Result<std::vector<std::uint8_t>> parse_to_bytes(const std::string& json);
  Result<std::string> generate_text(const std::uint8_t* event);

  std::unique_ptr<flatbuffers::Parser> parser_;
};

}  // namespace kolabus::schemas
