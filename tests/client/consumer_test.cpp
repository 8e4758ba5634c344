// client::Consumer against a small fake broker: a ROUTER socket on loopback, in a
// thread, that answers Subscribe, Ping and Unsubscribe, pushes the deliveries a test
// queues, and records every request it receives. It keeps unacknowledged deliveries
// and sends them again (attempt + 1) to a client that subscribes anew, like the real
// broker does.
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>

#include "temp_dir.h"
#include "test_events.h"
#include <client/consumer.h>
#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

using Bytes = std::vector<std::uint8_t>;

// Checks `ready` until it holds or the timeout passes (the fake broker runs on its
// own thread).
template <typename F>
bool wait_until(F ready, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// One request as the fake broker received it.
struct Seen {
  std::string peer;  // the ROUTER's routing id of the client socket
  std::uint64_t corr = 0;
  protocol::Command type = protocol::Command::NONE;
  std::string consumer;  // Subscribe: the config's name; Ack, Nak, Reject, Unsubscribe
  std::vector<std::uint64_t> sequences;  // Ack
  std::uint64_t sequence = 0;            // Nak, Reject
  std::uint32_t delay_ms = 0;            // Nak
  std::string reason;                    // Reject
  // Subscribe
  std::uint32_t window = 0;
  std::uint32_t batch = 0;
  std::vector<std::uint8_t> kinds;
  std::vector<std::string> regions;
  protocol::StartPolicy start = protocol::StartPolicy::Earliest;
  std::uint64_t start_sequence = 0;
  std::int64_t start_time = 0;
  std::uint32_t ack_wait_ms = 0;
  std::uint32_t max_deliver = 0;
};

Bytes finish(flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

Bytes make_record(std::uint64_t seq, const Bytes& event) {
  flatbuffers::FlatBufferBuilder fbb(event.size() + 128);
  fbb.ForceVectorAlignment(event.size(), 1, 8);
  auto ev = fbb.CreateVector(event);
  fbb.Finish(log::CreateLogRecord(fbb, seq, 1'700'000'000'000 + static_cast<std::int64_t>(seq),
                                  fbb.CreateString("disdukcapil"), ev),
             log::LogRecordIdentifier());
  return finish(fbb);
}

Bytes make_delivery(const std::string& consumer, std::uint64_t seq, std::uint32_t attempt,
                    const Bytes& record) {
  flatbuffers::FlatBufferBuilder fbb(record.size() + 128);
  fbb.ForceVectorAlignment(record.size(), 1, 8);
  auto rec = fbb.CreateVector(record);
  auto d = protocol::CreateDelivery(fbb, fbb.CreateString(consumer), seq, attempt, rec);
  fbb.Finish(protocol::CreateResponse(fbb, 1, 0, protocol::Reply::Delivery, d.Union()));
  return finish(fbb);
}

// A DeliveryBatch as the broker builds it: the consumer named once, inner Deliveries
// without it. Each item: (sequence, attempt, record).
Bytes make_batch(const std::string& consumer,
                 const std::vector<std::tuple<std::uint64_t, std::uint32_t, Bytes>>& items) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  std::vector<flatbuffers::Offset<protocol::Delivery>> ds;
  for (const auto& [seq, attempt, record] : items) {
    fbb.ForceVectorAlignment(record.size(), 1, 8);
    auto rec = fbb.CreateVector(record);
    ds.push_back(protocol::CreateDelivery(fbb, 0, seq, attempt, rec));
  }
  auto list = fbb.CreateVector(ds);
  auto b = protocol::CreateDeliveryBatch(fbb, fbb.CreateString(consumer), list);
  fbb.Finish(protocol::CreateResponse(fbb, 1, 0, protocol::Reply::DeliveryBatch, b.Union()));
  return finish(fbb);
}

class FakeBroker {
 public:
  std::atomic<bool> silent{false};           // receives nothing, answers nothing, sends nothing
  std::atomic<bool> ignore_acks{false};      // Acks recorded but the events stay unacked
  std::atomic<int> acks_not_subscribed{0};   // answer this many Acks with NotSubscribed
  std::atomic<bool> drop_subscribes{false};  // Subscribes go unanswered; Pings do not

  explicit FakeBroker(std::string endpoint = "tcp://127.0.0.1:*") { start(std::move(endpoint)); }
  ~FakeBroker() { stop(); }

  const std::string& endpoint() const { return endpoint_; }

  // Closes the ROUTER (the client sees its connection drop) and binds a new one on
  // the same port, forgetting who was subscribed.
  void restart() {
    stop();
    {
      std::lock_guard lock(mu_);
      subscriber_.clear();
    }
    start(endpoint_);
  }

  // Queues a delivery of `event` as `seq`; it is pushed once a client is subscribed.
  void deliver(std::uint64_t seq, const Bytes& event, std::uint32_t attempt = 1) {
    std::lock_guard lock(mu_);
    queue_.push_back(Pending{seq, attempt, make_record(seq, event), {}});
  }
  // Queues a frame exactly as given.
  void deliver_raw(std::uint64_t seq, Bytes frame) {
    std::lock_guard lock(mu_);
    queue_.push_back(Pending{seq, 1, {}, std::move(frame)});
  }

  void refuse_subscribe(protocol::ErrorCode code, std::string message) {
    std::lock_guard lock(mu_);
    refuse_code_ = code;
    refuse_message_ = std::move(message);
  }

  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  std::vector<Seen> seen(protocol::Command type) const {
    std::vector<Seen> out;
    for (auto& s : seen()) {
      if (s.type == type) out.push_back(s);
    }
    return out;
  }
  std::size_t count(protocol::Command type) const { return seen(type).size(); }
  // Every sequence acknowledged so far.
  std::multiset<std::uint64_t> acked() const {
    std::multiset<std::uint64_t> out;
    for (auto& s : seen(protocol::Command::Ack)) out.insert(s.sequences.begin(), s.sequences.end());
    return out;
  }

 private:
  struct Pending {
    std::uint64_t seq;
    std::uint32_t attempt;
    Bytes record;  // empty: `raw` is the frame
    Bytes raw;
  };

  void start(std::string endpoint) {
    context_ = std::make_unique<zmq::context_t>(1);
    socket_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::router);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->bind(endpoint);
    endpoint_ = socket_->get(zmq::sockopt::last_endpoint);
    stop_ = false;
    thread_ = std::thread([this] { run(); });
  }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    socket_.reset();
    context_.reset();  // blocks until the listening socket is really closed
  }

  void send_to(const std::string& peer, const Bytes& body) {
    socket_->send(zmq::buffer(peer), zmq::send_flags::sndmore);
    socket_->send(zmq::const_buffer(body.data(), body.size()), zmq::send_flags::dontwait);
  }

  void reply(const std::string& peer, std::uint64_t corr, protocol::Reply type,
             flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<void> body) {
    fbb.Finish(protocol::CreateResponse(fbb, 1, corr, type, body));
    send_to(peer, finish(fbb));
  }

  void handle(const std::string& peer, const zmq::message_t& body) {
    const AlignedBytes frame(body.data(), body.size());  // a frame sits at any address
    const auto* data = frame.data();
    flatbuffers::Verifier v(data, body.size());
    if (!v.VerifyBuffer<protocol::Request>(nullptr)) throw std::runtime_error("bad request");
    const auto* req = flatbuffers::GetRoot<protocol::Request>(data);
    Seen s;
    s.peer = peer;
    s.corr = req->corr();
    s.type = req->command_type();
    flatbuffers::FlatBufferBuilder fbb;
    std::lock_guard lock(mu_);
    switch (req->command_type()) {
      case protocol::Command::Subscribe: {
        if (drop_subscribes) break;
        const auto* sub = req->command_as_Subscribe();
        const auto* cfg = sub->config();
        s.consumer = cfg->name()->str();
        s.window = sub->window();
        s.batch = sub->batch();
        if (cfg->filter() != nullptr) {
          if (cfg->filter()->kinds() != nullptr) {
            s.kinds.assign(cfg->filter()->kinds()->begin(), cfg->filter()->kinds()->end());
          }
          if (cfg->filter()->regions() != nullptr) {
            for (const auto* r : *cfg->filter()->regions()) s.regions.push_back(r->str());
          }
        }
        s.start = cfg->start();
        s.start_sequence = cfg->start_sequence();
        s.start_time = cfg->start_time();
        s.ack_wait_ms = cfg->ack_wait_ms();
        s.max_deliver = cfg->max_deliver();
        if (refuse_code_) {
          auto nack =
              protocol::CreateNack(fbb, nullptr, *refuse_code_, fbb.CreateString("config.filter"),
                                   fbb.CreateString(refuse_message_));
          reply(peer, s.corr, protocol::Reply::Nack, fbb, nack.Union());
          break;
        }
        auto info = protocol::CreateConsumerInfo(fbb, fbb.CreateString(s.consumer),
                                                 fbb.CreateString("dinkes"));
        reply(peer, s.corr, protocol::Reply::Subscribed, fbb,
              protocol::CreateSubscribed(fbb, info).Union());
        if (peer != subscriber_) {
          // A new client of the consumer: what the old one left unacked comes again.
          for (auto it = unacked_.rbegin(); it != unacked_.rend(); ++it) {
            Pending p = it->second;
            p.attempt++;
            queue_.push_front(std::move(p));
          }
          unacked_.clear();
          subscriber_ = peer;
          consumer_ = s.consumer;
        }
        break;
      }
      case protocol::Command::Ping:
        reply(peer, s.corr, protocol::Reply::Pong, fbb,
              protocol::CreatePongDirect(fbb, "fake", 1).Union());
        break;
      case protocol::Command::Ack: {
        const auto* ack = req->command_as_Ack();
        s.consumer = ack->consumer()->str();
        s.sequences.assign(ack->sequences()->begin(), ack->sequences()->end());
        if (acks_not_subscribed > 0) {
          acks_not_subscribed--;
          auto nack = protocol::CreateNack(fbb, nullptr, protocol::ErrorCode::NotSubscribed, 0,
                                           fbb.CreateString("not attached"));
          reply(peer, s.corr, protocol::Reply::Nack, fbb, nack.Union());
        } else if (!ignore_acks) {
          for (auto q : s.sequences) unacked_.erase(q);
        }
        break;
      }
      case protocol::Command::Nak: {
        const auto* nak = req->command_as_Nak();
        s.consumer = nak->consumer()->str();
        s.sequence = nak->sequence();
        s.delay_ms = nak->delay_ms();
        unacked_.erase(s.sequence);
        break;
      }
      case protocol::Command::Reject: {
        const auto* rej = req->command_as_Reject();
        s.consumer = rej->consumer()->str();
        s.sequence = rej->sequence();
        s.reason = rej->reason() != nullptr ? rej->reason()->str() : "";
        unacked_.erase(s.sequence);
        break;
      }
      case protocol::Command::Unsubscribe:
        s.consumer = req->command_as_Unsubscribe()->consumer()->str();
        reply(peer, s.corr, protocol::Reply::Done, fbb,
              protocol::CreateDone(fbb, std::uint64_t{0}).Union());
        if (peer == subscriber_) subscriber_.clear();
        break;
      default:
        break;
    }
    seen_.push_back(std::move(s));
  }

  void push_queued() {
    std::lock_guard lock(mu_);
    if (subscriber_.empty()) return;
    while (!queue_.empty()) {
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      if (p.record.empty()) {
        send_to(subscriber_, p.raw);
        continue;
      }
      send_to(subscriber_, make_delivery(consumer_, p.seq, p.attempt, p.record));
      unacked_[p.seq] = std::move(p);
    }
  }

  // The broker's event loop (a poll with a timeout, so that stop() is noticed).
  void run() {
    while (!stop_) {
      zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 5ms);
      zmq::message_t peer, body;
      while (socket_->recv(peer, zmq::recv_flags::dontwait)) {
        if (!socket_->recv(body)) break;
        if (silent) continue;
        handle(peer.to_string(), body);
      }
      if (!silent) push_queued();
    }
  }

  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  mutable std::mutex mu_;
  std::vector<Seen> seen_;
  std::deque<Pending> queue_;
  std::map<std::uint64_t, Pending> unacked_;
  std::string subscriber_;  // routing id of the subscribed client; empty: none
  std::string consumer_;
  std::optional<protocol::ErrorCode> refuse_code_;
  std::string refuse_message_;
};

