// Internal to storage: the parts of the EventLog contract both implementations share,
// so that they cannot drift apart.
#pragma once

#include <string_view>
#include <vector>

#include <storage/event_log.h>

namespace kolabus::storage::detail {

// Aborts unless `records` meets append()'s REQUIRES given the log's next sequence
// (ids are checked for distinctness within the batch; presence in the log is the
// caller's check, repeated by each implementation).
void check_append_preconditions(std::span<const AppendRecord> records, Sequence next);

// Aborts unless `entries` continue the chain whose head is `head`: indexes consecutive
// from head.index + 1 (AuditLog::append's REQUIRES).
void check_audit_preconditions(std::span<const AuditEntry> entries, const AuditHead& head);

// Every distinct prefix (of each length in kRegionPrefixLengths) of `regions`, each
// once: the keys under which one event is indexed. Views borrow from `regions`.
std::vector<std::string_view> distinct_region_prefixes(std::span<const std::string> regions);
// The same into `out` (cleared first), so that a writer can reuse one vector.
void distinct_region_prefixes(std::span<const std::string> regions,
                              std::vector<std::string_view>& out);

}  // namespace kolabus::storage::detail
