#include <algorithm>
#include <mutex>
#include <utility>

#include "event_log_internal.h"
#include <storage/memory_event_log.h>

namespace kolabus::storage {

Status MemoryEventLog::append(std::span<const AppendRecord> records) {
  std::unique_lock lock(mu_);
  detail::check_append_preconditions(records, Sequence{next_seq_});
  for (const auto& r : records) KOLABUS_CHECK(ids_.count(r.id) == 0);
  if (fail_appends_.load()) return unexpected(Errc::kIoError, "injected failure");
  for (const auto& r : records) {
    log_.emplace(r.seq.value, std::string(r.record.begin(), r.record.end()));
    ids_.emplace(r.id, r.seq.value);
    for (auto p : detail::distinct_region_prefixes(r.regions)) {
      auto it = regions_.find(p);
      if (it == regions_.end())
        it = regions_.emplace(std::string(p), std::vector<RegionHit>{}).first;
      it->second.push_back(RegionHit{r.seq, r.kind});
    }
  }
  next_seq_ += records.size();
  return {};
}

Sequence MemoryEventLog::next_sequence() const {
  std::shared_lock lock(mu_);
  return Sequence{next_seq_};
}

Result<std::optional<Sequence>> MemoryEventLog::find_id(const EventId& id) const {
  std::shared_lock lock(mu_);
  auto it = ids_.find(id);
  if (it == ids_.end()) return std::optional<Sequence>();
  return std::optional<Sequence>(Sequence{it->second});
}

Result<std::optional<std::string>> MemoryEventLog::read(Sequence seq) const {
  std::shared_lock lock(mu_);
  auto it = log_.find(seq.value);
  if (it == log_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status MemoryEventLog::scan(Sequence from, std::size_t max,
                            const std::function<bool(Sequence, std::string_view)>& fn) const {
  // Copy under the lock, call fn without it: fn may read the log.
  std::vector<std::pair<std::uint64_t, std::string>> hits;
  {
    std::shared_lock lock(mu_);
    for (auto it = log_.lower_bound(from.value); it != log_.end() && hits.size() < max; ++it) {
      hits.emplace_back(it->first, it->second);
    }
  }
  for (const auto& [seq, record] : hits) {
    if (!fn(Sequence{seq}, record)) break;
  }
  return {};
}

Status MemoryEventLog::scan_region(std::string_view prefix, Sequence from, std::size_t max,
                                   const std::function<bool(const RegionHit&)>& fn) const {
  if (!is_region_prefix(prefix)) {
    return unexpected(Errc::kInvalidArgument,
                      "region prefix '" + std::string(prefix) + "' is not 2, 4, 6 or 10 digits");
  }
  std::vector<RegionHit> hits;
  {
    std::shared_lock lock(mu_);
    auto it = regions_.find(prefix);
    if (it != regions_.end()) {
      const auto& v = it->second;
      auto first = std::lower_bound(v.begin(), v.end(), from,
                                    [](const RegionHit& h, Sequence s) { return h.seq < s; });
      for (; first != v.end() && hits.size() < max; ++first) hits.push_back(*first);
    }
  }
  for (const auto& h : hits) {
    if (!fn(h)) break;
  }
  return {};
}

}  // namespace kolabus::storage
