// The EventLog contract suite, run on both implementations, then the parts only the
// RocksDB log has (durability across reopen, locking, read-only, format checks).
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "temp_dir.h"
#include <storage/event_log.h>
#include <storage/memory_event_log.h>
#include <storage/outbox.h>
#include <storage/rocksdb_event_log.h>

namespace kolabus::storage {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
using test::TempDir;

// A key to write into a column family behind the store's back.
struct RawPut {
  std::string cf, key, value;
};

// Writes the keys in one session of the raw database: one open, one batch, one close.
void raw_put(const std::string& dir, const std::vector<RawPut>& puts) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, descs, &handles, &db).ok());
  rocksdb::WriteBatch batch;
  for (const auto& p : puts) {
    rocksdb::ColumnFamilyHandle* target = nullptr;
    for (auto* h : handles) {
      if (h->GetName() == p.cf) target = h;
    }
    REQUIRE(target != nullptr);
    CHECK(batch.Put(target, p.key, p.value).ok());
  }
  CHECK(db->Write(rocksdb::WriteOptions(), &batch).ok());
  for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
  CHECK(db->Close().ok());
  delete db;
}

// Writes one key into a column family behind the store's back.
void raw_put(const std::string& dir, const std::string& cf, const std::string& key,
             const std::string& value) {
  raw_put(dir, {{cf, key, value}});
}

std::string be64(std::uint64_t v) {
  std::string s;
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

struct MemoryFactory {
  std::unique_ptr<EventLog> log = std::make_unique<MemoryEventLog>();
};

struct RocksFactory {
  TempDir dir;
  std::unique_ptr<EventLog> log;
  RocksFactory() {
    auto r = open_rocksdb_event_log(dir.str());
    REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
    log = std::move(*r);
  }
};

}  // namespace
}  // namespace kolabus::storage

// Short names for ctest: "...<memory>", "...<rocksdb>".
TYPE_TO_STRING_AS("memory", kolabus::storage::MemoryFactory);
TYPE_TO_STRING_AS("rocksdb", kolabus::storage::RocksFactory);

