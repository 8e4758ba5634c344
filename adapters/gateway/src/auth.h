// gateway::TokenSet: the bearer tokens of the gateway's HTTP clients, kept only as
// SHA-256 hashes (the agency's [[gateway]] `tokens`). A client sends
// `Authorization: Bearer <token>`; the gateway hashes what it got and compares it with
// every stored hash in constant time, so neither the tokens nor the time taken tell an
// attacker anything.
//
// Tokens are made by `kolabus gateway-token NAME` (any string works; that command
// makes "kgw_" + 64 hex digits of libsodium randomness).
//
// Thread-safety: immutable after construction; authenticate() from any thread.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <adapters/gateway.h>

namespace kolabus::adapters::gateway {

// "a1b2..." (64 hex digits, either case) -> 32 bytes; nullopt otherwise.
std::optional<std::array<unsigned char, 32>> parse_sha256_hex(std::string_view hex);

class TokenSet {
 public:
  TokenSet() = default;
  explicit TokenSet(std::vector<GatewayToken> tokens) : tokens_(std::move(tokens)) {}

  bool empty() const { return tokens_.empty(); }
  std::size_t size() const { return tokens_.size(); }

  // The name of the client whose token the Authorization header value carries
  // ("Bearer <token>", the scheme in any case); nullopt for none or an unknown one.
  std::optional<std::string> authenticate(std::string_view authorization) const;

 private:
  std::vector<GatewayToken> tokens_;
};

}  // namespace kolabus::adapters::gateway
