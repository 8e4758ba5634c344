// broker::Policy, one decision-table row per case (docs/SECURITY.md prints the table).
// No sockets: a registry, an injected clock, and the question.
#include <doctest/doctest.h>

#include <broker/policy.h>
#include <schemas/regions.h>

using namespace kolabus;
using broker::Policy;

namespace {

constexpr TimeMs kNow = 1795000000000;  // 2026-11-18
constexpr TimeMs kDay = 24LL * 3600 * 1000;
constexpr std::uint8_t kBirth = 1, kDeath = 2, kMove = 3;
constexpr std::uint8_t kCorrectionOfBirth = kBirth | broker::kCorrectionBit;

const std::string kRegistryKey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const std::string kHospitalKey = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
const std::string kKelurahanKey = "e[L(Ahnb]1Ys*hlr+9SQM!6nH[=aNv&DZU<wFjY6";
const std::string kOpsKey = "uS(4k-2Qrv0zcH&Oq9HVZ8.]g]]a2Jy?Gg5^OT3D";
const std::string kJakartaKey = "Wz0xO]]B$!s^d>rk:C9D!V{&a:*[TAZE8Rv+Z-t0";
const std::string kExpiredKey = "L}[5b6ITE#pfE1Tb6>(E*dqxZ2h{[7rC$4Zx4<]r";

const char* kRegistry = R"(
[[agency]]
name = "disdukcapil-medan"
public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
publish = { kinds = ["*"], regions = ["1271"] }
subscribe = { kinds = ["*"], regions = ["1271"] }
correct = { kinds = ["*"], regions = ["1271"] }
operate = true
agreement = { pks = "PKS/1", purpose = "civil registration", valid_from = 2026-01-01, valid_until = 2030-12-31 }

[[agency]]
name = "rs-pirngadi"
public_key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
publish = { kinds = ["birth"], regions = ["1271"] }
agreement = { pks = "PKS/2", purpose = "births", valid_from = 2026-01-01, valid_until = 2030-12-31 }

[[agency]]
name = "kel-pasar-baru"
public_key = "e[L(Ahnb]1Ys*hlr+9SQM!6nH[=aNv&DZU<wFjY6"
subscribe = { kinds = ["*"], regions = ["1271011001"] }
fields = ["*", "-death.cause_of_death"]
agreement = { pks = "PKS/3", purpose = "ward register", valid_from = 2026-01-01, valid_until = 2030-12-31 }

[[agency]]
name = "ops"
public_key = "uS(4k-2Qrv0zcH&Oq9HVZ8.]g]]a2Jy?Gg5^OT3D"
operate = true

[[agency]]
name = "disdukcapil-jakpus"
public_key = "Wz0xO]]B$!s^d>rk:C9D!V{&a:*[TAZE8Rv+Z-t0"
publish = { kinds = ["*"], regions = ["3171"] }
agreement = { pks = "PKS/4", purpose = "civil registration", valid_from = 2026-01-01, valid_until = 2030-12-31 }

[[agency]]
name = "dinsos-lapsed"
public_key = "L}[5b6ITE#pfE1Tb6>(E*dqxZ2h{[7rC$4Zx4<]r"
publish = { kinds = ["death"], regions = ["1271"] }
subscribe = { kinds = ["death"], regions = ["1271"] }
operate = true
agreement = { pks = "PKS/5", purpose = "social aid", valid_from = 2026-01-01, valid_until = 2026-06-30 }
)";

std::shared_ptr<const broker::Agencies> registry(const char* text = kRegistry) {
  auto r = broker::Agencies::parse(text, "agencies.toml", schemas::RegionTable::embedded());
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
  return std::make_shared<const broker::Agencies>(std::move(*r));
}

struct Fixture {
  ManualClock clock{kNow};
  Policy policy{registry(), clock};
};

const std::vector<std::string> kPasarBaru{"1271011001"};
const std::vector<std::string> kPusatPasar{"1271011002"};
const std::vector<std::string> kGambir{"3171011001"};

// A denial's rule, or "" when allowed.
std::string rule(const broker::Decision& d) { return d ? d->rule : ""; }

}  // namespace

TEST_CASE("Policy: connection — a key acts as its agency only while the registry says so") {
  Fixture f;
  CHECK(f.policy.identify(kHospitalKey)->name == "rs-pirngadi");
  CHECK(rule(f.policy.connection(kHospitalKey, "rs-pirngadi")) == "");
  CHECK(rule(f.policy.connection(kHospitalKey, "disdukcapil-medan")) == "connection.key");
  CHECK(f.policy.identify("0000000000000000000000000000000000000000") == nullptr);
  // The registry reloaded with the hospital's key replaced: the old key is nobody's.
  std::string text = kRegistry;
  text.replace(text.find(kHospitalKey), kHospitalKey.size(),
               "0rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr0");
  const Policy reloaded(registry(text.c_str()), f.clock);
  CHECK(reloaded.identify(kHospitalKey) == nullptr);
  CHECK(rule(reloaded.connection(kHospitalKey, "rs-pirngadi")) == "connection.key");
}

