// The audit chain on disk: someone with the broker's files edits, removes or cuts off
// audit records; `kolabus audit verify` (offline, on the stopped broker's directory)
// and the restarted broker (through AuditRead) both name the first bad record.
#include <cstdlib>
#include <fstream>

#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include "audit_chain.h"
#include "broker_process.h"
#include "test_events.h"
#include <broker/audit.h>
#include <client/admin.h>
#include <client/publisher.h>
#include <storage/rocksdb_broker_store.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

constexpr TimeMs kDay = 24LL * 3600 * 1000;

std::string be64(std::uint64_t v) {
  std::string s;
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// Opens the stopped broker's database with RocksDB itself, as an intruder would, and
// edits the audit column family.
void tamper(const std::string& dir,
            const std::function<void(rocksdb::DB&, rocksdb::ColumnFamilyHandle&)>& edit) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, cfs, &handles, &db).ok());
  rocksdb::ColumnFamilyHandle* audit = nullptr;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "audit") audit = handles[i];
  }
  REQUIRE(audit != nullptr);
  edit(*db, *audit);
  for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
  CHECK(db->Close().ok());
  delete db;
}

struct Run {
  int exit_code;
  std::string out;
};

Run cli(const std::string& args, const std::string& out_file) {
  const std::string cmd = std::string(KOLABUS_CLI_BIN) + " " + args + " > " + out_file + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(out_file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

// Verifies the chain through a running broker.
std::optional<broker::AuditProblem> verify_online(const std::string& endpoint) {
  auto admin = client::AdminClient::connect(endpoint, 10s);
  REQUIRE(admin.has_value());
  return test::read_audit_chain(**admin).problem;
}

}  // namespace

TEST_CASE("Audit: an edited, removed or cut-off record is found, offline and by the broker") {
  test::TempDir dir("audit");
  const std::string data = dir.str("data");
  std::uint64_t head = 0;
  {
    test::BrokerProcess broker(data);
    client::PublisherOptions o;
    o.endpoint = broker.endpoint();
    o.outbox_dir = dir.str("outbox");
    auto pub = client::Publisher::open(o);
    REQUIRE(pub.has_value());
    const TimeMs t = SystemClock().now_ms() - kDay;
    for (int i = 0; i < 5; ++i) {  // five group commits: five Publish records at least
      REQUIRE((*pub)->publish(test::make_birth("1271011001", t)).has_value());
      REQUIRE((*pub)->wait_drained(10s));
    }
    CHECK_FALSE(verify_online(broker.endpoint()).has_value());
    auto admin = client::AdminClient::connect(broker.endpoint(), 10s);
    head = (*admin)->audit_read(1, 0, 1)->head_index;
    REQUIRE(head >= 6);  // BrokerStarted and five Publish
  }
  const auto ok = cli("audit verify --dir " + data, dir.str("ok.txt"));
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.find("audit chain verified: " + std::to_string(head) + " records") == 0);

  std::string expected;
  std::uint64_t first_bad = 0;
  SUBCASE("a record's bytes edited") {
    tamper(data, [](rocksdb::DB& db, rocksdb::ColumnFamilyHandle& cf) {
      std::string v;
      REQUIRE(db.Get(rocksdb::ReadOptions(), &cf, be64(3), &v).ok());
      const auto at = v.find("dev");  // the agency name: still decodes as a record
      REQUIRE(at != std::string::npos);
      v[at] = 'x';
      REQUIRE(db.Put(rocksdb::WriteOptions(), &cf, be64(3), v).ok());
    });
    expected = "the first bad record is 3: record 3 was altered";
    first_bad = 3;
  }
  SUBCASE("a record removed") {
    tamper(data, [](rocksdb::DB& db, rocksdb::ColumnFamilyHandle& cf) {
      REQUIRE(db.Delete(rocksdb::WriteOptions(), &cf, be64(4)).ok());
    });
    expected = "the first bad record is 4: record 4 is missing: the next stored record is 5";
    first_bad = 4;
  }
  SUBCASE("the newest record removed") {
    tamper(data, [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle& cf) {
      REQUIRE(db.Delete(rocksdb::WriteOptions(), &cf, be64(head)).ok());
    });
    expected = "the first bad record is " + std::to_string(head) + ": record " +
               std::to_string(head) + " is missing: the recorded head is record " +
               std::to_string(head);
    first_bad = head;
  }
  const auto bad = cli("audit verify --dir " + data, dir.str("bad.txt"));
  CHECK(bad.exit_code == 6);
  CHECK_MESSAGE(bad.out.find("audit chain BROKEN: " + expected) == 0, bad.out);

  // The broker starts on a damaged chain (its evidence must stay), keeps appending
  // after the recorded head, and its chain still names the same first bad record.
  test::BrokerProcess broker(data);
  const auto online = verify_online(broker.endpoint());
  REQUIRE(online.has_value());
  CHECK_MESSAGE(online->index == first_bad, online->what);
}

TEST_CASE("Audit: kolabus audit show lists records from a time, and person answers by NIK") {
  test::TempDir dir("audit-cli");
  test::BrokerProcess broker(dir.str("data"));
  client::PublisherOptions o;
  o.endpoint = broker.endpoint();
  o.outbox_dir = dir.str("outbox");
  auto pub = client::Publisher::open(o);
  REQUIRE(pub.has_value());
  const TimeMs t = SystemClock().now_ms() - kDay;
  REQUIRE((*pub)->publish(test::make_death("1271011002", t)).has_value());
  REQUIRE((*pub)->wait_drained(10s));
  const std::string b = "-b " + broker.endpoint();

  const auto all = cli("audit show " + b, dir.str("show.txt"));
  CHECK(all.exit_code == 0);
  CHECK(all.out.find("BrokerStarted") != std::string::npos);
  CHECK(all.out.find("Publish") != std::string::npos);
  const auto later = cli("audit show --since 2099-01-01 " + b, dir.str("later.txt"));
  CHECK(later.exit_code == 0);
  CHECK(later.out == "no audit records since 2099-01-01\n");
  const auto json = cli("audit show --json --action Publish " + b, dir.str("json.txt"));
  CHECK(json.out.find("\"action\":\"Publish\"") != std::string::npos);
  CHECK(json.out.find("BrokerStarted") == std::string::npos);

  const auto who = cli("audit person 1271011505500003 " + b, dir.str("who.txt"));
  CHECK(who.exit_code == 0);
  CHECK_MESSAGE(who.out.find("published by") != std::string::npos, who.out);
  CHECK(who.out.find("1 event concerns this person; received by 0 agencies") != std::string::npos);
  const auto nobody = cli("audit person 1271011505500004 " + b, dir.str("nobody.txt"));
  CHECK(nobody.out == "no event in the audit chain concerns this person\n");
  const auto bad = cli("audit person 12345 " + b, dir.str("bad.txt"));
  CHECK(bad.exit_code == 2);
}
