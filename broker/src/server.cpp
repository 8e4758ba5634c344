#include <chrono>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <spdlog/spdlog.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <broker/server.h>
#include <schemas/protocol_generated.h>

namespace kolabus::broker {

namespace {

using protocol::ErrorCode;
using Clock = std::chrono::steady_clock;

constexpr std::uint16_t kProtocolVersion = 1;

// A message as received: the routing envelope (identity, plus the empty delimiter
// of a REQ client) and the body frame.
struct Incoming {
  std::vector<zmq::message_t> envelope;
  zmq::message_t body;
  std::uint64_t corr = 0;
  std::string source;
  std::span<const std::uint8_t> event;
};

flatbuffers::DetachedBuffer nack_response(std::uint64_t corr, const std::optional<EventId>& id,
                                          const Nack& n) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto field = fbb.CreateString(n.field);
  auto message = fbb.CreateString(n.message);
  std::optional<events::Uuid> uuid;
  if (id) uuid = events::Uuid(flatbuffers::span<const std::uint8_t, 16>(id->bytes.data(), 16));
  auto body =
      protocol::CreateNack(fbb, uuid ? &*uuid : nullptr, n.code, field, message, n.retryable);
  fbb.Finish(
      protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::Nack, body.Union()));
  return fbb.Release();
}

flatbuffers::DetachedBuffer ack_response(std::uint64_t corr, const EventId& id, const Ack& a) {
  flatbuffers::FlatBufferBuilder fbb(128);
  events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  auto body = protocol::CreatePublishAck(fbb, &uuid, a.sequence.value, a.duplicate);
  fbb.Finish(protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::PublishAck,
                                      body.Union()));
  return fbb.Release();
}

flatbuffers::DetachedBuffer pong_response(std::uint64_t corr, Sequence next) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto version = fbb.CreateString(KOLABUS_VERSION);
  auto body = protocol::CreatePong(fbb, version, next.value);
  fbb.Finish(
      protocol::CreateResponse(fbb, kProtocolVersion, corr, protocol::Reply::Pong, body.Union()));
  return fbb.Release();
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

struct Server::Impl {
  Core& core;
  ServerOptions options;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  RefusalLog refusals;
  std::uint64_t frame_errors = 0;
  std::uint64_t unroutable_replies = 0;

  Impl(Core& c, ServerOptions o) : core(c), options(std::move(o)) {}

  std::string agency_of(const zmq::message_t& /*body*/) const {
    // Seam for authentication: with CURVE the ZAP handler's User-Id will name the
    // agency. Until then every connection is the development agency.
    return options.dev_agency;
  }

  void send(std::vector<zmq::message_t>& envelope, const flatbuffers::DetachedBuffer& reply) {
    try {
      for (auto& frame : envelope) {
        zmq::message_t copy;
        copy.copy(frame);
        if (!socket.send(copy, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
          ++unroutable_replies;  // the client's queue is full; it will time out and resend
          return;
        }
      }
      if (!socket.send(zmq::const_buffer(reply.data(), reply.size()), zmq::send_flags::dontwait)) {
        ++unroutable_replies;
      }
    } catch (const zmq::error_t& e) {
      // EHOSTUNREACH (ROUTER_MANDATORY): the client went away. Its outbox resends.
      ++unroutable_replies;
      spdlog::debug("reply not delivered: {}", e.what());
    }
  }

  void refuse_frame(std::vector<zmq::message_t>& envelope, std::uint64_t corr, Nack n) {
    ++frame_errors;
    refusals.log("a client", std::nullopt, n);
    send(envelope, nack_response(corr, std::nullopt, n));
  }

  // Reads one message without blocking. Returns false when nothing is readable.
  // Publishes go to `batch`; everything else is answered here.
  bool read_one(std::vector<Incoming>& batch, std::size_t& batch_bytes) {
    std::vector<zmq::message_t> parts;
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
    const auto* data = static_cast<const std::uint8_t*>(in.body.data());
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
    if (req->version() != kProtocolVersion) {
      refuse_frame(in.envelope, in.corr,
                   Nack{ErrorCode::UnsupportedVersion, "version",
                        "protocol version " + std::to_string(req->version()) +
                            " is not supported; this broker speaks version 1",
                        false});
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
    }
    refuse_frame(in.envelope, in.corr,
                 Nack{ErrorCode::UnknownCommand, "command",
                      "command type " + std::to_string(static_cast<int>(req->command_type())) +
                          " is unknown to this broker",
                      false});
    return true;
  }

  void commit(std::vector<Incoming>& batch) {
    std::vector<PublishRequest> requests;
    requests.reserve(batch.size());
    for (const auto& in : batch) requests.push_back({in.event, in.source});
    const auto outcomes = core.publish_batch(requests);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& o = outcomes[i];
      if (const auto* ack = std::get_if<Ack>(&o.result)) {
        send(batch[i].envelope, ack_response(batch[i].corr, *o.id, *ack));
      } else {
        const auto& n = std::get<Nack>(o.result);
        if (n.code == ErrorCode::StorageUnavailable) {
          spdlog::error("storage unavailable, event {} NACKed retryable: {}",
                        o.id ? o.id->to_string() : "?", n.message);
        } else {
          refusals.log(batch[i].source, o.id, n);
        }
        send(batch[i].envelope, nack_response(batch[i].corr, o.id, n));
      }
    }
  }
};

Server::Server(Core& core, ServerOptions options)
    : impl_(std::make_unique<Impl>(core, std::move(options))) {}

Server::~Server() = default;

Result<std::string> Server::bind() {
  auto& s = impl_->socket;
  try {
    s.set(zmq::sockopt::router_mandatory, 1);
    s.set(zmq::sockopt::linger, 0);
    // Frames a little over the limit are read and answered FrameTooLarge; far
    // larger ones make ZeroMQ drop the connection before they fill memory.
    const auto hard = static_cast<std::int64_t>(impl_->options.max_message_bytes) * 4 + 65536;
    s.set(zmq::sockopt::maxmsgsize, hard);
    s.set(zmq::sockopt::rcvhwm, 100000);
    s.set(zmq::sockopt::sndhwm, 100000);
    s.bind(impl_->options.endpoint);
    return s.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return unexpected(Errc::kUnavailable,
                      "cannot bind " + impl_->options.endpoint + ": " + e.what());
  }
}

void Server::run() {
  auto& im = *impl_;
  zmq::pollitem_t items[] = {{im.socket.handle(), 0, ZMQ_POLLIN, 0}};
  auto last_stats = Clock::now();
  CoreStats logged{};
  while (!stop_.load()) {
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(200));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[0].revents & ZMQ_POLLIN) {
      std::vector<Incoming> batch;
      std::size_t batch_bytes = 0;
      std::size_t read = 0;
      while (read < im.options.max_batch_messages && batch_bytes < im.options.max_batch_bytes &&
             im.read_one(batch, batch_bytes)) {
        ++read;
      }
      if (!batch.empty()) im.commit(batch);
    }
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
  spdlog::info("stopping: published {}, next sequence {}", im.core.stats().accepted,
               im.core.next_sequence().value);
}

}  // namespace kolabus::broker
