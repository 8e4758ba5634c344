// fuzz_replay_test: every file of the seed corpora (tests/fuzz/corpus/<target>/) and
// every crash the fuzzers found (tests/fuzz/regressions/<target>/) goes through the
// same entry function as under libFuzzer, compiled without it, on every ctest run.
// A crash fails the test by crashing it; a broken property fails it naming the file.
// The path counters check that the seeds still reach what they were made to reach.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "fuzz_targets.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::string> g_broken;  // properties broken by the current input

using Entry = void (*)(std::span<const std::uint8_t>);

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (e.is_regular_file() && name.front() != '.' && name != "README.md") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Replays corpus and regressions of `target`; returns how many seed files there were.
std::size_t replay(const std::string& target, Entry entry) {
  const fs::path root(KOLABUS_FUZZ_DIR);
  const auto seeds = files_in(root / "corpus" / target);
  auto inputs = seeds;
  const auto regressions = files_in(root / "regressions" / target);
  inputs.insert(inputs.end(), regressions.begin(), regressions.end());
  kolabus::fuzz::counters().clear();
  for (const auto& file : inputs) {
    const auto bytes = read_bytes(file);
    g_broken.clear();
    entry(bytes);
    for (const auto& b : g_broken) {
      FAIL_CHECK(fs::relative(file, root).string() << ": " << b);
    }
  }
  return seeds.size();
}

std::uint64_t reached(const std::string& path) {
  const auto& c = kolabus::fuzz::counters();
  const auto it = c.find(path);
  return it == c.end() ? 0 : it->second;
}

}  // namespace

namespace kolabus::fuzz {
void report(const std::string& property) { g_broken.push_back(property); }
}  // namespace kolabus::fuzz

TEST_CASE("Fuzz replay: request frames of the corpus and the regressions break nothing") {
  CHECK(replay("fuzz_request", kolabus::fuzz::request_one) >= 20);
  // Seeds reach the publish outcomes and every command of the protocol.
  CHECK(reached("publish.acked") >= 4);
  CHECK(reached("publish.duplicate") >= 1);
  CHECK(reached("publish.nack.InvalidNik") >= 1);
  for (const char* c :
       {"Ping", "Subscribe", "Unsubscribe", "Ack", "Nak", "Reject", "ListConsumers", "SeekConsumer",
        "DeleteConsumer", "ReadRange", "DlqList", "DlqRedrive", "DlqDrop"}) {
    CAPTURE(c);
    CHECK(reached(std::string("command.") + c) >= 1);
  }
}

TEST_CASE("Fuzz replay: events of the corpus and the regressions break nothing") {
  CHECK(replay("fuzz_event", kolabus::fuzz::event_one) >= 8);
  for (const char* kind : {"birth", "death", "move", "correction"}) {
    CAPTURE(kind);
    CHECK(reached(std::string("valid.") + kind) >= 1);
  }
  CHECK(reached("violation.InvalidNik") >= 1);
  CHECK(reached("structure.UnknownKind") >= 1);
}

TEST_CASE(
    "Fuzz replay: JSON lines and spool files of the corpus and the regressions break nothing") {
  CHECK(replay("fuzz_json", kolabus::fuzz::json_one) >= 6);
  CHECK(reached("json.valid") >= 1);
  for (const char* c : {"births-csv", "deaths-csv", "moves-csv", "births-jsonl", "events-jsonl"}) {
    CAPTURE(c);
    CHECK(reached(std::string("spool.") + c + ".event") >= 1);
  }
}

TEST_CASE("Fuzz replay: configuration files of the corpus and the regressions break nothing") {
  CHECK(replay("fuzz_config", kolabus::fuzz::config_one) >= 3);
  CHECK(reached("config.loaded") >= 1);
  CHECK(reached("agencies.loaded") >= 1);
}
