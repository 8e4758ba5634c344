// The spool adapter end to end: a real kolabus-broker process, the client library's
// publisher with its outbox, files dropped into the spool directory.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>

#include "broker_process.h"
#include "spool_test_util.h"
#include <adapters/spool.h>
#include <client/publisher.h>
#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <schemas/log_generated.h>
#include <storage/rocksdb_event_log.h>

using namespace kolabus;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

client::PublisherOptions options(const std::string& endpoint, const std::string& outbox) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.outbox_dir = outbox;
  o.ack_timeout = 1000ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  return o;
}

// Writes like a well-behaved exporter: a .part file renamed into place.
void drop(const fs::path& dir, const std::string& name, const std::string& text) {
  const fs::path part = dir / (name + ".part");
  {
    std::ofstream out(part, std::ios::binary);
    out << text;
  }
  fs::rename(part, dir / name);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// id -> number of times the stopped broker's log holds it.
std::map<EventId, int> read_log(const std::string& dir) {
  auto log = storage::open_rocksdb_event_log_read_only(dir);
  REQUIRE(log.has_value());
  std::map<EventId, int> ids;
  AlignedBytes copy;  // a scan's view into a RocksDB block sits at any address
  auto st = (*log)->scan(Sequence{1}, SIZE_MAX, [&](Sequence, std::string_view rec) {
    const auto* lr = flatbuffers::GetRoot<kolabus::log::LogRecord>(aligned(rec, copy).data());
    const auto* ev = flatbuffers::GetRoot<events::Event>(lr->event()->data());
    ++ids[EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16))];
    return true;
  });
  REQUIRE(st.has_value());
  return ids;
}

// N valid births (distinct children, recent dates) and M bad lines, shuffled.
struct SampleFile {
  std::string text;
  std::size_t good = 0;
  std::vector<std::size_t> bad_lines;
};

SampleFile sample_births(std::size_t n_good) {
  // Children born in the last few weeks (before now, whatever the machine's date).
  const auto today = schemas::from_epoch_ms(SystemClock().now_ms() - 2 * 86400000LL);
  auto date = [&](int back) {
    const auto d = schemas::from_epoch_ms(schemas::to_epoch_ms(today) - back * 86400000LL);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%02d-%02d-%04d", d.day, d.month, d.year);
    return std::string(buf);
  };
  SampleFile f;
  f.text = std::string(test::kBirthHeader);
  std::size_t line = 1;
  for (std::size_t i = 0; i < n_good; ++i) {
    f.text += "1271015203950001,1271011505900002,1271012002200001,Anak " + std::to_string(i) +
              ",2," + date(static_cast<int>(i % 20)) + ",08:30,RSU Medan,12,71,1,1001\n";
    ++line;
    ++f.good;
    if (i == 3) {  // an empty required column
      f.text += ",,1271012002200001,Tanpa Ibu,2," + date(1) + ",08:30,,12,71,1,1001\n";
      f.bad_lines.push_back(++line);
    }
    if (i == 7) {  // a man's NIK as the mother
      f.text += "1271011203950001,,1271012002200001,Salah,2," + date(1) + ",08:30,,12,71,1,1001\n";
      f.bad_lines.push_back(++line);
    }
  }
  return f;
}

}  // namespace

