// kolabus-broker and the naive loop: both ZeroMQ servers speaking kolabus frames,
// both started as child processes and probed with Ping until they answer.
#include <filesystem>

#include <zmq.hpp>

#include "kolabus_client.h"
#include "process.h"
#include "systems.h"
#include <schemas/regions.h>

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

// How long a server may take to answer its first Ping (a broker opening a large
// log takes a while; the figure is measured, not bounded, by this).
constexpr auto kStartTimeout = std::chrono::minutes(10);

class ZmqSystem : public System {
 public:
  ZmqSystem(const EventPool& pool, zmq::context_t& zmq) : pool_(pool), zmq_(zmq) {}

  Status start(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unexpected(Errc::kIoError, "cannot create " + dir + ": " + ec.message());
    auto port = free_tcp_port();
    if (!port) return unexpected(port.error());
    endpoint_ = "tcp://127.0.0.1:" + std::to_string(*port);
    auto args = command(dir, *port);
    if (!args) return unexpected(args.error());
    auto child = ChildProcess::spawn(std::move(*args), dir + ".log");
    if (!child) return unexpected(child.error());
    child_ = std::move(*child);
    if (Status st = wait_for_pong(zmq_, endpoint_, kStartTimeout, [&] { return child_.running(); });
        !st) {
      const std::string tail = child_.log_tail();
      child_.stop();
      return unexpected(Errc::kUnavailable,
                        std::string(name()) + ": " + st.error().message + "; its log:\n" + tail);
    }
    startup_ = SteadyClock::now() - child_.started_at();
    return {};
  }

  std::chrono::nanoseconds startup_time() const override { return startup_; }
  void stop() override { child_.stop(); }
  pid_t pid() const override { return child_.pid(); }

  Result<std::unique_ptr<PublishClient>> publisher() override {
    return make_kolabus_publisher(zmq_, endpoint_, pool_);
  }

  Result<std::uint64_t> stored_events() override {
    auto next = next_sequence(zmq_, endpoint_);
    if (!next) return unexpected(next.error());
    return *next - 1;
  }

 protected:
  // The server's command line for a start in `dir` on `port`.
  virtual Result<std::vector<std::string>> command(const std::string& dir, int port) = 0;

  const EventPool& pool_;
  zmq::context_t& zmq_;
  std::string endpoint_;
  ChildProcess child_;
  std::chrono::nanoseconds startup_{0};
};

class KolabusSystem final : public ZmqSystem {
 public:
  KolabusSystem(std::string program, const EventPool& pool, zmq::context_t& zmq)
      : ZmqSystem(pool, zmq), program_(std::move(program)) {}

  const char* name() const override { return "kolabus"; }
  std::string durability() const override {
    return "kolabus-broker --dev (sync on, the default): ACK after the event, its id and "
           "region index entries and its audit record are written to RocksDB and the WAL is "
           "fsynced (group commit per socket drain); every event fully validated";
  }

  Result<std::unique_ptr<SubscribeClient>> subscriber(const SubscribeOptions& options) override {
    return make_kolabus_subscriber(zmq_, endpoint_, pool_, options);
  }

  // Consumers like a city's: one per kelurahan, kecamatan and city-wide office in
  // turn, left without clients. Subscribe creates those that do not exist; a seek
  // moves every one to the end of the log (caught up).
  Status define_consumers(std::size_t first, std::size_t count) override {
    const auto medan = medan_regions(schemas::RegionTable::embedded());
    std::vector<std::string> prefixes = medan.kelurahan;
    prefixes.insert(prefixes.end(), medan.kecamatan.begin(), medan.kecamatan.end());
    prefixes.push_back(medan.city);
    KolabusSocket s(zmq_, endpoint_);
    for (std::size_t n = first; n < first + count; ++n) {
      SubscribeOptions o;
      o.name = "bench-" + std::to_string(n);
      o.regions = {prefixes[n % prefixes.size()]};
      o.window = 1;
      s.send_subscribe(3 * n + 1, o, protocol::StartPolicy::Latest);
      s.send_seek_latest(3 * n + 2, o.name);
      s.send_unsubscribe(3 * n + 3, o.name);
    }
    std::size_t answered = 0;
    while (answered < 3 * count) {
      auto m = s.recv(milliseconds(60000));
      if (!m) return unexpected(Errc::kUnavailable, "no answer while defining consumers");
      const auto* resp = as_response(*m);
      if (resp == nullptr) continue;
      if (const auto* nack = resp->reply_as_Nack()) {
        return unexpected(Errc::kInvalidArgument, "defining consumers: " + describe(*nack));
      }
      if (resp->reply_type() == protocol::Reply::Subscribed ||
          resp->reply_type() == protocol::Reply::Done) {
        ++answered;
      }
    }
    return {};
  }

