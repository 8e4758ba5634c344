// The agency registry and the authorisation it drives in the core.
#include <doctest/doctest.h>

#include "test_events.h"
#include <broker/agencies.h>
#include <broker/core.h>
#include <storage/memory_event_log.h>

using namespace kolabus;
using protocol::ErrorCode;

namespace {

constexpr TimeMs kNow = 1795000000000;
constexpr TimeMs kDay = 24LL * 3600 * 1000;
// Two well-formed Z85 public keys (any 40 characters of the alphabet will do here).
const std::string kKeyA = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const std::string kKeyB = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

const char* kRegistry = R"(
[[agency]]
name = "disdukcapil-medan"
public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
publish = { kinds = ["*"], regions = ["1271"] }
subscribe = { kinds = ["*"], regions = ["1271"] }
operate = true
agreement = { pks = "PKS/470/001/2026", purpose = "civil registration", valid_from = 2026-01-01, valid_until = 2030-12-31 }

[[agency]]
name = "kel-pasar-baru"
public_key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
subscribe = { kinds = ["birth", "death", "move"], regions = ["1271011001"] }
agreement = { pks = "PKS/470/002/2026", purpose = "ward register", valid_from = 2026-01-01, valid_until = 2026-11-30 }
)";

broker::Agencies registry() {
  auto r = broker::Agencies::parse(kRegistry, "agencies.toml", schemas::RegionTable::embedded());
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  return std::move(*r);
}

}  // namespace

TEST_CASE("Agencies: keys name agencies, grants say what each may do") {
  const auto reg = registry();
  REQUIRE(reg.size() == 2);
  const auto* a = reg.by_key(kKeyA);
  REQUIRE(a != nullptr);
  CHECK(a->name == "disdukcapil-medan");
  CHECK(a->operate);
  CHECK(reg.by_key("0000000000000000000000000000000000000000") == nullptr);
  const auto* k = reg.by_name("kel-pasar-baru");
  REQUIRE(k != nullptr);
  CHECK_FALSE(k->publish.has_value());
  CHECK_FALSE(k->operate);

  SUBCASE("an event is allowed when its kind is granted and it concerns the grant's regions") {
    CHECK(a->publish->allows_event(1, {"1271011001"}));
    CHECK(a->publish->allows_event(3, {"1271011001", "1271021002"}));
    CHECK(a->publish->allows_event(3, {"1271011001", "1207281007"}));        // a move out of Medan
    CHECK_FALSE(a->publish->allows_event(3, {"3101011001", "1207281007"}));  // none in Medan
    CHECK_FALSE(a->publish->allows_event(1, {"3101011001"}));
  }
  SUBCASE("a filter is covered when its kinds and prefixes lie inside the grant") {
    CHECK(k->subscribe->covers({1, 2}, {"1271011001"}));
    CHECK(k->subscribe->covers({1, 2, 3}, {"1271011001"}));
    CHECK_FALSE(k->subscribe->covers({1}, {"1271011002"}));  // the next kelurahan
    CHECK_FALSE(k->subscribe->covers({1}, {"127101"}));      // the whole kecamatan
    CHECK_FALSE(k->subscribe->covers({1}, {}));              // every region
    CHECK_FALSE(k->subscribe->covers({}, {"1271011001"}));   // every kind, not all granted
    CHECK(a->subscribe->covers({}, {"127101", "1271021001"}));
  }
}

