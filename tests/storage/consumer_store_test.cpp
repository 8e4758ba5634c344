// The ConsumerStore contract suite, run on both implementations, then the parts only
// the RocksDB store has: durability, sharing its database with the event log, read-only
// opens, databases from before the consumer store, and corrupt values.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include "temp_dir.h"
#include <storage/consumer_store.h>
#include <storage/memory_consumer_store.h>
#include <storage/rocksdb_broker_store.h>
#include <storage/rocksdb_event_log.h>

namespace kolabus::storage {
namespace {

using test::TempDir;

BrokerStore open_store(const TempDir& dir) {
  auto r = open_rocksdb_broker_store(dir.str());
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return std::move(*r);
}

struct MemoryStoreFactory {
  std::unique_ptr<ConsumerStore> store = std::make_unique<MemoryConsumerStore>();
};

struct RocksStoreFactory {
  TempDir dir;
  BrokerStore broker = open_store(dir);
  std::unique_ptr<ConsumerStore>& store = broker.consumers;
};

}  // namespace
}  // namespace kolabus::storage

// Short names for ctest: "...<memory>", "...<rocksdb>".
TYPE_TO_STRING_AS("memory", kolabus::storage::MemoryStoreFactory);
TYPE_TO_STRING_AS("rocksdb", kolabus::storage::RocksStoreFactory);