namespace kolabus::storage {
namespace {

// An event as a test writes it; append() borrows from it.
struct Ev {
  EventId id = new_uuid_v7();
  std::uint8_t kind = 1;
  std::vector<std::string> regions;
  std::string body;
};

std::vector<AppendRecord> records_of(const EventLog& log, const std::vector<Ev>& evs) {
  std::vector<AppendRecord> recs;
  std::uint64_t seq = log.appended_end().value;
  for (const auto& e : evs) {
    recs.push_back(AppendRecord{
        Sequence{seq++}, e.id, e.kind, e.regions,
        std::span(reinterpret_cast<const std::uint8_t*>(e.body.data()), e.body.size())});
  }
  return recs;
}

Status append(EventLog& log, const std::vector<Ev>& evs) {
  return log.append(records_of(log, evs));
}

Status append_unsynced(EventLog& log, const std::vector<Ev>& evs) {
  return log.append_unsynced(records_of(log, evs), {});
}

std::vector<std::uint64_t> scan_seqs(const EventLog& log, Sequence from, std::size_t max) {
  std::vector<std::uint64_t> out;
  auto s = log.scan(from, max, [&](Sequence seq, std::string_view) {
    out.push_back(seq.value);
    return true;
  });
  REQUIRE(s.has_value());
  return out;
}

std::vector<std::uint64_t> region_seqs(const EventLog& log, std::string_view prefix,
                                       Sequence from = {}, std::size_t max = 1000) {
  std::vector<std::uint64_t> out;
  auto s = log.scan_region(prefix, from, max, [&](const RegionHit& h) {
    out.push_back(h.seq.value);
    return true;
  });
  REQUIRE_MESSAGE(s.has_value(), s.error().to_string());
  return out;
}

using V = std::vector<std::uint64_t>;

TEST_CASE_TEMPLATE("EventLog: an empty log starts at sequence 1 and holds nothing", F,
                   MemoryFactory, RocksFactory) {
  F f;
  CHECK(f.log->next_sequence() == Sequence{1});
  auto r = f.log->read(Sequence{1});
  REQUIRE(r.has_value());
  CHECK_FALSE(r->has_value());
  auto id = f.log->find_id(new_uuid_v7());
  REQUIRE(id.has_value());
  CHECK_FALSE(id->has_value());
  CHECK(scan_seqs(*f.log, Sequence{0}, 100).empty());
  CHECK(region_seqs(*f.log, "12").empty());
}

TEST_CASE_TEMPLATE("EventLog: appended records read back by sequence, id and scan", F,
                   MemoryFactory, RocksFactory) {
  F f;
  std::vector<Ev> batch1(3), batch2(1);
  batch1[0].body = "first";
  batch1[1].body = std::string("with\0zero\xff", 10);
  batch1[2].body = "";
  batch2[0].body = std::string(5000, 'x');
  REQUIRE(append(*f.log, batch1).has_value());
  CHECK(f.log->next_sequence() == Sequence{4});
  REQUIRE(append(*f.log, batch2).has_value());
  CHECK(f.log->next_sequence() == Sequence{5});

  std::vector<Ev> all = batch1;
  all.push_back(batch2[0]);
  for (std::size_t i = 0; i < all.size(); ++i) {
    const Sequence seq{i + 1};
    auto r = f.log->read(seq);
    REQUIRE(r.has_value());
    REQUIRE(r->has_value());
    CHECK(**r == all[i].body);
    auto id = f.log->find_id(all[i].id);
    REQUIRE(id.has_value());
    REQUIRE(id->has_value());
    CHECK(**id == seq);
  }
  auto missing = f.log->read(Sequence{5});
  REQUIRE(missing.has_value());
  CHECK_FALSE(missing->has_value());

  std::vector<std::string> bodies;
  REQUIRE(f.log
              ->scan(Sequence{0}, 100,
                     [&](Sequence, std::string_view b) {
                       bodies.emplace_back(b);
                       return true;
                     })
              .has_value());
  REQUIRE(bodies.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(bodies[i] == all[i].body);
}

TEST_CASE_TEMPLATE("EventLog: unsynced appends are found by id but read by scans only once synced",
                   F, MemoryFactory, RocksFactory) {
  F f;
  std::vector<Ev> first(2), second(3);
  for (auto& e : first) e.regions = {"1271011001"};
  for (auto& e : second) e.regions = {"1271011001"};
  REQUIRE(append(*f.log, first).has_value());
  REQUIRE(append_unsynced(*f.log, second).has_value());
  // The writer goes on from the unsynced records; readers stop before them.
  CHECK(f.log->appended_end() == Sequence{6});
  CHECK(f.log->next_sequence() == Sequence{3});
  CHECK(scan_seqs(*f.log, Sequence{0}, 100) == V{1, 2});
  CHECK(region_seqs(*f.log, "127101") == V{1, 2});
  CHECK(scan_seqs(*f.log, Sequence{3}, 100).empty());
  // The next batch's dedup and correction lookups see them.
  auto id = f.log->find_id(second[2].id);
  REQUIRE(id.has_value());
  CHECK(*id == std::optional<Sequence>(Sequence{5}));
  auto rec = f.log->read(Sequence{4});
  REQUIRE(rec.has_value());
  CHECK(rec->has_value());

  std::vector<Ev> third(1);
  third[0].regions = {"1271011001"};
  REQUIRE(append_unsynced(*f.log, third).has_value());
  auto synced = f.log->sync();
  REQUIRE(synced.has_value());
  CHECK(*synced == Sequence{7});
  CHECK(f.log->next_sequence() == Sequence{7});
  CHECK(scan_seqs(*f.log, Sequence{0}, 100) == V{1, 2, 3, 4, 5, 6});
  CHECK(region_seqs(*f.log, "1271011001") == V{1, 2, 3, 4, 5, 6});
  // A synced append also makes the unsynced ones before it durable.
  REQUIRE(append_unsynced(*f.log, std::vector<Ev>(1)).has_value());
  REQUIRE(append(*f.log, std::vector<Ev>(1)).has_value());
  CHECK(f.log->next_sequence() == Sequence{9});
  CHECK(f.log->appended_end() == Sequence{9});
  // Nothing to sync: the same end.
  synced = f.log->sync();
  REQUIRE(synced.has_value());
  CHECK(*synced == Sequence{9});
}

TEST_CASE(
    "MemoryEventLog: a failed sync makes nothing durable and refuses appends, and the next one "
    "recovers") {
  MemoryEventLog log;
  REQUIRE(append_unsynced(log, std::vector<Ev>(2)).has_value());
  log.fail_syncs(true);
  auto failed = log.sync();
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.error().code == Errc::kIoError);
  CHECK(log.next_sequence() == Sequence{1});
  const auto refused = append_unsynced(log, std::vector<Ev>(1));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == Errc::kUnavailable);
  log.fail_syncs(false);
  auto synced = log.sync();
  REQUIRE(synced.has_value());
  CHECK(*synced == Sequence{3});
}

TEST_CASE("RocksEventLog: unsynced appends survive a reopen once synced") {
  TempDir dir;
  std::vector<Ev> evs(4);
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    REQUIRE(append_unsynced(**log, evs).has_value());
    REQUIRE((*log)->sync().has_value());
  }
  auto log = open_rocksdb_event_log(dir.str());
  REQUIRE(log.has_value());
  CHECK((*log)->next_sequence() == Sequence{5});
  CHECK((*log)->appended_end() == Sequence{5});
  CHECK(scan_seqs(**log, Sequence{1}, 100) == V{1, 2, 3, 4});
}

