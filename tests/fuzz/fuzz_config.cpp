// fuzz_config: text as the broker's two configuration files, through their public
// loaders from text: broker::parse_config (broker.toml, broker/config.h) and
// broker::Agencies::parse (agencies.toml, broker/agencies.h).
//
// Both files belong to the operator, so the bar is: no crash, no undefined behaviour,
// no hang, no exception escaping, an error that names the file, and no loaded value
// the broker cannot run with (a limit of zero, a negative clock skew, a skew or timeout
// that overflows the time arithmetic it feeds).
//
// Key files: agencies.toml may name a .pub file relative to its own folder; the path
// given here lies in a folder that does not exist, so such names read nothing.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "fuzz_targets.h"
#include <broker/agencies.h>
#include <broker/config.h>
#include <schemas/regions.h>

namespace kolabus::fuzz {

namespace {

constexpr const char* kPath = "/nonexistent-kolabus-fuzz/etc/kolabus.toml";

// The [broker] table as written, if the text is TOML and has one.
std::optional<toml::table> broker_table(std::string_view text) {
  try {
    const auto root = toml::parse(text);
    if (const auto* b = root["broker"].as_table()) return *b;
  } catch (const toml::parse_error&) {
  }
  return std::nullopt;
}

}  // namespace

void config_one(std::span<const std::uint8_t> data) {
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());

  auto config = broker::parse_config(text, kPath);
  if (config) {
    count("config.loaded");
    const auto& c = *config;
    if (c.server.max_message_bytes == 0 || c.server.max_batch_messages == 0 ||
        c.server.max_batch_bytes == 0) {
      report("parse_config: a limit of zero loads");
    }
    if (c.max_clock_skew_ms <= 0 || c.client_timeout_ms <= 0) {
      report("parse_config: a clock skew or client timeout that is not positive loads");
    }
    // Validation computes now + skew, Consumers last_seen + client_timeout (TimeMs):
    // a value that overflows them is undefined behaviour at run time.
    TimeMs sum = 0;
    if (__builtin_add_overflow(kNow, c.max_clock_skew_ms, &sum) ||
        __builtin_add_overflow(kNow, c.client_timeout_ms, &sum)) {
      report("parse_config: a clock skew (" + std::to_string(c.max_clock_skew_ms) +
             " ms) or client timeout (" + std::to_string(c.client_timeout_ms) +
             " ms) loads that overflows when added to the time");
    }
    if (const auto b = broker_table(text)) {
      // The skew is given in seconds and kept in ms: the product must not overflow.
      std::int64_t ms = 0;
      if (auto s = (*b)["max_clock_skew_seconds"].value_exact<std::int64_t>();
          s && (__builtin_mul_overflow(*s, std::int64_t{1000}, &ms) || ms != c.max_clock_skew_ms)) {
        report("parse_config: max_clock_skew_seconds = " + std::to_string(*s) +
               " loads as a skew of " + std::to_string(c.max_clock_skew_ms) + " ms");
      }
    }
  } else {
    count("config.refused");
    if (config.error().message.find(kPath) == std::string::npos) {
      report("parse_config: an error that does not name the file: " + config.error().message);
    }
  }

  auto agencies = broker::Agencies::parse(text, kPath, schemas::RegionTable::embedded());
  if (!agencies) {
    count("agencies.refused");
    if (agencies.error().message.find(kPath) == std::string::npos) {
      report("Agencies::parse: an error that does not name the file: " + agencies.error().message);
    }
    return;
  }
  count("agencies.loaded");
  if (agencies->size() == 0) report("Agencies::parse: an empty registry loads");
  if (agencies->path() != kPath) report("Agencies::parse: the registry forgets its path");
}

}  // namespace kolabus::fuzz

#ifdef KOLABUS_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kolabus::fuzz::config_one({data, size});
  return 0;
}
#endif
