// SpoolConverter: the [[spool]] configuration, checked against events.fbs, and the
// conversion of one file's text into events and rejects. No I/O here.
//
// A mapped record becomes the kolabus JSON form of an event, which JsonCodec turns
// into FlatBuffers through the schema: this file knows the payload fields only as
// names and JSON types read from the schema, never one by one.
#include <algorithm>
#include <map>
#include <utility>
#include <variant>

#include <flatbuffers/idl.h>
#include <nlohmann/json.hpp>

#include <adapters/spool.h>
#include <schemas/embedded.h>
#include <schemas/nik.h>
#include <schemas/protocol_generated.h>
#include <schemas/validate.h>

namespace kolabus::adapters {

namespace {

using Json = nlohmann::json;

constexpr std::string_view kWhere = "[[spool]]";

// --- small helpers -----------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

Error config_error(std::string_view where, const std::string& message) {
  return Error{Errc::kInvalidArgument, std::string(where) + ": " + message};
}

Status check_keys(const toml::table& t, std::string_view where,
                  std::initializer_list<std::string_view> allowed) {
  for (auto&& [key, node] : t) {
    (void)node;
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return kolabus::unexpected(
          config_error(where, "unknown key " + in_quotes(key.str()) + " (allowed: " + list + ")"));
    }
  }
  return {};
}

Result<std::string> get_string(const toml::node& n, std::string_view where) {
  if (auto v = n.value<std::string>(); v && n.is_string()) return *v;
  return kolabus::unexpected(config_error(where, "must be a string"));
}

// "+07:00", "+0700", "+07", "-03:30", "Z" -> minutes east of UTC.
std::optional<int> parse_utc_offset(std::string_view s) {
  if (s == "Z") return 0;
  if (s.size() < 3 || (s[0] != '+' && s[0] != '-')) return std::nullopt;
  const int sign = s[0] == '-' ? -1 : 1;
  std::string digits;
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (s[i] == ':' && i == 3) continue;
    digits.push_back(s[i]);
  }
  if (!all_digits(digits) || (digits.size() != 2 && digits.size() != 4)) return std::nullopt;
  const int h = std::stoi(digits.substr(0, 2));
  const int m = digits.size() == 4 ? std::stoi(digits.substr(2, 2)) : 0;
  if (h > 14 || m > 59) return std::nullopt;
  return sign * (h * 60 + m);
}

// --- dates -------------------------------------------------------------------------

struct Clock6 {
  int year = -1, month = -1, day = -1, hour = 0, minute = 0, second = 0;
};

// strftime-like: %d %m (1-2 digits), %Y (4), %H %M %S (1-2), %% and literal characters.
// The whole value must match.
bool parse_with_format(std::string_view v, std::string_view fmt, Clock6& out) {
  std::size_t i = 0;
  auto number = [&](std::size_t min_digits, std::size_t max_digits, int& dst) {
    std::size_t n = 0;
    int value = 0;
    while (n < max_digits && i < v.size() && v[i] >= '0' && v[i] <= '9') {
      value = value * 10 + (v[i] - '0');
      ++i;
      ++n;
    }
    if (n < min_digits) return false;
    dst = value;
    return true;
  };
  for (std::size_t f = 0; f < fmt.size(); ++f) {
    if (fmt[f] == '%' && f + 1 < fmt.size()) {
      const char spec = fmt[++f];
      bool ok = true;
      switch (spec) {
        case 'd':
          ok = number(1, 2, out.day);
          break;
        case 'm':
          ok = number(1, 2, out.month);
          break;
        case 'Y':
          ok = number(4, 4, out.year);
          break;
        case 'H':
          ok = number(1, 2, out.hour);
          break;
        case 'M':
          ok = number(1, 2, out.minute);
          break;
        case 'S':
          ok = number(1, 2, out.second);
          break;
        case '%':
          ok = i < v.size() && v[i++] == '%';
          break;
        default:
          return false;
      }
      if (!ok) return false;
    } else {
      if (i >= v.size() || v[i] != fmt[f]) return false;
      ++i;
    }
  }
  return i == v.size();
}

// Which conversions a format uses, for the config check.
bool format_has(std::string_view fmt, char spec) {
  for (std::size_t f = 0; f + 1 < fmt.size(); ++f) {
    if (fmt[f] == '%') {
      if (fmt[f + 1] == spec) return true;
      ++f;
    }
  }
  return false;
}

std::optional<std::string> check_format(std::string_view fmt, bool is_time) {
  for (std::size_t f = 0; f < fmt.size(); ++f) {
    if (fmt[f] != '%') continue;
    if (f + 1 >= fmt.size() ||
        std::string_view("dmYHMS%").find(fmt[f + 1]) == std::string_view::npos) {
      return "unsupported conversion in " + in_quotes(fmt) + " (use %d %m %Y %H %M %S %%)";
    }
    ++f;
  }
  if (is_time) {
    if (!format_has(fmt, 'H') || !format_has(fmt, 'M')) return in_quotes(fmt) + " needs %H and %M";
  } else if (!format_has(fmt, 'd') || !format_has(fmt, 'm') || !format_has(fmt, 'Y')) {
    return in_quotes(fmt) + " needs %d, %m and %Y";
  }
  return std::nullopt;
}

// --- the mapping -------------------------------------------------------------------

