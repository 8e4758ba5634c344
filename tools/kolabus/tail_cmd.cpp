// kolabus tail: attach to a durable consumer (creating it on first use) and print
// each event as it arrives, acknowledging it once printed. Because the consumer is
// durable, a tail stopped and started again goes on where it left off.
#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include <pthread.h>

#include "commands.h"
#include "output.h"
#include <client/consumer.h>
#include <schemas/json_codec.h>

namespace kolabus::cli {

namespace {

struct Args {
  std::string broker = "tcp://127.0.0.1:7400";
  std::string consumer;
  std::vector<std::string> kinds;
  std::vector<std::string> regions;
  std::string start = "latest";
  std::uint64_t count = 0;  // 0: no limit
  double timeout_s = 0;     // 0: no limit
  std::string inbox;
  bool json = false;
  SecurityArgs security;
};

// SIGINT and SIGTERM are blocked in every thread (set before any thread starts) and
// taken here with sigtimedwait, so stopping is an ordinary call to interrupt() on a
// normal thread, never work inside a signal handler.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~SignalWatcher() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    // Drop a signal that came too late to matter, then restore the mask.
    timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  // Starts watching; `on_signal` runs on the watcher thread.
  template <typename F>
  void start(F on_signal) {
    thread_ = std::thread([this, on_signal] {
      const timespec tick{0, 100'000'000};
      while (!stop_.load()) {
        if (sigtimedwait(&set_, nullptr, &tick) > 0) {
          signalled_.store(true);
          on_signal();
        }
      }
    });
  }
  bool signalled() const { return signalled_.load(); }

 private:
  sigset_t set_{}, old_{};
  std::atomic<bool> stop_{false}, signalled_{false};
  std::thread thread_;
};

int run_tail(const Args& a) {
  auto kinds = parse_kinds(a.kinds);
  if (!kinds) {
    std::cerr << "kolabus tail: --kinds: " << kinds.error().message << "\n";
    return kUsage;
  }
  auto regions = parse_regions(a.regions);
  if (!regions) {
    std::cerr << "kolabus tail: --regions: " << regions.error().message << "\n";
    return kUsage;
  }
  auto curve = load_curve(a.security);
  if (!curve) {
    std::cerr << "kolabus tail: " << curve.error().message << "\n";
    return kUsage;
  }
  client::ConsumerOptions opt;
  opt.curve = std::move(*curve);
  opt.endpoint = a.broker;
  opt.name = a.consumer;
  for (auto k : *kinds) opt.kinds.push_back(static_cast<events::Payload>(k));
  opt.regions = std::move(*regions);
  if (a.start == "earliest") {
    opt.start = protocol::StartPolicy::Earliest;
  } else if (a.start == "latest") {
    opt.start = protocol::StartPolicy::Latest;
  } else {
    auto pos = parse_position(a.start);
    if (!pos) {
      std::cerr << "kolabus tail: --start: " << pos.error().message
                << " (or give earliest or latest)\n";
      return kUsage;
    }
    opt.start =
        pos->sequence != 0 ? protocol::StartPolicy::AtSequence : protocol::StartPolicy::AtTime;
    opt.start_sequence = pos->sequence;
    opt.start_time = pos->time;
  }
  opt.inbox_dir = a.inbox.empty() ? "var/kolabus-cli/inbox-" + a.consumer : a.inbox;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(opt.inbox_dir).parent_path(), ec);

  auto codec = schemas::JsonCodec::create();
  if (!codec) return report_error("tail", codec.error());

  SignalWatcher signals;  // before the consumer starts any thread
  auto consumer = client::Consumer::open(opt);
  if (!consumer) {
    std::cerr << "kolabus tail: cannot open the inbox " << opt.inbox_dir << ": "
              << consumer.error().message << "\n";
    return consumer.error().code == Errc::kBusy ? kUnavailable : kUsage;
  }
  client::Consumer* raw = consumer->get();
  signals.start([raw] { raw->interrupt(); });

  std::uint64_t printed = 0;
  const client::Handler handler = [&](const client::Received& r, storage::Inbox::Txn&) {
    if (a.json) {
      std::cout << event_json(*codec, r.sequence.value, r.received_at, r.source, r.event).dump()
                << "\n";
    } else {
      std::cout << summary_line(summarize_event(r.sequence.value, r.received_at, r.source, r.event))
                << "\n";
    }
    std::cout.flush();
    ++printed;
    return client::HandlerResult{};  // kAck
  };

