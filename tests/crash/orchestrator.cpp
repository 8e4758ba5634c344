// The crash suite's orchestrator: starts the broker and the client processes, kills
// them on a seeded plan, waits for the publishers to drain and the consumers to
// catch up, stops everything and hands the work directory to the checker.
//
// The plan (which process, how long it lives before the kill, how long it stays
// down, the windows) comes from the seed; the instants depend on the machine, so a
// replay repeats the plan and the events, not the exact interleaving.
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "checker.h"
#include "child_process.h"
#include "crash_suite.h"
#include <client/admin.h>

namespace kolabus::crash {

namespace {

using SteadyClock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;
using namespace std::chrono_literals;

struct BrokerKill {
  int up_ms = 0;    // serving this long, then SIGKILL
  int down_ms = 0;  // then restarted after this pause
  // Killed this long after its start instead, whether it serves yet or not: a crash
  // during recovery (RocksDB open, consumer positions loaded).
  std::optional<int> at_startup_ms;
  // Killed this long after a publisher journals the intent of a burst (100 events or
  // more, about to be enqueued and sent), if one comes within up_ms + 3 s: a crash
  // with hundreds of events in flight, which random instants rarely hit in a short run.
  std::optional<int> aimed_ms;
  // Before the kill, frozen (SIGSTOP) this long after it serves, for pause_ms, then
  // SIGCONT: a stalled broker (a VM or I/O freeze) that clients give up on — they
  // resend and resubscribe on fresh connections while it still holds the old ones.
  std::optional<int> pause_at_ms;
  int pause_ms = 0;
};

struct ClientKill {
  int gap_ms = 0;  // after the previous client kill
  int target = 0;  // publishers first, then consumers; a finished publisher is skipped
  int down_ms = 0;
};

struct Plan {
  std::vector<BrokerKill> broker;
  std::vector<ClientKill> clients;
  std::vector<std::uint32_t> publisher_window;
  std::vector<std::uint32_t> consumer_window;
};

Plan make_plan(const SuiteOptions& o) {
  std::mt19937_64 rng(derive_seed(o.seed, 3, 0));
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Plan p;
  for (int i = 0; i < o.kills; ++i) {
    BrokerKill k{uniform(300, 1500), uniform(0, 400), std::nullopt, std::nullopt, std::nullopt, 0};
    const int how = uniform(0, 99);
    if (i > 0 && how < 20) {
      k.at_startup_ms = uniform(0, 80);
    } else if (how >= 70) {
      k.aimed_ms = uniform(0, 8);
    }
    if (uniform(0, 99) < 15) {
      k.pause_at_ms = uniform(0, k.up_ms / 2);
      k.pause_ms = uniform(1200, 3000);  // longer than the clients' ack timeouts
      k.up_ms += k.pause_ms;
    }
    p.broker.push_back(k);
  }
  const int clients = o.client_kills < 0 ? o.kills : o.client_kills;
  for (int i = 0; i < clients && o.publishers + o.consumers > 0; ++i) {
    p.clients.push_back(
        {uniform(200, 1800), uniform(0, o.publishers + o.consumers - 1), uniform(0, 500)});
  }
  // One event in flight at a time, a few, or the default: each its own timing.
  static constexpr std::uint32_t kPubWindows[] = {1, 32, 1000};
  static constexpr std::uint32_t kConWindows[] = {8, 100, 1000};
  for (int i = 0; i < o.publishers; ++i) p.publisher_window.push_back(kPubWindows[uniform(0, 2)]);
  for (int i = 0; i < o.consumers; ++i) p.consumer_window.push_back(kConWindows[uniform(0, 2)]);
  return p;
}

struct Client {
  bool publisher = true;
  int index = 0;
  std::string label;  // "publisher 0", "consumer crash-c1"
  std::string log;
  ChildProcess proc;
  bool done = false;  // a publisher that drained and exited 0
  std::optional<SteadyClock::time_point> restart_at;
  int kills = 0;
  int unexpected_exits = 0;
};

enum class BrokerState { kStarting, kUp, kDown };

class Run {
 public:
  Run(const SuiteOptions& o, std::string work)
      : o_(o), work_(std::move(work)), plan_(make_plan(o)) {}

  int execute();