namespace kolabus::storage {
namespace {

ConsumerState state(std::string owner, std::string name, std::uint64_t floor,
                    std::vector<std::uint64_t> acked = {}, std::string config = "cfg") {
  return ConsumerState{
      {std::move(owner), std::move(name)}, std::move(config), floor, std::move(acked)};
}

DeadLetterEntry dead(const ConsumerKey& key, std::uint64_t seq, std::string reason = "rejected") {
  return DeadLetterEntry{key, seq, 5, std::move(reason),
                         1'700'000'000'000 + static_cast<TimeMs>(seq)};
}

ConsumerWrite put_write(ConsumerState c) {
  ConsumerWrite w;
  w.put.push_back(std::move(c));
  return w;
}

ConsumerWrite erase_write(ConsumerKey k) {
  ConsumerWrite w;
  w.erase.push_back(std::move(k));
  return w;
}

void apply(ConsumerStore& s, const ConsumerWrite& w) {
  auto r = s.apply(w);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
}

std::vector<ConsumerState> load(const ConsumerStore& s) {
  auto r = s.load_all();
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return *r;
}

std::vector<std::uint64_t> dead_seqs(const ConsumerStore& s, const ConsumerKey& k,
                                     std::uint64_t from = 0, std::size_t max = 1000) {
  auto r = s.dead_letters(k, from, max);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  std::vector<std::uint64_t> out;
  for (const auto& d : *r) {
    CHECK(d.key == k);
    out.push_back(d.sequence);
  }
  return out;
}

std::uint64_t count(const ConsumerStore& s, const ConsumerKey& k) {
  auto r = s.count_dead_letters(k);
  REQUIRE_MESSAGE(r.has_value(), r.error().to_string());
  return *r;
}

void check_equal(const ConsumerState& a, const ConsumerState& b) {
  CHECK(a.key == b.key);
  CHECK(a.config == b.config);
  CHECK(a.ack_floor == b.ack_floor);
  CHECK(a.acked_above == b.acked_above);
}

using V = std::vector<std::uint64_t>;

const ConsumerKey kDukcapil{"dukcapil", "births-medan"};
const ConsumerKey kBpjs{"bpjs", "deaths"};

TEST_CASE_TEMPLATE("ConsumerStore: an empty store holds nothing", F, MemoryStoreFactory,
                   RocksStoreFactory) {
  F f;
  CHECK(load(*f.store).empty());
  CHECK(dead_seqs(*f.store, kDukcapil).empty());
  CHECK(count(*f.store, kDukcapil) == 0);
  apply(*f.store, ConsumerWrite{});  // an empty write is fine
  CHECK(load(*f.store).empty());
}

TEST_CASE_TEMPLATE("ConsumerStore: apply and load_all round-trip states in key order", F,
                   MemoryStoreFactory, RocksStoreFactory) {
  F f;
  // Deltas of every varint width, up to the largest sequence there is.
  const auto big = state("dukcapil", "births-medan", 1'000'000,
                         {1'000'001, 1'000'128, 1'016'512, 5'000'000'000ULL, UINT64_MAX}, "");
  const auto small = state("bpjs", "deaths", 0, {}, std::string("\0\1binary\xff", 10));
  const auto other = state("bpjs", "deaths-aceh", 42, {44});
  ConsumerWrite w;
  w.put = {big, small, other};
  apply(*f.store, w);
  auto all = load(*f.store);
  REQUIRE(all.size() == 3);
  // (owner, name) order: bpjs/deaths < bpjs/deaths-aceh < dukcapil/...
  check_equal(all[0], small);
  check_equal(all[1], other);
  check_equal(all[2], big);
}

TEST_CASE_TEMPLATE("ConsumerStore: put replaces a consumer's whole state", F, MemoryStoreFactory,
                   RocksStoreFactory) {
  F f;
  ConsumerWrite w;
  w.put = {state("dukcapil", "births-medan", 10, {12, 15})};
  apply(*f.store, w);
  w.put = {state("dukcapil", "births-medan", 15, {}, "cfg2")};
  apply(*f.store, w);
  auto all = load(*f.store);
  REQUIRE(all.size() == 1);
  check_equal(all[0], state("dukcapil", "births-medan", 15, {}, "cfg2"));
}

TEST_CASE_TEMPLATE("ConsumerStore: dead letters page by from and max, per consumer", F,
                   MemoryStoreFactory, RocksStoreFactory) {
  F f;
  ConsumerWrite w;
  w.put = {state(kDukcapil.owner, kDukcapil.name, 0), state(kBpjs.owner, kBpjs.name, 0)};
  w.dead_letters = {dead(kDukcapil, 7), dead(kDukcapil, 3, "schema"), dead(kBpjs, 5),
                    dead(kDukcapil, 300), dead(kDukcapil, 12)};
  apply(*f.store, w);
  CHECK(dead_seqs(*f.store, kDukcapil) == V{3, 7, 12, 300});
  CHECK(dead_seqs(*f.store, kBpjs) == V{5});
  CHECK(dead_seqs(*f.store, kDukcapil, 7) == V{7, 12, 300});
  CHECK(dead_seqs(*f.store, kDukcapil, 8, 2) == V{12, 300});
  CHECK(dead_seqs(*f.store, kDukcapil, 0, 1) == V{3});
  CHECK(dead_seqs(*f.store, kDukcapil, 0, 0).empty());
  CHECK(dead_seqs(*f.store, kDukcapil, 301).empty());
  CHECK(count(*f.store, kDukcapil) == 4);
  CHECK(count(*f.store, kBpjs) == 1);
  // A consumer whose name extends another's shares none of its dead letters.
  CHECK(count(*f.store, ConsumerKey{"dukcapil", "births-medan-2"}) == 0);
  CHECK(count(*f.store, ConsumerKey{"dukcapil", "births"}) == 0);

  auto entries = f.store->dead_letters(kDukcapil, 3, 1);
  REQUIRE(entries.has_value());
  REQUIRE(entries->size() == 1);
  const auto& d = entries->front();
  CHECK(d.sequence == 3);
  CHECK(d.attempts == 5);
  CHECK(d.reason == "schema");
  CHECK(d.dead_at == 1'700'000'000'003);

  SUBCASE("adding one again replaces it") {
    ConsumerWrite again;
    again.dead_letters = {dead(kDukcapil, 3, "redriven and failed again")};
    apply(*f.store, again);
    CHECK(count(*f.store, kDukcapil) == 4);
    CHECK((*f.store->dead_letters(kDukcapil, 3, 1))[0].reason == "redriven and failed again");
  }
  SUBCASE("dead_letters_removed drops only those, absent ones are no-ops") {
    ConsumerWrite rm;
    rm.dead_letters_removed = {{kDukcapil, 7}, {kDukcapil, 300}, {kDukcapil, 999}, {kBpjs, 4}};
    apply(*f.store, rm);
    CHECK(dead_seqs(*f.store, kDukcapil) == V{3, 12});
    CHECK(dead_seqs(*f.store, kBpjs) == V{5});
    CHECK(count(*f.store, kDukcapil) == 2);
  }
}

TEST_CASE_TEMPLATE("ConsumerStore: erase removes the consumer and its dead letters only", F,
                   MemoryStoreFactory, RocksStoreFactory) {
  F f;
  const ConsumerKey longer{"dukcapil", "births-medan-2"};
  ConsumerWrite w;
  w.put = {state(kDukcapil.owner, kDukcapil.name, 0), state(kBpjs.owner, kBpjs.name, 0),
           state(longer.owner, longer.name, 0)};
  w.dead_letters = {dead(kDukcapil, 1), dead(kDukcapil, UINT64_MAX), dead(kBpjs, 2),
                    dead(longer, 3)};
  apply(*f.store, w);

  SUBCASE("erase") {
    ConsumerWrite e;
    e.erase = {kDukcapil};
    apply(*f.store, e);
    auto all = load(*f.store);
    REQUIRE(all.size() == 2);
    CHECK(all[0].key == kBpjs);
    CHECK(all[1].key == longer);
    CHECK(count(*f.store, kDukcapil) == 0);
    CHECK(dead_seqs(*f.store, kBpjs) == V{2});
    CHECK(dead_seqs(*f.store, longer) == V{3});
  }
  SUBCASE("erase then put in one write re-creates it without dead letters") {
    ConsumerWrite e;
    e.erase = {kDukcapil};
    e.put = {state(kDukcapil.owner, kDukcapil.name, 0, {}, "new")};
    e.dead_letters = {dead(kDukcapil, 9)};
    apply(*f.store, e);
    auto all = load(*f.store);
    REQUIRE(all.size() == 3);
    CHECK(all[1].key == kDukcapil);
    CHECK(all[1].config == "new");
    CHECK(dead_seqs(*f.store, kDukcapil) == V{9});
  }
  SUBCASE("erasing an unknown consumer is a no-op") {
    ConsumerWrite e;
    e.erase = {ConsumerKey{"nobody", "nothing"}};
    apply(*f.store, e);
    CHECK(load(*f.store).size() == 3);
    CHECK(count(*f.store, kDukcapil) == 2);
  }
}

TEST_CASE("MemoryConsumerStore: fail_writes stores nothing") {
  MemoryConsumerStore store;
  ConsumerWrite w;
  w.put = {state(kDukcapil.owner, kDukcapil.name, 3)};
  w.dead_letters = {dead(kDukcapil, 2)};
  store.fail_writes(true);
  auto s = store.apply(w);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.error().code == Errc::kIoError);
  CHECK(s.error().message == "injected failure");
  CHECK(load(store).empty());
  CHECK(count(store, kDukcapil) == 0);

  store.fail_writes(false);
  apply(store, w);
  CHECK(load(store).size() == 1);
  CHECK(count(store, kDukcapil) == 1);
}

// Writes one key into a column family behind the store's back; lists the families.
std::vector<std::string> raw_put(const std::string& dir, const std::string& cf,
                                 const std::string& key, const std::string& value) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, descs, &handles, &db).ok());
  for (auto* h : handles) {
    if (h->GetName() == cf) CHECK(db->Put(rocksdb::WriteOptions(), h, key, value).ok());
  }
  for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
  CHECK(db->Close().ok());
  delete db;
  return names;
}

