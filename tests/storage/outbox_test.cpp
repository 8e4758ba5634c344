// The publisher's outbox: order, counts, refusals, recovery and concurrent enqueues.
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include "temp_dir.h"
#include <storage/outbox.h>

namespace kolabus::storage {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

std::unique_ptr<Outbox> open_outbox(const TempDir& dir) {
  auto r = Outbox::open(dir.str());
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return std::move(*r);
}

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::vector<std::uint64_t> enqueue(Outbox& ob, const std::vector<std::string>& events) {
  std::vector<std::span<const std::uint8_t>> spans;
  for (const auto& e : events) spans.push_back(bytes(e));
  auto r = ob.enqueue(spans);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return *r;
}

std::vector<std::uint64_t> pending_seqs(const Outbox& ob) {
  auto r = ob.pending(0, 10000);
  REQUIRE(r.has_value());
  std::vector<std::uint64_t> out;
  for (const auto& e : *r) out.push_back(e.local_seq);
  return out;
}

Refusal refusal(std::string field) {
  return Refusal{new_uuid_v7(), 7, std::move(field), "NIK must be 16 digits", 1'700'000'000'123};
}

using V = std::vector<std::uint64_t>;

TEST_CASE("Outbox: enqueue numbers events consecutively and pending returns them in order") {
  TempDir dir;
  auto ob = open_outbox(dir);
  CHECK(ob->pending_count() == 0);
  CHECK(enqueue(*ob, {"a", "b", "c"}) == V{1, 2, 3});
  CHECK(enqueue(*ob, {std::string("d\0d", 3), ""}) == V{4, 5});
  CHECK(enqueue(*ob, {}).empty());
  CHECK(ob->pending_count() == 5);

  auto all = ob->pending(0, 100);
  REQUIRE(all.has_value());
  REQUIRE(all->size() == 5);
  const std::vector<std::string> want = {"a", "b", "c", std::string("d\0d", 3), ""};
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK((*all)[i].local_seq == i + 1);
    CHECK((*all)[i].event == want[i]);
  }
  auto page = ob->pending(3, 2);
  REQUIRE(page.has_value());
  REQUIRE(page->size() == 2);
  CHECK((*page)[0].local_seq == 3);
  CHECK((*page)[1].local_seq == 4);
  CHECK(ob->pending(6, 10)->empty());
  CHECK(ob->pending(1, 0)->empty());
}

TEST_CASE("Outbox: remove deletes acknowledged entries and ignores absent ones") {
  TempDir dir;
  auto ob = open_outbox(dir);
  enqueue(*ob, {"a", "b", "c", "d", "e"});
  const std::vector<std::uint64_t> acked = {2, 4, 99, 2};
  REQUIRE(ob->remove(acked).has_value());
  CHECK(ob->pending_count() == 3);
  CHECK(pending_seqs(*ob) == V{1, 3, 5});
  const std::vector<std::uint64_t> again = {2};
  REQUIRE(ob->remove(again).has_value());
  CHECK(ob->pending_count() == 3);
  REQUIRE(ob->remove({}).has_value());
}

TEST_CASE("Outbox: refuse moves an entry and its reason to the refused store") {
  TempDir dir;
  auto ob = open_outbox(dir);
  enqueue(*ob, {"a", "b", "c"});
  const Refusal why = refusal("payload.birth.child.nik");
  REQUIRE(ob->refuse(2, why).has_value());
  CHECK(ob->pending_count() == 2);
  CHECK(ob->refused_count() == 1);
  CHECK(pending_seqs(*ob) == V{1, 3});

  auto r = ob->refused(10);
  REQUIRE(r.has_value());
  REQUIRE(r->size() == 1);
  const auto& e = (*r)[0];
  CHECK(e.local_seq == 2);
  CHECK(e.event == "b");
  CHECK(e.refusal.id == why.id);
  CHECK(e.refusal.code == why.code);
  CHECK(e.refusal.field == why.field);
  CHECK(e.refusal.message == why.message);
  CHECK(e.refusal.refused_at == why.refused_at);

  SUBCASE("an entry that is not pending cannot be refused") {
    for (std::uint64_t seq : {2, 99}) {
      auto s = ob->refuse(seq, why);
      REQUIRE_FALSE(s.has_value());
      CHECK(s.error().code == Errc::kNotFound);
    }
    CHECK(ob->refused_count() == 1);
  }
  SUBCASE("an empty field and message round-trip") {
    Refusal bare{new_uuid_v7(), 65535, "", "", -1};
    REQUIRE(ob->refuse(3, bare).has_value());
    auto both = ob->refused(10);
    REQUIRE(both.has_value());
    REQUIRE(both->size() == 2);
    CHECK((*both)[1].refusal.field.empty());
    CHECK((*both)[1].refusal.code == 65535);
    CHECK((*both)[1].refusal.refused_at == -1);
    CHECK((*both)[1].event == "c");
    CHECK(ob->refused(1)->size() == 1);
  }
  SUBCASE("clear_refused drops them all") {
    REQUIRE(ob->clear_refused().has_value());
    CHECK(ob->refused_count() == 0);
    CHECK(ob->refused(10)->empty());
    CHECK(ob->pending_count() == 2);
  }
}