TEST_CASE("Policy: publish — within the publish grant and a valid agreement") {
  Fixture f;
  CHECK(rule(f.policy.publish("rs-pirngadi", kBirth, kPasarBaru)) == "");
  CHECK(rule(f.policy.publish("rs-pirngadi", kDeath, kPasarBaru)) == "publish.grant");
  CHECK(rule(f.policy.publish("rs-pirngadi", kBirth, kGambir)) == "publish.grant");
  CHECK(rule(f.policy.publish("kel-pasar-baru", kBirth, kPasarBaru)) == "publish.grant");
  CHECK(rule(f.policy.publish("nobody", kBirth, kPasarBaru)) == "publish.grant");
  // A move out of the city is the city's to publish: one end inside is enough.
  CHECK(rule(f.policy.publish("disdukcapil-medan", kMove, {"1271011001", "3171011001"})) == "");
  f.clock.set(kNow + 3000 * kDay);  // 2035: every agreement has ended
  CHECK(rule(f.policy.publish("rs-pirngadi", kBirth, kPasarBaru)) == "agreement");
}

TEST_CASE("Policy: correct, none — an agency with no publish or correct grant learns nothing") {
  Fixture f;
  CHECK(rule(f.policy.may_correct("kel-pasar-baru")) == "correct.none");
  CHECK(rule(f.policy.may_correct("ops")) == "correct.none");
  CHECK(rule(f.policy.may_correct("rs-pirngadi")) == "");
}

TEST_CASE("Policy: correct, owner — the publisher corrects its own event within its grant") {
  Fixture f;
  CHECK(rule(f.policy.correct("rs-pirngadi", "rs-pirngadi", kBirth, kPasarBaru, kPusatPasar)) ==
        "");
  // Not into a region outside its grant, also when the correction names the old one too.
  CHECK(rule(f.policy.correct("rs-pirngadi", "rs-pirngadi", kBirth, kPasarBaru, kGambir)) ==
        "correct.authority");
  CHECK(rule(f.policy.correct("rs-pirngadi", "rs-pirngadi", kBirth, kPasarBaru,
                              {"1271011001", "3171011001"})) == "correct.authority");
}

TEST_CASE(
    "Policy: correct, other's event — refused without a correct grant, and names nothing of it") {
  Fixture f;
  // The hospital voiding the civil registry's birth.
  auto d = f.policy.correct("rs-pirngadi", "disdukcapil-medan", kBirth, kPasarBaru, kPasarBaru);
  REQUIRE(d.has_value());
  CHECK(d->rule == "correct.authority");
  CHECK(d->field == "payload.target_id");
  CHECK(d->message.find("1271011001") == std::string::npos);
  CHECK(d->message.find("disdukcapil-medan") == std::string::npos);
}

TEST_CASE("Policy: correct, correct grant — the registry of record corrects within its grant") {
  Fixture f;
  CHECK(rule(f.policy.correct("disdukcapil-medan", "rs-pirngadi", kBirth, kPasarBaru,
                              kPusatPasar)) == "");
  // A Jakarta birth corrected into a Medan village: the target lies outside the grant.
  auto d = f.policy.correct("disdukcapil-medan", "disdukcapil-jakpus", kBirth, kGambir, kPasarBaru);
  REQUIRE(d.has_value());
  CHECK(d->rule == "correct.authority");
  CHECK(d->message.find("3171") == std::string::npos);
  // And a Medan birth corrected into Jakarta: the correction lies outside it, also when it
  // names the target's village beside the new one.
  CHECK(rule(f.policy.correct("disdukcapil-medan", "rs-pirngadi", kBirth, kPasarBaru, kGambir)) ==
        "correct.authority");
  CHECK(rule(f.policy.correct("disdukcapil-medan", "rs-pirngadi", kBirth, kPasarBaru,
                              {"1271011001", "3171011001"})) == "correct.authority");
  // A move with one end in Medan: the Medan end may be corrected, the other end kept,
  // but not rewritten into another village outside the grant.
  const std::vector<std::string> move{"3171011001", "1271011001"};
  CHECK(rule(f.policy.correct("disdukcapil-medan", "disdukcapil-jakpus", kMove, move,
                              {"3171011001", "1271011002"})) == "");
  CHECK(rule(f.policy.correct("disdukcapil-medan", "disdukcapil-jakpus", kMove, move,
                              {"3171011001", "3171011002"})) == "correct.authority");
  f.clock.set(kNow + 3000 * kDay);
  CHECK(rule(f.policy.correct("disdukcapil-medan", "rs-pirngadi", kBirth, kPasarBaru,
                              kPusatPasar)) == "agreement");
}

