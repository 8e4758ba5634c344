// client::AdminClient against a scripted fake broker: a ROUTER socket on loopback, in
// a thread, that hands each Request to the test's responder and sends back whatever
// frames it returns (none, to play a broker that does not answer).
#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>

#include <client/admin.h>
#include <common/aligned_bytes.h>
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes finish(flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

template <typename T>
Bytes response(std::uint64_t corr, protocol::Reply type,
               const std::function<flatbuffers::Offset<T>(flatbuffers::FlatBufferBuilder&)>& body) {
  flatbuffers::FlatBufferBuilder fbb;
  auto b = body(fbb);
  fbb.Finish(protocol::CreateResponse(fbb, 1, corr, type, b.Union()));
  return finish(fbb);
}

Bytes nack(std::uint64_t corr, protocol::ErrorCode code, const char* message,
           bool retryable = false) {
  return response<protocol::Nack>(corr, protocol::Reply::Nack, [&](auto& fbb) {
    return protocol::CreateNackDirect(fbb, nullptr, code, "consumer", message, retryable);
  });
}

Bytes done(std::uint64_t corr, std::uint64_t count) {
  return response<protocol::Done>(corr, protocol::Reply::Done,
                                  [&](auto& fbb) { return protocol::CreateDone(fbb, count); });
}

Bytes record(std::uint64_t seq) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(log::CreateLogRecordDirect(fbb, seq, 1'700'000'000'000, "disdukcapil-medan"),
             log::LogRecordIdentifier());
  return finish(fbb);
}

// Answers each Request with responder(request) — zero or more frames, in order.
class FakeBroker {
 public:
  using Responder = std::function<std::vector<Bytes>(const protocol::Request&)>;

  explicit FakeBroker(Responder responder) : responder_(std::move(responder)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("tcp://127.0.0.1:*");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeBroker() {
    stop_.store(true);
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int requests() const { return requests_.load(); }

 private:
  void run() {
    while (!stop_.load()) {
      zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, 20ms);
      if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
      zmq::message_t peer, body;
      (void)socket_.recv(peer);
      (void)socket_.recv(body);
      const AlignedBytes request(body.data(), body.size());  // a frame sits at any address
      flatbuffers::Verifier verifier(request.data(), request.size());
      // CHECK, not REQUIRE: an exception would end this thread, not the test.
      const bool ok = verifier.VerifyBuffer<protocol::Request>(nullptr);
      CHECK(ok);
      if (!ok) continue;
      const auto* req = flatbuffers::GetRoot<protocol::Request>(request.data());
      for (const auto& frame : responder_(*req)) {
        socket_.send(zmq::buffer(peer.data(), peer.size()), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(frame), zmq::send_flags::none);
      }
      requests_++;
    }
  }

  Responder responder_;
  zmq::context_t context_{1};
  zmq::socket_t socket_{context_, zmq::socket_type::router};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

std::unique_ptr<client::AdminClient> connect(const FakeBroker& fake,
                                             std::chrono::milliseconds timeout = 5s) {
  auto admin = client::AdminClient::connect(fake.endpoint(), timeout);
  REQUIRE(admin.has_value());
  return std::move(*admin);
}

}  // namespace

TEST_CASE("AdminClient: list_consumers copies every ConsumerInfo field") {
  FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
    CHECK(req.command_type() == protocol::Command::ListConsumers);
    return {
        response<protocol::ConsumerList>(req.corr(), protocol::Reply::ConsumerList, [](auto& fbb) {
          const std::vector<std::uint8_t> kinds{1, 3};
          const std::vector<std::string> regions{"1271"};
          auto filter = protocol::CreateFilter(fbb, fbb.CreateVector(kinds),
                                               fbb.CreateVectorOfStrings(regions));
          auto cfg = protocol::CreateConsumerConfigDirect(fbb, "dukcapil-sync", filter,
                                                          protocol::StartPolicy::AtTime, 7,
                                                          1'700'000'000'000, 15000, 3);
          auto info = protocol::CreateConsumerInfoDirect(fbb, "dukcapil-sync", "medan", cfg, 40, 45,
                                                         5, 12, 9000, 2, 4, false);
          std::vector<flatbuffers::Offset<protocol::ConsumerInfo>> all{info};
          return protocol::CreateConsumerListDirect(fbb, &all);
        })};
  });
  auto admin = connect(fake);
  auto list = admin->list_consumers();
  REQUIRE(list.has_value());
  REQUIRE(list->size() == 1);
  const auto& c = list->front();
  CHECK(c.name == "dukcapil-sync");
  CHECK(c.owner == "medan");
  CHECK(c.filter.kinds == std::vector<std::uint8_t>{1, 3});
  CHECK(c.filter.regions == std::vector<std::string>{"1271"});
  CHECK(c.start == client::SeekPolicy::kAtTime);
  CHECK(c.start_sequence == 7);
  CHECK(c.start_time == 1'700'000'000'000);
  CHECK(c.ack_wait_ms == 15000);
  CHECK(c.max_deliver == 3);
  CHECK(c.ack_floor == 40);
  CHECK(c.next_sequence == 45);
  CHECK(c.pending == 5);
  CHECK(c.lag == 12);
  CHECK(c.oldest_unacked_age_ms == 9000);
  CHECK(c.clients == 2);
  CHECK(c.dead_letters == 4);
}

