// The spool's archives: done/ and rejects/ hold residents' names and NIKs, so they are
// the adapter's user's only (0700, files 0600) whatever the umask, and they are removed
// after the configured number of days (their age driven here by file times, no sleeps).
#include <chrono>
#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

#include "broker_process.h"
#include "file_modes.h"
#include "spool_test_util.h"
#include <adapters/spool.h>
#include <client/publisher.h>

using namespace kolabus;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// An agency whose broker is not there: what the spool queues stays in the outbox,
// which is all these tests need.
struct Agency {
  test::TempDir dir{"spool-files"};
  std::unique_ptr<client::Publisher> publisher;
  adapters::AgencyContext ctx;

  Agency() {
    client::PublisherOptions o;
    o.endpoint = "tcp://127.0.0.1:9";  // discard: never answers
    o.outbox_dir = dir.str("agency/outbox");
    auto p = client::Publisher::open(o);
    REQUIRE_MESSAGE(p.has_value(), p.error().to_string());
    publisher = std::move(*p);
    ctx = adapters::AgencyContext{"disdukcapil-medan", o.endpoint, dir.str("agency"),
                                  publisher.get(),     nullptr,    {}};
  }

  std::unique_ptr<adapters::SpoolAdapter> spool(const std::string& extra = "") {
    auto a = adapters::SpoolAdapter::create(
        test::spool_table(test::birth_config(dir.str("spool"), "poll_ms = 20\n" + extra)), ctx);
    REQUIRE_MESSAGE(a.has_value(), a.error().to_string());
    return std::move(*a);
  }
};

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// A file last modified `age` before now.
void write_aged(const fs::path& p, std::chrono::hours age) {
  write_file(p, "NIK_IBU,...\n1271015203950001,...\n");
  fs::last_write_time(p, fs::file_time_type::clock::now() - age);
}

constexpr std::chrono::hours kDay{24};

}  // namespace

TEST_CASE("Spool files: done/ and rejects/ are 0700 with files 0600 under umask 022") {
  const test::Umask mask(022);
  Agency agency;
  auto spool = agency.spool();
  REQUIRE(spool->start().has_value());
  const fs::path dir = agency.dir.path() / "spool";
  // An export with one good line and one that is refused (no mother's NIK), written the
  // way an exporter under umask 022 writes it: 0644.
  const std::string text = std::string(test::kBirthHeader) + test::birth_row("Siti") +
                           ",,1271012002200001,Tanpa Ibu,2,20-11-2024,08:30,,12,71,1,1001\n";
  write_file(dir / "births-1.csv.part", text);
  fs::rename(dir / "births-1.csv.part", dir / "births-1.csv");
  REQUIRE(test::wait_until([&] { return fs::exists(dir / "done" / "births-1.csv"); }));
  spool->stop();

  REQUIRE(fs::exists(dir / "rejects" / "births-1.csv.rejects.jsonl"));
  for (const char* sub : {"done", "rejects"}) {
    const auto open = test::not_private((dir / sub).string());
    CHECK_MESSAGE(open.empty(), test::joined(open));
  }
  const auto open = test::not_private(agency.dir.str("agency"));  // the outbox
  CHECK_MESSAGE(open.empty(), test::joined(open));
  // The archive's time is when it was archived: its retention counts from then.
  CHECK(fs::last_write_time(dir / "done" / "births-1.csv") > fs::file_time_type::clock::now() - 1h);
}

TEST_CASE("Spool files: done/ and rejects/ an older release left 0755 are narrowed at start") {
  const test::Umask mask(022);
  Agency agency;
  const fs::path dir = agency.dir.path() / "spool";
  for (const char* sub : {"done", "rejects"}) {
    fs::create_directories(dir / sub);
    fs::permissions(dir / sub, fs::perms(0755));
  }
  fs::permissions(dir, fs::perms(0755));
  auto spool = agency.spool();
  REQUIRE(spool->start().has_value());
  spool->stop();
  CHECK(test::mode_of((dir / "done").string()) == 0700);
  CHECK(test::mode_of((dir / "rejects").string()) == 0700);
  // The drop directory is the exporter's way in: left as the operator made it.
  CHECK(test::mode_of(dir.string()) == 0755);
}

