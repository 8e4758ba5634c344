// ChildProcess: a process the crash suite starts, kills and reaps — the broker, a
// publisher, a consumer. Its stdout and stderr are appended to a log file, and it
// is killed with the suite (PR_SET_PDEATHSIG), so an interrupted run leaves no
// strays behind.
//
// Ownership: the ChildProcess owns the process: destroying one that still runs
// kills it with SIGKILL and reaps it.
// Thread-safety: none; the suite's main thread only (PR_SET_PDEATHSIG fires when
// the thread that forked exits).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include <common/result.h>

namespace kolabus::crash {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Starts argv[0] (a path) with `argv`. REQUIRES: argv non-empty.
  static Result<ChildProcess> spawn(const std::vector<std::string>& argv,
                                    const std::string& log_path);

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // The wait status if the process has ended (and reaps it), nullopt while it runs.
  // REQUIRES: running().
  std::optional<int> poll();

  // Sends `sig` and waits for the end; after `grace` (if given) sends SIGKILL.
  // Returns the wait status. REQUIRES: running().
  int stop(int sig, std::optional<std::chrono::milliseconds> grace = std::nullopt);

 private:
  pid_t pid_ = -1;
};

// "exit 0", "exit 3", "killed by SIGKILL", ...
std::string describe_status(int wait_status);

}  // namespace kolabus::crash
