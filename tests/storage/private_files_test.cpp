// Private files: an agency's outbox and inbox (linked into its own programs, whose umask
// is theirs) are directories 0700 with files 0600 whatever the umask, and a directory
// an older release left open to others is narrowed. The process umask is never changed.
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "file_modes.h"
#include "no_space_fs.h"
#include "temp_dir.h"
#include <common/ids.h>
#include <storage/inbox.h>
#include <storage/outbox.h>

using namespace kolabus;

namespace {

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void fill_outbox(storage::Outbox& ob) {
  // 10 MiB: more than a memtable, so table files as well as the log.
  const std::string event(40 * 1024, 'x');
  std::vector<std::span<const std::uint8_t>> batch(64, bytes(event));
  for (int i = 0; i < 4; ++i) REQUIRE(ob.enqueue(batch).has_value());
}

void fill_inbox(storage::Inbox& in) {
  for (std::uint64_t seq = 1; seq <= 100; ++seq) {
    auto txn = in.begin();
    REQUIRE(in.commit(std::move(txn), new_uuid_v7(), seq, 1'700'000'000'000).has_value());
  }
}

}  // namespace

TEST_CASE("Private files: an outbox and an inbox are 0700 with files 0600 under umask 022") {
  test::TempDir dir("private-stores");
  const test::Umask mask(022);
  const std::string agency = dir.str("agency");  // made by the library, parents too
  {
    auto ob = storage::Outbox::open(agency + "/outbox");
    REQUIRE_MESSAGE(ob.has_value(), ob.error().to_string());
    fill_outbox(**ob);
    auto in = storage::Inbox::open(agency + "/inbox-kel");
    REQUIRE_MESSAGE(in.has_value(), in.error().to_string());
    fill_inbox(**in);
  }
  // Opened again: RocksDB writes a new manifest, options file and log.
  {
    auto ob = storage::Outbox::open(agency + "/outbox");
    REQUIRE(ob.has_value());
    fill_outbox(**ob);
  }
  std::size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(agency)) {
    files += e.is_regular_file() ? 1 : 0;
  }
  CHECK(files > 10);  // CURRENT, IDENTITY, LOCK, MANIFEST, OPTIONS, logs, tables
  const auto open = test::not_private(agency);
  CHECK_MESSAGE(open.empty(), test::joined(open));
  CHECK(::umask(022) == 022);  // the library left the process's umask alone
}

TEST_CASE("Private files: an outbox directory an older release left 0755 is narrowed to 0700") {
  test::TempDir dir("private-narrow");
  const test::Umask mask(022);
  const std::string outbox = dir.str("outbox");
  {
    auto ob = storage::Outbox::open(outbox);
    REQUIRE(ob.has_value());
    fill_outbox(**ob);
  }
  // As an older release left it: the directory and its files open to others.
  std::filesystem::permissions(outbox, std::filesystem::perms(0755));
  for (const auto& e : std::filesystem::directory_iterator(outbox)) {
    std::filesystem::permissions(e.path(), std::filesystem::perms(0644));
  }
  auto ob = storage::Outbox::open(outbox);
  REQUIRE(ob.has_value());
  CHECK(test::mode_of(outbox) == 0700);
  // Old files stay as they were (nobody else can reach them now); every new one is 0600.
  fill_outbox(**ob);
  CHECK((*ob)->pending_count() == 2 * 4 * 64);
}

TEST_CASE("Private files: a store over a test's file system is private too") {
  test::TempDir dir("private-env");
  const test::Umask mask(022);
  auto made = test::NoSpaceFs::make();
  {
    auto ob = storage::Outbox::open(dir.str("outbox"), made.env);
    REQUIRE(ob.has_value());
    fill_outbox(**ob);
  }
  const auto open = test::not_private(dir.str("outbox"));
  CHECK_MESSAGE(open.empty(), test::joined(open));
}
