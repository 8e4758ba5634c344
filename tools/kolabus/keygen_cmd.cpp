// kolabus keygen: a CURVE key pair for an agency (or for the broker), written as
// DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub (docs/OPERATIONS.md, "Keys"); with
// --webhook, a webhook signing secret DIR/NAME.whsec (mode 0600) instead
// (docs/ADAPTERS.md, "Signatures").
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include <adapters/webhook_signature.h>
#include <client/curve.h>
#include <common/keys.h>

namespace kolabus::cli {

namespace {

struct Args {
  std::string name;
  std::string dir = "var/keys";
  bool force = false;
  bool json = false;
  bool webhook = false;
};

// A Standard Webhooks secret for one [[webhook]] endpoint. The secret is never printed:
// the file goes to the adapter (secret_file) and, over a trusted channel, to the
// receiving system.
int run_webhook_secret(const Args& a) {
  auto secret = adapters::generate_webhook_secret();
  if (!secret) {
    std::cerr << "kolabus keygen: " << secret.error().message << "\n";
    return kInternal;
  }
  const std::string file = (a.dir.empty() ? "." : a.dir) + "/" + a.name + ".whsec";
  if (auto st = adapters::write_webhook_secret(file, *secret, a.force); !st) {
    std::cerr << "kolabus keygen: " << st.error().message
              << (st.error().code == Errc::kInvalidArgument && !a.force
                      ? "; give --force to replace it (the receiving system then refuses "
                        "every request until it has the new secret: see the rotation in "
                        "docs/ADAPTERS.md)"
                      : "")
              << "\n";
    return kUsage;
  }
  if (a.json) {
    std::cout << nlohmann::ordered_json{{"name", a.name}, {"secret_file", file}}.dump() << "\n";
  } else {
    std::cout << "wrote " << file << " (webhook signing secret, mode 0600)\n"
              << "set secret_file = \"" << file << "\" in the [[webhook]] entry, and give the "
              << "file to the receiving system over a channel you trust\n";
  }
  return kOk;
}

int run_keygen(const Args& a) {
  if (!is_key_name(a.name)) {
    std::cerr << "kolabus keygen: '" << a.name
              << "' is not a key name (letters, digits, '.', '-', '_'; not starting with '.')\n";
    return kUsage;
  }
  if (a.webhook) return run_webhook_secret(a);
  auto keys = client::generate_key_pair();
  if (!keys) {
    std::cerr << "kolabus keygen: " << keys.error().message << "\n";
    return kInternal;
  }
  if (auto st = write_key_pair(a.dir, a.name, *keys, a.force); !st) {
    std::cerr << "kolabus keygen: " << st.error().message
              << (st.error().code == Errc::kInvalidArgument && !a.force
                      ? "; give --force to replace it (the old key stops working)"
                      : "")
              << "\n";
    return kUsage;
  }
  const std::string key_file = a.dir + "/" + a.name + ".key";
  const std::string pub_file = a.dir + "/" + a.name + ".pub";
  if (a.json) {
    std::cout << nlohmann::ordered_json{{"name", a.name},
                                        {"key_file", key_file},
                                        {"pub_file", pub_file},
                                        {"public_key", keys->public_key}}
                     .dump()
              << "\n";
  } else {
    std::cout << "wrote " << key_file << " (secret, mode 0600) and " << pub_file << "\n"
              << "public key of " << a.name << ": " << keys->public_key << "\n";
  }
  return kOk;
}

}  // namespace

void add_keygen(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "keygen",
      "Generate a CURVE key pair: DIR/NAME.key (the secret key pair, mode 0600: give it to "
      "the agency's adapters with --key) and DIR/NAME.pub (the public key: register it in "
      "the broker's agencies.toml, or hand the broker's to clients as --server-key). Refuses "
      "to replace existing files without --force. With --webhook: a webhook signing secret "
      "DIR/NAME.whsec (whsec_ and 32 random bytes in base64, mode 0600) for the secret_file of "
      "a [[webhook]] entry; hand the same file to the receiving system.");
  cmd->add_option("name", args->name,
                  "the agency's name as in the registry, or the broker's; with --webhook, the "
                  "webhook's consumer name")
      ->required();
  cmd->add_option("--dir", args->dir, "where to write the files")->capture_default_str();
  cmd->add_flag("--force", args->force, "replace existing key files");
  cmd->add_flag("--webhook", args->webhook,
                "write a webhook signing secret DIR/NAME.whsec instead of a CURVE key pair");
  cmd->add_flag("--json", args->json, "print the file names and public key as JSON");
  cmd->callback([args, &exit_code] { exit_code = run_keygen(*args); });
}

}  // namespace kolabus::cli