  Result<std::uint64_t> consumer_lag() override {
    KolabusSocket s(zmq_, endpoint_);
    s.send_list_consumers(7);
    const auto deadline = SteadyClock::now() + std::chrono::seconds(60);
    while (SteadyClock::now() < deadline) {
      auto m = s.recv(milliseconds(1000));
      if (!m) continue;
      const auto* resp = as_response(*m);
      if (resp == nullptr || resp->corr() != 7) continue;
      if (const auto* nack = resp->reply_as_Nack()) {
        return unexpected(Errc::kInvalidArgument, "ListConsumers: " + describe(*nack));
      }
      const auto* list = resp->reply_as_ConsumerList();
      if (list == nullptr || list->consumers() == nullptr) return std::uint64_t{0};
      std::uint64_t lag = 0;
      for (const auto* c : *list->consumers()) lag += c->lag();
      return lag;
    }
    return unexpected(Errc::kUnavailable, "no answer to ListConsumers within 60 s");
  }

 protected:
  Result<std::vector<std::string>> command(const std::string& dir, int port) override {
    return std::vector<std::string>{program_,      "--dev",
                                    "--data-dir",  dir,
                                    "--endpoint",  "tcp://127.0.0.1:" + std::to_string(port),
                                    "--log-level", "warn"};
  }

 private:
  std::string program_;
};

// The naive loop forwards each stored event on a PUB socket; a SUB socket reads it.
class NaiveSubscriber final : public SubscribeClient {
 public:
  NaiveSubscriber(zmq::context_t& zmq, const std::string& endpoint, const EventPool& pool)
      : socket_(zmq, zmq::socket_type::sub), pool_(pool) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvhwm, 100000);
    socket_.set(zmq::sockopt::subscribe, "");
    socket_.connect(endpoint);
  }

  Result<std::size_t> receive(milliseconds timeout, const EventHandler& on_event) override {
    std::size_t n = 0;
    if (timeout.count() > 0) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, timeout);
    }
    zmq::message_t m;
    while (n < 20000 && socket_.recv(m, zmq::recv_flags::dontwait)) {
      ++n;
      if (auto i = pool_.index_of_event({static_cast<const std::uint8_t*>(m.data()), m.size()})) {
        on_event(*i);
      }
    }
    return n;
  }

  void* zmq_handle() override { return socket_.handle(); }

 private:
  zmq::socket_t socket_;
  const EventPool& pool_;
};

class NaiveSystem final : public ZmqSystem {
 public:
  NaiveSystem(std::string self, const EventPool& pool, zmq::context_t& zmq)
      : ZmqSystem(pool, zmq), self_(std::move(self)) {}

  const char* name() const override { return "naive"; }
  std::string durability() const override {
    return "`kolabus-bench serve-naive`: ZeroMQ ROUTER + RocksDB, one WriteBatch per socket "
           "drain written with sync=true (group commit), ACK after the write; no validation, "
           "no indexes, no dedup, no audit (RocksDB default options)";
  }

  Result<std::unique_ptr<SubscribeClient>> subscriber(const SubscribeOptions& options) override {
    if (!options.regions.empty() || options.from_start) {
      return unexpected(Errc::kInvalidArgument,
                        "the naive loop only forwards new events, unfiltered");
    }
    return std::unique_ptr<SubscribeClient>(std::make_unique<NaiveSubscriber>(
        zmq_, "tcp://127.0.0.1:" + std::to_string(pub_port_), pool_));
  }

  Status define_consumers(std::size_t, std::size_t) override {
    return unexpected(Errc::kInvalidArgument, "the naive loop has no consumers");
  }

 protected:
  Result<std::vector<std::string>> command(const std::string& dir, int port) override {
    auto pub = free_tcp_port();
    if (!pub) return unexpected(pub.error());
    pub_port_ = *pub;
    return std::vector<std::string>{self_,        "serve-naive",
                                    "--port",     std::to_string(port),
                                    "--pub-port", std::to_string(pub_port_),
                                    "--dir",      dir};
  }

 private:
  std::string self_;
  int pub_port_ = 0;
};

}  // namespace

std::unique_ptr<System> make_kolabus(const Paths& paths, const EventPool& pool,
                                     zmq::context_t& zmq) {
  return std::make_unique<KolabusSystem>(paths.broker, pool, zmq);
}

std::unique_ptr<System> make_naive(const Paths& paths, const EventPool& pool, zmq::context_t& zmq) {
  return std::make_unique<NaiveSystem>(paths.self, pool, zmq);
}

std::unique_ptr<System> make_system(const std::string& name, const Paths& paths,
                                    const EventPool& pool, zmq::context_t& zmq, std::string* why) {
  if (name == "kolabus") return make_kolabus(paths, pool, zmq);
  if (name == "naive") return make_naive(paths, pool, zmq);
  if (name == "jetstream") {
    if (!paths.nats) {
      if (why) *why = "skipped: nats-server not installed (apt-get install nats-server)";
      return nullptr;
    }
    return make_jetstream(*paths.nats, pool);
  }
  if (name == "redis") {
    if (!paths.redis) {
      if (why) *why = "skipped: redis-server not installed (apt-get install redis-server)";
      return nullptr;
    }
    return make_redis(*paths.redis, pool);
  }
  if (why) *why = "unknown system " + name;
  return nullptr;
}

}  // namespace kolabus::bench
