#include "connection.h"

#include <cstdlib>

#include <common/keys.h>

namespace kolabus::cli {

void add_security_options(CLI::App* cmd, SecurityArgs& args) {
  if (const char* k = std::getenv("KOLABUS_KEY")) args.key_file = k;
  if (const char* s = std::getenv("KOLABUS_SERVER_KEY")) args.server_key = s;
  cmd->add_option("--key", args.key_file,
                  "this agency's CURVE key pair file, NAME.key from `kolabus keygen` (env "
                  "KOLABUS_KEY); needs --server-key")
      ->group("Security");
  cmd->add_option("--server-key", args.server_key,
                  "the broker's CURVE public key: a .pub file or the 40-character Z85 key (env "
                  "KOLABUS_SERVER_KEY); needs --key")
      ->group("Security");
}

Result<client::CurveOptions> load_curve(const SecurityArgs& args) {
  client::CurveOptions curve;
  if (args.key_file.empty() && args.server_key.empty()) return curve;
  if (args.key_file.empty()) {
    return unexpected(Errc::kInvalidArgument,
                      "--server-key needs --key (this agency's key pair file, or KOLABUS_KEY)");
  }
  if (args.server_key.empty()) {
    return unexpected(Errc::kInvalidArgument,
                      "--key needs --server-key (the broker's public key, or KOLABUS_SERVER_KEY)");
  }
  auto pair = load_key_pair(args.key_file);
  if (!pair) return unexpected(pair.error());
  auto server = load_public_key(args.server_key);
  if (!server) return unexpected(server.error());
  curve.client = std::move(*pair);
  curve.server_public_key = std::move(*server);
  if (auto st = client::check_curve(curve); !st) return unexpected(st.error());
  return curve;
}

}  // namespace kolabus::cli