TEST_CASE("Agencies: mistakes in the registry are errors naming the agency and key") {
  auto parse = [](const std::string& text) {
    return broker::Agencies::parse(text, "agencies.toml", schemas::RegionTable::embedded());
  };
  const std::string head = "[[agency]]\nname = \"x\"\npublic_key = \"" + kKeyA +
                           "\"\nagreement = { pks = \"P\", purpose = \"p\", valid_from = "
                           "2026-01-01, valid_until = 2026-12-31 }\n";
  SUBCASE("unknown key") {
    auto r = parse(head + "operat = true\n");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("operat") != std::string::npos);
  }
  SUBCASE("a region that does not exist") {
    auto r = parse(head + "publish = { kinds = [\"birth\"], regions = [\"1271019999\"] }\n");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("1271019999") != std::string::npos);
  }
  SUBCASE("a bad key") {
    auto r = parse("[[agency]]\nname = \"x\"\npublic_key = \"short\"\n");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("public_key") != std::string::npos);
  }
  SUBCASE("one key for two agencies") {
    auto r = parse(head + "[[agency]]\nname = \"y\"\npublic_key = \"" + kKeyA + "\"\n");
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("'x'") != std::string::npos);
  }
}

TEST_CASE("Core: an agency publishes only the kinds and regions of its grant") {
  storage::MemoryEventLog log;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  core.set_agencies(std::make_shared<const broker::Agencies>(registry()));
  auto publish = [&](const std::vector<std::uint8_t>& ev, std::string_view source) {
    const broker::PublishRequest req{ev, source};
    return core.publish_batch(std::span(&req, 1))[0];
  };
  const auto birth = test::make_birth("1271011001", kNow - kDay);

  SUBCASE("inside the grant: stored") { CHECK(publish(birth, "disdukcapil-medan").acked()); }
  SUBCASE("an agency with no publish grant") {
    auto o = publish(birth, "kel-pasar-baru");
    REQUIRE_FALSE(o.acked());
    CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::NotAuthorised);
    CHECK(std::get<broker::Nack>(o.result).message.find("kel-pasar-baru") != std::string::npos);
  }
  SUBCASE("outside the regions of the grant") {
    auto o = publish(test::make_birth("3101011001", kNow - kDay), "disdukcapil-medan");
    REQUIRE_FALSE(o.acked());
    CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::NotAuthorised);
  }
  SUBCASE("an agency the registry does not know (no authenticated name)") {
    auto o = publish(birth, "");
    CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::NotAuthorised);
  }
  SUBCASE("a refused publisher does not learn that an id is stored") {
    REQUIRE(publish(birth, "disdukcapil-medan").acked());
    auto o = publish(birth, "kel-pasar-baru");
    CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::NotAuthorised);
  }
  CHECK(log.next_sequence().value <= 2);
}

TEST_CASE("Core: a correction is judged against its target's owner before deduplication") {
  storage::MemoryEventLog log;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  // A hospital allowed to publish births in Medan, beside the registry of the file.
  std::string text = kRegistry;
  text += R"(
[[agency]]
name = "rs-pirngadi"
public_key = "e[L(Ahnb]1Ys*hlr+9SQM!6nH[=aNv&DZU<wFjY6"
publish = { kinds = ["birth"], regions = ["1271"] }
agreement = { pks = "PKS/470/003/2026", purpose = "births", valid_from = 2026-01-01, valid_until = 2030-12-31 }
)";
  auto reg = broker::Agencies::parse(text, "agencies.toml", schemas::RegionTable::embedded());
  REQUIRE_MESSAGE(reg.has_value(), (reg ? "" : reg.error().message));
  core.set_agencies(std::make_shared<const broker::Agencies>(std::move(*reg)));
  auto publish = [&](const std::vector<std::uint8_t>& ev, std::string_view source) {
    const broker::PublishRequest req{ev, source};
    return core.publish_batch(std::span(&req, 1))[0];
  };
  const auto birth = test::make_birth("1271011001", kNow - kDay);
  REQUIRE(publish(birth, "disdukcapil-medan").acked());
  const auto* ev = flatbuffers::GetRoot<events::Event>(birth.data());
  const EventId target =
      EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
  const auto void_of_birth = test::make_void(target, {"1271011001"}, kNow - kDay);

  SUBCASE("the hospital may not void the registry's birth, and is told nothing of it") {
    auto o = publish(void_of_birth, "rs-pirngadi");
    REQUIRE_FALSE(o.acked());
    const auto& n = std::get<broker::Nack>(o.result);
    CHECK(n.code == ErrorCode::NotAuthorised);
    CHECK(n.field == "payload.target_id");
    CHECK(n.message.find("disdukcapil-medan") == std::string::npos);
    CHECK(log.next_sequence().value == 2);
  }
  SUBCASE("the registry voids its own birth; a resend by an agency without grants is refused") {
    auto o = publish(void_of_birth, "disdukcapil-medan");
    REQUIRE(o.acked());
    auto again = publish(void_of_birth, "kel-pasar-baru");
    REQUIRE_FALSE(again.acked());  // not a duplicate ACK naming the stored sequence
    CHECK(std::get<broker::Nack>(again.result).code == ErrorCode::NotAuthorised);
    CHECK(log.next_sequence().value == 3);
  }
  SUBCASE("an unknown target is answered only after the rules") {
    auto o =
        publish(test::make_void(new_uuid_v7(), {"1271011001"}, kNow - kDay), "disdukcapil-medan");
    CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::UnknownTarget);
  }
}

