#include <cerrno>
#include <optional>
#include <string_view>

#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>

#include "aligned_frame.h"
#include "monitor.h"
#include <client/admin.h>
#include <schemas/protocol_generated.h>

namespace kolabus::client {

namespace {

using SteadyClock = std::chrono::steady_clock;

std::string str(const flatbuffers::String* s) { return s != nullptr ? s->str() : std::string(); }

std::string bytes_of(const flatbuffers::Vector<std::uint8_t>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const char*>(v->data()), v->size()};
}

FilterView filter_of(const protocol::Filter* f) {
  FilterView out;
  if (f == nullptr) return out;
  if (f->kinds() != nullptr) out.kinds.assign(f->kinds()->begin(), f->kinds()->end());
  if (f->regions() != nullptr) {
    for (const auto* r : *f->regions()) out.regions.push_back(str(r));
  }
  return out;
}

ConsumerInfoView info_of(const protocol::ConsumerInfo& c) {
  ConsumerInfoView v;
  v.name = str(c.name());
  v.owner = str(c.owner());
  if (const auto* cfg = c.config(); cfg != nullptr) {
    if (v.name.empty()) v.name = str(cfg->name());
    v.filter = filter_of(cfg->filter());
    v.start = static_cast<SeekPolicy>(cfg->start());
    v.start_sequence = cfg->start_sequence();
    v.start_time = cfg->start_time();
    v.ack_wait_ms = cfg->ack_wait_ms();
    v.max_deliver = cfg->max_deliver();
  }
  v.ack_floor = c.ack_floor();
  v.next_sequence = c.next_sequence();
  v.pending = c.pending();
  v.lag = c.lag();
  v.oldest_unacked_age_ms = c.oldest_unacked_age_ms();
  v.clients = c.clients();
  v.dead_letters = c.dead_letters();
  v.created = c.created();
  v.paused = str(c.paused());
  v.stalled_clients = c.stalled_clients();
  return v;
}

flatbuffers::Offset<protocol::Filter> build_filter(flatbuffers::FlatBufferBuilder& fbb,
                                                   const FilterView& f) {
  auto kinds = fbb.CreateVector(f.kinds);
  auto regions = fbb.CreateVectorOfStrings(f.regions);
  return protocol::CreateFilter(fbb, kinds, regions);
}

Error nack_error(const protocol::Nack& nack) {
  const char* code = protocol::EnumNameErrorCode(nack.code());
  std::string message = std::string(*code != '\0' ? code : "Unknown") + ": " + str(nack.message());
  // The broker's messages usually start with the field; name it only when they do not.
  if (nack.field() != nullptr && nack.field()->size() > 0 &&
      message.find(nack.field()->str()) == std::string::npos) {
    message += " (field " + nack.field()->str() + ")";
  }
  Errc errc = Errc::kInvalidArgument;
  if (nack.code() == protocol::ErrorCode::UnknownConsumer) {
    errc = Errc::kNotFound;
  } else if (nack.code() == protocol::ErrorCode::Internal) {
    errc = Errc::kInternal;
  } else if (nack.retryable()) {
    errc = Errc::kUnavailable;
  }
  return Error{errc, std::move(message)};
}

}  // namespace

struct AdminClient::Impl {
  std::string endpoint;
  std::chrono::milliseconds timeout{};
  CurveOptions curve;
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;
  std::unique_ptr<detail::SocketMonitor> monitor;  // `socket`'s handshake events
  detail::HandshakeWatch handshake;
  // The last handshake was refused. ZeroMQ does not retry after a ZAP refusal, so
  // the next call opens a fresh socket (the registry may have been fixed meanwhile).
  bool refused = false;
  std::uint64_t next_corr = 1;
  zmq::message_t reply;                // the last answer; exchange()'s result points into it
  detail::AlignedFrame aligned_reply;  // its bytes, aligned: what exchange() points into

  ~Impl() {
    monitor.reset();  // before its socket
    socket.reset();
  }

  // Throws zmq::error_t (an endpoint ZeroMQ cannot parse).
  void open_socket() {
    monitor.reset();
    socket.reset();
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    // A send blocks only while the queue to a never-connected broker is full;
    // bound it by the same timeout as the answer.
    socket->set(zmq::sockopt::sndtimeo, static_cast<int>(timeout.count()));
    socket->set(zmq::sockopt::reconnect_ivl, 100);
    apply_curve(*socket, curve);
    monitor =
        std::make_unique<detail::SocketMonitor>(context, *socket, detail::kHandshakeEvents, this);
    refused = false;
    socket->connect(endpoint);
  }

