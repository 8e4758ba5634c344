#include "nats_client.h"

#include <charconv>
#include <filesystem>
#include <random>
#include <vector>

#include "process.h"
#include "systems.h"

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view kStream = "BENCH";
constexpr std::string_view kSubject = "bench.events";
constexpr int kAckSid = 1, kDeliverSid = 2, kRequestSid = 1000;

std::vector<std::string_view> split(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::size_t to_size(std::string_view s) {
  std::size_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::string random_token() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::mt19937_64 rng{std::random_device{}()};
  std::string s;
  for (int k = 0; k < 16; ++k) s.push_back(kAlphabet[rng() % (sizeof kAlphabet - 1)]);
  return s;
}

// A JetStream API reply is an error when it carries an "error" object.
bool api_error(const std::string& reply) { return reply.find("\"error\"") != std::string::npos; }

class NatsPublisher final : public PublishClient {
 public:
  NatsPublisher(NatsConnection conn, const EventPool& pool)
      : conn_(std::move(conn)), pool_(pool), inbox_("_INBOX." + conn_.token() + ".ack") {
    conn_.subscribe(inbox_, kAckSid);
  }

  void send(std::uint64_t i) override {
    const std::size_t size = pool_.event_size(i);
    conn_.publish_header(kSubject, inbox_, size);
    std::string& out = conn_.out();
    const std::size_t at = out.size();
    out.resize(at + size);
    pool_.write_event(i, reinterpret_cast<std::uint8_t*>(out.data() + at));
    out += "\r\n";
    if (out.size() > (256 << 10)) (void)flush();
  }

  Status flush() override { return conn_.flush(); }

  Result<Acks> receive(milliseconds timeout) override {
    if (Status st = conn_.flush(); !st) return unexpected(st.error());
    Acks acks;
    const auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      auto r = poll_acks(std::min(timeout, milliseconds(200)), acks);
      if (!r) return unexpected(r.error());
      if (acks.acked + acks.refused > 0 || SteadyClock::now() >= deadline) break;
      // Nothing for 200 ms with requests in flight. nats-server 2.9 sometimes stores
      // a message and holds its PubAck until the connection sees more traffic; a
      // PING releases it. Counted, so the report can say so.
      ++acks.stalls;
      conn_.out() += "PING\r\n";
      if (Status st = conn_.flush(); !st) return unexpected(st.error());
    }
    return acks;
  }

 private:
  Result<std::size_t> poll_acks(milliseconds timeout, Acks& acks) {
    auto r = conn_.poll(timeout, [&](const NatsMessage& m) {
      if (m.sid != kAckSid) return;
      if (m.payload.find("\"seq\"") != std::string_view::npos &&
          m.payload.find("\"error\"") == std::string_view::npos) {
        ++acks.acked;
      } else {
        ++acks.refused;
        if (acks.first_refusal.empty()) acks.first_refusal = std::string(m.payload);
      }
    });
    return r;
  }

  NatsConnection conn_;
  const EventPool& pool_;
  std::string inbox_;
};

// An ephemeral push consumer with ack_policy "all": acknowledging the last message
// of each batch acknowledges the batch, like kolabus's one Ack per drain.
class NatsSubscriber final : public SubscribeClient {
 public:
  NatsSubscriber(NatsConnection conn, const EventPool& pool)
      : conn_(std::move(conn)), pool_(pool), deliver_("_DELIVER." + conn_.token()) {}

  Status create(const SubscribeOptions& options) {
    conn_.subscribe(deliver_, kDeliverSid);
    const std::string config =
        std::string("{\"stream_name\":\"") + std::string(kStream) +
        "\",\"config\":{\"deliver_subject\":\"" + deliver_ + "\",\"deliver_policy\":\"" +
        (options.from_start ? "all" : "new") +
        "\",\"ack_policy\":\"all\",\"ack_wait\":30000000000,\"max_deliver\":5,"
        "\"max_ack_pending\":" +
        std::to_string(options.window) + ",\"replay_policy\":\"instant\"}}";
    auto reply = conn_.request("$JS.API.CONSUMER.CREATE." + std::string(kStream), config,
                               milliseconds(10000));
    if (!reply) return unexpected(reply.error());
    if (api_error(*reply)) return unexpected(Errc::kInvalidArgument, "consumer create: " + *reply);
    return {};
  }

