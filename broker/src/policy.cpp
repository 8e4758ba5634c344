#include <algorithm>

#include <broker/policy.h>

namespace kolabus::broker {

namespace {

using protocol::ErrorCode;

Denial deny(std::string rule, std::string message, std::string field = {}) {
  return Denial{ErrorCode::NotAuthorised, std::move(field), std::move(rule), std::move(message)};
}

const schemas::FieldProfile& everything() {
  static const schemas::FieldProfile p = *schemas::FieldProfile::parse({"*"});
  return p;
}

std::string quoted(std::string_view agency) { return "agency '" + std::string(agency) + "'"; }

}  // namespace

Policy::Policy(std::shared_ptr<const Agencies> agencies, const Clock& clock)
    : agencies_(std::move(agencies)), clock_(&clock) {}

const Agency* Policy::find(std::string_view agency) const {
  return agencies_ ? agencies_->by_name(agency) : nullptr;
}

Decision Policy::inactive(const Agency* a, std::string_view what) const {
  if (a == nullptr) return std::nullopt;
  if (auto why = a->inactive_reason(clock_->now_ms())) {
    return deny("agreement", quoted(a->name) + " may not " + std::string(what) + ": " + *why);
  }
  return std::nullopt;
}

const Agency* Policy::identify(std::string_view key) const {
  return agencies_ ? agencies_->by_key(key) : nullptr;
}

Decision Policy::connection(std::string_view key, std::string_view agency) const {
  if (dev()) return std::nullopt;
  const Agency* a = identify(key);
  if (a != nullptr && a->name == agency) return std::nullopt;
  return deny("connection.key",
              "not authorised: this connection's key is no longer in the agency registry "
              "(replaced or removed); connect again with a current key");
}

Decision Policy::publish(std::string_view agency, std::uint8_t kind,
                         const std::vector<std::string>& regions) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (auto d = inactive(a, "publish")) return d;
  if (a != nullptr && a->publish && a->publish->allows_event(kind, regions)) return std::nullopt;
  // The event is the publisher's own: naming its regions tells it nothing new.
  std::string what =
      quoted(agency) + " may not publish this event (kind " + std::to_string(kind) + " in";
  for (const auto& r : regions) what += " " + r;
  what += "): ";
  what += a == nullptr || !a->publish ? "it has no publish grant"
                                      : "its grant covers " + a->publish->describe();
  return deny("publish.grant", std::move(what), "regions");
}

Decision Policy::may_correct(std::string_view agency) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (auto d = inactive(a, "publish corrections")) return d;
  if (a != nullptr && (a->publish || a->correct)) return std::nullopt;
  return deny("correct.none",
              quoted(agency) + " may not publish corrections: it has no publish or correct grant");
}

Decision Policy::correct(std::string_view agency, std::string_view target_owner,
                         std::uint8_t target_kind, const std::vector<std::string>& target_regions,
                         const std::vector<std::string>& regions) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (auto d = inactive(a, "publish corrections")) return d;
  if (a != nullptr) {
    // The grant holds the target (at least one of its regions: a move out of the city is
    // the city's), and the correction adds no region outside it: each of its regions is
    // one of the target's or lies inside the grant. (One region inside would not do: a
    // correction names its target's regions, so it would let any event be moved into any
    // village of the country, or a move's other end be rewritten.)
    auto covers = [&](const Grant& g) {
      if (!g.allows_event(target_kind, target_regions)) return false;
      return std::all_of(regions.begin(), regions.end(), [&](const std::string& r) {
        return std::find(target_regions.begin(), target_regions.end(), r) != target_regions.end() ||
               g.allows_event(target_kind, {r});
      });
    };
    if (a->name == target_owner && a->publish && covers(*a->publish)) return std::nullopt;
    if (a->correct && covers(*a->correct)) return std::nullopt;
  }
  // Neither the target's owner nor its regions are named: they are another agency's.
  std::string what = quoted(agency) +
                     " may not correct or void this event: only the agency that published it "
                     "(within its publish grant) or an agency with a correct grant covering the "
                     "event and its correction may; ";
  what += a == nullptr || !a->correct ? "it has no correct grant"
                                      : "its correct grant covers " + a->correct->describe();
  return deny("correct.authority", std::move(what), "payload.target_id");
}

