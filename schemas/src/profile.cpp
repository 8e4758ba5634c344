#include <cctype>
#include <cstdint>
#include <memory>

#include <flatbuffers/idl.h>
#include <nlohmann/json.hpp>

#include <schemas/embedded.h>
#include <schemas/profile.h>
#include <schemas/validate.h>

namespace kolabus::schemas {

namespace {

using Json = nlohmann::ordered_json;

// The wrapper kind: its own fields are always kept, its union fields stripped by the
// rules of the kind they hold.
constexpr const char* kCorrection = "Correction";

// "ChildRecognition" -> "child_recognition": the profile's spelling of a kind.
std::string snake_case(std::string_view camel) {
  std::string out;
  for (char c : camel) {
    if (std::isupper(static_cast<unsigned char>(c)) != 0) {
      if (!out.empty()) out += '_';
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

// The compiled-in events.fbs, parsed once per thread: flatbuffers::Parser keeps state
// (its builder) and is not thread-safe.
struct Schema {
  flatbuffers::Parser parser;
  const flatbuffers::EnumDef* payload = nullptr;
  std::string error;  // non-empty: the schema did not load (a build bug)

  static flatbuffers::IDLOptions options() {
    flatbuffers::IDLOptions opts;
    opts.strict_json = true;
    opts.indent_step = -1;  // one line
    return opts;
  }

  Schema() : parser(options()) {
    const std::string text(events_schema_text());
    if (!parser.Parse(text.c_str()) || !parser.SetRootType("kolabus.events.Event")) {
      error = "compiled-in events.fbs does not parse: " + parser.error_;
      return;
    }
    payload = parser.enums_.Lookup("kolabus.events.Payload");
    if (payload == nullptr || !payload->is_union) error = "events.fbs has no union Payload";
  }

  // The table of a union member by its schema name ("Birth"), or nullptr.
  const flatbuffers::StructDef* member(const std::string& name) const {
    const flatbuffers::EnumVal* v = payload->Lookup(name);
    if (v == nullptr || v->union_type.base_type != flatbuffers::BASE_TYPE_STRUCT) return nullptr;
    return v->union_type.struct_def;
  }
};

Schema& schema() {
  thread_local Schema s;
  return s;
}

// The kinds a profile names: every Payload member except NONE and the Correction
// wrapper, keyed by their profile spelling.
std::map<std::string, const flatbuffers::StructDef*> profile_kinds(const Schema& s) {
  std::map<std::string, const flatbuffers::StructDef*> out;
  for (const flatbuffers::EnumVal* v : s.payload->Vals()) {
    if (v->union_type.base_type != flatbuffers::BASE_TYPE_STRUCT || v->name == kCorrection) {
      continue;
    }
    out.emplace(snake_case(v->name), v->union_type.struct_def);
  }
  return out;
}

std::set<std::string> all_fields(const flatbuffers::StructDef& table) {
  std::set<std::string> out;
  for (const flatbuffers::FieldDef* f : table.fields.vec) {
    if (!f->deprecated) out.insert(f->name);
  }
  return out;
}

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string join_keys(const std::map<std::string, const flatbuffers::StructDef*>& kinds) {
  std::string out;
  for (const auto& [name, table] : kinds) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

Result<FieldProfile> FieldProfile::parse(const std::vector<std::string>& entries) {
  Schema& s = schema();
  if (!s.error.empty()) return unexpected(Errc::kInternal, s.error);
  const auto kinds = profile_kinds(s);

  FieldProfile p;
  for (const auto& [name, table] : kinds) p.allowed_[name];

  // Allows first, then removals in order: "move.*", "-move.niks" and
  // "-move.niks", "move.*" mean the same.
  for (const bool removing : {false, true}) {
    for (const std::string& entry : entries) {
      const bool negative = !entry.empty() && entry[0] == '-';
      if (negative != removing) continue;
      const std::string_view body = std::string_view(entry).substr(negative ? 1 : 0);
      const std::string where = "profile entry \"" + entry + "\": ";
      if (body.empty()) return unexpected(Errc::kInvalidArgument, where + "empty");
      auto apply = [&](const std::string& kind, const std::set<std::string>& fields) {
        auto& allowed = p.allowed_[kind];
        for (const auto& f : fields) {
          if (negative) {
            allowed.erase(f);
          } else {
            allowed.insert(f);
          }
        }
      };
      if (body == "*") {
        for (const auto& [name, table] : kinds) apply(name, all_fields(*table));
        continue;
      }
      const auto dot = body.find('.');
      if (dot == std::string_view::npos) {
        return unexpected(Errc::kInvalidArgument,
                          where + "expected \"<kind>.<field>\", \"<kind>.*\" or \"*\"");
      }
      const std::string kind(body.substr(0, dot));
      const std::string field(body.substr(dot + 1));
      auto k = kinds.find(kind);
      if (k == kinds.end()) {
        std::string msg = where + "unknown kind \"" + kind + "\" (kinds: " + join_keys(kinds) + ")";
        if (kind == snake_case(kCorrection)) {
          msg +=
              "; a correction's own fields are always kept and its corrected payload follows "
              "the profile of the corrected kind";
        }
        return unexpected(Errc::kInvalidArgument, msg);
      }
      const std::set<std::string> fields = all_fields(*k->second);
      if (field == "*") {
        apply(kind, fields);
      } else if (fields.count(field) != 0) {
        apply(kind, {field});
      } else {
        return unexpected(Errc::kInvalidArgument, where + "unknown field \"" + field + "\" of " +
                                                      kind + " (fields: " + join(fields) + ")");
      }
    }
  }

  p.keeps_everything_ = true;
  for (const auto& [name, table] : kinds) {
    const bool whole = p.allowed_[name] == all_fields(*table);
    p.whole_kind_[name] = whole;
    p.keeps_everything_ = p.keeps_everything_ && whole;
  }
  return p;
}

bool FieldProfile::allows(events::Payload kind, std::string_view field) const {
  if (kind == events::Payload::Correction) return true;
  auto k = allowed_.find(snake_case(events::EnumNamePayload(kind)));
  return k != allowed_.end() && k->second.count(std::string(field)) != 0;
}

bool FieldProfile::allows_whole(events::Payload kind) const {
  if (keeps_everything_) return true;
  if (kind == events::Payload::Correction) return false;
  const char* name = events::EnumNamePayload(kind);
  if (name == nullptr || *name == '\0') return false;
  auto w = whole_kind_.find(snake_case(name));
  return w != whole_kind_.end() && w->second;
}

std::string FieldProfile::describe() const {
  if (keeps_everything_) return "*";
  std::string out;
  for (const auto& [kind, fields] : allowed_) {
    if (!out.empty()) out += ' ';
    auto w = whole_kind_.find(kind);
    if (w != whole_kind_.end() && w->second) {
      out += kind + ".*";
      continue;
    }
    out += kind + ".{";
    bool first = true;
    for (const auto& f : fields) {
      out += (first ? "" : ",") + f;
      first = false;
    }
    out += '}';
  }
  return out;
}

namespace {

struct Stripper {
  const Schema& s;
  const std::map<std::string, std::set<std::string>, std::less<>>& allowed;
  const std::map<std::string, bool, std::less<>>& whole_kind;
  events::Payload target_kind;  // of the event a correction corrects (for a void)

  // Strips `payload` (the JSON of a union member named `type_name`). Error or empty.
  std::string strip_payload(Json& payload, const std::string& type_name, const std::string& path) {
    const flatbuffers::StructDef* table = s.member(type_name);
    if (table == nullptr || !payload.is_object()) {
      return path + ": payload kind \"" + type_name + "\" is not known to this build";
    }
    if (type_name == kCorrection) return strip_correction(payload, *table, path);
    auto a = allowed.find(snake_case(type_name));
    if (a == allowed.end()) return path + ": payload kind \"" + type_name + "\" has no profile";
    for (const flatbuffers::FieldDef* f : table->fields.vec) {
      if (a->second.count(f->name) != 0) continue;
      const auto base = f->value.type.base_type;
      if (!f->IsRequired()) {
        payload.erase(f->name);
        if (base == flatbuffers::BASE_TYPE_UNION) payload.erase(f->name + "_type");
      } else if (base == flatbuffers::BASE_TYPE_STRING) {
        payload[f->name] = "";
      } else if (base == flatbuffers::BASE_TYPE_VECTOR) {
        payload[f->name] = Json::array();
      } else {
        // A required table, struct or union cannot be emptied generically: refuse
        // rather than deliver it.
        return path + "." + f->name + ": a required field of this type cannot be withheld";
      }
    }
    return {};
  }

  // A Correction keeps its own fields; each union in it holds a payload to strip.
  std::string strip_correction(Json& correction, const flatbuffers::StructDef& table,
                               const std::string& path) {
    // The reason is free text about the person: it may say anything any field of the
    // corrected kind says (a cause of death, a parent's NIK). It goes only to a profile
    // that allows every field of that kind.
    std::string kind;
    if (auto t = correction.find("corrected_type"); t != correction.end() && t->is_string()) {
      kind = snake_case(t->get<std::string>());
    } else if (target_kind != events::Payload::NONE) {
      kind = snake_case(events::EnumNamePayload(target_kind));
    }
    auto whole = whole_kind.find(kind);
    if (correction.contains("reason") && (whole == whole_kind.end() || !whole->second)) {
      correction["reason"] = std::string(kReasonWithheld);
    }
    for (const flatbuffers::FieldDef* f : table.fields.vec) {
      if (f->value.type.base_type != flatbuffers::BASE_TYPE_UNION) continue;
      auto value = correction.find(f->name);
      if (value == correction.end()) continue;
      auto type = correction.find(f->name + "_type");
      if (type == correction.end() || !type->is_string()) {
        return path + "." + f->name + ": a union value without its type";
      }
      auto err = strip_payload(*value, type->get<std::string>(), path + "." + f->name);
      if (!err.empty()) return err;
    }
    return {};
  }
};

}  // namespace

Result<std::vector<std::uint8_t>> strip_event(std::span<const std::uint8_t> event,
                                              const FieldProfile& profile,
                                              events::Payload target_kind) {
  // Verify even though the caller promises it: GenerateText aborts on a union value
  // with type NONE, and an unknown kind must be refused, not delivered whole.
  if (auto v = check_structure(event)) {
    return unexpected(Errc::kInvalidArgument, "cannot minimise the event: " + v->message);
  }
  if (profile.keeps_everything()) return std::vector<std::uint8_t>(event.begin(), event.end());

  Schema& s = schema();
  if (!s.error.empty()) return unexpected(Errc::kInternal, s.error);

  // Nested buffers may sit at any 4-byte boundary; read 8-byte fields from an aligned copy.
  std::vector<std::uint8_t> copy;
  const std::uint8_t* data = event.data();
  if (reinterpret_cast<std::uintptr_t>(data) % 8 != 0) {
    copy.assign(event.begin(), event.end());
    data = copy.data();
  }
  std::string text;
  if (!flatbuffers::GenerateText(s.parser, data, &text)) {
    return unexpected(Errc::kInvalidArgument,
                      "cannot minimise the event: a string is not valid UTF-8");
  }

  std::string stripped;
  try {
    Json j = Json::parse(text);
    auto type = j.find("payload_type");
    auto payload = j.find("payload");
    if (type == j.end() || !type->is_string() || payload == j.end()) {
      return unexpected(Errc::kInvalidArgument, "cannot minimise the event: no payload");
    }
    Stripper stripper{s, profile.allowed_, profile.whole_kind_, target_kind};
    auto err = stripper.strip_payload(*payload, type->get<std::string>(), "payload");
    if (!err.empty()) {
      return unexpected(Errc::kInvalidArgument, "cannot minimise the event: " + err);
    }
    stripped = j.dump();
  } catch (const Json::exception& e) {
    return unexpected(Errc::kInternal, std::string("GenerateText wrote invalid JSON: ") + e.what());
  }

  if (!s.parser.ParseJson(stripped.c_str())) {
    const std::string error = s.parser.error_;
    s.parser.builder_.Clear();
    return unexpected(Errc::kInternal, "the minimised event does not parse back: " + error);
  }
  const std::uint8_t* p = s.parser.builder_.GetBufferPointer();
  std::vector<std::uint8_t> out(p, p + s.parser.builder_.GetSize());
  s.parser.builder_.Clear();
  return out;
}

}  // namespace kolabus::schemas
