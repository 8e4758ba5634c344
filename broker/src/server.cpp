#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <unistd.h>
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "response_frames.h"
#include <broker/commands.h>
#include <broker/delivery_frames.h>
#include <broker/server.h>
#include <schemas/free_text.h>
#include <schemas/log_generated.h>
#include <schemas/profile.h>
#include <schemas/protocol_generated.h>
#include <schemas/validate.h>

namespace kolabus::broker {

namespace {

using protocol::ErrorCode;
using Clock = std::chrono::steady_clock;

using frames::finish;
using frames::kProtocolVersion;
using frames::nested;

// The routing frames of a message: the client's identity, plus the empty delimiter of
// a REQ client. Held inline: a vector of them was an allocation per request.
class Envelope {
 public:
  Envelope() = default;
  explicit Envelope(zmq::message_t identity) { push_back(std::move(identity)); }

  void push_back(zmq::message_t frame) {
    KOLABUS_CHECK(size_ < frames_.size());
    frames_[size_++] = std::move(frame);
  }
  std::size_t size() const { return size_; }
  zmq::message_t& operator[](std::size_t i) { return frames_[i]; }
  zmq::message_t* begin() { return frames_.data(); }
  zmq::message_t* end() { return frames_.data() + size_; }

 private:
  std::array<zmq::message_t, 2> frames_;
  std::size_t size_ = 0;
};

// A message as received: the routing envelope and the body frame.
struct Incoming {
  Envelope envelope;
  zmq::message_t body;
  std::uint64_t corr = 0;
  std::string source;                   // the agency the connection's key belongs to now
  std::span<const std::uint8_t> event;  // into `aligned`
  const char* command = "";             // for refusal records
  // The body's bytes, copied to 8-byte-aligned storage of our own: ZeroMQ keeps small
  // frames inside the message object and others at any offset of its receive buffer,
  // and FlatBuffers reads scalars in place (a misaligned read is undefined behaviour;
  // a view into a small frame would not survive moving the message).
  std::vector<std::uint64_t> aligned;
};

// ACKs and NACKs are built into a builder the caller reuses (Impl::reply_fbb).
void build_nack(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t corr,
                const std::optional<EventId>& id, const Nack& n) {
  auto field = fbb.CreateString(n.field);
  auto message = fbb.CreateString(n.message);
  std::optional<events::Uuid> uuid;
  if (id) uuid = events::Uuid(flatbuffers::span<const std::uint8_t, 16>(id->bytes.data(), 16));
  auto body =
      protocol::CreateNack(fbb, uuid ? &*uuid : nullptr, n.code, field, message, n.retryable);
  fbb.Finish(
      protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::Nack, body.Union()));
}

void build_ack(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t corr, const EventId& id,
               const Ack& a) {
  events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  auto body = protocol::CreatePublishAck(fbb, &uuid, a.sequence.value, a.duplicate);
  fbb.Finish(protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::PublishAck,
                                      body.Union()));
}

flatbuffers::DetachedBuffer pong_response(std::uint64_t corr, Sequence next) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto version = fbb.CreateString(KOLABUS_VERSION);
  auto body = protocol::CreatePong(fbb, version, next.value);
  fbb.Finish(
      protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::Pong, body.Union()));
  return fbb.Release();
}

// A reply frame handed to ZeroMQ without a copy is freed by ZeroMQ's I/O thread once
// sent. libzmq passes it there through lock-free queues ThreadSanitizer cannot see, so
// TSan took each free for a race with the loop that built the frame: dozens of reports
// per frame, all suppressed (scripts/tsan.supp), but each first compared with every
// racy address TSan had kept, a list that grew with the frames until the I/O thread
// did nothing else (docs/RELIABILITY.md, "Sanitizers"). These two tell TSan of the
// hand-off; in other builds they are nothing.
void handed_to_zmq([[maybe_unused]] void* frame) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(frame);
#endif
}
void taken_from_zmq([[maybe_unused]] void* frame) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(frame);
#endif
}

// Logs refusals without letting a flood of bad input flood the log: at most
// kPerWindow lines per second, then one line counting what was suppressed.
class RefusalLog {
 public:
  void log(std::string_view source, const std::optional<EventId>& id, const Nack& n) {
    const auto now = Clock::now();
    if (now - window_start_ > std::chrono::seconds(1)) {
      if (suppressed_ > 0)
        spdlog::warn("{} more refusals not logged in the last second", suppressed_);
      window_start_ = now;
      in_window_ = 0;
      suppressed_ = 0;
    }
    if (++in_window_ > kPerWindow) {
      ++suppressed_;
      return;
    }
    spdlog::warn("refused {} from {}: {} ({})", id ? id->to_string() : std::string("a request"),
                 source, n.message, protocol::EnumNameErrorCode(n.code));
  }

 private:
  static constexpr int kPerWindow = 20;
  Clock::time_point window_start_ = Clock::now();
  int in_window_ = 0;
  std::uint64_t suppressed_ = 0;
};

}  // namespace

// The ZAP handler (ZeroMQ RFC 27): admits the CURVE keys of the registry. The User-Id it
// gives ZeroMQ, which then arrives with every message of that connection, is the key
// itself (Z85), not the agency's name: the server looks the key up in the registry as
// it is now on every request and before every delivery, so that a key replaced or
// removed by a reload loses its rights on connections that are already open (ZAP runs
// only when a connection opens). Runs on its own thread with a REP socket in the
// server's context; the registry is shared with the server loop (a reload swaps it).
class ZapHandler {
 public:
  // `refused(what, detail, address)`: a refused connection; `detail` (the key) is for
  // the log line only, so that refusals aggregate by what and address.
  using Refused = std::function<void(std::string what, std::string detail, std::string address)>;
  ZapHandler(zmq::context_t& context, std::function<std::shared_ptr<const Agencies>()> registry,
             Refused refused)
      : socket_(context, zmq::socket_type::rep),
        registry_(std::move(registry)),
        refused_(std::move(refused)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("inproc://zeromq.zap.01");  // before any CURVE socket binds
    thread_ = std::thread([this] { run(); });
  }
  ~ZapHandler() {
    stop_.store(true);
    thread_.join();
  }

 private:
  void run() {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop_.load()) {
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> req;
      if (!zmq::recv_multipart(socket_, std::back_inserter(req))) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      std::string status = "400", text = "not authorised", user;
      const std::string address = req.size() > 3 ? req[3].to_string() : std::string();
      if (req.size() >= 7 && req[5].to_string_view() == "CURVE" && req[6].size() == 32) {
        char z85[41] = {};
        zmq_z85_encode(z85, static_cast<const std::uint8_t*>(req[6].data()), 32);
        auto registry = registry_();
        const Agency* a = registry ? registry->by_key(z85) : nullptr;
        if (a != nullptr) {
          status = "200";
          text = "OK";
          user = z85;
          spdlog::info("agency {} connected from {}", a->name, address);
        } else {
          refused_("a key that is not in the agency registry", std::string(" (first: ") + z85 + ")",
                   address);
        }
      } else {
        refused_("mechanism " + (req.size() > 5 ? req[5].to_string() : std::string("?")) +
                     " (only CURVE is served)",
                 "", address);
      }
      std::vector<zmq::message_t> reply;
      reply.emplace_back("1.0", 3);
      reply.emplace_back(req.size() > 1 ? req[1].data() : nullptr,
                         req.size() > 1 ? req[1].size() : 0);
      reply.emplace_back(status.data(), status.size());
      reply.emplace_back(text.data(), text.size());
      reply.emplace_back(user.data(), user.size());
      reply.emplace_back();
      zmq::send_multipart(socket_, reply);
    }
  }

  zmq::socket_t socket_;
  std::function<std::shared_ptr<const Agencies>()> registry_;
  Refused refused_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Connections refused before any request: by ZAP (a key not in the registry) or in the