TEST_CASE("Policy: subscribe — a filter within the receive grant and a valid agreement") {
  Fixture f;
  CHECK(rule(f.policy.subscribe("kel-pasar-baru", {}, {"1271011001"})) == "");
  CHECK(rule(f.policy.subscribe("kel-pasar-baru", {}, {"1271011002"})) == "subscribe.grant");
  CHECK(rule(f.policy.subscribe("kel-pasar-baru", {}, {})) == "subscribe.grant");  // every region
  CHECK(rule(f.policy.subscribe("rs-pirngadi", {kBirth}, {"1271"})) == "subscribe.grant");
  CHECK(rule(f.policy.subscribe("dinsos-lapsed", {kDeath}, {"1271"})) == "agreement");
}

TEST_CASE(
    "Policy: deliver — a consumer pauses when its owner's grant or agreement stops covering it") {
  Fixture f;
  CHECK_FALSE(f.policy.paused("kel-pasar-baru", {}, {"1271011001"}).has_value());
  CHECK(f.policy.paused("kel-pasar-baru", {}, {"1271011002"})->find("beyond") != std::string::npos);
  CHECK(f.policy.paused("dinsos-lapsed", {kDeath}, {"1271"})->find("expired") != std::string::npos);
  CHECK(f.policy.paused("gone-agency", {}, {"1271"}).has_value());
}

TEST_CASE(
    "Policy: strip — each agency's field profile, and none for an agency not in the registry") {
  Fixture f;
  REQUIRE(f.policy.profile("kel-pasar-baru") != nullptr);
  CHECK_FALSE(f.policy.profile("kel-pasar-baru")->allows(events::Payload::Death, "cause_of_death"));
  CHECK(f.policy.profile("disdukcapil-medan")->keeps_everything());
  CHECK(f.policy.profile("gone-agency") == nullptr);
}

TEST_CASE("Policy: operate — only with the operate permission") {
  Fixture f;
  CHECK(rule(f.policy.operate("ops")) == "");
  CHECK(rule(f.policy.operate("kel-pasar-baru")) == "operate");
}

TEST_CASE("Policy: read dead letters — content only within the reader's own grant and agreement") {
  Fixture f;
  // An operator with no receive grant sees metadata only.
  CHECK_FALSE(f.policy.may_read_content("ops", {kBirth, kPasarBaru}));
  CHECK(f.policy.may_read_content("disdukcapil-medan", {kBirth, kPasarBaru}));
  CHECK(f.policy.may_read_content("disdukcapil-medan", {kCorrectionOfBirth, kPasarBaru}));
  CHECK_FALSE(f.policy.may_read_content("disdukcapil-medan", {kBirth, kGambir}));
  CHECK_FALSE(f.policy.may_read_content("kel-pasar-baru", {kBirth, kPusatPasar}));
  // An operator whose agreement expired: metadata only, even inside its grant.
  CHECK_FALSE(f.policy.may_read_content("dinsos-lapsed", {kDeath, kPasarBaru}));
}

TEST_CASE("Policy: replay — operate, and the owner's grant still covers the consumer") {
  Fixture f;
  CHECK(rule(f.policy.replay("ops", "kel-pasar-baru", {}, {"1271011001"})) == "");
  CHECK(rule(f.policy.replay("kel-pasar-baru", "kel-pasar-baru", {}, {"1271011001"})) == "operate");
  CHECK(rule(f.policy.replay("ops", "kel-pasar-baru", {}, {"1271011002"})) == "subscribe.grant");
  CHECK(rule(f.policy.read_range("ops", {}, {"1271"})) == "subscribe.grant");  // reads nothing
  CHECK(rule(f.policy.read_range("disdukcapil-medan", {}, {"1271"})) == "");
}

TEST_CASE("Policy: person query — operate and a valid agreement") {
  Fixture f;
  CHECK(rule(f.policy.person_query("disdukcapil-medan")) == "");
  CHECK(rule(f.policy.person_query("ops")) == "person.agreement");            // no agreement at all
  CHECK(rule(f.policy.person_query("dinsos-lapsed")) == "person.agreement");  // expired
  CHECK(rule(f.policy.person_query("kel-pasar-baru")) == "operate");
}

TEST_CASE("Policy: development mode allows everything and strips nothing") {
  ManualClock clock{kNow};
  const Policy dev(nullptr, clock);
  CHECK(dev.dev());
  CHECK_FALSE(dev.publish("dev", kBirth, kGambir).has_value());
  CHECK_FALSE(dev.correct("dev", "other", kBirth, kGambir, kPasarBaru).has_value());
  CHECK_FALSE(dev.person_query("dev").has_value());
  CHECK(dev.profile("dev")->keeps_everything());
}
