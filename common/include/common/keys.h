// CURVE key files: an agency's (or the broker's) key pair on disk, in a small text
// format that people can read, diff and copy, and that the broker, the client
// library and the `kolabus` tool all load the same way. Header-only, POSIX only, no
// ZeroMQ: generating a key pair needs ZeroMQ (client/curve.h, generate_key_pair).
//
// Format (docs/OPERATIONS.md, "Keys"). Keys are Z85 (ZeroMQ's encoding, 40 characters
// for 32 bytes). A TOML subset: one `name = "value"` per line; blank lines and lines
// starting with `#` are ignored.
//
//   NAME.key — the key pair. Secret: mode 0600, refused when group or others may read it.
//     # kolabus CURVE key pair of NAME. Keep this file secret.
//     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//     secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
//
//   NAME.pub — the public key alone (mode 0644): what goes into a registry or is
//   handed to the other side.
//     # kolabus CURVE public key of NAME.
//     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//
// Errors name the file and, for a bad line, its number: kNotFound (no such file),
// kIoError (unreadable, unwritable), kInvalidArgument (bad content, a secret file
// others may read, a file that exists and may not be overwritten). The rule for secret
// files is common/private_files.h's, the same for every secret kolabus loads.
//
// Thread-safety: free functions; concurrent calls on different files are safe.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <common/private_files.h>
#include <common/result.h>