// handshake (NULL or PLAIN against CURVE, a wrong server key; seen through a socket
// monitor). A stream of them must neither flood the log nor grow the audit chain one
// record per attempt: the first refusal of each (reason, address) in a minute is logged
// and recorded at once; the rest of that minute are counted, then logged and recorded
// as one line and one record with the count.
class RefusedConnections {
 public:
  // Returns true when this refusal is the first of its kind in the window (log it now).
  // At most kMaxKinds kinds a minute are told apart; beyond, they are counted together.
  bool add(const std::string& what) {
    auto it = counts_.find(what);
    if (it == counts_.end()) {
      const bool room = counts_.size() < kMaxKinds;
      it = counts_.emplace(room ? what : std::string(kOthers), 0).first;
      if (!room) return ++it->second == 1;
      it->second = 1;
      return true;
    }
    ++it->second;
    return false;
  }

  // Everything counted beyond the first of each kind, once the window is over.
  std::vector<std::pair<std::string, std::uint64_t>> take_if_due(Clock::time_point now) {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    if (now - window_start_ < std::chrono::minutes(1)) return out;
    for (auto& [what, n] : counts_) {
      if (n > 1) out.emplace_back(what, n - 1);
    }
    counts_.clear();
    window_start_ = now;
    return out;
  }

 private:
  static constexpr std::size_t kMaxKinds = 1000;
  static constexpr std::string_view kOthers = "others (more kinds in a minute than are told apart)";
  std::map<std::string, std::uint64_t, std::less<>> counts_;
  Clock::time_point window_start_ = Clock::now();
};

// A name is an agency's identity: the events it published stay the name's (it may
// correct them) across key replacements. A registry that gives a name to another key
// while the name's old key stays registered under another name — an agency renamed and
// its old name handed to a newcomer — would hand the newcomer the renamed agency's
// events: refused, with the reason.
std::optional<std::string> name_reused(const Agencies& old, const Agencies& fresh) {
  for (const auto& a : fresh.all()) {
    const Agency* before = old.by_name(a.name);
    if (before == nullptr || before->public_key == a.public_key) continue;
    if (const Agency* moved = fresh.by_key(before->public_key); moved != nullptr) {
      return "agency '" + a.name +
             "' would get another key while its old key stays in the "
             "registry as agency '" +
             moved->name +
             "': a name is an agency's identity (the events it published stay the name's); "
             "give the new agency a name never used before";
    }
  }
  return std::nullopt;
}

// The bytes of deliveries sent to each client that it has not yet shown it read.
// ZeroMQ delivers a connection's messages in order, so an acknowledgement (or a NAK, or a
// reject) of an event proves that the client read every message sent to it up to the one
// that carried the event: those bytes are released. A client that never reads releases
// nothing and is held at its bound; what the broker holds for it stays bounded (the
// messages ZeroMQ queues for it are among these bytes). Replies to requests are not
// counted: each answers a request, at most one page (10 000 records) each.
class Outbound {
 public:
  void sent(const ClientId& client, const std::string& agency, std::vector<std::uint64_t> sequences,
            std::size_t bytes) {
    Client& c = clients_[client.bytes];
    if (c.agency.empty()) c.agency = agency;
    const std::uint64_t index = c.next_index++;
    for (std::uint64_t seq : sequences) c.last_message_of[seq] = index;
    c.sent.push_back({index, bytes, std::move(sequences)});
    c.bytes += bytes;
    by_agency_[c.agency] += bytes;
    total_ += bytes;
  }

  // The client acknowledged, NAKed or rejected these sequences.
  void confirmed(const ClientId& client, std::span<const std::uint64_t> sequences) {
    auto it = clients_.find(client.bytes);
    if (it == clients_.end()) return;
    Client& c = it->second;
    std::optional<std::uint64_t> upto;
    for (std::uint64_t seq : sequences) {
      if (auto m = c.last_message_of.find(seq); m != c.last_message_of.end()) {
        upto = std::max(upto.value_or(0), m->second);
      }
    }
    if (!upto) return;
    while (!c.sent.empty() && c.sent.front().index <= *upto) {
      const Message& m = c.sent.front();
      for (std::uint64_t seq : m.sequences) {
        if (auto l = c.last_message_of.find(seq);
            l != c.last_message_of.end() && l->second == m.index) {
          c.last_message_of.erase(l);
        }
      }
      release(c, m.bytes);
      c.sent.pop_front();
    }
  }

  // The connection is gone: whatever ZeroMQ still held for it is freed with it.
  void gone(const ClientId& client) {
    auto it = clients_.find(client.bytes);
    if (it == clients_.end()) return;
    release(it->second, it->second.bytes);
    clients_.erase(it);
  }

  // The connection went silent: most likely gone (crashed, its connection dropped, which
  // ZeroMQ does not tell), so its bytes stop counting against its agency; but they are
  // remembered, and count again if it speaks (restore), so that a client cannot shed its
  // bound by keeping quiet. At most kMaxDormant are remembered, the oldest forgotten.
  void dormant(const ClientId& client) {
    auto it = clients_.find(client.bytes);
    if (it == clients_.end()) return;
    Client c = std::move(it->second);
    release(c, c.bytes);
    c.bytes = 0;
    std::uint64_t held = 0;
    for (const auto& m : c.sent) held += m.bytes;
    clients_.erase(it);
    if (held == 0) return;
    dormant_.emplace(client.bytes, std::make_pair(std::move(c), held));
    dormant_order_.push_back(client.bytes);
    while (dormant_order_.size() > kMaxDormant) {
      dormant_.erase(dormant_order_.front());
      dormant_order_.pop_front();
    }
  }

  // A connection heard from again: what it had not read counts again.
  void restore(const ClientId& client) {
    auto it = dormant_.find(client.bytes);
    if (it == dormant_.end()) return;
    Client c = std::move(it->second.first);
    const std::uint64_t held = it->second.second;
    dormant_.erase(it);
    c.bytes = held;
    by_agency_[c.agency] += held;
    total_ += held;
    clients_.insert_or_assign(client.bytes, std::move(c));
  }

  // Whether `client` of `agency` may be sent more now: under its own bound (the agency's
  // limits, or the default ones in development mode); under its agency's, unless it holds
  // nothing unread; and, once every client together holds `max_total`, only if it holds
  // less than kHeavy (the heavy readers wait, the prompt ones go on).
  bool may_send(const ClientId& client, std::string_view agency, const Limits* limits,
                std::uint64_t max_total) const {
    static const Limits kDefaults;
    const Limits& l = limits != nullptr ? *limits : kDefaults;
    auto it = clients_.find(client.bytes);
    const std::uint64_t mine = it == clients_.end() ? 0 : it->second.bytes;
    if (mine >= l.queued_bytes_per_connection) return false;
    if (limits != nullptr && mine > 0) {
      if (auto a = by_agency_.find(agency);
          a != by_agency_.end() && a->second >= limits->queued_bytes) {
        return false;
      }
    }
    return total_ < max_total || mine < kHeavy;
  }

  std::uint64_t bytes_of(const ClientId& client) const {
    auto it = clients_.find(client.bytes);
    return it == clients_.end() ? 0 : it->second.bytes;
  }
  std::uint64_t total() const { return total_; }

 private:
  struct Message {
    std::uint64_t index;
    std::size_t bytes;
    std::vector<std::uint64_t> sequences;
  };
  struct Client {
    std::string agency;
    std::deque<Message> sent;
    std::unordered_map<std::uint64_t, std::uint64_t> last_message_of;  // sequence -> index
    std::uint64_t next_index = 0;
    std::uint64_t bytes = 0;
  };
  void release(Client& c, std::uint64_t bytes) {
    c.bytes -= bytes;
    total_ -= bytes;
    if (auto a = by_agency_.find(c.agency); a != by_agency_.end()) {
      a->second -= bytes;
      if (a->second == 0) by_agency_.erase(a);
    }
  }
  static constexpr std::size_t kMaxDormant = 100000;
  static constexpr std::uint64_t kHeavy = 1 << 20;
  std::unordered_map<std::string, Client> clients_;  // by routing id
  std::unordered_map<std::string, std::pair<Client, std::uint64_t>> dormant_;
  std::deque<std::string> dormant_order_;  // may name ids restored since: erase is a no-op
  std::map<std::string, std::uint64_t, std::less<>> by_agency_;
  std::uint64_t total_ = 0;
};