 private:
  void say(const std::string& msg) const;
  void note_problem(const std::string& msg);
  std::string replay_command() const;
  void spawn_broker(SteadyClock::time_point now);
  std::optional<std::string> served_endpoint() const;
  void tick_broker(SteadyClock::time_point now);
  void spawn_client(Client& c);
  void tick_clients(SteadyClock::time_point now);
  void kill_client(const ClientKill& k, SteadyClock::time_point now);
  bool publishers_done() const;
  bool clients_settled() const;
  std::vector<std::optional<client::ConsumerInfoView>> wait_caught_up();
  void stop_all();

  SuiteOptions o_;
  std::string work_;
  Plan plan_;
  SteadyClock::time_point t0_ = SteadyClock::now();
  TimeMs now_ms_ = 0;    // the event generator's "now"
  TimeMs start_ms_ = 0;  // the publishers' pacing origin

  ChildProcess broker_;
  BrokerState broker_state_ = BrokerState::kDown;
  std::string endpoint_;  // fixed once the first broker serves; every restart reuses it
  std::optional<SteadyClock::time_point> broker_kill_at_;
  SteadyClock::time_point broker_restart_at_;
  SteadyClock::time_point broker_started_at_;
  std::size_t broker_kills_ = 0;
  int broker_startup_kills_ = 0;
  int broker_aimed_kills_ = 0;
  // An aimed kill waits for a burst until then, and falls back to broker_kill_at_.
  std::optional<SteadyClock::time_point> aim_until_;
  SteadyClock::time_point aim_fallback_;  // when it dies if no publisher is left
  std::optional<SteadyClock::time_point> pause_at_, resume_at_;
  int broker_pauses_ = 0;
  std::vector<std::uintmax_t> sent_log_size_;  // each publisher's sent.log, last tick
  int broker_unexpected_exits_ = 0;

