#include "output.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include <flatbuffers/flatbuffers.h>
#include <unistd.h>

#include "commands.h"
#include <common/aligned_bytes.h>
#include <schemas/events_generated.h>
#include <schemas/json_codec.h>
#include <schemas/log_generated.h>
#include <schemas/validate.h>

namespace kolabus::cli {

namespace {

struct KindName {
  const char* name;
  events::Payload kind;
};
constexpr KindName kKinds[] = {
    {"birth", events::Payload::Birth},
    {"death", events::Payload::Death},
    {"move", events::Payload::Move},
};

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  if (!all_digits(s)) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

std::string bytes_text(const flatbuffers::String* s) {
  return s != nullptr ? s->str() : std::string();
}

// The root of verified LogRecord bytes, or nullptr; read from a copy in `storage` when
// `record` is not 8-byte aligned.
const log::LogRecord* verified_record(std::string_view record, AlignedBytes& storage) {
  const auto bytes = aligned(record, storage);
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!verifier.VerifyBuffer<log::LogRecord>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<log::LogRecord>(bytes.data());
}

std::string payload_text(events::Payload type, const void* payload) {
  if (payload == nullptr) return "";
  switch (type) {
    case events::Payload::Birth: {
      const auto* b = static_cast<const events::Birth*>(payload);
      return bytes_text(b->child_name()) + " (born to " + bytes_text(b->mother_nik()) + ")";
    }
    case events::Payload::Death: {
      const auto* d = static_cast<const events::Death*>(payload);
      return bytes_text(d->name()) + " (NIK " + bytes_text(d->nik()) + ")";
    }
    case events::Payload::Move: {
      const auto* m = static_cast<const events::Move*>(payload);
      std::string out;
      const std::size_t n = m->niks() != nullptr ? m->niks()->size() : 0;
      for (std::size_t i = 0; i < n && i < 3; ++i) {
        out += (i > 0 ? ", " : "") + m->niks()->Get(static_cast<flatbuffers::uoffset_t>(i))->str();
      }
      if (n > 3) out += " +" + std::to_string(n - 3) + " more";
      return out + " " + bytes_text(m->origin_village()) + " -> " +
             bytes_text(m->destination_village());
    }
    case events::Payload::Correction: {
      const auto* c = static_cast<const events::Correction*>(payload);
      const std::string target = c->target_id() != nullptr
                                     ? EventId::from_span(std::span<const std::uint8_t, 16>(
                                                              c->target_id()->bytes()->data(), 16))
                                           .to_string()
                                     : "?";
      if (c->void_()) return "voids " + target + ": " + bytes_text(c->reason());
      return "corrects " + target + " (" + payload_text(c->corrected_type(), c->corrected()) +
             "): " + bytes_text(c->reason());
    }
    case events::Payload::NONE:
      return "";
  }
  return "";
}

}  // namespace

void add_connect_options(CLI::App* cmd, ConnectArgs& args) {
  if (const char* b = std::getenv("KOLABUS_BROKER")) args.broker = b;
  cmd->add_option("-b,--broker", args.broker, "broker endpoint (env KOLABUS_BROKER)")
      ->capture_default_str();
  cmd->add_option("--timeout", args.timeout_s, "seconds to wait for each answer of the broker")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--json", args.json, "JSON output, one object per line, for scripts");
  add_security_options(cmd, args.security);
}

Result<std::unique_ptr<client::AdminClient>> connect_admin(const ConnectArgs& args) {
  const auto ms = std::max<long>(1, static_cast<long>(args.timeout_s * 1000));
  auto curve = load_curve(args.security);
  if (!curve) return unexpected(curve.error());
  return client::AdminClient::connect(args.broker, std::chrono::milliseconds(ms),
                                      std::move(*curve));
}

int report_connect_error(std::string_view command, const Error& error) {
  std::cerr << "kolabus " << command << ": " << error.message << "\n";
  return kUsage;
}

int report_error(std::string_view command, const Error& error) {
  std::cerr << "kolabus " << command << ": " << error.message << "\n";
  switch (error.code) {
    case Errc::kNotFound:
      return kNotFound;
    case Errc::kUnavailable:
      return kUnavailable;
    case Errc::kInvalidArgument:
      return kRefused;
    case Errc::kCorruption:
    case Errc::kIoError:
    case Errc::kBusy:
    case Errc::kInternal:
      return kInternal;
  }
  return kInternal;
}

Result<TimeMs> parse_time(std::string_view text) {
  const std::string shown(text);
  auto bad = [&](const std::string& why) {
    return unexpected(Errc::kInvalidArgument,
                      "'" + shown + "' is not a time (" + why +
                          "); give 2026-11-27T10:00:00Z (UTC), 2026-11-27 or epoch milliseconds");
  };
  if (all_digits(text)) {
    TimeMs ms = 0;
    if (!parse_number(text, ms)) return bad("too large");
    return ms;
  }
  // YYYY-MM-DD
  if (text.size() < 10 || text[4] != '-' || text[7] != '-') return bad("no YYYY-MM-DD date");
  int y = 0;
  unsigned mo = 0, d = 0;
  if (!parse_number(text.substr(0, 4), y) || !parse_number(text.substr(5, 2), mo) ||
      !parse_number(text.substr(8, 2), d)) {
    return bad("no YYYY-MM-DD date");
  }
  static constexpr unsigned kMonthDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kMonthDays[mo - 1] + (mo == 2 && leap(y) ? 1u : 0u)) {
    return bad("no such date");
  }
  TimeMs ms = days_from_civil(y, mo, d) * 86'400'000;
  std::string_view rest = text.substr(10);
  if (rest.empty()) return ms;
  if (rest[0] != 'T' && rest[0] != 't' && rest[0] != ' ') return bad("expected T after the date");
  rest.remove_prefix(1);
  // HH:MM[:SS[.fff]]
  unsigned hh = 0, mm = 0, ss = 0, frac_ms = 0;
  if (rest.size() < 5 || rest[2] != ':' || !parse_number(rest.substr(0, 2), hh) ||
      !parse_number(rest.substr(3, 2), mm)) {
    return bad("expected HH:MM after T");
  }
  rest.remove_prefix(5);
  if (!rest.empty() && rest[0] == ':') {
    if (rest.size() < 3 || !parse_number(rest.substr(1, 2), ss)) return bad("bad seconds");
    rest.remove_prefix(3);
    if (!rest.empty() && (rest[0] == '.' || rest[0] == ',')) {
      std::size_t n = 1;
      unsigned scale = 100;
      while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n]))) {
        frac_ms += static_cast<unsigned>(rest[n] - '0') * scale;
        scale /= 10;
        ++n;
      }
      if (n == 1) return bad("bad fraction of a second");
      rest.remove_prefix(n);
    }
  }
  if (hh > 23 || mm > 59 || ss > 60) return bad("no such time of day");
  ms += ((hh * 60 + mm) * 60 + std::min(ss, 59u)) * 1000LL + frac_ms;
  // Zone: none or Z is UTC; ±HH:MM or ±HHMM is an offset east of UTC.
  if (rest.empty() || rest == "Z" || rest == "z") return ms;
  if (rest[0] != '+' && rest[0] != '-') return bad("unreadable time zone");
  const int sign = rest[0] == '+' ? 1 : -1;
  rest.remove_prefix(1);
  unsigned oh = 0, om = 0;
  if (rest.size() == 5 && rest[2] == ':') {
    if (!parse_number(rest.substr(0, 2), oh) || !parse_number(rest.substr(3, 2), om)) {
      return bad("unreadable time zone");
    }
  } else if (rest.size() == 4 || rest.size() == 2) {
    if (!parse_number(rest.substr(0, 2), oh) ||
        (rest.size() == 4 && !parse_number(rest.substr(2, 2), om))) {
      return bad("unreadable time zone");
    }
  } else {
    return bad("unreadable time zone");
  }
  if (oh > 14 || om > 59) return bad("no such time zone offset");
  return ms - sign * static_cast<TimeMs>((oh * 60 + om) * 60'000);
}

