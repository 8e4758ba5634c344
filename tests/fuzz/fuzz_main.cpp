// report() for the libFuzzer binaries: a broken property is a crash, so that libFuzzer
// keeps the input (crash-<sha1>) and the run fails.
//
// KOLABUS_FUZZ_KNOWN="text|text...": a property whose description contains one of these
// texts is only counted, not a crash, so that a long hunt can go past bugs already
// reported and not yet fixed. Sanitizer findings cannot be silenced this way.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz_targets.h"

namespace kolabus::fuzz {

namespace {

bool known(const std::string& property) {
  const char* env = std::getenv("KOLABUS_FUZZ_KNOWN");
  if (env == nullptr) return false;
  std::string_view list(env);
  while (!list.empty()) {
    const auto bar = list.find('|');
    const auto item = list.substr(0, bar);
    if (!item.empty() && property.find(item) != std::string::npos) return true;
    if (bar == std::string_view::npos) break;
    list.remove_prefix(bar + 1);
  }
  return false;
}

}  // namespace

void report(const std::string& property) {
  if (known(property)) return count("known");
  std::fprintf(stderr, "kolabus fuzz: property broken: %s\n", property.c_str());
  std::abort();
}

}  // namespace kolabus::fuzz
