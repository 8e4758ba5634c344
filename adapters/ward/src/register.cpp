// The [[ward]] table, how an event becomes a register row, and the SQLite file.
#include "register.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <unistd.h>

#include <common/ids.h>
#include <common/private_files.h>
#include <schemas/regions.h>
#include <schemas/validate.h>

namespace kolabus::adapters::ward {
namespace {

Error config_error(const std::string& key, const std::string& what) {
  return Error{Errc::kInvalidArgument, "[[ward]] " + key + ": " + what};
}

bool valid_consumer_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Result<std::optional<std::string>> get_string(const toml::table& t, const std::string& key) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return std::optional<std::string>();
  auto v = n->value<std::string>();
  if (!n->is_string() || !v) return kolabus::unexpected(config_error(key, "must be a string"));
  return std::optional<std::string>(*v);
}

std::string uuid_string(const events::Uuid* u) {
  if (u == nullptr || u->bytes() == nullptr || u->bytes()->size() != 16) return {};
  return EventId::from_span(std::span<const std::uint8_t, 16>(u->bytes()->data(), 16)).to_string();
}

std::string join(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
  std::string out;
  if (v == nullptr) return out;
  for (const auto* s : *v) {
    if (!out.empty()) out += ',';
    out += s->str();
  }
  return out;
}

// The person fields of a birth, death or move payload.
void person(events::Payload type, const void* payload, Row& row) {
  switch (type) {
    case events::Payload::Birth: {
      const auto* b = static_cast<const events::Birth*>(payload);
      row.name = b->child_name()->str();
      if (b->child_nik() != nullptr && b->child_nik()->size() > 0) row.niks = b->child_nik()->str();
      return;
    }
    case events::Payload::Death: {
      const auto* d = static_cast<const events::Death*>(payload);
      row.name = d->name()->str();
      row.niks = d->nik()->str();
      return;
    }
    case events::Payload::Move:
      row.niks = join(static_cast<const events::Move*>(payload)->niks());
      return;
    case events::Payload::NONE:
    case events::Payload::Correction:
      return;
  }
}

}  // namespace

bool inside(const std::string& village, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return village.compare(0, p.size(), p) == 0; });
}

Result<WardConfig> parse_config(const toml::table& t, const AgencyContext& ctx) {
  static const std::set<std::string> kKnown = {"consumer", "regions", "start", "register",
                                               "window"};
  for (const auto& [k, v] : t) {
    if (kKnown.count(std::string(k.str())) == 0) {
      return kolabus::unexpected(config_error(std::string(k.str()), "unknown key"));
    }
  }
  WardConfig c;
  auto consumer = get_string(t, "consumer");
  if (!consumer) return kolabus::unexpected(consumer.error());
  if (!*consumer) return kolabus::unexpected(config_error("consumer", "required"));
  if (!valid_consumer_name(**consumer)) {
    return kolabus::unexpected(
        config_error("consumer", "'" + **consumer + "' must be 1-64 of [A-Za-z0-9._-]"));
  }
  c.consumer = **consumer;

  const toml::node* rn = t.get("regions");
  if (rn == nullptr) return kolabus::unexpected(config_error("regions", "required"));
  const toml::array* ra = rn->as_array();
  if (ra == nullptr || ra->empty()) {
    return kolabus::unexpected(
        config_error("regions", "must be a non-empty array of region prefixes"));
  }
  for (const auto& e : *ra) {
    auto v = e.value<std::string>();
    if (!e.is_string() || !v) {
      return kolabus::unexpected(config_error("regions", "must be an array of strings"));
    }
    const std::string& p = *v;
    const bool digits = !p.empty() && std::all_of(p.begin(), p.end(),
                                                  [](char ch) { return ch >= '0' && ch <= '9'; });
    if (!digits || !(p.size() == 2 || p.size() == 4 || p.size() == 6 || p.size() == 10)) {
      return kolabus::unexpected(
          config_error("regions", "'" + p + "' is not a region prefix (2, 4, 6 or 10 digits)"));
    }
    if (schemas::RegionTable::embedded().find(p) == nullptr) {
      return kolabus::unexpected(
          config_error("regions", "'" + p + "' is not in the Kemendagri list (edition " +
                                      std::string(schemas::RegionTable::kEdition) + ")"));
    }
    c.regions.push_back(p);
  }

  auto start = get_string(t, "start");
  if (!start) return kolabus::unexpected(start.error());
  if (!*start || **start == "earliest") {
    c.start = protocol::StartPolicy::Earliest;
  } else if (**start == "latest") {
    c.start = protocol::StartPolicy::Latest;
  } else {
    return kolabus::unexpected(config_error("start", "must be \"earliest\" or \"latest\""));
  }

  auto reg = get_string(t, "register");
  if (!reg) return kolabus::unexpected(reg.error());
  if (*reg && (*reg)->empty()) return kolabus::unexpected(config_error("register", "is empty"));
  c.register_path = *reg ? **reg : ctx.data_dir + "/register.sqlite";

  if (const toml::node* w = t.get("window")) {
    const auto v = w->value_exact<std::int64_t>();
    if (!w->is_integer() || !v || *v < 1 || *v > 10000) {
      return kolabus::unexpected(config_error("window", "must be an integer from 1 to 10000"));
    }
    c.window = static_cast<std::uint32_t>(*v);
  }
  return c;
}