  Result<std::size_t> receive(milliseconds timeout, const EventHandler& on_event) override {
    std::string last_reply;
    auto r = conn_.poll(timeout, [&](const NatsMessage& m) {
      // A push consumer's messages keep their stream subject: tell them by sid.
      if (m.sid != kDeliverSid || m.payload.empty()) return;  // status messages
      if (auto i = pool_.index_of_event(
              {reinterpret_cast<const std::uint8_t*>(m.payload.data()), m.payload.size()})) {
        on_event(*i);
      }
      last_reply.assign(m.reply);
    });
    if (!r) return unexpected(r.error());
    if (!last_reply.empty()) {
      conn_.publish(last_reply, "", "");
      if (Status st = conn_.flush(); !st) return unexpected(st.error());
    }
    return *r;
  }

 private:
  NatsConnection conn_;
  const EventPool& pool_;
  std::string deliver_;
};

class JetStreamSystem final : public System {
 public:
  JetStreamSystem(std::string program, const EventPool& pool)
      : program_(std::move(program)), pool_(pool) {}

  const char* name() const override { return "jetstream"; }
  std::string durability() const override {
    return "nats-server 2.9 -js, file store, 1 replica: the stream's ack comes once the "
           "message is written to the store file (the OS page cache); JetStream does NOT fsync "
           "before acknowledging (it syncs every 2 minutes by default)";
  }

  Status start(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unexpected(Errc::kIoError, "cannot create " + dir + ": " + ec.message());
    auto port = free_tcp_port();
    if (!port) return unexpected(port.error());
    port_ = *port;
    auto child = ChildProcess::spawn(
        {program_, "-js", "-sd", dir, "-p", std::to_string(port_), "-a", "127.0.0.1"},
        dir + ".log");
    if (!child) return unexpected(child.error());
    child_ = std::move(*child);
    // Ready: JetStream answers a request about the stream (found or not).
    std::string info;
    Status last = unexpected(Errc::kUnavailable, "not started");
    const bool up = wait_until(
        [&] {
          if (!child_.running()) return true;
          auto conn = NatsConnection::connect(port_, milliseconds(60000));
          if (!conn) return false;
          auto r = conn->request("$JS.API.STREAM.INFO." + std::string(kStream), "",
                                 milliseconds(600000));
          if (!r) {
            last = unexpected(r.error());
            return false;
          }
          info = *r;
          return true;
        },
        std::chrono::minutes(10), std::chrono::milliseconds(1));
    if (!up || !child_.running()) {
      const std::string tail = child_.log_tail();
      child_.stop();
      return unexpected(Errc::kUnavailable, "nats-server did not start; its log:\n" + tail);
    }
    startup_ = SteadyClock::now() - child_.started_at();
    if (api_error(info)) {
      auto conn = NatsConnection::connect(port_, milliseconds(10000));
      if (!conn) return unexpected(conn.error());
      const std::string config = "{\"name\":\"" + std::string(kStream) + "\",\"subjects\":[\"" +
                                 std::string(kSubject) +
                                 "\"],\"storage\":\"file\",\"retention\":\"limits\","
                                 "\"max_msgs\":-1,\"max_bytes\":-1,\"discard\":\"old\","
                                 "\"num_replicas\":1}";
      auto r = conn->request("$JS.API.STREAM.CREATE." + std::string(kStream), config,
                             milliseconds(10000));
      if (!r) return unexpected(r.error());
      if (api_error(*r)) return unexpected(Errc::kInvalidArgument, "stream create: " + *r);
    }
    return {};
  }

  std::chrono::nanoseconds startup_time() const override { return startup_; }
  void stop() override { child_.stop(); }
  pid_t pid() const override { return child_.pid(); }

  Result<std::unique_ptr<PublishClient>> publisher() override {
    auto conn = NatsConnection::connect(port_, milliseconds(10000));
    if (!conn) return unexpected(conn.error());
    return std::unique_ptr<PublishClient>(std::make_unique<NatsPublisher>(std::move(*conn), pool_));
  }

  Result<std::unique_ptr<SubscribeClient>> subscriber(const SubscribeOptions& options) override {
    if (!options.regions.empty()) {
      return unexpected(Errc::kInvalidArgument, "no region filter (one subject for all events)");
    }
    auto conn = NatsConnection::connect(port_, milliseconds(10000));
    if (!conn) return unexpected(conn.error());
    auto sub = std::make_unique<NatsSubscriber>(std::move(*conn), pool_);
    if (Status st = sub->create(options); !st) return unexpected(st.error());
    return std::unique_ptr<SubscribeClient>(std::move(sub));
  }

