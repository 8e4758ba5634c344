#include <algorithm>
#include <vector>

#include "event_log_internal.h"
#include <storage/event_log.h>

namespace kolabus::storage {

namespace {
bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
}  // namespace

bool is_region_prefix(std::string_view prefix) {
  return std::find(kRegionPrefixLengths.begin(), kRegionPrefixLengths.end(), prefix.size()) !=
             kRegionPrefixLengths.end() &&
         all_digits(prefix);
}

namespace detail {

void check_append_preconditions(std::span<const AppendRecord> records, Sequence next) {
  KOLABUS_CHECK(!records.empty());
  // Distinct ids: sorted in one vector, not a set (a node per record).
  std::vector<EventId> ids;
  ids.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    KOLABUS_CHECK(records[i].seq.value == next.value + i);
    ids.push_back(records[i].id);
    for (const auto& r : records[i].regions) {
      KOLABUS_CHECK(r.size() == kRegionCodeLength && all_digits(r));
    }
  }
  std::sort(ids.begin(), ids.end());
  KOLABUS_CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
}

void check_audit_preconditions(std::span<const AuditEntry> entries, const AuditHead& head) {
  for (std::size_t i = 0; i < entries.size(); ++i) {
    KOLABUS_CHECK(entries[i].index == head.index + 1 + i);
  }
}

std::vector<std::string_view> distinct_region_prefixes(std::span<const std::string> regions) {
  std::vector<std::string_view> out;
  distinct_region_prefixes(regions, out);
  return out;
}

void distinct_region_prefixes(std::span<const std::string> regions,
                              std::vector<std::string_view>& out) {
  out.clear();
  for (const auto& r : regions) {
    for (std::size_t len : kRegionPrefixLengths) {
      std::string_view p = std::string_view(r).substr(0, len);
      if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
    }
  }
}

}  // namespace detail
}  // namespace kolabus::storage
