// client::CurveOptions: CURVE encryption and authentication for the client library's
// sockets (DESIGN.md, Security). With CURVE, the broker's ZAP handler admits only the
// agency keys in its registry (agencies.toml); without it (the broker's --dev mode),
// anyone who reaches the port may talk.
//
// Every socket the library creates (Publisher, Consumer, AdminClient) gets the same
// options. A broker that refuses the key is not visible on send(): ZeroMQ queues
// locally and retries the handshake. The library watches each socket's monitor and
// reports the refusal (Publisher: stats().unauthorised and last_error; Consumer:
// poll() fails with kUnavailable; AdminClient: the call fails at once) with the text
// of handshake_error_message().
//
// Thread-safety: values and free functions.
#pragma once

#include <cstdint>
#include <string>

#include <common/keys.h>
#include <common/result.h>

namespace zmq {
class socket_t;
}

namespace kolabus::client {

struct CurveOptions {
  // The broker's public key, Z85. Empty: no CURVE (plain ZMTP; --dev brokers only).
  std::string server_public_key{};
  // This agency's key pair (common/keys.h: load_key_pair of NAME.key).
  KeyPair client{};

  bool enabled() const { return !server_public_key.empty(); }
};

// A fresh CURVE key pair (zmq_curve_keypair). kUnavailable when this libzmq was
// built without CURVE.
Result<KeyPair> generate_key_pair();

// kInvalidArgument, saying what is wrong, unless the options are either all empty or
// complete: three 40-character Z85 keys, the client's public key belonging to its
// secret key. Publisher::open, Consumer::open and AdminClient::connect call it.
Status check_curve(const CurveOptions& curve);

// Sets ZMQ_CURVE_SERVERKEY, ZMQ_CURVE_PUBLICKEY and ZMQ_CURVE_SECRETKEY; nothing when
// !curve.enabled(). REQUIRES: check_curve(curve) succeeded; called before connect().
void apply_curve(zmq::socket_t& socket, const CurveOptions& curve);

// What a socket monitor's handshake failure means for a person. `event` is
// ZMQ_EVENT_HANDSHAKE_FAILED_AUTH (value: the ZAP status code, 300/400/500),
// ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL (value: ZMQ_PROTOCOL_ERROR_*) or
// ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL (value: an errno).
std::string handshake_error_message(const std::string& endpoint, std::uint16_t event,
                                    std::uint32_t value);

}  // namespace kolabus::client
