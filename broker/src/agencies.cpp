#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include <broker/agencies.h>
#include <common/keys.h>
#include <storage/event_log.h>

namespace kolabus::broker {

namespace {

const char* kind_plural(std::uint8_t k) {
  switch (k) {
    case 1:
      return "births";
    case 2:
      return "deaths";
    case 3:
      return "moves";
    default:
      return "?";
  }
}

bool within(std::string_view code, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return code.substr(0, p.size()) == p; });
}

}  // namespace

bool Grant::allows_event(std::uint8_t kind, const std::vector<std::string>& event_regions) const {
  if (!all_kinds && !std::binary_search(kinds.begin(), kinds.end(), kind)) return false;
  if (all_regions) return true;
  // A move out of the city is the city's to publish: one end inside is enough.
  return std::any_of(event_regions.begin(), event_regions.end(),
                     [&](const std::string& r) { return within(r, regions); });
}

bool Grant::covers(const std::vector<std::uint8_t>& want_kinds,
                   const std::vector<std::string>& prefixes) const {
  if (!all_kinds) {
    if (want_kinds.empty()) return false;  // every kind asked for, not all granted
    for (std::uint8_t k : want_kinds) {
      if (!std::binary_search(kinds.begin(), kinds.end(), k)) return false;
    }
  }
  if (all_regions) return true;
  if (prefixes.empty()) return false;
  return std::all_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return within(p, regions); });
}

std::string Grant::describe() const {
  std::string s;
  if (all_kinds) {
    s = "every kind";
  } else {
    for (std::size_t i = 0; i < kinds.size(); ++i)
      s += (i ? ", " : "") + std::string(kind_plural(kinds[i]));
  }
  s += " in ";
  if (all_regions) return s + "every region";
  for (std::size_t i = 0; i < regions.size(); ++i) s += (i ? ", " : "") + regions[i];
  return s;
}

Result<Agencies> Agencies::load(const std::string& path, const schemas::RegionTable& regions) {
  std::ifstream in(path);
  if (!in) return unexpected(Errc::kNotFound, path + ": cannot open the agency registry");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path, regions);
}