void classify(const events::Event& ev, const std::vector<std::string>& prefixes, Row& row,
              bool& foreign) {
  row.kind = schemas::kind_name(ev.payload_type());
  row.occurred_at = ev.occurred_at();
  foreign = false;
  // The first of `villages` inside the prefixes, else (foreign) the first of them.
  auto pick = [&](const std::vector<std::string>& villages) {
    for (const auto& v : villages) {
      if (inside(v, prefixes)) return v;
    }
    foreign = true;
    return villages.empty() ? std::string() : villages.front();
  };
  switch (ev.payload_type()) {
    case events::Payload::Birth:
      row.change = "born";
      row.village = pick({ev.payload_as_Birth()->village_code()->str()});
      person(ev.payload_type(), ev.payload(), row);
      return;
    case events::Payload::Death:
      row.change = "died";
      row.village = pick({ev.payload_as_Death()->village_code()->str()});
      person(ev.payload_type(), ev.payload(), row);
      return;
    case events::Payload::Move: {
      const auto* m = ev.payload_as_Move();
      const std::string origin = m->origin_village()->str();
      const std::string dest = m->destination_village()->str();
      const bool in_origin = inside(origin, prefixes);
      const bool in_dest = inside(dest, prefixes);
      if (in_origin && in_dest) {
        row.change = "moved_within";
        row.village = dest;
      } else if (in_origin) {
        row.change = "moved_out";
        row.village = origin;
      } else {
        row.change = "moved_in";
        row.village = pick({dest});
      }
      person(ev.payload_type(), ev.payload(), row);
      return;
    }
    case events::Payload::Correction: {
      const auto* c = ev.payload_as_Correction();
      row.target_id = uuid_string(c->target_id());
      row.change = c->void_() ? "voided" : "corrected";
      std::vector<std::string> villages;
      if (!c->void_() && c->corrected() != nullptr) {
        villages = schemas::payload_villages(c->corrected_type(), c->corrected());
        person(c->corrected_type(), c->corrected(), row);
      }
      // A void names no village of its own: Event.regions carries the target's.
      std::vector<std::string> regions;
      for (const auto* r : *ev.regions()) regions.push_back(r->str());
      std::stable_partition(villages.begin(), villages.end(),
                            [&](const std::string& v) { return inside(v, prefixes); });
      villages.insert(villages.end(), regions.begin(), regions.end());
      row.village = pick(villages);
      return;
    }
    case events::Payload::NONE:
      break;
  }
  // The consumer verifies every kind before the handler runs: unreachable.
  row.change = "unknown";
  foreign = true;
}

// ---- Register -------------------------------------------------------------------

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS events(
  event_id TEXT PRIMARY KEY,
  sequence INTEGER NOT NULL,
  kind TEXT NOT NULL,
  change TEXT NOT NULL,
  village TEXT NOT NULL,
  name TEXT,
  niks TEXT,
  occurred_at INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  source TEXT,
  json TEXT,
  target_id TEXT
);
CREATE INDEX IF NOT EXISTS events_by_occurred_at ON events(occurred_at);
)sql";

