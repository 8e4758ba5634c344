// Internal to the client library: a socket monitor (a PAIR on inproc receiving the
// events of one socket) and the reading of its handshake events.
//
// Seen with libzmq 4.3.4: a key the broker's ZAP handler refuses gives
// HANDSHAKE_FAILED_AUTH (value: the status code) and ZeroMQ does NOT reconnect after
// it, so a client that wants to try again must open a fresh socket. A wrong server
// key gives HANDSHAKE_FAILED_NO_DETAIL (EPIPE: the broker drops the connection),
// repeated on every reconnect. CURVE on one side only gives HANDSHAKE_FAILED_PROTOCOL
// (mechanism mismatch).
//
// Thread-safety: like the socket it watches, one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include <client/curve.h>
#include <common/result.h>

namespace kolabus::client::detail {

struct MonitorEvent {
  std::uint16_t event = 0;
  std::uint32_t value = 0;
};

// The handshake events, plus what the owner asks for.
inline constexpr int kHandshakeEvents =
    ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED;

class SocketMonitor {
 public:
  // Starts monitoring `socket` for `events`. REQUIRES: before socket.connect(), so no
  // event is missed; `socket` outlives this object or stop() is called first.
  SocketMonitor(zmq::context_t& context, zmq::socket_t& socket, int events, const void* owner) {
    static std::atomic<std::uint64_t> counter{0};
    const std::string addr = "inproc://kolabus-monitor-" +
                             std::to_string(reinterpret_cast<std::uintptr_t>(owner)) + "-" +
                             std::to_string(++counter);
    if (zmq_socket_monitor(socket.handle(), addr.c_str(), events) == 0) {
      watched_ = socket.handle();
      pair_ = std::make_unique<zmq::socket_t>(context, zmq::socket_type::pair);
      pair_->set(zmq::sockopt::linger, 0);
      pair_->connect(addr);
    }
  }
  ~SocketMonitor() { stop(); }
  SocketMonitor(const SocketMonitor&) = delete;
  SocketMonitor& operator=(const SocketMonitor&) = delete;

  // Stops monitoring. REQUIRES: the watched socket is still open.
  void stop() {
    if (watched_ != nullptr) zmq_socket_monitor(watched_, nullptr, 0);
    watched_ = nullptr;
    pair_.reset();
  }

  // For zmq::poll; null when monitoring could not start.
  void* handle() const { return pair_ ? pair_->handle() : nullptr; }

  std::vector<MonitorEvent> drain() {
    std::vector<MonitorEvent> out;
    zmq::message_t event;
    while (pair_ && pair_->recv(event, zmq::recv_flags::dontwait)) {
      zmq::message_t address;
      if (event.more()) {
        [[maybe_unused]] auto r = pair_->recv(address);
      }
      if (event.size() >= 6) {
        MonitorEvent e;
        std::memcpy(&e.event, event.data(), sizeof e.event);
        std::memcpy(&e.value, static_cast<const char*>(event.data()) + 2, sizeof e.value);
        out.push_back(e);
      }
    }
    return out;
  }

 private:
  void* watched_ = nullptr;
  std::unique_ptr<zmq::socket_t> pair_;
};

// Decides when handshake failures mean "this client cannot talk to the broker":
// a refusal by the ZAP handler or a mechanism mismatch at once; failures without
// detail (a wrong server key looks like the broker hanging up during the handshake,
// which a restarting broker may also do) on the third in a row with no success in
// between, and only with CURVE on.
class HandshakeWatch {
 public:
  HandshakeWatch() = default;
  HandshakeWatch(std::string endpoint, bool curve)
      : endpoint_(std::move(endpoint)), curve_(curve) {}

  // Feeds one event. Returns the error when it settles that the handshake fails.
  std::optional<Error> on_event(const MonitorEvent& e) {
    switch (e.event) {
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        failures_ = 0;
        succeeded_ = true;
        return std::nullopt;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return fail(e);
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if (!curve_ || ++failures_ < kNoDetailLimit) return std::nullopt;
        return fail(e);
      default:
        return std::nullopt;
    }
  }

  // True once a handshake succeeded since the last fail.
  bool succeeded() const { return succeeded_; }

 private:
  static constexpr int kNoDetailLimit = 3;
  std::optional<Error> fail(const MonitorEvent& e) {
    failures_ = 0;
    succeeded_ = false;
    return Error{Errc::kUnavailable, handshake_error_message(endpoint_, e.event, e.value)};
  }

  std::string endpoint_;
  bool curve_ = false;
  int failures_ = 0;
  bool succeeded_ = false;
};

}  // namespace kolabus::client::detail
