// Journal: an append-only file of text lines, the crash suite's record of what a
// client process did, written so that a SIGKILL at any instant leaves it readable.
//
// Each record is one write(2) of a whole line on an O_APPEND descriptor. A killed
// process loses no completed write (the page cache belongs to the kernel), so a
// record that append() returned for is there after a SIGKILL even unsynced;
// Sync::kYes adds fdatasync, for records that must also survive the machine (the
// suite kills processes only, but the publisher's intent records are synced anyway,
// as a real adapter would). A line cut short is never counted: readers keep only
// lines that end in '\n'.
//
// Ownership: a Journal owns its descriptor. Thread-safety: append() may be called
// from several threads (each record is one write on an O_APPEND descriptor).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <common/result.h>

namespace kolabus::crash {

enum class Sync { kNo, kYes };

class Journal {
 public:
  // Opens (creating if missing) `path` for appending.
  static Result<Journal> open(const std::string& path);
  Journal(Journal&& other) noexcept;
  Journal& operator=(Journal&& other) noexcept;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();

  // Appends `line` and a '\n'. REQUIRES: line holds no '\n'.
  Status append(std::string_view line, Sync sync);

 private:
  explicit Journal(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

// The complete lines of `path` (none if it does not exist), without their '\n'.
std::vector<std::string> read_journal(const std::string& path);

// Splits a line on single spaces.
std::vector<std::string_view> split_fields(std::string_view line);

// A decimal number, or 0 for anything else (the checker counts what it can read;
// a bad record shows up as a mismatch, not as an exception).
std::uint64_t to_u64(std::string_view s);

}  // namespace kolabus::crash
