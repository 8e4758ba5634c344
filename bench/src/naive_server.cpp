#include "naive_server.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <signal.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>

namespace kolabus::bench {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; ++k) s[k] = static_cast<char>(v >> (56 - 8 * k));
  return s;
}

std::uint64_t from_be64(const rocksdb::Slice& s) {
  std::uint64_t v = 0;
  for (std::size_t k = 0; k < 8 && k < s.size(); ++k) {
    v = v << 8 | static_cast<unsigned char>(s[k]);
  }
  return v;
}

// One publish of the current drain, answered after the batch is written.
struct Pending {
  zmq::message_t identity;
  zmq::message_t body;  // keeps the event bytes alive until they are forwarded
  std::uint64_t corr = 0;
  std::uint64_t sequence = 0;
  std::size_t event_offset = 0;  // of the event bytes in `body` (a move of a small
  std::size_t event_size = 0;    // zmq message moves its bytes: no pointers kept)

  const std::uint8_t* event() const {
    return static_cast<const std::uint8_t*>(body.data()) + event_offset;
  }
};

void send_reply(zmq::socket_t& router, zmq::message_t& identity,
                flatbuffers::FlatBufferBuilder& fbb) {
  zmq::message_t id;
  id.copy(identity);
  router.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  router.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()), zmq::send_flags::dontwait);
}

}  // namespace

int run_naive_server(const NaiveServerOptions& options) {
  ::signal(SIGTERM, on_signal);
  ::signal(SIGINT, on_signal);

  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  const auto opened = rocksdb::DB::Open(db_options, options.dir, &raw);
  if (!opened.ok()) {
    std::fprintf(stderr, "serve-naive: cannot open %s: %s\n", options.dir.c_str(),
                 opened.ToString().c_str());
    return 3;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::uint64_t next = 1;
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    it->SeekToLast();
    if (it->Valid()) next = from_be64(it->key()) + 1;
  }

  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  zmq::socket_t pub(context, zmq::socket_type::pub);
  try {
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::sndhwm, 100000);
    router.set(zmq::sockopt::rcvhwm, 100000);
    router.bind("tcp://127.0.0.1:" + std::to_string(options.port));
    if (options.pub_port != 0) {
      pub.set(zmq::sockopt::linger, 0);
      pub.set(zmq::sockopt::sndhwm, 100000);
      pub.bind("tcp://127.0.0.1:" + std::to_string(options.pub_port));
    }
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "serve-naive: cannot bind: %s\n", e.what());
    return 4;
  }

  rocksdb::WriteOptions sync;
  sync.sync = true;
  constexpr std::size_t kMaxBatch = 1024;
  std::vector<Pending> batch;
  batch.reserve(kMaxBatch);
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  while (!g_stop.load()) {
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(200));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    batch.clear();
    rocksdb::WriteBatch wb;
    while (batch.size() < kMaxBatch) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(router, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
        break;
      }
      if (parts.size() != 2) continue;  // not a DEALER client: ignored
      // Trusted input: the harness is the only client. No verifier.
      const auto* req = protocol::GetRequest(static_cast<const std::uint8_t*>(parts[1].data()));
      if (req->command_type() == protocol::Command::Ping) {
        flatbuffers::FlatBufferBuilder fbb(64);
        auto pong = protocol::CreatePong(fbb, fbb.CreateString("naive"), next);
        fbb.Finish(
            protocol::CreateResponse(fbb, 1, req->corr(), protocol::Reply::Pong, pong.Union()));
        send_reply(router, parts[0], fbb);
        continue;
      }
      const auto* publish = req->command_as_Publish();
      if (publish == nullptr || publish->event() == nullptr) continue;
      Pending p;
      p.corr = req->corr();
      p.event_offset = static_cast<std::size_t>(publish->event()->data() -
                                                static_cast<const std::uint8_t*>(parts[1].data()));
      p.event_size = publish->event()->size();
      p.sequence = next++;
      wb.Put(be64(p.sequence),
             rocksdb::Slice(reinterpret_cast<const char*>(publish->event()->data()), p.event_size));
      p.identity = std::move(parts[0]);
      p.body = std::move(parts[1]);
      batch.push_back(std::move(p));
    }
    if (batch.empty()) continue;
    const auto written = db->Write(sync, &wb);
    for (auto& p : batch) {
      flatbuffers::FlatBufferBuilder fbb(128);
      if (written.ok()) {
        const auto* id = events::GetEvent(p.event())->id();
        const events::Uuid uuid = id != nullptr ? *id : events::Uuid();
        auto ack = protocol::CreatePublishAck(fbb, &uuid, p.sequence, false);
        fbb.Finish(
            protocol::CreateResponse(fbb, 1, p.corr, protocol::Reply::PublishAck, ack.Union()));
      } else {
        auto nack =
            protocol::CreateNackDirect(fbb, nullptr, protocol::ErrorCode::StorageUnavailable, "",
                                       written.ToString().c_str(), true);
        fbb.Finish(protocol::CreateResponse(fbb, 1, p.corr, protocol::Reply::Nack, nack.Union()));
      }
      send_reply(router, p.identity, fbb);
      if (written.ok() && options.pub_port != 0) {
        pub.send(zmq::const_buffer(p.event(), p.event_size), zmq::send_flags::dontwait);
      }
    }
    if (!written.ok()) next -= batch.size();  // nothing was stored: numbers are reused
  }
  return 0;
}

}  // namespace kolabus::bench