TEST_CASE_TEMPLATE("EventLog: scan honours from, max and an early stop", F, MemoryFactory,
                   RocksFactory) {
  F f;
  REQUIRE(append(*f.log, std::vector<Ev>(5)).has_value());
  CHECK(scan_seqs(*f.log, Sequence{3}, 10) == V{3, 4, 5});
  CHECK(scan_seqs(*f.log, Sequence{1}, 2) == V{1, 2});
  CHECK(scan_seqs(*f.log, Sequence{2}, 0).empty());
  CHECK(scan_seqs(*f.log, Sequence{6}, 10).empty());
  V seen;
  REQUIRE(f.log
              ->scan(Sequence{0}, 10,
                     [&](Sequence s, std::string_view) {
                       seen.push_back(s.value);
                       return seen.size() < 2;
                     })
              .has_value());
  CHECK(seen == V{1, 2});
}

// The region fixture: Medan (1271) has kecamatan 127101 and 127102; 3171 is in Jakarta.
std::vector<Ev> region_events() {
  std::vector<Ev> evs(5);
  evs[0].kind = 1;  // a birth in kelurahan 1271011001
  evs[0].regions = {"1271011001"};
  evs[1].kind = 3;  // a move from Medan to Jakarta: indexed under both ends
  evs[1].regions = {"1271011001", "3171011001"};
  evs[2].kind = 2;  // a death in another kecamatan of Medan
  evs[2].regions = {"1271021002"};
  evs[3].kind = 3;  // a move within one kelurahan: its two regions are the same code
  evs[3].regions = {"1271011001", "1271011001"};
  evs[4].kind = 3;  // a move between two kelurahan of one kecamatan
  evs[4].regions = {"1271011001", "1271011002"};
  return evs;
}

