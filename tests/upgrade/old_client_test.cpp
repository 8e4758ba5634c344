// An old client against this broker (issue 7, item 6). Everything on the wire here is
// built and read with C++ that flatc generated from the schemas of a released version
// (tests/upgrade/schemas/<release>/): the code a publisher or consumer built against
// that release has. The binary links nothing else of kolabus, so no newer table can
// leak in. A new consumer (this build's `kolabus tail`) then reads what the old
// client published.
#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>

#include "broker_process.h"
#include <schemas/events_generated.h>  // the release's, generated into the build tree
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>

using namespace kolabus;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A valid birth in Pasar Baru (Medan Kota), as PROTOCOL.md 9 builds one.
std::vector<std::uint8_t> old_birth(const std::array<std::uint8_t, 16>& id, std::int64_t when) {
  flatbuffers::FlatBufferBuilder fbb;
  auto birth =
      events::CreateBirthDirect(fbb, "Putri Siregar", events::Sex::Female, when, "Medan",
                                "1271011001", "1271015203950001", nullptr, "1271012002200001");
  auto regions = fbb.CreateVectorOfStrings({"1271011001"});
  const events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.data(), 16));
  fbb.Finish(events::CreateEvent(fbb, &uuid, 1, when, when + 60 * 1000, 0, regions,
                                 events::Payload::Birth, birth.Union()),
             events::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

class OldClient {
 public:
  explicit OldClient(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvtimeo, 20000);
    socket_.connect(endpoint);
  }

  void send(std::uint64_t corr, protocol::Command type, flatbuffers::FlatBufferBuilder& fbb,
            flatbuffers::Offset<void> cmd) {
    fbb.Finish(protocol::CreateRequest(fbb, 1, corr, type, cmd), protocol::RequestIdentifier());
    socket_.send(zmq::buffer(fbb.GetBufferPointer(), fbb.GetSize()));
  }

  void publish(std::uint64_t corr, const std::vector<std::uint8_t>& event) {
    flatbuffers::FlatBufferBuilder fbb;
    auto vec = fbb.CreateVector(event);
    send(corr, protocol::Command::Publish, fbb, protocol::CreatePublish(fbb, vec).Union());
  }

  // The next message with this corr (0: a delivery), verified with the old schema.
  std::string next(std::uint64_t corr) {
    while (true) {
      zmq::message_t msg;
      REQUIRE_MESSAGE(socket_.recv(msg).has_value(), "no answer for corr ", corr);
      std::string body = msg.to_string();
      flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
      REQUIRE(v.VerifyBuffer<protocol::Response>(nullptr));
      if (flatbuffers::GetRoot<protocol::Response>(body.data())->corr() == corr) return body;
    }
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
};

const protocol::Response* response(const std::string& body) {
  return flatbuffers::GetRoot<protocol::Response>(body.data());
}

// Runs a command, returning its standard output.
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  CHECK(::pclose(p) == 0);
  return out;
}

}  // namespace

TEST_CASE("Upgrade " KOLABUS_OLD_RELEASE
          ": a client built from the old schemas publishes, consumes and acknowledges") {
  test::TempDir dir("old-client");
  test::BrokerProcess broker(dir.str("broker"));
  OldClient c(broker.endpoint());

  const std::array<std::uint8_t, 16> id{0x01, 0x9a, 0x00, 0x01, 0x02, 0x03, 0x74, 0x05,
                                        0x86, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d};
  const auto event = old_birth(id, now_ms() - 3 * 3600 * 1000);

  // Publish: stored, then a resend is a duplicate.
  for (int round = 0; round < 2; ++round) {
    c.publish(11 + round, event);
    const auto body = c.next(11 + round);
    const auto* ack = response(body)->reply_as_PublishAck();
    REQUIRE_MESSAGE(ack != nullptr, "reply type ", static_cast<int>(response(body)->reply_type()));
    CHECK(ack->sequence() == 1);
    CHECK(ack->duplicate() == (round == 1));
    CHECK(std::equal(id.begin(), id.end(), ack->id()->bytes()->begin()));
  }

  {  // Ping: the old Pong.
    flatbuffers::FlatBufferBuilder fbb;
    c.send(20, protocol::Command::Ping, fbb, protocol::CreatePing(fbb).Union());
    const auto body = c.next(20);
    REQUIRE(response(body)->reply_as_Pong() != nullptr);
    CHECK(response(body)->reply_as_Pong()->next_sequence() == 2);
  }

  {  // An old consumer of the kelurahan: Subscribe, a Delivery, Ack.
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<flatbuffers::String>> regions{fbb.CreateString("1271011001")};
    auto filter = protocol::CreateFilterDirect(fbb, nullptr, &regions);
    auto config = protocol::CreateConsumerConfigDirect(fbb, "old-kelurahan", filter,
                                                       protocol::StartPolicy::Earliest);
    c.send(30, protocol::Command::Subscribe, fbb,
           protocol::CreateSubscribe(fbb, config, 10).Union());
  }
  const auto subscribed = c.next(30);
  REQUIRE(response(subscribed)->reply_as_Subscribed() != nullptr);
  CHECK(response(subscribed)->reply_as_Subscribed()->info()->created());

  const auto delivery_body = c.next(0);
  const auto* d = response(delivery_body)->reply_as_Delivery();
  REQUIRE(d != nullptr);
  CHECK(d->sequence() == 1);
  CHECK(d->consumer()->str() == "old-kelurahan");
  flatbuffers::Verifier v(d->record()->data(), d->record()->size());
  REQUIRE(v.VerifyBuffer<kolabus::log::LogRecord>(nullptr));
  const auto* rec = flatbuffers::GetRoot<kolabus::log::LogRecord>(d->record()->data());
  CHECK(rec->sequence() == 1);
  CHECK(rec->source()->str() == "dev");
  // The event as the old client built it, byte for byte (the dev agency sees every field).
  REQUIRE(rec->event() != nullptr);
  CHECK(std::vector<std::uint8_t>(rec->event()->begin(), rec->event()->end()) == event);

  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<std::uint64_t> seqs{1};
    c.send(31, protocol::Command::Ack, fbb,
           protocol::CreateAckDirect(fbb, "old-kelurahan", &seqs).Union());
  }
  // Acks are answered only when refused: the next answer is the list, with the ack in it.
  bool acked = test::wait_until([&] {
    flatbuffers::FlatBufferBuilder fbb;
    c.send(40, protocol::Command::ListConsumers, fbb, protocol::CreateListConsumers(fbb).Union());
    const auto body = c.next(40);
    const auto* list = response(body)->reply_as_ConsumerList();
    REQUIRE(list != nullptr);
    REQUIRE(list->consumers()->size() == 1);
    return list->consumers()->Get(0)->ack_floor() == 1;
  });
  CHECK(acked);

  // A consumer of this build reads the old client's event.
  const std::string out = run(std::string(KOLABUS_CLI_BIN) + " tail -b " + broker.endpoint() +
                              " --consumer new-tail --start earliest --count 1 --timeout 20" +
                              " --json --inbox " + dir.str("inbox"));
  CHECK(out.find("\"id\":\"019a0001-0203-7405-8607-08090a0b0c0d\"") != std::string::npos);
  CHECK(out.find("\"child_name\":\"Putri Siregar\"") != std::string::npos);
}