// The fsync of a pipelined group commit, on a thread of its own: the loop writes a
// drain's events without waiting for the disk (Core::Commit::kDeferred) and asks for a
// sync; while the disk works, the loop goes on reading, validating and writing the next
// drain, answering consumers and delivering what is already durable. A sync asked for
// while one runs starts as soon as that one ends, on this thread, without waiting for
// the loop: syncs follow each other back to back while writes keep coming, and each
// covers everything written before it started. Results come back through an eventfd
// that the loop polls with its socket.
class Syncer {
 public:
  explicit Syncer(std::function<Result<Sequence>()> sync)
      : sync_(std::move(sync)), fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    KOLABUS_CHECK(fd_ >= 0);
    thread_ = std::thread([this] { run(); });
  }
  ~Syncer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
    ::close(fd_);
  }
  Syncer(const Syncer&) = delete;
  Syncer& operator=(const Syncer&) = delete;

  // Readable (POLLIN) when a result waits.
  int fd() const { return fd_; }

  // Asks for a sync that starts after this call.
  void request() {
    {
      std::lock_guard lock(mu_);
      requested_ = true;
    }
    cv_.notify_one();
  }

  // No sync asked for, running, or with its result waiting.
  bool idle() {
    std::lock_guard lock(mu_);
    return !requested_ && !running_ && !result_.has_value();
  }

  // What the syncs since the last take() achieved, or nullopt if none ended: the first
  // failure if one failed, else the last durable end.
  std::optional<Result<Sequence>> take() {
    std::uint64_t n = 0;
    if (::read(fd_, &n, sizeof n) != sizeof n) return std::nullopt;
    std::lock_guard lock(mu_);
    auto r = std::move(result_);
    result_.reset();
    return r;
  }

  // Waits up to `timeout` for a result.
  std::optional<Result<Sequence>> wait(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    (void)::poll(&p, 1, static_cast<int>(timeout.count()));
    return take();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || requested_; });
      if (stop_) return;
      requested_ = false;
      running_ = true;
      lock.unlock();
      auto r = sync_();
      lock.lock();
      running_ = false;
      // A failure stays until the loop has taken it; a success replaces an earlier one.
      if (!result_ || result_->has_value()) result_ = std::move(r);
      const std::uint64_t one = 1;
      (void)!::write(fd_, &one, sizeof one);
    }
  }

  std::function<Result<Sequence>()> sync_;
  const int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                       // guarded by mu_
  bool requested_ = false;                  // guarded by mu_
  bool running_ = false;                    // guarded by mu_
  std::optional<Result<Sequence>> result_;  // guarded by mu_
  std::thread thread_;
};

struct Server::Impl {
  Core& core;
  Consumers& consumers;
  ServerOptions options;
  zmq::context_t context{1};
  std::mutex registry_mu;
  std::shared_ptr<const Agencies> registry;  // guarded by registry_mu
  std::unique_ptr<ZapHandler> zap;           // declared before the socket it serves
  zmq::socket_t socket{context, zmq::socket_type::router};
  RefusalLog refusals;
  std::uint64_t frame_errors = 0;
  std::uint64_t unroutable_replies = 0;

  std::uint64_t undelivered = 0;
  SystemClock wall;
  Clock::time_point last_flush_error{};
  // Every decision about who may do what (policy.h), by the registry as it is now.
  // Loop thread only; replaced by set_agencies. Outside development mode it starts with
  // an empty registry, which allows nothing.
  Policy policy{options.dev ? nullptr : std::make_shared<const Agencies>(), wall};
  // The consumer and operator commands, judged by `policy` (commands.h).
  Commands commands{core, consumers, policy,
                    Commands::Hooks{[this](std::span<const AuditFact> f) { return record(f); },
                                    [this] { return reload_registry(); }}};

  std::set<std::string> paused_agencies;   // logged when they stop and when they resume
  std::set<std::string> paused_consumers;  // "owner/name", likewise

  // The client connections heard from: the CURVE key each authenticated with, the
  // agency that key belonged to when last judged, and when it was last heard from. A
  // connection is counted against its agency's limits.connections while it holds a
  // consumer or was heard from within the client timeout (forget_silent_connections).
  struct Connection {
    std::string key;
    std::string agency;
    Clock::time_point last_seen;
  };
  std::unordered_map<std::string, Connection> connections;           // by routing id
  std::map<std::string, std::uint32_t, std::less<>> connections_of;  // agency -> count
  Clock::time_point last_forget{};
  // Delivery bytes clients have not yet shown they read (Outbound), and those held back
  // at their bound now (logged as they stall and resume).
  Outbound outbound;
  std::set<std::string> stalled;  // routing ids
  RefusedConnections zap_refusals, handshake_refusals, revoked_connections, limit_refusals;

  Audit* audit = nullptr;
  Server::ReloadHandler reload_handler;
  std::function<void(std::shared_ptr<const Agencies>)> install_registry;  // Server's
  std::uint64_t audit_failures = 0;
  Clock::time_point last_audit_error{};

  // After a failed write the store refuses every write until resumed (see
  // set_storage_recovery). Down from the first failure until a resume succeeds.
  std::function<Status()> resume_storage;
  bool storage_down = false;
  Clock::time_point down_since{};
  Clock::time_point next_resume{};
  std::chrono::milliseconds resume_backoff{0};
  int resume_attempts = 0;
  static constexpr std::chrono::milliseconds kFirstResume{100};
  static constexpr std::chrono::milliseconds kMaxResumeBackoff{5000};

  // The pipelined group commit (Syncer). An ACK whose sequence is not yet durable
  // waits in `held_acks`; the events written but not yet synced wait in `unsynced` before
  // consumers hear of them.
  struct HeldAck {
    Envelope envelope;
    std::uint64_t corr = 0;
    EventId id;
    Ack ack;
  };
  struct Unsynced {
    Sequence end;  // one past the batch's last sequence
    Core::AppendedBatch batch;
  };
  Syncer syncer{[this] { return core.sync(); }};
  // Commits left to hand to the sync thread after requests arrived during an inline
  // sync (commit()); then the loop tries an inline sync again.
  static constexpr std::uint32_t kThreadedCommits = 256;
  std::uint32_t threaded_commits = 0;
  std::vector<HeldAck> held_acks;
  std::deque<Unsynced> unsynced;

  void storage_failed(std::string_view what, const std::string& why) {
    if (storage_down || !resume_storage) return;
    storage_down = true;
    down_since = Clock::now();
    resume_backoff = kFirstResume;
    next_resume = down_since + resume_backoff;
    resume_attempts = 0;
    spdlog::error(
        "storage refuses writes after a failed {}: {}; publishes are answered "
        "StorageUnavailable and deliveries wait until writes are accepted again",
        what, why);
  }

  // Called every loop turn: one resume attempt when one is due.
  void maybe_resume() {
    if (!storage_down) return;
    const auto now = Clock::now();
    if (now < next_resume) return;
    ++resume_attempts;
    Status st = resume_storage();
    // Events written before a failed sync: the store is back only once a sync has
    // made them durable (EventLog::sync). The caller made sure no sync runs.
    std::optional<Result<Sequence>> synced;
    if (st && !unsynced.empty()) {
      synced = core.sync();
      if (!*synced) st = unexpected(synced->error());
    }
    const double down_s = std::chrono::duration<double>(Clock::now() - down_since).count();
    if (st) {
      storage_down = false;
      spdlog::warn("storage accepts writes again (resumed at attempt {}, after {:.1f} s)",
                   resume_attempts, down_s);
      if (synced) on_synced(*synced);
      return;
    }
    resume_backoff = std::min(resume_backoff * 2, kMaxResumeBackoff);
    next_resume = Clock::now() + resume_backoff;
    spdlog::warn(
        "storage still refuses writes (resume attempt {}, down {:.1f} s, next in {} ms): {}",
        resume_attempts, down_s, resume_backoff.count(), st.error().to_string());
  }
  // Connections the ZAP handler refused (what, address), waiting for the loop to log
  // and record them.
  std::mutex refused_mu;
  struct RefusedConnection {
    std::string what, detail, address;
  };
  std::vector<RefusedConnection> refused_connections;  // guarded by refused_mu
  // The ROUTER socket's monitor: handshakes that fail before ZAP is asked.
  zmq::socket_t monitor{context, zmq::socket_type::pair};