  std::vector<Client> clients_;
  std::size_t client_kills_ = 0;
  int client_kills_skipped_ = 0;
  bool fatal_ = false;  // something that makes going on pointless
  std::vector<std::string> problems_;
};

void Run::say(const std::string& msg) const {
  const double t = std::chrono::duration<double>(SteadyClock::now() - t0_).count();
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "[%7.1fs] ", t);
  std::cout << stamp << msg << std::endl;
}

void Run::note_problem(const std::string& msg) {
  say("PROBLEM: " + msg);
  problems_.push_back(msg);
}

std::string Run::replay_command() const {
  std::ostringstream s;
  s << o_.self_exe << " --seed " << o_.seed << " --kills " << o_.kills << " --client-kills "
    << plan_.clients.size() << " --publishers " << o_.publishers << " --consumers " << o_.consumers
    << " --events " << o_.events << " --spread-ms " << o_.spread_ms;
  return s.str();
}

std::optional<std::string> Run::served_endpoint() const {
  std::ifstream in(work_ + "/broker.endpoint");
  std::string line;
  if (std::getline(in, line) && !line.empty()) return line;
  return std::nullopt;
}

void Run::spawn_broker(SteadyClock::time_point now) {
  std::filesystem::remove(work_ + "/broker.endpoint");
  auto child =
      ChildProcess::spawn({o_.broker_bin, "--dev", "--data-dir", work_ + "/broker", "--endpoint",
                           endpoint_.empty() ? "tcp://127.0.0.1:*" : endpoint_, "--endpoint-file",
                           work_ + "/broker.endpoint", "--log-level", "warn"},
                          work_ + "/broker.log");
  if (!child) {
    note_problem("cannot start the broker: " + child.error().to_string());
    fatal_ = true;
    return;
  }
  broker_ = std::move(*child);
  broker_state_ = BrokerState::kStarting;
  broker_started_at_ = now;
  if (broker_kills_ < plan_.broker.size() && plan_.broker[broker_kills_].at_startup_ms) {
    broker_kill_at_ = now + Ms(*plan_.broker[broker_kills_].at_startup_ms);
  }
}

void Run::tick_broker(SteadyClock::time_point now) {
  if (broker_state_ != BrokerState::kDown) {
    if (auto st = broker_.poll()) {
      note_problem("the broker ended by itself (" + describe_status(*st) + "); see " + work_ +
                   "/broker.log");
      broker_state_ = BrokerState::kDown;
      broker_kill_at_.reset();
      aim_until_.reset();
      pause_at_.reset();
      resume_at_.reset();
      broker_restart_at_ = now + 200ms;
      if (++broker_unexpected_exits_ >= 5) fatal_ = true;
      return;
    }
  }
  if (broker_state_ == BrokerState::kStarting) {
    if (served_endpoint()) {
      broker_state_ = BrokerState::kUp;
      if (!broker_kill_at_ && broker_kills_ < plan_.broker.size()) {
        const BrokerKill& k = plan_.broker[broker_kills_];
        broker_kill_at_ = now + Ms(k.up_ms);
        if (k.pause_at_ms) pause_at_ = now + Ms(*k.pause_at_ms);
        if (k.aimed_ms) {
          aim_fallback_ = *broker_kill_at_;
          aim_until_ = now + Ms(k.up_ms) + 3s;
          broker_kill_at_ = *aim_until_;
        }
      }
    } else if (now - broker_started_at_ > 30s) {
      note_problem("the broker did not serve within 30 s of its start; killing it");
      broker_.stop(SIGKILL);
      broker_state_ = BrokerState::kDown;
      broker_kill_at_.reset();
      aim_until_.reset();
      broker_restart_at_ = now;
      if (++broker_unexpected_exits_ >= 5) fatal_ = true;
      return;
    }
  }
  // A burst's intent journalled since the last tick: an aimed kill goes off shortly
  // after, while the burst is in flight.
  bool burst = false;
  for (int p = 0; p < o_.publishers; ++p) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(publisher_dir(work_, p) + "/sent.log", ec);
    if (ec) continue;
    auto& last = sent_log_size_[static_cast<std::size_t>(p)];
    if (size > last && size - last >= 100 * 37) burst = true;  // 37 bytes per event id
    last = size;
  }
  if (aim_until_ && !burst && publishers_done()) {
    // No publisher left to burst: an ordinary kill.
    broker_kill_at_ = aim_fallback_;
    aim_until_.reset();
  }
  if (burst && aim_until_ && broker_state_ == BrokerState::kUp) {
    const int delay = *plan_.broker[broker_kills_].aimed_ms;
    broker_kill_at_ = now + Ms(delay);
    aim_until_.reset();
    broker_aimed_kills_++;
    if (o_.verbose)
      say("a burst is on its way: the broker dies in " + std::to_string(delay) + " ms");
  }
  if (pause_at_ && now >= *pause_at_ && broker_state_ == BrokerState::kUp) {
    const int ms = plan_.broker[broker_kills_].pause_ms;
    ::kill(broker_.pid(), SIGSTOP);
    pause_at_.reset();
    resume_at_ = now + Ms(ms);
    broker_pauses_++;
    if (o_.verbose) say("broker frozen (SIGSTOP) for " + std::to_string(ms) + " ms");
  }
  if (resume_at_ && now >= *resume_at_ && broker_state_ != BrokerState::kDown) {
    ::kill(broker_.pid(), SIGCONT);
    resume_at_.reset();
  }
  if (broker_kill_at_ && now >= *broker_kill_at_ && broker_state_ != BrokerState::kDown) {
    const bool starting = broker_state_ == BrokerState::kStarting;
    const auto lived = std::chrono::duration_cast<Ms>(now - broker_started_at_).count();
    broker_.stop(SIGKILL);
    const BrokerKill& k = plan_.broker[broker_kills_];
    broker_kills_++;
    if (starting) broker_startup_kills_++;
    broker_kill_at_.reset();
    aim_until_.reset();
    pause_at_.reset();
    resume_at_.reset();
    broker_state_ = BrokerState::kDown;
    broker_restart_at_ = now + Ms(k.down_ms);
    if (o_.verbose) {
      say("broker killed (" + std::to_string(broker_kills_) + "/" + std::to_string(o_.kills) +
          ") " + std::to_string(lived) + " ms after its start" +
          (starting ? ", before it served" : "") + "; restart in " + std::to_string(k.down_ms) +
          " ms");
    }
  }
  if (broker_state_ == BrokerState::kDown && now >= broker_restart_at_ && !fatal_) {
    spawn_broker(now);
  }
}

