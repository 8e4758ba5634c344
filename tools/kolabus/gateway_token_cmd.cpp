// kolabus gateway-token: a bearer token for one HTTP client of an agency's gateway
// (docs/ADAPTERS.md, "HTTP gateway"). Prints the token once, for the client, and the
// line that the agency's [[gateway]] `tokens` keeps: only its SHA-256.
#include <algorithm>
#include <array>
#include <cctype>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include "commands.h"

namespace kolabus::cli {

namespace {

struct Args {
  std::string name;
  bool json = false;
};

bool is_client_name(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

std::string hex(const unsigned char* bytes, std::size_t n) {
  std::string out(2 * n + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes, n);
  out.pop_back();
  return out;
}

int run_gateway_token(const Args& a) {
  if (!is_client_name(a.name)) {
    std::cerr << "kolabus gateway-token: '" << a.name
              << "' is not a client name (1 to 64 letters, digits, '.', '-', '_')\n";
    return kUsage;
  }
  if (sodium_init() < 0) {
    std::cerr << "kolabus gateway-token: libsodium cannot be initialised\n";
    return kInternal;
  }
  // 256 bits from the system's CSPRNG; "kgw_" tells what the secret is when it turns up.
  std::array<unsigned char, 32> secret{};
  randombytes_buf(secret.data(), secret.size());
  const std::string token = "kgw_" + hex(secret.data(), secret.size());
  sodium_memzero(secret.data(), secret.size());
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(token.data()),
                     token.size());
  const std::string sha256 = hex(digest.data(), digest.size());
  const std::string entry = "{ name = \"" + a.name + "\", sha256 = \"" + sha256 + "\" }";
  if (a.json) {
    std::cout << nlohmann::ordered_json{{"name", a.name},
                                        {"token", token},
                                        {"sha256", sha256},
                                        {"toml", entry}}
                     .dump()
              << "\n";
  } else {
    std::cout << "token for " << a.name
              << " (shown only now: give it to that client's system, store it nowhere else):\n"
              << "  " << token << "\n"
              << "add this entry to the agency's [[gateway]] tokens = [ ... ] and restart its "
                 "kolabus-adapter:\n"
              << "  " << entry << "\n";
  }
  return kOk;
}

}  // namespace

void add_gateway_token(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "gateway-token",
      "Make a bearer token for one HTTP client of an agency's gateway: prints the token "
      "(once: the client sends it as 'Authorization: Bearer <token>') and the entry "
      "{ name, sha256 } for the [[gateway]] tokens of agency.toml, which keeps only the "
      "token's SHA-256. Nothing is written to disk.");
  cmd->add_option("name", args->name, "the client's name, as the gateway will log it")->required();
  cmd->add_flag("--json", args->json, "print name, token, sha256 and the TOML entry as JSON");
  cmd->callback([args, &exit_code] { exit_code = run_gateway_token(*args); });
}

}  // namespace kolabus::cli
