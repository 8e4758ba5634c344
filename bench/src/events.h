// bench::EventPool: the events every scenario sends, encoded before any timing.
//
// A pool holds `distinct` realistic Medan events from tools::EventGenerator (births,
// deaths, moves in a registry's proportions), padded with realistic free text
// (addresses of the place of birth or death, of the reporting facility; a long
// SKPWNI number) so that their mean size is close to the target (512 bytes). Event i
// of a run, for any i < 2^40, is template i % distinct with an id of its own, a
// UUIDv7 layout: the pool's creation time, then a per-pool salt and i. So ids never
// repeat within a pool, grow with i (as a publisher's UUIDv7 ids grow with time:
// the broker's id index sees appends, not random inserts), a subscriber learns i
// from the id alone (no shared map, no timestamp in the payload), and a reused data
// directory does not see them as duplicates.
//
// Each template is also pre-encoded as a complete kolabus Request{Publish} frame;
// write_frame() copies it and patches the corr and the id in place (24 bytes), so
// the cost of "encoding" inside a timed loop is one memcpy — the same copy a zmq
// message needs anyway.
//
// Ownership: owns all bytes; spans it hands out live as long as the pool.
// Thread-safety: immutable after generate(); const methods from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <schemas/regions.h>

namespace kolabus::bench {

class EventPool {
 public:
  struct Options {
    std::size_t distinct = 20000;
    std::uint64_t seed = 1;
    std::size_t target_mean_bytes = 512;
  };

  static EventPool generate(const schemas::RegionTable& regions, const Options& options);

  std::size_t distinct() const { return templates_.size(); }
  // Mean size of the Event bytes (what NATS and Redis store as the message).
  double mean_event_bytes() const { return mean_event_; }
  // Mean size of the kolabus Request frames (event + envelope).
  double mean_frame_bytes() const { return mean_frame_; }

  std::size_t event_size(std::uint64_t i) const { return at(i).event_size; }
  // Writes event i into `out` (event_size(i) bytes).
  void write_event(std::uint64_t i, std::uint8_t* out) const;
  std::vector<std::uint8_t> event(std::uint64_t i) const;

  std::size_t frame_size(std::uint64_t i) const { return at(i).frame_size; }
  // Writes the Request{corr = i + 1, Publish{event i}} frame into `out`.
  void write_frame(std::uint64_t i, std::uint8_t* out) const;

  // The index of the event with this 16-byte id, or nullopt if the id is not one of
  // this pool's.
  std::optional<std::uint64_t> index_of_id(const std::uint8_t* id) const;
  // Reads the id of an Event buffer (trusted: not verified) and maps it as above.
  std::optional<std::uint64_t> index_of_event(std::span<const std::uint8_t> event) const;

  // The village codes of event i.
  const std::vector<std::string>& regions(std::uint64_t i) const { return at(i).regions; }
  // How many of the events [0, n) have a region starting with one of `prefixes`
  // (empty: all of them): the events a kolabus consumer with that filter receives.
  std::uint64_t count_matching(std::uint64_t n, const std::vector<std::string>& prefixes) const;

 private:
  struct Template {
    std::size_t event_offset = 0, event_size = 0;
    std::size_t frame_offset = 0, frame_size = 0;
    std::size_t id_in_event = 0;    // offset of the 16 id bytes in the event
    std::size_t id_in_frame = 0;    // ... and in the frame
    std::size_t corr_in_frame = 0;  // offset of the 8 corr bytes in the frame
    std::vector<std::string> regions;
  };
  const Template& at(std::uint64_t i) const { return templates_[i % templates_.size()]; }
  void patch_id(std::uint64_t i, std::uint8_t* id) const;

  std::vector<Template> templates_;
  std::vector<std::uint8_t> events_;
  std::vector<std::uint8_t> frames_;
  std::uint64_t salt_ = 0;
  std::uint64_t base_ms_ = 0;  // the time part of every id
  double mean_event_ = 0;
  double mean_frame_ = 0;
};

// The offices of Medan (regency/city 12.71) a fan-out has consumers for: its
// kelurahan (10-digit codes) and kecamatan (6-digit codes), from the region table.
struct MedanRegions {
  std::string city = "1271";
  std::vector<std::string> kecamatan;
  std::vector<std::string> kelurahan;
};
MedanRegions medan_regions(const schemas::RegionTable& regions);

}  // namespace kolabus::bench
