// What both builds of the fuzz targets share: the path counters and the events
// fuzz_request's brokers start with.
#include "fuzz_targets.h"
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace kolabus::fuzz {

std::map<std::string, std::uint64_t>& counters() {
  static std::map<std::string, std::uint64_t> paths;
  return paths;
}

const std::vector<std::vector<std::uint8_t>>& preloaded_events() {
  static const auto events = [] {
    tools::EventGenerator gen(schemas::RegionTable::embedded(), {7, "1271", kNow});
    return std::vector<std::vector<std::uint8_t>>{gen.make(tools::GenKind::kBirth),
                                                  gen.make(tools::GenKind::kDeath),
                                                  gen.make(tools::GenKind::kMove)};
  }();
  return events;
}

}  // namespace kolabus::fuzz
