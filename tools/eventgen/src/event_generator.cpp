#include <array>
#include <cstdio>

#include <flatbuffers/flatbuffers.h>

#include <schemas/events_generated.h>
#include <schemas/nik.h>
#include <tools/event_generator.h>

namespace kolabus::tools {

namespace {

constexpr TimeMs kDay = 24LL * 3600 * 1000;
constexpr TimeMs kYear = 365LL * kDay;

constexpr std::array kMaleNames = {"Budi",   "Andi",   "Rizky",  "Fajar", "Hendra", "Agus",
                                   "Dedi",   "Joko",   "Putra",  "Bayu",  "Rudi",   "Yusuf",
                                   "Doni",   "Arif",   "Ilham",  "Halim", "Irwan",  "Teguh",
                                   "Samuel", "Daniel", "Rahmat", "Fauzi", "Wahyu",  "Anton"};
constexpr std::array kFemaleNames = {"Siti",  "Dewi",     "Putri",  "Rina",    "Nur",   "Sri",
                                     "Ayu",   "Wulan",    "Intan",  "Maya",    "Fitri", "Lestari",
                                     "Ratna", "Nurhaya",  "Rosida", "Marlina", "Yanti", "Desi",
                                     "Maria", "Elisabet", "Aisyah", "Indah",   "Sari",  "Nova"};
constexpr std::array kFamilyNames = {"Siregar", "Nasution", "Lubis",    "Harahap",   "Simanjuntak",
                                     "Sitorus", "Ginting",  "Tarigan",  "Sembiring", "Hutagalung",
                                     "Pane",    "Daulay",   "Batubara", "Manurung",  "Situmorang",
                                     "Purba",   "Saragih",  "Damanik",  "Rangkuti",  "Pohan",
                                     "Wijaya",  "Santoso",  "Hasibuan", "Pulungan"};
constexpr std::array kFacilities = {"RSUD dr. Pirngadi Medan", "RSUP H. Adam Malik",
                                    "RS Columbia Asia Medan",  "RS Siloam Dhirga Surya",
                                    "Puskesmas Medan Johor",   "Puskesmas Helvetia",
                                    "Puskesmas Sunggal",       "Klinik Bersalin Sehati"};
constexpr std::array kCauses = {"Penyakit jantung",       "Stroke",      "Diabetes",    "Pneumonia",
                                "Kecelakaan lalu lintas", "Usia lanjut", "Tuberkulosis"};

std::string two(int v) {
  const unsigned u = static_cast<unsigned>(v) % 100;
  return {static_cast<char>('0' + u / 10), static_cast<char>('0' + u % 10)};
}

}  // namespace

EventGenerator::EventGenerator(const schemas::RegionTable& regions, GeneratorOptions options)
    : regions_(regions), options_(std::move(options)), rng_(options_.seed) {
  for (const auto* district : regions_.children(options_.city)) {
    for (const auto* village : regions_.children(district->code)) {
      city_villages_.emplace_back(village->code);
    }
  }
  KOLABUS_CHECK(!city_villages_.empty());
  for (const auto& v : city_villages_) {
    if (!options_.focus.empty() && v.compare(0, options_.focus.size(), options_.focus) == 0) {
      focus_villages_.push_back(v);
    }
  }
  const std::string province = options_.city.substr(0, 2);
  for (const auto* regency : regions_.children(province)) {
    if (regency->code != options_.city) province_regencies_.emplace_back(regency->code);
  }
  for (const auto* p : regions_.children("")) {
    if (p->code != province) other_provinces_.emplace_back(p->code);
  }
}

EventId EventGenerator::next_id() {
  // A UUIDv7 layout whose time is `now` and whose random part comes from the seed.
  EventId id;
  const auto ms = static_cast<std::uint64_t>(options_.now_ms);
  for (int i = 0; i < 6; ++i) id.bytes[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
  const std::uint64_t r1 = rng_(), r2 = (rng_() & ~0xffffULL) | (counter_++ & 0xffff);
  for (int i = 0; i < 2; ++i) id.bytes[6 + i] = static_cast<std::uint8_t>(r1 >> (8 * i));
  for (int i = 0; i < 8; ++i) id.bytes[8 + i] = static_cast<std::uint8_t>(r2 >> (8 * i));
  id.bytes[6] = static_cast<std::uint8_t>(0x70 | (id.bytes[6] & 0x0f));
  id.bytes[8] = static_cast<std::uint8_t>(0x80 | (id.bytes[8] & 0x3f));
  return id;
}

TimeMs EventGenerator::past(TimeMs max_back_ms, TimeMs min_back_ms) {
  return options_.now_ms - duration(min_back_ms, max_back_ms);
}

TimeMs EventGenerator::duration(TimeMs min_ms, TimeMs max_ms) {
  return std::uniform_int_distribution<TimeMs>(min_ms, max_ms)(rng_);
}

std::string EventGenerator::village_in_city() {
  const auto& pool = !focus_villages_.empty() && std::uniform_real_distribution<double>(
                                                     0, 1)(rng_) < options_.focus_share
                         ? focus_villages_
                         : city_villages_;
  std::uniform_int_distribution<std::size_t> d(0, pool.size() - 1);
  return pool[d(rng_)];
}

std::string EventGenerator::village_outside_city(bool same_province) {
  auto pick = [&](const std::vector<const schemas::Region*>& v) {
    std::uniform_int_distribution<std::size_t> d(0, v.size() - 1);
    return v[d(rng_)];
  };
  // Walk down from a regency (or a province) to one of its villages; a few
  // regencies have no villages listed yet, so try again.
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string regency;
    if (same_province && !province_regencies_.empty()) {
      std::uniform_int_distribution<std::size_t> d(0, province_regencies_.size() - 1);
      regency = province_regencies_[d(rng_)];
    } else {
      std::uniform_int_distribution<std::size_t> d(0, other_provinces_.size() - 1);
      auto regencies = regions_.children(other_provinces_[d(rng_)]);
      if (regencies.empty()) continue;
      regency = std::string(pick(regencies)->code);
    }
    auto districts = regions_.children(regency);
    if (districts.empty()) continue;
    auto villages = regions_.children(pick(districts)->code);
    if (villages.empty()) continue;
    return std::string(pick(villages)->code);
  }
  return village_in_city();
}

std::string EventGenerator::nik(const std::string& district, TimeMs born, bool female) {
  const auto d = schemas::from_epoch_ms(born);
  std::uniform_int_distribution<int> serial(1, 9999);
  char s[5];
  std::snprintf(s, sizeof s, "%04d", serial(rng_));
  return district.substr(0, 6) + two(d.day + (female ? 40 : 0)) + two(d.month) + two(d.year) + s;
}

std::string EventGenerator::kk(const std::string& district, TimeMs issued) {
  const auto d = schemas::from_epoch_ms(issued);
  std::uniform_int_distribution<int> serial(1, 9999);
  char s[5];
  std::snprintf(s, sizeof s, "%04d", serial(rng_));
  return district.substr(0, 6) + two(d.day) + two(d.month) + two(d.year) + s;
}

std::string EventGenerator::person_name(bool female) {
  auto pick = [&](const auto& arr) {
    std::uniform_int_distribution<std::size_t> d(0, arr.size() - 1);
    return std::string(arr[d(rng_)]);
  };
  std::string name = female ? pick(kFemaleNames) : pick(kMaleNames);
  if (std::uniform_int_distribution<int>(0, 3)(rng_) != 0) name += " " + pick(kFamilyNames);
  return name;
}

std::vector<std::uint8_t> EventGenerator::next() {
  const int r = std::uniform_int_distribution<int>(0, 99)(rng_);
  return make(r < 55 ? GenKind::kBirth : r < 75 ? GenKind::kDeath : GenKind::kMove);
}

std::vector<std::uint8_t> EventGenerator::make(GenKind kind) {
  using namespace kolabus::events;
  flatbuffers::FlatBufferBuilder fbb(512);
  const EventId id = next_id();
  const Uuid uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
  std::uniform_int_distribution<int> coin(0, 1);
  std::vector<std::string> regions;
  flatbuffers::Offset<void> payload;
  Payload type = Payload::NONE;
  TimeMs occurred = 0;

  switch (kind) {
    case GenKind::kBirth: {
      const std::string village = village_in_city();
      const bool girl = coin(rng_) == 1;
      occurred = past(30 * kDay, 2 * kDay);
      const TimeMs mother_born = occurred - duration(18 * kYear, 42 * kYear);
      const TimeMs father_born = mother_born - duration(0, 8 * kYear);
      const bool has_father = std::uniform_int_distribution<int>(0, 9)(rng_) != 0;
      std::uniform_int_distribution<int> facility(0, kFacilities.size() - 1);
      char cert[32];
      std::snprintf(cert, sizeof cert, "1271-LT-%08llu",
                    static_cast<unsigned long long>(rng_() % 100000000));
      payload = CreateBirthDirect(fbb, person_name(girl).c_str(), girl ? Sex::Female : Sex::Male,
                                  occurred, "Medan", village.c_str(),
                                  nik(village, mother_born, true).c_str(),
                                  has_father ? nik(village, father_born, false).c_str() : nullptr,
                                  kk(village, occurred - duration(30 * kDay, 10 * kYear)).c_str(),
                                  cert, kFacilities[facility(rng_)])
                    .Union();
      type = Payload::Birth;
      regions.push_back(village);
      break;
    }
    case GenKind::kDeath: {
      const std::string village = village_in_city();
      const bool female = coin(rng_) == 1;
      occurred = past(30 * kDay, 1 * kDay);
      const TimeMs born = occurred - duration(40 * kYear, 95 * kYear);
      std::uniform_int_distribution<int> cause(0, kCauses.size() - 1);
      char cert[32];
      std::snprintf(cert, sizeof cert, "1271-KM-%08llu",
                    static_cast<unsigned long long>(rng_() % 100000000));
      payload = CreateDeathDirect(fbb, nik(village, born, female).c_str(),
                                  person_name(female).c_str(), occurred, "Medan", village.c_str(),
                                  cert, "Keluarga", kCauses[cause(rng_)])
                    .Union();
      type = Payload::Death;
      regions.push_back(village);
      break;
    }
    case GenKind::kMove: {
      const int r = std::uniform_int_distribution<int>(0, 99)(rng_);
      std::string origin = village_in_city(), destination;
      MoveType move_type;
      if (r < 30) {  // within the kecamatan
        move_type = MoveType::WithinKecamatan;
        std::vector<std::string> same;
        for (const auto& v : city_villages_) {
          if (v.compare(0, 6, origin, 0, 6) == 0 && v != origin) same.push_back(v);
        }
        if (same.empty()) {
          move_type = MoveType::BetweenKecamatan;
          do destination = village_in_city();
          while (destination.compare(0, 6, origin, 0, 6) == 0);
        } else {
          destination = same[std::uniform_int_distribution<std::size_t>(0, same.size() - 1)(rng_)];
        }
      } else if (r < 65) {  // another kecamatan of the city
        move_type = MoveType::BetweenKecamatan;
        do destination = village_in_city();
        while (destination.compare(0, 6, origin, 0, 6) == 0);
      } else if (r < 85) {  // another regency of the province, either way
        move_type = MoveType::BetweenCities;
        destination = village_outside_city(true);
        if (coin(rng_) == 1) std::swap(origin, destination);
      } else {  // another province, either way
        move_type = MoveType::BetweenProvinces;
        destination = village_outside_city(false);
        if (coin(rng_) == 1) std::swap(origin, destination);
      }
      occurred = past(30 * kDay, 1 * kDay);
      const int people = std::uniform_int_distribution<int>(1, 5)(rng_);
      std::vector<std::string> niks;
      const TimeMs head_born = occurred - duration(25 * kYear, 60 * kYear);
      for (int i = 0; i < people; ++i) {
        const bool female = i == 1 || (i > 1 && coin(rng_) == 1);
        const TimeMs born =
            i < 2 ? head_born + i * 2 * kYear : occurred - duration(kYear, 20 * kYear);
        niks.push_back(nik(origin, born, female));
      }
      char skpwni[32];
      std::snprintf(skpwni, sizeof skpwni, "SKPWNI/%06llu",
                    static_cast<unsigned long long>(rng_() % 1000000));
      auto niks_vec = fbb.CreateVectorOfStrings(niks);
      auto kk_off = fbb.CreateString(kk(origin, head_born + 25 * kYear));
      auto o = fbb.CreateString(origin);
      auto d = fbb.CreateString(destination);
      auto s = fbb.CreateString(skpwni);
      payload = CreateMove(fbb, niks_vec, kk_off, o, d, occurred, s, move_type).Union();
      type = Payload::Move;
      regions.push_back(origin);
      regions.push_back(destination);
      break;
    }
  }
  const TimeMs recorded = std::min(options_.now_ms, occurred + duration(0, 3 * kDay));
  auto regions_vec = fbb.CreateVectorOfStrings(regions);
  fbb.Finish(CreateEvent(fbb, &uuid, 1, occurred, recorded, 0, regions_vec, type, payload),
             EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

}  // namespace kolabus::tools
