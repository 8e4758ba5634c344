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
#include <broker/delivery_frames.h>
#include <broker/server.h>
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
  std::string source;
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

flatbuffers::Offset<protocol::Filter> build_filter(flatbuffers::FlatBufferBuilder& fbb,
                                                   const Filter& f) {
  auto kinds = fbb.CreateVector(f.kinds);
  auto regions = fbb.CreateVectorOfStrings(f.regions);
  return protocol::CreateFilter(fbb, kinds, regions);
}

flatbuffers::Offset<protocol::ConsumerInfo> build_info(flatbuffers::FlatBufferBuilder& fbb,
                                                       const ConsumerStatus& st) {
  auto name = fbb.CreateString(st.spec.name);
  auto owner = fbb.CreateString(st.owner);
  auto filter = build_filter(fbb, st.spec.filter);
  auto config = protocol::CreateConsumerConfig(
      fbb, fbb.CreateString(st.spec.name), filter, st.spec.start, st.spec.start_sequence,
      st.spec.start_time, st.spec.ack_wait_ms, st.spec.max_deliver);
  return protocol::CreateConsumerInfo(fbb, name, owner, config, st.ack_floor, st.next_sequence,
                                      st.pending, st.lag, st.oldest_unacked_age_ms, st.clients,
                                      st.dead_letters, st.created);
}

flatbuffers::DetachedBuffer done_response(std::uint64_t corr, std::uint64_t count) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return finish(fbb, corr, protocol::Reply::Done, protocol::CreateDone(fbb, count));
}

// The sequence of a stored log record (0 if it does not verify: never sent then).
std::uint64_t sequence_of(std::string_view record) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(record.data());
  flatbuffers::Verifier verifier(bytes, record.size());
  return log::VerifyLogRecordBuffer(verifier) ? log::GetLogRecord(bytes)->sequence() : 0;
}