TEST_CASE("Spool end to end: N good lines reach the log once each, M bad ones the rejects file") {
  test::TempDir dir("spool-e2e");
  const fs::path spool = dir.path() / "spool";
  test::BrokerProcess broker(dir.str("broker"));
  auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")));
  REQUIRE(pub.has_value());
  adapters::AgencyContext ctx{"disdukcapil-medan", broker.endpoint(), dir.str("agency"),
                              pub->get(),          nullptr,           {}};

  auto made = adapters::SpoolAdapter::create(
      test::spool_table(test::birth_config(spool.string(), "poll_ms = 20")), ctx);
  REQUIRE(made.has_value());
  auto& adapter = **made;
  CHECK(adapter.describe() == "spool " + spool.string() + " (csv, Birth)");
  REQUIRE(adapter.start().has_value());
  REQUIRE(fs::is_directory(spool / "rejects"));
  REQUIRE(fs::is_directory(spool / "done"));

  const SampleFile f = sample_births(20);
  const std::size_t n = f.good, m = f.bad_lines.size();
  drop(spool, "births-2026-11-27.csv", f.text);
  REQUIRE(test::wait_until([&] { return adapter.stats().files == 1; }, 20s));

  auto st = adapter.stats();
  CHECK(st.lines == n + m);
  CHECK(st.queued == n);
  CHECK(st.rejected == m);
  CHECK(!fs::exists(spool / "births-2026-11-27.csv"));
  CHECK(fs::exists(spool / "done" / "births-2026-11-27.csv"));
  CHECK(read_text(spool / "done" / "births-2026-11-27.csv") == f.text);

  // The rejects: one JSON object per bad line, with its line number and reason.
  {
    std::ifstream in(spool / "rejects" / "births-2026-11-27.csv.rejects.jsonl");
    std::string line;
    std::vector<nlohmann::json> rejects;
    while (std::getline(in, line)) rejects.push_back(nlohmann::json::parse(line));
    REQUIRE(rejects.size() == m);
    for (std::size_t i = 0; i < m; ++i) {
      CHECK(rejects[i]["line"] == f.bad_lines[i]);
      CHECK(rejects[i]["reason"].get<std::string>().rfind(
                "line " + std::to_string(f.bad_lines[i]) + ": ", 0) == 0);
      CHECK(!rejects[i]["record"].get<std::string>().empty());
    }
    CHECK(rejects[0]["reason"] ==
          "line " + std::to_string(f.bad_lines[0]) + ": NIK_IBU is empty (payload.mother_nik)");
    CHECK(rejects[0]["code"] == "MappingError");
    CHECK(rejects[1]["code"] == "InvalidNik");
    CHECK(rejects[1]["field"] == "payload.mother_nik");
  }
  REQUIRE((*pub)->wait_drained(20s));
  CHECK((*pub)->stats().acked == n);

  // A crash after the batch but before the move: the same file comes back. The same
  // ids are queued again; the broker ACKs them as duplicates and stores nothing new.
  fs::copy_file(spool / "done" / "births-2026-11-27.csv", spool / "births-2026-11-27.csv.part");
  fs::rename(spool / "births-2026-11-27.csv.part", spool / "births-2026-11-27.csv");
  REQUIRE(test::wait_until([&] { return adapter.stats().files == 2; }, 20s));
  CHECK(fs::exists(spool / "done" / "births-2026-11-27.csv.1"));  // the first one kept
  CHECK(fs::exists(spool / "rejects" / "births-2026-11-27.csv.1.rejects.jsonl"));
  REQUIRE((*pub)->wait_drained(20s));
  CHECK((*pub)->stats().duplicates == n);
  CHECK((*pub)->stats().refused == 0);

  adapter.stop();
  pub->reset();
  broker.stop(SIGTERM);
  const auto ids = read_log(dir.str("broker"));
  CHECK(ids.size() == n);
  for (const auto& [id, count] : ids) CHECK(count == 1);
}

TEST_CASE("Spool end to end: a half-processed file is neither lost nor published twice") {
  test::TempDir dir("spool-crash");
  const fs::path spool = dir.path() / "spool";
  fs::create_directories(spool);
  const SampleFile f = sample_births(10);
  const std::string cfg = test::birth_config(spool.string());

  test::BrokerProcess broker(dir.str("broker"));
  {
    // The first run dies after the outbox batch, before the move: simulated by
    // converting and queueing exactly as the adapter does, leaving the file in place.
    auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")));
    REQUIRE(pub.has_value());
    auto conv = test::converter(cfg);
    auto r = conv.convert(f.text, SystemClock().now_ms());
    REQUIRE(r.events.size() == f.good);
    std::vector<std::span<const std::uint8_t>> batch;
    for (const auto& e : r.events) batch.emplace_back(e.event.bytes);
    REQUIRE((*pub)->publish_batch(batch).has_value());
    // The "crash": the publisher goes away at once; whatever it had not sent is
    // still in the outbox for the next run.
  }
  {
    // The restart: the same outbox, the adapter finds the file still there.
    auto pub = client::Publisher::open(options(broker.endpoint(), dir.str("outbox")));
    REQUIRE(pub.has_value());
    adapters::AgencyContext ctx{"disdukcapil-medan", broker.endpoint(), dir.str("agency"),
                                pub->get(),          nullptr,           {}};
    auto made = adapters::SpoolAdapter::create(test::spool_table(cfg), ctx);
    REQUIRE(made.has_value());
    auto& adapter = **made;
    fs::create_directories(spool / "done");
    fs::create_directories(spool / "rejects");
    drop(spool, "births.csv", f.text);
    REQUIRE(adapter.poll_once().has_value());  // on this thread: no start() needed
    CHECK(adapter.stats().files == 1);
    CHECK(adapter.stats().queued == f.good);
    CHECK(fs::exists(spool / "done" / "births.csv"));
    REQUIRE((*pub)->wait_drained(20s));
  }
  broker.stop(SIGTERM);
  const auto ids = read_log(dir.str("broker"));
  CHECK(ids.size() == f.good);
  for (const auto& [id, count] : ids) CHECK(count == 1);
}