TEST_CASE_TEMPLATE("EventLog: the region index holds each event once under every prefix level", F,
                   MemoryFactory, RocksFactory) {
  F f;
  REQUIRE(append(*f.log, region_events()).has_value());

  SUBCASE("province") {
    CHECK(region_seqs(*f.log, "12") == V{1, 2, 3, 4, 5});
    CHECK(region_seqs(*f.log, "31") == V{2});
    CHECK(region_seqs(*f.log, "13").empty());
  }
  SUBCASE("regency or city") {
    CHECK(region_seqs(*f.log, "1271") == V{1, 2, 3, 4, 5});
    CHECK(region_seqs(*f.log, "3171") == V{2});
    CHECK(region_seqs(*f.log, "1272").empty());
  }
  SUBCASE("kecamatan") {
    CHECK(region_seqs(*f.log, "127101") == V{1, 2, 4, 5});
    CHECK(region_seqs(*f.log, "127102") == V{3});
    CHECK(region_seqs(*f.log, "317101") == V{2});
  }
  SUBCASE("kelurahan") {
    CHECK(region_seqs(*f.log, "1271011001") == V{1, 2, 4, 5});
    CHECK(region_seqs(*f.log, "1271011002") == V{5});
    CHECK(region_seqs(*f.log, "1271021002") == V{3});
    CHECK(region_seqs(*f.log, "3171011001") == V{2});
    CHECK(region_seqs(*f.log, "1271011003").empty());
  }
  SUBCASE("hits carry the payload kind") {
    std::vector<std::uint8_t> kinds;
    REQUIRE(f.log
                ->scan_region("1271", Sequence{0}, 100,
                              [&](const RegionHit& h) {
                                kinds.push_back(h.kind);
                                return true;
                              })
                .has_value());
    CHECK(kinds == std::vector<std::uint8_t>{1, 3, 2, 3, 3});
  }
}

TEST_CASE_TEMPLATE("EventLog: scan_region honours from, max and an early stop", F, MemoryFactory,
                   RocksFactory) {
  F f;
  REQUIRE(append(*f.log, region_events()).has_value());
  CHECK(region_seqs(*f.log, "127101", Sequence{3}) == V{4, 5});
  CHECK(region_seqs(*f.log, "12", Sequence{0}, 2) == V{1, 2});
  CHECK(region_seqs(*f.log, "12", Sequence{2}, 0).empty());
  CHECK(region_seqs(*f.log, "12", Sequence{6}).empty());
  // "12" and "1271" must not leak into each other's key range.
  CHECK(region_seqs(*f.log, "31", Sequence{3}).empty());
  V seen;
  REQUIRE(f.log
              ->scan_region("12", Sequence{2}, 10,
                            [&](const RegionHit& h) {
                              seen.push_back(h.seq.value);
                              return false;
                            })
              .has_value());
  CHECK(seen == V{2});
}

// Appends of every size, under a few prefixes of very different frequency, against a
// model: whatever way the log groups its index entries, every scan from every start
// must give exactly the model's sequences.
TEST_CASE_TEMPLATE("EventLog: scan_region agrees with a model across appends of every size", F,
                   MemoryFactory, RocksFactory) {
  F f;
  // Real Medan villages: one in most events, one now and then, one rare.
  const std::vector<std::string> villages = {"1271011001", "1271021002", "1271011002"};
  std::map<std::string, V> model;
  std::uint64_t seed = 20261127;
  const auto rnd = [&](std::uint64_t n) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (seed >> 33) % n;
  };
  std::uint64_t seq = 1;
  for (std::size_t size : {1, 2, 300, 1, 7, 20000, 3, 129, 1}) {
    std::vector<Ev> evs(size);
    for (std::size_t i = 0; i < size; ++i) {
      auto& e = evs[i];
      if (size > 1 && (i == 0 || i == 200 || i + 1 == size)) {
        // The rare village at gaps that need one, two and three bytes.
        e.regions = {villages[2]};
      } else {
        e.regions = {villages[rnd(10) == 0 ? 1 : 0]};
        if (rnd(10) == 0) e.regions.push_back(villages[rnd(2)]);
      }
      e.kind = static_cast<std::uint8_t>(1 + rnd(5));
      std::set<std::string> prefixes;
      for (const auto& v : e.regions) {
        for (std::size_t len : kRegionPrefixLengths) prefixes.insert(v.substr(0, len));
      }
      for (const auto& p : prefixes) model[p].push_back(seq);
      ++seq;
    }
    REQUIRE(append(*f.log, evs).has_value());
  }
  REQUIRE(model["1271011002"].size() == 14);
  for (const auto& [prefix, seqs] : model) {
    CAPTURE(prefix);
    CHECK(region_seqs(*f.log, prefix, Sequence{0}, 50000) == seqs);
    for (std::uint64_t from :
         {std::uint64_t{0}, std::uint64_t{2}, std::uint64_t{305}, std::uint64_t{306},
          std::uint64_t{900}, seqs.back(), seqs.back() + 1, seq}) {
      V want;
      for (auto s : seqs) {
        if (s >= from) want.push_back(s);
      }
      CAPTURE(from);
      CHECK(region_seqs(*f.log, prefix, Sequence{from}, 50000) == want);
      want.resize(std::min<std::size_t>(want.size(), 3));
      CHECK(region_seqs(*f.log, prefix, Sequence{from}, 3) == want);
    }
  }
}

