// Internal to the client library: a received frame copied to 8-byte-aligned storage.
// FlatBuffers reads scalars in place, and ZeroMQ hands out frames at any address
// (small ones inside the message object, others at any offset of its receive buffer):
// reading a Response straight from the frame would be a misaligned read, undefined
// behaviour that the sanitizer builds abort on.
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include <zmq.hpp>

namespace kolabus::client::detail {

class AlignedFrame {
 public:
  AlignedFrame() = default;
  explicit AlignedFrame(const zmq::message_t& m) { assign(m); }

  void assign(const zmq::message_t& m) {
    buf_.resize((m.size() + 7) / 8);
    if (m.size() > 0) std::memcpy(buf_.data(), m.data(), m.size());
    size_ = m.size();
  }
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(buf_.data()); }
  std::size_t size() const { return size_; }

 private:
  std::vector<std::uint64_t> buf_;
  std::size_t size_ = 0;
};

}  // namespace kolabus::client::detail
