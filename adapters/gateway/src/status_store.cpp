#include "status_store.h"

#include <sqlite3.h>

#include <schemas/protocol_generated.h>

namespace kolabus::adapters::gateway {

namespace {

constexpr int kBusyTimeoutMs = 5000;  // gateways of one agency share the file

// A prepared statement, finalized when it goes out of scope.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() const { return stmt_; }
  void bind_id(int i, const EventId& id) {
    sqlite3_bind_blob(stmt_, i, id.bytes.data(), static_cast<int>(id.bytes.size()), SQLITE_STATIC);
  }
  void bind_int(int i, std::int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void bind_text(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  std::string error() const { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

Error db_error(sqlite3* db, const std::string& what) {
  return Error{Errc::kIoError, "status store: " + what + ": " + sqlite3_errmsg(db)};
}

std::string refusal_code_name(std::uint16_t code) {
  const char* name = protocol::EnumNameErrorCode(static_cast<protocol::ErrorCode>(code));
  if (name == nullptr || *name == '\0') return "Error" + std::to_string(code);
  return name;
}

Result<sqlite3*> open_connection(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return unexpected(Errc::kIoError, "status store: cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  return db;
}

}  // namespace

StatusStore::StatusStore(sqlite3* writer, sqlite3* reader) : writer_(writer), reader_(reader) {}

StatusStore::~StatusStore() {
  sqlite3_close(reader_);
  sqlite3_close(writer_);
}

Status StatusStore::exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    return unexpected(Errc::kIoError, std::string("status store: ") + sql + ": " + msg);
  }
  return {};
}

Result<std::unique_ptr<StatusStore>> StatusStore::open(const std::string& path) {
  auto writer = open_connection(path);
  if (!writer) return unexpected(writer.error());
  auto reader = open_connection(path);
  if (!reader) {
    sqlite3_close(*writer);
    return unexpected(reader.error());
  }
  std::unique_ptr<StatusStore> store(new StatusStore(*writer, *reader));
  // `sequence` is a log position (< 2^63 in practice); `code` the ErrorCode's name so
  // that the file reads without the schema.
  auto st = store->exec(store->writer_,
                        "PRAGMA journal_mode=WAL;"
                        "PRAGMA synchronous=NORMAL;"
                        "CREATE TABLE IF NOT EXISTS event_status("
                        "  id BLOB PRIMARY KEY,"
                        "  state INTEGER NOT NULL,"
                        "  sequence INTEGER NOT NULL DEFAULT 0,"
                        "  duplicate INTEGER NOT NULL DEFAULT 0,"
                        "  code TEXT, field TEXT, message TEXT,"
                        "  updated_at INTEGER NOT NULL) WITHOUT ROWID;"
                        "CREATE INDEX IF NOT EXISTS event_status_updated"
                        "  ON event_status(updated_at);");
  if (!st) return unexpected(st.error());
  return store;
}

Status StatusStore::accept(std::span<const EventId> ids, TimeMs now,
                           const std::function<Status()>& publish) {
  std::lock_guard lock(write_mu_);
  // FULL for this one transaction: the client is told these ids were accepted.
  if (auto st = exec(writer_, "PRAGMA synchronous=FULL; BEGIN IMMEDIATE;"); !st) {
    (void)exec(writer_, "PRAGMA synchronous=NORMAL;");
    return st;
  }
  auto rollback = [&] { (void)exec(writer_, "ROLLBACK; PRAGMA synchronous=NORMAL;"); };
  {
    Stmt upsert(writer_,
                "INSERT INTO event_status(id, state, updated_at) VALUES(?1, 0, ?2)"
                " ON CONFLICT(id) DO UPDATE SET state=0, sequence=0, duplicate=0,"
                " code=NULL, field=NULL, message=NULL, updated_at=?2");
    if (!upsert.ok()) {
      auto e = db_error(writer_, "prepare");
      rollback();
      return unexpected(e);
    }
    for (const auto& id : ids) {
      upsert.bind_id(1, id);
      upsert.bind_int(2, now);
      if (sqlite3_step(upsert.get()) != SQLITE_DONE) {
        auto e = db_error(writer_, "insert");
        rollback();
        return unexpected(e);
      }
      sqlite3_reset(upsert.get());
    }
  }
  if (auto st = publish(); !st) {
    rollback();
    return st;
  }
  auto st = exec(writer_, "COMMIT;");
  if (!st) rollback();
  (void)exec(writer_, "PRAGMA synchronous=NORMAL;");
  return st;
}

Status StatusStore::record(const client::Outcome& outcome, TimeMs now) {
  std::lock_guard lock(write_mu_);
  Stmt update(writer_,
              "UPDATE event_status SET state=?2, sequence=?3, duplicate=?4, code=?5, field=?6,"
              " message=?7, updated_at=?8 WHERE id=?1");
  if (!update.ok()) return unexpected(db_error(writer_, "prepare"));
  update.bind_id(1, outcome.id);
  std::string code;
  switch (outcome.kind) {
    case client::OutcomeKind::kAcked:
    case client::OutcomeKind::kDuplicate:
      update.bind_int(2, static_cast<int>(EventState::kAcknowledged));
      update.bind_int(3, static_cast<std::int64_t>(outcome.sequence.value));
      update.bind_int(4, outcome.kind == client::OutcomeKind::kDuplicate ? 1 : 0);
      break;
    case client::OutcomeKind::kRefused:
      code = refusal_code_name(outcome.refusal.code);
      update.bind_int(2, static_cast<int>(EventState::kRefused));
      update.bind_int(3, 0);
      update.bind_int(4, 0);
      update.bind_text(5, code);
      update.bind_text(6, outcome.refusal.field);
      update.bind_text(7, outcome.refusal.message);
      break;
  }
  update.bind_int(8, now);
  if (sqlite3_step(update.get()) != SQLITE_DONE) return unexpected(db_error(writer_, "update"));
  return {};
}

Result<std::optional<EventStatus>> StatusStore::get(const EventId& id) const {
  std::lock_guard lock(read_mu_);
  Stmt select(reader_,
              "SELECT state, sequence, duplicate, code, field, message, updated_at"
              " FROM event_status WHERE id=?1");
  if (!select.ok()) return unexpected(db_error(reader_, "prepare"));
  select.bind_id(1, id);
  const int rc = sqlite3_step(select.get());
  if (rc == SQLITE_DONE) return std::optional<EventStatus>();
  if (rc != SQLITE_ROW) return unexpected(db_error(reader_, "select"));
  EventStatus s;
  const auto state = sqlite3_column_int(select.get(), 0);
  if (state < 0 || state > static_cast<int>(EventState::kRefused)) {
    return unexpected(Errc::kCorruption, "status store: unknown state " + std::to_string(state));
  }
  s.state = static_cast<EventState>(state);
  s.sequence = static_cast<std::uint64_t>(sqlite3_column_int64(select.get(), 1));
  s.duplicate = sqlite3_column_int(select.get(), 2) != 0;
  s.code = select.text(3);
  s.field = select.text(4);
  s.message = select.text(5);
  s.updated_at = sqlite3_column_int64(select.get(), 6);
  return std::optional<EventStatus>(std::move(s));
}

Result<std::uint64_t> StatusStore::prune(TimeMs cutoff) {
  std::lock_guard lock(write_mu_);
  Stmt del(writer_, "DELETE FROM event_status WHERE updated_at < ?1");
  if (!del.ok()) return unexpected(db_error(writer_, "prepare"));
  del.bind_int(1, cutoff);
  if (sqlite3_step(del.get()) != SQLITE_DONE) return unexpected(db_error(writer_, "delete"));
  return static_cast<std::uint64_t>(sqlite3_changes(writer_));
}

}  // namespace kolabus::adapters::gateway
