// AuditLog: the store of the broker's append-only audit chain (DESIGN.md, security).
//
// Storage keeps each record's bytes opaquely under its index (1, 2, 3, ...) and, beside
// them, the chain's head: the index and hash of the last record appended. Building the
// records and their hashes is the broker's work (broker/audit.h); storage never hashes
// and never decodes, so it does not depend on libsodium or the schemas.
//
// There is no way to change or remove a record through this interface. Someone with
// the database files can, of course; that is what the hash chain and the recorded head
// are for: `kolabus audit verify` finds any such edit.
//
// The audit log belongs to an event log (EventLog::audit()): both live in one database,
// so that a group commit stores its events and its audit record in one atomic, synced
// write (EventLog::append).
//
// Thread-safety: concurrent readers plus one writer; the writer is the event log's.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <common/result.h>

namespace kolabus::storage {

using AuditHash = std::array<std::uint8_t, 32>;

// The last record appended: index 0 (and a zero hash) for an empty chain.
struct AuditHead {
  std::uint64_t index = 0;
  AuditHash hash{};
  friend bool operator==(const AuditHead&, const AuditHead&) = default;
};

// One record to append. `bytes` is borrowed for the call; `hash` is the hash of
// `bytes`, recorded as the new head when this is the last entry of an append.
struct AuditEntry {
  std::uint64_t index = 0;
  std::span<const std::uint8_t> bytes;
  AuditHash hash{};
};

class AuditLog {
 public:
  virtual ~AuditLog() = default;

  // Appends the entries and records the last one as the head, in one write; synced
  // when `sync` (an unsynced write still survives a crash of the process, and
  // becomes durable with the next synced write of the database, in order).
  // REQUIRES: entries non-empty, indexes consecutive from head().index + 1.
  // Errors: kIoError (disk full, injected failure), kInvalidArgument (read-only).
  virtual Status append(std::span<const AuditEntry> entries, bool sync) = 0;

  // The head as recorded (read at open, then moved by every append).
  virtual AuditHead head() const = 0;

  // Calls fn(index, bytes) for each stored record with index >= from, in index order,
  // at most `max` times; fn returns false to stop. The index is the record's key, as
  // stored (a verifier compares it with the index inside the bytes). The view is valid
  // only during the call.
  virtual Status scan(std::uint64_t from, std::size_t max,
                      const std::function<bool(std::uint64_t, std::string_view)>& fn) const = 0;
};

}  // namespace kolabus::storage