  // A settled handshake failure among the monitor's events, if any.
  std::optional<Error> handshake_failure() {
    std::optional<Error> out;
    for (const auto& e : monitor->drain()) {
      if (auto f = handshake.on_event(e)) out = std::move(f);
      if (e.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) out.reset();
    }
    if (out) refused = true;
    return out;
  }

  Error timeout_error() const {
    return Error{Errc::kUnavailable, "broker at " + endpoint + " did not answer within " +
                                         std::to_string(timeout.count()) + " ms"};
  }

  // Sends the command and waits for the Response with its corr. The result is
  // borrowed from `reply`: valid until the next exchange().
  Result<const protocol::Response*> exchange(flatbuffers::FlatBufferBuilder& fbb,
                                             protocol::Command type,
                                             flatbuffers::Offset<void> command) {
    const std::uint64_t corr = next_corr++;
    fbb.Finish(protocol::CreateRequest(fbb, 1, corr, type, command), protocol::RequestIdentifier());
    const auto deadline = SteadyClock::now() + timeout;
    try {
      if (refused) open_socket();
      // Refused before this call (the handshake runs as soon as we connect): say so
      // now rather than after the timeout. The socket will not try again by itself.
      if (auto f = handshake_failure()) return unexpected(std::move(*f));
      if (!socket->send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()),
                        zmq::send_flags::none)) {
        return unexpected(timeout_error());
      }
      for (;;) {
        // Rounded up: poll() must not return a fraction of a millisecond early.
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
        if (left.count() <= 0) return unexpected(timeout_error());
        zmq::pollitem_t items[] = {{socket->handle(), 0, ZMQ_POLLIN, 0},
                                   {monitor->handle(), 0, ZMQ_POLLIN, 0}};
        try {
          zmq::poll(items, monitor->handle() != nullptr ? 2 : 1, left);
        } catch (const zmq::error_t& e) {
          if (e.num() == EINTR) continue;  // a signal (SIGWINCH, ...): keep waiting
          throw;
        }
        if (items[1].revents & ZMQ_POLLIN) {
          if (auto f = handshake_failure()) return unexpected(std::move(*f));
        }
        if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
        while (socket->recv(reply, zmq::recv_flags::dontwait)) {
          aligned_reply.assign(reply);
          const auto* data = aligned_reply.data();
          flatbuffers::Verifier verifier(data, aligned_reply.size());
          if (!verifier.VerifyBuffer<protocol::Response>(nullptr)) continue;
          const auto* resp = flatbuffers::GetRoot<protocol::Response>(data);
          if (resp->corr() == corr) return resp;
          // A frame the broker could not read carries corr 0; with one request in
          // flight at a time, it can only be about this one.
          if (resp->corr() == 0 && resp->reply_type() == protocol::Reply::Nack) return resp;
        }
      }
    } catch (const zmq::error_t& e) {
      return unexpected(Errc::kInternal, "ZeroMQ error talking to " + endpoint + ": " + e.what());
    }
  }

  // exchange(), then the reply as `T` (or the Nack as an error).
  template <typename T>
  Result<const T*> call(flatbuffers::FlatBufferBuilder& fbb, protocol::Command type,
                        flatbuffers::Offset<void> command) {
    auto resp = exchange(fbb, type, command);
    if (!resp) return unexpected(resp.error());
    if (const auto* nack = (*resp)->reply_as_Nack()) return unexpected(nack_error(*nack));
    const auto* want = (*resp)->template reply_as<T>();
    if (want == nullptr) {
      return unexpected(Errc::kInternal, std::string("broker answered ") +
                                             protocol::EnumNameReply((*resp)->reply_type()) +
                                             " to " + protocol::EnumNameCommand(type));
    }
    return want;
  }

  // DlqRedrive / DlqDrop: the same shape, answered by Done.
  template <typename Create>
  Result<std::uint64_t> dlq_change(protocol::Command type, const std::string& consumer,
                                   std::span<const std::uint64_t> sequences, Create create) {
    flatbuffers::FlatBufferBuilder fbb(128 + sequences.size() * 8);
    auto name = fbb.CreateString(consumer);
    auto seqs = fbb.CreateVector(sequences.data(), sequences.size());
    auto cmd = create(fbb, name, seqs);
    auto done = call<protocol::Done>(fbb, type, cmd.Union());
    if (!done) return unexpected(done.error());
    return (*done)->count();
  }
};