  Result<std::uint64_t> stored_events() override {
    auto conn = NatsConnection::connect(port_, milliseconds(10000));
    if (!conn) return unexpected(conn.error());
    auto r = conn->request("$JS.API.STREAM.INFO." + std::string(kStream), "", milliseconds(30000));
    if (!r) return unexpected(r.error());
    const auto at = r->find("\"messages\":");
    if (at == std::string::npos) return unexpected(Errc::kInvalidArgument, "stream info: " + *r);
    return static_cast<std::uint64_t>(to_size(std::string_view(*r).substr(at + 11, 20)));
  }

  // Durable pull consumers (explicit ack) at the end of the stream: an existing one
  // is deleted and created again (a durable consumer cannot be moved).
  Status define_consumers(std::size_t first, std::size_t count) override {
    auto conn = NatsConnection::connect(port_, milliseconds(10000));
    if (!conn) return unexpected(conn.error());
    for (std::size_t n = first; n < first + count; ++n) {
      const std::string name = "bench-" + std::to_string(n);
      auto gone = conn->request("$JS.API.CONSUMER.DELETE." + std::string(kStream) + "." + name, "",
                                milliseconds(30000));
      if (!gone) return unexpected(gone.error());  // "consumer not found" is fine
      const std::string config = "{\"stream_name\":\"" + std::string(kStream) +
                                 "\",\"config\":{\"durable_name\":\"" + name +
                                 "\",\"deliver_policy\":\"new\",\"ack_policy\":\"explicit\"}}";
      auto r = conn->request("$JS.API.CONSUMER.DURABLE.CREATE." + std::string(kStream) + "." + name,
                             config, milliseconds(30000));
      if (!r) return unexpected(r.error());
      if (api_error(*r)) return unexpected(Errc::kInvalidArgument, "consumer create: " + *r);
    }
    return {};
  }

 private:
  std::string program_;
  const EventPool& pool_;
  int port_ = 0;
  ChildProcess child_;
  std::chrono::nanoseconds startup_{0};
};

}  // namespace

Result<NatsConnection> NatsConnection::connect(int port, milliseconds timeout) {
  auto tcp = TcpConnection::connect(port);
  if (!tcp) return unexpected(tcp.error());
  NatsConnection c;
  c.conn_ = std::move(*tcp);
  c.token_ = random_token();
  c.out_ =
      "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,"
      "\"protocol\":1,\"name\":\"kolabus-bench\",\"lang\":\"c++\",\"version\":\"0\"}\r\nPING\r\n";
  if (Status st = c.flush(); !st) return unexpected(st.error());
  const auto deadline = SteadyClock::now() + timeout;
  while (c.pongs_ == 0) {
    if (SteadyClock::now() > deadline) {
      return unexpected(Errc::kUnavailable, "no PONG from nats-server");
    }
    auto r = c.poll(milliseconds(100), [](const NatsMessage&) {});
    if (!r) return unexpected(r.error());
  }
  return c;
}

void NatsConnection::publish(std::string_view subject, std::string_view reply,
                             std::string_view payload) {
  publish_header(subject, reply, payload.size());
  out_.append(payload);
  out_ += "\r\n";
}

void NatsConnection::publish_header(std::string_view subject, std::string_view reply,
                                    std::size_t size) {
  out_ += "PUB ";
  out_ += subject;
  out_ += ' ';
  if (!reply.empty()) {
    out_ += reply;
    out_ += ' ';
  }
  out_ += std::to_string(size);
  out_ += "\r\n";
}

void NatsConnection::subscribe(std::string_view subject, int sid) {
  out_ += "SUB ";
  out_ += subject;
  out_ += ' ';
  out_ += std::to_string(sid);
  out_ += "\r\n";
}

Status NatsConnection::flush() {
  if (out_.empty()) return {};
  Status st = conn_.write_all(out_);
  out_.clear();
  return st;
}

