// Private files: what kolabus writes about residents (the event log, outboxes, inboxes,
// ward registers, spool archives) and the secrets it loads (CURVE key pairs, the
// audit chain's NIK key) are for their owner only. Header-only, POSIX only.
//
//  - Directories kolabus makes are mode 0700 and files 0600, set exactly (chmod after
//    mkdir/open), whatever the process's umask: the client library runs inside the
//    agencies' own programs, whose umask is theirs to choose and is never changed here.
//  - make_private_dir() also narrows a directory of kolabus's own that already exists
//    with a wider mode (made by an older release, or by hand) to 0700 and says so, so
//    that the caller logs it once.
//  - check_secret_mode() is the one rule for every secret file kolabus loads: refused
//    when group or others may read or write it, as ssh refuses a private key, naming
//    the file and the fix (chmod 600 FILE). read_secret_file() reads one with it.
//
// Errors name the path and the system's reason: kIoError (cannot create, open, read,
// change the mode), kNotFound (no such secret file), kInvalidArgument (a secret file
// others may read, a path that is not a directory or not a regular file).
//
// Thread-safety: free functions; concurrent calls on different paths are safe.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <common/result.h>

namespace kolabus {

inline constexpr mode_t kPrivateDirMode = 0700;
inline constexpr mode_t kPrivateFileMode = 0600;

// "0644": permission bits as ls and chmod write them.
inline std::string mode_text(mode_t mode) {
  char octal[16];
  std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode & 07777));
  return octal;
}

// Whether group or others have any access to a file of this mode.
inline bool open_to_others(mode_t mode) { return (mode & 077) != 0; }

// The rule for secret files: refused (kInvalidArgument) when group or others may read
// or write it. `what` names the kind of secret in the message ("secret key file",
// "audit key file").
inline Status check_secret_mode(const std::string& path, mode_t mode,
                                std::string_view what = "secret key file") {
  if (!open_to_others(mode)) return {};
  return unexpected(Errc::kInvalidArgument,
                    "permissions " + mode_text(mode) + " for the " + std::string(what) + " " +
                        path + " are too open: it must be readable by its owner only (chmod 600 " +
                        path + ")");
}

