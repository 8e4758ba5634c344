// The broker's database on a disk that fills up (NoSpaceFs, tests/support): a failed
// write stores nothing and reports an error, every write is refused until
// resume_writes() succeeds, which it does only once there is space again; then writes
// go on and nothing written before or after is lost, across a reopen. The adapters'
// outbox and inbox the same, except that they resume by themselves, on a later write.
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "no_space_fs.h"
#include "temp_dir.h"
#include <storage/inbox.h>
#include <storage/outbox.h>
#include <storage/rocksdb_broker_store.h>

namespace kolabus::storage {
namespace {

struct Ev {
  EventId id = new_uuid_v7();
  std::vector<std::string> regions{"1271011001"};
  std::string body;
};

std::vector<Ev> events(std::size_t n, char fill, std::size_t bytes = 200) {
  std::vector<Ev> out(n);
  for (auto& e : out) e.body.assign(bytes, fill);
  return out;
}

// The records of `evs`, numbered from the log's appended end; they borrow from `evs`.
std::vector<AppendRecord> records_of(const EventLog& log, const std::vector<Ev>& evs) {
  std::vector<AppendRecord> recs;
  std::uint64_t seq = log.appended_end().value;
  for (const auto& e : evs) {
    recs.push_back(AppendRecord{
        Sequence{seq++}, e.id, 1, e.regions,
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

ConsumerWrite position(std::uint64_t floor) {
  ConsumerWrite w;
  w.put.push_back(ConsumerState{{"dinkes", "births"}, "cfg", floor, {}});
  return w;
}

BrokerStore open(const std::string& dir, std::shared_ptr<rocksdb::Env> env = nullptr) {
  RocksOptions o;
  o.env = std::move(env);
  auto r = open_rocksdb_broker_store(dir, o);
  if (!r) FAIL(r.error().to_string());
  return std::move(*r);
}

std::size_t scan_count(const EventLog& log) {
  std::size_t n = 0;
  auto s = log.scan(Sequence{1}, 1 << 20, [&](Sequence, std::string_view) {
    ++n;
    return true;
  });
  REQUIRE(s.has_value());
  return n;
}

// What a reopened store holds: one char per sequence (the record's fill byte).
std::string contents(const std::string& dir) {
  auto store = open(dir);
  std::string out;
  auto s = store.log->scan(Sequence{1}, 1 << 20, [&](Sequence, std::string_view v) {
    out.push_back(v.empty() ? '?' : v[0]);
    return true;
  });
  REQUIRE(s.has_value());
  return out;
}

TEST_CASE("BrokerStore: a full disk refuses writes until resumed with space, and loses nothing") {
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  {
    auto store = open(dir.str(), disk.env);
    REQUIRE(append(*store.log, events(10, 'a')).has_value());
    REQUIRE(store.consumers->apply(position(5)).has_value());

    std::int64_t budget = 0;
    SUBCASE("full at once") { budget = 0; }
    SUBCASE("full in the middle of a write") { budget = 700; }
    disk.fs->fill(budget);
    const auto failed = append(*store.log, events(10, 'x'));
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == Errc::kIoError);
    CHECK(failed.error().message.find("no space") != std::string::npos);
    CHECK(store.log->next_sequence() == Sequence{11});
    CHECK(disk.fs->failures() > 0);

    // Every write is refused now, and resuming fails while the disk is full; reads go on.
    CHECK_FALSE(append(*store.log, events(1, 'y')).has_value());
    CHECK_FALSE(store.consumers->apply(position(8)).has_value());
    CHECK_FALSE(store.resume_writes().has_value());
    CHECK_FALSE(store.resume_writes().has_value());
    auto read = store.log->read(Sequence{10});
    REQUIRE(read.has_value());
    REQUIRE(read->has_value());
    CHECK((**read)[0] == 'a');
    CHECK_FALSE(store.log->read(Sequence{11})->has_value());

    // Space again: one resume, and writes are accepted with no restart.
    disk.fs->make_room();
    const auto resumed = store.resume_writes();
    if (!resumed) FAIL(resumed.error().to_string());
    REQUIRE(append(*store.log, events(5, 'b')).has_value());
    REQUIRE(store.consumers->apply(position(12)).has_value());
    CHECK(store.log->next_sequence() == Sequence{16});
    CHECK(store.resume_writes().has_value());  // nothing to resume: OK
  }
  // Reopened on the ordinary file system: exactly what was reported stored.
  CHECK(contents(dir.str()) == std::string(10, 'a') + std::string(5, 'b'));
  auto store = open(dir.str());
  auto all = store.consumers->load_all();
  REQUIRE(all.has_value());
  REQUIRE(all->size() == 1);
  CHECK((*all)[0].ack_floor == 12);
}

// The pipelined group commit's failure: events written, then the fsync that should
// make them durable fails. Their fate is unknown to the broker (it NACKs them "may or
// may not be stored") and the log refuses writes. RocksDB 7.8.3 cannot resume after a
// failed fsync of its write-ahead log (the log file's writer keeps its error: "Seen
// error"), so neither can the store; a later RocksDB may, and then a sync writes the
// records to table files. Either way a reopen (a restart of the broker) finds them:
// what reached the write-ahead log is replayed.
TEST_CASE(
    "BrokerStore: a failed sync of unsynced appends refuses writes, and a reopen keeps them") {
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  std::string expected = "aaauuuu";
  {
    auto store = open(dir.str(), disk.env);
    REQUIRE(append(*store.log, events(3, 'a')).has_value());
    REQUIRE(append_unsynced(*store.log, events(4, 'u')).has_value());
    disk.fs->fill(0);
    const auto failed = store.log->sync();
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().message.find("no space") != std::string::npos);
    CHECK(store.log->next_sequence() == Sequence{4});
    CHECK(store.log->appended_end() == Sequence{8});
    CHECK(scan_count(*store.log) == 3);
    const auto refused = append_unsynced(*store.log, events(1, 'x'));
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::kUnavailable);
    CHECK_FALSE(store.log->sync().has_value());  // still full: the flush fails too
    CHECK(store.log->next_sequence() == Sequence{4});

    disk.fs->make_room();
    if (store.resume_writes().has_value()) {
      const auto synced = store.log->sync();
      if (synced.has_value()) {
        MESSAGE("this RocksDB resumes after a failed WAL fsync");
        CHECK(*synced == Sequence{8});
        CHECK(scan_count(*store.log) == 7);
        REQUIRE(append(*store.log, events(2, 'b')).has_value());
        expected += "bb";
      }
    }
  }
  CHECK(contents(dir.str()) == expected);
}

// This case once hung (1 run in 30 to 1500 on a loaded machine): the resume after the
// room was made waited forever for a flush no thread was left to run. What happened and
// the fix: RocksDb::resume() in storage/src/rocks_util.cpp. The same cause made the
// first resume after the room was made fail now and then (a failed attempt's flush
// reported its error into it): both cases require that one resume succeed.
TEST_CASE("BrokerStore: writes that fill the disk bit by bit fail cleanly, and resume") {
  // Many small synced appends against a small budget: the failure falls wherever it
  // falls (the write-ahead log, a memtable flush, the manifest), and whatever was
  // ACKed is there after a resume and a reopen.
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  std::size_t stored = 0;
  {
    auto store = open(dir.str(), disk.env);
    disk.fs->fill(256 << 10);
    int failures = 0;
    for (int i = 0; i < 400 && failures < 3; ++i) {
      if (append(*store.log, events(4, 'a', 600))) {
        stored += 4;
      } else {
        ++failures;
      }
    }
    CHECK(failures == 3);
    CHECK(stored > 0);
    CHECK(store.log->next_sequence().value == stored + 1);
    CHECK_FALSE(store.resume_writes().has_value());
    disk.fs->make_room();
    const auto resumed = store.resume_writes();
    if (!resumed) FAIL(resumed.error().to_string());
    REQUIRE(append(*store.log, events(3, 'b')).has_value());
  }
  CHECK(contents(dir.str()) == std::string(stored, 'a') + "bbb");
}

// --- The adapters' outbox and inbox ---

std::unique_ptr<Outbox> open_outbox(const std::string& dir,
                                    std::shared_ptr<rocksdb::Env> env = nullptr) {
  auto r = Outbox::open(dir, std::move(env));
  if (!r) FAIL(r.error().to_string());
  return std::move(*r);
}

Result<std::vector<std::uint64_t>> enqueue(Outbox& box, std::size_t n, char fill,
                                           std::size_t bytes = 200) {
  const std::string body(bytes, fill);
  const std::span<const std::uint8_t> one(reinterpret_cast<const std::uint8_t*>(body.data()),
                                          body.size());
  const std::vector<std::span<const std::uint8_t>> all(n, one);
  return box.enqueue(all);
}

// Calls `write` until it succeeds, as a client retries: every 20 ms for up to 5 s (the
// store resumes at most every second while resuming fails).
template <class F>
auto retry(F write) {
  auto r = write();
  for (int i = 0; i < 250 && !r; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    r = write();
  }
  return r;
}

// One char per pending entry, in local_seq order, and checks the order is strict.
std::string pending(const Outbox& box) {
  auto all = box.pending(0, 1 << 20);
  REQUIRE(all.has_value());
  std::string out;
  std::uint64_t last = 0;
  for (const auto& e : *all) {
    CHECK(e.local_seq > last);
    last = e.local_seq;
    out.push_back(e.event.empty() ? '?' : e.event[0]);
  }
  return out;
}

TEST_CASE("Outbox: a full disk fails enqueues cleanly, and with space again they succeed") {
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  std::uint64_t last_seq = 0;
  {
    auto box = open_outbox(dir.str(), disk.env);
    REQUIRE(enqueue(*box, 10, 'a').has_value());

    std::int64_t budget = 0;
    SUBCASE("full at once") { budget = 0; }
    SUBCASE("full in the middle of a write") { budget = 700; }
    disk.fs->fill(budget);
    const auto failed = enqueue(*box, 10, 'x');
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == Errc::kIoError);
    CHECK(failed.error().message.find("no space") != std::string::npos);
    CHECK(box->pending_count() == 10);

    // Every write is refused while the disk is full (resuming fails); reads go on.
    const auto refused = enqueue(*box, 1, 'y');
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::kIoError);
    CHECK(refused.error().message.find("refused since a write failed") != std::string::npos);
    const std::uint64_t first[] = {1};
    CHECK_FALSE(box->remove(first).has_value());
    CHECK(pending(*box) == std::string(10, 'a'));
    CHECK(box->pending_count() == 10);

    // Space again: a later write resumes, with no reopen.
    disk.fs->make_room();
    const auto resumed = retry([&] { return enqueue(*box, 5, 'b'); });
    if (!resumed) FAIL(resumed.error().to_string());
    REQUIRE(box->remove(first).has_value());
    CHECK(pending(*box) == std::string(9, 'a') + std::string(5, 'b'));
    CHECK(box->pending_count() == 14);
    last_seq = resumed->back();
  }
  // Reopened on the ordinary file system: exactly what was reported stored, each once,
  // and no local sequence number used again.
  auto box = open_outbox(dir.str());
  CHECK(pending(*box) == std::string(9, 'a') + std::string(5, 'b'));
  CHECK(box->pending_count() == 14);
  auto next = enqueue(*box, 1, 'c');
  REQUIRE(next.has_value());
  CHECK(next->front() > last_seq);
}

TEST_CASE("Outbox: enqueues that fill the disk bit by bit fail cleanly, and go on with space") {
  // Many small synced enqueues and unsynced removes against a small budget: whatever
  // enqueue reported stored is pending after the room is made and after a reopen, once.
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  std::string stored;
  {
    auto box = open_outbox(dir.str(), disk.env);
    disk.fs->fill(256 << 10);
    int failures = 0;
    for (int i = 0; i < 400 && failures < 3; ++i) {
      auto seqs = enqueue(*box, 4, 'a', 600);
      if (seqs) {
        stored += "aaa";  // the first of the four is removed
        const std::uint64_t done[] = {seqs->front()};
        if (!box->remove(done)) stored += "a";
      } else {
        ++failures;
      }
    }
    CHECK(failures == 3);
    CHECK(stored.size() > 0);
    CHECK(pending(*box) == stored);
    disk.fs->make_room();
    REQUIRE(retry([&] { return enqueue(*box, 3, 'b'); }).has_value());
    stored += "bbb";
    CHECK(pending(*box) == stored);
    CHECK(box->pending_count() == stored.size());
  }
  auto box = open_outbox(dir.str());
  CHECK(pending(*box) == stored);
  CHECK(box->pending_count() == stored.size());
}

std::unique_ptr<Inbox> open_inbox(const std::string& dir,
                                  std::shared_ptr<rocksdb::Env> env = nullptr) {
  auto r = Inbox::open(dir, std::move(env));
  if (!r) FAIL(r.error().to_string());
  return std::move(*r);
}

// Commits event `i` (ids[i], sequence i + 1) with the handler's write "k<i>" = "v<i>".
Status commit(Inbox& inbox, const std::vector<EventId>& ids, std::size_t i) {
  auto txn = inbox.begin();
  txn->put("k" + std::to_string(i), "v" + std::to_string(i));
  return inbox.commit(std::move(txn), ids[i], i + 1, 1000 + static_cast<TimeMs>(i));
}

// Checks that exactly events [0, n) are processed, each with its handler's write.
void check_processed(const Inbox& inbox, const std::vector<EventId>& ids, std::size_t n) {
  CHECK(inbox.processed_count() == n);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto mark = inbox.processed(ids[i]);
    REQUIRE(mark.has_value());
    auto value = inbox.get("k" + std::to_string(i));
    REQUIRE(value.has_value());
    if (i < n) {
      CHECK(*mark == std::optional<std::uint64_t>(i + 1));
      CHECK(*value == std::optional<std::string>("v" + std::to_string(i)));
    } else {
      CHECK_FALSE(mark->has_value());
      CHECK_FALSE(value->has_value());
    }
  }
}

