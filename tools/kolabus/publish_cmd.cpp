// kolabus publish: events as JSON Lines -> the durable outbox -> the broker, with
// one outcome per event (stored with its sequence, duplicate, or refused with the
// broker's reason).
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "commands.h"
#include "connection.h"
#include <client/publisher.h>
#include <schemas/json_codec.h>
#include <schemas/protocol_generated.h>
#include <schemas/validate.h>

namespace kolabus::cli {

namespace {

struct Args {
  std::string file = "-";
  std::string broker = "tcp://127.0.0.1:7400";
  std::string outbox = "var/kolabus-cli/outbox";
  double timeout_s = 30;
  std::size_t window = 1000;
  bool json = false;
  bool quiet = false;
  SecurityArgs security;
};

struct LineInfo {
  std::uint64_t line;
  std::string kind;
};

// Prints outcomes as they arrive (from the publisher's thread) and counts them.
class Report {
 public:
  Report(bool json, bool quiet) : json_(json), quiet_(quiet) {}

  // Held while events are queued and expected, so that an outcome arriving at
  // once on the sender thread waits until its line is known.
  std::unique_lock<std::mutex> hold() { return std::unique_lock(mu_); }
  // REQUIRES: hold() is held.
  void expect(std::uint64_t local_seq, LineInfo info) {
    lines_.emplace(local_seq, std::move(info));
  }

  void invalid_line(std::uint64_t line, const std::string& message) {
    std::lock_guard lock(mu_);
    ++invalid_;
    if (quiet_) return;
    if (json_) {
      print(nlohmann::json{{"line", line}, {"outcome", "invalid"}, {"message", message}});
    } else {
      std::cout << "line " << line << "  invalid  " << message << "\n";
    }
  }

  void outcome(const client::Outcome& o) {
    std::lock_guard lock(mu_);
    LineInfo info{0, ""};
    if (auto it = lines_.find(o.local_seq); it != lines_.end()) {
      info = std::move(it->second);
      lines_.erase(it);
    }
    nlohmann::json j{{"id", o.id.to_string()}};
    if (info.line != 0) j["line"] = info.line;
    if (!info.kind.empty()) j["kind"] = info.kind;
    std::string human;
    switch (o.kind) {
      case client::OutcomeKind::kAcked:
        ++stored_;
        j["outcome"] = "stored";
        j["sequence"] = o.sequence.value;
        human = "stored     sequence " + std::to_string(o.sequence.value);
        break;
      case client::OutcomeKind::kDuplicate:
        ++duplicates_;
        j["outcome"] = "duplicate";
        j["sequence"] = o.sequence.value;
        human = "duplicate  already in the log as sequence " + std::to_string(o.sequence.value);
        break;
      case client::OutcomeKind::kRefused: {
        ++refused_;
        const char* code =
            protocol::EnumNameErrorCode(static_cast<protocol::ErrorCode>(o.refusal.code));
        j["outcome"] = "refused";
        j["code"] = code;
        j["field"] = o.refusal.field;
        j["message"] = o.refusal.message;
        human = std::string("refused    ") + code + "  " + o.refusal.message;
        break;
      }
    }
    if (quiet_) return;
    if (json_) return print(j);
    std::cout << (info.line != 0 ? "line " + std::to_string(info.line) : "earlier run") << "  "
              << o.id.to_string() << "  " << (info.kind.empty() ? "?" : info.kind) << "  " << human
              << "\n";
  }

  // Writes the summary; returns the exit code.
  int finish(std::uint64_t still_pending) {
    std::lock_guard lock(mu_);
    const std::uint64_t total = stored_ + duplicates_ + refused_ + invalid_;
    if (json_) {
      print(nlohmann::json{{"summary",
                            {{"stored", stored_},
                             {"duplicate", duplicates_},
                             {"refused", refused_},
                             {"invalid", invalid_},
                             {"pending", still_pending}}}});
    } else {
      std::cout << "summary: " << total << " answered: " << stored_ << " stored, " << duplicates_
                << " duplicate, " << refused_ << " refused by the broker, " << invalid_
                << " invalid lines";
      if (still_pending > 0) {
        std::cout << "; " << still_pending
                  << " still in the outbox (the broker did not answer in time; they are sent "
                     "on the next run)";
      }
      std::cout << "\n";
    }
    std::cout.flush();
    if (still_pending > 0) return kUnavailable;
    return (refused_ > 0 || invalid_ > 0) ? kRefused : kOk;
  }

 private:
  void print(const nlohmann::json& j) { std::cout << j.dump() << "\n"; }

