// broker::Core driven without sockets: a memory log, a manual clock, the
// compiled-in region list.
#include <doctest/doctest.h>

#include "test_events.h"
#include <broker/core.h>
#include <storage/memory_event_log.h>
#include <tools/event_generator.h>

using namespace kolabus;
using protocol::ErrorCode;

namespace {

constexpr TimeMs kNow = 1795000000000;  // 2026-11-17

struct Fixture {
  storage::MemoryEventLog log;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  tools::EventGenerator gen{schemas::RegionTable::embedded(), {42, "1271", kNow}};

  std::vector<broker::PublishOutcome> publish(const std::vector<std::vector<std::uint8_t>>& evs,
                                              std::string_view source = "disdukcapil") {
    std::vector<broker::PublishRequest> reqs;
    for (const auto& e : evs) reqs.push_back({e, source});
    return core.publish_batch(reqs);
  }
};

const broker::Ack& ack(const broker::PublishOutcome& o) {
  REQUIRE(o.acked());
  return std::get<broker::Ack>(o.result);
}
const broker::Nack& nack(const broker::PublishOutcome& o) {
  REQUIRE(!o.acked());
  return std::get<broker::Nack>(o.result);
}

}  // namespace

TEST_CASE("Core: a batch of valid events is stored with consecutive sequences") {
  Fixture f;
  std::vector<std::vector<std::uint8_t>> evs;
  for (int i = 0; i < 50; ++i) evs.push_back(f.gen.next());
  const auto out = f.publish(evs);
  REQUIRE(out.size() == evs.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    CHECK(ack(out[i]).sequence.value == i + 1);
    CHECK_FALSE(ack(out[i]).duplicate);
    CHECK(*out[i].id == test::id_of(evs[i]));
    auto stored = f.log.find_id(test::id_of(evs[i]));
    REQUIRE(stored.has_value());
    CHECK(stored->value().value == i + 1);
  }
  CHECK(f.core.next_sequence().value == 51);
  CHECK(f.core.stats().batches == 1);  // one durable append for the whole batch
  CHECK(f.core.stats().accepted == 50);

  SUBCASE("the record keeps the event bytes as sent and the authenticated source") {
    auto rec = f.log.read(Sequence{3});
    REQUIRE(rec.has_value());
    REQUIRE(rec->has_value());
    auto info = broker::decode_stored_event(**rec);
    REQUIRE(info.has_value());
    CHECK(info->regions == test::regions_of(evs[2]));
    CHECK((*rec)->find(std::string(evs[2].begin(), evs[2].end())) != std::string::npos);
    CHECK((*rec)->find("disdukcapil") != std::string::npos);
  }
}

TEST_CASE("Core: republishing an id returns its original sequence and stores nothing") {
  Fixture f;
  const auto a = f.gen.next(), b = f.gen.next();
  REQUIRE(f.publish({a, b}).size() == 2);

  SUBCASE("against the log") {
    const auto out = f.publish({b, a});
    CHECK(ack(out[0]).sequence.value == 2);
    CHECK(ack(out[0]).duplicate);
    CHECK(ack(out[1]).sequence.value == 1);
    CHECK(ack(out[1]).duplicate);
    CHECK(f.core.next_sequence().value == 3);
  }
  SUBCASE("within one batch") {
    const auto c = f.gen.next();
    const auto out = f.publish({c, c, c});
    CHECK(ack(out[0]).sequence.value == 3);
    CHECK_FALSE(ack(out[0]).duplicate);
    CHECK(ack(out[1]).sequence.value == 3);
    CHECK(ack(out[1]).duplicate);
    CHECK(ack(out[2]).duplicate);
    CHECK(f.core.next_sequence().value == 4);
  }
}

