#include <algorithm>
#include <fstream>
#include <sstream>

#include <schemas/embedded.h>
#include <schemas/regions.h>

namespace kolabus::schemas {

const char* region_level_name(RegionLevel level) {
  switch (level) {
    case RegionLevel::kProvince:
      return "province";
    case RegionLevel::kRegency:
      return "regency";
    case RegionLevel::kDistrict:
      return "district";
    case RegionLevel::kVillage:
      return "village";
  }
  return "unknown";
}

std::size_t region_code_length(RegionLevel level) {
  switch (level) {
    case RegionLevel::kProvince:
      return 2;
    case RegionLevel::kRegency:
      return 4;
    case RegionLevel::kDistrict:
      return 6;
    case RegionLevel::kVillage:
      return 10;
  }
  return 0;
}

namespace {

constexpr std::size_t kMaxCodeLength = 10;

// A code of digits as one number, its length in the low bits ("12" and "0012" differ).
// REQUIRES: 1 to kMaxCodeLength digits.
std::uint64_t code_key(std::string_view code) {
  std::uint64_t v = 0;
  for (char c : code) v = v * 10 + static_cast<std::uint64_t>(c - '0');
  return v << 4 | code.size();
}

// Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive codes.
std::size_t home_slot(std::uint64_t key, unsigned shift) {
  return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift);
}

bool parse_level(std::string_view s, RegionLevel* level) {
  if (s == "province") {
    *level = RegionLevel::kProvince;
  } else if (s == "regency") {
    *level = RegionLevel::kRegency;
  } else if (s == "district") {
    *level = RegionLevel::kDistrict;
  } else if (s == "village") {
    *level = RegionLevel::kVillage;
  } else {
    return false;
  }
  return true;
}

// One CSV field. `quoted` fields may hold commas and doubled quotes; `needs_unescape`
// says whether the raw text still contains "" pairs.
struct Field {
  std::string_view raw;
  bool needs_unescape = false;
};

// Splits one line (without its line end) into fields. Returns an error message, or
// empty on success.
std::string split_line(std::string_view line, std::vector<Field>* fields) {
  fields->clear();
  std::size_t i = 0;
  while (true) {
    Field f;
    if (i < line.size() && line[i] == '"') {
      const std::size_t start = ++i;
      while (true) {
        if (i >= line.size()) return "unterminated quoted field";
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            f.needs_unescape = true;
            i += 2;
            continue;
          }
          break;
        }
        ++i;
      }
      f.raw = line.substr(start, i - start);
      ++i;  // closing quote
      if (i < line.size() && line[i] != ',') return "text after a closing quote";
    } else {
      const std::size_t start = i;
      while (i < line.size() && line[i] != ',') {
        if (line[i] == '"') return "quote inside an unquoted field";
        ++i;
      }
      f.raw = line.substr(start, i - start);
    }
    fields->push_back(f);
    if (i >= line.size()) return {};
    ++i;  // the comma
  }
}

Unexpected<Error> line_error(std::size_t line_no, const std::string& what) {
  return unexpected(Errc::kInvalidArgument,
                    "region list line " + std::to_string(line_no) + ": " + what);
}

}  // namespace