Error sqlite_error(sqlite3* db, const std::string& what) {
  return Error{Errc::kIoError,
               what + ": " + (db != nullptr ? sqlite3_errmsg(db) : "out of memory")};
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

void bind_text(sqlite3_stmt* s, int i, const std::optional<std::string>& v) {
  if (v) {
    sqlite3_bind_text(s, i, v->data(), static_cast<int>(v->size()), SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_null(s, i);
  }
}

}  // namespace

Result<std::unique_ptr<Register>> Register::open(const std::string& path, OpenMode mode) {
  std::error_code ec;
  if (mode == OpenMode::kReadOnly && !std::filesystem::exists(path, ec)) {
    return kolabus::unexpected(Errc::kNotFound,
                               "register " + path + " does not exist (has the ward run yet?)");
  }
  if (mode == OpenMode::kReadWrite) {
    // Names and NIKs of residents: the file is 0600 (made here before SQLite opens it,
    // since SQLite would create it 0644 minus the umask; its -wal and -shm files take
    // the database file's mode), a new directory 0700. An existing directory is left
    // as it is: it may be the operator's.
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      if (auto made = make_private_dir(parent.string(), /*narrow=*/false); !made) {
        return kolabus::unexpected(made.error().code, "register: " + made.error().message);
      }
    }
    // A register an older release made (0644) is narrowed, with its -wal and -shm.
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      const std::string file = path + suffix;
      if (!std::filesystem::exists(file, ec)) continue;
      auto was = narrow_file(file);
      if (!was) return kolabus::unexpected(was.error().code, "register: " + was.error().message);
      if (*was) {
        spdlog::warn("register file {} was mode {}, open to other users; it is now {}", file,
                     mode_text(**was), mode_text(**was & 0700));
      }
    }
    auto fd = open_private_file(path);
    if (!fd) return kolabus::unexpected(fd.error().code, "register: " + fd.error().message);
    ::close(*fd);
  }
  sqlite3* db = nullptr;
  const int flags = mode == OpenMode::kReadOnly ? SQLITE_OPEN_READONLY
                                                : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if (sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    Error e = sqlite_error(db, "register " + path);
    sqlite3_close(db);
    return kolabus::unexpected(std::move(e));
  }
  std::unique_ptr<Register> r(new Register(db));
  sqlite3_busy_timeout(db, 5000);
  if (mode == OpenMode::kReadWrite) {
    // WAL: the report reads while the adapter writes. FULL: a commit is on disk before
    // the inbox marks the event processed, or the event would be lost from the register.
    for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", kSchema}) {
      if (auto s = r->exec(sql); !s) {
        return kolabus::unexpected(Errc::kIoError, "register " + path + ": " + s.error().message);
      }
    }
  }
  return r;
}

Register::~Register() { sqlite3_close(db_); }

Status Register::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg != nullptr ? msg : sqlite3_errmsg(db_);
    sqlite3_free(msg);
    return kolabus::unexpected(Errc::kIoError, m);
  }
  return {};
}

Result<bool> Register::insert(const Row& row) {
  Stmt st;
  const char* sql =
      "INSERT INTO events(event_id, sequence, kind, change, village, name, niks, occurred_at, "
      "received_at, source, json, target_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
      "?11, ?12) ON CONFLICT(event_id) DO NOTHING";
  if (sqlite3_prepare_v2(db_, sql, -1, &st.s, nullptr) != SQLITE_OK) {
    return kolabus::unexpected(sqlite_error(db_, "prepare insert"));
  }
  bind_text(st.s, 1, row.event_id);
  sqlite3_bind_int64(st.s, 2, static_cast<sqlite3_int64>(row.sequence));
  bind_text(st.s, 3, row.kind);
  bind_text(st.s, 4, row.change);
  bind_text(st.s, 5, row.village);
  bind_text(st.s, 6, row.name);
  bind_text(st.s, 7, row.niks);
  sqlite3_bind_int64(st.s, 8, row.occurred_at);
  sqlite3_bind_int64(st.s, 9, row.received_at);
  bind_text(st.s, 10, row.source);
  bind_text(st.s, 11, row.json);
  bind_text(st.s, 12, row.target_id);

  if (auto s = exec("BEGIN IMMEDIATE"); !s) {
    return kolabus::unexpected(Errc::kIoError, "begin: " + s.error().message);
  }
  if (sqlite3_step(st.s) != SQLITE_DONE) {
    Error e = sqlite_error(db_, "insert " + row.event_id);
    (void)exec("ROLLBACK");
    return kolabus::unexpected(std::move(e));
  }
  const bool added = sqlite3_changes(db_) > 0;
  if (auto s = exec("COMMIT"); !s) {
    (void)exec("ROLLBACK");
    return kolabus::unexpected(Errc::kIoError, "commit: " + s.error().message);
  }
  return added;
}

}  // namespace kolabus::adapters::ward
