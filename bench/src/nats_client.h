// A minimal NATS client over TCP (there is no C client in Debian): the text protocol
// INFO / CONNECT / PING / PONG / PUB / SUB / MSG / HMSG / +OK / -ERR, enough for
// JetStream's request/reply API ($JS.API.*), publishing with a reply inbox to get
// the stream's {"stream":..,"seq":..} acknowledgement, and push consumers.
//
// Writes are buffered in out() until flush(); poll() reads, answers the server's
// PINGs and hands each MSG/HMSG to a callback.
//
// Ownership: owns its connection (move-only). Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "tcp.h"
#include <common/result.h>

namespace kolabus::bench {

struct NatsMessage {
  std::string_view subject;
  int sid = 0;             // the subscription it came through
  std::string_view reply;  // empty if none
  std::string_view payload;
  bool has_headers = false;  // HMSG (JetStream status messages have no payload)
};

class NatsConnection {
 public:
  // Connects, reads INFO, sends CONNECT and PING and waits for PONG.
  static Result<NatsConnection> connect(int port, std::chrono::milliseconds timeout);

  // A subject unique to this connection, for inboxes.
  const std::string& token() const { return token_; }

  // Buffers a PUB; the payload is appended by the caller when `payload` is null
  // (`size` bytes followed by "\r\n"), so events are written straight into the
  // buffer.
  void publish(std::string_view subject, std::string_view reply, std::string_view payload);
  void publish_header(std::string_view subject, std::string_view reply, std::size_t size);
  void subscribe(std::string_view subject, int sid);
  std::string& out() { return out_; }
  Status flush();

  // Reads what arrives within `timeout` (0: only what is there) and calls `on_msg`
  // for each complete message. Returns the number of messages.
  Result<std::size_t> poll(std::chrono::milliseconds timeout,
                           const std::function<void(const NatsMessage&)>& on_msg);

  // Publishes `payload` to `subject` with a fresh inbox and waits for the reply's
  // payload. Other messages that arrive meanwhile are kept for the next poll().
  Result<std::string> request(std::string_view subject, std::string_view payload,
                              std::chrono::milliseconds timeout);

 private:
  struct Owned {
    std::string subject;
    int sid = 0;
    std::string reply, payload;
    bool has_headers = false;
  };
  // Parses complete messages from in_; false (with *error) on -ERR.
  bool parse(const std::function<void(const NatsMessage&)>& on_msg, std::size_t& count,
             std::string* error);

  TcpConnection conn_;
  std::string token_;
  std::string in_;
  std::size_t pos_ = 0;
  std::string out_;
  std::uint64_t pongs_ = 0;
  std::uint64_t requests_ = 0;
  bool inbox_subscribed_ = false;
  std::deque<Owned> held_;
};

}  // namespace kolabus::bench
