// broker::Config: the broker's settings, read from a TOML file (broker.toml) and
// overridable from the command line. Every key is optional; unknown keys are an
// error, so a typo never silently falls back to a default.
//
// Thread-safety: a value.
#pragma once

#include <string>

#include <broker/server.h>
#include <common/result.h>

namespace kolabus::broker {

struct Config {
  ServerOptions server;
  std::string data_dir = "var/broker";
  std::string regions_file;  // empty: the Kemendagri list compiled into the broker
  TimeMs max_clock_skew_ms = 5 * 60 * 1000;
  // A consumer client not heard from this long is detached; its unacknowledged
  // events go to the consumer's other clients.
  TimeMs client_timeout_ms = 15000;
  std::string log_level = "info";
  // [security]: mode "curve" (the default: CURVE on the endpoint, agencies from the
  // registry) or "dev" (no CURVE, loopback only; --dev).
  bool dev = false;
  std::string key_file;       // the broker's key pair (kolabus keygen broker)
  std::string agencies_file;  // the agency registry
  // The audit chain's NIK key (audit.key). Empty: beside key_file; in development mode
  // (no keys), in data_dir. Never in data_dir otherwise: a copy of the data alone
  // must not be enough to turn the chain's NIK hashes back into NIKs.
  std::string audit_key_file;
};

// Where the audit key is: config.audit_key_file, or audit.key beside config.key_file,
// or (development mode, no key_file) in config.data_dir.
std::string audit_key_path(const Config& config);

// Reads a TOML file. Errors name the file, the key and what is wrong.
Result<Config> load_config(const std::string& path);
// The same from TOML text (the path is only used in messages).
Result<Config> parse_config(std::string_view toml_text, const std::string& path);

}  // namespace kolabus::broker
