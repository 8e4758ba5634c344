#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_map>

#include <schemas/nik.h>
#include <schemas/validate.h>

namespace kolabus::schemas {

namespace {

namespace ev = kolabus::events;
using protocol::ErrorCode;
using Opt = std::optional<Violation>;

constexpr TimeMs kHourMs = 3'600'000;
// Indonesia spans UTC+7 (WIB) to UTC+9 (WIT). A date printed in a NIK or on a
// certificate is a local date, so an instant's "date" is accepted as any of the
// dates it has between UTC and UTC+9.
constexpr TimeMs kMaxLocalOffsetMs = 9 * kHourMs;

Violation violation(ErrorCode code, std::string field, const std::string& rule) {
  std::string message = field.empty() ? rule : field + ": " + rule;
  return Violation{code, std::move(field), std::move(message)};
}

// A field's path, e.g. "payload." "niks" [3]. Spelled out only when a violation names
// it: building every path as a string on the way cost allocations on every event.
struct Path {
  std::string_view prefix;  // "", "payload.", "payload.corrected."
  std::string_view name;
  std::int64_t index = -1;  // >= 0: an element of the list `name`

  std::string str() const {
    std::string out;
    out.reserve(prefix.size() + name.size());
    out.append(prefix).append(name);
    if (index >= 0) out += "[" + std::to_string(index) + "]";
    return out;
  }
};

Violation violation(ErrorCode code, const Path& field, const std::string& rule) {
  return violation(code, field.str(), rule);
}

// User-supplied text inside a message: printable ASCII kept, the rest escaped, long
// values cut, so that a message is always short valid UTF-8.
std::string printable(std::string_view s) {
  static constexpr std::size_t kMax = 40;
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

std::string_view view(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view() : std::string_view(s->c_str(), s->size());
}

std::string format_time(TimeMs t) {
  const CivilDate d = from_epoch_ms(t);
  TimeMs ms_of_day = t % 86'400'000;
  if (ms_of_day < 0) ms_of_day += 86'400'000;
  const auto secs = static_cast<int>(ms_of_day / 1000);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", d.year, d.month, d.day,
                secs / 3600, secs / 60 % 60, secs % 60);
  return buf;
}

std::string join(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ", ";
    out += printable(v[i]);
  }
  return out + "]";
}

const char* sex_name(ev::Sex s) {
  switch (s) {
    case ev::Sex::Unknown:
      return "Unknown";
    case ev::Sex::Male:
      return "Male";
    case ev::Sex::Female:
      return "Female";
  }
  return "?";
}

const char* move_type_name(ev::MoveType t) {
  switch (t) {
    case ev::MoveType::Unspecified:
      return "Unspecified";
    case ev::MoveType::WithinKecamatan:
      return "WithinKecamatan";
    case ev::MoveType::BetweenKecamatan:
      return "BetweenKecamatan";
    case ev::MoveType::BetweenCities:
      return "BetweenCities";
    case ev::MoveType::BetweenProvinces:
      return "BetweenProvinces";
  }
  return "?";
}

bool is_known_kind(ev::Payload t) { return t >= ev::Payload::Birth && t <= ev::Payload::MAX; }

// ---------------------------------------------------------------------------------
// Structure. The generated Verifier is authoritative. When it fails, a second,
// lenient walk (the same checks, but required fields treated as optional) tells an
// absent required field (MissingField, with its path) from broken bytes.

enum class FieldKind { kI8, kU8, kU16, kI64, kString, kStringVector, kUuid, kUnionType, kUnion };
struct FieldSpec {
  flatbuffers::voffset_t vt;
  FieldKind kind;
  const char* name;
  bool required;
  flatbuffers::voffset_t type_vt = 0;  // kUnion: the field holding its type
};

constexpr FieldSpec kEventFields[] = {
    {ev::Event::VT_ID, FieldKind::kUuid, "id", true},
    {ev::Event::VT_SCHEMA_VERSION, FieldKind::kU16, "schema_version", false},
    {ev::Event::VT_OCCURRED_AT, FieldKind::kI64, "occurred_at", false},
    {ev::Event::VT_RECORDED_AT, FieldKind::kI64, "recorded_at", false},
    {ev::Event::VT_SOURCE, FieldKind::kString, "source", false},
    {ev::Event::VT_REGIONS, FieldKind::kStringVector, "regions", true},
    {ev::Event::VT_PAYLOAD_TYPE, FieldKind::kUnionType, "payload_type", false},
    {ev::Event::VT_PAYLOAD, FieldKind::kUnion, "payload", true, ev::Event::VT_PAYLOAD_TYPE},
};
constexpr FieldSpec kBirthFields[] = {
    {ev::Birth::VT_CHILD_NAME, FieldKind::kString, "child_name", true},
    {ev::Birth::VT_SEX, FieldKind::kI8, "sex", false},
    {ev::Birth::VT_BORN_AT, FieldKind::kI64, "born_at", false},
    {ev::Birth::VT_PLACE_OF_BIRTH, FieldKind::kString, "place_of_birth", false},
    {ev::Birth::VT_VILLAGE_CODE, FieldKind::kString, "village_code", true},
    {ev::Birth::VT_MOTHER_NIK, FieldKind::kString, "mother_nik", true},
    {ev::Birth::VT_FATHER_NIK, FieldKind::kString, "father_nik", false},
    {ev::Birth::VT_KK_NUMBER, FieldKind::kString, "kk_number", true},
    {ev::Birth::VT_BIRTH_CERTIFICATE_NO, FieldKind::kString, "birth_certificate_no", false},
    {ev::Birth::VT_REPORTING_FACILITY, FieldKind::kString, "reporting_facility", false},
    {ev::Birth::VT_CHILD_NIK, FieldKind::kString, "child_nik", false},
};
constexpr FieldSpec kDeathFields[] = {
    {ev::Death::VT_NIK, FieldKind::kString, "nik", true},
    {ev::Death::VT_NAME, FieldKind::kString, "name", true},
    {ev::Death::VT_DIED_AT, FieldKind::kI64, "died_at", false},
    {ev::Death::VT_PLACE_OF_DEATH, FieldKind::kString, "place_of_death", false},
    {ev::Death::VT_VILLAGE_CODE, FieldKind::kString, "village_code", true},
    {ev::Death::VT_DEATH_CERTIFICATE_NO, FieldKind::kString, "death_certificate_no", false},
    {ev::Death::VT_REPORTER, FieldKind::kString, "reporter", false},
    {ev::Death::VT_CAUSE_OF_DEATH, FieldKind::kString, "cause_of_death", false},
};
constexpr FieldSpec kMoveFields[] = {
    {ev::Move::VT_NIKS, FieldKind::kStringVector, "niks", true},
    {ev::Move::VT_KK_NUMBER, FieldKind::kString, "kk_number", true},
    {ev::Move::VT_ORIGIN_VILLAGE, FieldKind::kString, "origin_village", true},
    {ev::Move::VT_DESTINATION_VILLAGE, FieldKind::kString, "destination_village", true},
    {ev::Move::VT_MOVED_AT, FieldKind::kI64, "moved_at", false},
    {ev::Move::VT_SKPWNI_NO, FieldKind::kString, "skpwni_no", false},
    {ev::Move::VT_MOVE_TYPE, FieldKind::kI8, "move_type", false},
};
constexpr FieldSpec kCorrectionFields[] = {
    {ev::Correction::VT_TARGET_ID, FieldKind::kUuid, "target_id", true},
    {ev::Correction::VT_REASON, FieldKind::kString, "reason", true},
    {ev::Correction::VT_VOID_, FieldKind::kU8, "void", false},
    {ev::Correction::VT_CORRECTED_TYPE, FieldKind::kUnionType, "corrected_type", false},
    {ev::Correction::VT_CORRECTED, FieldKind::kUnion, "corrected", false,
     ev::Correction::VT_CORRECTED_TYPE},
};

std::span<const FieldSpec> fields_of(ev::Payload kind) {
  switch (kind) {
    case ev::Payload::Birth:
      return kBirthFields;
    case ev::Payload::Death:
      return kDeathFields;
    case ev::Payload::Move:
      return kMoveFields;
    case ev::Payload::Correction:
      return kCorrectionFields;
    case ev::Payload::NONE:
      return {};
  }
  return {};
}

bool lenient_verify(flatbuffers::Verifier& v, const flatbuffers::Table* t,
                    std::span<const FieldSpec> fields) {
  if (t == nullptr) return true;
  if (!t->VerifyTableStart(v)) return false;
  for (const FieldSpec& f : fields) {
    bool ok = true;
    switch (f.kind) {
      case FieldKind::kI8:
        ok = t->VerifyField<std::int8_t>(v, f.vt, 1);
        break;
      case FieldKind::kU8:
      case FieldKind::kUnionType:
        ok = t->VerifyField<std::uint8_t>(v, f.vt, 1);
        break;
      case FieldKind::kU16:
        ok = t->VerifyField<std::uint16_t>(v, f.vt, 2);
        break;
      case FieldKind::kI64:
        ok = t->VerifyField<std::int64_t>(v, f.vt, 8);
        break;
      case FieldKind::kUuid:
        ok = t->VerifyField<ev::Uuid>(v, f.vt, 1);
        break;
      case FieldKind::kString:
        ok = t->VerifyOffset(v, f.vt) &&
             v.VerifyString(t->GetPointer<const flatbuffers::String*>(f.vt));
        break;
      case FieldKind::kStringVector: {
        // Read the offset only once it is known to point inside the buffer.
        ok = t->VerifyOffset(v, f.vt);
        if (ok) {
          auto vec =
              t->GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>*>(
                  f.vt);
          ok = v.VerifyVector(vec) && v.VerifyVectorOfStrings(vec);
        }
        break;
      }
      case FieldKind::kUnion: {
        // The type field precedes the value in every spec, so it is verified already.
        const auto type = static_cast<ev::Payload>(t->GetField<std::uint8_t>(f.type_vt, 0));
        ok = t->VerifyOffset(v, f.vt);
        if (ok && is_known_kind(type)) {
          ok = lenient_verify(v, t->GetPointer<const flatbuffers::Table*>(f.vt), fields_of(type));
        }
        break;
      }
    }
    if (!ok) return false;
  }
  return v.EndTable();
}

// REQUIRES: lenient_verify passed on `t`.
Opt find_missing_required(const flatbuffers::Table* t, std::span<const FieldSpec> fields,
                          const std::string& prefix) {
  if (t == nullptr) return std::nullopt;
  for (const FieldSpec& f : fields) {
    const bool present = t->GetOptionalFieldOffset(f.vt) != 0;
    if (f.required && !present) {
      if (f.kind == FieldKind::kUnion && t->GetField<std::uint8_t>(f.type_vt, 0) != 0) {
        return violation(ErrorCode::MalformedEvent, prefix + f.name,
                         "its type is set (" +
                             std::to_string(t->GetField<std::uint8_t>(f.type_vt, 0)) +
                             ") but the value is absent");
      }
      return violation(ErrorCode::MissingField, prefix + f.name, "required field is absent");
    }
    if (f.kind == FieldKind::kUnion && present) {
      const auto type = static_cast<ev::Payload>(t->GetField<std::uint8_t>(f.type_vt, 0));
      if (is_known_kind(type)) {
        if (auto v = find_missing_required(t->GetPointer<const flatbuffers::Table*>(f.vt),
                                           fields_of(type), prefix + f.name + ".")) {
          return v;
        }
      }
    }
  }
  return std::nullopt;
}

flatbuffers::Verifier::Options verifier_options() {
  flatbuffers::Verifier::Options o;
  // Event > Correction > payload is the deepest legal nesting; 16 leaves room and
  // stops hostile chains of corrections early.
  o.max_depth = 16;
  o.max_tables = 4096;
  o.check_alignment = true;
  o.check_nested_flatbuffers = true;
  return o;
}

Opt check_union(ev::Payload type, const void* value, const std::string& path, bool top_level) {
  const std::string type_field = top_level ? "payload_type" : path + "_type";
  if (type == ev::Payload::NONE) {
    if (value != nullptr) {
      return violation(ErrorCode::MalformedEvent, path,
                       "has a value but " + type_field + " is NONE");
    }
    return std::nullopt;
  }
  if (value == nullptr) {
    return violation(ErrorCode::MalformedEvent, path,
                     type_field + " is set (" + std::to_string(static_cast<int>(type)) +
                         ") but the value is absent");
  }
  if (!is_known_kind(type)) {
    return violation(ErrorCode::UnknownKind, path,
                     "kind number " + std::to_string(static_cast<int>(type)) +
                         " is not known to this broker (it knows birth, death, move and "
                         "correction)");
  }
  if (type == ev::Payload::Correction) {
    auto c = static_cast<const ev::Correction*>(value);
    return check_union(c->corrected_type(), c->corrected(), path + ".corrected", false);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------
// Rules.

enum class TextClass { kName, kDocument, kFree };

Opt check_text(std::string_view s, const Path& field, std::size_t max_bytes, TextClass cls) {
  if (!is_valid_utf8(s)) return violation(ErrorCode::InvalidValue, field, "is not valid UTF-8");
  if (s.size() > max_bytes) {
    return violation(ErrorCode::InvalidValue, field,
                     "is " + std::to_string(s.size()) + " bytes long; at most " +
                         std::to_string(max_bytes) + " are allowed");
  }
  if (cls != TextClass::kFree) {
    for (std::size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      const bool c1 = c == 0xC2 && i + 1 < s.size() &&
                      static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
                      static_cast<unsigned char>(s[i + 1]) <= 0x9F;
      if (c < 0x20 || c == 0x7f || c1) {
        return violation(ErrorCode::InvalidValue, field,
                         "contains a control character at byte " + std::to_string(i) +
                             "; names and document numbers must be printable text");
      }
    }
  }
  return std::nullopt;
}

// A required string: present and non-empty, then the text rules.
Opt check_required_text(const flatbuffers::String* s, const Path& field, std::size_t max_bytes,
                        TextClass cls) {
  if (view(s).empty())
    return violation(ErrorCode::MissingField, field, "required, must not be empty");
  return check_text(view(s), field, max_bytes, cls);
}

Opt check_optional_text(const flatbuffers::String* s, const Path& field, std::size_t max_bytes,
                        TextClass cls) {
  return check_text(view(s), field, max_bytes, cls);
}

// For element i of a list checked in order, the first earlier index with the same
// text. Short lists (every real event) are scanned; a long one gets a hash map, so
// that a hostile list stays linear.
class Repeats {
 public:
  using List = flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>;
  explicit Repeats(const List& list) : list_(list) {}

  // REQUIRES: called for i = 0, 1, 2, ... in turn.
  std::optional<flatbuffers::uoffset_t> earlier(flatbuffers::uoffset_t i) {
    const std::string_view s = view(list_.Get(i));
    if (list_.size() <= kScanMax) {
      for (flatbuffers::uoffset_t j = 0; j < i; ++j) {
        if (view(list_.Get(j)) == s) return j;
      }
      return std::nullopt;
    }
    auto [it, inserted] = seen_.emplace(s, i);
    if (inserted) return std::nullopt;
    return it->second;
  }

 private:
  static constexpr flatbuffers::uoffset_t kScanMax = 16;
  const List& list_;
  std::unordered_map<std::string_view, flatbuffers::uoffset_t> seen_;
};

// The villages a payload names, as views into it: payload_villages before sorting
// and dedup (at most two; they may repeat or be empty). Returns how many.
std::size_t village_views(ev::Payload type, const void* payload,
                          std::array<std::string_view, 2>& out) {
  if (payload == nullptr) return 0;
  switch (type) {
    case ev::Payload::Birth:
      out[0] = view(static_cast<const ev::Birth*>(payload)->village_code());
      return 1;
    case ev::Payload::Death:
      out[0] = view(static_cast<const ev::Death*>(payload)->village_code());
      return 1;
    case ev::Payload::Move: {
      const auto* m = static_cast<const ev::Move*>(payload);
      out[0] = view(m->origin_village());
      out[1] = view(m->destination_village());
      return 2;
    }
    case ev::Payload::Correction: {
      const auto* c = static_cast<const ev::Correction*>(payload);
      // A correction of a correction is refused elsewhere; never recurse into one here.
      if (c->void_() || c->corrected_type() == ev::Payload::Correction) return 0;
      return village_views(c->corrected_type(), c->corrected(), out);
    }
    case ev::Payload::NONE:
      break;
  }
  return 0;
}

class Checker {
 public:
  explicit Checker(const ValidationContext& ctx) : ctx_(ctx) {}

  Opt event(const ev::Event& e) {
    if (e.schema_version() != 1) {
      return violation(ErrorCode::InvalidValue, "schema_version",
                       "version " + std::to_string(e.schema_version()) +
                           " is not understood; this broker understands version 1");
    }
    if (!view(e.source()).empty()) {
      return violation(ErrorCode::InvalidValue, "source",
                       "set by the broker from the authenticated connection; a publisher must "
                       "leave it empty");
    }
    if (auto v = time(e.occurred_at(), Path{"", "occurred_at"})) return v;
    if (auto v = time(e.recorded_at(), Path{"", "recorded_at"})) return v;
    if (e.recorded_at() < e.occurred_at()) {
      return violation(ErrorCode::InvalidDate, "recorded_at",
                       format_time(e.recorded_at()) + " is recorded before it occurred (" +
                           format_time(e.occurred_at()) + ")");
    }
    if (auto v = regions(e)) return v;
    if (auto v = payload(e.payload_type(), e.payload(), "payload.", &e)) return v;
    return regions_match(e);
  }

 private:
  Opt time(TimeMs t, const Path& field) const {
    if (t == 0) {
      return violation(ErrorCode::MissingField, field,
                       "required (UTC milliseconds since 1970; 0 means absent)");
    }
    static const TimeMs kEarliest = to_epoch_ms({1900, 1, 1});
    if (t < kEarliest) {
      return violation(ErrorCode::InvalidDate, field, format_time(t) + " is before 1900-01-01");
    }
    if (t > ctx_.now_ms + ctx_.max_clock_skew_ms) {
      return violation(
          ErrorCode::InvalidDate, field,
          format_time(t) + " is in the future (now is " + format_time(ctx_.now_ms) + ")");
    }
    return std::nullopt;
  }

  Opt village(std::string_view code, const Path& field) const {
    if (code.empty())
      return violation(ErrorCode::MissingField, field, "required, must not be empty");
    if (!ctx_.regions.is_village(code)) {
      std::string what = printable(code) +
                         " is not a village code in the Kemendagri list (edition " +
                         std::string(RegionTable::kEdition) + ")";
      if (const Region* r = ctx_.regions.find(code)) {
        what += "; it is the " + std::string(region_level_name(r->level)) + " " +
                std::string(r->name) + ", and events name 10-digit villages";
      }
      return violation(ErrorCode::UnknownRegion, field, what);
    }
    return std::nullopt;
  }

  // A present NIK: parsed into *out.
  Opt nik(std::string_view s, const Path& field, NikInfo* out) const {
    auto r = parse_nik(s, ctx_.now_ms, ctx_.regions);
    if (auto* err = std::get_if<std::string>(&r)) {
      return violation(ErrorCode::InvalidNik, field, *err);
    }
    *out = std::get<NikInfo>(r);
    return std::nullopt;
  }

  Opt required_nik(const flatbuffers::String* s, const Path& field, NikInfo* out) const {
    if (view(s).empty())
      return violation(ErrorCode::MissingField, field, "required, must not be empty");
    return nik(view(s), field, out);
  }

  Opt kk(const flatbuffers::String* s, const Path& field) const {
    if (view(s).empty())
      return violation(ErrorCode::MissingField, field, "required, must not be empty");
    auto r = parse_kk(view(s), ctx_.now_ms, ctx_.regions);
    if (auto* err = std::get_if<std::string>(&r)) {
      return violation(ErrorCode::InvalidKk, field, *err);
    }
    return std::nullopt;
  }

  Opt regions(const ev::Event& e) const {
    const auto* rs = e.regions();
    if (rs == nullptr || rs->size() == 0) {
      return violation(ErrorCode::MissingField, "regions",
                       "required, must list at least one 10-digit village code");
    }
    Repeats seen(*rs);
    for (flatbuffers::uoffset_t i = 0; i < rs->size(); ++i) {
      const Path field{"", "regions", i};
      if (auto v = village(view(rs->Get(i)), field)) return v;
      if (const auto first = seen.earlier(i)) {
        return violation(ErrorCode::InvalidRegions, field,
                         "duplicate of regions[" + std::to_string(*first) + "]");
      }
    }
    return std::nullopt;
  }

  // REQUIRES: regions(e) passed.
  Opt regions_match(const ev::Event& e) const {
    // The common case without a copy: every village the payload names is listed,
    // and (unless a correction) nothing else is. The payload's villages are distinct
    // after dedup, so "as many regions as villages, each village listed" is set
    // equality even if the list repeated a code.
    const auto* rs = e.regions();
    std::array<std::string_view, 2> need_views;
    std::size_t n = village_views(e.payload_type(), e.payload(), need_views);
    if (n == 2 && need_views[0] == need_views[1]) n = 1;
    bool ok = e.payload_type() == ev::Payload::Correction || rs->size() == n;
    for (std::size_t k = 0; ok && k < n; ++k) {
      ok = std::any_of(rs->begin(), rs->end(),
                       [&](const flatbuffers::String* s) { return view(s) == need_views[k]; });
    }
    if (ok) return std::nullopt;
    return regions_mismatch(e);
  }

  // The message for a regions list regions_match refused.
  Opt regions_mismatch(const ev::Event& e) const {
    std::set<std::string> have;
    for (const auto* s : *e.regions()) have.emplace(view(s));
    const auto type = e.payload_type();
    const std::vector<std::string> need = payload_villages(type, e.payload());
    if (type == ev::Payload::Correction) {
      std::vector<std::string> missing;
      for (const auto& code : need) {
        if (!have.count(code)) missing.push_back(code);
      }
      if (!missing.empty()) {
        return violation(ErrorCode::InvalidRegions, "regions",
                         "must include the corrected payload's villages " + join(need) +
                             "; missing " + join(missing));
      }
      return std::nullopt;
    }
    if (std::vector<std::string>(have.begin(), have.end()) != need) {
      return violation(ErrorCode::InvalidRegions, "regions",
                       "must be exactly the villages the " + std::string(kind_name(type)) +
                           " names: expected " + join(need) + ", got " +
                           join(std::vector<std::string>(have.begin(), have.end())));
    }
    return std::nullopt;
  }

  // `e` is the enclosing event (for a Correction's self-reference check).
  Opt payload(ev::Payload type, const void* p, std::string_view prefix, const ev::Event* e) const {
    switch (type) {
      case ev::Payload::Birth:
        return birth(*static_cast<const ev::Birth*>(p), prefix);
      case ev::Payload::Death:
        return death(*static_cast<const ev::Death*>(p), prefix);
      case ev::Payload::Move:
        return move(*static_cast<const ev::Move*>(p), prefix);
      case ev::Payload::Correction:
        return correction(*static_cast<const ev::Correction*>(p), prefix, e);
      case ev::Payload::NONE:
        break;
    }
    // check_structure has refused NONE and unknown kinds already.
    return violation(ErrorCode::UnknownKind, std::string(prefix.substr(0, prefix.size() - 1)),
                     "kind not known to this broker");
  }

  // The local dates (UTC .. UTC+9) of an instant.
  static std::pair<CivilDate, CivilDate> local_dates(TimeMs t) {
    return {from_epoch_ms(t), from_epoch_ms(t + kMaxLocalOffsetMs)};
  }

  static CivilDate add_years(CivilDate d, int years) {
    CivilDate r{d.year + years, d.month, d.day};
    if (!is_valid_date(r)) r = {r.year, 3, 1};  // 29 February in a common year
    return r;
  }

  Opt parent_age(TimeMs born_at, const NikInfo& parent, const char* who, std::string_view prefix,
                 const Path& nik_field) const {
    const CivilDate birth_day = local_dates(born_at).second;
    if (birth_day < add_years(parent.birth_date, kMinParentAgeYears)) {
      return violation(ErrorCode::InvalidDate, Path{prefix, "born_at"},
                       "the child's birth on " + format_date(birth_day) + " is less than " +
                           std::to_string(kMinParentAgeYears) + " years after the " + who +
                           "'s birth on " + format_date(parent.birth_date) + " (from " +
                           nik_field.str() + ")");
    }
    return std::nullopt;
  }

  Opt birth(const ev::Birth& b, std::string_view prefix) const {
    if (auto v = check_required_text(b.child_name(), Path{prefix, "child_name"}, kMaxNameBytes,
                                     TextClass::kName)) {
      return v;
    }
    if (b.sex() != ev::Sex::Male && b.sex() != ev::Sex::Female) {
      return violation(ErrorCode::InvalidValue, Path{prefix, "sex"},
                       b.sex() == ev::Sex::Unknown
                           ? std::string("must be Male or Female for a registered birth")
                           : "value " + std::to_string(static_cast<int>(b.sex())) +
                                 " is not a known sex (Male or Female)");
    }
    if (auto v = time(b.born_at(), Path{prefix, "born_at"})) return v;
    if (auto v = check_optional_text(b.place_of_birth(), Path{prefix, "place_of_birth"},
                                     kMaxTextBytes, TextClass::kFree)) {
      return v;
    }
    if (auto v = village(view(b.village_code()), Path{prefix, "village_code"})) return v;
    NikInfo mother{};
    if (auto v = required_nik(b.mother_nik(), Path{prefix, "mother_nik"}, &mother)) return v;
    if (mother.sex != ev::Sex::Female) {
      char buf[128];
      std::snprintf(buf, sizeof buf,
                    "day part %02d is a man's; a mother's NIK must have 40 added to the day",
                    mother.birth_date.day);
      return violation(ErrorCode::InvalidNik, Path{prefix, "mother_nik"}, buf);
    }
    std::optional<NikInfo> father;
    if (!view(b.father_nik()).empty()) {
      NikInfo f{};
      if (auto v = nik(view(b.father_nik()), Path{prefix, "father_nik"}, &f)) return v;
      if (f.sex != ev::Sex::Male) {
        char buf[128];
        std::snprintf(buf, sizeof buf,
                      "day part %02d is a woman's (40 added); a father's NIK has the day "
                      "as is (01-31)",
                      f.birth_date.day + 40);
        return violation(ErrorCode::InvalidNik, Path{prefix, "father_nik"}, buf);
      }
      father = f;
    }
    if (auto v = kk(b.kk_number(), Path{prefix, "kk_number"})) return v;
    if (auto v = check_optional_text(b.birth_certificate_no(), Path{prefix, "birth_certificate_no"},
                                     kMaxTextBytes, TextClass::kDocument)) {
      return v;
    }
    if (auto v = check_optional_text(b.reporting_facility(), Path{prefix, "reporting_facility"},
                                     kMaxTextBytes, TextClass::kFree)) {
      return v;
    }
    if (!view(b.child_nik()).empty()) {
      NikInfo child{};
      if (auto v = nik(view(b.child_nik()), Path{prefix, "child_nik"}, &child)) return v;
      const auto [utc, local] = local_dates(b.born_at());
      if (child.birth_date != utc && child.birth_date != local) {
        return violation(ErrorCode::InvalidNik, Path{prefix, "child_nik"},
                         "birth date " + format_date(child.birth_date) +
                             " does not match born_at (" + format_date(utc) + ")");
      }
      if (child.sex != b.sex()) {
        return violation(
            ErrorCode::InvalidNik, Path{prefix, "child_nik"},
            std::string("is a ") + sex_name(child.sex) + " NIK but sex is " + sex_name(b.sex()));
      }
    }
    if (auto v = parent_age(b.born_at(), mother, "mother", prefix, Path{prefix, "mother_nik"})) {
      return v;
    }
    if (father) {
      if (auto v = parent_age(b.born_at(), *father, "father", prefix, Path{prefix, "father_nik"})) {
        return v;
      }
    }
    return std::nullopt;
  }

  Opt death(const ev::Death& d, std::string_view prefix) const {
    NikInfo person{};
    if (auto v = required_nik(d.nik(), Path{prefix, "nik"}, &person)) return v;
    if (auto v =
            check_required_text(d.name(), Path{prefix, "name"}, kMaxNameBytes, TextClass::kName)) {
      return v;
    }
    if (auto v = time(d.died_at(), Path{prefix, "died_at"})) return v;
    if (auto v = check_optional_text(d.place_of_death(), Path{prefix, "place_of_death"},
                                     kMaxTextBytes, TextClass::kFree)) {
      return v;
    }
    if (auto v = village(view(d.village_code()), Path{prefix, "village_code"})) return v;
    if (auto v = check_optional_text(d.death_certificate_no(), Path{prefix, "death_certificate_no"},
                                     kMaxTextBytes, TextClass::kDocument)) {
      return v;
    }
    if (auto v = check_optional_text(d.reporter(), Path{prefix, "reporter"}, kMaxTextBytes,
                                     TextClass::kFree)) {
      return v;
    }
    if (auto v = check_optional_text(d.cause_of_death(), Path{prefix, "cause_of_death"},
                                     kMaxTextBytes, TextClass::kFree)) {
      return v;
    }
    const CivilDate death_day = local_dates(d.died_at()).second;
    if (death_day < person.birth_date) {
      return violation(ErrorCode::InvalidDate, Path{prefix, "died_at"},
                       "death before birth: died " + format_date(death_day) + ", born " +
                           format_date(person.birth_date) + " (from " + std::string(prefix) +
                           "nik)");
    }
    return std::nullopt;
  }

  static ev::MoveType implied_move_type(std::string_view from, std::string_view to) {
    if (from.substr(0, 6) == to.substr(0, 6)) return ev::MoveType::WithinKecamatan;
    if (from.substr(0, 4) == to.substr(0, 4)) return ev::MoveType::BetweenKecamatan;
    if (from.substr(0, 2) == to.substr(0, 2)) return ev::MoveType::BetweenCities;
    return ev::MoveType::BetweenProvinces;
  }

  Opt move(const ev::Move& m, std::string_view prefix) const {
    const auto* niks = m.niks();
    if (niks == nullptr || niks->size() == 0) {
      return violation(ErrorCode::MissingField, Path{prefix, "niks"},
                       "required, must list at least one NIK");
    }
    if (niks->size() > kMaxMoveNiks) {
      return violation(ErrorCode::InvalidValue, Path{prefix, "niks"},
                       "lists " + std::to_string(niks->size()) + " people; at most " +
                           std::to_string(kMaxMoveNiks) + " per move");
    }
    Repeats seen(*niks);
    for (flatbuffers::uoffset_t i = 0; i < niks->size(); ++i) {
      const Path field{prefix, "niks", i};
      NikInfo info{};
      if (auto v = nik(view(niks->Get(i)), field, &info)) return v;
      if (const auto first = seen.earlier(i)) {
        return violation(ErrorCode::InvalidValue, field,
                         "duplicate of " + Path{prefix, "niks", *first}.str());
      }
    }
    if (auto v = kk(m.kk_number(), Path{prefix, "kk_number"})) return v;
    const std::string_view from = view(m.origin_village());
    const std::string_view to = view(m.destination_village());
    if (auto v = village(from, Path{prefix, "origin_village"})) return v;
    if (auto v = village(to, Path{prefix, "destination_village"})) return v;
    if (from == to) {
      return violation(ErrorCode::InvalidValue, Path{prefix, "destination_village"},
                       "is the same as origin_village (" + std::string(from) +
                           "); a move goes to another village");
    }
    if (auto v = time(m.moved_at(), Path{prefix, "moved_at"})) return v;
    if (auto v = check_optional_text(m.skpwni_no(), Path{prefix, "skpwni_no"}, kMaxTextBytes,
                                     TextClass::kDocument)) {
      return v;
    }
    const auto type = m.move_type();
    if (type == ev::MoveType::Unspecified) {
      return violation(ErrorCode::InvalidValue, Path{prefix, "move_type"},
                       "must be set: WithinKecamatan, BetweenKecamatan, BetweenCities or "
                       "BetweenProvinces");
    }
    if (type < ev::MoveType::MIN || type > ev::MoveType::MAX) {
      return violation(
          ErrorCode::InvalidValue, Path{prefix, "move_type"},
          "value " + std::to_string(static_cast<int>(type)) + " is not a known move type");
    }
    const auto implied = implied_move_type(from, to);
    if (type != implied) {
      return violation(ErrorCode::InvalidValue, Path{prefix, "move_type"},
                       std::string("is ") + move_type_name(type) + " but " + std::string(from) +
                           " -> " + std::string(to) + " is " + move_type_name(implied) +
                           " (same 6-digit prefix: WithinKecamatan; same 4: BetweenKecamatan; "
                           "same 2: BetweenCities; else BetweenProvinces)");
    }
    return std::nullopt;
  }

  Opt correction(const ev::Correction& c, std::string_view prefix, const ev::Event* e) const {
    if (e != nullptr && e->id() != nullptr && c.target_id() != nullptr &&
        std::equal(e->id()->bytes()->begin(), e->id()->bytes()->end(),
                   c.target_id()->bytes()->begin())) {
      return violation(ErrorCode::InvalidCorrection, Path{prefix, "target_id"},
                       "is the correction's own id; a correction corrects another event");
    }
    if (auto v = check_required_text(c.reason(), Path{prefix, "reason"}, kMaxReasonBytes,
                                     TextClass::kFree)) {
      return v;
    }
    const auto type = c.corrected_type();
    if (c.void_()) {
      if (type != ev::Payload::NONE) {
        return violation(ErrorCode::InvalidCorrection, Path{prefix, "corrected"},
                         "must be absent when void is true");
      }
      return std::nullopt;
    }
    if (type == ev::Payload::NONE) {
      return violation(ErrorCode::InvalidCorrection, Path{prefix, "corrected"},
                       "required unless void is true: the whole corrected payload");
    }
    if (type == ev::Payload::Correction) {
      return violation(ErrorCode::InvalidCorrection, Path{prefix, "corrected"},
                       "a correction cannot carry a correction; correct the original event");
    }
    const std::string nested = std::string(prefix) + "corrected.";
    return payload(type, c.corrected(), nested, nullptr);
  }

  const ValidationContext& ctx_;
};

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    // Runs of ASCII (nearly all of it: names, codes, document numbers) 8 bytes a step.
    std::uint64_t word;
    while (n - i >= sizeof word) {
      std::memcpy(&word, s.data() + i, sizeof word);
      if ((word & 0x8080808080808080ULL) != 0) break;
      i += sizeof word;
    }
    if (i == n) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte, 0xC0/0xC1 (overlong), or > U+10FFFF lead
    }
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;  // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;                            // surrogate
    if (cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

const char* kind_name(events::Payload kind) {
  switch (kind) {
    case events::Payload::Birth:
      return "birth";
    case events::Payload::Death:
      return "death";
    case events::Payload::Move:
      return "move";
    case events::Payload::Correction:
      return "correction";
    case events::Payload::NONE:
      break;
  }
  return "unknown";
}

std::optional<Violation> check_structure(std::span<const std::uint8_t> bytes) {
  using flatbuffers::soffset_t;  // FLATBUFFERS_MAX_BUFFER_SIZE names them unqualified
  using flatbuffers::uoffset_t;
  if (bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return violation(ErrorCode::MalformedEvent, "", "event is larger than 2 GiB");
  }
  if (bytes.empty()) return violation(ErrorCode::MalformedEvent, "", "event is empty");
  {
    flatbuffers::Verifier v(bytes.data(), bytes.size(), verifier_options());
    if (!v.VerifyBuffer<ev::Event>(nullptr)) {
      flatbuffers::Verifier lenient(bytes.data(), bytes.size(), verifier_options());
      const bool structure_ok =
          bytes.size() >= FLATBUFFERS_MIN_BUFFER_SIZE && lenient.VerifyOffset(0) != 0 &&
          lenient_verify(lenient, flatbuffers::GetRoot<flatbuffers::Table>(bytes.data()),
                         kEventFields);
      if (structure_ok) {
        if (auto missing = find_missing_required(
                flatbuffers::GetRoot<flatbuffers::Table>(bytes.data()), kEventFields, "")) {
          return missing;
        }
      }
      return violation(ErrorCode::MalformedEvent, "",
                       "not a verifiable kolabus Event (the FlatBuffers Verifier refused it)");
    }
  }
  const auto* e = flatbuffers::GetRoot<ev::Event>(bytes.data());
  return check_union(e->payload_type(), e->payload(), "payload", true);
}

const events::Event* verified_event(std::span<const std::uint8_t> bytes) {
  if (check_structure(bytes)) return nullptr;
  return flatbuffers::GetRoot<ev::Event>(bytes.data());
}

std::optional<Violation> check_rules(const events::Event& event, const ValidationContext& ctx) {
  return Checker(ctx).event(event);
}

std::optional<Violation> validate_event(std::span<const std::uint8_t> bytes,
                                        const ValidationContext& ctx) {
  if (auto v = check_structure(bytes)) return v;
  return check_rules(*flatbuffers::GetRoot<ev::Event>(bytes.data()), ctx);
}

std::vector<std::string> payload_villages(events::Payload type, const void* payload) {
  std::array<std::string_view, 2> views;
  const std::size_t n = village_views(type, payload, views);
  std::vector<std::string> out(views.begin(), views.begin() + static_cast<std::ptrdiff_t>(n));
  return sorted_unique(std::move(out));
}

namespace {

// payload_nik_views, appending to *out unsorted.
void add_nik_views(events::Payload type, const void* payload, std::vector<std::string_view>* out) {
  if (payload == nullptr) return;
  auto add = [&](const flatbuffers::String* s) {
    if (s != nullptr && s->size() > 0) out->emplace_back(s->string_view());
  };
  switch (type) {
    case events::Payload::Birth: {
      const auto* b = static_cast<const ev::Birth*>(payload);
      add(b->child_nik());
      add(b->mother_nik());
      add(b->father_nik());
      break;
    }
    case events::Payload::Death:
      add(static_cast<const ev::Death*>(payload)->nik());
      break;
    case events::Payload::Move: {
      const auto* niks = static_cast<const ev::Move*>(payload)->niks();
      if (niks != nullptr) {
        for (const auto* n : *niks) add(n);
      }
      break;
    }
    case events::Payload::Correction: {
      const auto* c = static_cast<const ev::Correction*>(payload);
      if (c->void_() || c->corrected_type() == events::Payload::Correction) return;
      add_nik_views(c->corrected_type(), c->corrected(), out);
      break;
    }
    case events::Payload::NONE:
      break;
  }
}

}  // namespace

void payload_nik_views(events::Payload type, const void* payload,
                       std::vector<std::string_view>* out) {
  out->clear();
  add_nik_views(type, payload, out);
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
}

std::vector<std::string> payload_niks(events::Payload type, const void* payload) {
  std::vector<std::string_view> views;
  payload_nik_views(type, payload, &views);
  return {views.begin(), views.end()};
}

std::optional<Violation> check_correction_target(const events::Event& correction,
                                                 const CorrectionTarget& target) {
  const auto* c = correction.payload_as_Correction();
  if (c == nullptr) {
    return violation(
        ErrorCode::InvalidCorrection, "payload",
        std::string("is a ") + kind_name(correction.payload_type()) + ", not a correction");
  }
  if (target.kind != events::Payload::Birth && target.kind != events::Payload::Death &&
      target.kind != events::Payload::Move) {
    return violation(ErrorCode::InvalidCorrection, "payload.target_id",
                     std::string("names a ") + kind_name(target.kind) +
                         "; only a birth, death or move can be corrected (correct the "
                         "original event instead)");
  }
  if (!c->void_() && c->corrected_type() != target.kind) {
    return violation(ErrorCode::InvalidCorrection, "payload.corrected",
                     std::string("the target is a ") + kind_name(target.kind) +
                         ", so the corrected payload must be a " + kind_name(target.kind) +
                         ", not a " + kind_name(c->corrected_type()));
  }
  std::vector<std::string> expected = target.regions;
  for (auto& code : payload_villages(events::Payload::Correction, c)) {
    expected.push_back(std::move(code));
  }
  expected = sorted_unique(std::move(expected));
  std::vector<std::string> got;
  if (correction.regions() != nullptr) {
    for (const auto* s : *correction.regions()) got.emplace_back(view(s));
  }
  got = sorted_unique(std::move(got));
  if (got != expected) {
    return violation(ErrorCode::InvalidRegions, "regions",
                     "must be exactly the target's regions and the corrected payload's "
                     "villages: expected " +
                         join(expected) + ", got " + join(got));
  }
  return std::nullopt;
}

}  // namespace kolabus::schemas