  using Clock = std::chrono::steady_clock;
  const auto silence_limit = std::chrono::milliseconds(static_cast<long>(a.timeout_s * 1000));
  auto last_event = Clock::now();
  const auto started = Clock::now();
  bool warned = false;
  std::string stopped = "interrupted";
  int rc = kOk;
  for (;;) {
    if (signals.signalled()) break;
    if (a.count != 0 && printed >= a.count) {
      stopped = "count reached";
      break;
    }
    auto slice = std::chrono::milliseconds(1000);
    if (silence_limit.count() > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          silence_limit - (Clock::now() - last_event));
      if (left.count() <= 0) {
        std::ostringstream why;
        why << "no event for " << a.timeout_s << " s";
        stopped = why.str();
        break;
      }
      slice = std::min(slice, left);
    }
    const std::uint64_t before = printed;
    auto n = (*consumer)->poll(
        handler, slice, a.count != 0 ? static_cast<std::size_t>(a.count - printed) : SIZE_MAX);
    if (!n) {
      rc = report_error("tail", n.error());
      stopped = "error";
      break;
    }
    if (printed > before) last_event = Clock::now();
    const auto st = (*consumer)->stats();
    if (!st.subscribed && !warned && Clock::now() - started > std::chrono::seconds(5)) {
      std::cerr << "kolabus tail: waiting for the broker at " << a.broker
                << (st.last_error.empty() ? "" : " (" + st.last_error + ")") << "\n";
      warned = true;
    }
  }
  const auto st = (*consumer)->stats();
  (*consumer)->close();
  if (rc == kOk && !st.subscribed && printed == 0 && !signals.signalled()) {
    std::cerr << "kolabus tail: the broker at " << a.broker << " never answered"
              << (st.last_error.empty() ? "" : " (" + st.last_error + ")") << "\n";
    rc = kUnavailable;
  }
  std::cerr << "tail: " << printed << " event" << (printed == 1 ? "" : "s") << " from consumer "
            << a.consumer << " (" << stopped;
  if (st.duplicates_skipped > 0) {
    std::cerr << "; " << st.duplicates_skipped << " redelivered duplicates skipped";
  }
  std::cerr << ")\n";
  return rc;
}

}  // namespace

void add_tail(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  if (const char* b = std::getenv("KOLABUS_BROKER")) args->broker = b;
  auto* cmd = app.add_subcommand(
      "tail",
      "Print events as they arrive through a durable consumer (created on first use with "
      "--kinds, --regions and --start; later runs must give the same filter and go on "
      "where the last one stopped). Each event is acknowledged once printed. Human lines "
      "are SEQ TIME(UTC) KIND REGIONS SUMMARY; --json prints the JSON lines of replay. "
      "Runs until SIGINT (Ctrl-C), --count events or --timeout seconds of silence.");
  cmd->add_option("-b,--broker", args->broker, "broker endpoint (env KOLABUS_BROKER)")
      ->capture_default_str();
  cmd->add_option("--consumer", args->consumer, "the durable consumer's name")->required();
  cmd->add_option("--kinds", args->kinds, "birth,death,move (default: all)")->delimiter(',');
  cmd->add_option("--regions", args->regions, "region prefixes of 2/4/6/10 digits (default: all)")
      ->delimiter(',');
  cmd->add_option("--start", args->start,
                  "where a new consumer starts: earliest, latest, SEQ or TIME (UTC; "
                  "2026-11-27T10:00:00Z or epoch ms)")
      ->capture_default_str();
  cmd->add_option("--count", args->count, "stop after this many events");
  cmd->add_option("--timeout", args->timeout_s, "stop after this many seconds without an event")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--inbox", args->inbox,
                  "the consumer's dedup inbox directory (default var/kolabus-cli/inbox-NAME)");
  cmd->add_flag("--json", args->json, "one JSON object per event, as replay prints");
  add_security_options(cmd, args->security);
  cmd->callback([args, &exit_code] { exit_code = run_tail(*args); });
}

}  // namespace kolabus::cli
