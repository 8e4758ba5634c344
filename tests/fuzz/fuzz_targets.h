// The entry functions of kolabus's fuzz targets (issue 7, item 2), shared by two
// builds of the same code:
//  - the libFuzzer binaries fuzz_request, fuzz_event, fuzz_json and fuzz_config
//    (clang-14, -DKOLABUS_FUZZ=ON; tests/fuzz/run), whose LLVMFuzzerTestOneInput
//    calls the function below;
//  - fuzz_replay_test (any compiler, every ctest run), which feeds each seed corpus
//    file and each regression input to the same function.
//
// Each function takes hostile bytes through the public, socket-free APIs and must not
// crash, hang or leak; it also checks properties the protocol promises (an ACKed event
// is stored and valid, a refused one stores nothing, a valid event survives JSON and
// minimisation, ...). A broken property is reported through report(), never by a bare
// abort, so that the replay test can name the file and the property.
//
// Determinism: every target runs at the fixed instant kNow (seeds are made for it), so
// an input gives the same answer on every run and every day.
//
// Thread-safety: none. libFuzzer and the replay test call the functions from one
// thread; the targets keep per-process state (a JsonCodec, spool converters).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <common/clock.h>

namespace kolabus::fuzz {

// 2026-11-27 12:00 UTC: "now" for validation, consumers and the spool (after the dates
// of docs/SPOOL.md's examples, which seed fuzz_json).
inline constexpr TimeMs kNow = 1795780800000;

// Bytes as a protocol Request frame, handled as broker/src/server.cpp handles it.
void request_one(std::span<const std::uint8_t> data);
// Bytes as an Event: validation, structure checks, minimisation, JSON.
void event_one(std::span<const std::uint8_t> data);
// Text as a JSON line (JsonCodec) and as a spool file (CSV and JSON Lines mappings).
void json_one(std::span<const std::uint8_t> data);
// Text as broker.toml and as agencies.toml.
void config_one(std::span<const std::uint8_t> data);

// A property the input broke. Under libFuzzer: printed, then abort() (the input is
// saved as a crash). In fuzz_replay_test: recorded, and the test fails naming it.
// Defined once per build (fuzz_main.cpp or replay_test.cpp).
void report(const std::string& property);

// How often each interesting path was taken, by name ("publish.acked",
// "command.Subscribe", ...). The replay test checks that the seed corpus reaches the
// paths it is meant to reach, so stale seeds cannot pass unnoticed.
std::map<std::string, std::uint64_t>& counters();
inline void count(const std::string& path) { ++counters()[path]; }

// The events every broker of fuzz_request starts with, at sequences 1, 2, 3: a birth,
// a death and a move of Medan (tools::EventGenerator, seed 7, at kNow). make_seeds
// builds corrections of them.
const std::vector<std::vector<std::uint8_t>>& preloaded_events();

}  // namespace kolabus::fuzz