TEST_CASE("Spool: files being written, hidden or of another format are left alone") {
  test::TempDir dir("spool-ignore");
  const fs::path spool = dir.path() / "spool";
  fs::create_directories(spool / "done");
  // No broker needed: the outbox keeps what it cannot send.
  auto pub = client::Publisher::open(options("tcp://127.0.0.1:1", dir.str("outbox")));
  REQUIRE(pub.has_value());
  adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", dir.str("agency"), pub->get(), nullptr, {}};
  auto made =
      adapters::SpoolAdapter::create(test::spool_table(test::birth_config(spool.string())), ctx);
  REQUIRE(made.has_value());
  auto& adapter = **made;
  const std::string text = std::string(test::kBirthHeader) + test::birth_row("Putri");
  for (const char* name : {"a.csv.part", "b.csv.tmp", ".c.csv", "d.jsonl", "e.txt"}) {
    std::ofstream(spool / name) << text;
  }
  fs::create_directories(spool / "f.csv");  // a directory, not a file
  REQUIRE(adapter.poll_once().has_value());
  CHECK(adapter.stats().files == 0);
  for (const char* name : {"a.csv.part", "b.csv.tmp", ".c.csv", "d.jsonl", "e.txt"}) {
    CHECK(fs::exists(spool / name));
  }

  // Files are taken in name order; empty lines are counted, not rejected.
  std::ofstream(spool / "2.csv") << text;
  std::ofstream(spool / "1.csv") << text + "\n\n";
  REQUIRE(adapter.poll_once().has_value());
  const auto st = adapter.stats();
  CHECK(st.files == 2);
  CHECK(st.queued == 2);
  CHECK(st.skipped_empty == 2);
  CHECK(st.lines == 4);
  CHECK((*pub)->stats().pending == 2);  // the same record twice: the broker stores it once
  CHECK(!fs::exists(spool / "rejects" / "1.csv.rejects.jsonl"));
}

TEST_CASE("Spool: when the outbox refuses the batch the file stays and is retried") {
  test::TempDir dir("spool-retry");
  const fs::path spool = dir.path() / "spool";
  fs::create_directories(spool);
  auto o = options("tcp://127.0.0.1:1", dir.str("outbox"));
  o.max_message_bytes = 64;  // every event is "too large": publish_batch fails
  auto pub = client::Publisher::open(o);
  REQUIRE(pub.has_value());
  adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", dir.str("agency"), pub->get(), nullptr, {}};
  auto made =
      adapters::SpoolAdapter::create(test::spool_table(test::birth_config(spool.string())), ctx);
  REQUIRE(made.has_value());
  auto& adapter = **made;
  const SampleFile f = sample_births(5);
  drop(spool, "births.csv", f.text);
  CHECK(!adapter.poll_once().has_value());
  CHECK(!adapter.poll_once().has_value());  // retried, still failing
  CHECK(fs::exists(spool / "births.csv"));
  CHECK(!fs::exists(spool / "done" / "births.csv"));
  CHECK(adapter.stats().files == 0);
  // The rejects were written first, completely.
  CHECK(fs::exists(spool / "rejects" / "births.csv.rejects.jsonl"));
}

TEST_CASE("Spool: an unreadable (binary) file is rejected line by line and moved to done") {
  test::TempDir dir("spool-binary");
  const fs::path spool = dir.path() / "spool";
  fs::create_directories(spool);
  auto pub = client::Publisher::open(options("tcp://127.0.0.1:1", dir.str("outbox")));
  REQUIRE(pub.has_value());
  adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", dir.str("agency"), pub->get(), nullptr, {}};
  auto made =
      adapters::SpoolAdapter::create(test::spool_table(test::birth_config(spool.string())), ctx);
  REQUIRE(made.has_value());
  auto& adapter = **made;
  std::string bin;
  for (int i = 0; i < 600; ++i) bin.push_back(static_cast<char>((i * 37) % 256));
  drop(spool, "export.csv", bin);
  REQUIRE(adapter.poll_once().has_value());
  CHECK(fs::exists(spool / "done" / "export.csv"));
  const auto st = adapter.stats();
  CHECK(st.queued == 0);
  CHECK(st.rejected + st.skipped_empty == st.lines);
  CHECK(st.rejected >= 1);
  std::ifstream in(spool / "rejects" / "export.csv.rejects.jsonl");
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    CHECK(j["code"] == "Encoding");
    ++n;
  }
  CHECK(n == st.rejected);
}