TEST_CASE_TEMPLATE("EventLog: scan_region refuses a prefix that is not a region level", F,
                   MemoryFactory, RocksFactory) {
  F f;
  for (std::string_view bad : {"", "1", "127", "12710", "12a1", "12710110011"}) {
    auto s = f.log->scan_region(bad, Sequence{0}, 10, [](const RegionHit&) { return true; });
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::kInvalidArgument);
  }
}

TEST_CASE("MemoryEventLog: fail_appends stores nothing") {
  MemoryEventLog log;
  std::vector<Ev> evs = region_events();
  log.fail_appends(true);
  auto s = append(log, evs);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.error().code == Errc::kIoError);
  CHECK(s.error().message == "injected failure");
  CHECK(log.next_sequence() == Sequence{1});
  CHECK_FALSE(log.read(Sequence{1})->has_value());
  CHECK_FALSE(log.find_id(evs[0].id)->has_value());
  CHECK(scan_seqs(log, Sequence{0}, 100).empty());
  CHECK(region_seqs(log, "12").empty());

  log.fail_appends(false);
  REQUIRE(append(log, evs).has_value());
  CHECK(log.next_sequence() == Sequence{6});
  CHECK(**log.find_id(evs[0].id) == Sequence{1});
}

TEST_CASE("RocksEventLog: reopening recovers next_sequence and every index") {
  TempDir dir;
  std::vector<Ev> evs = region_events();
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    REQUIRE(append(**log, evs).has_value());
  }
  auto log = open_rocksdb_event_log(dir.str());
  REQUIRE_MESSAGE(log.has_value(), log.error().to_string());
  auto& l = **log;
  CHECK(l.next_sequence() == Sequence{6});
  for (std::size_t i = 0; i < evs.size(); ++i) CHECK(**l.find_id(evs[i].id) == Sequence{i + 1});
  CHECK(scan_seqs(l, Sequence{0}, 100) == V{1, 2, 3, 4, 5});
  CHECK(region_seqs(l, "127101") == V{1, 2, 4, 5});
  CHECK(region_seqs(l, "3171011001") == V{2});

  // Appends continue where the log left off.
  std::vector<Ev> more(1);
  more[0].regions = {"3171011001"};
  REQUIRE(append(l, more).has_value());
  CHECK(l.next_sequence() == Sequence{7});
  CHECK(region_seqs(l, "31") == V{2, 6});
}

TEST_CASE("RocksEventLog: a second open of an open directory fails with kBusy") {
  TempDir dir;
  auto first = open_rocksdb_event_log(dir.str());
  REQUIRE(first.has_value());
  auto second = open_rocksdb_event_log(dir.str());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error().code == Errc::kBusy);
  CHECK(second.error().message.find("in use by another process") != std::string::npos);
  // The lock goes with the first handle.
  first.value().reset();
  auto third = open_rocksdb_event_log(dir.str());
  CHECK_MESSAGE(third.has_value(), third.error().to_string());
}