Result<Agencies> Agencies::parse(std::string_view toml_text, const std::string& path,
                                 const schemas::RegionTable& regions) {
  toml::table root;
  try {
    root = toml::parse(toml_text, path);
  } catch (const toml::parse_error& e) {
    return unexpected(Errc::kInvalidArgument, path + ": line " +
                                                  std::to_string(e.source().begin.line) + ": " +
                                                  std::string(e.description()));
  }
  Agencies out;
  out.path_ = path;
  for (const auto& [k, v] : root) {
    if (k.str() != "agency") {
      return unexpected(Errc::kInvalidArgument, path + ": unknown key '" + std::string(k.str()) +
                                                    "' ([[agency]] entries only)");
    }
  }
  const auto* list = root["agency"].as_array();
  if (list == nullptr) {
    return unexpected(Errc::kInvalidArgument, path + ": no [[agency]] entries");
  }
  for (std::size_t i = 0; i < list->size(); ++i) {
    const auto* t = (*list)[i].as_table();
    std::string where = path + ": agency[" + std::to_string(i) + "]";
    if (t == nullptr) return unexpected(Errc::kInvalidArgument, where + " must be a table");
    auto bad = [&](const std::string& what) {
      return unexpected(Errc::kInvalidArgument, where + ": " + what);
    };
    for (const auto& [k, v] : *t) {
      const std::string key(k.str());
      if (key != "name" && key != "public_key" && key != "publish" && key != "subscribe" &&
          key != "correct" && key != "operate" && key != "agreement" && key != "fields" &&
          key != "limits") {
        return bad("unknown key '" + key + "'");
      }
    }
    Agency a;
    a.name = (*t)["name"].value_or(std::string());
    if (a.name.empty() || a.name.size() > 64 ||
        a.name.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            std::string::npos) {
      return bad("name must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
    }
    where = path + ": agency '" + a.name + "'";
    const std::string key_spec = (*t)["public_key"].value_or(std::string());
    if (key_spec.empty()) return bad("public_key is required (a Z85 key or a .pub file)");
    // A .pub path is relative to the registry file, so a registry and its keys move
    // together.
    std::string key_path = key_spec;
    if (!is_z85_key(key_spec) && !key_spec.empty() && key_spec[0] != '/') {
      const auto base = std::filesystem::path(path).parent_path();
      if (!base.empty()) key_path = (base / key_spec).string();
    }
    auto key = load_public_key(key_path);
    if (!key) return bad("public_key: " + key.error().message);
    a.public_key = *key;
    a.operate = (*t)["operate"].value_or(false);
    for (const char* which : {"publish", "subscribe", "correct"}) {
      const toml::node* node = t->get(which);
      if (node == nullptr) continue;
      const auto* g = node->as_table();
      if (g == nullptr)
        return bad(std::string(which) + " must be a table { kinds = [...], regions = [...] }");
      Grant grant;
      for (const auto& [k, v] : *g) {
        if (k.str() != "kinds" && k.str() != "regions") {
          return bad(std::string(which) + ": unknown key '" + std::string(k.str()) + "'");
        }
      }
      const auto* kinds = (*g)["kinds"].as_array();
      const auto* regs = (*g)["regions"].as_array();
      if (kinds == nullptr || regs == nullptr) {
        return bad(std::string(which) + " needs kinds and regions (\"*\" for all)");
      }
      for (const auto& kn : *kinds) {
        const std::string kind = kn.value_or(std::string());
        if (kind == "*")
          grant.all_kinds = true;
        else if (kind == "birth")
          grant.kinds.push_back(1);
        else if (kind == "death")
          grant.kinds.push_back(2);
        else if (kind == "move")
          grant.kinds.push_back(3);
        else
          return bad(std::string(which) + ".kinds: '" + kind + "' is not birth, death, move or *");
      }
      std::sort(grant.kinds.begin(), grant.kinds.end());
      for (const auto& rn : *regs) {
        const std::string r = rn.value_or(std::string());
        if (r == "*") {
          grant.all_regions = true;
        } else if (!storage::is_region_prefix(r) || regions.find(r) == nullptr) {
          return bad(std::string(which) + ".regions: '" + r +
                     "' is not a province, regency, district or village code in the list");
        } else {
          grant.regions.push_back(r);
        }
      }
      if (!grant.all_kinds && grant.kinds.empty())
        return bad(std::string(which) + ".kinds is empty");
      if (!grant.all_regions && grant.regions.empty()) {
        return bad(std::string(which) + ".regions is empty");
      }
      const std::string w(which);
      (w == "publish" ? a.publish : w == "subscribe" ? a.subscribe : a.correct) = std::move(grant);
    }
    if (const toml::node* node = t->get("agreement")) {
      const auto* g = node->as_table();
      if (g == nullptr) {
        return bad("agreement must be a table { pks, purpose, valid_from, valid_until }");
      }
      for (const auto& [k, v] : *g) {
        const std::string name(k.str());
        if (name != "pks" && name != "purpose" && name != "valid_from" && name != "valid_until" &&
            name != "revoked") {
          return bad("agreement: unknown key '" + name + "'");
        }
      }
      Agreement ag;
      ag.pks = (*g)["pks"].value_or(std::string());
      ag.purpose = (*g)["purpose"].value_or(std::string());
      if (ag.pks.empty() || ag.purpose.empty()) {
        return bad("agreement needs pks (its number) and purpose");
      }
      // Dates are days of Indonesia's western time (WIB, UTC+7): TOML dates or
      // "YYYY-MM-DD" strings.
      auto day = [&](const char* field) -> std::optional<TimeMs> {
        const toml::node* n = g->get(field);
        if (n == nullptr) return std::nullopt;
        int y = 0, m = 0, d = 0;
        if (const auto* dv = n->as_date()) {
          y = dv->get().year;
          m = dv->get().month;
          d = dv->get().day;
        } else if (auto str = n->value<std::string>();
                   !str || std::sscanf(str->c_str(), "%4d-%2d-%2d", &y, &m, &d) != 3) {
          return std::nullopt;
        }
        if (m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
        // Days since the epoch (Howard Hinnant's days_from_civil).
        y -= m <= 2;
        const int era = (y >= 0 ? y : y - 399) / 400;
        const unsigned yoe = static_cast<unsigned>(y - era * 400);
        const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        const long days = era * 146097L + static_cast<long>(doe) - 719468;
        return static_cast<TimeMs>(days) * 86400000 - 7 * 3600000LL;
      };
      const auto from = day("valid_from"), until = day("valid_until");
      if (!from || !until) {
        return bad(
            "agreement.valid_from and agreement.valid_until are required dates "
            "(2026-01-01)");
      }
      ag.valid_from = *from;
      ag.valid_until = *until + 86400000;  // through the whole last day
      if (ag.valid_until <= ag.valid_from) return bad("agreement ends before it begins");
      ag.revoked = (*g)["revoked"].value_or(false);
      a.agreement = std::move(ag);
    }
    if (const toml::node* node = t->get("limits")) {
      const auto* l = node->as_table();
      if (l == nullptr) {
        return bad(
            "limits must be a table { connections, consumers, unacked, "
            "queued_mib_per_connection, queued_mib }");
      }
      for (const auto& [k, v] : *l) {
        const std::string name(k.str());
        const auto n = v.value_exact<std::int64_t>();
        if (name != "connections" && name != "consumers" && name != "unacked" &&
            name != "queued_mib_per_connection" && name != "queued_mib") {
          return bad("limits: unknown key '" + name + "'");
        }
        if (!n || *n < 1 || *n > 1000000) {
          return bad("limits." + name + " must be a whole number from 1 to 1000000");
        }
        const auto u = static_cast<std::uint64_t>(*n);
        if (name == "connections") a.limits.connections = static_cast<std::uint32_t>(u);
        if (name == "consumers") a.limits.consumers = static_cast<std::uint32_t>(u);
        if (name == "unacked") a.limits.unacked = static_cast<std::uint32_t>(u);
        if (name == "queued_mib_per_connection") a.limits.queued_bytes_per_connection = u << 20;
        if (name == "queued_mib") a.limits.queued_bytes = u << 20;
      }
    }
    std::vector<std::string> field_entries{"*"};
    if (const toml::node* node = t->get("fields")) {
      const auto* arr = node->as_array();
      if (arr == nullptr)
        return bad("fields must be a list such as [\"birth.*\", \"-death.cause_of_death\"]");
      field_entries.clear();
      for (const auto& e : *arr) field_entries.push_back(e.value_or(std::string()));
    }
    auto profile = schemas::FieldProfile::parse(field_entries);
    if (!profile) return bad("fields: " + profile.error().message);
    a.fields = std::move(*profile);
    if ((a.publish || a.subscribe || a.correct) && !a.agreement) {
      return bad(
          "a publish, subscribe or correct grant must name the data-sharing agreement it rests "
          "on: agreement = { pks, purpose, valid_from, valid_until }");
    }
    if (out.by_name_.contains(a.name)) return bad("the name is used twice");
    if (out.by_key_.contains(a.public_key)) {
      return bad("public_key is also agency '" +
                 out.agencies_[out.by_key_.find(a.public_key)->second].name + "'s");
    }
    out.by_name_.emplace(a.name, out.agencies_.size());
    out.by_key_.emplace(a.public_key, out.agencies_.size());
    out.agencies_.push_back(std::move(a));
  }
  return out;
}

std::optional<std::string> Agency::inactive_reason(TimeMs now) const {
  if (!agreement) return std::nullopt;  // no data grants: nothing to stop
  const Agreement& a = *agreement;
  auto date = [](TimeMs t) {
    const std::time_t s = static_cast<std::time_t>((t + 7 * 3600000LL) / 1000);
    std::tm tm{};
    gmtime_r(&s, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return std::string(buf);
  };
  if (a.revoked) return "agreement " + a.pks + " is revoked";
  if (now < a.valid_from) return "agreement " + a.pks + " is valid only from " + date(a.valid_from);
  if (now >= a.valid_until) {
    return "agreement " + a.pks + " expired on " + date(a.valid_until - 86400000);
  }
  return std::nullopt;
}

const Agency* Agencies::by_key(std::string_view k) const {
  auto it = by_key_.find(k);
  return it == by_key_.end() ? nullptr : &agencies_[it->second];
}

const Agency* Agencies::by_name(std::string_view n) const {
  auto it = by_name_.find(n);
  return it == by_name_.end() ? nullptr : &agencies_[it->second];
}

}  // namespace kolabus::broker