enum class FieldType { kString, kLong, kEnum, kStringList };

struct DateSpec {
  std::vector<std::string> formats;       // tried in order
  std::string time_column;                // empty: none
  std::vector<std::string> time_formats;  // tried in order
  int offset_minutes = 7 * 60;            // WIB
};

struct FieldSpec {
  std::string name;  // "mother_nik"; "recorded_at" for the event's recorded_at
  std::string path;  // "payload.mother_nik"
  FieldType type = FieldType::kString;
  std::vector<std::string> enum_names;  // kEnum

  enum class Source { kColumn, kColumns, kValue } source = Source::kColumn;
  std::string column;
  std::vector<std::string> columns;
  std::vector<int> widths;
  Json value;

  bool has_map = false;
  std::map<std::string, std::string, std::less<>> map;
  std::optional<DateSpec> date;
  std::optional<std::string> split;
  bool optional = false;

  std::string source_name() const {
    if (source == Source::kColumn) return column;
    std::string s;
    for (const auto& c : columns) s += (s.empty() ? "" : "+") + c;
    return s;
  }
};

struct Kind {
  events::Payload payload;
  const char* config_name;  // "birth"
  const char* main_date;    // the payload's own date, which becomes occurred_at
};

constexpr Kind kKinds[] = {
    {events::Payload::Birth, "birth", "born_at"},
    {events::Payload::Death, "death", "died_at"},
    {events::Payload::Move, "move", "moved_at"},
};

const Kind* find_kind(events::Payload p) {
  for (const auto& k : kKinds) {
    if (k.payload == p) return &k;
  }
  return nullptr;
}

// A field of a record, as found: a text, or (JSON input) a list.
struct Cell {
  bool present = false;
  std::string text;
  std::optional<std::vector<std::string>> list;
  std::string bad;  // non-empty: a value that cannot be used ("is an object")
};

struct Fail {
  std::string code;
  std::string field;
  std::string message;  // without the "line N: " prefix
};