  std::mutex mu_;
  bool json_, quiet_;
  std::map<std::uint64_t, LineInfo> lines_;
  std::uint64_t stored_ = 0, duplicates_ = 0, refused_ = 0, invalid_ = 0;
};

int run_publish(const Args& a) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (a.file != "-") {
    file.open(a.file);
    if (!file) {
      std::cerr << "kolabus publish: cannot open " << a.file << "\n";
      return kUsage;
    }
    in = &file;
  }
  auto codec = schemas::JsonCodec::create();
  if (!codec) {
    std::cerr << "kolabus publish: " << codec.error().to_string() << "\n";
    return kInternal;
  }
  auto curve = load_curve(a.security);
  if (!curve) {
    std::cerr << "kolabus publish: " << curve.error().message << "\n";
    return kUsage;
  }
  Report report(a.json, a.quiet);
  client::PublisherOptions opt;
  opt.curve = std::move(*curve);
  opt.endpoint = a.broker;
  opt.outbox_dir = a.outbox;
  opt.window = a.window;
  auto pub = client::Publisher::open(opt, [&](const client::Outcome& o) { report.outcome(o); });
  if (!pub) {
    std::cerr << "kolabus publish: cannot open the outbox " << a.outbox << ": "
              << pub.error().to_string() << "\n";
    return pub.error().code == Errc::kBusy ? kUnavailable : kUsage;
  }

  // Read, convert and enqueue in batches: one synced outbox write per batch.
  constexpr std::size_t kBatch = 1000;
  std::vector<std::vector<std::uint8_t>> events;
  std::vector<LineInfo> infos;
  auto flush = [&]() -> bool {
    if (events.empty()) return true;
    std::vector<std::span<const std::uint8_t>> spans(events.begin(), events.end());
    auto guard = report.hold();
    auto seqs = (*pub)->publish_batch(spans);
    if (!seqs) {
      std::cerr << "kolabus publish: cannot queue events: " << seqs.error().to_string() << "\n";
      return false;
    }
    for (std::size_t i = 0; i < seqs->size(); ++i) report.expect((*seqs)[i], infos[i]);
    events.clear();
    infos.clear();
    return true;
  };
  std::string line;
  std::uint64_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto enc = codec->from_json(line);
    if (!enc) {
      report.invalid_line(line_no, enc.error().message);
      continue;
    }
    const auto* ev = schemas::verified_event(enc->bytes);
    infos.push_back({line_no, ev ? schemas::kind_name(ev->payload_type()) : "?"});
    events.push_back(std::move(enc->bytes));
    if (events.size() >= kBatch && !flush()) return kInternal;
  }
  if (!flush()) return kInternal;

  // A refused key cannot get better within this run: stop waiting once the
  // publisher reports it (the events stay in the outbox).
  using SteadyClock = std::chrono::steady_clock;
  const auto deadline =
      SteadyClock::now() + std::chrono::milliseconds(static_cast<long>(a.timeout_s * 1000));
  while (!(*pub)->wait_drained(std::chrono::milliseconds(100)) && !(*pub)->stats().unauthorised &&
         SteadyClock::now() < deadline) {
  }
  const auto stats = (*pub)->stats();
  if (stats.pending > 0 && !stats.last_error.empty()) {
    std::cerr << "kolabus publish: " << stats.last_error << "\n";
  }
  pub->reset();  // stop the sender before the report goes away
  return report.finish(stats.pending);
}

}  // namespace

void add_publish(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  if (const char* b = std::getenv("KOLABUS_BROKER")) args->broker = b;
  if (const char* o = std::getenv("KOLABUS_OUTBOX")) args->outbox = o;
  auto* cmd = app.add_subcommand(
      "publish",
      "Publish events given as JSON Lines (one kolabus.events.Event per line, see "
      "docs/PROTOCOL.md). Each event is first stored in a durable outbox, then sent; the "
      "outcome of each is printed. Lines without an \"id\" get one derived from their "
      "content, so publishing the same file again stores nothing twice.");
  cmd->add_option("file", args->file, "JSON Lines file, or - for standard input")
      ->capture_default_str();
  cmd->add_option("-b,--broker", args->broker, "broker endpoint (env KOLABUS_BROKER)")
      ->capture_default_str();
  cmd->add_option("--outbox", args->outbox, "outbox directory (env KOLABUS_OUTBOX)")
      ->capture_default_str();
  cmd->add_option("--timeout", args->timeout_s,
                  "seconds to wait for the broker's answers; unanswered events stay queued")
      ->capture_default_str();
  cmd->add_option("--window", args->window, "events in flight at most")->capture_default_str();
  cmd->add_flag("--json", args->json, "one JSON object per outcome, for scripts");
  cmd->add_flag("-q,--quiet", args->quiet, "print only the summary");
  add_security_options(cmd, args->security);
  cmd->callback([args, &exit_code] { exit_code = run_publish(*args); });
}

}  // namespace kolabus::cli