std::string format_time(TimeMs t) {
  if (t == 0) return "-";
  const std::time_t secs = static_cast<std::time_t>(t / 1000 - (t % 1000 < 0 ? 1 : 0));
  std::tm tm{};
  if (gmtime_r(&secs, &tm) == nullptr) return std::to_string(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string format_age(std::int64_t ms) {
  if (ms <= 0) return "-";
  if (ms < 1000) return std::to_string(ms) + "ms";
  const std::int64_t s = ms / 1000;
  auto two = [](std::int64_t v) { return (v < 10 ? "0" : "") + std::to_string(v); };
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + two(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + two(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + two(s % 86400 / 3600) + "h";
}

Result<Position> parse_position(std::string_view text) {
  std::uint64_t n = 0;
  if (all_digits(text) && parse_number(text, n) && n < 1'000'000'000'000ULL) {
    if (n == 0) {
      return unexpected(Errc::kInvalidArgument, "sequences start at 1 (0 is no event)");
    }
    return Position{n, 0};
  }
  auto t = parse_time(text);
  if (!t) return unexpected(t.error());
  return Position{0, *t};
}

Result<std::vector<std::uint8_t>> parse_kinds(const std::vector<std::string>& names) {
  std::vector<std::uint8_t> out;
  for (const auto& list : names) {
    std::string_view rest = list;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      std::string name(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (name.empty()) continue;
      const auto* k = std::find_if(std::begin(kKinds), std::end(kKinds),
                                   [&](const KindName& kn) { return name == kn.name; });
      if (k == std::end(kKinds)) {
        return unexpected(Errc::kInvalidArgument,
                          "unknown kind '" + name + "': give birth, death or move");
      }
      const auto v = static_cast<std::uint8_t>(k->kind);
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<std::string>> parse_regions(const std::vector<std::string>& codes) {
  std::vector<std::string> out;
  for (const auto& list : codes) {
    std::string_view rest = list;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string given(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (given.empty()) continue;
      std::string code;
      for (char c : given) {
        if (c != '.') code.push_back(c);
      }
      if (!all_digits(code) ||
          !(code.size() == 2 || code.size() == 4 || code.size() == 6 || code.size() == 10)) {
        return unexpected(Errc::kInvalidArgument,
                          "region '" + given +
                              "' is not a Kemendagri code prefix of 2, 4, 6 or 10 digits "
                              "(province 12, city 1271, district 127101, village 1271011001)");
      }
      if (std::find(out.begin(), out.end(), code) == out.end()) out.push_back(code);
    }
  }
  return out;
}

std::vector<std::string> kind_names(const std::vector<std::uint8_t>& kinds) {
  std::vector<std::string> out;
  for (auto k : kinds) {
    const auto* it = std::find_if(std::begin(kKinds), std::end(kKinds), [&](const KindName& kn) {
      return static_cast<std::uint8_t>(kn.kind) == k;
    });
    out.push_back(it != std::end(kKinds) ? std::string(it->name) : "kind" + std::to_string(k));
  }
  return out;
}

std::string kinds_text(const std::vector<std::uint8_t>& kinds) {
  if (kinds.empty()) return "*";
  std::string out;
  for (const auto& n : kind_names(kinds)) out += (out.empty() ? "" : ",") + n;
  return out;
}

namespace {

const char* policy_name(client::SeekPolicy p) {
  switch (p) {
    case client::SeekPolicy::kEarliest:
      return "earliest";
    case client::SeekPolicy::kLatest:
      return "latest";
    case client::SeekPolicy::kAtSequence:
      return "sequence";
    case client::SeekPolicy::kAtTime:
      return "time";
  }
  return "?";
}

}  // namespace

nlohmann::ordered_json consumer_json(const client::ConsumerInfoView& c) {
  nlohmann::ordered_json start{{"policy", policy_name(c.start)}};
  if (c.start == client::SeekPolicy::kAtSequence) start["sequence"] = c.start_sequence;
  if (c.start == client::SeekPolicy::kAtTime) start["time"] = c.start_time;
  return nlohmann::ordered_json{{"name", c.name},
                                {"owner", c.owner},
                                {"kinds", kind_names(c.filter.kinds)},
                                {"regions", c.filter.regions},
                                {"start", start},
                                {"ack_wait_ms", c.ack_wait_ms},
                                {"max_deliver", c.max_deliver},
                                {"ack_floor", c.ack_floor},
                                {"next_sequence", c.next_sequence},
                                {"pending", c.pending},
                                {"lag", c.lag},
                                {"oldest_unacked_age_ms", c.oldest_unacked_age_ms},
                                {"clients", c.clients},
                                {"dead_letters", c.dead_letters},
                                {"paused", c.paused}};
}

Result<nlohmann::ordered_json> record_json(schemas::JsonCodec& codec, std::string_view record) {
  AlignedBytes copy;
  const auto* rec = verified_record(record, copy);
  if (rec == nullptr) {
    return unexpected(Errc::kCorruption, "the broker sent a log record that does not verify");
  }
  const auto* ev = rec->event();
  return event_json(codec, rec->sequence(), rec->received_at(), bytes_text(rec->source()),
                    ev != nullptr ? std::span<const std::uint8_t>(ev->data(), ev->size())
                                  : std::span<const std::uint8_t>());
}

nlohmann::ordered_json event_json(schemas::JsonCodec& codec, std::uint64_t sequence,
                                  TimeMs received_at, std::string_view source,
                                  std::span<const std::uint8_t> event) {
  nlohmann::ordered_json j{
      {"sequence", sequence}, {"received_at", received_at}, {"source", std::string(source)}};
  auto text = codec.to_json(event);
  if (text) {
    j["event"] = nlohmann::ordered_json::parse(*text);
  } else {
    j["event"] = nullptr;
    j["error"] = text.error().message;
  }
  return j;
}

Result<RecordSummary> summarize_record(std::string_view record) {
  AlignedBytes copy;
  const auto* rec = verified_record(record, copy);
  if (rec == nullptr) {
    return unexpected(Errc::kCorruption, "the broker sent a log record that does not verify");
  }
  const auto* ev = rec->event();
  return summarize_event(rec->sequence(), rec->received_at(), bytes_text(rec->source()),
                         ev != nullptr ? std::span<const std::uint8_t>(ev->data(), ev->size())
                                       : std::span<const std::uint8_t>());
}

RecordSummary summarize_event(std::uint64_t sequence, TimeMs received_at, std::string_view source,
                              std::span<const std::uint8_t> event) {
  RecordSummary s;
  s.sequence = sequence;
  s.received_at = received_at;
  s.source = std::string(source);
  s.kind = "unknown";
  // Nested bytes may sit at any 4-byte boundary: read them from an aligned copy.
  const std::vector<std::uint8_t> bytes(event.begin(), event.end());
  const auto* ev = schemas::verified_event(bytes);
  if (ev == nullptr) {
    s.text = "(an event this tool cannot read: a newer kind?)";
    return s;
  }
  s.kind = schemas::kind_name(ev->payload_type());
  if (ev->regions() != nullptr) {
    for (const auto* r : *ev->regions()) s.regions += (s.regions.empty() ? "" : ",") + r->str();
  }
  if (ev->id() != nullptr) {
    s.event_id =
        EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16))
            .to_string();
  }
  s.text = payload_text(ev->payload_type(), ev->payload());
  return s;
}

std::string summary_line(const RecordSummary& s) {
  return std::to_string(s.sequence) + "  " + format_time(s.received_at) + "  " + s.kind + "  " +
         s.regions + "  " + s.text;
}

std::string Table::render() const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

Progress::Progress() : enabled_(::isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() { finish(); }

void Progress::update(std::uint64_t events, std::uint64_t at, std::uint64_t first, std::uint64_t to,
                      bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  std::string line = "\r\033[K";
  if (to >= first && first > 0) {
    const double span = static_cast<double>(to - first + 1);
    const double done = at <= first ? 0.0 : static_cast<double>(std::min(at, to + 1) - first);
    const int pct = static_cast<int>(100.0 * done / span);
    constexpr int kWidth = 30;
    const int filled = pct * kWidth / 100;
    line += "[" + std::string(static_cast<std::size_t>(filled), '#') +
            std::string(static_cast<std::size_t>(kWidth - filled), '.') + "] " +
            std::to_string(pct) + "%  ";
    // `at` is the next sequence to read: everything before it has been looked at.
    line += std::to_string(events) + " events  sequence " + std::to_string(std::min(at - 1, to)) +
            "/" + std::to_string(to);
  } else {
    line += std::to_string(events) + " events  sequence " + std::to_string(at);
  }
  std::cerr << line << std::flush;
  drawn_ = true;
}

void Progress::finish() {
  if (enabled_ && drawn_) std::cerr << "\r\033[K" << std::flush;
  drawn_ = false;
}

}  // namespace kolabus::cli
