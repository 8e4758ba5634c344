// adapters::ConsumerLoop: runs a sink adapter's durable consumer on a thread of its
// own: poll, handle, acknowledge, until stopped. A refused Subscribe or a failing
// inbox is logged once (not once per poll) and retried every 2 seconds.
//
// Ownership: borrows the consumer, which must outlive the loop (or its stop()).
// Thread-safety: start() and stop() from one thread; the handler runs on the loop's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include <adapters/adapter.h>
#include <client/consumer.h>
#include <common/private_files.h>

namespace kolabus::adapters {

// The options every sink's consumer starts from: the agency's broker and CURVE keys,
// the consumer's name, and its inbox under the agency's data_dir (created here, mode
// 0700: RocksDB creates the inbox directory, not its parents). `what` names the adapter in
// the error.
inline Result<client::ConsumerOptions> sink_consumer_options(const AgencyContext& ctx,
                                                             const std::string& what,
                                                             const std::string& consumer) {
  // Made 0700 when missing; an existing one is the runner's to narrow (and log).
  if (auto made = make_private_dir(ctx.data_dir, /*narrow=*/false); !made) {
    return unexpected(made.error().code, what + ": data_dir: " + made.error().message);
  }
  client::ConsumerOptions o;
  o.endpoint = ctx.broker;
  o.curve = ctx.curve;
  o.inbox_dir = ctx.data_dir + "/inbox-" + consumer;
  o.name = consumer;
  return o;
}

class ConsumerLoop {
 public:
  // `what` names the adapter in log lines, e.g. "webhook dinkes-births".
  ConsumerLoop(std::string what, client::Consumer& consumer, client::Handler handler)
      : what_(std::move(what)), consumer_(consumer), handler_(std::move(handler)) {}
  ~ConsumerLoop() { stop(); }
  ConsumerLoop(const ConsumerLoop&) = delete;
  ConsumerLoop& operator=(const ConsumerLoop&) = delete;

  void start() {
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
  }

  // Interrupts the poll in progress, calls `before_join` (to cut short whatever the
  // handler is waiting on), and joins the thread. The consumer stays open.
  void stop(const std::function<void()>& before_join = {}) {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    consumer_.interrupt();
    if (before_join) before_join();
    thread_.join();
  }

 private:
  bool stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  void run() {
    std::string last_error;
    while (!stopping()) {
      auto n = consumer_.poll(handler_, std::chrono::milliseconds(1000));
      if (n) {
        last_error.clear();
        continue;
      }
      if (n.error().message != last_error) {
        last_error = n.error().message;
        spdlog::error("{}: {}", what_, last_error);
      }
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(2), [this] { return stopping_; });
    }
  }

  const std::string what_;
  client::Consumer& consumer_;
  const client::Handler handler_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
};

}  // namespace kolabus::adapters