std::string cell_text_of(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

Cell json_cell(const Json& obj, const std::string& key) {
  Cell c;
  auto it = obj.find(key);
  if (it == obj.end()) return c;
  c.present = true;
  if (it->is_array()) {
    std::vector<std::string> items;
    for (const auto& e : *it) {
      if (e.is_object() || e.is_array()) {
        c.bad = "is a list holding a list or an object";
        return c;
      }
      items.push_back(cell_text_of(e));
    }
    c.list = std::move(items);
  } else if (it->is_object()) {
    c.bad = "is an object";
  } else {
    c.text = cell_text_of(*it);
  }
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------

struct SpoolConverter::Impl {
  SpoolSettings settings;
  std::vector<FieldSpec> fields;
  std::optional<FieldSpec> recorded_at;  // nullopt: "now"
  schemas::JsonCodec codec;
  const schemas::RegionTable& regions = schemas::RegionTable::embedded();

  explicit Impl(schemas::JsonCodec c) : codec(std::move(c)) {}

  using Row = std::function<Cell(const std::string&)>;

  static Result<FieldSpec> parse_field(const std::string& name, const toml::node& node,
                                       const flatbuffers::StructDef* table_def);
  Status parse(const toml::table& t);

  std::variant<std::optional<Json>, Fail> build_field(const FieldSpec& f, const Row& row) const;
  std::variant<schemas::EncodedEvent, Fail> encode(Json ev, bool fill_recorded_now, TimeMs now);
  std::variant<schemas::EncodedEvent, Fail> map_record(const Row& row, TimeMs now);
  std::variant<schemas::EncodedEvent, Fail> event_line(std::string_view line, TimeMs now);
  std::variant<schemas::EncodedEvent, Fail> mapped_json_line(std::string_view line, TimeMs now);
  std::optional<Fail> validate(const schemas::EncodedEvent& e, TimeMs now) const;

  void convert_csv(std::string_view text, TimeMs now, SpoolFileResult& out);
  void convert_jsonl(std::string_view text, TimeMs now, SpoolFileResult& out);
  void add(SpoolFileResult& out, std::size_t line, std::string record,
           std::variant<schemas::EncodedEvent, Fail> r, TimeMs now);
};

namespace {

// The JSON type of a payload field, from the schema.
std::optional<FieldType> field_type(const flatbuffers::FieldDef& f) {
  const auto& t = f.value.type;
  if (t.base_type == flatbuffers::BASE_TYPE_STRING) return FieldType::kString;
  if (t.base_type == flatbuffers::BASE_TYPE_VECTOR && t.element == flatbuffers::BASE_TYPE_STRING) {
    return FieldType::kStringList;
  }
  if (flatbuffers::IsInteger(t.base_type) && t.base_type != flatbuffers::BASE_TYPE_UTYPE) {
    return t.enum_def != nullptr ? FieldType::kEnum : FieldType::kLong;
  }
  return std::nullopt;
}

Result<DateSpec> parse_date_spec(const toml::table& t, std::string_view where) {
  DateSpec d;
  if (const auto* n = t.get("date")) {
    if (n->is_string()) {
      d.formats.push_back(*n->value<std::string>());
    } else if (const auto* a = n->as_array(); a != nullptr && !a->empty()) {
      for (const auto& e : *a) {
        if (!e.is_string())
          return kolabus::unexpected(config_error(where, "date: formats must be strings"));
        d.formats.push_back(*e.value<std::string>());
      }
    } else {
      return kolabus::unexpected(
          config_error(where, "date: must be a format string or a list of them"));
    }
  }
  for (const auto& f : d.formats) {
    if (auto e = check_format(f, false))
      return kolabus::unexpected(config_error(where, "date: " + *e));
  }
  if (const auto* n = t.get("time_column")) {
    auto s = get_string(*n, std::string(where) + " time_column");
    if (!s) return kolabus::unexpected(s.error());
    d.time_column = std::string(trim(*s));
    d.time_formats = {"%H:%M:%S", "%H:%M", "%H.%M"};
  }
  if (const auto* n = t.get("time_format")) {
    if (d.time_column.empty()) {
      return kolabus::unexpected(config_error(where, "time_format needs time_column"));
    }
    auto s = get_string(*n, std::string(where) + " time_format");
    if (!s) return kolabus::unexpected(s.error());
    if (auto e = check_format(*s, true)) {
      return kolabus::unexpected(config_error(where, "time_format: " + *e));
    }
    d.time_formats = {*s};
  }
  if (const auto* n = t.get("utc_offset")) {
    auto s = get_string(*n, std::string(where) + " utc_offset");
    if (!s) return kolabus::unexpected(s.error());
    auto off = parse_utc_offset(*s);
    if (!off) {
      return kolabus::unexpected(config_error(
          where, "utc_offset: " + in_quotes(*s) + " is not an offset like \"+07:00\""));
    }
    d.offset_minutes = *off;
  }
  return d;
}

}  // namespace

Result<FieldSpec> SpoolConverter::Impl::parse_field(const std::string& name, const toml::node& node,
                                                    const flatbuffers::StructDef* table_def) {
  const std::string where = std::string(kWhere) + " fields." + name;
  FieldSpec f;
  f.name = name;
  if (table_def != nullptr) {
    f.path = "payload." + name;
    const auto* def = table_def->fields.Lookup(name);
    if (def == nullptr || def->deprecated) {
      std::string list;
      for (const auto* d : table_def->fields.vec) {
        if (!d->deprecated) list += (list.empty() ? "" : ", ") + d->name;
      }
      return kolabus::unexpected(config_error(
          where, table_def->name + " has no field " + in_quotes(name) + " (fields: " + list + ")"));
    }
    auto type = field_type(*def);
    if (!type) return kolabus::unexpected(config_error(where, "this field cannot be mapped"));
    f.type = *type;
    if (f.type == FieldType::kEnum) {
      for (const auto* v : def->value.type.enum_def->Vals()) f.enum_names.push_back(v->name);
    }
  } else {
    f.path = name;  // recorded_at
    f.type = FieldType::kLong;
  }

  const auto* t = node.as_table();
  if (t == nullptr) {
    return kolabus::unexpected(
        config_error(where, "must be a table such as { column = \"NIK\" } or { value = \"...\" }"));
  }
  if (auto st = check_keys(*t, where,
                           {"column", "columns", "widths", "value", "map", "date", "time_column",
                            "time_format", "utc_offset", "split", "optional"});
      !st) {
    return kolabus::unexpected(st.error());
  }

  const int sources = (t->contains("column") ? 1 : 0) + (t->contains("columns") ? 1 : 0) +
                      (t->contains("value") ? 1 : 0);
  if (sources != 1) {
    return kolabus::unexpected(config_error(where, "needs exactly one of column, columns, value"));
  }
  if (const auto* n = t->get("column")) {
    auto s = get_string(*n, where + " column");
    if (!s) return kolabus::unexpected(s.error());
    f.source = FieldSpec::Source::kColumn;
    f.column = std::string(trim(*s));
    if (f.column.empty()) return kolabus::unexpected(config_error(where, "column: is empty"));
  }
  if (const auto* n = t->get("columns")) {
    const auto* a = n->as_array();
    if (a == nullptr || a->empty()) {
      return kolabus::unexpected(config_error(where, "columns: must be a non-empty list of names"));
    }
    f.source = FieldSpec::Source::kColumns;
    for (const auto& e : *a) {
      if (!e.is_string())
        return kolabus::unexpected(config_error(where, "columns: names must be strings"));
      f.columns.emplace_back(trim(*e.value<std::string>()));
    }
  }
  if (const auto* n = t->get("widths")) {
    const auto* a = n->as_array();
    if (f.source != FieldSpec::Source::kColumns || a == nullptr || a->size() != f.columns.size()) {
      return kolabus::unexpected(
          config_error(where, "widths: needs columns, and one width per column"));
    }
    for (const auto& e : *a) {
      auto w = e.value_exact<std::int64_t>();
      if (!e.is_integer() || !w || *w < 1 || *w > 64) {
        return kolabus::unexpected(config_error(where, "widths: must be integers 1-64"));
      }
      f.widths.push_back(static_cast<int>(*w));
    }
  }
  if (const auto* n = t->get("value")) {
    f.source = FieldSpec::Source::kValue;
    bool ok = false;
    if (n->is_string()) {
      const std::string v = *n->value<std::string>();
      ok = f.type == FieldType::kString || f.type == FieldType::kStringList ||
           (f.type == FieldType::kEnum &&
            std::find(f.enum_names.begin(), f.enum_names.end(), v) != f.enum_names.end());
      f.value = f.type == FieldType::kStringList ? Json::array({v}) : Json(v);
    } else if (n->is_integer()) {
      ok = f.type == FieldType::kLong;
      f.value = *n->value_exact<std::int64_t>();
    } else if (const auto* a = n->as_array(); a != nullptr && f.type == FieldType::kStringList) {
      ok = true;
      f.value = Json::array();
      for (const auto& e : *a) {
        ok = ok && e.is_string();
        if (e.is_string()) f.value.push_back(*e.value<std::string>());
      }
    }
    if (!ok) return kolabus::unexpected(config_error(where, "value: wrong type for this field"));
  }

  if (const auto* n = t->get("map")) {
    const auto* m = n->as_table();
    if (m == nullptr || f.source == FieldSpec::Source::kValue) {
      return kolabus::unexpected(config_error(where, "map: must be a table and needs column(s)"));
    }
    f.has_map = true;
    for (auto&& [k, v] : *m) {
      if (!v.is_string()) {
        return kolabus::unexpected(
            config_error(where, "map." + std::string(k.str()) + ": must be a string"));
      }
      const std::string target = *v.value<std::string>();
      if (f.type == FieldType::kEnum &&
          std::find(f.enum_names.begin(), f.enum_names.end(), target) == f.enum_names.end()) {
        std::string list;
        for (const auto& e : f.enum_names) list += (list.empty() ? "" : ", ") + e;
        return kolabus::unexpected(config_error(
            where,
            "map." + std::string(k.str()) + ": " + in_quotes(target) + " is not one of " + list));
      }
      f.map.emplace(std::string(trim(k.str())), target);
    }
  }

  const bool date_keys = t->contains("date") || t->contains("time_column") ||
                         t->contains("time_format") || t->contains("utc_offset");
  if (date_keys) {
    if (f.type != FieldType::kLong || !t->contains("date") ||
        f.source == FieldSpec::Source::kValue || f.has_map) {
      return kolabus::unexpected(config_error(
          where,
          "date, time_column, time_format, utc_offset: only for a time field read from "
          "column(s), with date given and no map"));
    }
    auto d = parse_date_spec(*t, where);
    if (!d) return kolabus::unexpected(d.error());
    f.date = std::move(*d);
  }

  if (const auto* n = t->get("split")) {
    auto s = get_string(*n, where + " split");
    if (!s) return kolabus::unexpected(s.error());
    if (f.type != FieldType::kStringList || s->empty() || f.source == FieldSpec::Source::kValue) {
      return kolabus::unexpected(
          config_error(where, "split: only for a list field read from column(s), not empty"));
    }
    f.split = *s;
  }
  if (const auto* n = t->get("optional")) {
    if (!n->is_boolean())
      return kolabus::unexpected(config_error(where, "optional: must be true or false"));
    f.optional = *n->value<bool>();
  }
  return f;
}

Status SpoolConverter::Impl::parse(const toml::table& t) {
  if (auto st = check_keys(t, kWhere,
                           {"dir", "format", "kind", "poll_ms", "delimiter", "recorded_at",
                            "fields", "done_retention_days", "rejects_retention_days"});
      !st) {
    return st;
  }
  const auto* dir = t.get("dir");
  if (dir == nullptr) return kolabus::unexpected(config_error(kWhere, "dir: is required"));
  auto d = get_string(*dir, std::string(kWhere) + " dir");
  if (!d) return kolabus::unexpected(d.error());
  if (d->empty()) return kolabus::unexpected(config_error(kWhere, "dir: is empty"));
  settings.dir = *d;

  const auto* format = t.get("format");
  if (format == nullptr) {
    return kolabus::unexpected(config_error(kWhere, "format: is required (\"csv\" or \"jsonl\")"));
  }
  auto fmt = get_string(*format, std::string(kWhere) + " format");
  if (!fmt) return kolabus::unexpected(fmt.error());
  if (*fmt == "csv") {
    settings.format = SpoolFormat::kCsv;
  } else if (*fmt == "jsonl") {
    settings.format = SpoolFormat::kJsonl;
  } else {
    return kolabus::unexpected(
        config_error(kWhere, "format: " + in_quotes(*fmt) + " is not \"csv\" or \"jsonl\""));
  }

  if (const auto* n = t.get("poll_ms")) {
    auto v = n->value_exact<std::int64_t>();
    if (!n->is_integer() || !v || *v < 10 || *v > 3600 * 1000) {
      return kolabus::unexpected(config_error(kWhere, "poll_ms: must be an integer 10-3600000"));
    }
    settings.poll = std::chrono::milliseconds(*v);
  }

  for (const auto& [key, days] : {std::pair<const char*, std::uint32_t*>{
                                      "done_retention_days", &settings.done_retention_days},
                                  {"rejects_retention_days", &settings.rejects_retention_days}}) {
    if (const auto* n = t.get(key)) {
      auto v = n->value_exact<std::int64_t>();
      if (!n->is_integer() || !v || *v < 1 || *v > kMaxRetentionDays) {
        return kolabus::unexpected(
            config_error(kWhere, std::string(key) + ": must be an integer 1-" +
                                     std::to_string(kMaxRetentionDays) + " (days)"));
      }
      *days = static_cast<std::uint32_t>(*v);
    }
  }

  if (const auto* n = t.get("delimiter")) {
    if (settings.format != SpoolFormat::kCsv) {
      return kolabus::unexpected(config_error(kWhere, "delimiter: only for format = \"csv\""));
    }
    auto s = get_string(*n, std::string(kWhere) + " delimiter");
    if (!s) return kolabus::unexpected(s.error());
    if (*s == ",") {
      settings.delimiter = ',';
    } else if (*s == ";") {
      settings.delimiter = ';';
    } else if (*s == "|") {
      settings.delimiter = '|';
    } else if (*s == "\t") {
      settings.delimiter = '\t';
    } else {
      return kolabus::unexpected(
          config_error(kWhere, "delimiter: must be \",\", \";\", \"|\" or \"\\t\""));
    }
  }

  const flatbuffers::StructDef* table_def = nullptr;
  flatbuffers::Parser schema;  // lives while table_def is used
  const auto* fields_node = t.get("fields");
  const auto* kind = t.get("kind");
  if (kind != nullptr) {
    if (fields_node == nullptr) {
      return kolabus::unexpected(config_error(kWhere, "kind: only with a [spool.fields] mapping"));
    }
    auto k = get_string(*kind, std::string(kWhere) + " kind");
    if (!k) return kolabus::unexpected(k.error());
    for (const auto& known : kKinds) {
      if (*k == known.config_name) settings.kind = known.payload;
    }
    if (!settings.kind) {
      return kolabus::unexpected(
          config_error(kWhere, "kind: " + in_quotes(*k) + " is not birth, death or move"));
    }
  }
  if (fields_node != nullptr) {
    const auto* ft = fields_node->as_table();
    if (ft == nullptr) return kolabus::unexpected(config_error(kWhere, "fields: must be a table"));
    if (!settings.kind) {
      return kolabus::unexpected(config_error(
          kWhere, "kind: is required with a [spool.fields] mapping (birth, death, move)"));
    }
    settings.has_mapping = true;
    const std::string schema_text(schemas::events_schema_text());
    if (!schema.Parse(schema_text.c_str())) {
      return kolabus::unexpected(Errc::kInternal, "events.fbs does not parse: " + schema.error_);
    }
    const std::string type_name =
        std::string("kolabus.events.") + events::EnumNamePayload(*settings.kind);
    table_def = schema.LookupStruct(type_name);
    KOLABUS_CHECK(table_def != nullptr);
    for (auto&& [key, node] : *ft) {
      auto f = parse_field(std::string(key.str()), node, table_def);
      if (!f) return kolabus::unexpected(f.error());
      fields.push_back(std::move(*f));
    }
    // Every field the schema requires, and the payload's own date (it becomes
    // occurred_at), must be mapped: otherwise every record would be rejected.
    const Kind* k = find_kind(*settings.kind);
    for (const auto* def : table_def->fields.vec) {
      const bool needed = def->IsRequired() || def->name == k->main_date;
      const bool mapped = std::any_of(fields.begin(), fields.end(),
                                      [&](const FieldSpec& f) { return f.name == def->name; });
      if (needed && !mapped) {
        return kolabus::unexpected(config_error(kWhere, "fields: " + in_quotes(def->name) +
                                                            " is needed for a " + k->config_name +
                                                            " and is not mapped"));
      }
    }
  } else if (settings.format == SpoolFormat::kCsv) {
    return kolabus::unexpected(config_error(
        kWhere, "fields: format = \"csv\" needs a [spool.fields] mapping (see docs/SPOOL.md)"));
  }

  if (const auto* n = t.get("recorded_at")) {
    const std::string where = std::string(kWhere) + " recorded_at";
    if (n->is_string()) {
      const std::string v = *n->value<std::string>();
      if (v != "now") {
        if (!settings.has_mapping) {
          return kolabus::unexpected(
              config_error(where, "a column needs a [spool.fields] mapping (or use \"now\")"));
        }
        FieldSpec f;
        f.name = f.path = "recorded_at";
        f.type = FieldType::kLong;
        f.column = std::string(trim(v));
        f.date = DateSpec{{"%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"}, "", {}, 7 * 60};
        recorded_at = std::move(f);
      }
    } else if (n->is_table()) {
      if (!settings.has_mapping) {
        return kolabus::unexpected(config_error(where, "a column needs a [spool.fields] mapping"));
      }
      auto f = parse_field("recorded_at", *n, nullptr);
      if (!f) return kolabus::unexpected(f.error());
      if (f->source == FieldSpec::Source::kValue || !f->date) {
        return kolabus::unexpected(config_error(where, "a table needs column(s) and date"));
      }
      f->optional = false;
      recorded_at = std::move(*f);
    } else {
      return kolabus::unexpected(
          config_error(where, "must be \"now\", a column name, or { column = ..., date = ... }"));
    }
  }
  return {};
}

// --- conversion --------------------------------------------------------------------

std::variant<std::optional<Json>, Fail> SpoolConverter::Impl::build_field(const FieldSpec& f,
                                                                          const Row& row) const {
  const auto mapping_fail = [&](std::string message) {
    return Fail{"MappingError", f.path, std::move(message)};
  };
  if (f.source == FieldSpec::Source::kValue) return std::optional<Json>(f.value);

  std::string text;
  std::optional<std::vector<std::string>> list;
  if (f.source == FieldSpec::Source::kColumn) {
    Cell c = row(f.column);
    if (!c.present) {
      if (f.optional) return std::optional<Json>();
      return mapping_fail(f.column + " is missing from the record");
    }
    if (!c.bad.empty()) return mapping_fail(f.column + " " + c.bad);
    if (c.list) {
      if (f.type != FieldType::kStringList) return mapping_fail(f.column + " is a list");
      list.emplace();
      for (const auto& e : *c.list) {
        if (auto v = trim(e); !v.empty()) list->emplace_back(v);
      }
      if (list->empty()) {
        if (f.optional) return std::optional<Json>();
        return mapping_fail(f.column + " is empty");
      }
    } else {
      text = std::string(trim(c.text));
    }
  } else {
    std::vector<std::string> parts;
    std::string first_empty;
    for (const auto& col : f.columns) {
      Cell c = row(col);
      if (!c.present) {
        if (f.optional) return std::optional<Json>();
        return mapping_fail(col + " is missing from the record");
      }
      if (!c.bad.empty() || c.list) return mapping_fail(col + " " + (c.list ? "is a list" : c.bad));
      parts.emplace_back(trim(c.text));
      if (parts.back().empty() && first_empty.empty()) first_empty = col;
    }
    const bool all_empty =
        std::all_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); });
    if (all_empty && f.optional) return std::optional<Json>();
    if (!first_empty.empty()) return mapping_fail(first_empty + " is empty");
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (!f.widths.empty()) {
        const auto w = static_cast<std::size_t>(f.widths[i]);
        if (!all_digits(parts[i]) || parts[i].size() > w) {
          return mapping_fail(f.columns[i] + " value " + in_quotes(parts[i]) +
                              " is not a number of at most " + std::to_string(w) + " digits");
        }
        parts[i].insert(0, w - parts[i].size(), '0');
      }
      text += parts[i];
    }
  }

  if (!list && text.empty()) {
    if (f.optional) return std::optional<Json>();
    return mapping_fail(f.source_name() + " is empty");
  }

  if (f.has_map && !list) {
    auto it = f.map.find(text);
    if (it == f.map.end()) {
      return mapping_fail(f.source_name() + " value " + in_quotes(text) + " is not in the map");
    }
    text = it->second;
  }

  switch (f.type) {
    case FieldType::kString:
      return std::optional<Json>(Json(text));
    case FieldType::kEnum:
      if (std::find(f.enum_names.begin(), f.enum_names.end(), text) == f.enum_names.end()) {
        std::string names;
        for (const auto& e : f.enum_names) names += (names.empty() ? "" : ", ") + e;
        return mapping_fail(f.source_name() + " value " + in_quotes(text) + " is not one of " +
                            names + " (add a map)");
      }
      return std::optional<Json>(Json(text));
    case FieldType::kStringList: {
      if (!list) {
        list.emplace();
        if (f.split) {
          std::size_t start = 0;
          while (start <= text.size()) {
            std::size_t end = text.find(*f.split, start);
            if (end == std::string::npos) end = text.size();
            if (auto v = trim(std::string_view(text).substr(start, end - start)); !v.empty()) {
              list->emplace_back(v);
            }
            start = end + f.split->size();
          }
        } else {
          list->push_back(text);
        }
      }
      return std::optional<Json>(Json(*list));
    }
    case FieldType::kLong: {
      if (!f.date) {
        if (text.size() > 18 ||
            !(all_digits(text) || (text[0] == '-' && all_digits(text.substr(1))))) {
          return mapping_fail(f.source_name() + " value " + in_quotes(text) + " is not an integer");
        }
        return std::optional<Json>(Json(std::stoll(text)));
      }
      Clock6 t;
      bool ok = false;
      for (const auto& fmt : f.date->formats) {
        t = Clock6{};
        if (parse_with_format(text, fmt, t)) {
          ok = true;
          break;
        }
      }
      std::string fmts;
      for (const auto& fmt : f.date->formats) fmts += (fmts.empty() ? "" : " or ") + fmt;
      const schemas::CivilDate date{t.year, t.month, t.day};
      if (!ok || !schemas::is_valid_date(date)) {
        return mapping_fail(f.source_name() + " value " + in_quotes(text) +
                            " is not a date in the format " + fmts);
      }
      if (!f.date->time_column.empty()) {
        Cell c = row(f.date->time_column);
        if (!c.present) return mapping_fail(f.date->time_column + " is missing from the record");
        if (!c.bad.empty() || c.list) return mapping_fail(f.date->time_column + " is not a time");
        // An empty time means "time not known": midnight, local time.
        if (const auto tv = std::string(trim(c.text)); !tv.empty()) {
          bool tok = false;
          for (const auto& fmt : f.date->time_formats) {
            Clock6 tt;
            if (parse_with_format(tv, fmt, tt)) {
              t.hour = tt.hour;
              t.minute = tt.minute;
              t.second = tt.second;
              tok = true;
              break;
            }
          }
          if (!tok) {
            return mapping_fail(f.date->time_column + " value " + in_quotes(tv) +
                                " is not a time like 08:30");
          }
        }
      }
      if (t.hour > 23 || t.minute > 59 || t.second > 59) {
        return mapping_fail(f.source_name() + " value " + in_quotes(text) +
                            " has an impossible time of day");
      }
      const TimeMs ms = schemas::to_epoch_ms(date) +
                        ((t.hour * 60LL + t.minute) * 60 + t.second) * 1000 -
                        static_cast<TimeMs>(f.date->offset_minutes) * 60 * 1000;
      return std::optional<Json>(Json(ms));
    }
  }
  return mapping_fail("unsupported field type");
}

