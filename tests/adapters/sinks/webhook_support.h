// Helpers of the webhook sink's tests (webhook_test.cpp, webhook_signing_test.cpp): an
// in-process httplib endpoint playing the agency's system, a kolabus-receiver process,
// webhook secrets on disk, and the [[webhook]] table the tests start from.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include "broker_process.h"
#include "sinks_support.h"
#include "temp_dir.h"
#include "test_events.h"
#include <adapters/webhook.h>
#include <adapters/webhook_signature.h>
#include <common/clock.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace kolabus::test {

struct Hit {
  std::string key;  // Idempotency-Key
  std::uint32_t attempt = 0;
  std::uint64_t sequence = 0;
  std::string api_key;
  std::string content_type;
  std::string webhook_id;
  std::string webhook_timestamp;
  std::string webhook_signature;
  std::string body;
  int status = 0;  // what the server answered
  std::chrono::steady_clock::time_point at;
  std::int64_t received_s = 0;  // Unix seconds when it arrived
};

struct Reply {
  int status = 200;
  std::string body;
  bool hang = false;  // wait (until the test ends, at most 5 s) before answering
};

// The agency's endpoint. `script` decides each answer from the request and how many
// requests with the same Idempotency-Key came before it.
class Endpoint {
 public:
  using Script = std::function<Reply(const Hit&, std::size_t earlier_with_key)>;

  explicit Endpoint(Script script) : script_(std::move(script)) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      Hit h;
      h.key = req.get_header_value("Idempotency-Key");
      h.attempt =
          static_cast<std::uint32_t>(std::stoul("0" + req.get_header_value("X-Kolabus-Attempt")));
      h.sequence = std::stoull("0" + req.get_header_value("X-Kolabus-Sequence"));
      h.api_key = req.get_header_value("X-Api-Key");
      h.content_type = req.get_header_value("Content-Type");
      h.webhook_id = req.get_header_value("webhook-id");
      h.webhook_timestamp = req.get_header_value("webhook-timestamp");
      h.webhook_signature = req.get_header_value("webhook-signature");
      h.body = req.body;
      h.at = std::chrono::steady_clock::now();
      h.received_s = SystemClock().now_ms() / 1000;
      Reply r;
      {
        std::lock_guard lock(mu_);
        std::size_t earlier = 0;
        for (const auto& x : hits_) earlier += x.key == h.key ? 1 : 0;
        r = script_(h, earlier);
        h.status = r.hang ? 0 : r.status;
        hits_.push_back(h);
      }
      if (r.hang) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::seconds(5), [this] { return released_; });
      }
      res.status = r.status;
      res.set_content(r.body, "text/plain");
    });
    server_.set_tcp_nodelay(true);
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Endpoint() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<Hit> hits() {
    std::lock_guard lock(mu_);
    return hits_;
  }
  std::set<std::string> keys_answered(int status) {
    std::set<std::string> out;
    for (const auto& h : hits()) {
      if (h.status == status) out.insert(h.key);
    }
    return out;
  }

 private:
  Script script_;
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::vector<Hit> hits_;
};

