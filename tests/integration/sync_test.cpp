// The pipelined group commit's failure, end to end: a broker::Server in this process,
// over a memory log whose syncs fail on demand (MemoryEventLog::fail_syncs), and a
// client speaking the wire protocol on loopback. An event written but not synced when
// its sync fails is NACKed retryable, saying it may be stored; the broker stays up;
// once syncs work again the store's recovery makes it durable, and a resend is
// answered with its sequence as a duplicate, never stored twice.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>

#include <broker/consumers.h>
#include <broker/core.h>
#include <broker/server.h>
#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <storage/memory_consumer_store.h>
#include <storage/memory_event_log.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

// A development-mode broker on a free loopback port, served on a thread of its own.
struct InProcessBroker {
  storage::MemoryEventLog log;
  storage::MemoryConsumerStore store;
  SystemClock clock;
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  broker::Consumers consumers{log, store, schemas::RegionTable::embedded(), clock};
  std::unique_ptr<broker::Server> server;
  std::string endpoint;
  std::atomic<int> resumes{0};
  std::thread thread;

  InProcessBroker() {
    REQUIRE(consumers.load().has_value());
    broker::ServerOptions o;
    o.dev = true;
    o.endpoint = "tcp://127.0.0.1:*";
    server = std::make_unique<broker::Server>(core, consumers, o);
    // As the broker's main: the store's recovery, here always able to resume.
    server->set_storage_recovery([this]() -> Status {
      resumes.fetch_add(1);
      return {};
    });
    auto bound = server->bind();
    REQUIRE_MESSAGE(bound.has_value(), bound.error().to_string());
    endpoint = *bound;
    thread = std::thread([this] { server->run(); });
  }
  ~InProcessBroker() {
    server->request_stop();
    thread.join();
  }
};

std::vector<std::uint8_t> publish_frame(std::uint64_t corr, const std::vector<std::uint8_t>& ev) {
  flatbuffers::FlatBufferBuilder fbb(ev.size() + 128);
  auto body = protocol::CreatePublish(fbb, fbb.CreateVector(ev));
  fbb.Finish(protocol::CreateRequest(fbb, 1, corr, protocol::Command::Publish, body.Union()),
             protocol::RequestIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

struct Reply {
  bool acked = false;
  std::uint64_t sequence = 0;
  bool duplicate = false;
  bool retryable = false;
  std::string message;
};

// Sends one Publish and waits for its Response.
Reply publish(zmq::socket_t& s, std::uint64_t corr, const std::vector<std::uint8_t>& ev) {
  const auto frame = publish_frame(corr, ev);
  s.send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::poll(&item, 1, 100ms);
    zmq::message_t m;
    if (!(item.revents & ZMQ_POLLIN) || !s.recv(m, zmq::recv_flags::dontwait)) continue;
    // A frame's bytes sit at any address: read them from an aligned copy.
    AlignedBytes copy;
    const auto* resp = flatbuffers::GetRoot<protocol::Response>(
        aligned(std::string_view(static_cast<const char*>(m.data()), m.size()), copy).data());
    if (resp->corr() != corr) continue;
    Reply r;
    if (const auto* ack = resp->reply_as_PublishAck()) {
      r.acked = true;
      r.sequence = ack->sequence();
      r.duplicate = ack->duplicate();
    } else if (const auto* nack = resp->reply_as_Nack()) {
      r.retryable = nack->retryable();
      r.message = nack->message() ? nack->message()->str() : "";
    }
    return r;
  }
  FAIL("no reply to corr " << corr << " within 5 s");
  return {};
}

}  // namespace

TEST_CASE("Pipelined commit: a failed sync NACKs what waited for it, and a resend is stored once") {
  InProcessBroker b;
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(b.endpoint);

  tools::EventGenerator gen(schemas::RegionTable::embedded(), {3, "1271", SystemClock().now_ms()});
  const auto e1 = gen.next();
  const auto e2 = gen.next();

  // The disk fails the sync of e1's write: e1 is NACKed, retryable, "may be stored".
  b.log.fail_syncs(true);
  const auto failed = publish(s, 1, e1);
  CHECK_FALSE(failed.acked);
  CHECK(failed.retryable);
  CHECK_MESSAGE(failed.message.find("may or may not be stored") != std::string::npos,
                failed.message);
  // Still failing: a resend is NACKed the same way (the broker is down for writes and
  // keeps trying to resume), and nothing is readable.
  std::this_thread::sleep_for(300ms);
  const auto again = publish(s, 2, e1);
  CHECK_FALSE(again.acked);
  CHECK(again.retryable);
  CHECK(b.resumes.load() > 0);
  CHECK(b.log.next_sequence() == Sequence{1});

  // Syncs work again: a resume and its sync make e1 durable; the resend gets its
  // sequence as a duplicate, and e2 the next one.
  b.log.fail_syncs(false);
  Reply resent;
  for (std::uint64_t corr = 3; corr < 40 && !resent.acked; ++corr) {
    resent = publish(s, corr, e1);
    if (!resent.acked) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(resent.acked);
  CHECK(resent.sequence == 1);
  CHECK(resent.duplicate);
  const auto next = publish(s, 100, e2);
  REQUIRE_MESSAGE(next.acked, next.message);
  CHECK(next.sequence == 2);
  CHECK_FALSE(next.duplicate);
  CHECK(b.log.next_sequence() == Sequence{3});
  std::size_t stored = 0;
  REQUIRE(b.log
              .scan(Sequence{1}, 100,
                    [&](Sequence, std::string_view) {
                      ++stored;
                      return true;
                    })
              .has_value());
  CHECK(stored == 2);
}
