// The Kemendagri list of administrative regions (kode wilayah): provinces (2 digits),
// regencies/cities (4), districts/kecamatan (6) and villages/kelurahan/desa (10), as
// strings of digits without dots. The broker checks every region code of an event
// against it; the demo generator walks it.
//
// Ownership: a RegionTable owns the CSV text it was parsed from (or, for embedded(),
// borrows the text compiled into the library); every Region and every string_view it
// hands out stays valid for as long as the table lives (moving the table keeps them
// valid). embedded() lives for the whole process.
//
// Thread-safety: immutable after construction; all const methods may be called from
// any number of threads. embedded() is initialised once, thread-safely, on first use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <common/result.h>

namespace kolabus::schemas {

enum class RegionLevel { kProvince, kRegency, kDistrict, kVillage };

// "province", "regency", "district", "village" (the CSV's spelling).
const char* region_level_name(RegionLevel level);
// The number of digits of a code at that level: 2, 4, 6, 10.
std::size_t region_code_length(RegionLevel level);

struct Region {
  std::string_view code;
  std::string_view name;
  RegionLevel level;
};

class RegionTable {
 public:
  // The edition named in messages ("... in the Kemendagri list (edition 2025)").
  static constexpr std::string_view kEdition = "2025";

  // The list compiled into the library (data/wilayah/wilayah.csv), parsed on first
  // use. Aborts if the compiled-in list does not parse: that is a build bug.
  static const RegionTable& embedded();

  // Reads a file in the same CSV format as parse(). kIoError if it cannot be read.
  static Result<RegionTable> load_file(const std::string& path);

  // Parses `code,name,level` CSV: a header row exactly `code,name,level`, then one
  // region per line; RFC-4180 quoting ("a,b" and "" inside quotes); `\n` or `\r\n`
  // line ends; blank lines are skipped. Each code must be all digits of the length its
  // level demands (2/4/6/10), and appear once. On failure (kInvalidArgument) the
  // message names the line number and the problem.
  static Result<RegionTable> parse(std::string csv_text);

  RegionTable(RegionTable&&) noexcept = default;
  RegionTable& operator=(RegionTable&&) noexcept = default;
  RegionTable(const RegionTable&) = delete;
  RegionTable& operator=(const RegionTable&) = delete;

  // nullptr if absent. O(1): an open-addressing hash index, one memory read per
  // lookup in the common case (every published event looks up its villages; a binary
  // search over the 91,600 codes was 4 % of the publish path, std::unordered_map 2.4 %).
  const Region* find(std::string_view code) const;
  // True if the code exists and is a village (10 digits).
  bool is_village(std::string_view code) const;
  // The regions one level below `parent_code`, sorted by code; "" gives the
  // provinces. Empty if the parent has no children or does not exist.
  std::vector<const Region*> children(std::string_view parent_code) const;
  std::size_t size() const { return regions_.size(); }
  // All regions, sorted by code.
  const std::vector<Region>& all() const { return regions_; }

 private:
  RegionTable() = default;
  static Result<RegionTable> parse_view(std::string_view text, RegionTable table);

  // Heap-held so that string_views into it survive a move of the table.
  std::unique_ptr<const std::string> owned_text_;
  // Names that needed unescaping ("" inside quotes); heap-held for the same reason.
  std::vector<std::unique_ptr<const std::string>> unescaped_names_;
  std::vector<Region> regions_;  // sorted by code, unique
  // Open addressing, linear probing, at most half full: each slot is 0 (empty) or
  // the code's key (its number and length, never 0) above the region's index into
  // regions_ in the low kIndexBits bits.
  static constexpr unsigned kIndexBits = 24;
  std::vector<std::uint64_t> slots_;
  unsigned slot_shift_ = 64;  // a key's home slot: the top bits of key * a constant
};

}  // namespace kolabus::schemas
