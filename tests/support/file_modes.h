// File modes for the private-files tests: a umask set for one test, the mode of a
// path, and every entry under a directory that is not private (directories 0700,
// files 0600).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <common/private_files.h>

namespace kolabus::test {

// Sets the process umask for the scope (the tests' 022: what a login shell has), and
// puts the old one back.
class Umask {
 public:
  explicit Umask(mode_t mask) : old_(::umask(mask)) {}
  ~Umask() { ::umask(old_); }
  Umask(const Umask&) = delete;
  Umask& operator=(const Umask&) = delete;

 private:
  mode_t old_;
};

// The permission bits of `path` (0 when it cannot be read).
inline mode_t mode_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// "PATH 0644" for `root` and every entry below it that is not private: a directory
// that is not 0700, a file that is not 0600. Empty: all private.
inline std::vector<std::string> not_private(const std::string& root) {
  std::vector<std::string> out;
  auto check = [&](const std::filesystem::path& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return;
    const mode_t want = S_ISDIR(st.st_mode) ? kPrivateDirMode : kPrivateFileMode;
    if ((st.st_mode & 07777) != want) out.push_back(p.string() + " " + mode_text(st.st_mode));
  };
  check(root);
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root, ec)) check(e.path());
  return out;
}

// The list as one string, for a CHECK's message.
inline std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

}  // namespace kolabus::test