Result<RegionTable> RegionTable::parse_view(std::string_view text, RegionTable table) {
  std::vector<std::uint32_t> lines;  // line number of each region, for duplicate errors
  std::vector<Field> fields;
  std::size_t pos = 0;
  std::size_t line_no = 0;
  bool header_seen = false;
  // The official list has ~92,000 rows; reserve roughly to avoid regrowth.
  table.regions_.reserve(text.size() / 24 + 1);
  lines.reserve(text.size() / 24 + 1);
  while (pos < text.size()) {
    ++line_no;
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (!header_seen) {
      if (line != "code,name,level") {
        return line_error(line_no, "expected the header row \"code,name,level\"");
      }
      header_seen = true;
      continue;
    }
    if (auto err = split_line(line, &fields); !err.empty()) return line_error(line_no, err);
    if (fields.size() != 3) {
      return line_error(
          line_no, "expected 3 fields (code,name,level), found " + std::to_string(fields.size()));
    }
    const std::string_view code = fields[0].raw;
    RegionLevel level;
    if (!parse_level(fields[2].raw, &level)) {
      return line_error(line_no, "unknown level \"" + std::string(fields[2].raw) +
                                     "\" (province, regency, district or village)");
    }
    if (code.empty() ||
        !std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return line_error(line_no, "code \"" + std::string(code) + "\" is not all digits");
    }
    if (code.size() != region_code_length(level)) {
      return line_error(line_no, "code " + std::string(code) + " has " +
                                     std::to_string(code.size()) + " digits but a " +
                                     region_level_name(level) + " code has " +
                                     std::to_string(region_code_length(level)));
    }
    std::string_view name = fields[1].raw;
    if (name.empty()) return line_error(line_no, "code " + std::string(code) + " has no name");
    if (fields[1].needs_unescape) {
      std::string unescaped;
      unescaped.reserve(name.size());
      for (std::size_t i = 0; i < name.size(); ++i) {
        unescaped.push_back(name[i]);
        if (name[i] == '"') ++i;  // skip the second quote of a pair
      }
      table.unescaped_names_.push_back(std::make_unique<const std::string>(std::move(unescaped)));
      name = *table.unescaped_names_.back();
    }
    table.regions_.push_back(Region{code, name, level});
    lines.push_back(static_cast<std::uint32_t>(line_no));
  }
  if (!header_seen) return line_error(1, "empty file: expected the header row \"code,name,level\"");

  // The official file is sorted; sort only if a hand-made one is not.
  auto by_code = [&](std::size_t a, std::size_t b) {
    return table.regions_[a].code < table.regions_[b].code;
  };
  std::vector<std::size_t> order;
  bool sorted = true;
  for (std::size_t i = 1; i < table.regions_.size(); ++i) {
    if (!(table.regions_[i - 1].code < table.regions_[i].code)) {
      sorted = false;
      break;
    }
  }
  if (!sorted) {
    order.resize(table.regions_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), by_code);
    std::vector<Region> regions;
    std::vector<std::uint32_t> sorted_lines;
    regions.reserve(order.size());
    sorted_lines.reserve(order.size());
    for (std::size_t i : order) {
      regions.push_back(table.regions_[i]);
      sorted_lines.push_back(lines[i]);
    }
    table.regions_ = std::move(regions);
    lines = std::move(sorted_lines);
    for (std::size_t i = 1; i < table.regions_.size(); ++i) {
      if (table.regions_[i - 1].code == table.regions_[i].code) {
        const std::size_t later = std::max(lines[i - 1], lines[i]);
        const std::size_t earlier = std::min(lines[i - 1], lines[i]);
        return line_error(later, "code " + std::string(table.regions_[i].code) +
                                     " already appears on line " + std::to_string(earlier));
      }
    }
  }
  table.regions_.shrink_to_fit();
  if (table.regions_.size() >= (std::size_t{1} << kIndexBits)) {
    return line_error(line_no, "more than " + std::to_string((1u << kIndexBits) - 1) +
                                   " regions; the official list has about 92,000");
  }
  // At most half full, so that a probe ends soon and always finds an empty slot.
  unsigned bits = 4;
  while ((std::size_t{1} << bits) < 2 * table.regions_.size()) ++bits;
  table.slots_.assign(std::size_t{1} << bits, 0);
  table.slot_shift_ = 64 - bits;
  const std::size_t mask = table.slots_.size() - 1;
  for (std::size_t i = 0; i < table.regions_.size(); ++i) {
    const std::uint64_t key = code_key(table.regions_[i].code);
    std::size_t s = home_slot(key, table.slot_shift_);
    while (table.slots_[s] != 0) s = (s + 1) & mask;
    table.slots_[s] = key << kIndexBits | i;
  }
  return table;
}

Result<RegionTable> RegionTable::parse(std::string csv_text) {
  RegionTable table;
  table.owned_text_ = std::make_unique<const std::string>(std::move(csv_text));
  std::string_view text = *table.owned_text_;
  return parse_view(text, std::move(table));
}

Result<RegionTable> RegionTable::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unexpected(Errc::kIoError, "cannot open region list " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return unexpected(Errc::kIoError, "cannot read region list " + path);
  auto table = parse(std::move(ss).str());
  if (!table) return unexpected(table.error().code, path + ": " + table.error().message);
  return table;
}

const RegionTable& RegionTable::embedded() {
  static const RegionTable table = [] {
    auto parsed = parse_view(wilayah_csv_text(), RegionTable());
    if (!parsed) {
      fail_invariant(("compiled-in region list does not parse: " + parsed.error().message).c_str(),
                     __FILE__, __LINE__);
    }
    return std::move(parsed).value();
  }();
  return table;
}

const Region* RegionTable::find(std::string_view code) const {
  if (code.empty() || code.size() > kMaxCodeLength) return nullptr;
  for (char c : code) {
    if (c < '0' || c > '9') return nullptr;
  }
  if (slots_.empty()) return nullptr;  // a moved-from table
  const std::uint64_t key = code_key(code);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t s = home_slot(key, slot_shift_);; s = (s + 1) & mask) {
    const std::uint64_t slot = slots_[s];
    if (slot == 0) return nullptr;
    if (slot >> kIndexBits == key) return &regions_[slot & ((std::uint64_t{1} << kIndexBits) - 1)];
  }
}

bool RegionTable::is_village(std::string_view code) const {
  const Region* r = find(code);
  return r != nullptr && r->level == RegionLevel::kVillage;
}

std::vector<const Region*> RegionTable::children(std::string_view parent_code) const {
  std::size_t child_len;
  switch (parent_code.size()) {
    case 0:
      child_len = 2;
      break;
    case 2:
      child_len = 4;
      break;
    case 4:
      child_len = 6;
      break;
    case 6:
      child_len = 10;
      break;
    default:
      return {};
  }
  std::vector<const Region*> out;
  auto it = std::lower_bound(regions_.begin(), regions_.end(), parent_code,
                             [](const Region& r, std::string_view c) { return r.code < c; });
  for (; it != regions_.end() && it->code.substr(0, parent_code.size()) == parent_code; ++it) {
    if (it->code.size() == child_len) out.push_back(&*it);
  }
  return out;
}

}  // namespace kolabus::schemas
