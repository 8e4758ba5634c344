#include <algorithm>
#include <mutex>
#include <utility>

#include "event_log_internal.h"
#include <storage/memory_event_log.h>

namespace kolabus::storage {

Status MemoryEventLog::write(std::span<const AppendRecord> records,
                             std::span<const AuditEntry> audit) {
  detail::check_append_preconditions(records, Sequence{next_seq_});
  for (const auto& r : records) KOLABUS_CHECK(ids_.count(r.id) == 0);
  if (!audit.empty()) detail::check_audit_preconditions(audit, audit_head_);
  if (fail_appends_.load()) return unexpected(Errc::kIoError, "injected failure");
  if (sync_failed_) {
    return unexpected(Errc::kUnavailable,
                      "the last sync failed; writes wait for a sync that recovers");
  }
  store_audit(audit);
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

Status MemoryEventLog::append(std::span<const AppendRecord> records,
                              std::span<const AuditEntry> audit) {
  std::unique_lock lock(mu_);
  if (auto st = write(records, audit); !st) return st;
  durable_ = next_seq_;
  return {};
}

Status MemoryEventLog::append_unsynced(std::span<const AppendRecord> records,
                                       std::span<const AuditEntry> audit) {
  std::unique_lock lock(mu_);
  return write(records, audit);
}

Result<Sequence> MemoryEventLog::sync() {
  std::unique_lock lock(mu_);
  if (fail_syncs_.load()) {
    sync_failed_ = true;
    return unexpected(Errc::kIoError, "injected sync failure");
  }
  sync_failed_ = false;
  durable_ = next_seq_;
  return Sequence{durable_};
}

Sequence MemoryEventLog::next_sequence() const {
  std::shared_lock lock(mu_);
  return Sequence{durable_};
}

Sequence MemoryEventLog::appended_end() const {
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
    for (auto it = log_.lower_bound(from.value);
         it != log_.end() && it->first < durable_ && hits.size() < max; ++it) {
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
      for (; first != v.end() && first->seq.value < durable_ && hits.size() < max; ++first) {
        hits.push_back(*first);
      }
    }
  }
  for (const auto& h : hits) {
    if (!fn(h)) break;
  }
  return {};
}

void MemoryEventLog::store_audit(std::span<const AuditEntry> entries) {
  for (const auto& e : entries) {
    audit_records_.emplace(e.index, std::string(e.bytes.begin(), e.bytes.end()));
  }
  if (!entries.empty()) audit_head_ = AuditHead{entries.back().index, entries.back().hash};
}

Status MemoryEventLog::Audit::append(std::span<const AuditEntry> entries, bool /*sync*/) {
  std::unique_lock lock(log_.mu_);
  KOLABUS_CHECK(!entries.empty());
  detail::check_audit_preconditions(entries, log_.audit_head_);
  if (log_.fail_appends_.load()) return unexpected(Errc::kIoError, "injected failure");
  log_.store_audit(entries);
  return {};
}

AuditHead MemoryEventLog::Audit::head() const {
  std::shared_lock lock(log_.mu_);
  return log_.audit_head_;
}

Status MemoryEventLog::Audit::scan(
    std::uint64_t from, std::size_t max,
    const std::function<bool(std::uint64_t, std::string_view)>& fn) const {
  std::vector<std::pair<std::uint64_t, std::string>> hits;
  {
    std::shared_lock lock(log_.mu_);
    for (auto it = log_.audit_records_.lower_bound(from);
         it != log_.audit_records_.end() && hits.size() < max; ++it) {
      hits.emplace_back(it->first, it->second);
    }
  }
  for (const auto& [index, bytes] : hits) {
    if (!fn(index, bytes)) break;
  }
  return {};
}

}  // namespace kolabus::storage
