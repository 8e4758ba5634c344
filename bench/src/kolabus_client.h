// A thin kolabus client: one DEALER socket speaking docs/PROTOCOL.md directly, with
// no outbox, no inbox and no retries — the least a client can do, so that what is
// measured is the server. The same socket code drives kolabus-broker and the naive
// loop (which answers the same Publish/PublishAck/Ping frames).
//
// Ownership: a KolabusSocket owns its socket and borrows the zmq context, which must
// outlive it. Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "events.h"
#include "systems.h"
#include <schemas/protocol_generated.h>

namespace kolabus::bench {

class KolabusSocket {
 public:
  KolabusSocket(zmq::context_t& context, const std::string& endpoint);

  zmq::socket_t& socket() { return socket_; }

  void send_publish(const EventPool& pool, std::uint64_t i);  // corr = i + 1
  void send_ping(std::uint64_t corr);
  void send_subscribe(std::uint64_t corr, const SubscribeOptions& options,
                      protocol::StartPolicy start);
  void send_unsubscribe(std::uint64_t corr, const std::string& consumer);
  // SeekConsumer to the end of the log (an operator command; --dev allows it).
  void send_seek_latest(std::uint64_t corr, const std::string& consumer);
  void send_ack(const std::string& consumer, const std::vector<std::uint64_t>& sequences);
  void send_list_consumers(std::uint64_t corr);

  // The next message, waiting up to `timeout` (0: only what is already queued);
  // nullopt if none came.
  std::optional<zmq::message_t> recv(std::chrono::milliseconds timeout);

 private:
  void send_request(flatbuffers::FlatBufferBuilder& fbb);

  zmq::socket_t socket_;
};

// The Response in a message after the FlatBuffers verifier passed it; nullptr if it
// is not one.
const protocol::Response* as_response(const zmq::message_t& message);

// "code field: message" of a Nack.
std::string describe(const protocol::Nack& nack);

// A client that publishes with one DEALER (kolabus or the naive loop).
std::unique_ptr<PublishClient> make_kolabus_publisher(zmq::context_t& context,
                                                      const std::string& endpoint,
                                                      const EventPool& pool);

// Subscribes (and waits for Subscribed) before returning.
Result<std::unique_ptr<SubscribeClient>> make_kolabus_subscriber(zmq::context_t& context,
                                                                 const std::string& endpoint,
                                                                 const EventPool& pool,
                                                                 const SubscribeOptions& options);

// The Pong's next_sequence: the number the next stored event will get.
Result<std::uint64_t> next_sequence(zmq::context_t& context, const std::string& endpoint);

// Sends Ping until a Pong comes back or `timeout` passes (reconnecting every
// millisecond meanwhile, so a server that is still starting is seen as soon as it
// binds).
Status wait_for_pong(zmq::context_t& context, const std::string& endpoint,
                     std::chrono::milliseconds timeout, const std::function<bool()>& alive);

}  // namespace kolabus::bench