void Run::spawn_client(Client& c) {
  std::vector<std::string> argv{o_.self_exe};
  if (c.publisher) {
    const std::string dir = publisher_dir(work_, c.index);
    std::filesystem::create_directories(dir);
    argv.insert(argv.end(),
                {"publisher", "--dir", dir, "--broker", endpoint_, "--id", std::to_string(c.index),
                 "--seed", std::to_string(o_.seed), "--events", std::to_string(o_.events),
                 "--now-ms", std::to_string(now_ms_), "--start-ms", std::to_string(start_ms_),
                 "--spread-ms", std::to_string(o_.spread_ms), "--window",
                 std::to_string(plan_.publisher_window[c.index])});
  } else {
    const std::string dir = consumer_dir(work_, c.index);
    std::filesystem::create_directories(dir);
    const FilterSpec f = filter_for(c.index);
    argv.insert(argv.end(),
                {"consumer", "--dir", dir, "--broker", endpoint_, "--name", consumer_name(c.index),
                 "--window", std::to_string(plan_.consumer_window[c.index])});
    for (auto k : f.kinds) argv.insert(argv.end(), {"--kind", std::to_string(k)});
    for (const auto& r : f.regions) argv.insert(argv.end(), {"--region", r});
  }
  auto child = ChildProcess::spawn(argv, c.log);
  if (!child) {
    note_problem("cannot start " + c.label + ": " + child.error().to_string());
    fatal_ = true;
    return;
  }
  c.proc = std::move(*child);
  c.restart_at.reset();
}

void Run::tick_clients(SteadyClock::time_point now) {
  for (auto& c : clients_) {
    if (c.proc.running()) {
      if (auto st = c.proc.poll()) {
        if (c.publisher && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) {
          c.done = true;
          if (o_.verbose) say(c.label + " drained and done");
        } else {
          note_problem(c.label + " ended by itself (" + describe_status(*st) + "); see " + c.log);
          c.restart_at = now + 200ms;
          if (++c.unexpected_exits >= 5) fatal_ = true;
        }
      }
    }
    if (!c.proc.running() && !c.done && c.restart_at && now >= *c.restart_at && !fatal_) {
      spawn_client(c);
    }
  }
}

void Run::kill_client(const ClientKill& k, SteadyClock::time_point now) {
  const std::size_t n = clients_.size();
  for (std::size_t i = 0; i < n; ++i) {
    Client& c = clients_[(static_cast<std::size_t>(k.target) + i) % n];
    if (!c.proc.running()) continue;
    c.proc.stop(SIGKILL);
    c.kills++;
    c.restart_at = now + Ms(k.down_ms);
    if (o_.verbose) {
      say(c.label + " killed (client kill " + std::to_string(client_kills_ + 1) + "/" +
          std::to_string(plan_.clients.size()) + "); restart in " + std::to_string(k.down_ms) +
          " ms");
    }
    return;
  }
  client_kills_skipped_++;
}

bool Run::publishers_done() const {
  if (clients_.empty()) return false;  // not started yet
  for (const auto& c : clients_) {
    if (c.publisher && !c.done) return false;
  }
  return true;
}

bool Run::clients_settled() const {
  for (const auto& c : clients_) {
    if (c.publisher && !c.done) return false;
    if (!c.publisher && !c.proc.running()) return false;
  }
  return true;
}

std::vector<std::optional<client::ConsumerInfoView>> Run::wait_caught_up() {
  std::vector<std::optional<client::ConsumerInfoView>> info(static_cast<std::size_t>(o_.consumers));
  auto admin = client::AdminClient::connect(endpoint_, 2000ms);
  if (!admin) {
    note_problem("cannot connect an admin client: " + admin.error().to_string());
    return info;
  }
  const auto deadline = SteadyClock::now() + std::chrono::seconds(o_.settle_s);
  int stable = 0;
  std::string last_error;
  auto next_report = SteadyClock::now() + 2s;
  while (SteadyClock::now() < deadline && !fatal_) {
    const auto now = SteadyClock::now();
    tick_broker(now);
    tick_clients(now);
    if (broker_state_ == BrokerState::kUp) {
      auto list = (*admin)->list_consumers();
      if (!list) {
        last_error = list.error().to_string();
      } else {
        bool all = true;
        for (int i = 0; i < o_.consumers; ++i) {
          info[static_cast<std::size_t>(i)].reset();
          for (const auto& c : *list) {
            if (c.name == consumer_name(i)) info[static_cast<std::size_t>(i)] = c;
          }
          const auto& ci = info[static_cast<std::size_t>(i)];
          all = all && ci && ci->lag == 0 && ci->pending == 0;
        }
        // Twice in a row, 250 ms apart: no Ack still on its way changes the picture.
        stable = all ? stable + 1 : 0;
        if (stable >= 2) {
          say("consumers caught up");
          return info;
        }
        if (o_.verbose && now >= next_report) {
          std::string lags;
          for (const auto& ci : info) {
            if (ci)
              lags += " " + ci->name + " lag " + std::to_string(ci->lag) + " pending " +
                      std::to_string(ci->pending) + ";";
          }
          say("catching up:" + lags);
          next_report = now + 2s;
        }
      }
    }
    std::this_thread::sleep_for(250ms);
  }
  std::string detail;
  for (int i = 0; i < o_.consumers; ++i) {
    const auto& ci = info[static_cast<std::size_t>(i)];
    detail += " " + consumer_name(i) + ":" +
              (ci ? " lag " + std::to_string(ci->lag) + " pending " + std::to_string(ci->pending)
                  : std::string(" unknown"));
  }
  note_problem("consumers not caught up " + std::to_string(o_.settle_s) +
               " s after the last kill:" + detail + (last_error.empty() ? "" : "; " + last_error));
  return info;
}

