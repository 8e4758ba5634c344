// Webhook signatures following the Standard Webhooks specification (version 1.0.0,
// the symmetric scheme "v1"): what the webhook sink signs each request with, what
// kolabus-receiver checks, and what `kolabus keygen --webhook` writes.
//
// A request carries three headers:
//   webhook-id:        the event id (a UUID; the same on every attempt: the idempotency key)
//   webhook-timestamp: the attempt's time, integer Unix seconds
//   webhook-signature: "v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>", one
//                      per secret, space-separated (two while a secret is being rotated)
// Base64 is the ORIGINAL alphabet with padding (RFC 4648 section 4), as the spec's
// reference libraries write it.
//
// Secrets are serialised as "whsec_" + base64 of 24 to 64 random bytes; the HMAC key is
// the decoded bytes. A secret file holds one such line ('#' comment lines and blank
// lines aside) and must be readable by its owner only (mode & 077 == 0), like ssh's keys.
//
// Thread-safety: free functions, safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <common/result.h>

namespace kolabus::adapters {

inline constexpr std::string_view kWebhookSecretPrefix = "whsec_";
inline constexpr std::size_t kWebhookSecretMinBytes = 24;
inline constexpr std::size_t kWebhookSecretMaxBytes = 64;
inline constexpr std::size_t kWebhookSecretDefaultBytes = 32;
// How far a webhook-timestamp may be from the receiver's clock (the spec's 5 minutes).
inline constexpr std::int64_t kWebhookToleranceSeconds = 300;

// The HMAC key of a serialised secret "whsec_<base64>". kInvalidArgument (the message
// never contains the secret) for a missing prefix, bad base64, or a key outside 24..64
// bytes.
Result<std::string> decode_webhook_secret(std::string_view serialized);

// A new secret of `bytes` random bytes (24..64; checked), serialised "whsec_...".
Result<std::string> generate_webhook_secret(std::size_t bytes = kWebhookSecretDefaultBytes);

// Reads a secret file and returns its HMAC key. Refuses (kInvalidArgument) a file that
// group or others may read or write, naming the file and the fix (chmod 600 FILE);
// kNotFound when it does not exist, kIoError when it cannot be read. Errors name the file.
Result<std::string> load_webhook_secret(const std::string& file);

// Writes `serialized` (a valid secret) and a newline to `path`, mode 0600, whole or not
// at all (temporary file, sync, rename or link). The directory is created (mode 0700)
// when missing. Without `overwrite`, refuses (kInvalidArgument) when `path` exists.
Status write_webhook_secret(const std::string& path, const std::string& serialized, bool overwrite);

// "v1,<base64>": one signature of `id`.`timestamp`.`body` with `key` (the decoded secret).
std::string webhook_signature(std::string_view key, std::string_view id, std::int64_t timestamp,
                              std::string_view body);

// The webhook-signature header: one signature per key, in the order given, separated by
// single spaces. REQUIRES: !keys.empty().
std::string webhook_signature_header(const std::vector<std::string>& keys, std::string_view id,
                                     std::int64_t timestamp, std::string_view body);

// Checks a received request as the spec says: all three headers present, the timestamp
// an integer within `tolerance_s` of `now_s`, and at least one "v1," signature of the
// header equal (in constant time) to the signature with one of `keys`. Signatures of
// other versions (v1a, ...) are skipped. On failure, kInvalidArgument with what is wrong
// ("missing webhook-signature", "timestamp 300 s away from now", "no signature matches").
Status verify_webhook(const std::vector<std::string>& keys, std::string_view id,
                      std::string_view timestamp, std::string_view signature_header,
                      std::string_view body, std::int64_t now_s,
                      std::int64_t tolerance_s = kWebhookToleranceSeconds);

}  // namespace kolabus::adapters