  Impl(Core& c, Consumers& cs, ServerOptions o) : core(c), consumers(cs), options(std::move(o)) {
    consumers.set_can_send([this](const ClientId& client) { return can_send(client); });
    if (options.dev) return;
    // A consumer whose owner may not receive its filter now (agreement ended, grant
    // narrowed, agency removed) gets nothing; its events wait.
    consumers.set_paused([this](std::string_view owner, std::string_view name,
                                const Filter& f) -> std::optional<std::string> {
      const Agency* a = policy.agencies()->by_name(owner);
      const auto agreement = a ? a->inactive_reason(wall.now_ms()) : std::optional<std::string>();
      const std::string agency(owner);
      if (agreement && paused_agencies.insert(agency).second) {
        spdlog::warn("deliveries to agency {} stopped: {}", agency, *agreement);
        record(fact(audit::Action::AgreementStopped, agency, *agreement));
      } else if (!agreement && paused_agencies.erase(agency) > 0) {
        spdlog::info("deliveries to agency {} resumed", agency);
        record(fact(audit::Action::AgreementResumed, agency, "a valid agreement is loaded"));
      }
      auto why = policy.paused(owner, f.kinds, f.regions);
      if (agreement) return why;  // stopped and recorded per agency
      const std::string key = agency + "/" + std::string(name);
      if (why && paused_consumers.insert(key).second) {
        spdlog::warn("deliveries to consumer {} paused: {}", key, *why);
        auto r = fact(audit::Action::ConsumerPaused, agency, *why);
        r.consumer = std::string(name);
        record(r);
      } else if (!why && paused_consumers.erase(key) > 0) {
        spdlog::info("deliveries to consumer {} resumed", key);
        auto r = fact(audit::Action::ConsumerResumed, agency, "the grant covers its filter again");
        r.consumer = std::string(name);
        record(r);
      }
      return why;
    });
  }

  std::shared_ptr<const Agencies> agencies() {
    std::lock_guard lock(registry_mu);
    return registry;
  }

  static AuditFact fact(audit::Action action, std::string agency, std::string detail = {}) {
    AuditFact f;
    f.action = action;
    f.agency = std::move(agency);
    f.detail = std::move(detail);
    return f;
  }

  // Writes audit records before what they describe is sent. False (logged, at most
  // every 10 s) when the chain cannot be written: the caller then sends no data.
  bool record(std::span<const AuditFact> facts) {
    if (audit == nullptr || facts.empty()) return true;
    Status st = audit->write(facts);
    if (st) return true;
    ++audit_failures;
    storage_failed("audit write", st.error().to_string());
    const auto now = Clock::now();
    if (now - last_audit_error > std::chrono::seconds(10)) {
      spdlog::error("cannot write the audit chain, no data is sent until it can: {}",
                    st.error().to_string());
      last_audit_error = now;
    }
    return false;
  }
  bool record(const AuditFact& f) { return record(std::span<const AuditFact>(&f, 1)); }

  // Logs and records a refused connection: the first of its kind in a minute at once,
  // the others of that minute as one line and one record with their count.
  void note_refusal(RefusedConnections& agg, audit::Action action, const std::string& what,
                    std::string_view detail = {}) {
    if (!agg.add(what)) return;
    spdlog::warn("refused a connection: {}{}", what, detail);
    record(fact(action, "", what + std::string(detail)));
  }
  void flush_refusals(RefusedConnections& agg, audit::Action action, const char* kind) {
    for (auto& [what, n] : agg.take_if_due(Clock::now())) {
      spdlog::warn("{} more {} in the last minute: {}", n, kind, what);
      auto f = fact(action, "", what);
      f.count = n;
      record(f);
    }
  }

  void record_refused_connections() {
    std::vector<RefusedConnection> refused;
    {
      std::lock_guard lock(refused_mu);
      refused.swap(refused_connections);
    }
    for (const auto& r : refused) {
      note_refusal(zap_refusals, audit::Action::ConnectionRefused, r.what + " from " + r.address,
                   r.detail);
    }
    poll_monitor();
    flush_refusals(zap_refusals, audit::Action::ConnectionRefused, "refused connections");
    flush_refusals(handshake_refusals, audit::Action::HandshakeRefused, "refused handshakes");
    flush_refusals(revoked_connections, audit::Action::ConnectionRevoked,
                   "requests on revoked connections");
    flush_refusals(limit_refusals, audit::Action::Refused, "connections beyond a limit");
  }

