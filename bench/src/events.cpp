#include "events.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <random>

#include <flatbuffers/flatbuffers.h>

#include <common/result.h>
#include <schemas/events_generated.h>
#include <schemas/protocol_generated.h>
#include <tools/event_generator.h>

namespace kolabus::bench {

namespace {

namespace ev = kolabus::events;

constexpr std::array kStreets = {
    "Sisingamangaraja", "Gatot Subroto",    "Jamin Ginting", "Jenderal Sudirman", "Diponegoro",
    "Imam Bonjol",      "Brigjend Katamso", "Setia Budi",    "Karya Wisata",      "Pancing",
    "Letda Sujono",     "Krakatau",         "Marelan Raya",  "Yos Sudarso",       "Ahmad Yani",
    "Kapten Muslim",    "Gagak Hitam",      "Ring Road",     "Ir. H. Juanda",     "MH Thamrin"};
constexpr std::array kRoman = {"I",   "II",   "III", "IV", "V",  "VI",
                               "VII", "VIII", "IX",  "X",  "XI", "XII"};
constexpr std::array kLandmarks = {"dekat Masjid Raya",     "seberang pajak",
                                   "samping sekolah dasar", "belakang kantor lurah",
                                   "dekat gereja",          "ujung gang buntu"};
constexpr std::array kRelations = {"anak kandung",      "suami",   "istri", "saudara kandung",
                                   "kepala lingkungan", "tetangga"};

// The last 8 bytes of an id: variant bits 10, a 22-bit salt, a 40-bit index.
constexpr std::uint64_t kIndexBits = 40;
constexpr std::uint64_t kIndexMask = (1ULL << kIndexBits) - 1;
constexpr std::uint64_t kSaltMask = (1ULL << 22) - 1;
// A corr value that cannot occur by chance in a template frame, to find its offset.
constexpr std::uint64_t kCorrPlaceholder = 0x0123456789abcdefULL;

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(const std::string& s, std::size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string name_of(const schemas::RegionTable& regions, std::string_view code) {
  const schemas::Region* r = regions.find(code);
  return r != nullptr ? std::string(r->name) : std::string(code);
}

// A Medan street address in the given village, long enough to be cut to any length
// up to the broker's 200-byte limit for free text.
std::string address(const schemas::RegionTable& regions, const std::string& village,
                    std::mt19937_64& rng) {
  auto pick = [&](const auto& arr) {
    return std::string(arr[std::uniform_int_distribution<std::size_t>(0, arr.size() - 1)(rng)]);
  };
  auto num = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  char rt[32];
  std::snprintf(rt, sizeof rt, "RT %03d/RW %03d", num(1, 15), num(1, 12));
  std::string s =
      "Jl. " + pick(kStreets) + " No. " + std::to_string(num(1, 250)) + ", Gg. " + pick(kStreets) +
      ", Lingkungan " + pick(kRoman) + ", " + rt + ", Kelurahan " + name_of(regions, village) +
      ", Kecamatan " + name_of(regions, village.substr(0, 6)) + ", " +
      name_of(regions, village.substr(0, 4)) + ", " + name_of(regions, village.substr(0, 2)) +
      " 20" + std::to_string(num(111, 373)) + " (" + pick(kLandmarks) + "), telp. (061) " +
      std::to_string(num(4100000, 8999999));
  return s;
}

std::vector<std::uint8_t> pack(const ev::EventT& e) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  fbb.Finish(ev::Event::Pack(fbb, &e), ev::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// The two free-text fields a birth or a death can be padded in, with their text.
struct PadFields {
  std::string* first = nullptr;
  std::string* second = nullptr;
  std::string first_text, second_text;
};

std::optional<PadFields> pad_fields(const schemas::RegionTable& regions, ev::EventT& e,
                                    std::mt19937_64& rng) {
  PadFields p;
  if (auto* b = e.payload.AsBirth()) {
    p.first = &b->place_of_birth;
    p.second = &b->reporting_facility;
    p.first_text = b->reporting_facility + ", " + address(regions, b->village_code, rng);
    p.second_text = b->reporting_facility + ", " + address(regions, b->village_code, rng);
  } else if (auto* d = e.payload.AsDeath()) {
    p.first = &d->place_of_death;
    p.second = &d->reporter;
    p.first_text = "Rumah duka, " + address(regions, d->village_code, rng);
    p.second_text = "Keluarga (" +
                    std::string(kRelations[std::uniform_int_distribution<std::size_t>(0, 5)(rng)]) +
                    "), " + address(regions, d->village_code, rng);
  } else {
    return std::nullopt;
  }
  return p;
}

// Fills the two fields with `budget` bytes of text in all (each at most 200).
void set_padding(PadFields& p, std::size_t budget) {
  const std::size_t a = std::min<std::size_t>({200, p.first_text.size(), (budget + 1) / 2});
  *p.first = truncate_utf8(p.first_text, a);
  *p.second = truncate_utf8(p.second_text, std::min<std::size_t>(200, budget - p.first->size()));
}

void put_be64(std::uint8_t* out, std::uint64_t v) {
  for (int k = 0; k < 8; ++k) out[k] = static_cast<std::uint8_t>(v >> (56 - 8 * k));
}

std::uint64_t get_be64(const std::uint8_t* in) {
  std::uint64_t v = 0;
  for (int k = 0; k < 8; ++k) v = v << 8 | in[k];
  return v;
}

}  // namespace

EventPool EventPool::generate(const schemas::RegionTable& regions, const Options& options) {
  KOLABUS_CHECK(options.distinct > 0);
  const TimeMs now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  tools::EventGenerator gen(regions, tools::GeneratorOptions(options.seed, "1271", now));
  std::mt19937_64 rng(options.seed * 7919 + 17);

  // Pass 1: the events, moves with a long SKPWNI number (they have nothing else to
  // pad), and the size each birth and death must reach for the target mean.
  std::vector<ev::EventT> events(options.distinct);
  std::vector<std::size_t> sizes(options.distinct);
  std::size_t move_bytes = 0, padded = 0;
  for (std::size_t j = 0; j < options.distinct; ++j) {
    const auto bytes = gen.next();
    ev::GetEvent(bytes.data())->UnPackTo(&events[j]);
    if (auto* m = events[j].payload.AsMove()) {
      char no[96];
      std::snprintf(no, sizeof no, "SKPWNI/%s/%06u/%s/%d/DISDUKCAPIL-MEDAN",
                    m->origin_village.substr(0, 6).c_str(), static_cast<unsigned>(rng() % 1000000),
                    kRoman[rng() % 12], 2024 + int(rng() % 2));
      m->skpwni_no = no;
      move_bytes += pack(events[j]).size();
    } else {
      ++padded;
    }
  }
  const double target_padded =
      padded == 0 ? 0
                  : (static_cast<double>(options.target_mean_bytes * options.distinct) -
                     static_cast<double>(move_bytes)) /
                        static_cast<double>(padded);

  EventPool pool;
  pool.salt_ = std::random_device{}() & kSaltMask;
  pool.base_ms_ = static_cast<std::uint64_t>(now);
  pool.templates_.resize(options.distinct);
  std::size_t event_total = 0, frame_total = 0;
  for (std::size_t j = 0; j < options.distinct; ++j) {
    ev::EventT& e = events[j];
    if (auto pad = pad_fields(regions, e, rng)) {
      // Pass 2: measure with no padding, then add what the target asks (a little
      // random spread, as real records vary).
      set_padding(*pad, 0);
      const auto bare = static_cast<double>(pack(e).size());
      const double want =
          target_padded + std::uniform_real_distribution<double>(-48, 48)(rng) - bare;
      set_padding(*pad, want > 0 ? static_cast<std::size_t>(want) : 0);
    }
    const auto bytes = pack(e);
    Template& t = pool.templates_[j];
    t.regions = e.regions;
    t.event_offset = pool.events_.size();
    t.event_size = bytes.size();
    const auto* root = ev::GetEvent(bytes.data());
    t.id_in_event =
        static_cast<std::size_t>(reinterpret_cast<const std::uint8_t*>(root->id()) - bytes.data());
    pool.events_.insert(pool.events_.end(), bytes.begin(), bytes.end());

    flatbuffers::FlatBufferBuilder fbb(bytes.size() + 128);
    fbb.ForceVectorAlignment(bytes.size(), sizeof(std::uint8_t), 8);
    auto vec = fbb.CreateVector(bytes);
    auto publish = protocol::CreatePublish(fbb, vec);
    fbb.Finish(protocol::CreateRequest(fbb, 1, kCorrPlaceholder, protocol::Command::Publish,
                                       publish.Union()),
               protocol::RequestIdentifier());
    const std::uint8_t* frame = fbb.GetBufferPointer();
    t.frame_offset = pool.frames_.size();
    t.frame_size = fbb.GetSize();
    const auto* req = protocol::GetRequest(frame);
    t.id_in_frame = static_cast<std::size_t>(req->command_as_Publish()->event()->data() - frame) +
                    t.id_in_event;
    std::uint8_t placeholder[8];
    std::memcpy(placeholder, &kCorrPlaceholder, 8);  // FlatBuffers scalars: little-endian
    const auto* at = std::search(frame, frame + t.frame_size, placeholder, placeholder + 8);
    KOLABUS_CHECK(at != frame + t.frame_size);
    t.corr_in_frame = static_cast<std::size_t>(at - frame);
    pool.frames_.insert(pool.frames_.end(), frame, frame + t.frame_size);
    event_total += t.event_size;
    frame_total += t.frame_size;
  }
  pool.mean_event_ = static_cast<double>(event_total) / static_cast<double>(options.distinct);
  pool.mean_frame_ = static_cast<double>(frame_total) / static_cast<double>(options.distinct);
  return pool;
}

void EventPool::patch_id(std::uint64_t i, std::uint8_t* id) const {
  KOLABUS_CHECK(i <= kIndexMask);
  // A UUIDv7 layout: the pool's time, version 7, variant, salt, index. Ids grow with
  // i, as a publisher's UUIDv7 ids grow with time.
  for (int k = 0; k < 6; ++k) id[k] = static_cast<std::uint8_t>(base_ms_ >> (40 - 8 * k));
  id[6] = 0x70;
  id[7] = 0;
  put_be64(id + 8, (2ULL << 62) | (salt_ << kIndexBits) | i);
}

void EventPool::write_event(std::uint64_t i, std::uint8_t* out) const {
  const Template& t = at(i);
  std::memcpy(out, events_.data() + t.event_offset, t.event_size);
  patch_id(i, out + t.id_in_event);
}

std::vector<std::uint8_t> EventPool::event(std::uint64_t i) const {
  std::vector<std::uint8_t> out(event_size(i));
  write_event(i, out.data());
  return out;
}

void EventPool::write_frame(std::uint64_t i, std::uint8_t* out) const {
  const Template& t = at(i);
  std::memcpy(out, frames_.data() + t.frame_offset, t.frame_size);
  const std::uint64_t corr = i + 1;
  std::memcpy(out + t.corr_in_frame, &corr, 8);
  patch_id(i, out + t.id_in_frame);
}

std::optional<std::uint64_t> EventPool::index_of_id(const std::uint8_t* id) const {
  const std::uint64_t tail = get_be64(id + 8);
  if ((tail >> 62) != 2 || ((tail >> kIndexBits) & kSaltMask) != salt_) return std::nullopt;
  return tail & kIndexMask;
}

std::optional<std::uint64_t> EventPool::index_of_event(std::span<const std::uint8_t> event) const {
  if (event.size() < 8) return std::nullopt;
  const auto* id = ev::GetEvent(event.data())->id();
  if (id == nullptr) return std::nullopt;
  return index_of_id(id->bytes()->data());
}

std::uint64_t EventPool::count_matching(std::uint64_t n,
                                        const std::vector<std::string>& prefixes) const {
  auto matches = [&](const Template& t) {
    if (prefixes.empty()) return true;
    for (const auto& r : t.regions) {
      for (const auto& p : prefixes) {
        if (r.compare(0, p.size(), p) == 0) return true;
      }
    }
    return false;
  };
  const std::uint64_t d = templates_.size();
  std::uint64_t in_pool = 0, in_rest = 0;
  for (std::uint64_t j = 0; j < d; ++j) {
    if (!matches(templates_[j])) continue;
    ++in_pool;
    if (j < n % d) ++in_rest;
  }
  return (n / d) * in_pool + in_rest;
}

MedanRegions medan_regions(const schemas::RegionTable& regions) {
  MedanRegions m;
  for (const auto* district : regions.children(m.city)) {
    m.kecamatan.emplace_back(district->code);
    for (const auto* village : regions.children(district->code)) {
      m.kelurahan.emplace_back(village->code);
    }
  }
  return m;
}

}  // namespace kolabus::bench
