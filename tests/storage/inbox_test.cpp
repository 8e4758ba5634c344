// The consumer client's inbox: processed marks, handler writes committed with them,
// pruning, counting and locking.
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "temp_dir.h"
#include <storage/inbox.h>
#include <storage/outbox.h>

namespace kolabus::storage {
namespace {

using test::TempDir;

std::unique_ptr<Inbox> open_inbox(const TempDir& dir) {
  auto r = Inbox::open(dir.str());
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return std::move(*r);
}

std::optional<std::uint64_t> processed(const Inbox& inbox, const EventId& id) {
  auto r = inbox.processed(id);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return *r;
}

std::optional<std::string> get(const Inbox& inbox, std::string_view key) {
  auto r = inbox.get(key);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return *r;
}

// Commits `id` with the given app writes.
void commit(Inbox& inbox, const EventId& id, std::uint64_t seq, TimeMs now,
            const std::vector<std::pair<std::string, std::string>>& puts = {}) {
  auto txn = inbox.begin();
  for (const auto& [k, v] : puts) txn->put(k, v);
  auto s = inbox.commit(std::move(txn), id, seq, now);
  REQUIRE_MESSAGE(s.has_value(), s.error().to_string());
}

using KVs = std::vector<std::pair<std::string, std::string>>;

KVs scan(const Inbox& inbox, std::string_view prefix) {
  KVs out;
  auto s = inbox.scan(prefix, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return true;
  });
  REQUIRE_MESSAGE(s.has_value(), s.error().to_string());
  return out;
}

constexpr TimeMs kT0 = 1'700'000'000'000;

TEST_CASE("Inbox: commit marks an event processed with the handler's writes") {
  TempDir dir;
  auto inbox = open_inbox(dir);
  const EventId a = new_uuid_v7(), b = new_uuid_v7();
  CHECK_FALSE(processed(*inbox, a).has_value());
  CHECK(inbox->processed_count() == 0);

  auto txn = inbox->begin();
  txn->put("nik/1271010101900001", "born");
  txn->put("nik/1271010101900002", "born");
  txn->put("tmp", "x");
  txn->erase("tmp");
  // Nothing is visible before commit.
  CHECK_FALSE(get(*inbox, "nik/1271010101900001").has_value());
  REQUIRE(inbox->commit(std::move(txn), a, 41, kT0).has_value());

  CHECK(processed(*inbox, a) == 41u);
  CHECK_FALSE(processed(*inbox, b).has_value());
  CHECK(inbox->processed_count() == 1);
  CHECK(get(*inbox, "nik/1271010101900001") == "born");
  CHECK_FALSE(get(*inbox, "tmp").has_value());

  SUBCASE("a later txn erases and overwrites") {
    auto t2 = inbox->begin();
    t2->erase("nik/1271010101900001");
    t2->put("nik/1271010101900002", "died");
    REQUIRE(inbox->commit(std::move(t2), b, 42, kT0 + 1).has_value());
    CHECK_FALSE(get(*inbox, "nik/1271010101900001").has_value());
    CHECK(get(*inbox, "nik/1271010101900002") == "died");
    CHECK(inbox->processed_count() == 2);
  }
  SUBCASE("a second commit of the same id writes nothing") {
    commit(*inbox, a, 99, kT0 + 5, {{"nik/1271010101900001", "twice"}, {"new", "1"}});
    CHECK(processed(*inbox, a) == 41u);
    CHECK(get(*inbox, "nik/1271010101900001") == "born");
    CHECK_FALSE(get(*inbox, "new").has_value());
    CHECK(inbox->processed_count() == 1);
  }
  SUBCASE("a txn dropped without commit writes nothing") {
    {
      auto t = inbox->begin();
      t->put("dropped", "1");
    }
    CHECK_FALSE(get(*inbox, "dropped").has_value());
    CHECK_FALSE(processed(*inbox, b).has_value());
  }
  SUBCASE("an empty txn still marks the event") {
    commit(*inbox, b, 50, kT0);
    CHECK(processed(*inbox, b) == 50u);
  }
}

TEST_CASE("Inbox: scan returns the keys with a prefix in order and can stop early") {
  TempDir dir;
  auto inbox = open_inbox(dir);
  commit(*inbox, new_uuid_v7(), 1, kT0,
         {{"b/2", "two"}, {"a/1", "x"}, {"b/1", "one"}, {"b/10", "ten"}, {"c", "y"}, {"b", "z"}});
  CHECK(scan(*inbox, "b/") == KVs{{"b/1", "one"}, {"b/10", "ten"}, {"b/2", "two"}});
  CHECK(scan(*inbox, "b") == KVs{{"b", "z"}, {"b/1", "one"}, {"b/10", "ten"}, {"b/2", "two"}});
  CHECK(scan(*inbox, "nothing").empty());
  CHECK(scan(*inbox, "").size() == 6);
  int calls = 0;
  auto s = inbox->scan("b/", [&](std::string_view, std::string_view) { return ++calls < 2; });
  REQUIRE(s.has_value());
  CHECK(calls == 2);
}

TEST_CASE("Inbox: marks and handler writes survive a reopen together") {
  TempDir dir;
  const EventId a = new_uuid_v7(), b = new_uuid_v7();
  {
    auto inbox = open_inbox(dir);
    commit(*inbox, a, 7, kT0, {{"k", "v1"}});
    commit(*inbox, b, 8, kT0 + 1, {{"k", "v2"}, {"other", "o"}});
    // Begun but never committed: gone with the process.
    auto t = inbox->begin();
    t->put("uncommitted", "1");
  }
  auto inbox = open_inbox(dir);
  CHECK(inbox->processed_count() == 2);
  CHECK(processed(*inbox, a) == 7u);
  CHECK(processed(*inbox, b) == 8u);
  CHECK(get(*inbox, "k") == "v2");
  CHECK(get(*inbox, "other") == "o");
  CHECK_FALSE(get(*inbox, "uncommitted").has_value());
}

TEST_CASE("Inbox: prune forgets marks older than the cut-off and keeps app data") {
  TempDir dir;
  std::vector<EventId> ids;
  {
    auto inbox = open_inbox(dir);
    for (int i = 0; i < 5; ++i) {
      ids.push_back(new_uuid_v7());
      commit(*inbox, ids.back(), 100 + static_cast<std::uint64_t>(i), kT0 + i * 1000,
             {{"k" + std::to_string(i), "v"}});
    }
    CHECK(inbox->processed_count() == 5);
    auto none = inbox->prune(kT0);  // strictly older than: the first is at kT0
    REQUIRE(none.has_value());
    CHECK(*none == 0);
    auto pruned = inbox->prune(kT0 + 2000);
    REQUIRE(pruned.has_value());
    CHECK(*pruned == 2);
    CHECK(inbox->processed_count() == 3);
    CHECK_FALSE(processed(*inbox, ids[0]).has_value());
    CHECK_FALSE(processed(*inbox, ids[1]).has_value());
    CHECK(processed(*inbox, ids[2]) == 102u);
    CHECK(get(*inbox, "k0") == "v");  // handler data is the handler's to keep
    // A pruned event may be processed again (an operator's replay).
    commit(*inbox, ids[0], 100, kT0 + 9000);
    CHECK(processed(*inbox, ids[0]) == 100u);
    CHECK(inbox->processed_count() == 4);
    auto again = inbox->prune(kT0 + 2000);
    REQUIRE(again.has_value());
    CHECK(*again == 0);
  }
  auto inbox = open_inbox(dir);
  CHECK(inbox->processed_count() == 4);
  auto rest = inbox->prune(kT0 + 100'000);
  REQUIRE(rest.has_value());
  CHECK(*rest == 4);
  CHECK(inbox->processed_count() == 0);
  for (const auto& id : ids) CHECK_FALSE(processed(*inbox, id).has_value());
}

std::string be64(std::uint64_t v) {
  std::string s;
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

TEST_CASE("Inbox: marks are counted on open and prune takes more than one batch") {
  TempDir dir;
  { open_inbox(dir); }
  // 10,050 marks (more than the 10,000 one prune batch deletes) written in one raw
  // batch, in the documented layout: committing them one by one would be 10,050 fsyncs.
  constexpr int kN = 10'050;
  {
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.str(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir.str(), descs, &handles, &db).ok());
    rocksdb::ColumnFamilyHandle *marks = nullptr, *by_time = nullptr;
    for (auto* h : handles) {
      if (h->GetName() == "processed") marks = h;
      if (h->GetName() == "by_time") by_time = h;
    }
    REQUIRE((marks != nullptr && by_time != nullptr));
    rocksdb::WriteBatch batch;
    for (int i = 0; i < kN; ++i) {
      const EventId id = new_uuid_v7();
      const auto t = static_cast<std::uint64_t>(kT0 + i);
      REQUIRE(batch.Put(marks, id.as_key(), be64(static_cast<std::uint64_t>(i)) + be64(t)).ok());
      REQUIRE(batch.Put(by_time, be64(t) + std::string(id.as_key()), "").ok());
    }
    CHECK(db->Write(rocksdb::WriteOptions(), &batch).ok());
    for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
    CHECK(db->Close().ok());
    delete db;
  }
  auto inbox = open_inbox(dir);
  CHECK(inbox->processed_count() == kN);
  auto pruned = inbox->prune(kT0 + kN - 1);  // all but the last
  REQUIRE(pruned.has_value());
  CHECK(*pruned == kN - 1);
  CHECK(inbox->processed_count() == 1);
  inbox.reset();
  CHECK(open_inbox(dir)->processed_count() == 1);
}

TEST_CASE("Inbox: a second open of an open directory fails with kBusy") {
  TempDir dir;
  auto first = open_inbox(dir);
  auto second = Inbox::open(dir.str());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().code == Errc::kBusy);
  first.reset();
  CHECK(Inbox::open(dir.str()).has_value());
}

TEST_CASE("Inbox: a directory holding an outbox is not an inbox") {
  TempDir dir;
  { REQUIRE(Outbox::open(dir.str()).has_value()); }
  auto inbox = Inbox::open(dir.str());
  REQUIRE_FALSE(inbox.has_value());
  CHECK(inbox.error().code == Errc::kInvalidArgument);
  CHECK(inbox.error().message.find("holds a kolabus outbox") != std::string::npos);
}

}  // namespace
}  // namespace kolabus::storage
