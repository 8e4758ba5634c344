// The security flags of every `kolabus` subcommand that talks to the broker
// (publish, tail, consumers, replay, dlq): --key FILE (this agency's NAME.key, env
// KOLABUS_KEY) and --server-key FILE|Z85 (the broker's public key, env
// KOLABUS_SERVER_KEY). Both: the connection uses CURVE. Neither: plain (a --dev
// broker). One alone: a usage error.
//
// Thread-safety: plain values and free functions.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include <client/curve.h>
#include <common/result.h>

namespace kolabus::cli {

struct SecurityArgs {
  std::string key_file;    // NAME.key
  std::string server_key;  // a .pub/.key file or a Z85 key
};

// Adds --key and --server-key to `cmd`, with the environment's values as defaults.
void add_security_options(CLI::App* cmd, SecurityArgs& args);

// The CurveOptions for the client library: empty when neither flag is set.
// kInvalidArgument (a usage error, exit 2) for one flag without the other; the
// loaders' errors (kNotFound, kIoError, kInvalidArgument, naming the file) otherwise.
Result<client::CurveOptions> load_curve(const SecurityArgs& args);

}  // namespace kolabus::cli
