#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.hpp>

#include "aligned_frame.h"
#include "monitor.h"
#include <client/publisher.h>
#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>

namespace kolabus::client {

namespace {

using SteadyClock = std::chrono::steady_clock;

// What a Request adds around the event bytes, generously.
constexpr std::size_t kRequestOverhead = 128;

const events::Event* verified_root(std::span<const std::uint8_t> bytes) {
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!verifier.VerifyBuffer<events::Event>(nullptr)) return nullptr;
  const auto* ev = flatbuffers::GetRoot<events::Event>(bytes.data());
  return ev->id() != nullptr ? ev : nullptr;
}

EventId id_of(const events::Event& ev) {
  return EventId::from_span(std::span<const std::uint8_t, 16>(ev.id()->bytes()->data(), 16));
}

TimeMs wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Publisher::Impl {
  PublisherOptions opt;
  OutcomeFn on_outcome;
  std::unique_ptr<storage::Outbox> outbox;
  int wake_fd = -1;
  std::atomic<bool> stop{false};
  std::thread thread;

  mutable std::mutex mu;  // guards stats and the drained condition
  std::condition_variable changed;
  PublisherStats stats;
  bool reporting = false;  // outcomes of a drained batch are being reported

  // ---- sender thread only ----
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;
  std::unique_ptr<detail::SocketMonitor> monitor;  // handshake events of `socket`
  detail::HandshakeWatch handshake;
  // The handshake was refused: ZeroMQ does not try again by itself after a ZAP
  // refusal, so open a fresh connection at this time.
  std::optional<SteadyClock::time_point> reconnect_at;
  struct Flight {
    EventId id;
    SteadyClock::time_point sent_at;
  };
  std::map<std::uint64_t, Flight> in_flight;  // by outbox position
  std::uint64_t next_from = 0;                // next outbox position to send fresh
  bool resend_needed = false;                 // in_flight must be sent again...
  std::uint64_t resend_from = 0;              // ...from this position on...
  SteadyClock::time_point retry_at{};         // ...once this time has come
  std::chrono::milliseconds backoff{0};
  std::mt19937 rng{std::random_device{}()};
  // ACKed, but their removal from the outbox failed (after a failed write, a full disk,
  // the outbox refuses writes until it resumes): removed again every loop turn.
  std::vector<std::uint64_t> unremoved;

  ~Impl() {
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void wake() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  void disconnect() {
    monitor.reset();  // before its socket
    socket.reset();
  }

  void connect() {
    disconnect();
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::immediate, 1);  // queue nothing for a broker not connected
    socket->set(zmq::sockopt::reconnect_ivl, 100);
    socket->set(zmq::sockopt::reconnect_ivl_max, 5000);
    socket->set(zmq::sockopt::sndhwm, static_cast<int>(opt.window * 2 + 16));
    socket->set(zmq::sockopt::rcvhwm, static_cast<int>(opt.window * 2 + 16));
    apply_curve(*socket, opt.curve);
    monitor =
        std::make_unique<detail::SocketMonitor>(context, *socket, detail::kHandshakeEvents, this);
    socket->connect(opt.endpoint);
  }

  void note_error(std::string what) {
    std::lock_guard lock(mu);
    stats.retries++;
    stats.last_error = std::move(what);
  }

  // Handshake events: a refusal is reported and retried on a fresh connection.
  void on_monitor() {
    for (const auto& e : monitor->drain()) {
      if (auto refused = handshake.on_event(e)) {
        backoff =
            backoff.count() == 0 ? opt.backoff_initial : std::min(backoff * 2, opt.backoff_max);
        std::uniform_real_distribution<double> jitter(0.5, 1.5);
        reconnect_at = SteadyClock::now() +
                       std::chrono::milliseconds(static_cast<long>(backoff.count() * jitter(rng)));
        std::lock_guard lock(mu);
        stats.unauthorised = true;
        stats.last_error = std::move(refused->message);
      } else if (e.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        std::lock_guard lock(mu);
        stats.unauthorised = false;
      }
    }
  }

  // A retryable failure: resend everything unanswered after a growing, jittered wait.
  void schedule_resend(std::string why) {
    backoff = backoff.count() == 0 ? opt.backoff_initial : std::min(backoff * 2, opt.backoff_max);
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    retry_at = SteadyClock::now() +
               std::chrono::milliseconds(static_cast<long>(backoff.count() * jitter(rng)));
    resend_needed = !in_flight.empty();
    resend_from = in_flight.empty() ? 0 : in_flight.begin()->first;
    note_error(std::move(why));
  }

  // Sends one outbox entry. Returns false when the socket would block.
  bool send_entry(const storage::OutboxEntry& e) {
    flatbuffers::FlatBufferBuilder fbb(e.event.size() + kRequestOverhead);
    fbb.ForceVectorAlignment(e.event.size(), sizeof(std::uint8_t), 8);
    auto bytes =
        fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(e.event.data()), e.event.size());
    auto publish = protocol::CreatePublish(fbb, bytes);
    fbb.Finish(
        protocol::CreateRequest(fbb, 1, e.local_seq, protocol::Command::Publish, publish.Union()),
        protocol::RequestIdentifier());
    if (!socket->send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()),
                      zmq::send_flags::dontwait)) {
      return false;
    }
    std::lock_guard lock(mu);
    stats.sent++;
    return true;
  }

  // Sends what is due while the socket takes it: first resends, then new events.
  void send_due() {
    const auto now = SteadyClock::now();
    if (resend_needed) {
      if (now < retry_at) return;
      auto entries = outbox->pending(resend_from, in_flight.size());
      if (!entries) return note_error(entries.error().to_string());
      for (const auto& e : *entries) {
        auto it = in_flight.find(e.local_seq);
        if (it == in_flight.end()) continue;
        if (!send_entry(e)) return;
        it->second.sent_at = SteadyClock::now();
        resend_from = e.local_seq + 1;
      }
      resend_needed = false;
    }
    while (in_flight.size() < opt.window) {
      auto entries = outbox->pending(next_from, opt.window - in_flight.size());
      if (!entries) return note_error(entries.error().to_string());
      if (entries->empty()) return;
      for (const auto& e : *entries) {
        const auto* ev =
            verified_root({reinterpret_cast<const std::uint8_t*>(e.event.data()), e.event.size()});
        KOLABUS_CHECK(ev != nullptr);  // publish() verified it before enqueueing
        if (!send_entry(e)) return;
        in_flight.emplace(e.local_seq, Flight{id_of(*ev), SteadyClock::now()});
        next_from = e.local_seq + 1;
      }
    }
  }

  bool has_unsent() const {
    return resend_needed || (in_flight.size() < opt.window &&
                             outbox->pending_count() > in_flight.size() + unremoved.size());
  }

  void handle(const zmq::message_t& msg, std::vector<std::uint64_t>& removed,
              std::vector<Outcome>& outcomes) {
    const detail::AlignedFrame frame(msg);
    const auto* data = frame.data();
    flatbuffers::Verifier verifier(data, frame.size());
    if (!verifier.VerifyBuffer<protocol::Response>(nullptr)) {
      return note_error("broker sent a reply that does not verify");
    }
    const auto* resp = flatbuffers::GetRoot<protocol::Response>(data);
    auto it = in_flight.find(resp->corr());
    switch (resp->reply_type()) {
      case protocol::Reply::PublishAck: {
        if (it == in_flight.end()) return;  // an answer to an earlier send, already handled
        const auto* ack = resp->reply_as_PublishAck();
        Outcome o{it->first,
                  it->second.id,
                  ack->duplicate() ? OutcomeKind::kDuplicate : OutcomeKind::kAcked,
                  Sequence{ack->sequence()},
                  {}};
        removed.push_back(it->first);
        in_flight.erase(it);
        backoff = std::chrono::milliseconds(0);
        outcomes.push_back(std::move(o));
        return;
      }
      case protocol::Reply::Nack: {
        const auto* nack = resp->reply_as_Nack();
        const std::string message = nack->message() ? nack->message()->str() : "";
        if (it == in_flight.end()) {
          // Frame-level refusals carry no position; a client bug, not the event's.
          if (resp->corr() == 0) note_error("broker refused a frame: " + message);
          return;
        }
        if (nack->retryable()) return schedule_resend("broker: " + message);
        storage::Refusal why{it->second.id, static_cast<std::uint16_t>(nack->code()),
                             nack->field() ? nack->field()->str() : "", message, wall_ms()};
        if (auto st = outbox->refuse(it->first, why); !st) {
          return note_error("cannot record a refusal: " + st.error().to_string());
        }
        outcomes.push_back(Outcome{it->first, it->second.id, OutcomeKind::kRefused, {}, why});
        in_flight.erase(it);
        return;
      }
      default:
        return;  // Pong, and replies a publisher never asks for
    }
  }

  void run() {
    connect();
    if (auto first = outbox->pending(0, 1); first && !first->empty()) {
      next_from = first->front().local_seq;
    }
    while (!stop.load()) {
      if (!unremoved.empty() && outbox->remove(unremoved)) unremoved.clear();
      auto now = SteadyClock::now();
      if (reconnect_at && now >= *reconnect_at) {
        reconnect_at.reset();
        connect();
        // Nothing went out on a refused connection (ZMQ_IMMEDIATE), but what was in
        // flight on an earlier one goes again.
        resend_needed = !in_flight.empty();
        resend_from = in_flight.empty() ? 0 : in_flight.begin()->first;
        retry_at = now;
        for (auto& [pos, f] : in_flight) f.sent_at = now;
      }
      // An answer overdue: the broker or the link is gone. Start a fresh
      // connection (dropping whatever ZeroMQ still queued) and resend.
      if (!in_flight.empty() && !resend_needed) {
        // Sends and resends go out in position order, so the first is the oldest.
        if (now - in_flight.begin()->second.sent_at > opt.ack_timeout) {
          connect();
          schedule_resend("no answer from the broker at " + opt.endpoint + " within " +
                          std::to_string(opt.ack_timeout.count()) + " ms");
        }
      }
      const bool want_out = has_unsent() && (!resend_needed || now >= retry_at);
      zmq::pollitem_t items[] = {
          {socket->handle(), 0, static_cast<short>(ZMQ_POLLIN | (want_out ? ZMQ_POLLOUT : 0)), 0},
          {nullptr, wake_fd, ZMQ_POLLIN, 0},
          {monitor->handle(), 0, ZMQ_POLLIN, 0}};
      const int n_items = monitor->handle() != nullptr ? 3 : 2;
      auto timeout = std::chrono::milliseconds(250);
      if (reconnect_at) {
        timeout = std::min(
            timeout, std::chrono::duration_cast<std::chrono::milliseconds>(*reconnect_at - now) +
                         std::chrono::milliseconds(1));
      }
      if (resend_needed && retry_at > now) {
        timeout = std::min(timeout,
                           std::chrono::duration_cast<std::chrono::milliseconds>(retry_at - now) +
                               std::chrono::milliseconds(1));
      }
      try {
        zmq::poll(items, n_items, timeout);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (items[1].revents & ZMQ_POLLIN) {
        std::uint64_t n;
        [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
      }
      if (n_items > 2 && (items[2].revents & ZMQ_POLLIN)) on_monitor();
      if (items[0].revents & ZMQ_POLLOUT) send_due();
      if (items[0].revents & ZMQ_POLLIN) {
        {
          std::lock_guard lock(mu);
          reporting = true;  // wait_drained() waits for the callbacks too
        }
        std::vector<std::uint64_t> removed;
        std::vector<Outcome> outcomes;
        zmq::message_t msg;
        while (socket->recv(msg, zmq::recv_flags::dontwait)) handle(msg, removed, outcomes);
        if (!removed.empty()) {
          if (auto st = outbox->remove(removed); !st) {
            note_error(st.error().to_string());
            unremoved.insert(unremoved.end(), removed.begin(), removed.end());
          }
        }
        {
          std::lock_guard lock(mu);
          stats.in_flight = in_flight.size();
          for (const auto& o : outcomes) {
            switch (o.kind) {
              case OutcomeKind::kAcked:
                stats.acked++;
                break;
              case OutcomeKind::kDuplicate:
                stats.duplicates++;
                break;
              case OutcomeKind::kRefused:
                stats.refused++;
                break;
            }
          }
        }
        if (on_outcome) {
          for (const auto& o : outcomes) on_outcome(o);
        }
        {
          std::lock_guard lock(mu);
          reporting = false;
        }
        if (!outcomes.empty()) changed.notify_all();
        if (has_unsent() && !resend_needed) send_due();
      }
    }
    disconnect();
  }
};

Publisher::Publisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Publisher::~Publisher() {
  impl_->stop.store(true);
  impl_->wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<Publisher>> Publisher::open(PublisherOptions options, OutcomeFn on_outcome) {
  if (options.outbox_dir.empty()) {
    return unexpected(Errc::kInvalidArgument, "PublisherOptions.outbox_dir is required");
  }
  if (options.window == 0) {
    return unexpected(Errc::kInvalidArgument, "PublisherOptions.window must be at least 1");
  }
  if (auto st = check_curve(options.curve); !st) return unexpected(st.error());
  auto box = storage::Outbox::open(options.outbox_dir);
  if (!box) return unexpected(box.error());
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->handshake = detail::HandshakeWatch(impl->opt.endpoint, impl->opt.curve.enabled());
  impl->on_outcome = std::move(on_outcome);
  impl->outbox = std::move(*box);
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) return unexpected(Errc::kInternal, "eventfd failed");
  try {
    impl->connect();  // fail here, not on the thread, for a malformed endpoint
  } catch (const zmq::error_t& e) {
    return unexpected(Errc::kInvalidArgument,
                      "cannot connect to " + impl->opt.endpoint + ": " + e.what());
  }
  impl->disconnect();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<Publisher>(new Publisher(std::move(impl)));
}

Result<std::uint64_t> Publisher::publish(std::span<const std::uint8_t> event) {
  const std::span<const std::uint8_t> one[] = {event};
  auto seqs = publish_batch(one);
  if (!seqs) return unexpected(seqs.error());
  return seqs->front();
}

Result<std::vector<std::uint64_t>> Publisher::publish_batch(
    std::span<const std::span<const std::uint8_t>> events) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (events[i].size() + kRequestOverhead > impl_->opt.max_message_bytes) {
      return unexpected(Errc::kInvalidArgument,
                        "event " + std::to_string(i) + " of " + std::to_string(events[i].size()) +
                            " bytes is larger than the broker accepts (" +
                            std::to_string(impl_->opt.max_message_bytes) + " bytes per frame)");
    }
    if (verified_root(events[i]) == nullptr) {
      return unexpected(
          Errc::kInvalidArgument,
          "event " + std::to_string(i) + " is not a kolabus.events.Event FlatBuffer with an id");
    }
  }
  auto seqs = impl_->outbox->enqueue(events);
  if (!seqs) return unexpected(seqs.error());
  impl_->wake();
  return seqs;
}

bool Publisher::wait_drained(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  return impl_->changed.wait_for(
      lock, timeout, [&] { return impl_->outbox->pending_count() == 0 && !impl_->reporting; });
}

Result<std::vector<storage::RefusedEntry>> Publisher::refused(std::size_t max) const {
  return impl_->outbox->refused(max);
}

Status Publisher::clear_refused() { return impl_->outbox->clear_refused(); }

PublisherStats Publisher::stats() const {
  std::lock_guard lock(impl_->mu);
  PublisherStats s = impl_->stats;
  s.pending = impl_->outbox->pending_count();
  return s;
}

}  // namespace kolabus::client
