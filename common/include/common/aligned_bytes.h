// AlignedBytes: a copy of some bytes in 8-byte-aligned storage of its own.
//
// FlatBuffers reads scalars in place and relies on a buffer starting at an address
// aligned for its largest scalar (8 bytes). Bytes handed out by ZeroMQ (a frame sits
// inside the message object or at any offset of a receive buffer) and by RocksDB (a
// value seen through a scan is a view into a block, at any offset) are not: reading a
// FlatBuffer from them in place is a misaligned read, undefined behaviour that the
// sanitizer builds (scripts/sanitize) abort on. Verify and read such bytes through
// aligned(): it copies them only when they are not aligned already.
//
// Thread-safety: a plain value. aligned() borrows its arguments and returns a view
// that stays valid while both `bytes` and `storage` live and `storage` is not
// assigned again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace kolabus {

class AlignedBytes {
 public:
  AlignedBytes() = default;
  AlignedBytes(const void* data, std::size_t size) { assign(data, size); }
  explicit AlignedBytes(std::string_view bytes) { assign(bytes.data(), bytes.size()); }

  // Replaces the contents by a copy of [data, data + size). Reuses the storage it has.
  void assign(const void* data, std::size_t size) {
    words_.resize((size + 7) / 8);
    if (size > 0) std::memcpy(words_.data(), data, size);
    size_ = size;
  }

  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(words_.data()); }
  std::size_t size() const { return size_; }
  std::span<const std::uint8_t> span() const { return {data(), size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data()), size_}; }

 private:
  std::vector<std::uint64_t> words_;  // uint64_t: the allocation is 8-byte aligned
  std::size_t size_ = 0;
};

inline bool is_aligned8(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 8 == 0; }

// `bytes` itself when it starts at an 8-byte-aligned address, else a copy of it
// held by `storage`.
inline std::span<const std::uint8_t> aligned(std::span<const std::uint8_t> bytes,
                                             AlignedBytes& storage) {
  if (is_aligned8(bytes.data())) return bytes;
  storage.assign(bytes.data(), bytes.size());
  return storage.span();
}

inline std::span<const std::uint8_t> aligned(std::string_view bytes, AlignedBytes& storage) {
  return aligned(std::span{reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()},
                 storage);
}

}  // namespace kolabus
