#include "ingest.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include <schemas/protocol_generated.h>

namespace kolabus::adapters::gateway {

namespace {

using Json = nlohmann::ordered_json;

// The codec's messages name the field in prose (flatbuffers::Parser's wording, see
// json_codec.cpp); pull it out so clients get a field as the validator's errors do.
EventError codec_error(std::size_t index, const std::string& message) {
  EventError e{index, protocol::EnumNameErrorCode(protocol::ErrorCode::MalformedEvent), "",
               message};
  auto word_after = [&](std::string_view marker) -> std::string {
    const auto p = message.find(marker);
    if (p == std::string::npos) return {};
    std::size_t q = p + marker.size();
    std::size_t end = q;
    while (end < message.size() &&
           (std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '_')) {
      ++end;
    }
    return message.substr(q, end - q);
  };
  if (auto p = message.find("(at field \""); p != std::string::npos) {
    const auto q = p + 11;
    const auto end = message.find('"', q);
    if (end != std::string::npos) e.field = message.substr(q, end - q);
  } else if (auto name = word_after("required field is missing: "); !name.empty()) {
    e.code = protocol::EnumNameErrorCode(protocol::ErrorCode::MissingField);
    const auto table = word_after(name + " in ");
    e.field = table.empty() || table == "Event" ? name : "payload." + name;
  } else if (auto unknown = word_after("unknown field: "); !unknown.empty()) {
    e.field = unknown;
  } else if (message.rfind("payload.target_id:", 0) == 0) {
    e.field = "payload.target_id";
  } else if (message.rfind("id:", 0) == 0) {
    e.field = "id";
  }
  return e;
}

// The deepest nesting of arrays and objects in `body`, outside strings; stops counting
// past `limit`. A JSON event nests 4 deep; a body of a million '[' must not reach the
// recursive parts of the parsers and the dump.
std::size_t nesting_depth(std::string_view body, std::size_t limit) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

Result<Ingested> ingest_body(std::string_view body, std::size_t max_batch,
                             schemas::JsonCodec& codec, const schemas::ValidationContext& rules) {
  if (body.empty()) return unexpected(Errc::kInvalidArgument, "the body is empty");
  if (nesting_depth(body, kMaxNesting) > kMaxNesting) {
    return unexpected(Errc::kInvalidArgument, "the body nests arrays and objects more than " +
                                                  std::to_string(kMaxNesting) + " deep");
  }
  Json doc;
  try {
    doc = Json::parse(body.begin(), body.end());
  } catch (const Json::exception& e) {
    return unexpected(Errc::kInvalidArgument, std::string("the body is not JSON: ") + e.what());
  }
  std::vector<const Json*> items;
  if (doc.is_object()) {
    items.push_back(&doc);
  } else if (doc.is_array()) {
    if (doc.empty()) return unexpected(Errc::kInvalidArgument, "the array holds no event");
    if (doc.size() > max_batch) {
      return unexpected(Errc::kInvalidArgument,
                        "the array holds " + std::to_string(doc.size()) + " events; at most " +
                            std::to_string(max_batch) + " (max_batch) are accepted in one request");
    }
    for (const auto& item : doc) items.push_back(&item);
  } else {
    return unexpected(Errc::kInvalidArgument,
                      "the body must be one event (a JSON object) or an array of events");
  }

  Ingested out;
  out.total = items.size();
  out.events.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!items[i]->is_object()) {
      out.errors.push_back(
          {i, protocol::EnumNameErrorCode(protocol::ErrorCode::MalformedEvent), "",
           "an event must be a JSON object, not " + std::string(items[i]->type_name())});
      continue;
    }
    auto encoded = codec.from_json(items[i]->dump());
    if (!encoded) {
      out.errors.push_back(codec_error(i, encoded.error().message));
      continue;
    }
    if (auto v = schemas::validate_event(encoded->bytes, rules)) {
      out.errors.push_back({i, protocol::EnumNameErrorCode(v->code), v->field, v->message});
      continue;
    }
    out.events.push_back(std::move(*encoded));
  }
  if (!out.errors.empty()) out.events.clear();
  return out;
}

}  // namespace kolabus::adapters::gateway
