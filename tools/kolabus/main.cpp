// kolabus: the command-line tool for operators and integrators.
#include <iostream>

#include <sys/stat.h>

#include "commands.h"

int main(int argc, char** argv) {
  // What the tool writes (keys, outboxes, inboxes, replay and report files) is its
  // user's only: files 0600, directories 0700, whatever umask it was started with.
  // Public key files (NAME.pub) are set to 0644 explicitly.
  ::umask(077);
  CLI::App app{
      "kolabus: publish, inspect and operate the kolabus population-event bus.\n"
      "Exit status: 0 ok, 1 some input or command refused, 2 usage error, 3 broker "
      "unavailable, 4 internal error, 5 no such consumer or dead letter, 6 the audit chain "
      "does not verify."};
  app.set_version_flag("--version", KOLABUS_VERSION);
  app.require_subcommand(1);
  int exit_code = kolabus::cli::kOk;
  kolabus::cli::add_keygen(app, exit_code);
  kolabus::cli::add_gateway_token(app, exit_code);
  kolabus::cli::add_publish(app, exit_code);
  kolabus::cli::add_gen(app, exit_code);
  kolabus::cli::add_consumers(app, exit_code);
  kolabus::cli::add_replay(app, exit_code);
  kolabus::cli::add_dlq(app, exit_code);
  kolabus::cli::add_tail(app, exit_code);
  kolabus::cli::add_audit(app, exit_code);
  kolabus::cli::add_registry(app, exit_code);
  kolabus::cli::add_bench(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kolabus::cli::kUsage;
  }
  return exit_code;
}
