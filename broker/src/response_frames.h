// How the broker builds a Response frame (docs/PROTOCOL.md): the protocol version it
// speaks, a nested FlatBuffer (a LogRecord inside a Delivery, a Record, a DeadLetter)
// kept 8-byte aligned, and the finished Response around a reply body. Shared by the
// server's replies and the delivery frames.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>

#include <flatbuffers/flatbuffers.h>

#include <schemas/protocol_generated.h>

namespace kolabus::broker::frames {

inline constexpr std::uint16_t kProtocolVersion = 1;

inline flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> nested(
    flatbuffers::FlatBufferBuilder& fbb, std::string_view bytes) {
  // A nested FlatBuffer stays 8-byte aligned inside its parent.
  fbb.ForceVectorAlignment(bytes.size(), sizeof(std::uint8_t), 8);
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

// Finishes `fbb` as Response{version, corr, type, body} and hands its buffer out.
template <typename T>
flatbuffers::DetachedBuffer finish(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t corr,
                                   protocol::Reply type, flatbuffers::Offset<T> body) {
  fbb.Finish(protocol::CreateResponse(fbb, kProtocolVersion, corr, type, body.Union()));
  return fbb.Release();
}

}  // namespace kolabus::broker::frames
