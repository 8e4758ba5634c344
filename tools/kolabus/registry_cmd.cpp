// kolabus registry reload: has the broker load its agency registry again, as SIGHUP
// does, from a machine that cannot signal the broker's process.
#include <iostream>

#include "commands.h"
#include "output.h"

namespace kolabus::cli {

void add_registry(CLI::App& app, int& exit_code) {
  auto conn = std::make_shared<ConnectArgs>();
  auto* cmd = app.add_subcommand("registry", "The broker's agency registry (agencies.toml).");
  cmd->require_subcommand(1);
  auto* reload = cmd->add_subcommand(
      "reload",
      "Load the registry file again: keys, grants, field profiles and agreements. A file "
      "with an error is refused and the old registry stays. Needs the operate permission.");
  add_connect_options(reload, *conn);
  reload->callback([conn, &exit_code] {
    auto admin = connect_admin(*conn);
    if (!admin) {
      exit_code = report_connect_error("registry reload", admin.error());
      return;
    }
    auto n = (*admin)->reload_registry();
    if (!n) {
      exit_code = report_error("registry reload", n.error());
      return;
    }
    if (conn->json) {
      std::cout << nlohmann::ordered_json{{"agencies", *n}}.dump() << "\n";
    } else {
      std::cout << "agency registry reloaded: " << *n << " agencies\n";
    }
    exit_code = kOk;
  });
}

}  // namespace kolabus::cli
