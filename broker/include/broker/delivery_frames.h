// broker::delivery frames: how the deliveries of one round become messages
// (docs/PROTOCOL.md, "Deliveries").
//
// A client that subscribed with batch 0 or 1 gets one Response{Delivery} per event,
// byte for byte what brokers before batching sent. A client that asked for batch > 1
// gets its deliveries of one consumer made in one round in Response{DeliveryBatch}
// messages of at most `batch` deliveries and at most kDeliveryBatchBytes of records
// (a record larger than that goes alone), in the order the round made them, which is
// sequence order within a consumer. A group of one goes as a plain Delivery: every
// client reads those anyway.
//
// Packing never changes what was delivered: each event's attempt, ack deadline and
// window slot were set by Consumers::pump(); a message the server cannot send leaves
// every event in it in flight, to go again after ack_wait, as a single delivery would.
//
// Ownership: groups point into the deliveries given, which must outlive them.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include <broker/consumers.h>

namespace kolabus::broker {

// Records per DeliveryBatch message, at most (in bytes, with a little room per
// delivery for its table). Far below what any client limits a message to: kolabus's
// C++ client sets no ZMQ_MAXMSGSIZE, and the broker's own max_message_bytes (1 MiB
// by default, up to 64 MiB) bounds what it receives, not what it sends. Large enough
// that a batch of 128 typical events (~500 bytes each) never reaches it.
inline constexpr std::size_t kDeliveryBatchBytes = 1 << 20;

// Bytes a delivery adds to a DeliveryBatch besides its record: its table, vtable,
// offsets and alignment padding (an upper bound).
inline constexpr std::size_t kDeliveryOverheadBytes = 64;

// The deliveries of one round (Consumers::pump(), after the server dropped those it
// could not minimise) grouped into messages. Order within a (client, consumer) pair
// is kept; the groups come in the order of their first delivery.
std::vector<std::vector<const Delivery*>> group_deliveries(
    std::span<const Delivery* const> deliveries, std::size_t max_bytes = kDeliveryBatchBytes);

// The Response that carries `group` (REQUIRES: non-empty, one client and consumer):
// a Delivery for one delivery, a DeliveryBatch for more. Each record is copied once,
// into a buffer sized for them all.
flatbuffers::DetachedBuffer delivery_frame(std::span<const Delivery* const> group);

}  // namespace kolabus::broker