// Event JSON -> validated bytes. With fill_recorded_now the id is derived from the
// event without recorded_at, then recorded_at is set: the id stays the same whenever
// the file is read.
std::variant<schemas::EncodedEvent, Fail> SpoolConverter::Impl::encode(Json ev,
                                                                       bool fill_recorded_now,
                                                                       TimeMs now) {
  auto run = [&](const Json& j) -> std::variant<schemas::EncodedEvent, Fail> {
    std::string text;
    try {
      text = j.dump();
    } catch (const Json::exception& e) {
      return Fail{"SchemaError", "", std::string("the event is not valid JSON: ") + e.what()};
    }
    auto r = codec.from_json(text);
    if (!r) return Fail{"SchemaError", "", r.error().message};
    return std::move(*r);
  };
  if (fill_recorded_now) {
    if (!ev.contains("id") || ev["id"].is_null()) {
      auto first = run(ev);
      if (std::holds_alternative<Fail>(first)) return first;
      ev["id"] = std::get<schemas::EncodedEvent>(first).id.to_string();
    }
    ev["recorded_at"] = now;
  }
  auto r = run(ev);
  if (auto* e = std::get_if<schemas::EncodedEvent>(&r)) {
    e->id_derived = e->id_derived || fill_recorded_now;
    if (auto fail = validate(*e, now)) return *fail;
  }
  return r;
}