TEST_CASE("RocksEventLog: a read-only open of a closed log reads everything") {
  TempDir dir;
  std::vector<Ev> evs = region_events();
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    REQUIRE(append(**log, evs).has_value());
  }
  auto ro = open_rocksdb_event_log_read_only(dir.str());
  REQUIRE_MESSAGE(ro.has_value(), ro.error().to_string());
  auto& l = **ro;
  CHECK(l.next_sequence() == Sequence{6});
  CHECK(**l.find_id(evs[3].id) == Sequence{4});
  CHECK(scan_seqs(l, Sequence{2}, 2) == V{2, 3});
  CHECK(region_seqs(l, "127102") == V{3});

  SUBCASE("and refuses to append") {
    std::vector<Ev> more(1);
    auto s = append(l, more);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::kInvalidArgument);
  }
  SUBCASE("while a second reader opens it too") {
    auto other = open_rocksdb_event_log_read_only(dir.str());
    CHECK(other.has_value());
  }
}

TEST_CASE("RocksEventLog: a read-only open of a missing directory fails with kNotFound") {
  TempDir dir;
  auto ro = open_rocksdb_event_log_read_only((dir.path() / "nothing").string());
  REQUIRE_FALSE(ro.has_value());
  CHECK(ro.error().code == Errc::kNotFound);
}

TEST_CASE("RocksEventLog: a newer format version is refused") {
  TempDir dir;
  { REQUIRE(open_rocksdb_event_log(dir.str()).has_value()); }
  raw_put(dir.str(), "default", "format_version", std::string("\0\0\0\3", 4));
  SUBCASE("read-write") {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE_FALSE(log.has_value());
    CHECK(log.error().code == Errc::kInvalidArgument);
    CHECK(log.error().message.find("format version 3 is newer") != std::string::npos);
  }
  SUBCASE("read-only") {
    auto log = open_rocksdb_event_log_read_only(dir.str());
    REQUIRE_FALSE(log.has_value());
    CHECK(log.error().code == Errc::kInvalidArgument);
  }
}

// Format 1 wrote one region index entry per event (key: prefix and sequence, value: the
// kind byte); format 2 writes one per prefix per append. A log of format 1 is read as it
// is and continues in format 2.
TEST_CASE("RocksEventLog: a format 1 region index is read and extended") {
  TempDir dir;
  std::vector<Ev> evs = region_events();
  { REQUIRE(open_rocksdb_event_log(dir.str()).has_value()); }
  {
    // What format 1 stored for region_events(), written behind the store's back in one
    // raw session: opened once per key, TSan reported a race between RocksDB's threads
    // (docs/RELIABILITY.md, "Sanitizers").
    std::vector<RawPut> puts{{"default", "format_version", std::string("\0\0\0\1", 4)}};
    for (std::uint64_t seq = 1; seq <= evs.size(); ++seq) {
      const auto& e = evs[seq - 1];
      puts.push_back({"log", be64(seq), e.body});
      puts.push_back({"ids", std::string(e.id.as_key()), be64(seq)});
      std::set<std::string> prefixes;
      for (const auto& v : e.regions) {
        for (std::size_t len : kRegionPrefixLengths) prefixes.insert(v.substr(0, len));
      }
      for (const auto& p : prefixes) {
        puts.push_back({"regions", std::string(1, static_cast<char>(p.size())) + p + be64(seq),
                        std::string(1, static_cast<char>(e.kind))});
      }
    }
    raw_put(dir.str(), puts);
  }
  const auto format_of = [&] {
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.str(), &names).ok());
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    REQUIRE(
        rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir.str(), descs, &handles, &db).ok());
    std::string v;
    CHECK(db->Get(rocksdb::ReadOptions(), handles[0], "format_version", &v).ok());
    for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
    delete db;
    return v;
  };

  {
    auto ro = open_rocksdb_event_log_read_only(dir.str());
    REQUIRE_MESSAGE(ro.has_value(), ro.error().to_string());
    CHECK(region_seqs(**ro, "127101") == V{1, 2, 4, 5});
    CHECK(region_seqs(**ro, "127101", Sequence{3}) == V{4, 5});
  }
  CHECK(format_of() == std::string("\0\0\0\1", 4));  // a read-only open changes nothing

  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE_MESSAGE(log.has_value(), log.error().to_string());
    CHECK((*log)->next_sequence() == Sequence{6});
    CHECK(**(*log)->find_id(evs[2].id) == Sequence{3});
    REQUIRE(append(**log, region_events()).has_value());
    CHECK(region_seqs(**log, "1271") == V{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    CHECK(region_seqs(**log, "127101") == V{1, 2, 4, 5, 6, 7, 9, 10});
    CHECK(region_seqs(**log, "127101", Sequence{5}) == V{5, 6, 7, 9, 10});
    CHECK(region_seqs(**log, "127101", Sequence{8}, 1) == V{9});
    CHECK(region_seqs(**log, "1271021002") == V{3, 8});
  }
  // From now on format 1 code must refuse the directory: it cannot read runs.
  CHECK(format_of() == std::string("\0\0\0\2", 4));
}

