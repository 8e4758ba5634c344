#include "process.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kolabus::bench {

namespace {

// Every child that is running now, for the interrupt handler.
std::mutex g_children_mu;
std::set<pid_t> g_children;  // guarded by g_children_mu

void register_child(pid_t pid) {
  std::lock_guard lock(g_children_mu);
  g_children.insert(pid);
}

void unregister_child(pid_t pid) {
  std::lock_guard lock(g_children_mu);
  g_children.erase(pid);
}

// Stops every registered child: SIGTERM, a grace period, then SIGKILL.
void stop_all_children() {
  std::set<pid_t> pids;
  {
    std::lock_guard lock(g_children_mu);
    pids = g_children;
  }
  for (pid_t p : pids) ::kill(p, SIGTERM);
  const auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  for (pid_t p : pids) {
    while (::waitpid(p, nullptr, WNOHANG) == 0 && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (::waitpid(p, nullptr, WNOHANG) == 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
}

}  // namespace

void install_interrupt_handler(std::function<void()> cleanup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A server that dies must not kill the harness through a write to its socket.
  ::signal(SIGPIPE, SIG_IGN);
  std::thread([set, cleanup = std::move(cleanup)] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "\nkolabus-bench: %s, stopping the servers\n", strsignal(sig));
    stop_all_children();
    if (cleanup) cleanup();
    std::_Exit(128 + sig);
  }).detach();
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
    started_ = other.started_;
    log_file_ = std::move(other.log_file_);
    program_ = std::move(other.program_);
  }
  return *this;
}

Result<ChildProcess> ChildProcess::spawn(std::vector<std::string> argv,
                                         const std::string& log_file) {
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls.
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return unexpected(Errc::kIoError, "cannot open " + log_file + ": " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  ChildProcess child;
  child.started_ = SteadyClock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return unexpected(Errc::kUnavailable, std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Die with the harness, even if it is SIGKILLed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the harness blocks some; exec keeps masks
    ::signal(SIGPIPE, SIG_DFL);
    ::setpgid(0, 0);  // a ctrl-c on the terminal goes to the harness, which stops us
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execv(args[0], args.data());
    const char msg[] = "kolabus-bench: exec failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  child.pid_ = pid;
  child.log_file_ = log_file;
  child.program_ = argv.empty() ? "" : argv[0];
  register_child(pid);
  return child;
}

void ChildProcess::reap(int options) {
  if (pid_ <= 0) return;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, options);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    status_ = status;
    unregister_child(pid_);
    pid_ = -1;
  }
}

bool ChildProcess::running() {
  reap(WNOHANG);
  return pid_ > 0;
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = SteadyClock::now() + grace;
  while (running() && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (pid_ > 0) kill();
}

void ChildProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  reap(0);
}

std::string ChildProcess::log_tail(std::size_t bytes) const {
  std::ifstream in(log_file_, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(static_cast<std::streamoff>(size > bytes ? size - bytes : 0));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<int> free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return unexpected(Errc::kIoError, std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return unexpected(Errc::kIoError, "cannot find a free port: " + why);
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

std::optional<std::string> find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream s(path);
    for (std::string d; std::getline(s, d, ':');) {
      if (!d.empty()) dirs.push_back(d);
    }
  }
  dirs.insert(dirs.end(), {"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"});
  for (const auto& d : dirs) {
    const std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::nullopt;
}

std::string self_directory() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::optional<ProcessMemory> read_memory(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  if (!in) return std::nullopt;
  ProcessMemory m;
  bool found = false;
  for (std::string line; std::getline(in, line);) {
    auto value = [&](const char* key, std::uint64_t& out) {
      if (line.rfind(key, 0) != 0) return;
      out = std::strtoull(line.c_str() + std::strlen(key), nullptr, 10);
      found = true;
    };
    value("VmRSS:", m.rss_kb);
    value("VmHWM:", m.hwm_kb);
  }
  if (!found) return std::nullopt;
  return m;
}

std::optional<double> read_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!in || !std::getline(in, stat)) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces, so count fields after the ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields 3 (state) to 13 come first; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (!fields) return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace kolabus::bench