namespace kolabus {

// A CURVE key pair, each key Z85-encoded (40 characters).
struct KeyPair {
  std::string public_key{};
  std::string secret_key{};
};

namespace keys_detail {

inline constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

inline int z85_value(char c) {
  const auto at = kZ85Alphabet.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

inline std::string errno_text(int e) { return std::strerror(e); }

inline std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// Reads a whole (small) public file: no rule on its mode.
inline Result<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return unexpected(e == ENOENT ? Errc::kNotFound : Errc::kIoError,
                      "cannot open key file " + path + ": " + errno_text(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return unexpected(Errc::kInvalidArgument, "key file " + path + " is not a regular file");
  }
  if (st.st_size > 64 * 1024) {
    ::close(fd);
    return unexpected(Errc::kInvalidArgument, "key file " + path + " is too large to be a key");
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return unexpected(Errc::kIoError, "cannot read key file " + path + ": " + errno_text(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

struct ParsedKeys {
  std::optional<std::string> public_key;
  std::optional<std::string> secret_key;
};

inline bool is_z85_key_impl(std::string_view s) {
  if (s.size() != 40) return false;
  // Each group of 5 characters encodes 4 bytes: its value must fit in 32 bits.
  for (std::size_t g = 0; g < s.size(); g += 5) {
    std::uint64_t v = 0;
    for (std::size_t i = g; i < g + 5; ++i) {
      const int d = z85_value(s[i]);
      if (d < 0) return false;
      v = v * 85 + static_cast<std::uint64_t>(d);
    }
    if (v > 0xFFFFFFFFull) return false;
  }
  return true;
}

inline Result<ParsedKeys> parse_key_text(const std::string& path, std::string_view text) {
  ParsedKeys out;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto nl = text.find('\n', pos);
    const std::string_view raw =
        text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    const std::string line = trim(raw);
    if (line.empty() || line.front() == '#') continue;
    const auto where = path + ":" + std::to_string(line_no) + ": ";
    const auto eq = line.find('=');
    if (eq == std::string::npos) {
      return unexpected(Errc::kInvalidArgument,
                        where + "expected name = \"value\", found '" + line + "'");
    }
    const std::string name = trim(std::string_view(line).substr(0, eq));
    std::string value = trim(std::string_view(line).substr(eq + 1));
    // A comment may follow the closing quote (TOML allows it).
    if (value.size() < 2 || value.front() != '"') {
      return unexpected(Errc::kInvalidArgument,
                        where + "the value of " + name + " must be a quoted string");
    }
    const auto close = value.find('"', 1);
    if (close == std::string::npos) {
      return unexpected(Errc::kInvalidArgument, where + "unterminated string");
    }
    const std::string rest = trim(std::string_view(value).substr(close + 1));
    if (!rest.empty() && rest.front() != '#') {
      return unexpected(Errc::kInvalidArgument,
                        where + "unexpected text after the value: '" + rest + "'");
    }
    value = value.substr(1, close - 1);
    std::optional<std::string>* slot = nullptr;
    if (name == "public-key") {
      slot = &out.public_key;
    } else if (name == "secret-key") {
      slot = &out.secret_key;
    } else {
      return unexpected(Errc::kInvalidArgument,
                        where + "unknown name '" + name + "' (expected public-key or secret-key)");
    }
    if (slot->has_value()) {
      return unexpected(Errc::kInvalidArgument, where + name + " given twice");
    }
    if (!is_z85_key_impl(value)) {
      return unexpected(Errc::kInvalidArgument,
                        where + name + " is not a CURVE key (40 characters of Z85)");
    }
    *slot = std::move(value);
  }
  return out;
}

}  // namespace keys_detail

// True for 40 characters of the Z85 alphabet that decode to 32 bytes.
inline bool is_z85_key(std::string_view s) { return keys_detail::is_z85_key_impl(s); }

// Loads NAME.key: both keys must be present. Refuses a file that group or others may
// read or write (check_secret_mode, common/private_files.h), like ssh does: the secret
// key may have leaked, and tightening the mode is the operator's decision.
inline Result<KeyPair> load_key_pair(const std::string& key_file) {
  auto text = read_secret_file(key_file, "secret key file");
  if (!text) return unexpected(text.error());
  auto parsed = keys_detail::parse_key_text(key_file, *text);
  if (!parsed) return unexpected(parsed.error());
  if (!parsed->public_key || !parsed->secret_key) {
    return unexpected(Errc::kInvalidArgument,
                      key_file +
                          ": a key pair file needs both public-key and secret-key (missing " +
                          (parsed->public_key ? "secret-key" : "public-key") + ")");
  }
  return KeyPair{std::move(*parsed->public_key), std::move(*parsed->secret_key)};
}

// A public key given as a literal 40-character Z85 key, or as a file (NAME.pub, or
// NAME.key, of which only the public key is read). A literal wins over a file of the
// same name only when no such file exists.
inline Result<std::string> load_public_key(const std::string& file_or_z85) {
  std::error_code ec;
  if (is_z85_key(file_or_z85) && !std::filesystem::exists(file_or_z85, ec)) return file_or_z85;
  auto text = keys_detail::read_small_file(file_or_z85);
  if (!text) {
    Error e = text.error();
    if (e.code == Errc::kNotFound) {
      e.message += " (give a key file, or the 40-character Z85 public key itself)";
    }
    return unexpected(std::move(e));
  }
  auto parsed = keys_detail::parse_key_text(file_or_z85, *text);
  if (!parsed) return unexpected(parsed.error());
  if (!parsed->public_key) {
    return unexpected(Errc::kInvalidArgument, file_or_z85 + ": no public-key line");
  }
  return std::move(*parsed->public_key);
}

// A name usable as a key file's name: letters, digits, '.', '-', '_', not starting
// with '.'. Agency names in the registry follow the same rule.
inline bool is_key_name(std::string_view name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Writes DIR/NAME.key (mode 0600) and DIR/NAME.pub (mode 0644), creating DIR (mode
// 0700, and its missing parents) if needed. Each file appears whole or not at all (temporary file,
// sync, then rename or link). Without `overwrite`, refuses (kInvalidArgument, nothing written) when
// either file exists. REQUIRES: both keys pass is_z85_key (checked: kInvalidArgument).
inline Status write_key_pair(const std::string& dir, const std::string& name, const KeyPair& keys,
                             bool overwrite) {
  if (!is_key_name(name)) {
    return unexpected(Errc::kInvalidArgument,
                      "'" + name +
                          "' is not a key name (letters, digits, '.', '-', '_'; not starting "
                          "with '.')");
  }
  if (!is_z85_key(keys.public_key) || !is_z85_key(keys.secret_key)) {
    return unexpected(Errc::kInvalidArgument, "write_key_pair: the keys must be 40-character Z85");
  }
  const std::string d = dir.empty() ? "." : dir;
  std::error_code ec;
  // New directories (and parents) 0700; never change an existing one's mode.
  if (auto made = make_private_dir(d, /*narrow=*/false); !made) return unexpected(made.error());
  const std::string key_path = d + "/" + name + ".key";
  const std::string pub_path = d + "/" + name + ".pub";
  if (!overwrite) {
    for (const auto& p : {key_path, pub_path}) {
      if (std::filesystem::exists(std::filesystem::symlink_status(p, ec))) {
        return unexpected(Errc::kInvalidArgument,
                          p + " already exists (refusing to overwrite a key)");
      }
    }
  }
  const std::string key_text = "# kolabus CURVE key pair of " + name +
                               ". Keep this file secret.\n"
                               "public-key = \"" +
                               keys.public_key +
                               "\"\n"
                               "secret-key = \"" +
                               keys.secret_key + "\"\n";
  const std::string pub_text = "# kolabus CURVE public key of " + name +
                               ".\n"
                               "public-key = \"" +
                               keys.public_key + "\"\n";
  if (auto st = write_file_atomically(key_path, key_text, 0600, overwrite); !st) {
    return st;
  }
  if (auto st = write_file_atomically(pub_path, pub_text, 0644, overwrite); !st) {
    return st;
  }
  // Make the new names durable too.
  const int dfd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace kolabus
