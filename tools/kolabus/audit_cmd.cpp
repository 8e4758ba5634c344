// kolabus audit: the broker's audit chain. `verify` checks every link (through the
// broker, or offline on a stopped broker's data directory), `show` lists records from
// a time on, `person` answers a resident's question "who received my data?".
#include <iostream>
#include <map>
#include <set>

#include <sodium.h>

#include "commands.h"
#include "output.h"
#include <broker/audit.h>
#include <schemas/validate.h>
#include <storage/rocksdb_broker_store.h>

namespace kolabus::cli {

namespace {

struct Args {
  ConnectArgs conn;
  std::string dir;
  std::vector<std::string> anchors;
  std::string since;
  std::uint64_t from = 0;
  std::uint32_t max = 100;
  std::string agency;
  std::string action;
  std::string nik;
};

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Result<std::vector<std::pair<std::uint64_t, storage::AuditHash>>> parse_anchors(
    const std::vector<std::string>& texts) {
  std::vector<std::pair<std::uint64_t, storage::AuditHash>> out;
  for (const auto& t : texts) {
    const auto colon = t.find(':');
    storage::AuditHash hash{};
    std::size_t len = 0;
    std::uint64_t index = 0;
    try {
      index = colon == std::string::npos ? 0 : std::stoull(t.substr(0, colon));
    } catch (const std::exception&) {
      index = 0;
    }
    const std::string hex = colon == std::string::npos ? "" : t.substr(colon + 1);
    if (index == 0 ||
        sodium_hex2bin(hash.data(), hash.size(), hex.data(), hex.size(), nullptr, &len, nullptr) !=
            0 ||
        len != hash.size() || hex.size() != 64) {
      return unexpected(Errc::kInvalidArgument, "--anchor '" + t +
                                                    "': expected INDEX:HASH (64 hex digits), as "
                                                    "`kolabus audit verify` prints the head");
    }
    out.emplace_back(index, hash);
  }
  return out;
}

std::string action_name(std::uint8_t a) {
  const char* name = audit::EnumNameAction(static_cast<audit::Action>(a));
  return name != nullptr && *name != '\0' ? name : "action " + std::to_string(a);
}

std::string sequences_text(const audit::Record& r) {
  if (r.first_sequence() == 0) return "-";
  if (r.sequences() != nullptr) {
    std::string out;
    for (std::size_t i = 0; i < r.sequences()->size() && i < 6; ++i) {
      out += (i ? "," : "") + std::to_string(r.sequences()->Get(i));
    }
    if (r.sequences()->size() > 6) out += ",... (" + std::to_string(r.sequences()->size()) + ")";
    return out;
  }
  if (r.first_sequence() == r.last_sequence()) return std::to_string(r.first_sequence());
  return std::to_string(r.first_sequence()) + ".." + std::to_string(r.last_sequence());
}

std::string str(const flatbuffers::String* s) { return s == nullptr ? "" : s->str(); }

nlohmann::ordered_json record_json(std::uint64_t key, const audit::Record& r,
                                   std::string_view bytes) {
  nlohmann::ordered_json j{{"index", key},
                           {"time", format_time(r.time())},
                           {"time_ms", r.time()},
                           {"action", action_name(static_cast<std::uint8_t>(r.action()))},
                           {"agency", str(r.agency())}};
  if (r.consumer()) j["consumer"] = str(r.consumer());
  if (r.owner()) j["owner"] = str(r.owner());
  if (r.first_sequence() != 0) {
    j["first_sequence"] = r.first_sequence();
    j["last_sequence"] = r.last_sequence();
  }
  if (r.sequences())
    j["sequences"] = std::vector<std::uint64_t>(r.sequences()->begin(), r.sequences()->end());
  j["count"] = r.count();
  if (r.persons()) j["persons"] = r.persons()->size();
  if (r.detail()) j["detail"] = str(r.detail());
  j["hash"] = broker::to_hex(broker::audit_hash(bytes_of(bytes)));
  return j;
}

void print_verdict(const broker::ChainVerifier& v, bool json) {
  const auto& problem = v.problem();
  if (json) {
    nlohmann::ordered_json j{{"ok", !problem.has_value()}, {"records", v.checked()}};
    if (problem) {
      j["first_bad_record"] = problem->index;
      j["problem"] = problem->what;
    } else {
      j["head_index"] = v.last().index;
      j["head_hash"] = broker::to_hex(v.last().hash);
    }
    std::cout << j.dump() << "\n";
    return;
  }
  if (problem) {
    std::cout << "audit chain BROKEN: the first bad record is " << problem->index << ": "
              << problem->what << " (" << v.checked() << " records before it verified)\n";
    return;
  }
  std::cout << "audit chain verified: " << v.checked() << " records, every link intact\n"
            << "head: " << v.last().index << ":" << broker::to_hex(v.last().hash) << "\n"
            << "(keep the head somewhere else, e.g. in the operations log; a later "
               "`kolabus audit verify --anchor "
            << v.last().index << ":...` then proves nothing before it was rewritten)\n";
}

int run_verify(const Args& a) {
  auto anchors = parse_anchors(a.anchors);
  if (!anchors) {
    std::cerr << "kolabus audit verify: " << anchors.error().message << "\n";
    return kUsage;
  }
  if (!a.dir.empty()) {
    // Offline: a stopped broker's data directory, opened read-only.
    auto store = storage::open_rocksdb_broker_store_read_only(a.dir);
    if (!store) return report_error("audit verify", store.error());
    auto v = broker::verify_chain(store->log->audit(), *anchors);
    if (!v) return report_error("audit verify", v.error());
    print_verdict(*v, a.conn.json);
    return v->problem() ? kBroken : kOk;
  }
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("audit verify", admin.error());
  broker::ChainVerifier v;
  for (const auto& [index, hash] : *anchors) v.add_anchor(index, hash);
  Progress progress;
  std::uint64_t from = 1;
  std::uint64_t records = 0;
  while (true) {
    auto page = (*admin)->audit_read(from, 0, 10000);
    if (!page) return report_error("audit verify", page.error());
    for (const auto& [key, bytes] : page->records) {
      if (v.feed(key, bytes)) break;
      ++records;
    }
    progress.update(records, page->next_index - 1, 1, page->head_index);
    if (v.problem()) break;
    if (page->done) {
      storage::AuditHead head{page->head_index, {}};
      std::copy_n(page->head_hash.begin(), std::min<std::size_t>(32, page->head_hash.size()),
                  head.hash.begin());
      v.finish(head);
      break;
    }
    from = page->next_index;
  }
  progress.finish();
  print_verdict(v, a.conn.json);
  return v.problem() ? kBroken : kOk;
}

int run_show(const Args& a) {
  TimeMs since = 0;
  if (!a.since.empty()) {
    auto t = parse_time(a.since);
    if (!t) {
      std::cerr << "kolabus audit show: --since: " << t.error().message << "\n";
      return kUsage;
    }
    since = *t;
  }
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("audit show", admin.error());
  Table table({"INDEX", "TIME", "ACTION", "AGENCY", "CONSUMER", "SEQUENCES", "COUNT", "DETAIL"});
  std::uint64_t from = a.from, shown = 0, next = 0;
  bool more = false;
  while (shown < a.max) {
    auto page = (*admin)->audit_read(from, from == 0 ? since : 0, 1000);
    if (!page) return report_error("audit show", page.error());
    for (const auto& [key, bytes] : page->records) {
      next = key + 1;
      AlignedBytes copy;
      const auto* r = broker::verified_record(bytes, copy);
      if (r == nullptr) {
        if (!a.conn.json) table.add({std::to_string(key), "?", "(does not decode)"});
        continue;
      }
      if (!a.agency.empty() && str(r->agency()) != a.agency && str(r->owner()) != a.agency) {
        continue;
      }
      const std::string action = action_name(static_cast<std::uint8_t>(r->action()));
      if (!a.action.empty() && action != a.action) continue;
      if (shown == a.max) {
        more = true;
        break;
      }
      ++shown;
      if (a.conn.json) {
        std::cout << record_json(key, *r, bytes).dump() << "\n";
        continue;
      }
      std::string consumer = str(r->consumer());
      if (r->owner() != nullptr) consumer = str(r->owner()) + "/" + consumer;
      table.add({std::to_string(key), format_time(r->time()), action, str(r->agency()), consumer,
                 sequences_text(*r), std::to_string(r->count()), str(r->detail())});
    }
    if (more || page->done) break;
    from = page->next_index;
  }
  if (!a.conn.json) {
    if (shown == 0) {
      std::cout << "no audit records" << (a.since.empty() ? "" : " since " + a.since) << "\n";
    } else {
      std::cout << table.render();
      if (more)
        std::cout << "(first " << shown << " shown; page on with --from " << next - 1 << ")\n";
    }
  }
  return kOk;
}

int run_person(const Args& a) {
  if (a.nik.size() != 16 || a.nik.find_first_not_of("0123456789") != std::string::npos) {
    std::cerr << "kolabus audit person: a NIK is 16 digits\n";
    return kUsage;
  }
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("audit person", admin.error());
  std::vector<client::PersonHitView> hits;
  std::vector<std::uint64_t> sequences;
  std::uint64_t from = 1;
  while (true) {
    auto page = (*admin)->audit_person(a.nik, from, 100000, sequences);
    if (!page) return report_error("audit person", page.error());
    hits.insert(hits.end(), page->hits.begin(), page->hits.end());
    sequences = page->sequences;
    if (page->done) break;
    from = page->next_index;
  }
  auto kind = [](std::uint8_t k) {
    return std::string(schemas::kind_name(static_cast<events::Payload>(k)));
  };
  auto id_text = [](const std::string& id) {
    return id.size() == 16
               ? EventId::from_span(std::span<const std::uint8_t, 16>(bytes_of(id).data(), 16))
                     .to_string()
               : std::string("?");
  };
  if (a.conn.json) {
    for (const auto& h : hits) {
      std::cout << nlohmann::ordered_json{{"index", h.index},
                                          {"time", format_time(h.time)},
                                          {"action", action_name(h.action)},
                                          {"agency", h.agency},
                                          {"consumer", h.consumer},
                                          {"sequence", h.sequence},
                                          {"kind", kind(h.kind)},
                                          {"event_id", id_text(h.event_id)}}
                       .dump()
                << "\n";
    }
    return kOk;
  }
  if (sequences.empty()) {
    std::cout << "no event in the audit chain concerns this person\n";
    return kOk;
  }
  Table table({"TIME", "WHAT", "AGENCY", "CONSUMER", "SEQ", "KIND", "EVENT-ID"});
  std::map<std::string, std::set<std::uint64_t>> received;
  for (const auto& h : hits) {
    const auto action = static_cast<audit::Action>(h.action);
    const std::string what = action == audit::Action::Publish   ? "published by"
                             : action == audit::Action::Deliver ? "delivered to"
                             : action == audit::Action::Read    ? "read (replay) by"
                                                                : "dead letter read by";
    if (action != audit::Action::Publish) received[h.agency].insert(h.sequence);
    table.add({format_time(h.time), what, h.agency, h.consumer, std::to_string(h.sequence),
               kind(h.kind), id_text(h.event_id)});
  }
  std::cout << table.render() << sequences.size()
            << (sequences.size() == 1 ? " event concerns" : " events concern")
            << " this person; received by " << received.size() << " agenc"
            << (received.size() == 1 ? "y" : "ies");
  for (const auto& [agency, seqs] : received) {
    std::cout << (agency == received.begin()->first ? ": " : ", ") << agency << " (" << seqs.size()
              << ")";
  }
  std::cout << "\n";
  return kOk;
}

}  // namespace

void add_audit(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "audit",
      "The broker's audit chain: every publish, delivery, replay, administration and "
      "refusal, each record hashed into the next (BLAKE2b). Needs the operate permission.");
  cmd->require_subcommand(1);