std::vector<std::string> column_families(const std::string& dir) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::sort(names.begin(), names.end());
  return names;
}

std::string be64(std::uint64_t v) {
  std::string s;
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// Appends `n` events with no regions to `log`; returns their ids.
std::vector<EventId> append_events(EventLog& log, int n) {
  std::vector<EventId> ids;
  std::vector<AppendRecord> recs;
  const std::string body = "event";
  for (int i = 0; i < n; ++i) {
    ids.push_back(new_uuid_v7());
    recs.push_back(
        AppendRecord{Sequence{log.next_sequence().value + static_cast<std::uint64_t>(i)},
                     ids.back(),
                     1,
                     {},
                     std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size())});
  }
  auto s = log.append(recs);
  REQUIRE_MESSAGE(s.has_value(), s.error().to_string());
  return ids;
}

TEST_CASE("RocksConsumerStore: state and dead letters survive a reopen") {
  TempDir dir;
  const auto c = state(kDukcapil.owner, kDukcapil.name, 99, {101, 140});
  {
    auto b = open_store(dir);
    ConsumerWrite w;
    w.put = {c};
    w.dead_letters = {dead(kDukcapil, 100)};
    apply(*b.consumers, w);
  }
  auto b = open_store(dir);
  auto all = load(*b.consumers);
  REQUIRE(all.size() == 1);
  check_equal(all[0], c);
  CHECK(dead_seqs(*b.consumers, kDukcapil) == V{100});
}