TEST_CASE("RocksEventLog: a directory holding an outbox is not an event log") {
  TempDir dir;
  { REQUIRE(Outbox::open(dir.str()).has_value()); }
  auto log = open_rocksdb_event_log(dir.str());
  REQUIRE_FALSE(log.has_value());
  CHECK(log.error().code == Errc::kInvalidArgument);
  CHECK(log.error().message.find("holds a kolabus outbox") != std::string::npos);
}

TEST_CASE("RocksEventLog: corrupted entries are reported as kCorruption") {
  TempDir dir;
  // Ten events, so that the region entries written below (at sequence 9) are inside
  // the log: a reader ignores what lies beyond next_sequence().
  std::vector<Ev> evs(10);
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    REQUIRE(append(**log, evs).has_value());
  }
  SUBCASE("an id entry with a truncated sequence") {
    raw_put(dir.str(), "ids", std::string(evs[1].id.as_key()), be64(2).substr(1));
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    CHECK(**(*log)->find_id(evs[0].id) == Sequence{1});
    auto id = (*log)->find_id(evs[1].id);
    REQUIRE_FALSE(id.has_value());
    CHECK(id.error().code == Errc::kCorruption);
  }
  SUBCASE("a log key that is not 8 bytes fails the open") {
    raw_put(dir.str(), "log", std::string(9, '\xff'), "junk");
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE_FALSE(log.has_value());
    CHECK(log.error().code == Errc::kCorruption);
  }
  SUBCASE("a region run cut off inside a distance") {
    raw_put(dir.str(), "regions", std::string("\x02") + "12" + be64(9), "\x01\x85");
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    V seen;
    auto s = (*log)->scan_region("12", Sequence{0}, 10, [&](const RegionHit& h) {
      seen.push_back(h.seq.value);
      return true;
    });
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::kCorruption);
    CHECK(seen == V{9});
  }
  SUBCASE("a region entry without its kind") {
    raw_put(dir.str(), "regions", std::string("\x02") + "12" + be64(9), "");
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    auto s = (*log)->scan_region("12", Sequence{0}, 10, [](const RegionHit&) { return true; });
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::kCorruption);
  }
}

}  // namespace
}  // namespace kolabus::storage

// ---- the audit log beside the event log ----