std::optional<Fail> SpoolConverter::Impl::validate(const schemas::EncodedEvent& e,
                                                   TimeMs now) const {
  const schemas::ValidationContext ctx{regions, now};
  if (auto v = schemas::validate_event(e.bytes, ctx)) {
    return Fail{protocol::EnumNameErrorCode(v->code), v->field, v->message};
  }
  return std::nullopt;
}

std::variant<schemas::EncodedEvent, Fail> SpoolConverter::Impl::map_record(const Row& row,
                                                                           TimeMs now) {
  Json payload = Json::object();
  for (const auto& f : fields) {
    auto r = build_field(f, row);
    if (auto* fail = std::get_if<Fail>(&r)) return *fail;
    if (auto& v = std::get<std::optional<Json>>(r)) payload[f.name] = std::move(*v);
  }
  const Kind* kind = find_kind(*settings.kind);
  Json ev = Json::object();
  ev["payload_type"] = events::EnumNamePayload(kind->payload);
  // The regions the broker requires: exactly the villages the payload names.
  std::vector<std::string> villages;
  for (const char* key : {"village_code", "origin_village", "destination_village"}) {
    if (auto it = payload.find(key); it != payload.end() && it->is_string()) {
      villages.push_back(it->get<std::string>());
    }
  }
  std::sort(villages.begin(), villages.end());
  villages.erase(std::unique(villages.begin(), villages.end()), villages.end());
  ev["regions"] = villages;
  if (auto it = payload.find(kind->main_date); it != payload.end()) ev["occurred_at"] = *it;
  ev["payload"] = std::move(payload);
  if (recorded_at) {
    auto r = build_field(*recorded_at, row);
    if (auto* fail = std::get_if<Fail>(&r)) return *fail;
    ev["recorded_at"] = *std::get<std::optional<Json>>(r);
  }
  return encode(std::move(ev), !recorded_at.has_value(), now);
}

