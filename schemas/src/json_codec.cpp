#include <array>
#include <cctype>
#include <cstring>

#include <flatbuffers/idl.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include <schemas/embedded.h>
#include <schemas/json_codec.h>
#include <schemas/validate.h>

namespace kolabus::schemas {

namespace {

using Json = nlohmann::ordered_json;

Json uuid_struct(const EventId& id) {
  Json bytes = Json::array();
  for (std::uint8_t b : id.bytes) bytes.push_back(b);
  return Json{{"bytes", bytes}};
}

// Replaces a UUID string at j[key] by the struct form. Error message or empty.
std::string uuid_string_to_struct(Json& j, const char* key, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const std::string&>();
  auto id = EventId::parse(s);
  if (!id) {
    return path + ": \"" + s.substr(0, 64) +
           "\" is not a UUID (8-4-4-4-12 hex digits, or 32 hex digits)";
  }
  *it = uuid_struct(*id);
  return {};
}

// Replaces a struct-form UUID at j[key] by its string; leaves anything else alone.
void uuid_struct_to_string(Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return;
  auto b = it->find("bytes");
  if (b == it->end() || !b->is_array() || b->size() != 16) return;
  EventId id;
  for (std::size_t i = 0; i < 16; ++i) {
    if (!(*b)[i].is_number_unsigned()) return;
    id.bytes[i] = (*b)[i].get<std::uint8_t>();
  }
  *it = id.to_string();
}

// The Parser's messages read "<file>(line, col): error: what" or "line: col: error:".
// Keep the "what", and name the field the error column points into, since the
// one-line text the Parser saw is not the user's.
std::string readable_parser_error(const std::string& error, const std::string& text) {
  std::string what = error;
  if (auto p = what.find("error: "); p != std::string::npos) what = what.substr(p + 7);
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  // The column is the number just before ": error".
  std::size_t col = 0;
  if (auto p = error.find(": error"); p != std::string::npos) {
    std::size_t q = p;
    while (q > 0 && std::isdigit(static_cast<unsigned char>(error[q - 1]))) --q;
    if (q < p) col = std::stoul(error.substr(q, p - q));
  }
  if (what.find("enum values need to be qualified") != std::string::npos) {
    what = "wrong type: a string where a number is expected";
  }
  const bool names_field = what.find("unknown field") != std::string::npos ||
                           what.find("required field is missing") != std::string::npos;
  if (col > 0 && col <= text.size() && !names_field) {
    // The last "name": before the column.
    std::size_t end = text.rfind("\":", col);
    if (end != std::string::npos) {
      std::size_t start = text.rfind('"', end - 1);
      if (start != std::string::npos && end > start + 1) {
        what += " (at field \"" + text.substr(start + 1, end - start - 1) + "\")";
      }
    }
  }
  return what;
}

}  // namespace

JsonCodec::JsonCodec(std::unique_ptr<flatbuffers::Parser> parser) : parser_(std::move(parser)) {}
JsonCodec::JsonCodec(JsonCodec&&) noexcept = default;
JsonCodec& JsonCodec::operator=(JsonCodec&&) noexcept = default;
JsonCodec::~JsonCodec() = default;

Result<JsonCodec> JsonCodec::create() {
  if (sodium_init() < 0) return unexpected(Errc::kInternal, "libsodium failed to initialise");
  flatbuffers::IDLOptions opts;
  opts.strict_json = true;
  opts.indent_step = -1;  // one line
  auto parser = std::make_unique<flatbuffers::Parser>(opts);
  const std::string schema(events_schema_text());
  if (!parser->Parse(schema.c_str()) || !parser->SetRootType("kolabus.events.Event")) {
    return unexpected(Errc::kInternal, "compiled-in events.fbs does not parse: " + parser->error_);
  }
  return JsonCodec(std::move(parser));
}

Result<std::vector<std::uint8_t>> JsonCodec::parse_to_bytes(const std::string& json) {
  if (!parser_->ParseJson(json.c_str())) {
    return unexpected(Errc::kInvalidArgument, readable_parser_error(parser_->error_, json));
  }
  const std::uint8_t* p = parser_->builder_.GetBufferPointer();
  std::vector<std::uint8_t> out(p, p + parser_->builder_.GetSize());
  parser_->builder_.Clear();
  return out;
}

Result<std::string> JsonCodec::generate_text(const std::uint8_t* event) {
  std::string text;
  if (!flatbuffers::GenerateText(*parser_, event, &text)) {
    return unexpected(Errc::kInvalidArgument,
                      "the event cannot be written as JSON (a string is not valid UTF-8)");
  }
  return text;
}

Result<EncodedEvent> JsonCodec::from_json(std::string_view json) {
  Json j;
  try {
    j = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return unexpected(Errc::kInvalidArgument, std::string("invalid JSON: ") + e.what());
  }
  if (!j.is_object()) return unexpected(Errc::kInvalidArgument, "an event must be a JSON object");
  if (auto it = j.find("id"); it != j.end() && it->is_null()) j.erase(it);
  const bool derive = !j.contains("id");
  if (auto err = uuid_string_to_struct(j, "id", "id"); !err.empty()) {
    return unexpected(Errc::kInvalidArgument, err);
  }
  if (auto p = j.find("payload"); p != j.end() && p->is_object()) {
    if (auto err = uuid_string_to_struct(*p, "target_id", "payload.target_id"); !err.empty()) {
      return unexpected(Errc::kInvalidArgument, err);
    }
  }
  if (derive) j["id"] = uuid_struct(EventId{});

  std::string text;
  try {
    text = j.dump();
  } catch (const Json::exception& e) {
    return unexpected(Errc::kInvalidArgument, std::string("invalid JSON: ") + e.what());
  }
  auto bytes = parse_to_bytes(text);
  if (!bytes) return unexpected(bytes.error());

  EncodedEvent out;
  out.id_derived = derive;
  if (derive) {
    // Canonical bytes: what the Parser builds from the schema-ordered text, so that
    // the input's key order and spacing do not change the id.
    const events::Event* parsed = verified_event(*bytes);
    if (parsed == nullptr) {
      return unexpected(Errc::kInvalidArgument,
                        "the event does not verify after parsing (a union without its type?)");
    }
    auto canonical_text = generate_text(bytes->data());
    if (!canonical_text) return unexpected(canonical_text.error());
    auto canonical = parse_to_bytes(*canonical_text);
    if (!canonical) return unexpected(canonical.error());
    std::array<std::uint8_t, 16> hash{};
    crypto_generichash(hash.data(), hash.size(), canonical->data(), canonical->size(), nullptr, 0);
    hash[6] = static_cast<std::uint8_t>(0x80 | (hash[6] & 0x0f));  // UUID version 8
    hash[8] = static_cast<std::uint8_t>(0x80 | (hash[8] & 0x3f));  // RFC 9562 variant
    out.id.bytes = hash;
    out.bytes = std::move(*canonical);
    // The id is a struct stored inline in the root table: write it in place.
    const auto* root = flatbuffers::GetRoot<events::Event>(out.bytes.data());
    const auto offset = static_cast<std::size_t>(
        reinterpret_cast<const std::uint8_t*>(root->id()->bytes()->Data()) - out.bytes.data());
    KOLABUS_CHECK(offset + 16 <= out.bytes.size());
    std::memcpy(out.bytes.data() + offset, hash.data(), hash.size());
  } else {
    out.bytes = std::move(*bytes);
    const events::Event* parsed = verified_event(out.bytes);
    if (parsed == nullptr || parsed->id() == nullptr) {
      return unexpected(Errc::kInvalidArgument,
                        "the event does not verify after parsing (a union without its type?)");
    }
    std::memcpy(out.id.bytes.data(), parsed->id()->bytes()->Data(), 16);
  }
  return out;
}

Result<std::string> JsonCodec::to_json(std::span<const std::uint8_t> event) {
  if (auto v = check_structure(event)) {
    return unexpected(Errc::kInvalidArgument, "cannot convert to JSON: " + v->message);
  }
  // Nested buffers may sit at any 4-byte boundary; read 8-byte fields from an aligned copy.
  std::vector<std::uint8_t> copy;
  const std::uint8_t* data = event.data();
  if (reinterpret_cast<std::uintptr_t>(data) % 8 != 0) {
    copy.assign(event.begin(), event.end());
    data = copy.data();
  }
  auto text = generate_text(data);
  if (!text) return unexpected(text.error());
  try {
    Json j = Json::parse(*text);
    uuid_struct_to_string(j, "id");
    if (auto p = j.find("payload"); p != j.end() && p->is_object()) {
      uuid_struct_to_string(*p, "target_id");
    }
    return j.dump();
  } catch (const Json::exception& e) {
    return unexpected(Errc::kInternal, std::string("GenerateText wrote invalid JSON: ") + e.what());
  }
}

}  // namespace kolabus::schemas