TEST_CASE("Inbox: a full disk fails commits cleanly, and with space again they succeed") {
  test::TempDir dir;
  auto disk = test::NoSpaceFs::make();
  std::vector<EventId> ids(8);
  for (auto& id : ids) id = new_uuid_v7();
  {
    auto inbox = open_inbox(dir.str(), disk.env);
    for (std::size_t i = 0; i < 5; ++i) REQUIRE(commit(*inbox, ids, i).has_value());

    disk.fs->fill(0);
    const auto failed = commit(*inbox, ids, 5);
    REQUIRE_FALSE(failed.has_value());
    CHECK(failed.error().code == Errc::kIoError);
    CHECK(failed.error().message.find("no space") != std::string::npos);
    // Refused while full; nothing of the failed commit is visible, reads go on.
    const auto refused = commit(*inbox, ids, 6);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().message.find("refused since a write failed") != std::string::npos);
    CHECK_FALSE(inbox->prune(1001).has_value());
    check_processed(*inbox, ids, 5);

    // Space again: the handler's work retried, as a redelivery does, is committed.
    disk.fs->make_room();
    const auto resumed = retry([&] { return commit(*inbox, ids, 5); });
    if (!resumed) FAIL(resumed.error().to_string());
    REQUIRE(commit(*inbox, ids, 6).has_value());
    REQUIRE(commit(*inbox, ids, 5).has_value());  // a redelivery of a processed event: no-op
    check_processed(*inbox, ids, 7);
  }
  auto inbox = open_inbox(dir.str());
  check_processed(*inbox, ids, 7);
  REQUIRE(commit(*inbox, ids, 7).has_value());
  check_processed(*inbox, ids, 8);
}

}  // namespace
}  // namespace kolabus::storage
