#include "crash_suite.h"

#include <random>

#include <schemas/events_generated.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace kolabus::crash {

bool FilterSpec::matches(std::uint8_t routing_kind,
                         const std::vector<std::string>& event_regions) const {
  // A correction routes as the kind it corrects (log.fbs: bit 0x80 marks it).
  const auto kind = static_cast<std::uint8_t>(routing_kind & 0x7f);
  if (!kinds.empty()) {
    bool any = false;
    for (auto k : kinds) any = any || k == kind;
    if (!any) return false;
  }
  if (regions.empty()) return true;
  for (const auto& r : event_regions) {
    for (const auto& p : regions) {
      if (r.compare(0, p.size(), p) == 0) return true;
    }
  }
  return false;
}

FilterSpec filter_for(int index) {
  const auto kind = [](events::Payload p) { return static_cast<std::uint8_t>(p); };
  switch (index) {
    case 0:
      return {"all events", {}, {}};
    case 1:
      return {std::string("kecamatan ") + kFocusKecamatan, {}, {kFocusKecamatan}};
    case 2:
      return {"kind Death", {kind(events::Payload::Death)}, {}};
    case 3:
      return {"Birth in 127117", {kind(events::Payload::Birth)}, {"127117"}};
    case 4:
      return {"province 12", {}, {"12"}};
    default: {
      // Medan's other kecamatan, 127102 to 127121.
      const int k = 2 + (index - 5) % 20;
      std::string code = std::string(kCity) + (k < 10 ? "0" : "") + std::to_string(k);
      return {"kecamatan " + code, {}, {code}};
    }
  }
}

std::string consumer_name(int index) { return "crash-c" + std::to_string(index); }

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  // splitmix64 over the three: distinct streams never share a generator state.
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream * 1000003ULL + index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<std::vector<std::uint8_t>> publisher_events(std::uint64_t seed, int id, int events,
                                                        TimeMs now_ms) {
  tools::EventGenerator gen(
      schemas::RegionTable::embedded(),
      {derive_seed(seed, 1, static_cast<std::uint64_t>(id)), kCity, now_ms, kFocusKecamatan, 0.15});
  std::vector<std::vector<std::uint8_t>> out;
  out.reserve(static_cast<std::size_t>(std::max(events, 0)));
  for (int i = 0; i < events; ++i) out.push_back(gen.next());
  return out;
}

std::vector<int> batch_sizes(std::uint64_t seed, int id, int events) {
  std::mt19937_64 rng(derive_seed(seed, 2, static_cast<std::uint64_t>(id)));
  std::uniform_int_distribution<int> percent(0, 99), small(1, 50), burst(100, 800);
  std::vector<int> out;
  for (int left = events; left > 0;) {
    const int n = std::min(left, percent(rng) < 5 ? burst(rng) : small(rng));
    out.push_back(n);
    left -= n;
  }
  return out;
}

std::string publisher_dir(const std::string& work, int id) {
  return work + "/pub-" + std::to_string(id);
}
std::string consumer_dir(const std::string& work, int id) {
  return work + "/con-" + std::to_string(id);
}

}  // namespace kolabus::crash