Decision Policy::subscribe(std::string_view agency, const std::vector<std::uint8_t>& kinds,
                           const std::vector<std::string>& prefixes) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (auto d = inactive(a, "receive events")) return d;
  if (a != nullptr && a->subscribe && a->subscribe->covers(kinds, prefixes)) return std::nullopt;
  return deny("subscribe.grant",
              quoted(agency) + " may not receive these events: " +
                  (a == nullptr || !a->subscribe ? std::string("it has no subscribe grant")
                                                 : "its grant covers " + a->subscribe->describe() +
                                                       "; ask for kinds and regions within it"),
              "filter");
}

std::optional<std::string> Policy::paused(std::string_view owner,
                                          const std::vector<std::uint8_t>& kinds,
                                          const std::vector<std::string>& prefixes) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(owner);
  if (a == nullptr) return "agency '" + std::string(owner) + "' is not in the registry";
  if (auto why = a->inactive_reason(clock_->now_ms())) return *why;
  if (!a->subscribe) return "the agency has no subscribe grant";
  if (!a->subscribe->covers(kinds, prefixes)) {
    return "the filter reaches beyond the agency's grant (" + a->subscribe->describe() + ")";
  }
  return std::nullopt;
}

const schemas::FieldProfile* Policy::profile(std::string_view agency) const {
  if (dev()) return &everything();
  const Agency* a = find(agency);
  return a == nullptr ? nullptr : &a->fields;
}

const Limits* Policy::limits(std::string_view agency) const {
  const Agency* a = find(agency);
  return a == nullptr ? nullptr : &a->limits;
}

Decision Policy::operate(std::string_view agency) const {
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (a != nullptr && a->operate) return std::nullopt;
  return deny("operate", quoted(agency) +
                             " may not operate the bus (replay, dead letters, consumers of "
                             "others): it has no operate permission in the agency registry");
}

Decision Policy::replay(std::string_view agency, std::string_view owner,
                        const std::vector<std::uint8_t>& kinds,
                        const std::vector<std::string>& prefixes) const {
  if (auto d = operate(agency)) return d;
  // A replay is a new read of the data: the owner's grant must still cover it.
  return subscribe(owner, kinds, prefixes);
}

Decision Policy::read_range(std::string_view agency, const std::vector<std::uint8_t>& kinds,
                            const std::vector<std::string>& prefixes) const {
  if (auto d = operate(agency)) return d;
  return subscribe(agency, kinds, prefixes);
}

bool Policy::may_read_content(std::string_view agency, const EventFacts& event) const {
  if (dev()) return true;
  const Agency* a = find(agency);
  if (a == nullptr || !a->subscribe || a->inactive_reason(clock_->now_ms())) return false;
  return a->subscribe->allows_event(static_cast<std::uint8_t>(event.routing_kind & ~kCorrectionBit),
                                    event.regions);
}

Decision Policy::person_query(std::string_view agency) const {
  if (auto d = operate(agency)) return d;
  if (dev()) return std::nullopt;
  const Agency* a = find(agency);
  if (a == nullptr || !a->agreement) {
    return deny("person.agreement",
                quoted(agency) +
                    " may not ask about a person: a person query needs a valid data-sharing "
                    "agreement, and the agency has none");
  }
  if (auto why = a->inactive_reason(clock_->now_ms())) {
    return deny("person.agreement", quoted(agency) + " may not ask about a person: " + *why);
  }
  return std::nullopt;
}

}  // namespace kolabus::broker
