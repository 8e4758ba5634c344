#include "resp_client.h"

#include <algorithm>
#include <charconv>
#include <filesystem>

#include "process.h"
#include "systems.h"

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view kStream = "bench";

// Steps over one value at `pos` without copying it; false if it is not all in `in`
// yet. Cheap, so a large reply arriving in pieces is not parsed again and again.
bool skip_value(const std::string& in, std::size_t& pos) {
  const std::size_t eol = in.find("\r\n", pos);
  if (eol == std::string::npos || eol == pos) return false;
  const char type = in[pos];
  std::int64_t n = 0;
  std::from_chars(in.data() + pos + 1, in.data() + eol, n);
  std::size_t next = eol + 2;
  if (type == '$' && n >= 0) {
    next += static_cast<std::size_t>(n) + 2;
    if (in.size() < next) return false;
  } else if (type == '*' && n > 0) {
    for (std::int64_t k = 0; k < n; ++k) {
      if (!skip_value(in, next)) return false;
    }
  }
  pos = next;
  return true;
}

// Parses one value at `pos`; false if it is not all in `in` yet (pos unchanged).
bool parse_value(const std::string& in, std::size_t& pos, RespValue& out) {
  const std::size_t eol = in.find("\r\n", pos);
  if (eol == std::string::npos || eol == pos) return false;
  const char type = in[pos];
  const std::string_view line(in.data() + pos + 1, eol - pos - 1);
  std::int64_t n = 0;
  auto number = [&] { std::from_chars(line.data(), line.data() + line.size(), n); };
  std::size_t next = eol + 2;
  switch (type) {
    case '+':
      out.type = RespValue::Type::kSimple;
      out.str = line;
      break;
    case '-':
      out.type = RespValue::Type::kError;
      out.str = line;
      break;
    case ':':
      number();
      out.type = RespValue::Type::kInteger;
      out.integer = n;
      break;
    case '$':
      number();
      if (n < 0) {
        out.type = RespValue::Type::kNull;
        break;
      }
      if (in.size() < next + static_cast<std::size_t>(n) + 2) return false;
      out.type = RespValue::Type::kBulk;
      out.str.assign(in, next, static_cast<std::size_t>(n));
      next += static_cast<std::size_t>(n) + 2;
      break;
    case '*': {
      number();
      if (n < 0) {
        out.type = RespValue::Type::kNull;
        break;
      }
      out.type = RespValue::Type::kArray;
      out.elements.resize(static_cast<std::size_t>(n));
      for (auto& e : out.elements) {
        if (!parse_value(in, next, e)) return false;
      }
      break;
    }
    default:
      // Not RESP2: report it as an error value rather than guess.
      out.type = RespValue::Type::kError;
      out.str = "unexpected reply type '" + std::string(1, type) + "'";
      break;
  }
  pos = next;
  return true;
}

void append_arg(std::string& out, std::string_view arg) {
  out += '$';
  out += std::to_string(arg.size());
  out += "\r\n";
  out += arg;
  out += "\r\n";
}

class RedisPublisher final : public PublishClient {
 public:
  RedisPublisher(RespConnection conn, const EventPool& pool)
      : conn_(std::move(conn)), pool_(pool) {}

  void send(std::uint64_t i) override {
    const std::size_t size = pool_.event_size(i);
    conn_.command_head({"XADD", kStream, "*", "e"}, size);
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
    auto r = conn_.poll(timeout, [&](const RespValue& v) {
      if (v.type == RespValue::Type::kBulk) {
        ++acks.acked;
      } else {
        ++acks.refused;
        if (acks.first_refusal.empty()) acks.first_refusal = v.str;
      }
    });
    if (!r) return unexpected(r.error());
    return acks;
  }

 private:
  RespConnection conn_;
  const EventPool& pool_;
};

// XREAD from a second connection: no consumer group, so nothing to acknowledge.
class RedisSubscriber final : public SubscribeClient {
 public:
  RedisSubscriber(RespConnection conn, const EventPool& pool, std::uint32_t count, std::string from)
      : conn_(std::move(conn)), pool_(pool), count_(count), last_id_(std::move(from)) {}