TEST_CASE("Spool files: archives older than the configured days are removed, newer ones kept") {
  Agency agency;
  const fs::path dir = agency.dir.path() / "spool";
  fs::create_directories(dir / "done");
  fs::create_directories(dir / "rejects");
  write_aged(dir / "done" / "old.csv", 8 * kDay);
  write_aged(dir / "done" / "recent.csv", 6 * kDay);
  write_aged(dir / "done" / "today.csv", 1h);
  write_aged(dir / "rejects" / "old.csv.rejects.jsonl", 4 * kDay);
  write_aged(dir / "rejects" / "recent.csv.rejects.jsonl", 2 * kDay);
  auto spool = agency.spool("done_retention_days = 7\nrejects_retention_days = 3\n");

  auto first = spool->clean_archives(std::chrono::system_clock::now());
  REQUIRE(first.has_value());
  CHECK(first->done == 1);
  CHECK(first->rejects == 1);
  CHECK(!fs::exists(dir / "done" / "old.csv"));
  CHECK(fs::exists(dir / "done" / "recent.csv"));
  CHECK(fs::exists(dir / "done" / "today.csv"));
  CHECK(!fs::exists(dir / "rejects" / "old.csv.rejects.jsonl"));
  CHECK(fs::exists(dir / "rejects" / "recent.csv.rejects.jsonl"));

  // Two days on: the 6-day archive is 8 days old, the 2-day reject 4.
  auto later = spool->clean_archives(std::chrono::system_clock::now() + 2 * kDay);
  REQUIRE(later.has_value());
  CHECK(later->done == 1);
  CHECK(later->rejects == 1);
  CHECK(!fs::exists(dir / "done" / "recent.csv"));
  CHECK(fs::exists(dir / "done" / "today.csv"));
  CHECK(fs::is_empty(dir / "rejects"));

  // Nothing left to remove: nothing removed.
  auto again = spool->clean_archives(std::chrono::system_clock::now() + 2 * kDay);
  REQUIRE(again.has_value());
  CHECK(again->done == 0);
  CHECK(again->rejects == 0);
}

TEST_CASE("Spool files: the adapter cleans its archives when it starts, 30 days by default") {
  Agency agency;
  const fs::path dir = agency.dir.path() / "spool";
  fs::create_directories(dir / "done");
  write_aged(dir / "done" / "expired.csv", 31 * kDay);
  write_aged(dir / "done" / "kept.csv", 29 * kDay);
  auto spool = agency.spool();
  CHECK(spool->stats().files == 0);
  REQUIRE(spool->start().has_value());
  CHECK(test::wait_until([&] { return !fs::exists(dir / "done" / "expired.csv"); }));
  spool->stop();
  CHECK(fs::exists(dir / "done" / "kept.csv"));
}

TEST_CASE("Spool files: the retention keys are checked, errors name the key") {
  for (const char* bad : {"done_retention_days = 0", "done_retention_days = -1",
                          "done_retention_days = 3651", "done_retention_days = \"30\"",
                          "rejects_retention_days = 0", "rejects_retention_days = 1.5"}) {
    INFO(bad);
    const auto err = test::config_error(test::birth_config("unused", bad));
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    CHECK(err.find(key + ": must be an integer 1-3650") != std::string::npos);
  }
  auto c = test::converter(
      test::birth_config("unused", "done_retention_days = 90\nrejects_retention_days = 7"));
  CHECK(c.settings().done_retention_days == 90);
  CHECK(c.settings().rejects_retention_days == 7);
  auto d = test::converter(test::birth_config("unused"));
  CHECK(d.settings().done_retention_days == 30);
  CHECK(d.settings().rejects_retention_days == 30);
}
