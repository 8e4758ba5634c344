#include "child_process.h"

#include <csignal>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kolabus::crash {

ChildProcess::ChildProcess(ChildProcess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (running()) stop(SIGKILL);
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (running()) stop(SIGKILL);
}

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv,
                                         const std::string& log_path) {
  KOLABUS_CHECK(!argv.empty());
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    return unexpected(Errc::kIoError, "cannot open " + log_path + ": " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    return unexpected(Errc::kIoError, std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);  // the suite died before prctl
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(log);
  ChildProcess child;
  child.pid_ = pid;
  return child;
}

std::optional<int> ChildProcess::poll() {
  KOLABUS_CHECK(running());
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return std::nullopt;
  pid_ = -1;
  return r == pid_t{-1} ? -1 : status;
}

int ChildProcess::stop(int sig, std::optional<std::chrono::milliseconds> grace) {
  KOLABUS_CHECK(running());
  ::kill(pid_, sig);
  if (grace) {
    const auto deadline = std::chrono::steady_clock::now() + *grace;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto st = poll()) return *st;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(pid_, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return status;
}

std::string describe_status(int s) {
  if (s == -1) return "unknown (waitpid failed)";
  if (WIFEXITED(s)) return "exit " + std::to_string(WEXITSTATUS(s));
  if (WIFSIGNALED(s)) {
    const char* name = ::sigabbrev_np(WTERMSIG(s));
    return std::string("killed by SIG") + (name != nullptr ? name : std::to_string(WTERMSIG(s)));
  }
  return "status " + std::to_string(s);
}

}  // namespace kolabus::crash