TEST_CASE("AdminClient: a Nack becomes an error naming its code") {
  SUBCASE("UnknownConsumer is kNotFound") {
    FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
      const auto* del = req.command_as_DeleteConsumer();
      CHECK((del != nullptr && del->consumer()->str() == "ghost"));
      return {nack(req.corr(), protocol::ErrorCode::UnknownConsumer, "no consumer ghost")};
    });
    auto st = connect(fake)->delete_consumer("ghost");
    REQUIRE(!st.has_value());
    CHECK(st.error().code == Errc::kNotFound);
    CHECK(st.error().message.rfind("UnknownConsumer: no consumer ghost", 0) == 0);
  }
  SUBCASE("any other refusal is kInvalidArgument") {
    FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
      return {nack(req.corr(), protocol::ErrorCode::InvalidRequest, "sequence 0")};
    });
    auto r = connect(fake)->seek("c", client::SeekPolicy::kAtSequence, 0, 0);
    REQUIRE(!r.has_value());
    CHECK(r.error().code == Errc::kInvalidArgument);
    CHECK(r.error().message == "InvalidRequest: sequence 0 (field consumer)");
  }
  SUBCASE("a retryable refusal is kUnavailable") {
    FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
      return {nack(req.corr(), protocol::ErrorCode::StorageUnavailable, "disk full", true)};
    });
    auto r = connect(fake)->dlq_drop("c", {});
    REQUIRE(!r.has_value());
    CHECK(r.error().code == Errc::kUnavailable);
  }
}

TEST_CASE("AdminClient: replies to other requests and unasked messages are skipped") {
  FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
    return {done(req.corr() + 1000, 99),  // a late answer to something else
            response<protocol::Delivery>(0, protocol::Reply::Delivery,
                                         [](auto& fbb) { return protocol::CreateDelivery(fbb); }),
            Bytes{1, 2, 3},  // not a Response at all
            done(req.corr(), 2)};
  });
  auto admin = connect(fake);
  const std::uint64_t seqs[] = {10, 11};
  auto n = admin->dlq_redrive("c", seqs);
  REQUIRE(n.has_value());
  CHECK(*n == 2);
  // The next call still pairs with its own answer.
  auto m = admin->dlq_drop("c", seqs);
  REQUIRE(m.has_value());
  CHECK(*m == 2);
}

TEST_CASE("AdminClient: no answer in time is kUnavailable naming the broker") {
  FakeBroker fake([](const protocol::Request&) -> std::vector<Bytes> { return {}; });
  auto admin = connect(fake, 150ms);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = admin->list_consumers();
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE(!r.has_value());
  CHECK(r.error().code == Errc::kUnavailable);
  CHECK(r.error().message == "broker at " + fake.endpoint() + " did not answer within 150 ms");
  CHECK(waited >= 150ms);
  CHECK(waited < 3s);
}

TEST_CASE("AdminClient: read_range sends the page request and returns the records") {
  FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
    const auto* rr = req.command_as_ReadRange();
    CHECK(rr != nullptr);
    if (rr == nullptr || rr->filter() == nullptr) return {};
    CHECK(rr->filter()->kinds()->size() == 1);
    CHECK(rr->filter()->kinds()->Get(0) == 2);
    CHECK(rr->filter()->regions()->Get(0)->str() == "12");
    CHECK(rr->from_sequence() == 5);
    CHECK(rr->from_time() == 0);
    CHECK(rr->to_sequence() == 9);
    CHECK(rr->max_events() == 2);
    return {response<protocol::RangePage>(req.corr(), protocol::Reply::RangePage, [](auto& fbb) {
      std::vector<flatbuffers::Offset<protocol::Record>> recs;
      for (std::uint64_t s : {5, 7}) {
        const Bytes bytes = record(s);
        recs.push_back(protocol::CreateRecordDirect(fbb, &bytes));
      }
      return protocol::CreateRangePageDirect(fbb, &recs, 8, false);
    })};
  });
  auto page = connect(fake)->read_range({{2}, {"12"}}, 5, 0, 9, 2);
  REQUIRE(page.has_value());
  CHECK(page->next == 8);
  CHECK(!page->done);
  REQUIRE(page->records.size() == 2);
  const auto* rec = flatbuffers::GetRoot<log::LogRecord>(page->records[1].data());
  CHECK(rec->sequence() == 7);
  CHECK(rec->source()->str() == "disdukcapil-medan");
}

TEST_CASE("AdminClient: dlq_list copies the dead letters") {
  FakeBroker fake([](const protocol::Request& req) -> std::vector<Bytes> {
    const auto* l = req.command_as_DlqList();
    CHECK(l != nullptr);
    if (l == nullptr) return {};
    CHECK(l->consumer()->str() == "c");
    CHECK(l->from_sequence() == 3);
    CHECK(l->max() == 1);
    return {response<protocol::DeadLetterList>(
        req.corr(), protocol::Reply::DeadLetterList, [](auto& fbb) {
          const Bytes rec = record(3);
          std::vector<flatbuffers::Offset<protocol::DeadLetter>> items{
              protocol::CreateDeadLetterDirect(fbb, "c", 3, 5, "handler rejected: bad NIK",
                                               1'700'000'000'123, &rec)};
          return protocol::CreateDeadLetterListDirect(fbb, &items);
        })};
  });
  auto items = connect(fake)->dlq_list("c", 3, 1);
  REQUIRE(items.has_value());
  REQUIRE(items->size() == 1);
  const auto& d = items->front();
  CHECK(d.consumer == "c");
  CHECK(d.sequence == 3);
  CHECK(d.attempts == 5);
  CHECK(d.reason == "handler rejected: bad NIK");
  CHECK(d.dead_at == 1'700'000'000'123);
  CHECK(flatbuffers::GetRoot<log::LogRecord>(d.record.data())->sequence() == 3);
}