  // Handshakes that failed before any key was known: NULL or PLAIN against CURVE, a
  // wrong server key, a broken CURVE exchange.
  void poll_monitor() {
    if (options.dev) return;
    std::vector<zmq::message_t> ev;
    while (zmq::recv_multipart(monitor, std::back_inserter(ev), zmq::recv_flags::dontwait)) {
      if (ev.size() == 2 && ev[0].size() >= 6) {
        std::uint16_t event = 0;
        std::uint32_t value = 0;
        std::memcpy(&event, ev[0].data(), 2);
        std::memcpy(&value, static_cast<const char*>(ev[0].data()) + 2, 4);
        std::string why;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
          why = "handshake failed: protocol error " + std::to_string(value) +
                " (a client without CURVE, with PLAIN, or of another protocol)";
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
          why = "handshake failed: " + std::string(zmq_strerror(static_cast<int>(value))) +
                " (a client with a wrong server key, or a broken connection)";
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
          why = "handshake refused by the ZAP handler (status " + std::to_string(value) + ")";
        }
        // ZAP refusals are recorded with their key by record_refused_connections.
        if (!why.empty() && event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
          note_refusal(handshake_refusals, audit::Action::HandshakeRefused,
                       why + " on " + ev[1].to_string());
        }
      }
      ev.clear();
    }
  }

  // The CURVE key a message's connection authenticated with: the User-Id the ZAP handler
  // gave it. Never a field of the message. Empty in development mode.
  static std::string key_of(const zmq::message_t& body) {
    // NULL cannot happen with ZAP enforced; an empty key is nobody's.
    const char* user = zmq_msg_gets(body.handle(), "User-Id");
    return user != nullptr ? user : "";
  }

  // The agency a message comes from, judged now: the agency whose key its connection
  // authenticated with, if that key is still that agency's (development mode: the dev
  // agency). nullopt, and the client is answered, when it no longer is, or when this is
  // a new connection beyond the agency's limits.connections.
  std::optional<std::string> identify(Incoming& in) {
    const std::string key = options.dev ? std::string() : key_of(in.body);
    const std::string routing_id = in.envelope[0].to_string();
    auto it = connections.find(routing_id);
    if (it != connections.end() && it->second.key != key) {
      // The routing id now names another connection: whatever the old one had attached
      // goes back to the consumers' other clients.
      forget_connection(it);
      it = connections.end();
    }
    std::string agency = options.dev_agency;
    if (!options.dev) {
      const Agency* a = policy.identify(key);
      if (a == nullptr) {
        // What it held goes to the consumers' other clients now, and it is not kept
        // alive by its refused requests.
        if (it != connections.end()) forget_connection(it);
        const Denial d = *policy.connection(key, "");
        note_refusal(revoked_connections, audit::Action::ConnectionRevoked,
                     "key " + key + " is no longer in the agency registry");
        send_nack(in.envelope, in.corr, std::nullopt, Nack{d.code, d.field, d.message, false});
        return std::nullopt;
      }
      agency = a->name;
    }
    const auto now = Clock::now();
    consumers.touch(ClientId{routing_id});  // heard from, as itself
    if (it == connections.end()) {
      const Limits* limits = policy.limits(agency);
      // ZeroMQ does not say when a connection closes: at the limit, the agency's
      // connections idle for a second and holding no consumer are taken for closed (a
      // command-line tool's, most often) before a new one is refused.
      if (limits != nullptr && connections_of[agency] >= limits->connections) {
        forget_idle(agency, now - std::chrono::seconds(1));
      }
      if (limits != nullptr && connections_of[agency] >= limits->connections) {
        note_refusal(limit_refusals, audit::Action::Refused,
                     "agency " + agency + " is at its limit of " +
                         std::to_string(limits->connections) + " connections");
        send_nack(in.envelope, in.corr, std::nullopt,
                  Nack{ErrorCode::LimitExceeded, "",
                       "agency '" + agency + "' has " + std::to_string(limits->connections) +
                           " connections open, its limit (limits.connections in the agency "
                           "registry); close one, or ask the bus's operators to raise it",
                       false});
        return std::nullopt;
      }
      connections.emplace(routing_id, Connection{key, agency, now});
      ++connections_of[agency];
      outbound.restore(ClientId{routing_id});  // a connection silent for a while
    } else {
      it->second.last_seen = now;
      if (it->second.agency != agency) {  // the registry renamed the key's agency
        uncount(it->second.agency);
        ++connections_of[agency];
        it->second.agency = agency;
      }
    }
    return agency;
  }

  void uncount(const std::string& agency) {
    auto c = connections_of.find(agency);
    if (c != connections_of.end() && --c->second == 0) connections_of.erase(c);
  }

  // A new registry: every connection whose key is no longer its agency's is forgotten
  // now — detached from its consumers, what it held handed to their other clients —
  // rather than at its next request or delivery.
  void revoke_stale_connections() {
    if (options.dev) return;
    for (auto it = connections.begin(); it != connections.end();) {
      auto next = std::next(it);
      if (policy.connection(it->second.key, it->second.agency)) {
        note_refusal(revoked_connections, audit::Action::ConnectionRevoked,
                     "key " + it->second.key + " is no longer agency " + it->second.agency +
                         "'s: its deliveries stopped");
        forget_connection(it);
      }
      it = next;
    }
  }

  // The connection left (or its routing id was taken over): detached from its
  // consumers, no longer counted, what was sent to it released.
  void forget_connection(std::unordered_map<std::string, Connection>::iterator it) {
    const ClientId id{it->first};
    consumers.client_gone(id);
    outbound.gone(id);
    stalled.erase(it->first);
    uncount(it->second.agency);
    connections.erase(it);
  }

  // Forgets `agency`'s connections not heard from since `before` and holding no consumer.
  void forget_idle(const std::string& agency, Clock::time_point before) {
    for (auto it = connections.begin(); it != connections.end();) {
      const ClientId id{it->first};
      if (it->second.agency == agency && it->second.last_seen < before && !consumers.attached(id)) {
        outbound.dormant(id);
        stalled.erase(it->first);
        uncount(it->second.agency);
        it = connections.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Once a second: connections neither attached nor heard from within the client timeout
  // are no longer counted (a client that crashed, a publisher gone quiet). What they had
  // not read stays remembered (Outbound::dormant) in case they speak again.
  void forget_silent_connections() {
    const auto now = Clock::now();
    if (now - last_forget < std::chrono::seconds(1)) return;
    last_forget = now;
    const auto timeout = std::chrono::milliseconds(consumers.client_timeout_ms());
    for (auto it = connections.begin(); it != connections.end();) {
      const ClientId id{it->first};
      if (now - it->second.last_seen > timeout && !consumers.attached(id)) {
        outbound.dormant(id);
        stalled.erase(it->first);
        uncount(it->second.agency);
        it = connections.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Whether a delivery may go to `client` now: its agency's and the broker's outgoing
  // bounds (Outbound). Logged as a client stalls and as it resumes.
  bool can_send(const ClientId& client) {
    auto it = connections.find(client.bytes);
    // (Not `cond ? "" : agency`: that makes a temporary std::string the view outlives.)
    std::string_view agency;
    if (it != connections.end()) agency = it->second.agency;
    const bool ok =
        outbound.may_send(client, agency, policy.limits(agency), options.max_outgoing_bytes);
    if (!ok && outbound.bytes_of(client) > 0 && stalled.insert(client.bytes).second) {
      spdlog::warn(
          "a client of agency {} is stalled: {:.1f} MiB sent to it not yet read (outgoing "
          "{:.1f} MiB in all); it gets nothing more until it reads",
          agency, outbound.bytes_of(client) / 1048576.0, outbound.total() / 1048576.0);
    } else if (ok && stalled.erase(client.bytes) > 0) {
      spdlog::info("a client of agency {} reads again: deliveries resumed", agency);
    }
    return ok;
  }

  enum class Sent { kYes, kQueueFull, kClientGone };

  void send(Envelope& envelope, flatbuffers::DetachedBuffer reply) {
    (void)try_send(envelope, std::move(reply));
  }

  Sent try_send(Envelope& envelope, flatbuffers::DetachedBuffer reply) {
    return send_frames(envelope, [&reply] {
      // The reply's buffer goes to ZeroMQ as it is, not copied (a delivery carries a
      // whole event); ZeroMQ frees it once sent, or the message_t does if not sent.
      auto held = std::make_unique<flatbuffers::DetachedBuffer>(std::move(reply));
      zmq::message_t body(
          held->data(), held->size(),
          [](void*, void* hint) {
            taken_from_zmq(hint);
            delete static_cast<flatbuffers::DetachedBuffer*>(hint);
          },
          held.get());
      handed_to_zmq(held.get());
      held.release();  // body owns it now
      return body;
    });
  }

  // ACKs and NACKs: a few dozen bytes each, built in one reused builder and copied into
  // their frame. That is one allocation per reply (ZeroMQ's) where a builder of their
  // own and a detached buffer handed over took three.
  flatbuffers::FlatBufferBuilder reply_fbb{256};

  void send_ack(Envelope& envelope, std::uint64_t corr, const EventId& id, const Ack& a) {
    reply_fbb.Clear();
    build_ack(reply_fbb, corr, id, a);
    send_built(envelope);
  }

  void send_nack(Envelope& envelope, std::uint64_t corr, const std::optional<EventId>& id,
                 const Nack& n) {
    reply_fbb.Clear();
    build_nack(reply_fbb, corr, id, n);
    send_built(envelope);
  }

  void send_built(Envelope& envelope) {
    (void)send_frames(envelope, [this] {
      return zmq::message_t(reply_fbb.GetBufferPointer(), reply_fbb.GetSize());
    });
  }

  // Sends copies of the envelope's frames (a held envelope is used again), then the body
  // `make_body` returns.
  template <typename MakeBody>
  Sent send_frames(Envelope& envelope, MakeBody make_body) {
    try {
      for (auto& frame : envelope) {
        zmq::message_t copy;
        copy.copy(frame);
        if (!socket.send(copy, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
          ++unroutable_replies;  // the client's queue is full; it will time out and resend
          return Sent::kQueueFull;
        }
      }
      zmq::message_t body = make_body();
      if (!socket.send(body, zmq::send_flags::dontwait)) {
        ++unroutable_replies;
        return Sent::kQueueFull;
      }
      return Sent::kYes;
    } catch (const zmq::error_t& e) {
      // EHOSTUNREACH (ROUTER_MANDATORY): the client went away. Its outbox resends.
      ++unroutable_replies;
      spdlog::debug("reply not delivered: {}", e.what());
      return e.num() == EHOSTUNREACH ? Sent::kClientGone : Sent::kQueueFull;
    }
  }

  void refuse_frame(Envelope& envelope, std::uint64_t corr, Nack n) {
    ++frame_errors;
    refusals.log("a client", std::nullopt, n);
    send_nack(envelope, corr, std::nullopt, n);
  }

  // Copies of message bodies (Incoming::aligned) whose drain is done, for the next:
  // 4 MiB of them at most (a drain of 1,000 ordinary events needs under 1 MiB).
  std::vector<std::vector<std::uint64_t>> spare_aligned;
  std::size_t spare_aligned_words = 0;  // their capacity
  static constexpr std::size_t kMaxSpareAlignedWords = (4 << 20) / 8;

  // The body's bytes at an 8-byte-aligned address: a copy in `in.aligned`, in storage
  // reused from earlier drains. (Copied even when the frame's bytes happen to be
  // aligned: in a publish benchmark 17 % of them were, as ZeroMQ places frames at any
  // offset of its receive buffer.)
  const std::uint8_t* aligned_body(Incoming& in) {
    if (!spare_aligned.empty()) {
      in.aligned = std::move(spare_aligned.back());
      spare_aligned.pop_back();
      spare_aligned_words -= in.aligned.capacity();
    }
    in.aligned.resize((in.body.size() + 7) / 8);
    // Not for an empty body: memcpy to the null data() of an empty vector is undefined.
    if (!in.body.empty()) std::memcpy(in.aligned.data(), in.body.data(), in.body.size());
    return reinterpret_cast<const std::uint8_t*>(in.aligned.data());
  }

  // A drain's requests are answered: their body copies go back for the next drain.
  void recycle(std::vector<Incoming>& batch) {
    for (auto& in : batch) {
      const std::size_t words = in.aligned.capacity();
      if (words > 0 && spare_aligned_words + words <= kMaxSpareAlignedWords) {
        spare_aligned_words += words;
        spare_aligned.push_back(std::move(in.aligned));
      }
    }
    batch.clear();
  }

  std::vector<zmq::message_t> parts;  // read_one's, reused

  // Reads one message without blocking. Returns false when nothing is readable.
  // Publishes go to `batch`; everything else is answered here.
  bool read_one(std::vector<Incoming>& batch, std::size_t& batch_bytes) {
    parts.clear();
    if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
      return false;
    }
    Incoming in;
    in.envelope.push_back(std::move(parts[0]));
    const std::size_t body_frames = parts.size() - 1;
    if (body_frames == 2 && parts[1].size() == 0) {
      in.envelope.push_back(std::move(parts[1]));  // a REQ client's delimiter
    } else if (body_frames != 1) {
      if (body_frames >= 1 && parts[1].size() == 0) in.envelope.push_back(zmq::message_t());
      refuse_frame(in.envelope, 0,
                   Nack{ErrorCode::MalformedFrame, "",
                        "expected one body frame (DEALER) or an empty delimiter and one body "
                        "frame (REQ); got " +
                            std::to_string(body_frames) + " frames",
                        false});
      return true;
    }
    in.body = std::move(parts.back());
    if (in.body.size() > options.max_message_bytes) {
      refuse_frame(in.envelope, 0,
                   Nack{ErrorCode::FrameTooLarge, "",
                        "frame of " + std::to_string(in.body.size()) +
                            " bytes exceeds the broker's limit of " +
                            std::to_string(options.max_message_bytes) + " bytes",
                        false});
      return true;
    }
    const std::uint8_t* data = aligned_body(in);
    flatbuffers::Verifier verifier(data, in.body.size());
    if (!verifier.VerifyBuffer<protocol::Request>(nullptr)) {
      refuse_frame(
          in.envelope, 0,
          Nack{ErrorCode::MalformedFrame, "",
               "frame is not a kolabus.protocol.Request FlatBuffer (verifier failed)", false});
      return true;
    }
    const auto* req = flatbuffers::GetRoot<protocol::Request>(data);
    in.corr = req->corr();
    in.command = protocol::EnumNameCommand(req->command_type());
    if (req->version() != kProtocolVersion) {
      refuse_frame(in.envelope, in.corr,
                   Nack{ErrorCode::UnsupportedVersion, "version",
                        "protocol version " + std::to_string(req->version()) +
                            " is not supported; this broker speaks version 1",
                        false});
      return true;
    }
    // A union type without its table passes the Verifier: refuse it here, once, so
    // that no command handler ever reads a null command.
    if (req->command_type() != protocol::Command::NONE && req->command() == nullptr) {
      refuse_frame(in.envelope, in.corr,
                   Nack{ErrorCode::MissingField, "command",
                        std::string("command: ") + in.command + " carries no table", false});
      return true;
    }
    // Who asks, judged by the registry as it is now, before any command is served.
    if (req->command_type() != protocol::Command::NONE &&
        req->command_type() <= protocol::Command::MAX) {
      auto agency = identify(in);
      if (!agency) return true;
      in.source = std::move(*agency);
    }
    switch (req->command_type()) {
      case protocol::Command::Ping:
        send(in.envelope, pong_response(in.corr, core.next_sequence()));
        return true;
      case protocol::Command::Publish: {
        const auto* pub = req->command_as_Publish();
        if (pub == nullptr || pub->event() == nullptr || pub->event()->size() == 0) {
          refuse_frame(
              in.envelope, in.corr,
              Nack{ErrorCode::MissingField, "event", "event: Publish carries no event", false});
          return true;
        }
        in.event = {pub->event()->data(), pub->event()->size()};
        batch_bytes += in.body.size();
        batch.push_back(std::move(in));
        return true;
      }
      case protocol::Command::NONE:
        break;
      default:
        // The Verifier passes union types it does not know (a newer client's command):
        // those are answered UnknownCommand below, like NONE.
        if (req->command_type() > protocol::Command::MAX) break;
        answer_command(in, *req);
        return true;
    }
    refuse_frame(in.envelope, in.corr,
                 Nack{ErrorCode::UnknownCommand, "command",
                      "command type " + std::to_string(static_cast<int>(req->command_type())) +
                          " is unknown to this broker",
                      false});
    return true;
  }

  // A consumer or operator command, answered at once, in arrival order.
  void answer_command(Incoming& in, const protocol::Request& req) {
    const ClientId client{in.envelope[0].to_string()};
    // An acknowledgement, a NAK or a reject shows what the client has read.
    if (const auto* a = req.command_as_Ack(); a != nullptr && a->sequences() != nullptr) {
      outbound.confirmed(client, {a->sequences()->data(), a->sequences()->size()});
    } else if (const auto* n = req.command_as_Nak()) {
      const std::uint64_t seq = n->sequence();
      outbound.confirmed(client, {&seq, 1});
    } else if (const auto* r = req.command_as_Reject()) {
      const std::uint64_t seq = r->sequence();
      outbound.confirmed(client, {&seq, 1});
    }
    auto reply = commands.handle(in.source, client, in.envelope.size() > 1, req);
    if (reply.refusal) {
      refusals.log(in.source, std::nullopt, *reply.refusal);
      send_nack(in.envelope, in.corr, std::nullopt, *reply.refusal);
    } else if (reply.response) {
      send(in.envelope, std::move(*reply.response));
    }
  }

  // Loads the registry again (SIGHUP or ReloadRegistry). Returns its agency count.
  Result<std::uint64_t> reload_registry() {
    if (!reload_handler) return unexpected(Errc::kInvalidArgument, "no registry to reload");
    auto fresh = reload_handler();
    if (!fresh) return unexpected(fresh.error());
    if (!options.dev) {
      if (auto why = name_reused(*policy.agencies(), **fresh)) {
        spdlog::error("agency registry not reloaded: {}", *why);
        return unexpected(Errc::kInvalidArgument, *why);
      }
    }
    const std::uint64_t n = (*fresh)->size();
    install_registry(std::move(*fresh));
    return n;
  }

  void deliver() {
    auto due = consumers.pump();
    std::vector<const broker::Delivery*> ready;
    std::vector<AuditFact> facts;  // one per consumer
    // (owner, consumer) -> its fact: a round may hold thousands of deliveries to
    // hundreds of consumers, so no linear search per delivery.
    std::map<std::pair<std::string_view, std::string_view>, std::size_t> fact_of;
    std::set<ClientId> revoked;  // connections whose key is no longer their agency's
    for (auto& d : due) {
      if (!options.dev) {
        auto conn = connections.find(d.client.bytes);
        if (conn == connections.end() || policy.connection(conn->second.key, d.owner)) {
          if (revoked.insert(d.client).second && conn != connections.end()) {
            note_refusal(revoked_connections, audit::Action::ConnectionRevoked,
                         "key " + conn->second.key + " is no longer agency " + d.owner +
                             "'s: its deliveries stopped");
          }
          continue;
        }
      }
      auto m = commands.minimise(*d.record, d.owner);
      if (!m) continue;  // stays in flight: delivered again after ack_wait
      if (!m->keep) d.record = std::make_shared<const std::string>(std::move(m->stripped));
      ready.push_back(&d);
      auto [it, added] = fact_of.try_emplace({d.owner, d.consumer}, facts.size());
      if (added) {
        facts.push_back(fact(audit::Action::Deliver, d.owner));
        facts.back().consumer = d.consumer;
      }
      facts[it->second].sequences.push_back(d.sequence.value);
    }
    // What a revoked connection had goes to the consumers' other clients, now.
    for (const ClientId& c : revoked) {
      if (auto conn = connections.find(c.bytes); conn != connections.end()) {
        forget_connection(conn);
      } else {
        consumers.client_gone(c);
      }
    }
    // No audit record, no delivery: the events stay in flight and go again later.
    if (!record(facts)) ready.clear();
    // One message per delivery, or per batch for clients that asked for batches
    // (delivery_frames.h).
    for (const auto& group : group_deliveries(ready)) {
      const ClientId& client = group.front()->client;
      Envelope envelope(zmq::message_t(client.bytes.data(), client.bytes.size()));
      // Not sent because the client's queue is full: every event of the message stays
      // in flight and is delivered again after ack_wait. Because the client left
      // (killed, or its connection dropped): it is detached now, so these events and
      // the others it held go to the consumer's other clients at once (found by the
      // crash suite: a restarted consumer otherwise waited client_timeout_ms for them).
      auto frame = delivery_frame(group);
      const std::size_t bytes = frame.size();
      const Sent sent = try_send(envelope, std::move(frame));
      if (sent == Sent::kYes) {
        std::vector<std::uint64_t> seqs;
        seqs.reserve(group.size());
        for (const auto* d : group) seqs.push_back(d->sequence.value);
        outbound.sent(client, group.front()->owner, std::move(seqs), bytes);
      } else if (sent == Sent::kClientGone) {
        if (auto conn = connections.find(client.bytes); conn != connections.end()) {
          forget_connection(conn);
        } else {
          consumers.client_gone(client);
          outbound.gone(client);
        }
      }
      if (sent != Sent::kYes) undelivered += group.size();
    }
    if (Status st = consumers.flush(); !st) {
      storage_failed("write of consumer positions", st.error().to_string());
      const auto now = Clock::now();
      if (now - last_flush_error > std::chrono::seconds(10)) {
        spdlog::error("cannot persist consumer positions: {}", st.error().to_string());
        last_flush_error = now;
      }
    }
  }

  // Why publishes are refused now, or nullopt: less than the reserve is free on the
  // log's file system (ServerOptions::disk_reserve_bytes). One statvfs per drain.
  bool below_reserve_logged = false;
  std::optional<std::string> below_reserve() {
    if (options.disk_reserve_bytes == 0 || options.data_dir.empty()) return std::nullopt;
    struct statvfs fs {};
    if (::statvfs(options.data_dir.c_str(), &fs) != 0) return std::nullopt;
    const std::uint64_t free = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    const auto mib = [](std::uint64_t b) { return static_cast<double>(b) / (1 << 20); };
    if (free >= options.disk_reserve_bytes) {
      if (below_reserve_logged) {
        spdlog::warn("the disk holding the log has {:.1f} MiB free again: publishes accepted",
                     mib(free));
        below_reserve_logged = false;
      }
      return std::nullopt;
    }
    std::string why = fmt::format(
        "the disk holding the log has {:.1f} MiB free, under the {:.1f} MiB kept for consumers "
        "and the audit chain",
        mib(free), mib(options.disk_reserve_bytes));
    if (!below_reserve_logged) {
      spdlog::error("{}: publishes are answered StorageUnavailable until space is freed", why);
      below_reserve_logged = true;
    }
    return why;
  }

  void commit(std::vector<Incoming>& batch) {
    if (auto why = below_reserve()) {
      const Nack n{ErrorCode::StorageUnavailable, "",
                   "storage unavailable (" + *why + "); nothing was stored, send again later",
                   true};
      for (auto& in : batch) send_nack(in.envelope, in.corr, std::nullopt, n);
      return;
    }
    std::vector<PublishRequest> requests;
    requests.reserve(batch.size());
    for (const auto& in : batch) requests.push_back({in.event, in.source});
    const auto outcomes = core.publish_batch(requests, Core::Commit::kDeferred);
    if (auto appended = core.take_appended(); !appended.events.empty()) {
      unsynced.push_back({core.log().appended_end(), std::move(appended)});
    }
    const Sequence durable = core.next_sequence();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& o = outcomes[i];
      if (const auto* ack = std::get_if<Ack>(&o.result)) {
        if (ack->sequence < durable) {
          send_ack(batch[i].envelope, batch[i].corr, *o.id, *ack);
        } else if (storage_down) {
          // A resend of an event whose sync failed: its fate is settled only when the
          // store is back.
          send_nack(batch[i].envelope, batch[i].corr, o.id, unsynced_nack(""));
        } else {
          held_acks.push_back({std::move(batch[i].envelope), batch[i].corr, *o.id, *ack});
        }
      } else {
        const auto& n = std::get<Nack>(o.result);
        if (n.code == ErrorCode::StorageUnavailable) {
          if (!storage_down) {
            spdlog::error("storage unavailable, event {} NACKed retryable: {}",
                          o.id ? o.id->to_string() : "?", n.message);
          }
          storage_failed("append", n.message);
        } else {
          refusals.log(batch[i].source, o.id, n);
        }
        send_nack(batch[i].envelope, batch[i].corr, o.id, n);
      }
    }
    // While the store is down its recovery (maybe_resume) syncs what waits.
    if (storage_down || (held_acks.empty() && unsynced.empty())) return;
    // Nothing more to read and no sync running: sync here. That saves the two thread
    // hand-offs, which are most of a window-1 publisher's extra round trip; with more
    // waiting on the socket, the sync thread syncs while the loop reads on. When
    // requests came in while the loop itself was syncing, they waited for the disk
    // unread: the next commits go to the sync thread, so that the loop reads,
    // validates and delivers while the disk works (docs/BENCHMARKS.md, "The inline
    // sync, only while nothing arrives during it").
    if (threaded_commits == 0 && syncer.idle() &&
        !(socket.get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      on_synced(core.sync());
      if (socket.get(zmq::sockopt::events) & ZMQ_POLLIN) threaded_commits = kThreadedCommits;
      return;
    }
    if (threaded_commits > 0) --threaded_commits;
    syncer.request();
  }
  // The NACK of an event written but not synced when the sync failed, or a resend of
  // one while the store is down: it may be on the disk or not.
  static Nack unsynced_nack(const std::string& why) {
    return Nack{ErrorCode::StorageUnavailable, "",
                "storage unavailable (the disk did not confirm the write" +
                    (why.empty() ? std::string() : ": " + why) +
                    "); the event may or may not be stored: send it again later, a resend is "
                    "answered with its sequence once the disk works",
                true};
  }

  // A sync ended: ACK what it made durable and tell consumers of those events; on
  // failure NACK what waited for it.
  void on_synced(const Result<Sequence>& r) {
    if (!r) {
      const std::string why = r.error().to_string();
      for (auto& h : held_acks) send_nack(h.envelope, h.corr, h.id, unsynced_nack(why));
      held_acks.clear();
      // RocksDB 7.8 cannot resume after a failed fsync of its write-ahead log: the
      // resume attempts keep failing ("Seen error") until the broker is restarted,
      // which replays the log.
      storage_failed("sync of the write-ahead log",
                     why +
                         " (if resuming keeps failing, restart the broker: a restart replays "
                         "the write-ahead log)");
      // `unsynced` stays: once the store recovers, a sync makes those events durable
      // (EventLog::sync) and consumers get them.
      return;
    }
    const Sequence durable = *r;
    // Sent in the order they were held: a publisher's ACKs keep their order. Those that
    // still wait move up in place (the vector keeps its capacity for the next drain).
    std::size_t kept = 0;
    for (auto& h : held_acks) {
      if (h.ack.sequence < durable) {
        send_ack(h.envelope, h.corr, h.id, h.ack);
      } else {
        if (&h != &held_acks[kept]) held_acks[kept] = std::move(h);
        ++kept;
      }
    }
    held_acks.erase(held_acks.begin() + static_cast<std::ptrdiff_t>(kept), held_acks.end());
    while (!unsynced.empty() && unsynced.front().end <= durable) {
      consumers.on_appended(unsynced.front().batch.events);
      unsynced.pop_front();
    }
  }

  // Polls the syncer without waiting.
  void poll_syncer() {
    if (auto r = syncer.take()) on_synced(*r);
  }

  // At stop: the last sync's ACKs go out (best effort: the socket closes right after).
  void finish_syncs() {
    for (int round = 0; round < 3 && !(held_acks.empty() && syncer.idle()); ++round) {
      if (storage_down) break;
      if (!held_acks.empty()) syncer.request();
      if (auto r = syncer.wait(std::chrono::seconds(10))) on_synced(*r);
    }
  }
};

Server::Server(Core& core, Consumers& consumers, ServerOptions options)
    : impl_(std::make_unique<Impl>(core, consumers, std::move(options))) {
  impl_->install_registry = [this](std::shared_ptr<const Agencies> a) {
    set_agencies(std::move(a));
  };
}

void Server::set_reload_handler(ReloadHandler handler) {
  impl_->reload_handler = std::move(handler);
}

Server::~Server() = default;

void Server::set_audit(Audit* audit) {
  impl_->audit = audit;
  impl_->core.set_audit(audit);
  impl_->commands.set_audit(audit);
}

void Server::set_storage_recovery(std::function<Status()> resume) {
  impl_->resume_storage = std::move(resume);
}

void Server::set_agencies(std::shared_ptr<const Agencies> agencies) {
  {
    std::lock_guard lock(impl_->registry_mu);
    impl_->registry = agencies;
  }
  // From the next request and the next delivery on, every decision is the new
  // registry's: open connections and attached consumers included.
  if (!impl_->options.dev) {
    impl_->policy = Policy(agencies ? agencies : std::make_shared<const Agencies>(), impl_->wall);
    impl_->revoke_stale_connections();
  }
  if (agencies) {
    std::string names;
    for (const auto& a : agencies->all()) names += (names.empty() ? "" : ", ") + a.name;
    impl_->record(Impl::fact(audit::Action::RegistryLoaded, "",
                             std::to_string(agencies->size()) + " agencies: " + names));
  }
  impl_->core.set_agencies(impl_->options.dev ? nullptr : std::move(agencies));
}

Result<std::string> Server::bind() {
  auto& s = impl_->socket;
  try {
    if (!impl_->options.dev) {
      if (impl_->options.curve_secret_key.size() != 40) {
        return unexpected(Errc::kInvalidArgument, "no CURVE secret key for the broker");
      }
      Impl* im = impl_.get();
      impl_->zap = std::make_unique<ZapHandler>(
          impl_->context, [im] { return im->agencies(); },
          [im](std::string what, std::string detail, std::string address) {
            std::lock_guard lock(im->refused_mu);
            // Bounded: the loop takes them every turn; a flood beyond this is counted
            // by the handshake monitor (ZAP refusals are HANDSHAKE_FAILED_AUTH there).
            if (im->refused_connections.size() < 10000) {
              im->refused_connections.push_back(
                  {std::move(what), std::move(detail), std::move(address)});
            }
          });
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, impl_->options.curve_secret_key);
      s.set(zmq::sockopt::zap_domain, "kolabus");
      // ZMQ_ZAP_ENFORCE_DOMAIN (a draft name, honoured by Debian's libzmq): fail
      // closed if the ZAP handler is ever missing.
      const int one = 1;
      zmq_setsockopt(s.handle(), 93, &one, sizeof one);
      // Handshakes that fail before ZAP is asked (no CURVE, a wrong server key) are seen
      // only by a monitor; the loop reads it (poll_monitor).
      const std::string monitor_endpoint =
          "inproc://kolabus-monitor-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
      if (zmq_socket_monitor(s.handle(), monitor_endpoint.c_str(),
                             ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
        return unexpected(Errc::kInternal,
                          std::string("cannot monitor the socket: ") + zmq_strerror(zmq_errno()));
      }
      impl_->monitor.set(zmq::sockopt::linger, 0);
      impl_->monitor.connect(monitor_endpoint);
    }
    s.set(zmq::sockopt::router_mandatory, 1);
    s.set(zmq::sockopt::linger, 0);
    // Frames a little over the limit are read and answered FrameTooLarge; far
    // larger ones make ZeroMQ drop the connection before they fill memory.
    const auto hard = static_cast<std::int64_t>(impl_->options.max_message_bytes) * 4 + 65536;
    s.set(zmq::sockopt::maxmsgsize, hard);
    // High-water marks, per connection, in messages. Receiving: a client that sends
    // faster than the disk stores is held back by TCP once 1000 of its messages wait
    // here (ZeroMQ stops reading its connection), instead of filling the broker's
    // memory; a drain takes at most max_batch_messages anyway. Sending: replies and
    // deliveries to a client that does not read wait here up to 20000 (above the
    // largest consumer window, 10000); beyond that try_send gets EAGAIN (with
    // ROUTER_MANDATORY) and drops them: replies are resent by the client, deliveries
    // go again after ack_wait.
    s.set(zmq::sockopt::rcvhwm, 1000);
    s.set(zmq::sockopt::sndhwm, 20000);
    s.bind(impl_->options.endpoint);
    return s.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return unexpected(Errc::kUnavailable,
                      "cannot bind " + impl_->options.endpoint + ": " + e.what());
  }
}

void Server::run() {
  auto& im = *impl_;
  zmq::pollitem_t items[] = {{im.socket.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, im.syncer.fd(), ZMQ_POLLIN, 0}};
  auto last_stats = Clock::now();
  CoreStats logged{};
  std::vector<Incoming> batch;  // a drain's publishes; reused
  im.record(Impl::fact(audit::Action::BrokerStarted, "", "kolabus-broker " KOLABUS_VERSION));
  while (!stop_.load()) {
    try {
      auto timeout = std::chrono::milliseconds(200);
      if (auto next = im.consumers.next_deadline()) {
        const TimeMs wait = std::max<TimeMs>(1, *next - im.wall.now_ms() + 1);
        timeout = std::min(timeout, std::chrono::milliseconds(wait));
      }
      if (im.storage_down) {
        const auto wait =
            std::chrono::duration_cast<std::chrono::milliseconds>(im.next_resume - Clock::now());
        timeout =
            std::clamp(wait + std::chrono::milliseconds(1), std::chrono::milliseconds(1), timeout);
      }
      zmq::poll(items, 2, timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) im.poll_syncer();
    if (items[0].revents & ZMQ_POLLIN) {
      std::size_t batch_bytes = 0;
      std::size_t read = 0;
      while (read < im.options.max_batch_messages && batch_bytes < im.options.max_batch_bytes &&
             im.read_one(batch, batch_bytes)) {
        ++read;
      }
      if (!batch.empty()) im.commit(batch);
      im.recycle(batch);
    }
    if (im.storage_down && im.syncer.idle()) im.maybe_resume();  // never while a sync runs
    im.record_refused_connections();
    im.forget_silent_connections();
    // While the store refuses writes, no delivery round: a delivery needs its audit
    // record, and an attempt that cannot be sent must not count towards max_deliver.
    if (!im.storage_down) im.deliver();
    if (reload_.exchange(false)) (void)im.reload_registry();  // errors are logged
    const auto now = Clock::now();
    if (now - last_stats > std::chrono::milliseconds(im.options.stats_interval_ms)) {
      const auto& s = im.core.stats();
      if (s.accepted != logged.accepted || s.refused != logged.refused ||
          s.duplicates != logged.duplicates || s.storage_failures != logged.storage_failures) {
        spdlog::info(
            "published {} (+{}), duplicates {}, refused {}, storage failures {}, group commits "
            "{}, frame errors {}, next sequence {}, outgoing {:.1f} MiB unread, {} clients "
            "stalled",
            s.accepted, s.accepted - logged.accepted, s.duplicates, s.refused, s.storage_failures,
            s.batches, im.frame_errors, im.core.next_sequence().value,
            im.outbound.total() / 1048576.0, im.stalled.size());
        logged = s;
      }
      last_stats = now;
    }
  }
  im.finish_syncs();
  spdlog::info("stopping: published {}, next sequence {}", im.core.stats().accepted,
               im.core.next_sequence().value);
}

}  // namespace kolabus::broker