AdminClient::AdminClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdminClient::~AdminClient() = default;

Result<std::unique_ptr<AdminClient>> AdminClient::connect(std::string endpoint,
                                                          std::chrono::milliseconds timeout,
                                                          CurveOptions curve) {
  KOLABUS_CHECK(timeout.count() > 0);
  if (auto st = check_curve(curve); !st) return unexpected(st.error());
  auto impl = std::make_unique<Impl>();
  impl->endpoint = std::move(endpoint);
  impl->timeout = timeout;
  impl->handshake = detail::HandshakeWatch(impl->endpoint, curve.enabled());
  impl->curve = std::move(curve);
  try {
    impl->open_socket();
  } catch (const zmq::error_t& e) {
    return unexpected(Errc::kInvalidArgument,
                      "cannot connect to " + impl->endpoint + ": " + e.what());
  }
  return std::unique_ptr<AdminClient>(new AdminClient(std::move(impl)));
}

const std::string& AdminClient::endpoint() const { return impl_->endpoint; }

Result<BrokerInfo> AdminClient::ping() {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto cmd = protocol::CreatePing(fbb);
  auto pong = impl_->call<protocol::Pong>(fbb, protocol::Command::Ping, cmd.Union());
  if (!pong) return unexpected(pong.error());
  return BrokerInfo{str((*pong)->broker_version()), (*pong)->next_sequence()};
}

Result<std::vector<ConsumerInfoView>> AdminClient::list_consumers() {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto cmd = protocol::CreateListConsumers(fbb);
  auto list =
      impl_->call<protocol::ConsumerList>(fbb, protocol::Command::ListConsumers, cmd.Union());
  if (!list) return unexpected(list.error());
  std::vector<ConsumerInfoView> out;
  if (const auto* cs = (*list)->consumers()) {
    out.reserve(cs->size());
    for (const auto* c : *cs) out.push_back(info_of(*c));
  }
  return out;
}

Result<ConsumerInfoView> AdminClient::seek(const std::string& name, SeekPolicy policy,
                                           std::uint64_t sequence, TimeMs time) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto cmd = protocol::CreateSeekConsumerDirect(
      fbb, name.c_str(), static_cast<protocol::StartPolicy>(policy), sequence, time);
  auto sub = impl_->call<protocol::Subscribed>(fbb, protocol::Command::SeekConsumer, cmd.Union());
  if (!sub) return unexpected(sub.error());
  if ((*sub)->info() == nullptr) {
    return unexpected(Errc::kInternal, "broker answered SeekConsumer without the consumer");
  }
  return info_of(*(*sub)->info());
}

Status AdminClient::delete_consumer(const std::string& name) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto cmd = protocol::CreateDeleteConsumerDirect(fbb, name.c_str());
  auto done = impl_->call<protocol::Done>(fbb, protocol::Command::DeleteConsumer, cmd.Union());
  if (!done) return unexpected(done.error());
  return {};
}

Result<std::uint64_t> AdminClient::reload_registry() {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto cmd = protocol::CreateReloadRegistry(fbb);
  auto done = impl_->call<protocol::Done>(fbb, protocol::Command::ReloadRegistry, cmd.Union());
  if (!done) return unexpected(done.error());
  return (*done)->count();
}

Result<RangePageView> AdminClient::read_range(const FilterView& filter, std::uint64_t from_sequence,
                                              TimeMs from_time, std::uint64_t to_sequence,
                                              std::uint32_t max_events) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto f = build_filter(fbb, filter);
  auto cmd = protocol::CreateReadRange(fbb, f, from_sequence, from_time, to_sequence, max_events);
  auto page = impl_->call<protocol::RangePage>(fbb, protocol::Command::ReadRange, cmd.Union());
  if (!page) return unexpected(page.error());
  RangePageView out;
  out.next = (*page)->next();
  out.done = (*page)->done();
  if (const auto* rs = (*page)->records()) {
    out.records.reserve(rs->size());
    for (const auto* r : *rs) out.records.push_back(bytes_of(r->bytes()));
  }
  return out;
}

