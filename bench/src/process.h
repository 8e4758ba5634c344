// Child processes of the harness: the servers it measures (kolabus-broker, the naive
// loop, nats-server, redis-server), each started with a port chosen at run time and
// stopped again — also when the harness fails or is interrupted, so that a run never
// leaves a stray server behind.
//
// Three layers make sure of that: ChildProcess stops its process in its destructor;
// every live child is in a process-wide registry that the interrupt handler
// (install_interrupt_handler) stops on SIGINT/SIGTERM/SIGHUP; and each child asks the
// kernel to kill it when the harness dies (PR_SET_PDEATHSIG), which covers SIGKILL.
//
// Ownership: a ChildProcess owns its process (move-only).
// Thread-safety: spawn() only from the main thread (PR_SET_PDEATHSIG is tied to the
// thread that forks); a ChildProcess is used by one thread at a time; the registry
// is internally locked.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include <common/result.h>

namespace kolabus::bench {

using SteadyClock = std::chrono::steady_clock;

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and starts a thread that
// waits for them: on one it stops every live child (SIGTERM, then SIGKILL after a
// grace period), calls `cleanup` (e.g. removes the temporary work directory) and
// exits with 128 + the signal number.
// REQUIRES: called from main() before any other thread exists, so that every later
// thread inherits the blocked mask.
void install_interrupt_handler(std::function<void()> cleanup);

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { stop(); }

  // Starts argv[0] (a path) with `argv`, its stdout and stderr appended to `log_file`.
  // Fails (kUnavailable) if fork() fails; an exec failure shows as the child exiting
  // with status 127 (running() turns false, the log says why).
  static Result<ChildProcess> spawn(std::vector<std::string> argv, const std::string& log_file);

  pid_t pid() const { return pid_; }
  SteadyClock::time_point started_at() const { return started_; }
  const std::string& log_file() const { return log_file_; }
  const std::string& program() const { return program_; }

  // False once the process has exited (it is reaped here).
  bool running();
  // The exit status as waitpid() reported it, once it has exited.
  std::optional<int> exit_status() const { return status_; }

  // SIGTERM, then SIGKILL if it has not exited within `grace`. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // SIGKILL at once (a crash or power cut, from the server's point of view).
  void kill();

  // The last `bytes` of the log file, for error messages.
  std::string log_tail(std::size_t bytes = 2000) const;

 private:
  void reap(int options);

  pid_t pid_ = -1;
  std::optional<int> status_;
  SteadyClock::time_point started_;
  std::string log_file_;
  std::string program_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and released).
// Another process could take it in between; the servers then fail to start and the
// harness says so.
Result<int> free_tcp_port();

// The absolute path of `name` found on PATH or in /usr/sbin and /usr/local/sbin
// (Debian puts nats-server there), or nullopt.
std::optional<std::string> find_program(const std::string& name);

// The directory of the running executable (/proc/self/exe).
std::string self_directory();

struct ProcessMemory {
  std::uint64_t rss_kb = 0;  // VmRSS: resident now
  std::uint64_t hwm_kb = 0;  // VmHWM: peak resident
};
std::optional<ProcessMemory> read_memory(pid_t pid);

// CPU time the process has used so far, user and system, all its threads
// (/proc/PID/stat). On a shared, noisy machine the CPU a server spends per event moves
// far less between runs than its throughput does.
std::optional<double> read_cpu_seconds(pid_t pid);

// Polls `ready` every `interval` until it returns true or `timeout` passes.
template <typename F>
bool wait_until(F ready, std::chrono::milliseconds timeout,
                std::chrono::microseconds interval = std::chrono::milliseconds(2)) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!ready()) {
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

}  // namespace kolabus::bench