  Result<std::size_t> receive(milliseconds timeout, const EventHandler& on_event) override {
    const std::string count = std::to_string(count_);
    if (timeout.count() > 0) {
      conn_.command({"XREAD", "COUNT", count, "BLOCK", std::to_string(timeout.count()), "STREAMS",
                     kStream, last_id_});
    } else {
      conn_.command({"XREAD", "COUNT", count, "STREAMS", kStream, last_id_});
    }
    if (Status st = conn_.flush(); !st) return unexpected(st.error());
    std::size_t n = 0;
    bool answered = false;
    std::string error;
    const auto deadline = SteadyClock::now() + timeout + std::chrono::seconds(30);
    while (!answered) {
      if (SteadyClock::now() > deadline) {
        return unexpected(Errc::kUnavailable, "no answer to XREAD");
      }
      auto r = conn_.poll(milliseconds(100), [&](const RespValue& v) {
        answered = true;
        if (v.type == RespValue::Type::kError) error = v.str;
        if (v.type != RespValue::Type::kArray) return;  // null: nothing new
        for (const auto& stream : v.elements) {
          if (stream.elements.size() != 2) continue;
          for (const auto& entry : stream.elements[1].elements) {
            if (entry.elements.size() != 2) continue;
            last_id_ = entry.elements[0].str;
            const auto& fields = entry.elements[1].elements;
            if (fields.size() < 2) continue;
            ++n;
            const std::string& bytes = fields[1].str;
            if (auto i = pool_.index_of_event(
                    {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()})) {
              on_event(*i);
            }
          }
        }
      });
      if (!r) return unexpected(r.error());
    }
    if (!error.empty()) return unexpected(Errc::kInvalidArgument, "XREAD: " + error);
    return n;
  }

 private:
  RespConnection conn_;
  const EventPool& pool_;
  std::uint32_t count_;
  std::string last_id_;
};

class RedisSystem final : public System {
 public:
  RedisSystem(std::string program, const EventPool& pool)
      : program_(std::move(program)), pool_(pool) {}

  const char* name() const override { return "redis"; }
  std::string durability() const override {
    return "redis-server 7 --appendonly yes --appendfsync always (RDB snapshots off): the "
           "AOF is written and fsynced before the replies of one event-loop iteration are sent";
  }

  Status start(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unexpected(Errc::kIoError, "cannot create " + dir + ": " + ec.message());
    auto port = free_tcp_port();
    if (!port) return unexpected(port.error());
    port_ = *port;
    auto child = ChildProcess::spawn(
        {program_, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir", dir,
         "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"},
        dir + ".log");
    if (!child) return unexpected(child.error());
    child_ = std::move(*child);
    // Ready: PING answered PONG (while it loads the AOF it answers -LOADING).
    std::optional<RespConnection> conn;
    const bool up = wait_until(
        [&] {
          if (!child_.running()) return true;
          if (!conn) {
            auto c = RespConnection::connect(port_);
            if (!c) return false;
            conn.emplace(std::move(*c));
          }
          auto r = conn->call({"PING"}, milliseconds(600000));
          if (!r) {
            conn.reset();
            return false;
          }
          return r->type == RespValue::Type::kSimple && r->str == "PONG";
        },
        std::chrono::minutes(10), std::chrono::milliseconds(1));
    if (!up || !child_.running()) {
      const std::string tail = child_.log_tail();
      child_.stop();
      return unexpected(Errc::kUnavailable, "redis-server did not start; its log:\n" + tail);
    }
    startup_ = SteadyClock::now() - child_.started_at();
    return {};
  }

  std::chrono::nanoseconds startup_time() const override { return startup_; }
  void stop() override { child_.stop(); }
  pid_t pid() const override { return child_.pid(); }

  Result<std::unique_ptr<PublishClient>> publisher() override {
    auto conn = RespConnection::connect(port_);
    if (!conn) return unexpected(conn.error());
    return std::unique_ptr<PublishClient>(
        std::make_unique<RedisPublisher>(std::move(*conn), pool_));
  }

  Result<std::unique_ptr<SubscribeClient>> subscriber(const SubscribeOptions& options) override {
    if (!options.regions.empty()) {
      return unexpected(Errc::kInvalidArgument, "no region filter (one stream for all events)");
    }
    auto conn = RespConnection::connect(port_);
    if (!conn) return unexpected(conn.error());
    std::string from = "0-0";
    if (!options.from_start) {
      // The last id now, so that nothing published from here on is missed.
      auto last = conn->call({"XREVRANGE", kStream, "+", "-", "COUNT", "1"}, milliseconds(10000));
      if (!last) return unexpected(last.error());
      if (!last->elements.empty() && !last->elements[0].elements.empty()) {
        from = last->elements[0].elements[0].str;
      }
    }
    return std::unique_ptr<SubscribeClient>(std::make_unique<RedisSubscriber>(
        std::move(*conn), pool_, std::min<std::uint32_t>(options.window, 1000), from));
  }