Result<std::vector<DeadLetterView>> AdminClient::dlq_list(const std::string& consumer,
                                                          std::uint64_t from_sequence,
                                                          std::uint32_t max,
                                                          const std::string& owner) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto cmd =
      protocol::CreateDlqListDirect(fbb, consumer.empty() ? nullptr : consumer.c_str(),
                                    from_sequence, max, owner.empty() ? nullptr : owner.c_str());
  auto list = impl_->call<protocol::DeadLetterList>(fbb, protocol::Command::DlqList, cmd.Union());
  if (!list) return unexpected(list.error());
  std::vector<DeadLetterView> out;
  if (const auto* items = (*list)->items()) {
    out.reserve(items->size());
    for (const auto* d : *items) {
      DeadLetterView v{str(d->consumer()), d->sequence(),         d->attempts(), str(d->reason()),
                       d->dead_at(),       bytes_of(d->record()), d->kind(),     {}};
      if (d->regions() != nullptr) {
        for (const auto* r : *d->regions()) v.regions.push_back(str(r));
      }
      out.push_back(std::move(v));
    }
  }
  return out;
}

Result<std::uint64_t> AdminClient::dlq_redrive(const std::string& consumer,
                                               std::span<const std::uint64_t> sequences) {
  return impl_->dlq_change(
      protocol::Command::DlqRedrive, consumer, sequences,
      [](auto& fbb, auto name, auto seqs) { return protocol::CreateDlqRedrive(fbb, name, seqs); });
}

Result<std::uint64_t> AdminClient::dlq_drop(const std::string& consumer,
                                            std::span<const std::uint64_t> sequences) {
  return impl_->dlq_change(
      protocol::Command::DlqDrop, consumer, sequences,
      [](auto& fbb, auto name, auto seqs) { return protocol::CreateDlqDrop(fbb, name, seqs); });
}

Result<AuditPageView> AdminClient::audit_read(std::uint64_t from_index, TimeMs since,
                                              std::uint32_t max) {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto cmd = protocol::CreateAuditRead(fbb, from_index, since, max);
  auto page = impl_->call<protocol::AuditPage>(fbb, protocol::Command::AuditRead, cmd.Union());
  if (!page) return unexpected(page.error());
  AuditPageView out;
  out.next_index = (*page)->next_index();
  out.done = (*page)->done();
  out.head_index = (*page)->head_index();
  out.head_hash = bytes_of((*page)->head_hash());
  if (const auto* rs = (*page)->records()) {
    out.records.reserve(rs->size());
    for (const auto* r : *rs) out.records.emplace_back(r->index(), bytes_of(r->bytes()));
  }
  return out;
}

Result<AuditPersonPageView> AdminClient::audit_person(const std::string& nik,
                                                      std::uint64_t from_index, std::uint32_t max,
                                                      std::span<const std::uint64_t> sequences) {
  flatbuffers::FlatBufferBuilder fbb(256 + sequences.size() * 8);
  auto n = fbb.CreateString(nik);
  auto seqs = fbb.CreateVector(sequences.data(), sequences.size());
  auto cmd = protocol::CreateAuditPerson(fbb, n, from_index, max, seqs);
  auto page =
      impl_->call<protocol::AuditPersonPage>(fbb, protocol::Command::AuditPerson, cmd.Union());
  if (!page) return unexpected(page.error());
  AuditPersonPageView out;
  out.next_index = (*page)->next_index();
  out.done = (*page)->done();
  if (const auto* ss = (*page)->sequences()) out.sequences.assign(ss->begin(), ss->end());
  if (const auto* hs = (*page)->hits()) {
    for (const auto* h : *hs) {
      PersonHitView v{h->index(),
                      h->time(),
                      static_cast<std::uint8_t>(h->action()),
                      str(h->agency()),
                      str(h->consumer()),
                      h->sequence(),
                      {},
                      h->kind()};
      if (const auto* id = h->event_id()) {
        v.event_id.assign(reinterpret_cast<const char*>(id->bytes()->data()), 16);
      }
      out.hits.push_back(std::move(v));
    }
  }
  return out;
}

}  // namespace kolabus::client