std::vector<Bytes> make_events(std::size_t n, std::uint64_t seed = 7) {
  tools::EventGenerator gen(schemas::RegionTable::embedded(),
                            {seed, "1271", SystemClock().now_ms()});
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(gen.next());
  return out;
}

client::ConsumerOptions options_for(const FakeBroker& fb, const test::TempDir& dir,
                                    std::chrono::milliseconds heartbeat = 500ms) {
  client::ConsumerOptions o;
  o.endpoint = fb.endpoint();
  o.inbox_dir = dir.str("inbox");
  o.name = "dinkes-births";
  o.heartbeat = heartbeat;
  o.backoff_initial = 10ms;
  o.backoff_max = 100ms;
  return o;
}

std::unique_ptr<client::Consumer> open_consumer(client::ConsumerOptions o) {
  auto c = client::Consumer::open(std::move(o));
  REQUIRE(c.has_value());
  return std::move(*c);
}

// Calls poll() in short turns until `done()` holds; returns the deliveries handled.
template <typename F>
std::size_t poll_until(client::Consumer& c, const client::Handler& h, F done,
                       std::chrono::milliseconds timeout = 10s) {
  std::size_t total = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                    "still waiting after " << timeout.count() << " ms; reconnects "
                                           << c.stats().reconnects << ", subscribed "
                                           << c.stats().subscribed << ", last error '"
                                           << c.stats().last_error << "'");
    auto r = c.poll(h, 20ms);
    REQUIRE(r.has_value());
    total += *r;
  }
  return total;
}

