#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>

#include <flatbuffers/flatbuffers.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.hpp>

#include "aligned_frame.h"
#include "monitor.h"
#include <client/consumer.h>
#include <schemas/log_generated.h>
#include <schemas/validate.h>

namespace kolabus::client {

namespace {

using SteadyClock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

TimeMs wall_ms() {
  return std::chrono::duration_cast<Ms>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string str(const flatbuffers::String* s) { return s != nullptr ? s->str() : std::string(); }

}  // namespace

struct Consumer::Impl {
  ConsumerOptions opt;
  std::unique_ptr<storage::Inbox> inbox;
  int wake_fd = -1;
  std::atomic<bool> interrupted{false};
  std::atomic<bool> closing{false};

  mutable std::mutex stats_mu;
  ConsumerStats stats;

  // Held by poll() and close(): the sockets belong to one thread at a time.
  std::mutex run_mu;

  // ---- under run_mu ----
  bool closed = false;
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;  // DEALER to the broker; null: no session
  // `socket`'s disconnect and handshake events.
  std::unique_ptr<detail::SocketMonitor> monitor;
  detail::HandshakeWatch handshake;
  std::uint64_t sessions = 0;  // sockets opened so far
  bool subscribed = false;     // Subscribed received on this session
  std::uint64_t next_corr = 1;
  std::uint64_t subscribe_corr = 0;          // the session's Subscribe
  SteadyClock::time_point subscribe_sent{};  // when it went
  SteadyClock::time_point connect_at{};      // no session: open one at this time
  SteadyClock::time_point last_sent{};
  SteadyClock::time_point last_ping{};
  // The first Ping (or the Subscribe) sent since we last heard from the broker.
  std::optional<SteadyClock::time_point> unanswered_since;
  Ms backoff{0};
  std::mt19937 rng{std::random_device{}()};
  std::vector<std::uint64_t> pending_acks;  // committed in the inbox, Ack not yet sent
  // The DeliveryBatch being handled when poll() reached max_events inside it: the next
  // poll() goes on from held_next. Dropped with the session (its events come again).
  detail::AlignedFrame held;
  std::size_t held_next = 0;
  bool holding = false;
  std::optional<Error> refusal;  // the broker refused our Subscribe

  ~Impl() {
    close_socket();
    if (wake_fd >= 0) ::close(wake_fd);
  }

  template <typename F>
  void update_stats(F f) {
    std::lock_guard lock(stats_mu);
    f(stats);
  }
  void note_error(std::string what) {
    update_stats([&](ConsumerStats& s) { s.last_error = std::move(what); });
  }

  void wake() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  // ---- sessions ----

  void close_socket() {
    monitor.reset();  // before its socket
    socket.reset();
  }

  void make_socket() {
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::reconnect_ivl, 100);
    socket->set(zmq::sockopt::reconnect_ivl_max, 5000);
    // Room for a full window of deliveries plus Pongs and replies: a ROUTER drops
    // what does not fit, which would only cost a redelivery, but why pay it.
    const int hwm = static_cast<int>(std::max<std::uint64_t>(1000, 2ull * opt.window + 64));
    socket->set(zmq::sockopt::sndhwm, hwm);
    socket->set(zmq::sockopt::rcvhwm, hwm);
    apply_curve(*socket, opt.curve);
    // ZeroMQ reconnects a dropped TCP connection by itself, but the broker then sees a
    // new peer that is not subscribed, and Pongs would keep this client believing all
    // is well. The monitor tells us so we can subscribe again on a fresh socket. It
    // also tells us when the broker refuses this agency's key, which send() never does.
    ++sessions;
    monitor = std::make_unique<detail::SocketMonitor>(
        context, *socket, ZMQ_EVENT_DISCONNECTED | detail::kHandshakeEvents, this);
    if (monitor->handle() == nullptr) monitor.reset();
    socket->connect(opt.endpoint);
  }

  void open_session() {
    make_socket();
    subscribed = false;
    refusal.reset();
    subscribe_corr = send_subscribe();
    // The Subscribe's answer is expected like a Pong's.
    const auto now = SteadyClock::now();
    last_ping = now;
    unanswered_since = now;
    subscribe_sent = now;
  }

