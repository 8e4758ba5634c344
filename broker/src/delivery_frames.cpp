#include <map>
#include <string_view>
#include <tuple>

#include "response_frames.h"
#include <broker/delivery_frames.h>
#include <schemas/protocol_generated.h>

namespace kolabus::broker {

using frames::finish;
using frames::nested;

std::vector<std::vector<const Delivery*>> group_deliveries(
    std::span<const Delivery* const> deliveries, std::size_t max_bytes) {
  std::vector<std::vector<const Delivery*>> groups;
  struct Open {
    std::size_t index;  // into groups
    std::size_t bytes;
  };
  // (client, owner, consumer) -> its group being filled.
  std::map<std::tuple<std::string_view, std::string_view, std::string_view>, Open> open;
  // The previous batched delivery and its entry: a round makes a consumer's deliveries
  // one after the other, so most need no look-up.
  const Delivery* last = nullptr;
  Open* last_open = nullptr;
  for (const Delivery* d : deliveries) {
    const std::size_t bytes = d->record->size() + kDeliveryOverheadBytes;
    if (d->batch <= 1) {
      groups.push_back({d});
      continue;
    }
    bool added = false;
    if (last == nullptr || d->client != last->client || d->owner != last->owner ||
        d->consumer != last->consumer) {
      auto [it, fresh] = open.try_emplace({d->client.bytes, d->owner, d->consumer}, Open{0, 0});
      added = fresh;
      last_open = &it->second;
    }
    last = d;
    Open& o = *last_open;
    const bool fits = !added && groups[o.index].size() < d->batch && o.bytes + bytes <= max_bytes;
    if (!fits) {
      o = Open{groups.size(), 0};
      groups.emplace_back();
    }
    groups[o.index].push_back(d);
    o.bytes += bytes;
  }
  return groups;
}

flatbuffers::DetachedBuffer delivery_frame(std::span<const Delivery* const> group) {
  if (group.size() == 1) {
    const Delivery& d = *group.front();
    flatbuffers::FlatBufferBuilder fbb(d.record->size() + 128);
    auto record = nested(fbb, *d.record);
    auto consumer = fbb.CreateString(d.consumer);
    return finish(fbb, 0, protocol::Reply::Delivery,
                  protocol::CreateDelivery(fbb, consumer, d.sequence.value, d.attempt, record));
  }
  std::size_t size = 128 + group.front()->consumer.size();
  for (const Delivery* d : group) size += d->record->size() + kDeliveryOverheadBytes;
  flatbuffers::FlatBufferBuilder fbb(size);
  std::vector<flatbuffers::Offset<protocol::Delivery>> items;
  items.reserve(group.size());
  for (const Delivery* d : group) {
    auto record = nested(fbb, *d->record);
    items.push_back(protocol::CreateDelivery(fbb, 0, d->sequence.value, d->attempt, record));
  }
  auto list = fbb.CreateVector(items);
  auto consumer = fbb.CreateString(group.front()->consumer);
  return finish(fbb, 0, protocol::Reply::DeliveryBatch,
                protocol::CreateDeliveryBatch(fbb, consumer, list));
}

}  // namespace kolabus::broker
