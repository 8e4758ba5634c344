// tools::EventGenerator: synthetic but realistic population events for demos,
// tests and benchmarks — real Kemendagri village codes of one city, NIKs and KK
// numbers that pass the broker's rules, births, deaths and moves in proportions
// like a city registry's (and moves within the city, to and from elsewhere).
//
// Deterministic for a given seed and `now`, so a run can be repeated exactly;
// event ids come from the seed too, so regenerating a file yields the same ids.
//
// Ownership: borrows the region table, which must outlive the generator.
// Thread-safety: none; one generator per thread.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <common/clock.h>
#include <common/ids.h>
#include <schemas/regions.h>

namespace kolabus::tools {

struct GeneratorOptions {
  GeneratorOptions() = default;
  GeneratorOptions(std::uint64_t seed_, std::string city_, TimeMs now_ms_, std::string focus_ = {},
                   double focus_share_ = 0)
      : seed(seed_),
        city(std::move(city_)),
        now_ms(now_ms_),
        focus(std::move(focus_)),
        focus_share(focus_share_) {}

  std::uint64_t seed = 1;
  std::string city = "1271";  // a regency/city code: Kota Medan
  TimeMs now_ms = 0;          // REQUIRED: events happen in the 30 days before this
  // Optional: put about `focus_share` of the events' city villages under this
  // prefix (a kecamatan or kelurahan of the city), so a demo office gets enough.
  std::string focus;
  double focus_share = 0;
};

enum class GenKind { kBirth, kDeath, kMove };

class EventGenerator {
 public:
  // REQUIRES: options.city is a regency code in `regions` with villages.
  EventGenerator(const schemas::RegionTable& regions, GeneratorOptions options);

  // The bytes of one finished kolabus.events.Event. next() picks the kind with
  // the proportions of a city registry (about 55% births, 20% deaths, 25% moves).
  std::vector<std::uint8_t> next();
  std::vector<std::uint8_t> make(GenKind kind);

  // Village codes of the city, for tests that check routing.
  const std::vector<std::string>& city_villages() const { return city_villages_; }

 private:
  std::string village_in_city();
  std::string village_outside_city(bool same_province);
  std::string nik(const std::string& district, TimeMs born, bool female);
  std::string kk(const std::string& district, TimeMs issued);
  std::string person_name(bool female);
  EventId next_id();
  TimeMs past(TimeMs max_back_ms, TimeMs min_back_ms = 0);  // a time before now
  TimeMs duration(TimeMs min_ms, TimeMs max_ms);            // uniformly random

  const schemas::RegionTable& regions_;
  GeneratorOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::string> city_villages_;
  std::vector<std::string> focus_villages_;
  std::vector<std::string> province_regencies_;  // other regencies of the city's province
  std::vector<std::string> other_provinces_;
  std::uint64_t counter_ = 0;
};

}  // namespace kolabus::tools