  // Now plus the next jittered, doubling backoff.
  SteadyClock::time_point after_backoff() {
    backoff = backoff.count() == 0 ? opt.backoff_initial : std::min(backoff * 2, opt.backoff_max);
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    return SteadyClock::now() +
           Ms(static_cast<long>(static_cast<double>(backoff.count()) * jitter(rng)));
  }

  // Drops the session; the next one starts after a backoff (or at once when the
  // broker did nothing wrong, e.g. we were not polled for a long time).
  void lose_session(std::string why, bool with_backoff) {
    close_socket();
    subscribed = false;
    subscribe_corr = 0;
    unanswered_since.reset();
    pending_acks.clear();  // those events come again and the inbox skips them
    holding = false;
    connect_at = with_backoff ? after_backoff() : SteadyClock::now();
    update_stats([&](ConsumerStats& s) {
      s.subscribed = false;
      s.reconnects++;
      s.last_error = std::move(why);
    });
  }

  // ---- requests ----

  // Finishes a Request around `command` and sends it. Returns its corr, 0 if the
  // socket would not take it (then the message is dropped: a lost Ack or Nak only
  // means a redelivery, a lost Subscribe or Ping a reconnect).
  std::uint64_t send(flatbuffers::FlatBufferBuilder& fbb, protocol::Command type,
                     flatbuffers::Offset<void> command) {
    const std::uint64_t corr = next_corr++;
    fbb.Finish(protocol::CreateRequest(fbb, 1, corr, type, command), protocol::RequestIdentifier());
    if (!socket || !socket->send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()),
                                 zmq::send_flags::dontwait)) {
      note_error("could not queue a " + std::string(protocol::EnumNameCommand(type)) + " for " +
                 opt.endpoint);
      return 0;
    }
    last_sent = SteadyClock::now();
    return corr;
  }

  std::uint64_t send_subscribe() {
    flatbuffers::FlatBufferBuilder fbb(256);
    flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> kinds = 0;
    if (!opt.kinds.empty()) {
      std::vector<std::uint8_t> k;
      for (auto p : opt.kinds) k.push_back(static_cast<std::uint8_t>(p));
      kinds = fbb.CreateVector(k);
    }
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>> regions = 0;
    if (!opt.regions.empty()) regions = fbb.CreateVectorOfStrings(opt.regions);
    auto filter = protocol::CreateFilter(fbb, kinds, regions);
    auto config = protocol::CreateConsumerConfig(fbb, fbb.CreateString(opt.name), filter, opt.start,
                                                 opt.start_sequence, opt.start_time,
                                                 opt.ack_wait_ms, opt.max_deliver);
    auto sub = protocol::CreateSubscribe(
        fbb, config, opt.window, std::max<std::uint32_t>(1, std::min(opt.batch, opt.window)));
    return send(fbb, protocol::Command::Subscribe, sub.Union());
  }

  void send_ping() {
    flatbuffers::FlatBufferBuilder fbb(64);
    send(fbb, protocol::Command::Ping, protocol::CreatePing(fbb).Union());
    const auto now = SteadyClock::now();
    last_ping = now;
    if (!unanswered_since) unanswered_since = now;
  }

  void flush_acks() {
    if (pending_acks.empty() || !socket) return;
    flatbuffers::FlatBufferBuilder fbb(64 + 8 * pending_acks.size());
    auto ack = protocol::CreateAckDirect(fbb, opt.name.c_str(), &pending_acks);
    if (send(fbb, protocol::Command::Ack, ack.Union()) != 0) {
      update_stats([&](ConsumerStats& s) { s.acked += pending_acks.size(); });
    }
    pending_acks.clear();
  }

  void send_nak(std::uint64_t sequence, std::uint32_t delay_ms) {
    flatbuffers::FlatBufferBuilder fbb(128);
    auto nak = protocol::CreateNakDirect(fbb, opt.name.c_str(), sequence, delay_ms);
    if (send(fbb, protocol::Command::Nak, nak.Union()) != 0) {
      update_stats([](ConsumerStats& s) { s.naked++; });
    }
  }

  void send_reject(std::uint64_t sequence, const std::string& reason) {
    flatbuffers::FlatBufferBuilder fbb(128 + reason.size());
    auto rej = protocol::CreateRejectDirect(fbb, opt.name.c_str(), sequence, reason.c_str());
    if (send(fbb, protocol::Command::Reject, rej.Union()) != 0) {
      update_stats([](ConsumerStats& s) { s.rejected++; });
    }
  }

  // ---- incoming ----

  // One frame from the broker. `handled` counts deliveries dealt with; a DeliveryBatch
  // stops at `max_events` (the rest is held for the next poll()). An error is an
  // inbox failure; a refused Subscribe is left in `refusal`.
  Status on_message(const zmq::message_t& msg, const Handler& handler, std::size_t& handled,
                    std::size_t max_events) {
    unanswered_since.reset();         // the broker is there
    detail::AlignedFrame frame(msg);  // outlives the handler's views into it
    const auto* data = frame.data();
    flatbuffers::Verifier verifier(data, frame.size());
    if (!verifier.VerifyBuffer<protocol::Response>(nullptr)) {
      note_error("the broker sent a frame that does not verify");
      return {};
    }
    const auto* resp = flatbuffers::GetRoot<protocol::Response>(data);
    switch (resp->reply_type()) {
      case protocol::Reply::Delivery:
        return on_delivery(*resp->reply_as_Delivery(), handler, handled);
      case protocol::Reply::DeliveryBatch: {
        const auto& b = *resp->reply_as_DeliveryBatch();
        if (b.consumer() != nullptr && b.consumer()->string_view() != opt.name) {
          note_error("delivery batch for another consumer '" + b.consumer()->str() + "' ignored");
          return {};
        }
        update_stats([](ConsumerStats& s) { s.batches++; });
        held = std::move(frame);  // the vector moves: the verified bytes stay put
        held_next = 0;
        holding = true;
        return handle_held(handler, handled, max_events);
      }
      case protocol::Reply::Subscribed:
        if (resp->corr() == subscribe_corr && subscribe_corr != 0) {
          subscribed = true;
          backoff = Ms(0);
          update_stats([](ConsumerStats& s) { s.subscribed = true; });
        }
        return {};
      case protocol::Reply::Nack:
        on_nack(resp->corr(), *resp->reply_as_Nack());
        return {};
      case protocol::Reply::Pong:
      case protocol::Reply::Done:
      case protocol::Reply::PublishAck:
      case protocol::Reply::ConsumerList:
      case protocol::Reply::RangePage:
      case protocol::Reply::DeadLetterList:
      case protocol::Reply::AuditPage:
      case protocol::Reply::AuditPersonPage:
      case protocol::Reply::NONE:
        return {};
    }
    return {};  // a reply type newer than this client: heard, nothing to do
  }

  // Hands the held DeliveryBatch's deliveries from held_next on to the handler, each
  // as a Delivery of its own, until max_events. A delivery that fails (an inbox error)
  // is left unacknowledged, to come again; the batch goes on after it next time.
  Status handle_held(const Handler& handler, std::size_t& handled, std::size_t max_events) {
    const auto* resp = flatbuffers::GetRoot<protocol::Response>(held.data());  // verified
    const auto* list = resp->reply_as_DeliveryBatch()->deliveries();
    const std::size_t n = list != nullptr ? list->size() : 0;
    while (held_next < n && handled < max_events) {
      const auto* d = list->Get(static_cast<flatbuffers::uoffset_t>(held_next++));
      if (auto st = on_delivery(*d, handler, handled); !st) {
        holding = held_next < n;
        return st;
      }
    }
    holding = held_next < n;
    return {};
  }

  void on_nack(std::uint64_t corr, const protocol::Nack& nack) {
    const std::string what =
        std::string(protocol::EnumNameErrorCode(nack.code())) +
        (nack.field() != nullptr && nack.field()->size() > 0 ? " (" + nack.field()->str() + ")"
                                                             : "") +
        ": " + str(nack.message());
    if (corr != 0 && corr == subscribe_corr) {
      if (nack.retryable()) return lose_session("broker cannot subscribe now: " + what, true);
      // Not the network's fault: report it. The next poll() tries again (after a
      // backoff, so a caller that only logs errors does not hammer the broker).
      refusal = Error{Errc::kInvalidArgument,
                      "broker refused Subscribe of consumer '" + opt.name + "': " + what};
      close_socket();
      subscribed = false;
      subscribe_corr = 0;
      unanswered_since.reset();
      pending_acks.clear();
      holding = false;
      connect_at = after_backoff();
      update_stats([&](ConsumerStats& s) {
        s.subscribed = false;
        s.last_error = refusal->message;
      });
      return;
    }
    if (nack.code() == protocol::ErrorCode::NotSubscribed) {
      // The broker dropped this client (it was silent too long, or the broker
      // restarted): what we acknowledged is lost, but the inbox holds it.
      return lose_session("broker: " + what, false);
    }
    note_error("broker refused a request: " + what);
  }

  Status on_delivery(const protocol::Delivery& d, const Handler& handler, std::size_t& handled) {
    if (d.consumer() != nullptr && d.consumer()->string_view() != opt.name) {
      note_error("delivery for another consumer '" + d.consumer()->str() + "' ignored");
      return {};
    }
    update_stats([](ConsumerStats& s) { s.delivered++; });
    ++handled;
    const std::uint64_t seq = d.sequence();
    // The record and its event are FlatBuffers of their own: verify each.
    const log::LogRecord* record = nullptr;
    if (d.record() != nullptr) {
      flatbuffers::Verifier rv(d.record()->data(), d.record()->size());
      if (rv.VerifyBuffer<log::LogRecord>(nullptr)) {
        record = flatbuffers::GetRoot<log::LogRecord>(d.record()->data());
      }
    }
    if (record == nullptr) {
      send_reject(seq, "the delivery carries no verifiable log record");
      return {};
    }
    if (record->event() == nullptr) {
      send_reject(seq, "the log record carries no event");
      return {};
    }
    const std::span<const std::uint8_t> event_bytes(record->event()->data(),
                                                    record->event()->size());
    // The verifier, union type and value agreeing, every kind known (a kind newer
    // than this client's schema is parked in the dead letters rather than handed to
    // code that cannot read it).
    if (auto bad = schemas::check_structure(event_bytes)) {
      send_reject(
          seq, "the event does not verify: " + std::string(protocol::EnumNameErrorCode(bad->code)) +
                   ": " + bad->message);
      return {};
    }
    const auto* ev = flatbuffers::GetRoot<events::Event>(event_bytes.data());
    if (ev->id() == nullptr) {  // required, so check_structure refused it already
      send_reject(seq, "the event has no id");
      return {};
    }
    if (record->sequence() != seq) {
      send_reject(seq, "the log record's sequence " + std::to_string(record->sequence()) +
                           " differs from the delivery's");
      return {};
    }
    const EventId id =
        EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));

    auto seen = inbox->processed(id);
    if (!seen) {
      return unexpected(seen.error().code, "inbox lookup of event " + id.to_string() +
                                               " failed: " + seen.error().message);
    }
    if (seen->has_value()) {
      update_stats([](ConsumerStats& s) { s.duplicates_skipped++; });
      pending_acks.push_back(seq);
      return {};
    }

    auto txn = inbox->begin();
    const Received received{
        Sequence{seq},
        d.attempt(),
        id,
        record->source() != nullptr
            ? std::string_view(record->source()->c_str(), record->source()->size())
            : std::string_view(),
        record->received_at(),
        std::span<const std::uint8_t>(record->event()->data(), record->event()->size()),
        ev};
    HandlerResult result;
    std::optional<std::string> thrown;
    try {
      result = handler(received, *txn);
    } catch (const std::exception& e) {
      thrown = e.what();
    } catch (...) {
      thrown = "an exception that is not a std::exception";
    }
    update_stats([](ConsumerStats& s) { s.handled++; });
    if (thrown) {
      note_error("handler failed on sequence " + std::to_string(seq) + ": " + *thrown);
      send_nak(seq, 0);
      return {};
    }
    switch (result.verdict) {
      case Verdict::kAck: {
        if (auto st = inbox->commit(std::move(txn), id, seq, wall_ms()); !st) {
          // Not acknowledged: the broker delivers it again after ack_wait.
          return unexpected(st.error().code, "inbox commit of sequence " + std::to_string(seq) +
                                                 " failed: " + st.error().message);
        }
        pending_acks.push_back(seq);
        return {};
      }
      case Verdict::kNak:
        send_nak(seq, result.delay_ms);
        return {};
      case Verdict::kReject:
        send_reject(seq, result.reason.empty() ? "rejected by the handler" : result.reason);
        return {};
    }
    return {};
  }

  // True when the monitor saw the connection drop. A refused handshake is left in
  // `handshake_refusal`.
  bool drain_monitor(std::optional<Error>& handshake_refusal) {
    bool dropped = false;
    if (!monitor) return false;
    for (const auto& e : monitor->drain()) {
      if (e.event == ZMQ_EVENT_DISCONNECTED) dropped = true;
      if (auto refused = handshake.on_event(e)) handshake_refusal = std::move(refused);
    }
    return dropped;
  }

  Result<std::size_t> poll(const Handler& handler, Ms timeout, std::size_t max_events) {
    const auto deadline = SteadyClock::now() + timeout;
    const auto hb = opt.heartbeat;
    std::size_t handled = 0;
    while (!closing.load() && !interrupted.exchange(false)) {
      auto now = SteadyClock::now();
      if (socket && now - last_sent > 3 * hb) {
        // Nothing sent for 3 heartbeats (poll() was not called, or a handler ran
        // long): the broker has dropped this client. Start over on a fresh socket.
        lose_session("silent for " +
                         std::to_string(std::chrono::duration_cast<Ms>(now - last_sent).count()) +
                         " ms (poll() not called): subscribing again",
                     false);
      }
      if (holding) {
        // The rest of a DeliveryBatch the last poll() stopped inside, before any newer
        // message.
        auto st = handle_held(handler, handled, max_events);
        flush_acks();
        if (!st) return unexpected(st.error());
        if (handled >= max_events) break;
      }
      if (!socket && now >= connect_at) open_session();
      if (socket && now - last_ping >= hb) send_ping();

      now = SteadyClock::now();
      auto wait = deadline - now;
      if (socket) {
        wait = std::min(wait, last_ping + hb - now);
        if (unanswered_since) wait = std::min(wait, *unanswered_since + 3 * hb - now);
      } else {
        wait = std::min(wait, connect_at - now);
      }
      const auto wait_ms = std::max<long>(0, std::chrono::ceil<Ms>(wait).count());

      zmq::pollitem_t items[3];
      int n = 0;
      items[n++] = {nullptr, wake_fd, ZMQ_POLLIN, 0};
      const int sock_at = socket ? n++ : -1;
      if (sock_at >= 0) items[sock_at] = {socket->handle(), 0, ZMQ_POLLIN, 0};
      const int mon_at = monitor ? n++ : -1;
      if (mon_at >= 0) items[mon_at] = {monitor->handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(items, n, Ms(wait_ms));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (items[0].revents & ZMQ_POLLIN) {
        std::uint64_t count;
        [[maybe_unused]] auto r = ::read(wake_fd, &count, sizeof count);
      }
      bool got = false;
      if (sock_at >= 0 && (items[sock_at].revents & ZMQ_POLLIN)) {
        zmq::message_t msg;
        while (socket && handled < max_events && !refusal &&
               socket->recv(msg, zmq::recv_flags::dontwait)) {
          got = true;
          if (auto st = on_message(msg, handler, handled, max_events); !st) {
            flush_acks();
            return unexpected(st.error());
          }
        }
        flush_acks();
        if (refusal) {
          Error e = std::move(*refusal);
          refusal.reset();
          return unexpected(std::move(e));
        }
      }
      if (socket && mon_at >= 0 && (items[mon_at].revents & ZMQ_POLLIN)) {
        std::optional<Error> handshake_refusal;
        const bool dropped = drain_monitor(handshake_refusal);
        if (handshake_refusal) {
          // ZeroMQ does not retry after a ZAP refusal: a fresh socket after a backoff
          // does (an operator may fix the registry meanwhile). Tell the caller now.
          lose_session(handshake_refusal->message, true);
          return unexpected(std::move(*handshake_refusal));
        }
        if (dropped) {
          lose_session("connection to " + opt.endpoint + " lost: subscribing again", true);
        }
      }
      now = SteadyClock::now();
      if (socket && !got && unanswered_since && now - *unanswered_since >= 3 * hb) {
        lose_session("no answer from the broker at " + opt.endpoint + " for " +
                         std::to_string(std::chrono::duration_cast<Ms>(3 * hb).count()) + " ms",
                     true);
      } else if (socket && !subscribed && subscribe_corr != 0 && now - subscribe_sent >= 3 * hb) {
        // The broker answers (Pongs) but not the Subscribe: it was lost (sent while the
        // broker was not reading). Without this the session would stay unsubscribed.
        lose_session("no answer to Subscribe from " + opt.endpoint + " for " +
                         std::to_string(std::chrono::duration_cast<Ms>(3 * hb).count()) + " ms",
                     true);
      }
      if (handled >= max_events || now >= deadline) break;
    }
    flush_acks();
    return handled;
  }

  void close() {
    if (closed) return;
    closed = true;
    if (!socket) return;
    flush_acks();
    if (subscribed) {
      flatbuffers::FlatBufferBuilder fbb(128);
      auto unsub = protocol::CreateUnsubscribeDirect(fbb, opt.name.c_str());
      const std::uint64_t corr = send(fbb, protocol::Command::Unsubscribe, unsub.Union());
      // Wait for the answer so the Unsubscribe is on the wire before the socket (with
      // linger 0) closes. Deliveries arriving meanwhile are left to be redelivered.
      const auto deadline = SteadyClock::now() + opt.heartbeat;
      bool answered = corr == 0;
      while (!answered && SteadyClock::now() < deadline) {
        zmq::pollitem_t item{socket->handle(), 0, ZMQ_POLLIN, 0};
        const auto left = std::chrono::ceil<Ms>(deadline - SteadyClock::now());
        try {
          zmq::poll(&item, 1, std::max(Ms(0), left));
        } catch (const zmq::error_t& e) {
          if (e.num() == EINTR) continue;
          throw;
        }
        zmq::message_t msg;
        while (!answered && socket->recv(msg, zmq::recv_flags::dontwait)) {
          const detail::AlignedFrame frame(msg);
          flatbuffers::Verifier v(frame.data(), frame.size());
          if (v.VerifyBuffer<protocol::Response>(nullptr) &&
              flatbuffers::GetRoot<protocol::Response>(frame.data())->corr() == corr) {
            answered = true;
          }
        }
      }
    }
    close_socket();
    subscribed = false;
    update_stats([](ConsumerStats& s) { s.subscribed = false; });
  }
};

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Consumer::~Consumer() { close(); }

