#include <cstring>

#include <zmq.hpp>

#include <client/curve.h>

namespace kolabus::client {

Result<KeyPair> generate_key_pair() {
  char pub[41] = {};
  char sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return unexpected(Errc::kUnavailable, std::string("cannot generate a CURVE key pair: ") +
                                              zmq_strerror(zmq_errno()) +
                                              " (libzmq built without CURVE?)");
  }
  KeyPair keys{pub, sec};
  std::memset(sec, 0, sizeof sec);
  return keys;
}

Status check_curve(const CurveOptions& curve) {
  const bool any = !curve.server_public_key.empty() || !curve.client.public_key.empty() ||
                   !curve.client.secret_key.empty();
  if (!any) return {};
  if (curve.server_public_key.empty()) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: a client key pair was given without the broker's public key");
  }
  if (curve.client.public_key.empty() || curve.client.secret_key.empty()) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: the broker's public key was given without this agency's key pair");
  }
  if (!is_z85_key(curve.server_public_key)) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: the broker's public key is not a 40-character Z85 key");
  }
  if (!is_z85_key(curve.client.public_key) || !is_z85_key(curve.client.secret_key)) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: this agency's keys are not 40-character Z85 keys");
  }
  char derived[41] = {};
  if (zmq_curve_public(derived, curve.client.secret_key.c_str()) != 0) {
    return unexpected(Errc::kUnavailable, std::string("CURVE: cannot check the key pair: ") +
                                              zmq_strerror(zmq_errno()));
  }
  if (curve.client.public_key != derived) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: this agency's public key does not belong to its secret key");
  }
  if (curve.server_public_key == curve.client.public_key) {
    return unexpected(Errc::kInvalidArgument,
                      "CURVE: the broker's public key is this agency's own (--server-key must "
                      "be the broker's key)");
  }
  return {};
}

void apply_curve(zmq::socket_t& socket, const CurveOptions& curve) {
  if (!curve.enabled()) return;
  // 40 bytes: ZeroMQ reads them as Z85.
  socket.set(zmq::sockopt::curve_serverkey, curve.server_public_key);
  socket.set(zmq::sockopt::curve_publickey, curve.client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, curve.client.secret_key);
}

std::string handshake_error_message(const std::string& endpoint, std::uint16_t event,
                                    std::uint32_t value) {
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      return "not authorised by the broker at " + endpoint +
             ": its ZAP handler refused this agency's key (status " + std::to_string(value) +
             "); check the key in the broker's agencies.toml";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        return "security handshake with the broker at " + endpoint +
               " failed: one side uses CURVE and the other does not (give --key and "
               "--server-key for a broker with CURVE; neither for a --dev broker)";
      }
      {
        char code[16];
        std::snprintf(code, sizeof code, "0x%08x", value);
        return "security handshake with the broker at " + endpoint + " failed: protocol error " +
               code + " (check --server-key and the broker's keys)";
      }
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      return "security handshake with the broker at " + endpoint + " failed (" +
             zmq_strerror(static_cast<int>(value)) +
             "): the broker hung up; is the server key the broker's public key?";
    default:
      return "handshake with the broker at " + endpoint + " failed (event " +
             std::to_string(event) + ", value " + std::to_string(value) + ")";
  }
}

}  // namespace kolabus::client