std::variant<schemas::EncodedEvent, Fail> SpoolConverter::Impl::event_line(std::string_view line,
                                                                           TimeMs now) {
  Json j;
  try {
    j = Json::parse(line.begin(), line.end());
  } catch (const Json::exception& e) {
    return Fail{"ParseError", "", std::string("invalid JSON: ") + e.what()};
  }
  if (!j.is_object()) return Fail{"ParseError", "", "a line must be one JSON object"};
  const bool fill = !j.contains("recorded_at");
  if (!fill) {
    // As written, so that an id derived from it is the one any other tool derives.
    auto r = codec.from_json(line);
    if (!r) return Fail{"SchemaError", "", r.error().message};
    if (auto fail = validate(*r, now)) return *fail;
    return std::move(*r);
  }
  return encode(std::move(j), true, now);
}

std::variant<schemas::EncodedEvent, Fail> SpoolConverter::Impl::mapped_json_line(
    std::string_view line, TimeMs now) {
  Json j;
  try {
    j = Json::parse(line.begin(), line.end());
  } catch (const Json::exception& e) {
    return Fail{"ParseError", "", std::string("invalid JSON: ") + e.what()};
  }
  if (!j.is_object()) return Fail{"ParseError", "", "a line must be one JSON object"};
  return map_record([&](const std::string& key) { return json_cell(j, key); }, now);
}