namespace kolabus::storage {
namespace {

struct AuditRec {
  std::uint64_t index;
  std::string bytes;
  AuditHash hash{};
};

std::vector<AuditRec> audit_recs(std::uint64_t first, int n) {
  std::vector<AuditRec> out;
  for (int i = 0; i < n; ++i) {
    AuditRec r{first + i, "record " + std::to_string(first + i), {}};
    r.hash[0] = static_cast<std::uint8_t>(first + i);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<AuditEntry> entries_of(const std::vector<AuditRec>& recs) {
  std::vector<AuditEntry> out;
  for (const auto& r : recs) {
    out.push_back({r.index,
                   std::span(reinterpret_cast<const std::uint8_t*>(r.bytes.data()), r.bytes.size()),
                   r.hash});
  }
  return out;
}

std::vector<std::pair<std::uint64_t, std::string>> audit_contents(const AuditLog& log,
                                                                  std::uint64_t from = 1) {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  REQUIRE(log.scan(from, 1000,
                   [&](std::uint64_t i, std::string_view b) {
                     out.emplace_back(i, std::string(b));
                     return true;
                   })
              .has_value());
  return out;
}

TEST_CASE_TEMPLATE("AuditLog: records append in order, the head follows, scans read them back", F,
                   MemoryFactory, RocksFactory) {
  F f;
  auto& audit = f.log->audit();
  CHECK(audit.head() == AuditHead{});
  CHECK(audit_contents(audit).empty());

  const auto first = audit_recs(1, 3);
  REQUIRE(audit.append(entries_of(first), false).has_value());
  CHECK(audit.head().index == 3);
  CHECK(audit.head().hash == first[2].hash);

  // A group commit: events and their audit records in one append.
  const auto second = audit_recs(4, 2);
  std::vector<Ev> evs(1);
  evs[0].regions = {"1271011001"};
  std::vector<AppendRecord> recs{{Sequence{1}, evs[0].id, 1, evs[0].regions,
                                  std::span(reinterpret_cast<const std::uint8_t*>("x"), 1)}};
  REQUIRE(f.log->append(recs, entries_of(second)).has_value());
  CHECK(f.log->next_sequence() == Sequence{2});
  CHECK(audit.head().index == 5);
  CHECK(audit.head().hash == second[1].hash);

  const auto all = audit_contents(audit);
  REQUIRE(all.size() == 5);
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].first == i + 1);
    CHECK(all[i].second == "record " + std::to_string(i + 1));
  }
  CHECK(audit_contents(audit, 4).size() == 2);
  int seen = 0;
  REQUIRE(audit.scan(1, 1000, [&](std::uint64_t, std::string_view) { return ++seen < 2; }));
  CHECK(seen == 2);
}

TEST_CASE("MemoryEventLog: a failed append stores neither the events nor their audit records") {
  MemoryEventLog log;
  const auto recs = audit_recs(1, 2);
  std::vector<Ev> evs(1);
  evs[0].regions = {"1271011001"};
  std::vector<AppendRecord> appended{{Sequence{1}, evs[0].id, 1, evs[0].regions,
                                      std::span(reinterpret_cast<const std::uint8_t*>("x"), 1)}};
  log.fail_appends(true);
  CHECK_FALSE(log.append(appended, entries_of(recs)).has_value());
  CHECK_FALSE(log.audit().append(entries_of(recs), false).has_value());
  CHECK(log.audit().head() == AuditHead{});
  CHECK(audit_contents(log.audit()).empty());
  log.fail_appends(false);
  REQUIRE(log.append(appended, entries_of(recs)).has_value());
  CHECK(log.audit().head().index == 2);
}

TEST_CASE("RocksEventLog: the audit head and records survive a reopen, and read-only opens") {
  TempDir dir;
  const auto recs = audit_recs(1, 4);
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    REQUIRE((*log)->audit().append(entries_of(recs), true).has_value());
  }
  {
    auto log = open_rocksdb_event_log(dir.str());
    REQUIRE(log.has_value());
    CHECK((*log)->audit().head().index == 4);
    CHECK((*log)->audit().head().hash == recs[3].hash);
    REQUIRE((*log)->audit().append(entries_of(audit_recs(5, 1)), false).has_value());
  }
  auto ro = open_rocksdb_event_log_read_only(dir.str());
  REQUIRE(ro.has_value());
  CHECK((*ro)->audit().head().index == 5);
  CHECK(audit_contents((*ro)->audit()).size() == 5);
  CHECK_FALSE((*ro)->audit().append(entries_of(audit_recs(6, 1)), false).has_value());
}

}  // namespace
}  // namespace kolabus::storage