bool NatsConnection::parse(const std::function<void(const NatsMessage&)>& on_msg,
                           std::size_t& count, std::string* error) {
  for (;;) {
    const std::size_t eol = in_.find("\r\n", pos_);
    if (eol == std::string::npos) break;
    const std::string_view line(in_.data() + pos_, eol - pos_);
    const bool msg = line.rfind("MSG ", 0) == 0, hmsg = line.rfind("HMSG ", 0) == 0;
    if (msg || hmsg) {
      const auto t = split(line);
      // MSG subject sid [reply] size | HMSG subject sid [reply] hdr_size total_size
      const std::size_t fixed = msg ? 4 : 5;
      if (t.size() < fixed) {
        *error = "malformed " + std::string(line);
        return false;
      }
      const std::size_t total = to_size(t.back());
      const std::size_t headers = hmsg ? to_size(t[t.size() - 2]) : 0;
      if (in_.size() < eol + 2 + total + 2) break;  // the payload is not all here yet
      NatsMessage m;
      m.subject = t[1];
      m.sid = static_cast<int>(to_size(t[2]));
      m.reply = t.size() > fixed ? t[3] : std::string_view();
      m.payload = std::string_view(in_.data() + eol + 2 + headers, total - headers);
      m.has_headers = hmsg;
      ++count;
      on_msg(m);
      pos_ = eol + 2 + total + 2;
      continue;
    }
    pos_ = eol + 2;
    if (line == "PING") {
      out_ += "PONG\r\n";
    } else if (line == "PONG") {
      ++pongs_;
    } else if (line.rfind("-ERR", 0) == 0) {
      *error = "nats-server: " + std::string(line);
      return false;
    }  // INFO and +OK need nothing
  }
  // Keep the buffer small: drop what was consumed.
  if (pos_ > 0 && (pos_ == in_.size() || pos_ > (1 << 20))) {
    in_.erase(0, pos_);
    pos_ = 0;
  }
  return true;
}

Result<std::size_t> NatsConnection::poll(milliseconds timeout,
                                         const std::function<void(const NatsMessage&)>& on_msg) {
  std::size_t count = 0;
  while (!held_.empty()) {
    const Owned o = std::move(held_.front());
    held_.pop_front();
    on_msg(NatsMessage{o.subject, o.sid, o.reply, o.payload, o.has_headers});
    ++count;
  }
  std::string error;
  if (!parse(on_msg, count, &error)) return unexpected(Errc::kUnavailable, error);
  auto r = conn_.read_some(in_, count > 0 ? milliseconds(0) : timeout);
  if (!r) return unexpected(r.error());
  if (!parse(on_msg, count, &error)) return unexpected(Errc::kUnavailable, error);
  if (Status st = flush(); !st) return unexpected(st.error());  // PONGs
  return count;
}

Result<std::string> NatsConnection::request(std::string_view subject, std::string_view payload,
                                            milliseconds timeout) {
  const std::string prefix = "_INBOX." + token_ + ".req";
  if (!inbox_subscribed_) {
    subscribe(prefix + ".*", kRequestSid);
    inbox_subscribed_ = true;
  }
  const std::string inbox = prefix + "." + std::to_string(++requests_);
  publish(subject, inbox, payload);
  if (Status st = flush(); !st) return unexpected(st.error());
  std::optional<std::string> reply;
  bool no_responders = false;
  std::deque<Owned> others;
  const auto deadline = SteadyClock::now() + timeout;
  while (!reply) {
    if (SteadyClock::now() > deadline) {
      return unexpected(Errc::kUnavailable, "no reply to " + std::string(subject));
    }
    // Messages already held belong to others; read only new ones here.
    std::deque<Owned> held = std::move(held_);
    held_.clear();
    auto r = poll(milliseconds(50), [&](const NatsMessage& m) {
      if (m.subject == inbox) {
        // A status message without payload: 503, nobody answers that subject (yet).
        if (m.has_headers && m.payload.empty()) {
          no_responders = true;
        } else {
          reply = std::string(m.payload);
        }
      } else {
        others.push_back(Owned{std::string(m.subject), m.sid, std::string(m.reply),
                               std::string(m.payload), m.has_headers});
      }
    });
    held_ = std::move(held);
    if (!r) return unexpected(r.error());
    if (no_responders) {
      for (auto& o : others) held_.push_back(std::move(o));
      return unexpected(Errc::kUnavailable, "no responders for " + std::string(subject));
    }
  }
  for (auto& o : others) held_.push_back(std::move(o));
  return *reply;
}

std::unique_ptr<System> make_jetstream(const std::string& program, const EventPool& pool) {
  return std::make_unique<JetStreamSystem>(program, pool);
}

}  // namespace kolabus::bench
