// The `kolabus` CLI's subcommands. Each add_*() registers one subcommand on the
// app; its callback runs the command and stores the process exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace kolabus::cli {

// Exit codes shared by every subcommand (documented in `kolabus --help`).
enum Exit : int {
  kOk = 0,
  kRefused = 1,      // some input was refused (invalid line, NACK)
  kUsage = 2,        // bad arguments or unreadable input file
  kUnavailable = 3,  // the broker did not answer in time; events stay queued
  kInternal = 4,
  kNotFound = 5,  // the named consumer or dead letter does not exist
  kBroken = 6,    // the audit chain does not verify
};

void add_keygen(CLI::App& app, int& exit_code);
void add_gateway_token(CLI::App& app, int& exit_code);
void add_publish(CLI::App& app, int& exit_code);
void add_gen(CLI::App& app, int& exit_code);
void add_consumers(CLI::App& app, int& exit_code);
void add_replay(CLI::App& app, int& exit_code);
void add_dlq(CLI::App& app, int& exit_code);
void add_tail(CLI::App& app, int& exit_code);
void add_audit(CLI::App& app, int& exit_code);
void add_registry(CLI::App& app, int& exit_code);
void add_bench(CLI::App& app, int& exit_code);

}  // namespace kolabus::cli