void Run::stop_all() {
  for (auto& c : clients_) {
    if (!c.proc.running()) continue;
    if (c.publisher) {
      note_problem(c.label + " still running at the end; killed");
      c.proc.stop(SIGKILL);
      continue;
    }
    const int st = c.proc.stop(SIGTERM, 10s);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      note_problem(c.label + " did not stop cleanly on SIGTERM (" + describe_status(st) + ")");
    }
  }
  if (broker_.running()) {
    ::kill(broker_.pid(), SIGCONT);  // in case a freeze is still on
    const int st = broker_.stop(SIGTERM, 30s);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      note_problem("the broker did not stop cleanly on SIGTERM (" + describe_status(st) + ")");
    }
  }
}

int Run::execute() {
  now_ms_ = SystemClock().now_ms();
  start_ms_ = now_ms_;
  sent_log_size_.assign(static_cast<std::size_t>(o_.publishers), 0);
  std::cout << "kolabus crash suite: seed " << o_.seed << ", " << o_.kills << " broker kills, "
            << plan_.clients.size() << " client kills, " << o_.publishers << " publishers x "
            << o_.events << " events (spread over " << o_.spread_ms << " ms), " << o_.consumers
            << " consumers\n  work dir " << work_ << "\n  replay: " << replay_command() << "\n";
  for (int i = 0; i < o_.publishers; ++i) {
    std::cout << "  publisher " << i << ": window " << plan_.publisher_window[i] << "\n";
  }
  for (int i = 0; i < o_.consumers; ++i) {
    std::cout << "  consumer " << consumer_name(i) << ": " << filter_for(i).label << ", window "
              << plan_.consumer_window[i] << "\n";
  }
  std::cout.flush();

  // The first broker picks a free port; every restart binds the same one.
  spawn_broker(SteadyClock::now());
  while (!fatal_ && broker_state_ == BrokerState::kStarting) {
    tick_broker(SteadyClock::now());
    std::this_thread::sleep_for(5ms);
  }
  if (auto ep = served_endpoint()) endpoint_ = *ep;
  if (fatal_ || endpoint_.empty()) {
    note_problem("the broker never served");
    fatal_ = true;
  }
  say("broker serving on " + endpoint_);

  for (int i = 0; i < o_.publishers; ++i) {
    clients_.push_back({true,
                        i,
                        "publisher " + std::to_string(i),
                        publisher_dir(work_, i) + ".log",
                        {},
                        false,
                        {},
                        0,
                        0});
  }
  for (int i = 0; i < o_.consumers; ++i) {
    clients_.push_back({false,
                        i,
                        "consumer " + consumer_name(i),
                        consumer_dir(work_, i) + ".log",
                        {},
                        false,
                        {},
                        0,
                        0});
  }
  const auto start = SteadyClock::now();
  for (auto& c : clients_) c.restart_at = start;

  const int timeout_s = o_.timeout_s > 0 ? o_.timeout_s : 120 + 5 * o_.kills;
  const auto deadline = start + std::chrono::seconds(timeout_s);
  auto next_client_kill = start + Ms(plan_.clients.empty() ? 0 : plan_.clients.front().gap_ms);
  auto next_status = start + 10s;
  while (!fatal_) {
    const auto now = SteadyClock::now();
    tick_broker(now);
    tick_clients(now);
    if (client_kills_ < plan_.clients.size() && now >= next_client_kill) {
      kill_client(plan_.clients[client_kills_], now);
      client_kills_++;
      if (client_kills_ < plan_.clients.size()) {
        next_client_kill = now + Ms(plan_.clients[client_kills_].gap_ms);
      }
    }
    if (broker_kills_ == plan_.broker.size() && client_kills_ == plan_.clients.size() &&
        broker_state_ == BrokerState::kUp && clients_settled()) {
      break;
    }
    if (now > deadline) {
      std::string waiting;
      for (const auto& c : clients_) {
        if (c.publisher && !c.done) waiting += " " + c.label;
      }
      note_problem("the run did not finish within " + std::to_string(timeout_s) +
                   " s (broker kills " + std::to_string(broker_kills_) + ", client kills " +
                   std::to_string(client_kills_) + ", publishers not done:" + waiting + ")");
      break;
    }
    if (now >= next_status) {
      int done = 0;
      for (const auto& c : clients_) done += c.publisher && c.done ? 1 : 0;
      say("broker kills " + std::to_string(broker_kills_) + "/" + std::to_string(o_.kills) +
          ", client kills " + std::to_string(client_kills_) + "/" +
          std::to_string(plan_.clients.size()) + ", publishers done " + std::to_string(done) + "/" +
          std::to_string(o_.publishers));
      next_status = now + 10s;
    }
    std::this_thread::sleep_for(5ms);
  }
  say("kills over; waiting for the consumers to catch up");
  RunFacts facts;
  const auto settle_start = SteadyClock::now();
  if (!fatal_) facts.final_info = wait_caught_up();
  const double settle_seconds =
      std::chrono::duration<double>(SteadyClock::now() - settle_start).count();
  stop_all();
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - t0_).count();

  facts.work_dir = work_;
  facts.publishers = o_.publishers;
  facts.consumers = o_.consumers;
  facts.events_per_publisher = o_.events;
  facts.seed = o_.seed;
  facts.now_ms = now_ms_;
  facts.problems = problems_;
  const Report report = check_run(facts);

  int pub_kills = 0, con_kills = 0;
  for (const auto& c : clients_) (c.publisher ? pub_kills : con_kills) += c.kills;
  char summary[400];
  std::snprintf(summary, sizeof summary,
                "\nkolabus crash suite, seed %llu: %zu broker kills (%d before it served, %d "
                "aimed at a publisher's burst), %d broker freezes, %d publisher kills, %d "
                "consumer kills (%d client kills found nobody), %.1f s; the consumers caught up "
                "%.1f s after the kills\n",
                static_cast<unsigned long long>(o_.seed), broker_kills_, broker_startup_kills_,
                broker_aimed_kills_, broker_pauses_, pub_kills, con_kills, client_kills_skipped_,
                seconds, settle_seconds);
  std::cout << summary;
  report.print(std::cout);
  const bool ok = report.ok();
  std::cout << "\nRESULT: " << (ok ? "PASS" : "FAIL") << "   seed " << o_.seed
            << "\nreplay: " << replay_command() << "\n";
  std::cout.flush();
  return ok ? 0 : 1;
}

}  // namespace

int run_suite(const SuiteOptions& options) {
  SuiteOptions o = options;
  if (o.spread_ms < 0) o.spread_ms = 1000 * o.kills;
  std::string work = o.work_dir;
  if (work.empty()) {
    work = (std::filesystem::temp_directory_path() /
            ("kolabus-crash-" + std::to_string(o.seed) + "-" + std::to_string(::getpid())))
               .string();
  }
  std::error_code ec;
  if (std::filesystem::exists(work) && !std::filesystem::is_empty(work, ec)) {
    std::cerr << "kolabus-crash-suite: the work directory " << work << " is not empty\n";
    return 2;
  }
  std::filesystem::create_directories(work, ec);
  if (ec) {
    std::cerr << "kolabus-crash-suite: cannot create " << work << ": " << ec.message() << "\n";
    return 2;
  }
  const int rc = Run(o, work).execute();
  if (rc == 0 || !o.keep) {
    std::filesystem::remove_all(work, ec);
    if (rc != 0) std::cout << "(work directory removed; run with --keep to keep it)\n";
  } else {
    std::cout << "work directory kept: " << work << "\n";
  }
  return rc;
}

}  // namespace kolabus::crash