// A handler that records what it saw and stores each event id in the inbox txn.
struct Recorder {
  struct Call {
    std::uint64_t sequence;
    std::uint32_t attempt;
    EventId id;
    std::string source;
    TimeMs received_at;
    Bytes event;
  };
  std::vector<Call> calls;
  client::HandlerResult result;

  client::Handler handler() {
    return [this](const client::Received& r, storage::Inbox::Txn& txn) {
      REQUIRE(r.event_root != nullptr);
      calls.push_back({r.sequence.value, r.attempt, r.id, std::string(r.source), r.received_at,
                       Bytes(r.event.begin(), r.event.end())});
      txn.put("seen/" + r.id.to_string(), std::to_string(r.sequence.value));
      return result;
    };
  }
};

}  // namespace

TEST_CASE("Consumer: open refuses options without inbox_dir or name") {
  test::TempDir dir("consumer");
  client::ConsumerOptions o;
  o.name = "x";
  auto a = client::Consumer::open(o);
  REQUIRE_FALSE(a.has_value());
  CHECK(a.error().code == Errc::kInvalidArgument);
  o.inbox_dir = dir.str("inbox");
  o.name.clear();
  auto b = client::Consumer::open(o);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.error().code == Errc::kInvalidArgument);
  o.name = "x";
  o.endpoint = "not an endpoint";
  auto c = client::Consumer::open(o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().code == Errc::kInvalidArgument);
}