TEST_CASE("Agencies: an agreement outside its validity, or revoked, stops the agency") {
  const auto reg = registry();
  const auto* kel = reg.by_name("kel-pasar-baru");  // agreement valid through 2026-11-30 WIB
  REQUIRE(kel->agreement.has_value());
  CHECK_FALSE(kel->inactive_reason(kNow).has_value());
  // 2026-11-30 23:59 WIB is still inside; 2026-12-01 00:00 WIB (17:00 UTC the day before) is not.
  const TimeMs dec1_wib = 1796058000000;  // 2026-11-30T17:00:00Z
  CHECK_FALSE(kel->inactive_reason(dec1_wib - 60000).has_value());
  auto why = kel->inactive_reason(dec1_wib);
  REQUIRE(why.has_value());
  CHECK(why->find("PKS/470/002/2026 expired on 2026-11-30") != std::string::npos);
  CHECK(kel->inactive_reason(1767200000000 - 400LL * kDay).has_value());  // before 2026

  auto r2 = broker::Agencies::parse(
      "[[agency]]\nname = \"x\"\npublic_key = \"" + kKeyA +
          "\"\nsubscribe = { kinds = [\"*\"], regions = [\"1271\"] }\nagreement = { pks = "
          "\"PKS/9\", purpose = \"p\", valid_from = 2026-01-01, valid_until = 2030-12-31, "
          "revoked = true }\n",
      "agencies.toml", schemas::RegionTable::embedded());
  REQUIRE(r2.has_value());
  CHECK(r2->by_name("x")->inactive_reason(kNow).value().find("revoked") != std::string::npos);

  SUBCASE("a grant without an agreement is refused at load") {
    auto r =
        broker::Agencies::parse("[[agency]]\nname = \"x\"\npublic_key = \"" + kKeyA +
                                    "\"\nsubscribe = { kinds = [\"*\"], regions = [\"1271\"] }\n",
                                "agencies.toml", schemas::RegionTable::embedded());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("agreement") != std::string::npos);
  }
}

TEST_CASE("Core: publishing stops when the agency's agreement has expired") {
  storage::MemoryEventLog log;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  core.set_agencies(std::make_shared<const broker::Agencies>(registry()));
  const auto birth = test::make_birth("1271011001", kNow - kDay);
  clock.set(1924992000000);  // 2031-01-01: past the registry's agreement (2030-12-31)
  const broker::PublishRequest req{birth, "disdukcapil-medan"};
  const auto o = core.publish_batch(std::span(&req, 1))[0];
  REQUIRE_FALSE(o.acked());
  CHECK(std::get<broker::Nack>(o.result).code == ErrorCode::NotAuthorised);
  CHECK(std::get<broker::Nack>(o.result).message.find("expired on 2030-12-31") !=
        std::string::npos);
  CHECK(log.next_sequence().value == 1);
}