// kolabus-receiver (tools/receiver), as the demo runs it: `args` are its options
// (--secret PATH=FILE ...); its log goes to `dir`/receiver.log.
class ReceiverProcess {
 public:
  ReceiverProcess(const std::string& dir, std::vector<std::string> args) {
    const std::string port_file = dir + "/receiver.port";
    const std::string log_file = dir + "/receiver.log";
    std::filesystem::remove(port_file);
    std::vector<std::string> argv_s{KOLABUS_RECEIVER_BIN, "--port-file", port_file, "--dir",
                                    dir + "/received"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(a.data());
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
      std::ifstream in(port_file);
      if (in >> port_) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("kolabus-receiver exited; see " + log_file);
      }
      return false;
    });
    if (!up) throw std::runtime_error("kolabus-receiver did not start");
  }
  ~ReceiverProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  ReceiverProcess(const ReceiverProcess&) = delete;
  ReceiverProcess& operator=(const ReceiverProcess&) = delete;

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // GET /stats: {"/path": {"requests", "unauthorised", "refused", "distinct"}}.
  nlohmann::json stats() const {
    httplib::Client c("127.0.0.1", port_);
    auto res = c.Get("/stats");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    return nlohmann::json::parse(res->body);
  }
  std::uint64_t stat(const std::string& path, const std::string& what) const {
    const auto s = stats();
    return s.contains(path) ? s[path][what].get<std::uint64_t>() : 0;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// A new webhook secret ("whsec_...") written to `file` at mode 0600.
inline std::string write_secret(const std::string& file) {
  auto secret = adapters::generate_webhook_secret();
  REQUIRE(secret.has_value());
  auto st = adapters::write_webhook_secret(file, *secret, false);
  REQUIRE_MESSAGE(st.has_value(), (st.has_value() ? "" : st.error().message));
  return *secret;
}

// The HMAC key of a secret file.
inline std::string key_of(const std::string& file) {
  auto key = adapters::load_webhook_secret(file);
  REQUIRE_MESSAGE(key.has_value(), (key.has_value() ? "" : key.error().message));
  return *key;
}

// One secret file shared by the tests that are not about secrets.
inline const std::string& shared_secret_file() {
  static const TempDir dir("webhook-secret");
  static const std::string file = [] {
    const std::string f = dir.str("shared.whsec");
    write_secret(f);
    return f;
  }();
  return file;
}

inline Events generate(std::size_t n, std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  Events out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
  return out;
}

inline std::set<std::string> ids_of(const Events& evs) {
  std::set<std::string> out;
  for (const auto& e : evs) out.insert(id_of(e).to_string());
  return out;
}

// Signed with shared_secret_file() unless the test replaces secret_file.
inline toml::table webhook_table(const std::string& consumer, const std::string& url) {
  toml::table t;
  t.insert("consumer", consumer);
  t.insert("url", url);
  t.insert("backoff_initial_ms", 50);
  t.insert("backoff_max_ms", 1000);
  t.insert("timeout_ms", 1000);
  t.insert("ack_wait_ms", 9000);  // above 2 x timeout_ms x the default window of 4
  t.insert("secret_file", shared_secret_file());
  return t;
}

inline adapters::AgencyContext context(const TempDir& dir, const BrokerProcess& broker) {
  adapters::AgencyContext ctx;
  ctx.agency = "test-agency";
  ctx.broker = broker.endpoint();
  ctx.data_dir = dir.str("agency");
  return ctx;
}

inline std::unique_ptr<adapters::Adapter> make(const toml::table& t,
                                               const adapters::AgencyContext& ctx) {
  auto a = adapters::make_webhook(t, ctx);
  REQUIRE_MESSAGE(a.has_value(), (a.has_value() ? "" : a.error().message));
  return std::move(*a);
}

inline std::string error_of(const toml::table& t) {
  adapters::AgencyContext ctx{"a", "tcp://127.0.0.1:1", "/tmp/none"};
  auto a = adapters::make_webhook(t, ctx);
  REQUIRE_FALSE(a.has_value());
  return a.error().message;
}

// The dead letters of `consumer`, once there are `n` of them.
inline std::vector<client::DeadLetterView> wait_for_dead(const std::string& endpoint,
                                                         const std::string& consumer,
                                                         std::size_t n) {
  auto admin = client::AdminClient::connect(endpoint, std::chrono::seconds(5));
  REQUIRE(admin.has_value());
  std::vector<client::DeadLetterView> dead;
  REQUIRE(wait_until([&] {
    auto d = (*admin)->dlq_list(consumer, 0, 100);
    if (!d) return false;  // UnknownConsumer until the adapter has subscribed
    dead = *d;
    return dead.size() >= n;
  }));
  return dead;
}

}  // namespace kolabus::test