  auto* verify = cmd->add_subcommand(
      "verify",
      "Check every link of the chain and name the first bad record. Exit status 6 when "
      "the chain is broken.");
  add_connect_options(verify, args->conn);
  verify->add_option("--dir", args->dir,
                     "check a STOPPED broker's data directory directly, without a broker");
  verify->add_option("--anchor", args->anchors,
                     "INDEX:HASH, a head printed by an earlier verify: the chain must still "
                     "hold it (repeatable)");
  verify->callback([args, &exit_code] { exit_code = run_verify(*args); });

  auto* show = cmd->add_subcommand("show", "List audit records, oldest first.");
  add_connect_options(show, args->conn);
  show->add_option("--since", args->since, "from this time (ISO-8601, a date, or epoch ms)");
  show->add_option("--from", args->from, "from this record index");
  show->add_option("--max", args->max, "at most this many records")
      ->check(CLI::Range(1u, 1000000u))
      ->capture_default_str();
  show->add_option("--agency", args->agency, "only records of this agency (actor or owner)");
  show->add_option("--action", args->action,
                   "only this action (Publish, Deliver, Read, Refused, Seek, ...)");
  show->callback([args, &exit_code] { exit_code = run_show(*args); });

  auto* person = cmd->add_subcommand(
      "person",
      "Which agencies received a person's events, and when (the data subject's right "
      "under UU 27/2022). The chain holds keyed hashes of NIKs, never NIKs; the query is "
      "itself recorded.");
  add_connect_options(person, args->conn);
  person->add_option("nik", args->nik, "the person's NIK (16 digits)")->required();
  person->callback([args, &exit_code] { exit_code = run_person(*args); });
}

}  // namespace kolabus::cli
