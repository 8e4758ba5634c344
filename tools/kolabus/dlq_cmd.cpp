// kolabus dlq: the dead letters of durable consumers — events a consumer rejected or
// failed to acknowledge max_deliver times. List them, show one with its event, put
// them back into delivery (redrive) or delete them (drop).
#include <iostream>

#include "commands.h"
#include "output.h"
#include <schemas/json_codec.h>

namespace kolabus::cli {

namespace {

struct Args {
  ConnectArgs conn;
  std::string consumer;
  std::string owner;  // the consumer's agency; empty: the caller's own
  std::uint64_t from = 0;
  std::uint32_t max = 100;
  std::uint64_t sequence = 0;
  std::vector<std::uint64_t> sequences;
  bool all = false;
};

// The routing kind as a word: "birth", or "correction of birth".
std::string kind_text(std::uint8_t routing_kind) {
  const auto names = kind_names({static_cast<std::uint8_t>(routing_kind & 0x7f)});
  const std::string name = names.empty() ? "?" : names.front();
  return (routing_kind & 0x80) != 0 ? "correction of " + name : name;
}

nlohmann::ordered_json dead_letter_json(const client::DeadLetterView& d) {
  nlohmann::ordered_json j{{"consumer", d.consumer},
                           {"sequence", d.sequence},
                           {"attempts", d.attempts},
                           {"reason", d.reason},
                           {"dead_at", d.dead_at},
                           {"kind", kind_text(d.kind)},
                           {"regions", d.regions},
                           // Content only within the caller's own grant (docs/SECURITY.md).
                           {"content", !d.record.empty()}};
  if (auto s = summarize_record(d.record)) j["event_id"] = s->event_id;
  return j;
}

int run_list(const Args& a) {
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("dlq list", admin.error());
  auto items = (*admin)->dlq_list(a.consumer, a.from, a.max, a.owner);
  if (!items) return report_error("dlq list", items.error());
  if (a.conn.json) {
    for (const auto& d : *items) std::cout << dead_letter_json(d).dump() << "\n";
    return kOk;
  }
  if (items->empty()) {
    std::cout << "no dead letters" << (a.consumer.empty() ? "" : " for " + a.consumer) << "\n";
    return kOk;
  }
  Table table({"CONSUMER", "SEQ", "ATTEMPTS", "DEAD-AT", "KIND", "REGIONS", "REASON"});
  for (const auto& d : *items) {
    std::string regions;
    for (const auto& r : d.regions) regions += (regions.empty() ? "" : ",") + r;
    table.add({d.consumer, std::to_string(d.sequence), std::to_string(d.attempts),
               format_time(d.dead_at), kind_text(d.kind), regions, d.reason});
  }
  std::cout << table.render();
  if (items->size() >= a.max) {
    std::cout << "(first " << items->size() << " shown; page on with --from "
              << items->back().sequence + 1 << ")\n";
  }
  return kOk;
}

int run_show(const Args& a) {
  auto codec = schemas::JsonCodec::create();
  if (!codec) return report_error("dlq show", codec.error());
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("dlq show", admin.error());
  auto items = (*admin)->dlq_list(a.consumer, a.sequence, 1, a.owner);
  if (!items) return report_error("dlq show", items.error());
  if (items->empty() || items->front().sequence != a.sequence) {
    return report_error("dlq show",
                        Error{Errc::kNotFound, "sequence " + std::to_string(a.sequence) +
                                                   " is not a dead letter of " + a.consumer});
  }
  const auto& d = items->front();
  if (d.record.empty()) {
    // Operating is not reading: outside the caller's own grant, metadata only.
    if (a.conn.json) {
      std::cout << dead_letter_json(d).dump() << "\n";
      return kOk;
    }
    std::string regions;
    for (const auto& r : d.regions) regions += (regions.empty() ? "" : ",") + r;
    std::cout << "consumer:     " << d.consumer << "\n"
              << "sequence:     " << d.sequence << "\n"
              << "attempts:     " << d.attempts << "\n"
              << "dead at:      " << format_time(d.dead_at) << "\n"
              << "reason:       " << d.reason << "\n"
              << "kind:         " << kind_text(d.kind) << "\n"
              << "regions:      " << regions << "\n"
              << "event:        (not shown: outside this agency's own receive grant, agreement "
                 "or field profile)\n";
    return kOk;
  }
  auto record = record_json(*codec, d.record);
  if (!record) return report_error("dlq show", record.error());
  if (a.conn.json) {
    auto j = dead_letter_json(d);
    j["received_at"] = (*record)["received_at"];
    j["source"] = (*record)["source"];
    j["event"] = (*record)["event"];
    if (record->contains("error")) j["error"] = (*record)["error"];
    std::cout << j.dump() << "\n";
    return kOk;
  }
  std::cout << "consumer:     " << d.consumer << "\n"
            << "sequence:     " << d.sequence << "\n"
            << "attempts:     " << d.attempts << "\n"
            << "dead at:      " << format_time(d.dead_at) << "\n"
            << "reason:       " << d.reason << "\n"
            << "received at:  " << format_time((*record)["received_at"].get<TimeMs>()) << "\n"
            << "source:       " << (*record)["source"].get<std::string>() << "\n";
  if (record->contains("error")) {
    std::cout << "event:        (" << (*record)["error"].get<std::string>() << ")\n";
  } else {
    std::cout << "event:\n" << (*record)["event"].dump(2) << "\n";
  }
  return kOk;
}

// redrive and drop: the same shape.
int run_change(const Args& a, bool redrive) {
  const char* name = redrive ? "dlq redrive" : "dlq drop";
  if (!redrive && a.sequences.empty() && !a.all) {
    std::cerr << "kolabus dlq drop: name the sequences to drop, or give --all to drop every "
                 "dead letter of "
              << a.consumer << "\n";
    return kUsage;
  }
  if (!a.sequences.empty() && a.all) {
    std::cerr << "kolabus " << name << ": give sequences or --all, not both\n";
    return kUsage;
  }
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error(name, admin.error());
  auto count = redrive ? (*admin)->dlq_redrive(a.consumer, a.sequences)
                       : (*admin)->dlq_drop(a.consumer, a.sequences);
  if (!count) return report_error(name, count.error());
  const bool missing = !a.sequences.empty() && *count < a.sequences.size();
  if (a.conn.json) {
    nlohmann::ordered_json j{{"consumer", a.consumer}, {redrive ? "redriven" : "dropped", *count}};
    if (!a.sequences.empty()) j["requested"] = a.sequences.size();
    std::cout << j.dump() << "\n";
  } else {
    std::cout << (redrive ? "redrove " : "dropped ") << *count << " dead letter"
              << (*count == 1 ? "" : "s") << " of " << a.consumer;
    if (redrive && *count > 0) std::cout << " (delivered again, attempts counted from 1)";
    std::cout << "\n";
    if (missing) {
      std::cerr << "kolabus " << name << ": " << a.sequences.size() - *count << " of the "
                << a.sequences.size() << " sequences given are not dead letters of " << a.consumer
                << "\n";
    }
  }
  return missing ? kNotFound : kOk;
}

}  // namespace

void add_dlq(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "dlq",
      "Dead letters: events a consumer rejected, or did not acknowledge within max_deliver "
      "attempts. They wait here, with the reason, until redriven or dropped.");
  cmd->require_subcommand(1);