TEST_CASE("Outbox: reopening keeps pending and refused entries and numbers keep increasing") {
  TempDir dir;
  {
    auto ob = open_outbox(dir);
    enqueue(*ob, {"a", "b", "c", "d"});
    const std::vector<std::uint64_t> acked = {1};
    REQUIRE(ob->remove(acked).has_value());
    REQUIRE(ob->refuse(4, refusal("regions")).has_value());
  }
  {
    auto ob = open_outbox(dir);
    CHECK(ob->pending_count() == 2);
    CHECK(ob->refused_count() == 1);
    CHECK(pending_seqs(*ob) == V{2, 3});
    CHECK((*ob->refused(10))[0].local_seq == 4);
    CHECK(enqueue(*ob, {"e"}) == V{5});

    // Empty both stores: the numbers must still not go back.
    const std::vector<std::uint64_t> acked = {2, 3, 5};
    REQUIRE(ob->remove(acked).has_value());
    REQUIRE(ob->clear_refused().has_value());
    CHECK(ob->pending_count() == 0);
  }
  auto ob = open_outbox(dir);
  CHECK(ob->pending_count() == 0);
  CHECK(ob->refused_count() == 0);
  CHECK(enqueue(*ob, {"f"}) == V{6});
}

TEST_CASE("Outbox: concurrent enqueues store every event exactly once") {
  TempDir dir;
  auto ob = open_outbox(dir);
  constexpr int kBatches = 20;
  auto producer = [&](int t) {
    for (int b = 0; b < kBatches; ++b) {
      const std::string e1 = "t" + std::to_string(t) + "-" + std::to_string(b) + "-0";
      const std::string e2 = "t" + std::to_string(t) + "-" + std::to_string(b) + "-1";
      const std::span<const std::uint8_t> spans[] = {bytes(e1), bytes(e2)};
      auto r = ob->enqueue(spans);
      REQUIRE(r.has_value());
      REQUIRE((*r)[1] == (*r)[0] + 1);  // a batch's numbers are consecutive
    }
  };
  std::thread a(producer, 0), b(producer, 1);
  a.join();
  b.join();

  CHECK(ob->pending_count() == 4 * kBatches);
  auto all = ob->pending(0, 1000);
  REQUIRE(all.has_value());
  REQUIRE(all->size() == 4 * kBatches);
  std::set<std::string> events;
  for (std::size_t i = 0; i < all->size(); ++i) {
    CHECK((*all)[i].local_seq == i + 1);
    CHECK(events.insert((*all)[i].event).second);
  }
  // Each thread's events appear in the order that thread enqueued them.
  for (int t = 0; t < 2; ++t) {
    int next = 0;
    for (const auto& e : *all) {
      if (e.event.rfind("t" + std::to_string(t) + "-", 0) != 0) continue;
      CHECK(e.event == "t" + std::to_string(t) + "-" + std::to_string(next / 2) + "-" +
                           std::to_string(next % 2));
      ++next;
    }
    CHECK(next == 2 * kBatches);
  }
}

TEST_CASE("Outbox: a second open of an open directory fails with kBusy") {
  TempDir dir;
  auto ob = open_outbox(dir);
  auto second = Outbox::open(dir.str());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().code == Errc::kBusy);
}

TEST_CASE("Outbox: a truncated refused entry is reported as kCorruption") {
  TempDir dir;
  {
    auto ob = open_outbox(dir);
    enqueue(*ob, {"a"});
    REQUIRE(ob->refuse(1, refusal("x")).has_value());
  }
  // Rewrite the refused value with its last length field cut short.
  {
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.str(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir.str(), descs, &handles, &db).ok());
    rocksdb::ColumnFamilyHandle* refused = nullptr;
    for (auto* h : handles) {
      if (h->GetName() == "refused") refused = h;
    }
    REQUIRE(refused != nullptr);
    const std::string key("\0\0\0\0\0\0\0\1", 8);
    std::string value;
    REQUIRE(db->Get(rocksdb::ReadOptions(), refused, key, &value).ok());
    // fixed header (31 bytes incl. the field length) + "x" + 2 of the 4 message-length bytes
    CHECK(db->Put(rocksdb::WriteOptions(), refused, key, value.substr(0, 34)).ok());
    for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
    CHECK(db->Close().ok());
    delete db;
  }
  auto ob = open_outbox(dir);
  CHECK(ob->refused_count() == 1);
  auto r = ob->refused(10);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::kCorruption);
  CHECK(r.error().message.find("message length") != std::string::npos);
}

}  // namespace
}  // namespace kolabus::storage
