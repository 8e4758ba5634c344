// The context of a run and the loops every scenario shares.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <latch>
#include <thread>

#include "scenarios.h"
#include "stats.h"

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

// How long a publisher waits for any answer before it calls the server stuck.
constexpr auto kAnswerTimeout = std::chrono::seconds(60);

// Sends events begin, begin + stride, ... (below end).
Result<Acks> window_loop(PublishClient& client, std::uint64_t begin, std::uint64_t end,
                         std::uint64_t stride, std::uint32_t window,
                         std::optional<SteadyClock::time_point> deadline,
                         std::atomic<std::uint64_t>& answered, bool& stopped_by_time) {
  Acks total;
  std::uint64_t next = begin, in_flight = 0;
  for (;;) {
    const bool late = deadline && SteadyClock::now() >= *deadline;
    if (late && next < end) stopped_by_time = true;
    while (!late && in_flight < window && next < end) {
      client.send(next);
      next += stride;
      ++in_flight;
    }
    if (Status st = client.flush(); !st) return unexpected(st.error());
    if (in_flight == 0) break;
    auto r = client.receive(std::chrono::duration_cast<milliseconds>(kAnswerTimeout));
    if (!r) return unexpected(r.error());
    const std::uint64_t got = r->acked + r->refused;
    if (got == 0) {
      return unexpected(Errc::kUnavailable, "no answer within 60 s (" + std::to_string(in_flight) +
                                                " requests in flight)");
    }
    in_flight -= std::min(in_flight, got);
    total += *r;
    answered.fetch_add(got, std::memory_order_relaxed);
  }
  return total;
}

}  // namespace

bool BenchContext::wants(const std::string& system) const {
  return std::find(systems.begin(), systems.end(), system) != systems.end();
}

std::string BenchContext::fresh_dir(const std::string& name) {
  return work_dir + "/" + std::to_string(++dirs_) + "-" + name;
}

std::unique_ptr<System> BenchContext::make(const std::string& system, std::string* why) {
  auto s = make_system(system, paths, *pool, *zmq, why);
  if (s) report->set_durability(system, s->durability());
  return s;
}

std::optional<ChildProcess> BenchContext::profile(System& system, const std::string& tag) {
  if (!perf_dir || std::string(system.name()) != kKolabus) return std::nullopt;
  auto perf = find_program("perf");
  if (!perf) {
    progress("--perf: perf is not installed");
    return std::nullopt;
  }
  std::error_code ec;
  std::filesystem::create_directories(*perf_dir, ec);
  const std::string out = *perf_dir + "/" + tag + ".data";
  auto child = ChildProcess::spawn(
      // DWARF call graphs: Debian's libc and librocksdb have no frame pointers, and with
      // -g most of the broker's time showed under unknown callers.
      {*perf, "record", "--call-graph", "dwarf,16384", "-F", "499", "-p",
       std::to_string(system.pid()), "-o", out},
      *perf_dir + "/" + tag + ".log");
  if (!child) return std::nullopt;
  progress("perf: recording the broker into " + out);
  return std::move(*child);
}

void BenchContext::progress(const std::string& line) const {
  std::cerr << "  " << line << std::endl;
}

Result<PublishResult> publish_window(System& system, std::uint64_t first, std::uint64_t count,
                                     int publishers, std::uint32_t window,
                                     std::optional<milliseconds> max_time,
                                     const std::function<void(std::uint64_t)>& on_progress) {
  std::vector<std::unique_ptr<PublishClient>> clients;
  for (int p = 0; p < publishers; ++p) {
    auto c = system.publisher();
    if (!c) return unexpected(c.error());
    clients.push_back(std::move(*c));
  }
  std::vector<Result<Acks>> results(publishers, Acks{});
  std::vector<char> late(publishers, 0);
  std::vector<SteadyClock::time_point> ends(publishers);
  std::atomic<std::uint64_t> answered{0};
  std::atomic<int> finished{0};
  std::latch go(1);
  std::optional<SteadyClock::time_point> deadline;
  std::vector<std::thread> threads;
  for (int p = 0; p < publishers; ++p) {
    // Interleaved, not in slices: the ids of all publishers grow together, as the
    // UUIDv7 ids of agencies publishing at the same time do.
    const std::uint64_t begin = first + static_cast<std::uint64_t>(p);
    const std::uint64_t end = first + count;
    threads.emplace_back([&, p, begin, end] {
      go.wait();
      bool stopped = false;
      results[p] = window_loop(*clients[p], begin, end, static_cast<std::uint64_t>(publishers),
                               window, deadline, answered, stopped);
      late[p] = stopped;
      ends[p] = SteadyClock::now();
      finished.fetch_add(1);
    });
  }
  const auto t0 = SteadyClock::now();
  if (max_time) deadline = t0 + *max_time;
  go.count_down();  // the threads read `deadline` only after this
  if (on_progress) {
    auto last = t0;
    while (finished.load() < publishers) {
      std::this_thread::sleep_for(milliseconds(100));
      if (SteadyClock::now() - last > std::chrono::seconds(5)) {
        on_progress(answered.load());
        last = SteadyClock::now();
      }
    }
  }
  for (auto& t : threads) t.join();
  PublishResult out;
  out.seconds = seconds_between(t0, *std::max_element(ends.begin(), ends.end()));
  for (int p = 0; p < publishers; ++p) {
    if (!results[p]) return unexpected(results[p].error());
    out.acks += *results[p];
    out.stopped_by_time = out.stopped_by_time || late[p];
  }
  return out;
}

Result<double> receive_all(SubscribeClient& sub, std::uint64_t expected, milliseconds stall) {
  std::uint64_t got = 0;
  const auto t0 = SteadyClock::now();
  auto last = t0;
  while (got < expected) {
    const std::uint64_t before = got;
    auto r = sub.receive(milliseconds(200), [&](std::uint64_t) { ++got; });
    if (!r) return unexpected(r.error());
    const auto now = SteadyClock::now();
    if (got > before) {
      last = now;
    } else if (now - last > stall) {
      return unexpected(Errc::kUnavailable, "received " + std::to_string(got) + " of " +
                                                std::to_string(expected) +
                                                " events, then nothing for " +
                                                std::to_string(stall.count() / 1000) + " s");
    }
  }
  return seconds_between(t0, SteadyClock::now());
}

}  // namespace kolabus::bench