TEST_CASE("RocksConsumerStore: shares its directory with the event log") {
  TempDir dir;
  std::vector<EventId> ids;
  {
    auto b = open_store(dir);
    ids = append_events(*b.log, 3);
    ConsumerWrite w;
    w.put = {state(kDukcapil.owner, kDukcapil.name, 2)};
    w.dead_letters = {dead(kDukcapil, 1)};
    apply(*b.consumers, w);
    ids.push_back(append_events(*b.log, 1)[0]);
    // The database stays open (and locked) until both halves are gone, in either order.
    b.log.reset();
    auto second = open_rocksdb_broker_store(dir.str());
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().code == Errc::kBusy);
    apply(*b.consumers, put_write(state(kBpjs.owner, kBpjs.name, 0)));
  }
  {
    auto b = open_store(dir);
    CHECK(b.log->next_sequence() == Sequence{5});
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(**b.log->find_id(ids[i]) == Sequence{i + 1});
    }
    CHECK(load(*b.consumers).size() == 2);
    CHECK(dead_seqs(*b.consumers, kDukcapil) == V{1});
    b.consumers.reset();
    CHECK(b.log->read(Sequence{1})->has_value());
  }
  // The event log alone opens the same database.
  auto log = open_rocksdb_event_log(dir.str());
  REQUIRE_MESSAGE(log.has_value(), log.error().to_string());
  CHECK((*log)->next_sequence() == Sequence{5});
}

TEST_CASE("RocksConsumerStore: a read-only open reads everything and writes nothing") {
  TempDir dir;
  {
    auto b = open_store(dir);
    append_events(*b.log, 2);
    ConsumerWrite w;
    w.put = {state(kDukcapil.owner, kDukcapil.name, 1, {2})};
    w.dead_letters = {dead(kDukcapil, 1)};
    apply(*b.consumers, w);
  }
  auto ro = open_rocksdb_broker_store_read_only(dir.str());
  REQUIRE_MESSAGE(ro.has_value(), ro.error().to_string());
  CHECK(ro->log->next_sequence() == Sequence{3});
  auto all = load(*ro->consumers);
  REQUIRE(all.size() == 1);
  CHECK(all[0].acked_above == V{2});
  CHECK(count(*ro->consumers, kDukcapil) == 1);
  auto s = ro->consumers->apply(erase_write(kDukcapil));
  REQUIRE_FALSE(s.has_value());
  CHECK(s.error().code == Errc::kInvalidArgument);
  CHECK(load(*ro->consumers).size() == 1);
  // A second reader may open it too.
  CHECK(open_rocksdb_broker_store_read_only(dir.str()).has_value());
}

