#include "journal.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

namespace kolabus::crash {

Result<Journal> Journal::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return unexpected(Errc::kIoError, "cannot open " + path + ": " + std::strerror(errno));
  }
  return Journal(fd, path);
}

Journal::Journal(Journal&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

Journal& Journal::operator=(Journal&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

Status Journal::append(std::string_view line, Sync sync) {
  KOLABUS_CHECK(line.find('\n') == std::string_view::npos);
  std::string record;
  record.reserve(line.size() + 1);
  record.append(line).push_back('\n');
  // One write: a record is either whole in the file or (only if the process dies
  // inside the call, which O_APPEND on a local file does not split) cut short.
  const ssize_t n = ::write(fd_, record.data(), record.size());
  if (n != static_cast<ssize_t>(record.size())) {
    return unexpected(Errc::kIoError, "cannot append to " + path_ + ": " +
                                          (n < 0 ? std::strerror(errno) : "short write"));
  }
  if (sync == Sync::kYes && ::fdatasync(fd_) != 0) {
    return unexpected(Errc::kIoError, "cannot sync " + path_ + ": " + std::strerror(errno));
  }
  return {};
}

std::vector<std::string> read_journal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<std::string> lines;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    if (end == std::string::npos) break;  // a torn last record
    lines.emplace_back(text.substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t at = 0;
  while (at <= line.size()) {
    const std::size_t end = line.find(' ', at);
    if (end == std::string_view::npos) {
      out.push_back(line.substr(at));
      break;
    }
    out.push_back(line.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

std::uint64_t to_u64(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size() ? v : 0;
}

}  // namespace kolabus::crash
