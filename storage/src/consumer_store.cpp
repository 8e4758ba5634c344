// What both ConsumerStore implementations share: apply()'s preconditions.
#include "broker_db.h"

namespace kolabus::storage::detail {

namespace {

void check_key(const ConsumerKey& k) {
  // 0x00 separates owner, name and sequence in the on-disk keys: one inside a name
  // would let two consumers' keys (and dead-letter ranges) overlap.
  KOLABUS_CHECK(k.owner.find('\0') == std::string::npos);
  KOLABUS_CHECK(k.name.find('\0') == std::string::npos);
}

}  // namespace

void check_consumer_write(const ConsumerWrite& write) {
  for (const auto& c : write.put) {
    check_key(c.key);
    std::uint64_t prev = c.ack_floor;
    for (auto seq : c.acked_above) {
      KOLABUS_CHECK(seq > prev);
      prev = seq;
    }
  }
  for (const auto& k : write.erase) check_key(k);
  for (const auto& d : write.dead_letters) check_key(d.key);
  for (const auto& [k, seq] : write.dead_letters_removed) check_key(k);
}

}  // namespace kolabus::storage::detail
