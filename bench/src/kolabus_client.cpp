#include "kolabus_client.h"

#include <flatbuffers/flatbuffers.h>

#include "process.h"
#include <schemas/log_generated.h>

namespace kolabus::bench {

namespace {

using std::chrono::milliseconds;

constexpr std::uint16_t kVersion = 1;

class KolabusPublisher final : public PublishClient {
 public:
  KolabusPublisher(zmq::context_t& context, const std::string& endpoint, const EventPool& pool)
      : socket_(context, endpoint), pool_(pool) {}

  void send(std::uint64_t i) override { socket_.send_publish(pool_, i); }

  Result<Acks> receive(milliseconds timeout) override {
    Acks acks;
    auto m = socket_.recv(timeout);
    while (m) {
      count(*m, acks);
      m = socket_.recv(milliseconds(0));
    }
    return acks;
  }

 private:
  static void count(const zmq::message_t& m, Acks& acks) {
    const auto* resp = as_response(m);
    if (resp == nullptr) {
      ++acks.refused;
      if (acks.first_refusal.empty()) acks.first_refusal = "an unreadable response";
      return;
    }
    if (resp->reply_type() == protocol::Reply::PublishAck) {
      ++acks.acked;
    } else if (const auto* nack = resp->reply_as_Nack()) {
      ++acks.refused;
      if (acks.first_refusal.empty()) acks.first_refusal = describe(*nack);
    }
  }

  KolabusSocket socket_;
  const EventPool& pool_;
};

class KolabusSubscriber final : public SubscribeClient {
 public:
  KolabusSubscriber(zmq::context_t& context, const std::string& endpoint, const EventPool& pool,
                    SubscribeOptions options)
      : socket_(context, endpoint), pool_(pool), options_(std::move(options)) {}

  Status subscribe() {
    socket_.send_subscribe(
        1, options_,
        options_.from_start ? protocol::StartPolicy::Earliest : protocol::StartPolicy::Latest);
    last_sent_ = SteadyClock::now();
    const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
    while (SteadyClock::now() < deadline) {
      auto m = socket_.recv(milliseconds(100));
      if (!m) continue;
      const auto* resp = as_response(*m);
      if (resp == nullptr) continue;
      if (resp->reply_type() == protocol::Reply::Delivery ||
          resp->reply_type() == protocol::Reply::DeliveryBatch) {
        early_.push_back(std::move(*m));  // handled by the first receive()
        continue;
      }
      if (resp->corr() != 1) continue;
      if (resp->reply_type() == protocol::Reply::Subscribed) return {};
      if (const auto* nack = resp->reply_as_Nack()) {
        return unexpected(Errc::kInvalidArgument, "Subscribe refused: " + describe(*nack));
      }
    }
    return unexpected(Errc::kUnavailable, "no answer to Subscribe within 30 s");
  }

  Result<std::size_t> receive(milliseconds timeout, const EventHandler& on_event) override {
    std::size_t n = 0;
    sequences_.clear();
    std::optional<std::string> error;
    for (auto& m : early_) handle(m, on_event, n, error);
    early_.clear();
    auto m = socket_.recv(n > 0 ? milliseconds(0) : timeout);
    // Drain what is queued (bounded, so that acknowledgements flow back steadily).
    for (std::size_t k = 0; m && k < 20000; ++k) {
      handle(*m, on_event, n, error);
      m = socket_.recv(milliseconds(0));
    }
    if (m) handle(*m, on_event, n, error);
    const auto now = SteadyClock::now();
    if (!sequences_.empty()) {
      socket_.send_ack(options_.name, sequences_);
      last_sent_ = now;
    } else if (now - last_sent_ > std::chrono::seconds(2)) {
      socket_.send_ping(2);  // liveness: the broker detaches silent clients
      last_sent_ = now;
    }
    if (error) return unexpected(Errc::kInvalidArgument, *error);
    return n;
  }

  void* zmq_handle() override { return socket_.socket().handle(); }