// Reads a whole small secret file (at most 64 KiB) after checking its mode with
// check_secret_mode. kNotFound when it does not exist.
inline Result<std::string> read_secret_file(const std::string& path,
                                            std::string_view what = "secret key file") {
  const std::string kind(what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return unexpected(e == ENOENT ? Errc::kNotFound : Errc::kIoError,
                      "cannot open the " + kind + " " + path + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return unexpected(Errc::kInvalidArgument,
                      "the " + kind + " " + path + " is not a regular file");
  }
  if (st.st_size > 64 * 1024) {
    ::close(fd);
    return unexpected(Errc::kInvalidArgument,
                      "the " + kind + " " + path + " is too large to be a key");
  }
  if (auto ok = check_secret_mode(path, st.st_mode, what); !ok) {
    ::close(fd);
    return unexpected(ok.error());
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return unexpected(Errc::kIoError,
                        "cannot read the " + kind + " " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// What make_private_dir did.
struct PrivateDir {
  bool created = false;           // the directory was made now (mode 0700)
  std::optional<mode_t> widened;  // it existed with this mode, open to others; now 0700
};

// Makes `dir` and its missing parents, each mode 0700. When `dir` exists and group or
// others may use it: with `narrow`, its mode becomes owner-only (0755 -> 0700) and
// `widened` says what it was; without, it is left alone. Parents that exist are never
// changed. Errors: kIoError (cannot make it or change its mode), kInvalidArgument (it
// exists and is not a directory).
inline Result<PrivateDir> make_private_dir(const std::string& dir, bool narrow = true) {
  PrivateDir out;
  const std::filesystem::path target(dir.empty() ? "." : dir);
  struct stat st {};
  if (::stat(target.c_str(), &st) != 0) {
    // Make each missing component, from the top: mkdir(0700), then exactly 0700.
    std::filesystem::path at;
    for (const auto& part : target) {
      at /= part;
      if (::stat(at.c_str(), &st) == 0) continue;
      if (::mkdir(at.c_str(), kPrivateDirMode) != 0 && errno != EEXIST) {
        const int e = errno;
        return unexpected(Errc::kIoError,
                          "cannot create the directory " + at.string() + ": " + std::strerror(e));
      }
      if (::chmod(at.c_str(), kPrivateDirMode) != 0) {
        const int e = errno;
        return unexpected(Errc::kIoError, "cannot set the mode of " + at.string() +
                                              " to 0700: " + std::strerror(e));
      }
    }
    out.created = true;
    return out;
  }
  if (!S_ISDIR(st.st_mode)) {
    return unexpected(Errc::kInvalidArgument, dir + " exists and is not a directory");
  }
  if (narrow && open_to_others(st.st_mode)) {
    if (::chmod(target.c_str(), st.st_mode & 0700) != 0) {
      const int e = errno;
      return unexpected(Errc::kIoError, dir + " is mode " + mode_text(st.st_mode) +
                                            ", open to other users, and its mode cannot be set "
                                            "to 0700: " +
                                            std::strerror(e));
    }
    out.widened = st.st_mode & 07777;
  }
  return out;
}

// The warning for a directory make_private_dir narrowed: one wording everywhere.
inline std::string narrowed_text(std::string_view what, const std::string& dir, mode_t was) {
  return std::string(what) + " " + dir + " was mode " + mode_text(was) +
         ", open to other users; it is now " + mode_text(was & 0700) + " (owner only)";
}

// Makes an existing file owner-only (0644 -> 0600) if group or others may use it.
// Returns the mode it had when it was narrowed. Errors: kIoError.
inline Result<std::optional<mode_t>> narrow_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    return unexpected(Errc::kIoError, "cannot stat " + path + ": " + std::strerror(e));
  }
  if (!open_to_others(st.st_mode)) return std::optional<mode_t>();
  if (::chmod(path.c_str(), st.st_mode & 0700) != 0) {
    const int e = errno;
    return unexpected(Errc::kIoError,
                      "cannot set the mode of " + path + " to owner only: " + std::strerror(e));
  }
  return std::optional<mode_t>(st.st_mode & 07777);
}

// Opens `path` for writing (O_WRONLY | O_CLOEXEC | `flags`, e.g. O_TRUNC, O_EXCL,
// O_APPEND), creating it with mode 0600; a file that exists open to others is narrowed
// to owner-only first. Returns the descriptor. Errors: kIoError.
inline Result<int> open_private_file(const std::string& path, int flags = 0) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, kPrivateFileMode);
  if (fd < 0) {
    const int e = errno;
    return unexpected(e == EEXIST ? Errc::kInvalidArgument : Errc::kIoError,
                      "cannot create " + path + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || (open_to_others(st.st_mode) && ::fchmod(fd, st.st_mode & 0700))) {
    const int e = errno;
    ::close(fd);
    return unexpected(Errc::kIoError,
                      "cannot set the mode of " + path + " to owner only: " + std::strerror(e));
  }
  return fd;
}

// Writes `text` to a temporary file beside `final_path` (`.NAME.tmp-PID`) with exactly
// `mode`, synced, then puts it at `final_path`: rename (overwrite) or link, which fails
// (kInvalidArgument) when it exists (no overwrite, and no window in which another
// process could slip a file in between). The file appears whole or not at all; sync
// the directory (sync_dir) to make the new name durable.
inline Status write_file_atomically(const std::string& final_path, const std::string& text,
                                    mode_t mode, bool overwrite) {
  const std::filesystem::path final_p(final_path);
  const std::string dir = final_p.has_parent_path() ? final_p.parent_path().string() : ".";
  const std::string tmp =
      dir + "/." + final_p.filename().string() + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of a crashed run of this very process id
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    const int e = errno;
    return unexpected(Errc::kIoError, "cannot create " + tmp + ": " + std::strerror(e));
  }
  auto fail = [&](const std::string& what) -> Status {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return unexpected(Errc::kIoError, what + ": " + std::strerror(e));
  };
  // The umask may have taken bits away (or, for 0644, left them): be exact.
  if (::fchmod(fd, mode) != 0) return fail("cannot set the mode of " + tmp);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write " + tmp);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot sync " + tmp);
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return unexpected(Errc::kIoError, "cannot write " + tmp + ": " + std::strerror(e));
  }
  if (overwrite) {
    if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return unexpected(Errc::kIoError,
                        "cannot rename " + tmp + " to " + final_path + ": " + std::strerror(e));
    }
    return {};
  }
  const int linked = ::link(tmp.c_str(), final_path.c_str());
  const int e = errno;
  ::unlink(tmp.c_str());
  if (linked != 0) {
    if (e == EEXIST) {
      return unexpected(Errc::kInvalidArgument,
                        final_path + " already exists (refusing to overwrite it)");
    }
    return unexpected(Errc::kIoError, "cannot create " + final_path + ": " + std::strerror(e));
  }
  return {};
}

// Syncs a directory, so that names made or removed in it survive a crash.
inline Status sync_dir(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return unexpected(Errc::kIoError, "cannot open the directory " + dir + ": " + std::strerror(e));
  }
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0) {
    return unexpected(Errc::kIoError, "cannot sync the directory " + dir + ": " + std::strerror(e));
  }
  return {};
}

}  // namespace kolabus
