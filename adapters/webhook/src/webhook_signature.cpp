// Standard Webhooks signatures (adapters/webhook_signature.h) with libsodium: HMAC-SHA256
// through the multi-part API, which takes a key of any length (the one-shot
// crypto_auth_hmacsha256 takes exactly 32 bytes, and secrets may have 24 to 64).
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <adapters/webhook_signature.h>
#include <common/keys.h>

namespace kolabus::adapters {
namespace {

constexpr std::size_t kMaxSecretFileBytes = 4096;

void init_sodium() {
  // Thread-safe and idempotent; failing means no usable randomness, which is fatal.
  static const bool ok = sodium_init() >= 0;
  KOLABUS_CHECK(ok);
}

std::string to_base64(const unsigned char* bytes, std::size_t n) {
  std::string out(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes, n, sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

// Decodes all of `text` (ORIGINAL alphabet, padded) into at most `max` bytes.
bool from_base64(std::string_view text, std::size_t max, std::string& out) {
  out.assign(max, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  const int rc =
      sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL);
  if (rc != 0 || end != text.data() + text.size()) {
    sodium_memzero(out.data(), out.size());
    out.clear();
    return false;
  }
  out.resize(len);
  return true;
}

// The timestamp is signed as the text that is sent (and, on the receiving side, as the
// text that came), never re-formatted.
void hmac(std::string_view key, std::string_view id, std::string_view ts, std::string_view body,
          unsigned char mac[crypto_auth_hmacsha256_BYTES]) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  const auto update = [&st](std::string_view part) {
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(part.data()),
                                  part.size());
  };
  update(id);
  update(".");
  update(ts);
  update(".");
  update(body);
  crypto_auth_hmacsha256_final(&st, mac);
  sodium_memzero(&st, sizeof st);
}

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

Result<std::string> decode_webhook_secret(std::string_view serialized) {
  init_sodium();
  if (serialized.substr(0, kWebhookSecretPrefix.size()) != kWebhookSecretPrefix) {
    return unexpected(Errc::kInvalidArgument,
                      "a webhook secret starts with whsec_ (make one with kolabus keygen NAME "
                      "--webhook)");
  }
  std::string key;
  const auto b64 = serialized.substr(kWebhookSecretPrefix.size());
  if (!from_base64(b64, kWebhookSecretMaxBytes + 3, key)) {
    return unexpected(Errc::kInvalidArgument,
                      "the part after whsec_ is not base64 (the standard alphabet, padded)");
  }
  if (key.size() < kWebhookSecretMinBytes || key.size() > kWebhookSecretMaxBytes) {
    const std::size_t n = key.size();
    sodium_memzero(key.data(), key.size());
    return unexpected(Errc::kInvalidArgument, "the secret has " + std::to_string(n) +
                                                  " bytes; it must have " +
                                                  std::to_string(kWebhookSecretMinBytes) + " to " +
                                                  std::to_string(kWebhookSecretMaxBytes));
  }
  return key;
}

Result<std::string> generate_webhook_secret(std::size_t bytes) {
  init_sodium();
  if (bytes < kWebhookSecretMinBytes || bytes > kWebhookSecretMaxBytes) {
    return unexpected(Errc::kInvalidArgument,
                      "a webhook secret has 24 to 64 bytes, not " + std::to_string(bytes));
  }
  unsigned char raw[kWebhookSecretMaxBytes];
  randombytes_buf(raw, bytes);
  std::string out = std::string(kWebhookSecretPrefix) + to_base64(raw, bytes);
  sodium_memzero(raw, sizeof raw);
  return out;
}

Result<std::string> load_webhook_secret(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return unexpected(e == ENOENT ? Errc::kNotFound : Errc::kIoError,
                      "cannot open the webhook secret file " + file + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return unexpected(Errc::kInvalidArgument,
                      "the webhook secret file " + file + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return unexpected(
        Errc::kInvalidArgument,
        "permissions " + octal_mode(st.st_mode) + " for the webhook secret file " + file +
            " are too open: it must be readable by its owner only (chmod 600 " + file + ")");
  }
  std::string text(kMaxSecretFileBytes + 1, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return unexpected(Errc::kIoError,
                        "cannot read the webhook secret file " + file + ": " + std::strerror(e));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  if (got > kMaxSecretFileBytes) {
    return unexpected(Errc::kInvalidArgument,
                      "the webhook secret file " + file + " is too large to be a secret");
  }

  std::string found;
  std::size_t count = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string_view::npos || line[b] == '#') continue;
    line = line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
    if (++count == 1) found.assign(line);
  }
  sodium_memzero(text.data(), text.size());
  if (count != 1) {
    return unexpected(Errc::kInvalidArgument, "the webhook secret file " + file +
                                                  " must hold one whsec_ line, not " +
                                                  std::to_string(count));
  }
  auto key = decode_webhook_secret(found);
  sodium_memzero(found.data(), found.size());
  if (!key) {
    return unexpected(Errc::kInvalidArgument,
                      "the webhook secret file " + file + ": " + key.error().message);
  }
  return key;
}

Status write_webhook_secret(const std::string& path, const std::string& serialized,
                            bool overwrite) {
  if (auto key = decode_webhook_secret(serialized); !key) return unexpected(key.error());
  const std::filesystem::path p(path);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return unexpected(Errc::kIoError, "cannot create the directory " + dir + ": " + ec.message());
    }
    ::chmod(dir.c_str(), 0700);  // a new directory only: never change an existing one's mode
  }
  if (!overwrite && std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
    return unexpected(Errc::kInvalidArgument,
                      path + " already exists (refusing to overwrite a secret)");
  }
  auto st = write_file_atomically(path, serialized + "\n", 0600, overwrite);
  if (!st) return st;
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

std::string webhook_signature(std::string_view key, std::string_view id, std::int64_t timestamp,
                              std::string_view body) {
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  hmac(key, id, std::to_string(timestamp), body, mac);
  return "v1," + to_base64(mac, sizeof mac);
}

std::string webhook_signature_header(const std::vector<std::string>& keys, std::string_view id,
                                     std::int64_t timestamp, std::string_view body) {
  KOLABUS_CHECK(!keys.empty());
  std::string out;
  for (const auto& k : keys) {
    if (!out.empty()) out += ' ';
    out += webhook_signature(k, id, timestamp, body);
  }
  return out;
}

Status verify_webhook(const std::vector<std::string>& keys, std::string_view id,
                      std::string_view timestamp, std::string_view signature_header,
                      std::string_view body, std::int64_t now_s, std::int64_t tolerance_s) {
  const auto bad = [](const std::string& what) -> Status {
    return unexpected(Errc::kInvalidArgument, what);
  };
  if (id.empty()) return bad("missing webhook-id");
  if (timestamp.empty()) return bad("missing webhook-timestamp");
  if (signature_header.empty()) return bad("missing webhook-signature");
  std::int64_t ts = 0;
  const auto [end, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ts);
  if (ec != std::errc() || end != timestamp.data() + timestamp.size() || ts < 0) {
    return bad("webhook-timestamp is not integer Unix seconds");
  }
  // |now - ts| without overflow for any ts >= 0.
  const std::int64_t away = now_s >= ts ? now_s - ts : ts - now_s;
  if (away > tolerance_s) {
    return bad("webhook-timestamp is " + std::to_string(away) + " s away from now (at most " +
               std::to_string(tolerance_s) + ")");
  }
  std::vector<std::array<unsigned char, crypto_auth_hmacsha256_BYTES>> expected(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i)
    hmac(keys[i], id, timestamp, body, expected[i].data());

  std::string decoded;
  std::size_t pos = 0;
  while (pos < signature_header.size()) {
    auto sp = signature_header.find(' ', pos);
    if (sp == std::string_view::npos) sp = signature_header.size();
    const std::string_view entry = signature_header.substr(pos, sp - pos);
    pos = sp + 1;
    const auto comma = entry.find(',');
    if (comma == std::string_view::npos || entry.substr(0, comma) != "v1") continue;
    if (!from_base64(entry.substr(comma + 1), crypto_auth_hmacsha256_BYTES + 2, decoded) ||
        decoded.size() != crypto_auth_hmacsha256_BYTES) {
      continue;
    }
    bool match = false;
    for (const auto& mac : expected) {
      match |=
          crypto_verify_32(mac.data(), reinterpret_cast<const unsigned char*>(decoded.data())) == 0;
    }
    if (match) return {};
  }
  return bad(keys.empty() ? "no secret to check the signature with" : "no signature matches");
}

}  // namespace kolabus::adapters
