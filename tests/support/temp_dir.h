// A fresh directory under the system temp dir for one test, removed afterwards.
#pragma once

#include <filesystem>
#include <string>

#include <common/ids.h>

namespace kolabus::test {

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test")
      : path_(std::filesystem::temp_directory_path() /
              ("kolabus-" + tag + "-" + new_uuid_v7().to_string())) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The directory itself, or `sub` inside it.
  std::string str(const std::string& sub = "") const {
    return sub.empty() ? path_.string() : (path_ / sub).string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace kolabus::test