TEST_CASE("Consumer: subscribes with the configured name, filter, start and window") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto o = options_for(fb, dir);
  o.kinds = {events::Payload::Birth, events::Payload::Move};
  o.regions = {"1271", "127101"};
  o.start = protocol::StartPolicy::AtSequence;
  o.start_sequence = 42;
  o.ack_wait_ms = 1234;
  o.max_deliver = 7;
  o.window = 9;
  auto c = open_consumer(o);
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  const auto subs = fb.seen(protocol::Command::Subscribe);
  REQUIRE(subs.size() == 1);
  CHECK(subs[0].consumer == "dinkes-births");
  CHECK(subs[0].kinds == std::vector<std::uint8_t>{1, 3});
  CHECK(subs[0].regions == std::vector<std::string>{"1271", "127101"});
  CHECK(subs[0].start == protocol::StartPolicy::AtSequence);
  CHECK(subs[0].start_sequence == 42);
  CHECK(subs[0].ack_wait_ms == 1234);
  CHECK(subs[0].max_deliver == 7);
  CHECK(subs[0].window == 9);
}

TEST_CASE("Consumer: hands each delivery to the handler once, commits, then acks") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  const auto evs = make_events(3);
  for (std::uint64_t i = 0; i < 3; ++i) fb.deliver(i + 1, evs[i]);

  Recorder rec;
  const auto n = poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 3; });
  CHECK(n == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(rec.calls[i].sequence == i + 1);
    CHECK(rec.calls[i].attempt == 1);
    CHECK(rec.calls[i].id == test::id_of(evs[i]));
    CHECK(rec.calls[i].source == "disdukcapil");
    CHECK(rec.calls[i].received_at == 1'700'000'000'000 + static_cast<TimeMs>(i + 1));
    CHECK(rec.calls[i].event == evs[i]);
    // The handler's write and the processed mark are in the inbox.
    auto v = c->inbox().get("seen/" + test::id_of(evs[i]).to_string());
    REQUIRE(v.has_value());
    REQUIRE(v->has_value());
    CHECK(**v == std::to_string(i + 1));
    auto p = c->inbox().processed(test::id_of(evs[i]));
    REQUIRE(p.has_value());
    CHECK(*p == std::optional<std::uint64_t>(i + 1));
  }
  REQUIRE(wait_until([&] { return fb.acked().size() == 3; }, 5s));
  CHECK(fb.acked() == std::multiset<std::uint64_t>{1, 2, 3});
  for (const auto& a : fb.seen(protocol::Command::Ack)) CHECK(a.consumer == "dinkes-births");
  const auto s = c->stats();
  CHECK(s.delivered == 3);
  CHECK(s.handled == 3);
  CHECK(s.acked == 3);
  CHECK(s.duplicates_skipped == 0);
  CHECK(s.naked == 0);
  CHECK(s.rejected == 0);
}