  auto* list = cmd->add_subcommand("list", "List dead letters, oldest sequence first.");
  add_connect_options(list, args->conn);
  list->add_option("--consumer", args->consumer, "only this consumer's (default: every one)");
  list->add_option("--owner", args->owner,
                   "the consumer's agency (default: your own; another's needs operate, and "
                   "shows events only within your own receive grant)");
  list->add_option("--from", args->from, "start at this sequence");
  list->add_option("--max", args->max, "at most this many")
      ->check(CLI::Range(1u, 100000u))
      ->capture_default_str();
  list->callback([args, &exit_code] { exit_code = run_list(*args); });

  auto* show = cmd->add_subcommand(
      "show", "Show one dead letter: reason, attempts, time, and the event as JSON.");
  add_connect_options(show, args->conn);
  show->add_option("consumer", args->consumer, "the consumer")->required();
  show->add_option("sequence", args->sequence, "the event's sequence")->required();
  show->add_option("--owner", args->owner,
                   "the consumer's agency (default: your own; another's needs operate, and "
                   "shows the event only within your own receive grant)");
  show->callback([args, &exit_code] { exit_code = run_show(*args); });

  auto* redrive = cmd->add_subcommand(
      "redrive",
      "Put dead letters back into the consumer's delivery, with their attempts counted "
      "afresh. Without sequences: all of the consumer's dead letters.");
  add_connect_options(redrive, args->conn);
  redrive->add_option("consumer", args->consumer, "the consumer")->required();
  redrive->add_option("sequences", args->sequences, "the dead letters (default: all)");
  redrive->callback([args, &exit_code] { exit_code = run_change(*args, true); });

  auto* drop = cmd->add_subcommand(
      "drop",
      "Delete dead letters for good (the event stays in the log). Needs sequences, "
      "or --all for every dead letter of the consumer.");
  add_connect_options(drop, args->conn);
  drop->add_option("consumer", args->consumer, "the consumer")->required();
  drop->add_option("sequences", args->sequences, "the dead letters to drop");
  drop->add_flag("--all", args->all, "drop every dead letter of the consumer");
  drop->callback([args, &exit_code] { exit_code = run_change(*args, false); });
}

}  // namespace kolabus::cli