 private:
  void handle(const zmq::message_t& m, const EventHandler& on_event, std::size_t& n,
              std::optional<std::string>& error) {
    const auto* resp = as_response(m);
    if (resp == nullptr) return;
    if (const auto* d = resp->reply_as_Delivery()) {
      one(*d, on_event, n);
    } else if (const auto* b = resp->reply_as_DeliveryBatch()) {
      if (b->deliveries() == nullptr) return;
      for (const auto* item : *b->deliveries()) one(*item, on_event, n);
    } else if (const auto* nack = resp->reply_as_Nack()) {
      error = "consumer " + options_.name + ": " + describe(*nack);
    }
  }

  void one(const protocol::Delivery& d, const EventHandler& on_event, std::size_t& n) {
    sequences_.push_back(d.sequence());
    if (d.record() == nullptr) return;
    const auto* rec = log::GetLogRecord(d.record()->data());
    if (rec->event() == nullptr) return;
    ++n;
    if (auto i = pool_.index_of_event({rec->event()->data(), rec->event()->size()})) {
      on_event(*i);
    }
  }

  KolabusSocket socket_;
  const EventPool& pool_;
  SubscribeOptions options_;
  std::vector<zmq::message_t> early_;
  std::vector<std::uint64_t> sequences_;
  SteadyClock::time_point last_sent_;
};

}  // namespace

KolabusSocket::KolabusSocket(zmq::context_t& context, const std::string& endpoint)
    : socket_(context, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::sndhwm, 100000);
  socket_.set(zmq::sockopt::rcvhwm, 100000);
  socket_.connect(endpoint);
}

void KolabusSocket::send_request(flatbuffers::FlatBufferBuilder& fbb) {
  socket_.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()), zmq::send_flags::none);
}

void KolabusSocket::send_publish(const EventPool& pool, std::uint64_t i) {
  zmq::message_t m(pool.frame_size(i));
  pool.write_frame(i, static_cast<std::uint8_t*>(m.data()));
  socket_.send(m, zmq::send_flags::none);
}

void KolabusSocket::send_ping(std::uint64_t corr) {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto ping = protocol::CreatePing(fbb);
  fbb.Finish(protocol::CreateRequest(fbb, kVersion, corr, protocol::Command::Ping, ping.Union()),
             protocol::RequestIdentifier());
  send_request(fbb);
}

void KolabusSocket::send_subscribe(std::uint64_t corr, const SubscribeOptions& options,
                                   protocol::StartPolicy start) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto regions = fbb.CreateVectorOfStrings(options.regions);
  auto filter = protocol::CreateFilter(fbb, 0, regions);
  auto name = fbb.CreateString(options.name);
  auto config = protocol::CreateConsumerConfig(fbb, name, filter, start, 0, 0, options.ack_wait_ms);
  auto sub = protocol::CreateSubscribe(fbb, config, options.window, options.batch);
  fbb.Finish(
      protocol::CreateRequest(fbb, kVersion, corr, protocol::Command::Subscribe, sub.Union()),
      protocol::RequestIdentifier());
  send_request(fbb);
}

void KolabusSocket::send_unsubscribe(std::uint64_t corr, const std::string& consumer) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto body = protocol::CreateUnsubscribeDirect(fbb, consumer.c_str());
  fbb.Finish(
      protocol::CreateRequest(fbb, kVersion, corr, protocol::Command::Unsubscribe, body.Union()),
      protocol::RequestIdentifier());
  send_request(fbb);
}

void KolabusSocket::send_seek_latest(std::uint64_t corr, const std::string& consumer) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto body =
      protocol::CreateSeekConsumerDirect(fbb, consumer.c_str(), protocol::StartPolicy::Latest);
  fbb.Finish(
      protocol::CreateRequest(fbb, kVersion, corr, protocol::Command::SeekConsumer, body.Union()),
      protocol::RequestIdentifier());
  send_request(fbb);
}

void KolabusSocket::send_ack(const std::string& consumer,
                             const std::vector<std::uint64_t>& sequences) {
  flatbuffers::FlatBufferBuilder fbb(64 + 8 * sequences.size());
  auto body = protocol::CreateAckDirect(fbb, consumer.c_str(), &sequences);
  // Ack is answered only when refused; a corr lets such a Nack be told apart.
  fbb.Finish(protocol::CreateRequest(fbb, kVersion, 3, protocol::Command::Ack, body.Union()),
             protocol::RequestIdentifier());
  send_request(fbb);
}