TEST_CASE("Consumer: poll returns after max_events deliveries") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  const auto evs = make_events(5);
  for (std::uint64_t i = 0; i < 5; ++i) fb.deliver(i + 1, evs[i]);
  // Five are on their way; max_events = 2 stops after two, long before the timeout.
  const auto start = std::chrono::steady_clock::now();
  auto got = c->poll(rec.handler(), 30s, 2);
  REQUIRE(got.has_value());
  CHECK(*got == 2);
  CHECK(std::chrono::steady_clock::now() - start < 20s);
  CHECK(rec.calls.size() == 2);
  auto rest = poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 5; });
  CHECK(rest == 3);
}

TEST_CASE("Consumer: skips an event id the inbox already processed, and acks it") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  const auto evs = make_events(2);
  Recorder rec;

  SUBCASE("redelivered on the same connection") {
    auto c = open_consumer(options_for(fb, dir));
    fb.deliver(1, evs[0]);
    poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 1; });
    fb.deliver(1, evs[0], 2);  // the broker did not see the Ack in time
    fb.deliver(2, evs[1]);
    poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 2; });
    CHECK(rec.calls[1].sequence == 2);
    CHECK(c->stats().duplicates_skipped == 1);
    CHECK(c->stats().delivered == 3);
    REQUIRE(wait_until([&] { return fb.acked().size() == 3; }, 5s));
    CHECK(fb.acked() == std::multiset<std::uint64_t>{1, 1, 2});
  }

  SUBCASE("after the client restarts with the same inbox") {
    {
      auto c = open_consumer(options_for(fb, dir));
      fb.deliver(1, evs[0]);
      poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 1; });
      c->close();
    }
    auto c = open_consumer(options_for(fb, dir));
    fb.deliver(1, evs[0], 2);
    poll_until(*c, rec.handler(), [&] { return c->stats().duplicates_skipped == 1; });
    CHECK(rec.calls.size() == 1);
    CHECK(c->stats().handled == 0);
    REQUIRE(wait_until([&] { return fb.acked().count(1) == 2; }, 5s));
  }
}

TEST_CASE("Consumer: sends the handler's Nak or Reject and commits nothing") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  const auto evs = make_events(1);
  const EventId id = test::id_of(evs[0]);
  fb.deliver(5, evs[0]);
  bool called = false;
  client::Handler handler;

  SUBCASE("Nak with a delay") {
    handler = [&](const client::Received&, storage::Inbox::Txn& txn) {
      called = true;
      txn.put("k", "v");
      return client::HandlerResult{client::Verdict::kNak, "", 2500};
    };
    poll_until(*c, handler, [&] { return called; });
    REQUIRE(wait_until([&] { return fb.count(protocol::Command::Nak) == 1; }, 5s));
    const auto nak = fb.seen(protocol::Command::Nak)[0];
    CHECK(nak.consumer == "dinkes-births");
    CHECK(nak.sequence == 5);
    CHECK(nak.delay_ms == 2500);
    CHECK(c->stats().naked == 1);
  }
  SUBCASE("Reject with a reason") {
    handler = [&](const client::Received&, storage::Inbox::Txn& txn) {
      called = true;
      txn.put("k", "v");
      return client::HandlerResult{client::Verdict::kReject, "village not served", 0};
    };
    poll_until(*c, handler, [&] { return called; });
    REQUIRE(wait_until([&] { return fb.count(protocol::Command::Reject) == 1; }, 5s));
    const auto rej = fb.seen(protocol::Command::Reject)[0];
    CHECK(rej.consumer == "dinkes-births");
    CHECK(rej.sequence == 5);
    CHECK(rej.reason == "village not served");
    CHECK(c->stats().rejected == 1);
  }
  SUBCASE("a handler that throws is a Nak") {
    handler = [&](const client::Received&, storage::Inbox::Txn& txn) -> client::HandlerResult {
      called = true;
      txn.put("k", "v");
      throw std::runtime_error("webhook down");
    };
    poll_until(*c, handler, [&] { return called; });
    REQUIRE(wait_until([&] { return fb.count(protocol::Command::Nak) == 1; }, 5s));
    CHECK(fb.seen(protocol::Command::Nak)[0].sequence == 5);
    CHECK(c->stats().last_error.find("webhook down") != std::string::npos);
  }

  CHECK(fb.count(protocol::Command::Ack) == 0);
  auto v = c->inbox().get("k");
  REQUIRE(v.has_value());
  CHECK_FALSE(v->has_value());
  auto p = c->inbox().processed(id);
  REQUIRE(p.has_value());
  CHECK_FALSE(p->has_value());
}

