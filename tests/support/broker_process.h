// A real kolabus-broker process for integration tests: its own temporary data
// directory, a port chosen at run time (tcp://127.0.0.1:*), started and killed
// like an operator (or a power cut) would.
#pragma once

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "temp_dir.h"

namespace kolabus::test {

// Polls `ready` until it holds or the timeout passes.
template <typename F>
bool wait_until(F ready, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class BrokerProcess {
 public:
  // `endpoint` may name a port ("tcp://127.0.0.1:40123") to restart on the same one.
  BrokerProcess(std::string data_dir, std::string endpoint = "tcp://127.0.0.1:*",
                std::vector<std::string> extra_args = {})
      : data_dir_(std::move(data_dir)), extra_(std::move(extra_args)) {
    start(std::move(endpoint));
  }
  ~BrokerProcess() { stop(SIGTERM); }
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return pid_; }

  void start(std::string endpoint) {
    const std::string endpoint_file = data_dir_ + ".endpoint";
    std::filesystem::remove(endpoint_file);
    const std::string log_file = data_dir_ + ".log";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::vector<std::string> args{KOLABUS_BROKER_BIN, "--data-dir",  data_dir_,
                                    "--endpoint",       endpoint,      "--endpoint-file",
                                    endpoint_file,      "--log-level", "warn"};
      // Development mode (no CURVE) unless the test gives the broker its keys.
      if (std::find(extra_.begin(), extra_.end(), "--key") == extra_.end()) {
        args.push_back("--dev");
      }
      args.insert(args.end(), extra_.begin(), extra_.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      FILE* log = std::fopen(log_file.c_str(), "a");
      if (log != nullptr) {
        ::dup2(fileno(log), 1);
        ::dup2(fileno(log), 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const bool up = wait_until([&] {
      std::ifstream in(endpoint_file);
      std::string line;
      if (std::getline(in, line) && !line.empty()) {
        endpoint_ = line;
        return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) throw std::runtime_error("broker exited");
      return false;
    });
    if (!up) throw std::runtime_error("broker did not start");
  }

  // SIGKILL: a power cut. SIGTERM: an orderly stop.
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  void restart() { start(endpoint_); }

 private:
  std::string data_dir_;
  std::vector<std::string> extra_;
  std::string endpoint_;
  pid_t pid_ = -1;
};

}  // namespace kolabus::test