Result<std::unique_ptr<Consumer>> Consumer::open(ConsumerOptions options) {
  if (options.inbox_dir.empty()) {
    return unexpected(Errc::kInvalidArgument, "ConsumerOptions.inbox_dir is required");
  }
  if (options.name.empty()) {
    return unexpected(Errc::kInvalidArgument, "ConsumerOptions.name is required");
  }
  if (options.window == 0) {
    return unexpected(Errc::kInvalidArgument, "ConsumerOptions.window must be at least 1");
  }
  if (options.heartbeat.count() <= 0) {
    return unexpected(Errc::kInvalidArgument, "ConsumerOptions.heartbeat must be positive");
  }
  if (options.backoff_initial.count() <= 0 || options.backoff_max < options.backoff_initial) {
    return unexpected(Errc::kInvalidArgument,
                      "ConsumerOptions: need 0 < backoff_initial <= backoff_max");
  }
  if (auto st = check_curve(options.curve); !st) return unexpected(st.error());
  auto box = storage::Inbox::open(options.inbox_dir);
  if (!box) return unexpected(box.error());
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->handshake = detail::HandshakeWatch(impl->opt.endpoint, impl->opt.curve.enabled());
  impl->inbox = std::move(*box);
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) return unexpected(Errc::kInternal, "eventfd failed");
  try {
    // Fail here, not in poll(), for a malformed endpoint.
    zmq::socket_t probe(impl->context, zmq::socket_type::dealer);
    probe.set(zmq::sockopt::linger, 0);
    probe.connect(impl->opt.endpoint);
  } catch (const zmq::error_t& e) {
    return unexpected(Errc::kInvalidArgument,
                      "cannot connect to " + impl->opt.endpoint + ": " + e.what());
  }
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

Result<std::size_t> Consumer::poll(const Handler& handler, std::chrono::milliseconds timeout,
                                   std::size_t max_events) {
  std::lock_guard lock(impl_->run_mu);
  if (impl_->closed) return unexpected(Errc::kUnavailable, "the consumer is closed");
  return impl_->poll(handler, timeout, max_events);
}

void Consumer::interrupt() {
  impl_->interrupted.store(true);
  impl_->wake();
}

void Consumer::close() {
  impl_->closing.store(true);  // a poll() running on another thread returns...
  impl_->wake();
  std::lock_guard lock(impl_->run_mu);  // ...and gives us the socket
  impl_->close();
}

ConsumerStats Consumer::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

storage::Inbox& Consumer::inbox() { return *impl_->inbox; }

}  // namespace kolabus::client