TEST_CASE("Consumer: rejects a delivery that does not verify, without calling the handler") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  std::string reason_part;

  SUBCASE("record bytes that are not a LogRecord") {
    fb.deliver_raw(9, make_delivery("dinkes-births", 9, 1, Bytes(40, 0xab)));
    reason_part = "no verifiable log record";
  }
  SUBCASE("an event with a payload type but no payload") {
    flatbuffers::FlatBufferBuilder fbb;
    const EventId id = new_uuid_v7();
    const events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
    auto regions = fbb.CreateVectorOfStrings({"1271011001"});
    fbb.Finish(events::CreateEvent(fbb, &uuid, 1, 1, 1, 0, regions, events::Payload::Birth, 0));
    fb.deliver(9, finish(fbb));
    reason_part = "MalformedEvent: payload";
  }
  SUBCASE("an event of a kind newer than this client's schema") {
    flatbuffers::FlatBufferBuilder fbb;
    const EventId id = new_uuid_v7();
    const events::Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
    auto body = events::CreateBirth(fbb);
    auto regions = fbb.CreateVectorOfStrings({"1271011001"});
    fbb.Finish(events::CreateEvent(fbb, &uuid, 1, 1, 1, 0, regions, static_cast<events::Payload>(9),
                                   body.Union()));
    fb.deliver(9, finish(fbb));
    reason_part = "UnknownKind";
  }
  SUBCASE("an event without an id") {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(events::CreateEvent(fbb, nullptr, 1, 1, 1));
    fb.deliver(9, finish(fbb));
    reason_part = "MissingField";
  }

  poll_until(*c, rec.handler(), [&] { return c->stats().rejected == 1; });
  CHECK(rec.calls.empty());
  REQUIRE(wait_until([&] { return fb.count(protocol::Command::Reject) == 1; }, 5s));
  const auto rej = fb.seen(protocol::Command::Reject)[0];
  INFO("reason: ", rej.reason);
  CHECK(rej.sequence == 9);
  CHECK(rej.reason.find(reason_part) != std::string::npos);
  CHECK(c->stats().delivered == 1);
}

TEST_CASE("Consumer: a refused Subscribe is an error with the broker's message") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  fb.refuse_subscribe(protocol::ErrorCode::ConsumerMismatch, "the stored filter differs");
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  std::optional<Error> err;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!err && std::chrono::steady_clock::now() < deadline) {
    auto r = c->poll(rec.handler(), 100ms);
    if (!r) err = r.error();
  }
  REQUIRE(err.has_value());
  CHECK(err->code == Errc::kInvalidArgument);
  CHECK(err->message.find("the stored filter differs") != std::string::npos);
  CHECK(err->message.find("ConsumerMismatch") != std::string::npos);
  CHECK_FALSE(c->stats().subscribed);
}

TEST_CASE("Consumer: pings the broker every heartbeat") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir, 30ms));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return fb.count(protocol::Command::Ping) >= 5; });
  // All on one connection: the broker answered, so the client never started over.
  CHECK(c->stats().reconnects == 0);
  CHECK(fb.count(protocol::Command::Subscribe) == 1);
  std::set<std::string> peers;
  for (const auto& s : fb.seen()) peers.insert(s.peer);
  CHECK(peers.size() == 1);
}

