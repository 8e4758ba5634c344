// Bad input on the wire: a raw DEALER socket sends what a buggy or hostile client
// might; each gets a precise error and the broker goes on serving.
#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "broker_process.h"
#include "test_events.h"
#include <common/clock.h>
#include <schemas/protocol_generated.h>
#include <tools/event_generator.h>

using namespace kolabus;
using protocol::ErrorCode;

namespace {

class RawClient {
 public:
  explicit RawClient(const std::string& endpoint, zmq::socket_type type = zmq::socket_type::dealer)
      : socket_(context_, type) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvtimeo, 10000);
    socket_.connect(endpoint);
  }

  void send_frames(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  void send_request(std::uint64_t corr, std::uint16_t version, protocol::Command type,
                    flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<void> cmd) {
    fbb.Finish(protocol::CreateRequest(fbb, version, corr, type, cmd));
    send_frames(
        {std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize())});
  }
  void publish(std::uint64_t corr, const std::vector<std::uint8_t>& event) {
    flatbuffers::FlatBufferBuilder fbb;
    auto vec = fbb.CreateVector(event);
    send_request(corr, 1, protocol::Command::Publish, fbb,
                 protocol::CreatePublish(fbb, vec).Union());
  }

  // The body of the next reply (the last frame), verified.
  std::string reply() {
    std::vector<zmq::message_t> parts;
    auto n = zmq::recv_multipart(socket_, std::back_inserter(parts));
    REQUIRE(n.has_value());
    std::string body = parts.back().to_string();
    flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
    REQUIRE(v.VerifyBuffer<protocol::Response>(nullptr));
    return body;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
};

const protocol::Response* as_response(const std::string& body) {
  return flatbuffers::GetRoot<protocol::Response>(body.data());
}

std::vector<std::uint8_t> one_event(std::uint64_t seed) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  return gen.next();
}

// After any bad input the broker must still take a good event.
void expect_serving(RawClient& c, std::uint64_t seed) {
  c.publish(4242, one_event(seed));
  const std::string body = c.reply();
  const auto* r = as_response(body);
  CHECK(r->corr() == 4242);
  REQUIRE(r->reply_type() == protocol::Reply::PublishAck);
}

}  // namespace

TEST_CASE("Frames: bad frames get error replies and the broker keeps serving") {
  test::TempDir dir("frames");
  test::BrokerProcess broker(dir.str("broker"));
  RawClient c(broker.endpoint());

  SUBCASE("garbage: MalformedFrame") {
    c.send_frames({"this is not a flatbuffer"});
    const auto body = c.reply();
    CHECK(as_response(body)->reply_as_Nack()->code() == ErrorCode::MalformedFrame);
    expect_serving(c, 1);
  }
  SUBCASE("an empty frame: MalformedFrame") {
    c.send_frames({""});
    const auto body = c.reply();
    CHECK(as_response(body)->reply_as_Nack()->code() == ErrorCode::MalformedFrame);
    expect_serving(c, 2);
  }
  SUBCASE("extra frames: MalformedFrame naming the count") {
    c.send_frames({"a", "b", "c"});
    const auto body = c.reply();
    const auto* n = as_response(body)->reply_as_Nack();
    CHECK(n->code() == ErrorCode::MalformedFrame);
    CHECK(n->message()->str().find("3 frames") != std::string::npos);
    expect_serving(c, 3);
  }
  SUBCASE("oversized: FrameTooLarge") {
    c.send_frames({std::string((1 << 20) + 1, 'x')});
    const auto body = c.reply();
    const auto* n = as_response(body)->reply_as_Nack();
    CHECK(n->code() == ErrorCode::FrameTooLarge);
    CHECK(n->message()->str().find("1048576") != std::string::npos);
    expect_serving(c, 4);
  }
  SUBCASE("an unknown protocol version: UnsupportedVersion") {
    flatbuffers::FlatBufferBuilder fbb;
    c.send_request(7, 2, protocol::Command::Ping, fbb, protocol::CreatePing(fbb).Union());
    const auto body = c.reply();
    CHECK(as_response(body)->corr() == 7);
    CHECK(as_response(body)->reply_as_Nack()->code() == ErrorCode::UnsupportedVersion);
    expect_serving(c, 5);
  }
  SUBCASE("no command: UnknownCommand") {
    flatbuffers::FlatBufferBuilder fbb;
    c.send_request(8, 1, protocol::Command::NONE, fbb, 0);
    const auto body = c.reply();
    CHECK(as_response(body)->reply_as_Nack()->code() == ErrorCode::UnknownCommand);
    expect_serving(c, 6);
  }
  SUBCASE("a publish whose event is garbage: MalformedEvent") {
    c.publish(9, {1, 2, 3, 4, 5, 6, 7, 8});
    const auto body = c.reply();
    CHECK(as_response(body)->corr() == 9);
    CHECK(as_response(body)->reply_as_Nack()->code() == ErrorCode::MalformedEvent);
    expect_serving(c, 7);
  }
  SUBCASE("an invalid event: the id and the field are named") {
    auto ev = one_event(8);
    auto regions = test::regions_of(ev);
    // A void of an event nobody published.
    auto bad = test::make_void(new_uuid_v7(), regions, SystemClock().now_ms() - 1000);
    c.publish(10, bad);
    const auto body = c.reply();
    const auto* n = as_response(body)->reply_as_Nack();
    CHECK(n->code() == ErrorCode::UnknownTarget);
    REQUIRE(n->id() != nullptr);
    CHECK(EventId::from_span(std::span<const std::uint8_t, 16>(n->id()->bytes()->data(), 16)) ==
          test::id_of(bad));
    CHECK(n->field()->str() == "payload.target_id");
    CHECK_FALSE(n->retryable());
    expect_serving(c, 9);
  }
  SUBCASE("ping: Pong with the next sequence") {
    flatbuffers::FlatBufferBuilder fbb;
    c.send_request(11, 1, protocol::Command::Ping, fbb, protocol::CreatePing(fbb).Union());
    const auto body = c.reply();
    REQUIRE(as_response(body)->reply_type() == protocol::Reply::Pong);
    CHECK(as_response(body)->reply_as_Pong()->next_sequence() == 1);
  }
}

TEST_CASE("Frames: a REQ client (one request at a time) is answered too") {
  test::TempDir dir("req");
  test::BrokerProcess broker(dir.str("broker"));
  RawClient c(broker.endpoint(), zmq::socket_type::req);
  expect_serving(c, 21);
  expect_serving(c, 22);
}