void SpoolConverter::Impl::add(SpoolFileResult& out, std::size_t line, std::string record,
                               std::variant<schemas::EncodedEvent, Fail> r, TimeMs /*now*/) {
  ++out.lines;
  if (auto* e = std::get_if<schemas::EncodedEvent>(&r)) {
    out.events.push_back(SpoolEvent{line, std::move(*e)});
    return;
  }
  auto& f = std::get<Fail>(r);
  SpoolReject rej;
  rej.line = line;
  rej.code = std::move(f.code);
  rej.field = std::move(f.field);
  // Validation messages start with their field; mapping messages name it at the end.
  rej.reason = "line " + std::to_string(line) + ": " + f.message;
  if (rej.code == "MappingError" && !rej.field.empty()) rej.reason += " (" + rej.field + ")";
  rej.record = std::move(record);
  out.rejects.push_back(std::move(rej));
}

void SpoolConverter::Impl::convert_csv(std::string_view text, TimeMs now, SpoolFileResult& out) {
  const auto records = parse_csv(text, settings.delimiter);
  std::size_t i = 0;
  for (; i < records.size() && records[i].empty; ++i) ++out.skipped_empty, ++out.lines;
  if (i == records.size()) return;

  const CsvRecord& header = records[i++];
  std::map<std::string, std::size_t, std::less<>> index;
  std::string header_error = header.error;
  for (std::size_t c = 0; c < header.fields.size() && header_error.empty(); ++c) {
    std::string name(trim(header.fields[c]));
    if (!index.emplace(name, c).second)
      header_error = "column " + in_quotes(name) + " appears twice";
  }
  if (!header_error.empty()) {
    add(out, header.line, header.text, Fail{"ParseError", "", "header: " + header_error}, now);
  }

  for (; i < records.size(); ++i) {
    const CsvRecord& r = records[i];
    if (r.empty) {
      ++out.lines;
      ++out.skipped_empty;
      continue;
    }
    if (!header_error.empty()) {
      add(out, r.line, r.text,
          Fail{
              "ParseError", "",
              "the header (line " + std::to_string(header.line) + ") is unusable: " + header_error},
          now);
      continue;
    }
    if (!r.error.empty()) {
      add(out, r.line, r.text, Fail{"ParseError", "", r.error}, now);
      continue;
    }
    if (r.fields.size() != header.fields.size()) {
      add(out, r.line, r.text,
          Fail{"ParseError", "",
               "has " + std::to_string(r.fields.size()) + " fields, the header has " +
                   std::to_string(header.fields.size())},
          now);
      continue;
    }
    auto row = [&](const std::string& column) {
      Cell c;
      if (auto it = index.find(column); it != index.end()) {
        c.present = true;
        c.text = r.fields[it->second];
      }
      return c;
    };
    add(out, r.line, r.text, map_record(row, now), now);
  }
}