TEST_CASE("Consumer: subscribes again on a fresh socket when the broker goes silent") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  // Not shorter: on a loaded machine a heartbeat of a few tens of milliseconds makes
  // the client give up on a live broker too, and each extra reconnect doubles its wait.
  auto c = open_consumer(options_for(fb, dir, 150ms));
  const auto evs = make_events(2);
  Recorder rec;
  fb.ignore_acks = true;  // event 1 stays unacknowledged on the broker's side
  fb.deliver(1, evs[0]);
  poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 1; });

  fb.silent = true;
  poll_until(
      *c, rec.handler(), [&] { return c->stats().reconnects >= 1; }, 30s);
  CHECK_FALSE(c->stats().subscribed);
  fb.silent = false;
  fb.ignore_acks = false;
  fb.deliver(2, evs[1]);
  // Event 1 comes again (attempt 2) to the new socket: skipped by the inbox.
  poll_until(
      *c, rec.handler(),
      [&] { return rec.calls.size() == 2 && c->stats().duplicates_skipped >= 1; }, 30s);
  CHECK(rec.calls[1].sequence == 2);
  const auto subs = fb.seen(protocol::Command::Subscribe);
  REQUIRE(subs.size() >= 2);
  CHECK(subs.front().peer != subs.back().peer);
  CHECK(subs.back().consumer == subs.front().consumer);
  CHECK(subs.back().window == subs.front().window);
  REQUIRE(wait_until([&] { return fb.acked().count(2) == 1; }, 5s));
}

// Seen under TSan: the Subscribe of a new session reached a broker that was not
// reading yet, and the Pongs that followed kept the session alive, unsubscribed.
TEST_CASE("Consumer: subscribes again when its Subscribe goes unanswered but Pings do not") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  fb.drop_subscribes = true;
  auto c = open_consumer(options_for(fb, dir, 150ms));
  Recorder rec;
  poll_until(
      *c, rec.handler(), [&] { return c->stats().reconnects >= 1; }, 30s);
  CHECK_FALSE(c->stats().subscribed);
  CHECK(c->stats().last_error.find("no answer to Subscribe") != std::string::npos);
  fb.drop_subscribes = false;
  poll_until(
      *c, rec.handler(), [&] { return c->stats().subscribed; }, 30s);
  CHECK(fb.count(protocol::Command::Ping) >= 1);
}

TEST_CASE("Consumer: subscribes again when the connection drops") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  // A long heartbeat: only the dropped connection can make the client start over.
  auto c = open_consumer(options_for(fb, dir, 5000ms));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  fb.restart();
  fb.deliver(1, make_events(1)[0]);
  poll_until(
      *c, rec.handler(), [&] { return rec.calls.size() == 1; }, 4s);
  CHECK(c->stats().reconnects == 1);
  CHECK(fb.count(protocol::Command::Subscribe) == 2);
}

TEST_CASE("Consumer: subscribes again when the broker says NotSubscribed") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir, 5000ms));
  const auto evs = make_events(2);
  Recorder rec;
  fb.acks_not_subscribed = 1;
  fb.deliver(1, evs[0]);
  poll_until(*c, rec.handler(), [&] { return c->stats().reconnects == 1; });
  fb.deliver(2, evs[1]);
  // Event 1 comes again to the new socket (skipped: the inbox has it), then event 2.
  poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 2; });
  CHECK(c->stats().duplicates_skipped == 1);
  CHECK(c->stats().reconnects == 1);
  CHECK(fb.count(protocol::Command::Subscribe) == 2);
  REQUIRE(wait_until([&] { return fb.acked().count(2) == 1; }, 5s));
}

TEST_CASE("Consumer: close unsubscribes, and poll after close is an error") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  c->close();
  REQUIRE(wait_until([&] { return fb.count(protocol::Command::Unsubscribe) == 1; }, 5s));
  CHECK(fb.seen(protocol::Command::Unsubscribe)[0].consumer == "dinkes-births");
  auto r = c->poll(rec.handler(), 10ms);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::kUnavailable);
}

TEST_CASE("Consumer: interrupt and close from another thread end a running poll") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  std::atomic<bool> returned{false};
  std::thread t([&] {
    auto r = c->poll(rec.handler(), 60s);
    CHECK(r.has_value());
    returned = true;
  });
  REQUIRE(wait_until([&] { return fb.count(protocol::Command::Subscribe) == 1; }, 5s));
  c->interrupt();
  REQUIRE(wait_until([&] { return returned.load(); }, 5s));
  t.join();

  returned = false;
  std::thread t2([&] {
    auto r = c->poll(rec.handler(), 60s);
    (void)r;
    returned = true;
  });
  c->close();  // waits for the poll to give up the socket
  REQUIRE(wait_until([&] { return returned.load(); }, 5s));
  t2.join();
}

// ---- DeliveryBatch (Subscribe.batch) ----------------------------------------------

