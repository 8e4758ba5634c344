#include "auth.h"

#include <cctype>

#include <sodium.h>

namespace kolabus::adapters::gateway {

std::optional<std::array<unsigned char, 32>> parse_sha256_hex(std::string_view hex) {
  std::array<unsigned char, 32> out{};
  if (hex.size() != 64) return std::nullopt;
  for (std::size_t i = 0; i < 32; ++i) {
    int v = 0;
    for (std::size_t k = 0; k < 2; ++k) {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(hex[2 * i + k])));
      int d = 0;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        return std::nullopt;
      }
      v = v * 16 + d;
    }
    out[i] = static_cast<unsigned char>(v);
  }
  return out;
}

std::optional<std::string> TokenSet::authenticate(std::string_view authorization) const {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) {
      return std::nullopt;
    }
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  if (token.empty()) return std::nullopt;

  std::array<unsigned char, 32> hash{};
  crypto_hash_sha256(hash.data(), reinterpret_cast<const unsigned char*>(token.data()),
                     token.size());
  // Every stored hash is compared, in constant time, whatever matched before.
  const GatewayToken* found = nullptr;
  for (const auto& t : tokens_) {
    if (sodium_memcmp(hash.data(), t.sha256.data(), hash.size()) == 0) found = &t;
  }
  sodium_memzero(hash.data(), hash.size());
  if (found == nullptr) return std::nullopt;
  return found->name;
}

}  // namespace kolabus::adapters::gateway