void SpoolConverter::Impl::convert_jsonl(std::string_view text, TimeMs now, SpoolFileResult& out) {
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (trim(line).empty()) {
      ++out.lines;
      ++out.skipped_empty;
      continue;
    }
    add(out, line_no, std::string(line),
        settings.has_mapping ? mapped_json_line(line, now) : event_line(line, now), now);
  }
}

SpoolConverter::SpoolConverter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpoolConverter::SpoolConverter(SpoolConverter&&) noexcept = default;
SpoolConverter& SpoolConverter::operator=(SpoolConverter&&) noexcept = default;
SpoolConverter::~SpoolConverter() = default;

Result<SpoolConverter> SpoolConverter::create(const toml::table& table) {
  auto codec = schemas::JsonCodec::create();
  if (!codec) return kolabus::unexpected(codec.error());
  auto impl = std::make_unique<Impl>(std::move(*codec));
  if (auto st = impl->parse(table); !st) return kolabus::unexpected(st.error());
  return SpoolConverter(std::move(impl));
}

const SpoolSettings& SpoolConverter::settings() const { return impl_->settings; }

SpoolFileResult SpoolConverter::convert(std::string_view text, TimeMs now_ms) {
  SpoolFileResult out;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  // Not text (binary, or another encoding): nothing in it can be trusted to be
  // what it looks like, so every line is rejected and the operator converts the file.
  if (text.find('\0') != std::string_view::npos || !schemas::is_valid_utf8(text)) {
    std::size_t line_no = 0, pos = 0, first_bad = 0;
    std::vector<std::pair<std::size_t, std::string_view>> lines;
    while (pos < text.size()) {
      ++line_no;
      std::size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(pos, end - pos);
      pos = end + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (first_bad == 0 &&
          (line.find('\0') != std::string_view::npos || !schemas::is_valid_utf8(line))) {
        first_bad = line_no;
      }
      lines.emplace_back(line_no, line);
    }
    for (const auto& [n, line] : lines) {
      if (trim(line).empty()) {
        ++out.lines;
        ++out.skipped_empty;
        continue;
      }
      impl_->add(out, n, std::string(line),
                 Fail{"Encoding", "",
                      "the file is not UTF-8 text (binary, or another encoding such as "
                      "Windows-1252; first bad byte on line " +
                          std::to_string(first_bad) + ")"},
                 now_ms);
    }
    return out;
  }

  if (impl_->settings.format == SpoolFormat::kCsv) {
    impl_->convert_csv(text, now_ms, out);
  } else {
    impl_->convert_jsonl(text, now_ms, out);
  }
  return out;
}

}  // namespace kolabus::adapters