TEST_CASE("Core: an invalid event is refused alone and the rest of the batch is stored") {
  Fixture f;
  const auto good1 = f.gen.next(), good2 = f.gen.next();
  SUBCASE("garbage bytes: MalformedEvent and no id") {
    const std::vector<std::uint8_t> garbage{1, 2, 3, 4, 5, 6, 7, 8, 9};
    const auto out = f.publish({good1, garbage, good2});
    CHECK(ack(out[0]).sequence.value == 1);
    CHECK(nack(out[1]).code == ErrorCode::MalformedEvent);
    CHECK_FALSE(out[1].id.has_value());
    CHECK(ack(out[2]).sequence.value == 2);  // no gap: refused events take no sequence
  }
  SUBCASE("a rule broken: the id is named, nothing of it stored") {
    // An event dated a day after the broker's clock.
    f.clock.set(kNow - 40LL * 24 * 3600 * 1000);
    const auto out = f.publish({good1});
    const auto& n = nack(out[0]);
    CHECK(n.code == ErrorCode::InvalidDate);
    CHECK_FALSE(n.retryable);
    CHECK_FALSE(n.field.empty());
    CHECK(n.message.rfind(n.field + ": ", 0) == 0);            // names the field first...
    CHECK(n.message.rfind(n.field + ": " + n.field, 0) != 0);  // ...once (regression)
    CHECK(*out[0].id == test::id_of(good1));
    CHECK(f.core.next_sequence().value == 1);
    auto found = f.log.find_id(test::id_of(good1));
    REQUIRE(found.has_value());
    CHECK_FALSE(found->has_value());
  }
}

TEST_CASE("Core: storage failure NACKs the batch retryable and stores nothing") {
  Fixture f;
  const auto a = f.gen.next(), b = f.gen.next();
  f.log.fail_appends(true);
  auto out = f.publish({a, b, a});
  for (const auto& o : out) {
    CHECK(nack(o).code == ErrorCode::StorageUnavailable);
    CHECK(nack(o).retryable);
  }
  CHECK(f.core.next_sequence().value == 1);
  CHECK(f.core.stats().storage_failures == 3);

  f.log.fail_appends(false);  // space is back: the same events go through
  out = f.publish({a, b});
  CHECK(ack(out[0]).sequence.value == 1);
  CHECK(ack(out[1]).sequence.value == 2);
}

TEST_CASE("Core: corrections must name an event the broker holds") {
  Fixture f;
  const auto birth = f.gen.make(tools::GenKind::kBirth);
  const auto target = test::id_of(birth);
  const auto regions = test::regions_of(birth);

  SUBCASE("unknown target: UnknownTarget") {
    const auto out = f.publish({test::make_void(target, regions, kNow - 1000)});
    CHECK(nack(out[0]).code == ErrorCode::UnknownTarget);
    CHECK(nack(out[0]).field == "payload.target_id");
    CHECK(f.core.next_sequence().value == 1);
  }
  SUBCASE("target in the log: stored") {
    REQUIRE(f.publish({birth})[0].acked());
    const auto out = f.publish({test::make_void(target, regions, kNow - 1000)});
    CHECK(ack(out[0]).sequence.value == 2);
  }
  SUBCASE("target earlier in the same batch: stored") {
    const auto out = f.publish({birth, test::make_void(target, regions, kNow - 1000)});
    CHECK(ack(out[0]).sequence.value == 1);
    CHECK(ack(out[1]).sequence.value == 2);
  }
  SUBCASE("regions that differ from the target's: InvalidRegions") {
    REQUIRE(f.publish({birth})[0].acked());
    const std::string other = regions[0] == "1271011001" ? "1271011002" : "1271011001";
    const auto out = f.publish({test::make_void(target, {other}, kNow - 1000)});
    CHECK(nack(out[0]).code == ErrorCode::InvalidRegions);
  }
}

TEST_CASE("Core: a duplicate is ACKed even when it would no longer validate") {
  Fixture f;
  const auto a = f.gen.next();
  REQUIRE(f.publish({a})[0].acked());
  f.clock.set(kNow - 40LL * 24 * 3600 * 1000);  // now the event lies in the future
  const auto out = f.publish({a});
  CHECK(ack(out[0]).duplicate);
  CHECK(ack(out[0]).sequence.value == 1);
}