TEST_CASE("Consumer: asks for batches of min(batch, window), with batch 1 for none") {
  for (const auto& [window, batch, asked] :
       std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>{
           {1000, 128, 128}, {9, 128, 9}, {100, 1, 1}, {100, 0, 1}}) {
    CAPTURE(window);
    CAPTURE(batch);
    test::TempDir dir("consumer");
    FakeBroker fb;
    auto o = options_for(fb, dir);
    o.window = window;
    o.batch = batch;
    auto c = open_consumer(o);
    Recorder rec;
    poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
    const auto subs = fb.seen(protocol::Command::Subscribe);
    REQUIRE(subs.size() == 1);
    CHECK(subs[0].window == window);
    CHECK(subs[0].batch == asked);
  }
  CHECK(client::ConsumerOptions{}.batch == 128);
}

TEST_CASE("Consumer: a DeliveryBatch is handled one event at a time, deduped and acked") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  const auto evs = make_events(4);
  // Sequences 1-4, then event 2 again as sequence 5 (a duplicate the inbox skips), then
  // a plain Delivery: a batched client gets both kinds of message.
  std::vector<std::tuple<std::uint64_t, std::uint32_t, Bytes>> items;
  for (std::uint64_t i = 0; i < 4; ++i) items.emplace_back(i + 1, 1, make_record(i + 1, evs[i]));
  items.emplace_back(5, 2, make_record(5, evs[1]));
  fb.deliver_raw(0, make_batch("dinkes-births", items));
  fb.deliver_raw(6, make_delivery("dinkes-births", 6, 1, make_record(6, make_events(1, 99)[0])));

  poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 5; });
  std::vector<std::uint64_t> seqs;
  for (const auto& call : rec.calls) seqs.push_back(call.sequence);
  CHECK(seqs == std::vector<std::uint64_t>{1, 2, 3, 4, 6});
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(rec.calls[i].attempt == 1);
    CHECK(rec.calls[i].event == evs[i]);
    CHECK(rec.calls[i].source == "disdukcapil");
    auto p = c->inbox().processed(test::id_of(evs[i]));
    REQUIRE(p.has_value());
    CHECK(*p == std::optional<std::uint64_t>(i + 1));
  }
  REQUIRE(wait_until([&] { return fb.acked().size() == 6; }, 5s));
  CHECK(fb.acked() == std::multiset<std::uint64_t>{1, 2, 3, 4, 5, 6});
  const auto s = c->stats();
  CHECK(s.delivered == 6);
  CHECK(s.handled == 5);
  CHECK(s.duplicates_skipped == 1);
  CHECK(s.acked == 6);
}

TEST_CASE("Consumer: max_events inside a DeliveryBatch: the next poll goes on with it") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  const auto evs = make_events(5);
  std::vector<std::tuple<std::uint64_t, std::uint32_t, Bytes>> items;
  for (std::uint64_t i = 0; i < 5; ++i) items.emplace_back(i + 1, 1, make_record(i + 1, evs[i]));
  fb.deliver_raw(0, make_batch("dinkes-births", items));
  std::size_t first = 0;
  for (int turn = 0; turn < 500 && first == 0; ++turn) {
    auto got = c->poll(rec.handler(), 20ms, 2);
    REQUIRE(got.has_value());
    first = *got;
  }
  CHECK(first == 2);
  CHECK(rec.calls.size() == 2);
  auto got = c->poll(rec.handler(), 10s, 2);  // from what it holds: no wait
  REQUIRE(got.has_value());
  CHECK(*got == 2);
  got = c->poll(rec.handler(), 200ms, 2);  // the last one, then nothing more comes
  REQUIRE(got.has_value());
  CHECK(*got == 1);
  std::vector<std::uint64_t> seqs;
  for (const auto& call : rec.calls) seqs.push_back(call.sequence);
  CHECK(seqs == std::vector<std::uint64_t>{1, 2, 3, 4, 5});
  REQUIRE(wait_until([&] { return fb.acked().size() == 5; }, 5s));
}

TEST_CASE("Consumer: a DeliveryBatch for another consumer is ignored") {
  test::TempDir dir("consumer");
  FakeBroker fb;
  auto c = open_consumer(options_for(fb, dir));
  Recorder rec;
  poll_until(*c, rec.handler(), [&] { return c->stats().subscribed; });
  const auto evs = make_events(2);
  fb.deliver_raw(0, make_batch("someone-else", {{1, 1, make_record(1, evs[0])}}));
  fb.deliver_raw(2, make_delivery("dinkes-births", 2, 1, make_record(2, evs[1])));
  poll_until(*c, rec.handler(), [&] { return rec.calls.size() == 1; });
  CHECK(rec.calls[0].sequence == 2);
  CHECK(c->stats().last_error.find("someone-else") != std::string::npos);
}
