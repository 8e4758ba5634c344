// kolabus gen: synthetic, realistic events as JSON Lines (for demos and tests).
#include <iostream>

#include "commands.h"
#include <common/clock.h>
#include <schemas/json_codec.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace kolabus::cli {

void add_gen(CLI::App& app, int& exit_code) {
  struct Args {
    std::uint64_t count = 100;
    std::uint64_t seed = 1;
    std::string city = "1271";
    std::string kind = "mixed";
    TimeMs now = 0;
    std::string focus;
    double focus_share = 0.5;
  };
  auto args = std::make_shared<Args>();  // shared: the callback outlives this scope
  auto* cmd = app.add_subcommand(
      "gen",
      "Write synthetic but valid population events as JSON Lines: real Kemendagri village "
      "codes of one city, valid NIKs and KK numbers, births, deaths and moves. The same seed "
      "gives the same event ids, so a regenerated file republishes as duplicates.");
  cmd->add_option("-n,--count", args->count, "number of events")->capture_default_str();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->add_option("--city", args->city, "regency/city code (Kota Medan: 1271)")
      ->capture_default_str();
  cmd->add_option("--kind", args->kind, "mixed, birth, death or move")
      ->check(CLI::IsMember({"mixed", "birth", "death", "move"}))
      ->capture_default_str();
  cmd->add_option("--now", args->now, "reference time, UTC ms (default: the clock)");
  cmd->add_option("--focus", args->focus,
                  "put about --focus-share of the city's events under this kecamatan or "
                  "kelurahan code");
  cmd->add_option("--focus-share", args->focus_share, "share of events in --focus")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->callback([args, &exit_code] {
    const auto& regions = schemas::RegionTable::embedded();
    const auto* city = regions.find(args->city);
    if (city == nullptr || city->level != schemas::RegionLevel::kRegency) {
      std::cerr << "kolabus gen: " << args->city << " is not a regency/city code\n";
      exit_code = kUsage;
      return;
    }
    auto codec = schemas::JsonCodec::create();
    if (!codec) {
      std::cerr << "kolabus gen: " << codec.error().to_string() << "\n";
      exit_code = kInternal;
      return;
    }
    if (!args->focus.empty() && args->focus.compare(0, args->city.size(), args->city) != 0) {
      std::cerr << "kolabus gen: --focus " << args->focus << " is not inside " << args->city
                << "\n";
      exit_code = kUsage;
      return;
    }
    tools::EventGenerator gen(
        regions, {args->seed, args->city, args->now != 0 ? args->now : SystemClock().now_ms(),
                  args->focus, args->focus_share});
    for (std::uint64_t i = 0; i < args->count; ++i) {
      const auto bytes = args->kind == "birth"   ? gen.make(tools::GenKind::kBirth)
                         : args->kind == "death" ? gen.make(tools::GenKind::kDeath)
                         : args->kind == "move"  ? gen.make(tools::GenKind::kMove)
                                                 : gen.next();
      auto json = codec->to_json(bytes);
      if (!json) {
        std::cerr << "kolabus gen: " << json.error().to_string() << "\n";
        exit_code = kInternal;
        return;
      }
      std::cout << *json << '\n';
    }
    std::cout.flush();
  });
}

}  // namespace kolabus::cli
