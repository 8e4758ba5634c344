// Strong types for the identifiers that cross components: the global event sequence
// and the 16-byte event id (UUID layout, printed in the canonical 8-4-4-4-12 form).
//
// Thread-safety: values. new_uuid_v7() may be called from any thread.
#pragma once

#include <array>
#include <chrono>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>

namespace kolabus {

// Position of an event in the broker's log. The first event is sequence 1; 0 means
// "none".
struct Sequence {
  std::uint64_t value = 0;
  auto operator<=>(const Sequence&) const = default;
};

struct EventId {
  std::array<std::uint8_t, 16> bytes{};

  auto operator<=>(const EventId&) const = default;

  static EventId from_span(std::span<const std::uint8_t, 16> b) {
    EventId id;
    std::memcpy(id.bytes.data(), b.data(), 16);
    return id;
  }
  std::string_view as_key() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }

  std::string to_string() const {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (std::size_t i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
      s.push_back(kHex[bytes[i] >> 4]);
      s.push_back(kHex[bytes[i] & 0xf]);
    }
    return s;
  }

  // Accepts the canonical form with dashes, or 32 hex digits without them.
  static std::optional<EventId> parse(std::string_view s) {
    EventId id;
    std::size_t n = 0;
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = -1;
    for (std::size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      if (c == '-') {
        if (s.size() != 36 || !(i == 8 || i == 13 || i == 18 || i == 23)) return std::nullopt;
        continue;
      }
      int v = nibble(c);
      if (v < 0 || n >= 16) return std::nullopt;
      if (hi < 0) {
        hi = v;
      } else {
        id.bytes[n++] = static_cast<std::uint8_t>(hi << 4 | v);
        hi = -1;
      }
    }
    if (n != 16 || hi >= 0) return std::nullopt;
    return id;
  }
};

// A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Ids made later
// sort later, which keeps the broker's id index append-mostly.
inline EventId new_uuid_v7() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }()};
  const auto ms =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  EventId id;
  for (int i = 0; i < 6; ++i) id.bytes[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
  const std::uint64_t r1 = rng(), r2 = rng();
  for (int i = 0; i < 2; ++i) id.bytes[6 + i] = static_cast<std::uint8_t>(r1 >> (8 * i));
  for (int i = 0; i < 8; ++i) id.bytes[8 + i] = static_cast<std::uint8_t>(r2 >> (8 * i));
  id.bytes[6] = static_cast<std::uint8_t>(0x70 | (id.bytes[6] & 0x0f));  // version 7
  id.bytes[8] = static_cast<std::uint8_t>(0x80 | (id.bytes[8] & 0x3f));  // RFC variant
  return id;
}

}  // namespace kolabus

template <>
struct std::hash<kolabus::EventId> {
  std::size_t operator()(const kolabus::EventId& id) const noexcept {
    std::uint64_t a, b;
    std::memcpy(&a, id.bytes.data(), 8);
    std::memcpy(&b, id.bytes.data() + 8, 8);
    return std::hash<std::uint64_t>{}(a ^ (b * 0x9E3779B97F4A7C15ULL));
  }
};
