// Internal to the client library: a received frame copied to 8-byte-aligned storage.
// FlatBuffers reads scalars in place, and ZeroMQ hands out frames at any address
// (small ones inside the message object, others at any offset of its receive buffer):
// reading a Response straight from the frame would be a misaligned read, undefined
// behaviour that the sanitizer builds abort on (see common/aligned_bytes.h).
//
// Thread-safety: a plain value.
#pragma once

#include <zmq.hpp>

#include <common/aligned_bytes.h>

namespace kolabus::client::detail {

class AlignedFrame : public AlignedBytes {
 public:
  AlignedFrame() = default;
  explicit AlignedFrame(const zmq::message_t& m) { assign(m); }

  using AlignedBytes::assign;
  void assign(const zmq::message_t& m) { assign(m.data(), m.size()); }
};

}  // namespace kolabus::client::detail