std::vector<std::uint64_t> sequences_of(const flatbuffers::Vector<std::uint64_t>* v) {
  return v == nullptr ? std::vector<std::uint64_t>{}
                      : std::vector<std::uint64_t>(v->begin(), v->end());
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

// The ZAP handler (ZeroMQ RFC 27): admits the CURVE keys of the registry and tells
// ZeroMQ the agency's name, which then arrives as the User-Id of every message of
// that connection. Runs on its own thread with a REP socket in the server's
// context; the registry is shared with the server loop (a reload swaps it).
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& context, std::function<std::shared_ptr<const Agencies>()> registry,
             std::function<void(std::string key, std::string address)> refused)
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
      if (req.size() >= 7 && req[5].to_string_view() == "CURVE" && req[6].size() == 32) {
        char z85[41] = {};
        zmq_z85_encode(z85, static_cast<const std::uint8_t*>(req[6].data()), 32);
        auto registry = registry_();
        const Agency* a = registry ? registry->by_key(z85) : nullptr;
        if (a != nullptr) {
          status = "200";
          text = "OK";
          user = a->name;
          spdlog::info("agency {} connected from {}", a->name, req[3].to_string_view());
        } else {
          spdlog::warn("refused a connection from {}: key {} is not in the agency registry",
                       req[3].to_string_view(), z85);
          refused_(z85, req[3].to_string());
        }
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
  std::function<void(std::string, std::string)> refused_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
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

  std::set<std::string> paused_agencies;  // logged when they stop and when they resume

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
  // Connections the ZAP handler refused, waiting for the loop to record them.
  std::mutex refused_mu;
  std::vector<AuditFact> refused_connections;  // guarded by refused_mu

  Impl(Core& c, Consumers& cs, ServerOptions o) : core(c), consumers(cs), options(std::move(o)) {
    if (options.dev) return;
    // An agency whose agreement is not valid now receives nothing; its events wait.
    consumers.set_paused([this](std::string_view owner) {
      const auto reg = agencies();
      const Agency* a = reg ? reg->by_name(owner) : nullptr;
      const auto why = a ? a->inactive_reason(wall.now_ms()) : std::optional<std::string>();
      const std::string name(owner);
      if (why && paused_agencies.insert(name).second) {
        spdlog::warn("deliveries to agency {} stopped: {}", name, *why);
        record(fact(audit::Action::AgreementStopped, name, *why));
      } else if (!why && paused_agencies.erase(name) > 0) {
        spdlog::info("deliveries to agency {} resumed", name);
        record(fact(audit::Action::AgreementResumed, name, "a valid agreement is loaded"));
      }
      return why.has_value();
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

  void record_refused_connections() {
    std::vector<AuditFact> facts;
    {
      std::lock_guard lock(refused_mu);
      facts.swap(refused_connections);
    }
    record(facts);
  }

  // The agency a message comes from: the User-Id the ZAP handler gave its
  // connection. Never a field of the message.
  std::string agency_of(const zmq::message_t& body) const {
    if (options.dev) return options.dev_agency;
    // NULL cannot happen with ZAP enforced; an empty agency is refused everything.
    const char* user = zmq_msg_gets(body.handle(), "User-Id");
    return user != nullptr ? user : "";
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
    consumers.touch(ClientId{parts[0].to_string()});
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
        in.source = agency_of(in.body);
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
        handle_command(in, req);
        return true;
    }
    refuse_frame(in.envelope, in.corr,
                 Nack{ErrorCode::UnknownCommand, "command",
                      "command type " + std::to_string(static_cast<int>(req->command_type())) +
                          " is unknown to this broker",
                      false});
    return true;
  }

  void reply_error(Incoming& in, const CommandError& e) {
    const Nack n{e.code, e.field, e.message, false};
    refusals.log(agency_of(in.body), std::nullopt, n);
    if (e.code == ErrorCode::NotAuthorised) {
      record(fact(audit::Action::Refused, agency_of(in.body),
                  std::string(in.command) + ": " + e.message));
    }
    send_nack(in.envelope, in.corr, std::nullopt, n);
  }

  // Data may leave only with its audit record written.
  void reply_unaudited(Incoming& in) {
    const Nack n{ErrorCode::StorageUnavailable, "",
                 "the audit chain cannot be written now, so no data is sent; try again later",
                 true};
    send_nack(in.envelope, in.corr, std::nullopt, n);
  }

  // Parses a filter from the wire into the consumers' form (checked, normalised).
  CommandResult<Filter> filter_of(const protocol::Filter* f) {
    std::vector<std::uint8_t> kinds;
    std::vector<std::string> regions;
    if (f != nullptr && f->kinds() != nullptr) kinds.assign(f->kinds()->begin(), f->kinds()->end());
    if (f != nullptr && f->regions() != nullptr) {
      for (const auto* r : *f->regions()) regions.push_back(r->str());
    }
    return consumers.make_filter(kinds, regions);
  }

  // Consumer and operator commands: answered at once, in arrival order.
  void handle_command(Incoming& in, const protocol::Request* req) {
    const ClientId client{in.envelope[0].to_string()};
    const std::string owner = agency_of(in.body);
    const auto reg = agencies();
    const Agency* me = reg ? reg->by_name(owner) : nullptr;
    // Development mode lets everyone do everything; otherwise the registry decides.
    auto may_subscribe = [&](const std::string& whose,
                             const Filter& f) -> std::optional<CommandError> {
      if (options.dev) return std::nullopt;
      const Agency* a = reg ? reg->by_name(whose) : nullptr;
      if (a != nullptr) {
        if (auto why = a->inactive_reason(wall.now_ms())) {
          return CommandError{ErrorCode::NotAuthorised, "",
                              "agency '" + whose + "' may not receive events: " + *why};
        }
      }
      if (a != nullptr && a->subscribe && a->subscribe->covers(f.kinds, f.regions)) {
        return std::nullopt;
      }
      return CommandError{
          ErrorCode::NotAuthorised, "filter",
          "agency '" + whose + "' may not receive these events: " +
              (a == nullptr || !a->subscribe ? std::string("it has no subscribe grant")
                                             : "its grant covers " + a->subscribe->describe() +
                                                   "; ask for kinds and regions within it")};
    };
    auto may_operate = [&]() -> std::optional<CommandError> {
      if (options.dev || (me != nullptr && me->operate)) return std::nullopt;
      return CommandError{ErrorCode::NotAuthorised, "",
                          "agency '" + owner +
                              "' may not operate the bus (replay, dead letters, consumers of "
                              "others): it has no operate permission in the agency registry"};
    };
    // The agency whose consumer an operator command names: the caller's own unless
    // `owner` says otherwise.
    auto owner_of = [&](const flatbuffers::String* o) {
      return o != nullptr && o->size() > 0 ? o->str() : owner;
    };
    auto missing = [&](const char* field) {
      reply_error(in, {ErrorCode::MissingField, field, std::string(field) + ": required"});
    };
    switch (req->command_type()) {
      case protocol::Command::Subscribe: {
        const auto* sub = req->command_as_Subscribe();
        const auto* cfg = sub->config();
        if (cfg == nullptr || cfg->name() == nullptr) return missing("config.name");
        if (in.envelope.size() > 1) {
          return reply_error(in, {ErrorCode::InvalidRequest, "",
                                  "a consumer needs a DEALER socket: deliveries arrive unasked, "
                                  "which a REQ socket cannot receive"});
        }
        auto filter = filter_of(cfg->filter());
        if (auto* e = std::get_if<CommandError>(&filter)) return reply_error(in, *e);
        if (auto e = may_subscribe(owner, std::get<Filter>(filter))) return reply_error(in, *e);
        ConsumerSpec spec{cfg->name()->str(),    std::get<Filter>(filter), cfg->start(),
                          cfg->start_sequence(), cfg->start_time(),        cfg->ack_wait_ms(),
                          cfg->max_deliver()};
        auto r = consumers.subscribe(client, owner, spec, sub->window(), sub->batch());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& st = std::get<ConsumerStatus>(r);
        if (st.created)
          spdlog::info("consumer {}/{} created at sequence {}", owner, spec.name, st.next_sequence);
        {
          auto f = fact(audit::Action::Subscribe, owner, st.created ? "created" : "joined");
          f.consumer = spec.name;
          f.position = st.next_sequence;
          record(f);
        }
        flatbuffers::FlatBufferBuilder fbb(512);
        auto info = build_info(fbb, st);
        return send(in.envelope, finish(fbb, in.corr, protocol::Reply::Subscribed,
                                        protocol::CreateSubscribed(fbb, info)));
      }
      case protocol::Command::Unsubscribe: {
        const auto* u = req->command_as_Unsubscribe();
        if (auto e = consumers.unsubscribe(client, owner, u->consumer()->string_view())) {
          return reply_error(in, *e);
        }
        return send(in.envelope, done_response(in.corr, 1));
      }
      case protocol::Command::Ack: {
        const auto* a = req->command_as_Ack();
        const auto seqs = sequences_of(a->sequences());
        if (auto e = consumers.ack(owner, a->consumer()->string_view(), seqs)) {
          reply_error(in, *e);
        }
        return;  // no reply on success
      }
      case protocol::Command::Nak: {
        const auto* n = req->command_as_Nak();
        if (auto e =
                consumers.nak(owner, n->consumer()->string_view(), n->sequence(), n->delay_ms())) {
          reply_error(in, *e);
        }
        return;
      }
      case protocol::Command::Reject: {
        const auto* r = req->command_as_Reject();
        if (auto e = consumers.reject(owner, r->consumer()->string_view(), r->sequence(),
                                      r->reason() ? r->reason()->str() : "")) {
          reply_error(in, *e);
        }
        return;
      }
      case protocol::Command::ListConsumers: {
        flatbuffers::FlatBufferBuilder fbb(1024);
        std::vector<flatbuffers::Offset<protocol::ConsumerInfo>> infos;
        const bool all = !may_operate().has_value();  // operators see every agency's
        for (const auto& st : consumers.list()) {
          if (all || st.owner == owner) infos.push_back(build_info(fbb, st));
        }
        auto list = protocol::CreateConsumerList(fbb, fbb.CreateVector(infos));
        return send(in.envelope, finish(fbb, in.corr, protocol::Reply::ConsumerList, list));
      }
      case protocol::Command::SeekConsumer: {
        const auto* sk = req->command_as_SeekConsumer();
        if (auto e = may_operate()) return reply_error(in, *e);
        const std::string whose = owner_of(sk->owner());
        // A replay is a new read of the data: the owner's grant must still cover it.
        if (auto sp = consumers.spec(whose, sk->consumer()->string_view())) {
          if (auto e = may_subscribe(whose, sp->filter)) return reply_error(in, *e);
        }
        auto r = consumers.seek(whose, sk->consumer()->string_view(), sk->start(), sk->sequence(),
                                sk->time());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& st = std::get<ConsumerStatus>(r);
        spdlog::info("consumer {}/{} moved to sequence {} by {}", whose, st.spec.name,
                     st.next_sequence, owner);
        {
          auto f = fact(audit::Action::Seek, owner);
          f.consumer = st.spec.name;
          f.owner = whose;
          f.position = st.next_sequence;
          record(f);
        }
        flatbuffers::FlatBufferBuilder fbb(512);
        auto info = build_info(fbb, st);
        return send(in.envelope, finish(fbb, in.corr, protocol::Reply::Subscribed,
                                        protocol::CreateSubscribed(fbb, info)));
      }
      case protocol::Command::DeleteConsumer: {
        const auto* d = req->command_as_DeleteConsumer();
        if (auto e = may_operate()) return reply_error(in, *e);
        const std::string whose = owner_of(d->owner());
        auto r = consumers.remove(whose, d->consumer()->string_view());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        spdlog::info("consumer {}/{} deleted by {}", whose, d->consumer()->string_view(), owner);
        {
          auto f = fact(audit::Action::DeleteConsumer, owner);
          f.consumer = d->consumer()->str();
          f.owner = whose;
          record(f);
        }
        return send(in.envelope, done_response(in.corr, std::get<std::uint64_t>(r)));
      }
      case protocol::Command::ReadRange: {
        const auto* rr = req->command_as_ReadRange();
        if (auto e = may_operate()) return reply_error(in, *e);
        auto filter = filter_of(rr->filter());
        if (auto* e = std::get_if<CommandError>(&filter)) return reply_error(in, *e);
        if (auto e = may_subscribe(owner, std::get<Filter>(filter))) return reply_error(in, *e);
        auto r = consumers.read_range(std::get<Filter>(filter), rr->from_sequence(),
                                      rr->from_time(), rr->to_sequence(), rr->max_events());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& page = std::get<RangePage>(r);
        flatbuffers::FlatBufferBuilder fbb(4096);
        std::vector<flatbuffers::Offset<protocol::Record>> records;
        auto f = fact(audit::Action::Read, owner);
        for (const auto& rec : page.records) {
          if (auto m = minimise(rec, owner)) {
            records.push_back(protocol::CreateRecord(fbb, nested(fbb, m->of(rec))));
            f.sequences.push_back(sequence_of(rec));
          }
        }
        if (!f.sequences.empty() && !record(f)) return reply_unaudited(in);
        auto body = protocol::CreateRangePage(fbb, fbb.CreateVector(records), page.next, page.done);
        return send(in.envelope, finish(fbb, in.corr, protocol::Reply::RangePage, body));
      }
      case protocol::Command::DlqList: {
        const auto* l = req->command_as_DlqList();
        if (auto e = may_operate()) return reply_error(in, *e);
        auto r = consumers.dead_letters(owner_of(l->owner()),
                                        l->consumer() ? l->consumer()->string_view() : "",
                                        l->from_sequence(), l->max());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        flatbuffers::FlatBufferBuilder fbb(4096);
        std::vector<flatbuffers::Offset<protocol::DeadLetter>> items;
        auto f = fact(audit::Action::ReadDeadLetters, owner);
        f.owner = owner_of(l->owner());
        if (l->consumer() != nullptr) f.consumer = l->consumer()->str();
        for (const auto& d : std::get<std::vector<DeadLetter>>(r))
          f.sequences.push_back(d.entry.sequence);
        if (!f.sequences.empty() && !record(f)) return reply_unaudited(in);
        for (const auto& d : std::get<std::vector<DeadLetter>>(r)) {
          const auto m = minimise(d.record, owner);
          auto record = nested(fbb, m ? m->of(d.record) : std::string_view());
          items.push_back(protocol::CreateDeadLetter(
              fbb, fbb.CreateString(d.entry.key.name), d.entry.sequence, d.entry.attempts,
              fbb.CreateString(d.entry.reason), d.entry.dead_at, record));
        }
        auto body = protocol::CreateDeadLetterList(fbb, fbb.CreateVector(items));
        return send(in.envelope, finish(fbb, in.corr, protocol::Reply::DeadLetterList, body));
      }
      case protocol::Command::DlqRedrive:
      case protocol::Command::DlqDrop: {
        const bool redrive = req->command_type() == protocol::Command::DlqRedrive;
        if (auto e = may_operate()) return reply_error(in, *e);
        const std::string whose = owner_of(redrive ? req->command_as_DlqRedrive()->owner()
                                                   : req->command_as_DlqDrop()->owner());
        const auto* name = redrive ? req->command_as_DlqRedrive()->consumer()
                                   : req->command_as_DlqDrop()->consumer();
        const auto seqs = sequences_of(redrive ? req->command_as_DlqRedrive()->sequences()
                                               : req->command_as_DlqDrop()->sequences());
        auto r = redrive ? consumers.redrive(whose, name->string_view(), seqs)
                         : consumers.drop_dead_letters(whose, name->string_view(), seqs);
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        spdlog::info("consumer {}/{}: {} {} dead letters", whose, name->string_view(),
                     redrive ? "redrove" : "dropped", std::get<std::uint64_t>(r));
        {
          auto f = fact(redrive ? audit::Action::Redrive : audit::Action::DropDeadLetters, owner);
          f.consumer = name->str();
          f.owner = whose;
          f.sequences = seqs;
          f.count = std::get<std::uint64_t>(r);
          record(f);
        }
        return send(in.envelope, done_response(in.corr, std::get<std::uint64_t>(r)));
      }
      case protocol::Command::ReloadRegistry: {
        if (auto e = may_operate()) return reply_error(in, *e);
        auto r = reload_registry();
        if (!r) {
          return reply_error(
              in, {ErrorCode::InvalidRequest, "",
                   "agency registry not reloaded, the old one stays: " + r.error().message});
        }
        return send(in.envelope, done_response(in.corr, *r));
      }
      case protocol::Command::AuditRead: {
        if (auto e = may_operate()) return reply_error(in, *e);
        if (audit == nullptr) return reply_error(in, no_audit());
        return audit_read(in, req->command_as_AuditRead());
      }
      case protocol::Command::AuditPerson: {
        if (auto e = may_operate()) return reply_error(in, *e);
        if (audit == nullptr) return reply_error(in, no_audit());
        return audit_person(in, owner, req->command_as_AuditPerson());
      }
      case protocol::Command::NONE:
      case protocol::Command::Publish:
      case protocol::Command::Ping:
        break;  // handled by read_one
    }
  }

  // Loads the registry again (SIGHUP or ReloadRegistry). Returns its agency count.
  Result<std::uint64_t> reload_registry() {
    if (!reload_handler) return unexpected(Errc::kInvalidArgument, "no registry to reload");
    auto fresh = reload_handler();
    if (!fresh) return unexpected(fresh.error());
    const std::uint64_t n = (*fresh)->size();
    install_registry(std::move(*fresh));
    return n;
  }

  static CommandError no_audit() {
    return {ErrorCode::InvalidRequest, "", "this broker keeps no audit chain"};
  }

  void storage_error(Incoming& in, const Error& e) {
    spdlog::error("audit chain: {}", e.to_string());
    const Nack n{ErrorCode::StorageUnavailable, "", "cannot read the audit chain: " + e.message,
                 true};
    send_nack(in.envelope, in.corr, std::nullopt, n);
  }

  void audit_read(Incoming& in, const protocol::AuditRead* ar) {
    constexpr std::uint32_t kMaxPage = 10000;
    const auto& log = audit->log();
    std::uint64_t from = ar->from_index();
    if (from == 0) {
      auto at = first_index_at(log, ar->since_time());
      if (!at) return storage_error(in, at.error());
      from = *at;
    }
    const std::size_t max = std::clamp<std::uint32_t>(ar->max(), 1, kMaxPage);
    const auto head = log.head();
    flatbuffers::FlatBufferBuilder fbb(64 * 1024);
    std::vector<flatbuffers::Offset<protocol::AuditBlob>> blobs;
    std::uint64_t next = from;
    Status st = log.scan(from, max, [&](std::uint64_t key, std::string_view bytes) {
      auto v = fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      blobs.push_back(protocol::CreateAuditBlob(fbb, key, v));
      next = key + 1;
      return true;
    });
    if (!st) return storage_error(in, st.error());
    const bool done = blobs.size() < max;
    auto records = fbb.CreateVector(blobs);
    auto hash = fbb.CreateVector(head.hash.data(), head.hash.size());
    auto body = protocol::CreateAuditPage(fbb, records, next, done, head.index, hash);
    send(in.envelope, finish(fbb, in.corr, protocol::Reply::AuditPage, body));
  }

  void audit_person(Incoming& in, const std::string& owner, const protocol::AuditPerson* ap) {
    constexpr std::uint32_t kMaxScan = 100000;
    const std::string_view nik = ap->nik()->string_view();
    if (nik.size() != 16 ||
        !std::all_of(nik.begin(), nik.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return reply_error(in, {ErrorCode::InvalidRequest, "nik", "nik: must be 16 digits"});
    }
    const std::uint64_t from = std::max<std::uint64_t>(ap->from_index(), 1);
    // The question itself is an access to personal data: recorded (without the NIK)
    // before the first page is answered.
    if (from == 1 && !record(fact(audit::Action::PersonQuery, owner,
                                  "which agencies received a person's "
                                  "events"))) {
      return reply_unaudited(in);
    }
    const auto& log = audit->log();
    const std::size_t max = std::clamp<std::uint32_t>(ap->max(), 1, kMaxScan);
    PersonScan scan(audit->hash_nik(nik), sequences_of(ap->sequences()));
    std::vector<PersonHit> hits;
    std::uint64_t next = from;
    std::size_t scanned = 0;
    Status st = log.scan(from, max, [&](std::uint64_t key, std::string_view bytes) {
      scan.feed(key, bytes, hits);
      next = key + 1;
      ++scanned;
      return true;
    });
    if (!st) return storage_error(in, st.error());
    flatbuffers::FlatBufferBuilder fbb(4096);
    std::vector<flatbuffers::Offset<protocol::PersonHit>> out;
    std::map<std::uint64_t, std::pair<std::optional<events::Uuid>, std::uint8_t>> events;
    for (const auto& h : hits) {
      auto it = events.find(h.sequence);
      if (it == events.end()) it = events.emplace(h.sequence, event_summary(h.sequence)).first;
      const auto& [id, kind] = it->second;
      auto agency = fbb.CreateString(h.agency);
      auto consumer = fbb.CreateString(h.consumer);
      out.push_back(protocol::CreatePersonHit(fbb, h.index, h.time, h.action, agency, consumer,
                                              h.sequence, id ? &*id : nullptr, kind));
    }
    auto hits_v = fbb.CreateVector(out);
    auto seqs = fbb.CreateVector(scan.sequences());
    auto body = protocol::CreateAuditPersonPage(fbb, hits_v, seqs, next, scanned < max);
    send(in.envelope, finish(fbb, in.corr, protocol::Reply::AuditPersonPage, body));
  }

  // The id and kind of the event stored under `seq` (for a person's hits).
  std::pair<std::optional<events::Uuid>, std::uint8_t> event_summary(std::uint64_t seq) {
    auto rec = core.log().read(Sequence{seq});
    if (!rec || !rec->has_value()) return {std::nullopt, 0};
    const auto* bytes = reinterpret_cast<const std::uint8_t*>((*rec)->data());
    flatbuffers::Verifier verifier(bytes, (*rec)->size());
    if (!log::VerifyLogRecordBuffer(verifier)) return {std::nullopt, 0};
    const auto* lr = log::GetLogRecord(bytes);
    const auto* ev =
        lr->event() ? schemas::verified_event({lr->event()->data(), lr->event()->size()}) : nullptr;
    if (ev == nullptr) return {std::nullopt, 0};
    return {*ev->id(), static_cast<std::uint8_t>(ev->payload_type())};
  }

  // What `agency` may see of a record: all of it (keep), or its event with only the
  // payload fields of the agency's field profile (data minimisation; stored events stay
  // whole).
  struct Minimised {
    bool keep = false;
    std::string stripped;  // the record to send instead, unless keep
    std::string_view of(std::string_view record) const { return keep ? record : stripped; }
  };
  // nullopt when the event cannot be minimised (then it is not sent).
  std::optional<Minimised> minimise(std::string_view record, std::string_view agency) {
    if (options.dev) return Minimised{true, {}};
    const auto reg = agencies();
    const Agency* a = reg ? reg->by_name(agency) : nullptr;
    if (a == nullptr) return std::nullopt;
    if (a->fields.keeps_everything()) return Minimised{true, {}};
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(record.data());
    flatbuffers::Verifier verifier(bytes, record.size());
    if (!log::VerifyLogRecordBuffer(verifier)) return std::nullopt;
    const auto* rec = log::GetLogRecord(bytes);
    auto stripped = schemas::strip_event({rec->event()->data(), rec->event()->size()}, a->fields);
    if (!stripped) {
      spdlog::error("sequence {} not sent to {}: cannot minimise it: {}", rec->sequence(), agency,
                    stripped.error().to_string());
      return std::nullopt;
    }
    flatbuffers::FlatBufferBuilder fbb(stripped->size() + 128);
    fbb.ForceVectorAlignment(stripped->size(), sizeof(std::uint8_t), 8);
    auto ev = fbb.CreateVector(*stripped);
    auto src = fbb.CreateString(rec->source() ? rec->source()->str() : "");
    fbb.Finish(log::CreateLogRecord(fbb, rec->sequence(), rec->received_at(), src, ev,
                                    rec->routing_kind()),
               log::LogRecordIdentifier());
    return Minimised{
        false, std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize())};
  }

  void deliver() {
    auto due = consumers.pump();
    std::vector<const broker::Delivery*> ready;
    std::vector<AuditFact> facts;  // one per consumer
    // (owner, consumer) -> its fact: a round may hold thousands of deliveries to
    // hundreds of consumers, so no linear search per delivery.
    std::map<std::pair<std::string_view, std::string_view>, std::size_t> fact_of;
    for (auto& d : due) {
      auto m = minimise(*d.record, d.owner);
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
      const Sent sent = try_send(envelope, delivery_frame(group));
      if (sent == Sent::kClientGone) consumers.client_gone(client);
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
}

void Server::set_storage_recovery(std::function<Status()> resume) {
  impl_->resume_storage = std::move(resume);
}

void Server::set_agencies(std::shared_ptr<const Agencies> agencies) {
  {
    std::lock_guard lock(impl_->registry_mu);
    impl_->registry = agencies;
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
          [im](std::string key, std::string address) {
            std::lock_guard lock(im->refused_mu);
            im->refused_connections.push_back(
                Impl::fact(audit::Action::ConnectionRefused, "",
                           "key " + key + " from " + address + " is not in the agency registry"));
          });
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, impl_->options.curve_secret_key);
      s.set(zmq::sockopt::zap_domain, "kolabus");
      // ZMQ_ZAP_ENFORCE_DOMAIN (a draft name, honoured by Debian's libzmq): fail
      // closed if the ZAP handler is ever missing.
      const int one = 1;
      zmq_setsockopt(s.handle(), 93, &one, sizeof one);
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
            "{}, frame errors {}, next sequence {}",
            s.accepted, s.accepted - logged.accepted, s.duplicates, s.refused, s.storage_failures,
            s.batches, im.frame_errors, im.core.next_sequence().value);
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
