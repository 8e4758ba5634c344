// kolabus replay: move a durable consumer back (or forward) in the log, or stream a
// one-off range of the log as JSON Lines without creating any consumer.
#include <fstream>
#include <iostream>

#include "commands.h"
#include "output.h"
#include <schemas/json_codec.h>

namespace kolabus::cli {

namespace {

struct Args {
  ConnectArgs conn;
  // Seeking a consumer
  std::string consumer;
  std::uint64_t to_sequence = 0;
  std::string to_time;
  bool to_end = false;
  // Streaming a range
  std::string from;
  std::uint64_t to = 0;
  std::vector<std::string> kinds;
  std::vector<std::string> regions;
  std::string out;
  std::uint32_t page = 1000;
};

int run_seek(const Args& a) {
  const int given = (a.to_sequence != 0) + !a.to_time.empty() + a.to_end;
  if (given != 1) {
    std::cerr << "kolabus replay: with --consumer give exactly one of --to-sequence, --to-time "
                 "or --to-end\n";
    return kUsage;
  }
  if (a.to != 0 || !a.kinds.empty() || !a.regions.empty() || !a.out.empty()) {
    std::cerr << "kolabus replay: --to, --kinds, --regions and --out belong to a range "
                 "(--from); a consumer keeps the filter it was created with\n";
    return kUsage;
  }
  client::SeekPolicy policy = client::SeekPolicy::kAtSequence;
  TimeMs time = 0;
  if (!a.to_time.empty()) {
    auto t = parse_time(a.to_time);
    if (!t) {
      std::cerr << "kolabus replay: --to-time: " << t.error().message << "\n";
      return kUsage;
    }
    policy = client::SeekPolicy::kAtTime;
    time = *t;
  } else if (a.to_end) {
    policy = client::SeekPolicy::kLatest;
  }
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("replay", admin.error());
  auto info = (*admin)->seek(a.consumer, policy, a.to_sequence, time);
  if (!info) return report_error("replay", info.error());
  if (a.conn.json) {
    std::cout << consumer_json(*info).dump() << "\n";
  } else {
    std::cout << "consumer " << info->name << " now delivers from sequence " << info->next_sequence
              << " (ack floor " << info->ack_floor << ", lag " << info->lag << ", " << info->clients
              << " client" << (info->clients == 1 ? "" : "s") << " attached)\n";
  }
  return kOk;
}

int run_range(const Args& a) {
  if (a.to_sequence != 0 || !a.to_time.empty() || a.to_end) {
    std::cerr << "kolabus replay: --to-sequence, --to-time and --to-end move a consumer: give "
                 "--consumer (or use --from/--to for a one-off range)\n";
    return kUsage;
  }
  auto from = parse_position(a.from);
  if (!from) {
    std::cerr << "kolabus replay: --from: " << from.error().message << "\n";
    return kUsage;
  }
  if (a.to != 0 && from->sequence != 0 && a.to < from->sequence) {
    std::cerr << "kolabus replay: --to " << a.to << " is before --from " << from->sequence << "\n";
    return kUsage;
  }
  client::FilterView filter;
  auto kinds = parse_kinds(a.kinds);
  if (!kinds) {
    std::cerr << "kolabus replay: --kinds: " << kinds.error().message << "\n";
    return kUsage;
  }
  auto regions = parse_regions(a.regions);
  if (!regions) {
    std::cerr << "kolabus replay: --regions: " << regions.error().message << "\n";
    return kUsage;
  }
  filter.kinds = std::move(*kinds);
  filter.regions = std::move(*regions);

  std::ofstream file;
  std::ostream* out = &std::cout;
  if (!a.out.empty() && a.out != "-") {
    file.open(a.out, std::ios::out | std::ios::trunc);
    if (!file) {
      std::cerr << "kolabus replay: cannot write " << a.out << "\n";
      return kUsage;
    }
    out = &file;
  }
  auto codec = schemas::JsonCodec::create();
  if (!codec) return report_error("replay", codec.error());
  auto admin = connect_admin(a.conn);
  if (!admin) return report_connect_error("replay", admin.error());

  // Fix the end now, so that the range (and the percentage) does not grow while
  // publishers keep publishing.
  std::uint64_t to = a.to;
  if (to == 0) {
    auto info = (*admin)->ping();
    if (!info) return report_error("replay", info.error());
    to = info->next_sequence - 1;
  }

  Progress progress;
  std::uint64_t events = 0, unreadable = 0, pages = 0;
  std::uint64_t first = from->sequence, next = from->sequence;
  std::uint64_t first_seen = 0, last_seen = 0;
  int rc = kOk;
  if (to == 0) {
    // An empty log: nothing to read.
  } else {
    for (;;) {
      auto page = (*admin)->read_range(filter, next, next == 0 ? from->time : 0, to, a.page);
      if (!page) {
        progress.finish();
        rc = report_error("replay", page.error());
        break;
      }
      ++pages;
      for (const auto& record : page->records) {
        auto j = record_json(*codec, record);
        if (!j) {
          progress.finish();
          rc = report_error("replay", j.error());
          break;
        }
        if (j->contains("error")) ++unreadable;
        last_seen = (*j)["sequence"].get<std::uint64_t>();
        if (first_seen == 0) first_seen = last_seen;
        if (first == 0) first = last_seen;
        *out << j->dump() << "\n";
        ++events;
      }
      if (rc != kOk) break;
      if (page->done) {
        progress.update(events, to + 1, first, to, true);
        break;
      }
      if (page->next <= next) {
        progress.finish();
        std::cerr << "kolabus replay: the broker's page did not advance (next " << page->next
                  << " after " << next << "); stopping\n";
        rc = kInternal;
        break;
      }
      next = page->next;
      progress.update(events, next, first == 0 ? next : first, to);
    }
  }
  progress.finish();
  out->flush();
  if (!*out) {
    std::cerr << "kolabus replay: writing the events failed\n";
    if (rc == kOk) rc = kInternal;
  }

  // The summary goes where it does not mix with the events.
  std::ostream& sum = out == &std::cout ? std::cerr : std::cout;
  if (a.conn.json) {
    nlohmann::ordered_json s{
        {"events", events},     {"unreadable", unreadable},     {"pages", pages},
        {"to_sequence", to},    {"first_sequence", first_seen}, {"last_sequence", last_seen},
        {"complete", rc == kOk}};
    sum << nlohmann::ordered_json{{"summary", s}}.dump() << "\n";
  } else {
    sum << "replay: " << events << " event" << (events == 1 ? "" : "s");
    if (events == 1) sum << " (sequence " << last_seen << ")";
    if (events > 1) sum << " (sequences " << first_seen << ".." << last_seen << ")";
    sum << " up to sequence " << to;
    if (!a.out.empty() && a.out != "-") sum << " written to " << a.out;
    if (unreadable > 0) {
      sum << "; " << unreadable << " of a kind this tool cannot read (\"event\":null)";
    }
    if (rc != kOk) sum << "; INCOMPLETE";
    sum << "\n";
  }
  return rc;
}

}  // namespace

void add_replay(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "replay",
      "Replay events. With --consumer: move that durable consumer so that its next delivery "
      "is the first matching event at or after --to-sequence or --to-time (its "
      "unacknowledged deliveries are dropped). With --from: print a one-off range of the "
      "log as JSON Lines ({sequence, received_at, source, event}), without any consumer.\n"
      "TIME is UTC: 2026-11-27T10:00:00Z, 2026-11-27 (00:00 UTC; 07:00 WIB), an explicit "
      "offset (2026-11-27T17:00:00+07:00), or epoch milliseconds. Where SEQ|TIME is "
      "accepted, a number below 10^12 is a sequence, a larger one epoch milliseconds.");
  add_connect_options(cmd, args->conn);
  auto* consumer = cmd->add_option("--consumer", args->consumer, "the durable consumer to move");
  cmd->add_option("--to-sequence", args->to_sequence, "with --consumer: deliver again from here")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--to-time", args->to_time,
                  "with --consumer: deliver again from the first event received at or after "
                  "TIME (UTC)");
  cmd->add_flag("--to-end", args->to_end,
                "with --consumer: skip everything stored so far (only new events)");
  auto* from = cmd->add_option("--from", args->from, "range start: SEQ or TIME (UTC)");
  cmd->add_option("--to", args->to, "range end, a sequence, inclusive (default: the end now)");
  cmd->add_option("--kinds", args->kinds, "range filter: birth,death,move (default: all)")
      ->delimiter(',');
  cmd->add_option("--regions", args->regions,
                  "range filter: region prefixes of 2/4/6/10 digits (default: all)")
      ->delimiter(',');
  cmd->add_option("--out", args->out, "write the events to FILE instead of standard output");
  cmd->add_option("--page", args->page, "events per request to the broker")
      ->check(CLI::Range(1u, 100000u))
      ->capture_default_str();
  consumer->excludes(from);
  cmd->callback([args, consumer, from, &exit_code] {
    if (consumer->count() > 0) {
      exit_code = run_seek(*args);
    } else if (from->count() > 0) {
      exit_code = run_range(*args);
    } else {
      std::cerr << "kolabus replay: give --consumer NAME (move a consumer) or --from SEQ|TIME "
                   "(print a range); see kolabus replay --help\n";
      exit_code = kUsage;
    }
  });
}

}  // namespace kolabus::cli
