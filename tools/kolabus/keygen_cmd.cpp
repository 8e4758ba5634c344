// kolabus keygen: a CURVE key pair for an agency (or for the broker), written as
// DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub (docs/OPERATIONS.md, "Keys").
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include <client/curve.h>
#include <common/keys.h>

namespace kolabus::cli {

namespace {

struct Args {
  std::string name;
  std::string dir = "var/keys";
  bool force = false;
  bool json = false;
};

int run_keygen(const Args& a) {
  if (!is_key_name(a.name)) {
    std::cerr << "kolabus keygen: '" << a.name
              << "' is not a key name (letters, digits, '.', '-', '_'; not starting with '.')\n";
    return kUsage;
  }
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
      "to replace existing files without --force.");
  cmd->add_option("name", args->name, "the agency's name as in the registry, or the broker's")
      ->required();
  cmd->add_option("--dir", args->dir, "where to write the files")->capture_default_str();
  cmd->add_flag("--force", args->force, "replace existing key files");
  cmd->add_flag("--json", args->json, "print the file names and public key as JSON");
  cmd->callback([args, &exit_code] { exit_code = run_keygen(*args); });
}

}  // namespace kolabus::cli