void KolabusSocket::send_list_consumers(std::uint64_t corr) {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto body = protocol::CreateListConsumers(fbb);
  fbb.Finish(
      protocol::CreateRequest(fbb, kVersion, corr, protocol::Command::ListConsumers, body.Union()),
      protocol::RequestIdentifier());
  send_request(fbb);
}

std::optional<zmq::message_t> KolabusSocket::recv(milliseconds timeout) {
  zmq::message_t m;
  if (timeout.count() > 0) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
  }
  if (!socket_.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
  return m;
}

const protocol::Response* as_response(const zmq::message_t& message) {
  const auto* data = static_cast<const std::uint8_t*>(message.data());
  flatbuffers::Verifier verifier(data, message.size());
  if (!verifier.VerifyBuffer<protocol::Response>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<protocol::Response>(data);
}

std::string describe(const protocol::Nack& nack) {
  std::string s = protocol::EnumNameErrorCode(nack.code());
  if (nack.field() != nullptr && nack.field()->size() > 0) s += " " + nack.field()->str();
  if (nack.message() != nullptr) s += ": " + nack.message()->str();
  return s;
}

std::unique_ptr<PublishClient> make_kolabus_publisher(zmq::context_t& context,
                                                      const std::string& endpoint,
                                                      const EventPool& pool) {
  return std::make_unique<KolabusPublisher>(context, endpoint, pool);
}

Result<std::unique_ptr<SubscribeClient>> make_kolabus_subscriber(zmq::context_t& context,
                                                                 const std::string& endpoint,
                                                                 const EventPool& pool,
                                                                 const SubscribeOptions& options) {
  auto sub = std::make_unique<KolabusSubscriber>(context, endpoint, pool, options);
  if (Status st = sub->subscribe(); !st) return unexpected(st.error());
  return std::unique_ptr<SubscribeClient>(std::move(sub));
}

Result<std::uint64_t> next_sequence(zmq::context_t& context, const std::string& endpoint) {
  KolabusSocket s(context, endpoint);
  s.send_ping(9);
  const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
  while (SteadyClock::now() < deadline) {
    auto m = s.recv(milliseconds(1000));
    if (!m) continue;
    const auto* resp = as_response(*m);
    if (resp == nullptr || resp->corr() != 9) continue;
    if (const auto* pong = resp->reply_as_Pong()) return pong->next_sequence();
  }
  return unexpected(Errc::kUnavailable, "no Pong from " + endpoint);
}

Status wait_for_pong(zmq::context_t& context, const std::string& endpoint,
                     std::chrono::milliseconds timeout, const std::function<bool()>& alive) {
  zmq::socket_t s(context, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::reconnect_ivl, 1);
  s.set(zmq::sockopt::reconnect_ivl_max, 1);
  s.connect(endpoint);
  flatbuffers::FlatBufferBuilder fbb(64);
  auto ping = protocol::CreatePing(fbb);
  fbb.Finish(protocol::CreateRequest(fbb, kVersion, 1, protocol::Command::Ping, ping.Union()),
             protocol::RequestIdentifier());
  s.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()), zmq::send_flags::none);
  const auto deadline = SteadyClock::now() + timeout;
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (SteadyClock::now() < deadline) {
    zmq::poll(&item, 1, milliseconds(1));
    if (item.revents & ZMQ_POLLIN) {
      zmq::message_t m;
      if (s.recv(m, zmq::recv_flags::dontwait)) {
        const auto* resp = as_response(m);
        if (resp != nullptr && resp->reply_type() == protocol::Reply::Pong) return {};
      }
    }
    if (!alive()) return unexpected(Errc::kUnavailable, "the server exited while starting");
  }
  return unexpected(Errc::kUnavailable, "no Pong from " + endpoint + " within " +
                                            std::to_string(timeout.count()) + " ms");
}

}  // namespace kolabus::bench