  Result<std::uint64_t> stored_events() override {
    auto conn = RespConnection::connect(port_);
    if (!conn) return unexpected(conn.error());
    auto r = conn->call({"XLEN", kStream}, milliseconds(30000));
    if (!r) return unexpected(r.error());
    if (r->type != RespValue::Type::kInteger) return unexpected(Errc::kInvalidArgument, "XLEN");
    return static_cast<std::uint64_t>(r->integer);
  }

  // Consumer groups at the end of the stream: created, or (BUSYGROUP: it exists)
  // moved there.
  Status define_consumers(std::size_t first, std::size_t count) override {
    auto conn = RespConnection::connect(port_);
    if (!conn) return unexpected(conn.error());
    for (std::size_t n = first; n < first + count; ++n) {
      const std::string name = "bench-" + std::to_string(n);
      conn->command({"XGROUP", "CREATE", kStream, name, "$", "MKSTREAM"});
      conn->command({"XGROUP", "SETID", kStream, name, "$"});
    }
    if (Status st = conn->flush(); !st) return unexpected(st.error());
    std::size_t answered = 0;
    std::string error;
    while (answered < 2 * count) {
      auto r = conn->poll(milliseconds(30000), [&](const RespValue& v) {
        ++answered;
        if (v.type == RespValue::Type::kError && v.str.rfind("BUSYGROUP", 0) != 0 &&
            error.empty()) {
          error = v.str;
        }
      });
      if (!r) return unexpected(r.error());
      if (*r == 0) return unexpected(Errc::kUnavailable, "no answer to XGROUP");
    }
    if (!error.empty()) return unexpected(Errc::kInvalidArgument, "XGROUP: " + error);
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

Result<RespConnection> RespConnection::connect(int port) {
  auto tcp = TcpConnection::connect(port);
  if (!tcp) return unexpected(tcp.error());
  RespConnection c;
  c.conn_ = std::move(*tcp);
  return c;
}

void RespConnection::command(std::initializer_list<std::string_view> args) {
  out_ += '*';
  out_ += std::to_string(args.size());
  out_ += "\r\n";
  for (auto a : args) append_arg(out_, a);
}

void RespConnection::command_head(std::initializer_list<std::string_view> args,
                                  std::size_t last_size) {
  out_ += '*';
  out_ += std::to_string(args.size() + 1);
  out_ += "\r\n";
  for (auto a : args) append_arg(out_, a);
  out_ += '$';
  out_ += std::to_string(last_size);
  out_ += "\r\n";
}

Status RespConnection::flush() {
  if (out_.empty()) return {};
  Status st = conn_.write_all(out_);
  out_.clear();
  return st;
}

Result<std::size_t> RespConnection::poll(milliseconds timeout,
                                         const std::function<void(const RespValue&)>& on_reply) {
  std::size_t count = 0;
  auto drain = [&] {
    for (;;) {
      std::size_t end = pos_;
      if (!skip_value(in_, end)) break;
      RespValue v;
      std::size_t at = pos_;
      if (!parse_value(in_, at, v)) break;
      pos_ = at;
      ++count;
      on_reply(v);
    }
    if (pos_ > 0 && (pos_ == in_.size() || pos_ > (1 << 20))) {
      in_.erase(0, pos_);
      pos_ = 0;
    }
  };
  drain();
  auto r = conn_.read_some(in_, count > 0 ? milliseconds(0) : timeout);
  if (!r) return unexpected(r.error());
  drain();
  return count;
}

Result<RespValue> RespConnection::call(std::initializer_list<std::string_view> args,
                                       milliseconds timeout) {
  command(args);
  if (Status st = flush(); !st) return unexpected(st.error());
  std::optional<RespValue> reply;
  const auto deadline = SteadyClock::now() + timeout;
  while (!reply) {
    if (SteadyClock::now() > deadline) return unexpected(Errc::kUnavailable, "no reply");
    auto r = poll(milliseconds(50), [&](const RespValue& v) {
      if (!reply) reply = v;
    });
    if (!r) return unexpected(r.error());
  }
  return *reply;
}

std::unique_ptr<System> make_redis(const std::string& program, const EventPool& pool) {
  return std::make_unique<RedisSystem>(program, pool);
}

}  // namespace kolabus::bench