TEST_CASE("RocksConsumerStore: an event log from before consumers gains their column families") {
  TempDir dir;
  // What the event log of format 1 wrote before the consumer store existed.
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(o, dir.str(), &db).ok());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    REQUIRE(db->CreateColumnFamilies(rocksdb::ColumnFamilyOptions(), {"log", "ids", "regions"},
                                     &handles)
                .ok());
    const EventId id = new_uuid_v7();
    CHECK(db->Put(rocksdb::WriteOptions(), "store", "event_log").ok());
    CHECK(db->Put(rocksdb::WriteOptions(), "format_version", std::string("\0\0\0\1", 4)).ok());
    CHECK(db->Put(rocksdb::WriteOptions(), handles[0], be64(1), "old event").ok());
    CHECK(db->Put(rocksdb::WriteOptions(), handles[1], std::string(id.as_key()), be64(1)).ok());
    for (auto* h : handles) CHECK(db->DestroyColumnFamilyHandle(h).ok());
    CHECK(db->Close().ok());
    delete db;
  }
  const std::vector<std::string> old_cfs = {"default", "ids", "log", "regions"};
  REQUIRE(column_families(dir.str()) == old_cfs);

  SUBCASE("read-only opens it as is, with an empty consumer store") {
    auto ro = open_rocksdb_broker_store_read_only(dir.str());
    REQUIRE_MESSAGE(ro.has_value(), ro.error().to_string());
    CHECK(ro->log->next_sequence() == Sequence{2});
    CHECK(load(*ro->consumers).empty());
    CHECK(dead_seqs(*ro->consumers, kDukcapil).empty());
    CHECK(count(*ro->consumers, kDukcapil) == 0);
    CHECK(open_rocksdb_event_log_read_only(dir.str()).has_value());
    CHECK(column_families(dir.str()) == old_cfs);
  }
  SUBCASE("read-write creates them") {
    {
      auto b = open_store(dir);
      CHECK(b.log->next_sequence() == Sequence{2});
      CHECK(**b.log->read(Sequence{1}) == "old event");
      apply(*b.consumers, put_write(state(kBpjs.owner, kBpjs.name, 1)));
    }
    CHECK(column_families(dir.str()) == std::vector<std::string>{"audit", "consumers",
                                                                 "dead_letters", "default", "ids",
                                                                 "log", "regions"});
    auto ro = open_rocksdb_broker_store_read_only(dir.str());
    REQUIRE_MESSAGE(ro.has_value(), ro.error().to_string());
    CHECK(load(*ro->consumers).size() == 1);
  }
  SUBCASE("open_rocksdb_event_log creates them too") {
    { REQUIRE(open_rocksdb_event_log(dir.str()).has_value()); }
    CHECK(column_families(dir.str()).size() == 7);
  }
}

TEST_CASE("RocksConsumerStore: corrupt values are reported as kCorruption") {
  TempDir dir;
  { open_store(dir); }
  const std::string key = kDukcapil.owner + std::string(1, '\0') + kDukcapil.name;
  // A valid state: version 1, floor 5, no config, two deltas (1 and 2).
  const std::string valid = std::string("\1", 1) + be64(5) + std::string("\0\0\0\0", 4) +
                            std::string("\0\0\0\2", 4) + "\1\2";

  SUBCASE("the valid value decodes (the encoding is what README.md says)") {
    raw_put(dir.str(), "consumers", key, valid);
    auto b = open_store(dir);
    auto all = load(*b.consumers);
    REQUIRE(all.size() == 1);
    check_equal(all[0], state(kDukcapil.owner, kDukcapil.name, 5, {6, 8}, ""));
  }
  struct Case {
    const char* what;
    std::string key;
    std::string value;
  };
  const Case cases[] = {
      {"unknown encoding version", key, std::string("\2") + valid.substr(1)},
      {"truncated", key, valid.substr(0, 10)},
      {"trailing bytes", key, valid + "x"},
      {"a zero delta", key, valid.substr(0, valid.size() - 1) + std::string(1, '\0')},
      {"a count beyond the value", key, valid.substr(0, 13) + std::string("\xff\xff\xff\xff", 4)},
      {"a varint that never ends", key, valid.substr(0, valid.size() - 2) + "\x81\x81"},
      {"a key without its separator", "dukcapilbirths", valid},
  };
  for (const auto& c : cases) {
    SUBCASE(c.what) {
      raw_put(dir.str(), "consumers", c.key, c.value);
      auto b = open_store(dir);
      auto all = b.consumers->load_all();
      REQUIRE_FALSE(all.has_value());
      CHECK(all.error().code == Errc::kCorruption);
    }
  }
  SUBCASE("a truncated dead letter") {
    raw_put(dir.str(), "dead_letters", key + std::string(1, '\0') + be64(4), "\1\0\0");
    auto b = open_store(dir);
    auto d = b.consumers->dead_letters(kDukcapil, 0, 10);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().code == Errc::kCorruption);
    // Counting does not decode the values.
    CHECK(count(*b.consumers, kDukcapil) == 1);
  }
}

}  // namespace
}  // namespace kolabus::storage
