// The RocksDB outbox. Layout (see README.md):
//   default  meta: "store" = "outbox", "format_version" = 4-byte BE,
//            "high_water" = 8-byte BE, the largest local seq ever allocated
//   pending  8-byte BE local seq -> event bytes
//   refused  8-byte BE local seq -> encoded Refusal + event bytes (encode_refused)
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>

#include <rocksdb/cache.h>
#include <rocksdb/write_batch.h>

#include "rocks_util.h"
#include <storage/outbox.h>

namespace kolabus::storage {

namespace {

using detail::append_be;
using detail::decode_be64;
using detail::encode_be64;
using detail::read_be;
using detail::to_error;

constexpr std::uint32_t kFormatVersion = 1;
constexpr std::string_view kHighWaterKey = "high_water";
enum Cf : std::size_t { kMeta = 0, kPending = 1, kRefused = 2 };

// The refused value, version 1, integers big-endian:
//   u8 encoding version (1) | 16 bytes event id | u16 code | i64 refused_at (ms) |
//   u32 field length | field | u32 message length | message | event bytes (the rest)
constexpr std::uint8_t kRefusedEncoding = 1;
constexpr std::size_t kRefusedFixed = 1 + 16 + 2 + 8 + 4;

std::string encode_refused(const Refusal& r, std::string_view event) {
  KOLABUS_CHECK(r.field.size() <= UINT32_MAX && r.message.size() <= UINT32_MAX);
  std::string out;
  out.reserve(kRefusedFixed + 4 + r.field.size() + r.message.size() + event.size());
  out.push_back(static_cast<char>(kRefusedEncoding));
  out.append(r.id.as_key());
  append_be(out, r.code, 2);
  append_be(out, static_cast<std::uint64_t>(r.refused_at), 8);
  append_be(out, r.field.size(), 4);
  out.append(r.field);
  append_be(out, r.message.size(), 4);
  out.append(r.message);
  out.append(event);
  return out;
}

Result<RefusedEntry> decode_refused(std::uint64_t local_seq, std::string_view v) {
  auto bad = [&](const char* why) {
    return unexpected(Errc::kCorruption,
                      "outbox refused entry " + std::to_string(local_seq) + ": " + why);
  };
  if (v.size() < kRefusedFixed) return bad("shorter than its fixed header");
  if (static_cast<std::uint8_t>(v[0]) != kRefusedEncoding) return bad("unknown encoding version");
  RefusedEntry e;
  e.local_seq = local_seq;
  std::memcpy(e.refusal.id.bytes.data(), v.data() + 1, 16);
  e.refusal.code = static_cast<std::uint16_t>(read_be(v, 17, 2));
  e.refusal.refused_at = static_cast<TimeMs>(read_be(v, 19, 8));
  std::size_t at = 27;
  const std::size_t field_len = read_be(v, at, 4);
  at += 4;
  if (v.size() - at < field_len) return bad("field runs past the end");
  e.refusal.field.assign(v.substr(at, field_len));
  at += field_len;
  if (v.size() - at < 4) return bad("message length runs past the end");
  const std::size_t message_len = read_be(v, at, 4);
  at += 4;
  if (v.size() - at < message_len) return bad("message runs past the end");
  e.refusal.message.assign(v.substr(at, message_len));
  at += message_len;
  e.event.assign(v.substr(at));
  return e;
}

struct KeyStats {
  std::uint64_t count = 0;
  std::uint64_t last = 0;  // 0 when empty
};

Result<KeyStats> count_keys(const detail::RocksDb& db, std::size_t cf, const char* name) {
  KeyStats st;
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(rocksdb::ReadOptions(), db.cf(cf)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 8) {
      return unexpected(Errc::kCorruption, "outbox " + db.dir() + ": a " + name + " key is " +
                                               std::to_string(it->key().size()) +
                                               " bytes long, expected 8");
    }
    ++st.count;
    st.last = decode_be64(it->key().ToStringView());
  }
  if (!it->status().ok()) return unexpected(to_error(it->status(), "count outbox " + db.dir()));
  return st;
}

}  // namespace

class Outbox::Impl {
 public:
  std::unique_ptr<detail::RocksDb> db;
  // Held across the whole synced write of an enqueue, so that entries become visible in
  // local_seq order (a sender's cursor never skips an entry still being written).
  std::mutex enqueue_mu;
  std::uint64_t next_seq = 1;  // guarded by enqueue_mu
  // Serializes remove/refuse/clear_refused, so that each deleted entry is counted once.
  std::mutex mutate_mu;
  std::atomic<std::uint64_t> pending_count{0};
  std::atomic<std::uint64_t> refused_count{0};
};

Outbox::Outbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Outbox::~Outbox() = default;

Result<std::unique_ptr<Outbox>> Outbox::open(const std::string& dir) { return open(dir, nullptr); }

Result<std::unique_ptr<Outbox>> Outbox::open(const std::string& dir,
                                             std::shared_ptr<rocksdb::Env> env) {
  auto cache = rocksdb::NewLRUCache(8 << 20);
  constexpr std::size_t kWriteBuffer = 8 << 20;
  detail::OpenSpec spec;
  spec.dir = dir;
  spec.store = "outbox";
  spec.format_version = kFormatVersion;
  spec.db_options = detail::db_options();
  spec.env = std::move(env);
  spec.cfs = {
      {rocksdb::kDefaultColumnFamilyName,
       detail::column_family_options(cache, detail::Bloom::kNo, 1 << 20)},
      {"pending", detail::column_family_options(cache, detail::Bloom::kNo, kWriteBuffer)},
      {"refused", detail::column_family_options(cache, detail::Bloom::kNo, kWriteBuffer)},
  };
  auto db = detail::open_rocks(spec);
  if (!db) return unexpected(db.error());

  auto impl = std::make_unique<Impl>();
  impl->db = std::move(*db);
  auto pending = count_keys(*impl->db, kPending, "pending");
  if (!pending) return unexpected(pending.error());
  auto refused = count_keys(*impl->db, kRefused, "refused");
  if (!refused) return unexpected(refused.error());
  std::uint64_t high_water = 0;
  std::string hw;
  auto s = impl->db->db()->Get(rocksdb::ReadOptions(), impl->db->cf(kMeta), kHighWaterKey, &hw);
  if (s.ok()) {
    if (hw.size() != 8) {
      return unexpected(Errc::kCorruption, "outbox " + dir + ": high_water is " +
                                               std::to_string(hw.size()) + " bytes, expected 8");
    }
    high_water = decode_be64(hw);
  } else if (!s.IsNotFound()) {
    return unexpected(to_error(s, "read outbox meta " + dir));
  }
  impl->next_seq = std::max({pending->last, refused->last, high_water}) + 1;
  impl->pending_count = pending->count;
  impl->refused_count = refused->count;
  return std::unique_ptr<Outbox>(new Outbox(std::move(impl)));
}

Result<std::vector<std::uint64_t>> Outbox::enqueue(
    std::span<const std::span<const std::uint8_t>> events) {
  std::vector<std::uint64_t> seqs;
  if (events.empty()) return seqs;
  auto& db = *impl_->db;
  std::lock_guard lock(impl_->enqueue_mu);
  const std::uint64_t first = impl_->next_seq;
  // Never reuse a number, even one whose write failed: its bytes may still reach the
  // WAL on disk and reappear after a restart.
  impl_->next_seq += events.size();
  rocksdb::WriteBatch batch;
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto s = batch.Put(db.cf(kPending), encode_be64(first + i), detail::as_slice(events[i]));
    if (!s.ok()) return unexpected(to_error(s, "build outbox batch for " + db.dir()));
    seqs.push_back(first + i);
  }
  auto s = batch.Put(db.cf(kMeta), kHighWaterKey, encode_be64(first + events.size() - 1));
  if (!s.ok()) return unexpected(to_error(s, "build outbox batch for " + db.dir()));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto st = db.write(wo, &batch, "enqueue to outbox " + db.dir()); !st) {
    return unexpected(st.error());
  }
  impl_->pending_count.fetch_add(events.size());
  return seqs;
}

Result<std::vector<OutboxEntry>> Outbox::pending(std::uint64_t from, std::size_t max) const {
  std::vector<OutboxEntry> out;
  if (max == 0) return out;
  auto& db = *impl_->db;
  std::unique_ptr<rocksdb::Iterator> it(
      db.db()->NewIterator(rocksdb::ReadOptions(), db.cf(kPending)));
  for (it->Seek(encode_be64(from)); it->Valid() && out.size() < max; it->Next()) {
    if (it->key().size() != 8) {
      return unexpected(Errc::kCorruption, "outbox " + db.dir() + ": a pending key is " +
                                               std::to_string(it->key().size()) +
                                               " bytes long, expected 8");
    }
    out.push_back(OutboxEntry{decode_be64(it->key().ToStringView()), it->value().ToString()});
  }
  if (!it->status().ok()) return unexpected(to_error(it->status(), "read outbox " + db.dir()));
  return out;
}

std::uint64_t Outbox::pending_count() const { return impl_->pending_count.load(); }

Status Outbox::remove(std::span<const std::uint64_t> local_seqs) {
  auto& db = *impl_->db;
  std::lock_guard lock(impl_->mutate_mu);
  // Delete only what is there, each once, so that pending_count stays exact.
  std::set<std::uint64_t> present;
  for (auto seq : local_seqs) {
    if (present.count(seq) != 0) continue;
    rocksdb::PinnableSlice v;
    auto s = db.db()->Get(rocksdb::ReadOptions(), db.cf(kPending), encode_be64(seq), &v);
    if (s.IsNotFound()) continue;
    if (!s.ok()) return unexpected(to_error(s, "read outbox " + db.dir()));
    present.insert(seq);
  }
  if (present.empty()) return {};
  rocksdb::WriteBatch batch;
  for (auto seq : present) {
    auto s = batch.Delete(db.cf(kPending), encode_be64(seq));
    if (!s.ok()) return unexpected(to_error(s, "build outbox batch for " + db.dir()));
  }
  rocksdb::WriteOptions wo;
  wo.sync = false;  // a lost delete means one resend, absorbed by the broker's dedup
  if (auto st = db.write(wo, &batch, "remove from outbox " + db.dir()); !st) return st;
  impl_->pending_count.fetch_sub(present.size());
  return {};
}

Status Outbox::refuse(std::uint64_t local_seq, const Refusal& why) {
  auto& db = *impl_->db;
  std::lock_guard lock(impl_->mutate_mu);
  const std::string key = encode_be64(local_seq);
  std::string event;
  auto s = db.db()->Get(rocksdb::ReadOptions(), db.cf(kPending), key, &event);
  if (s.IsNotFound()) {
    return unexpected(Errc::kNotFound,
                      "outbox " + db.dir() + ": no pending entry " + std::to_string(local_seq));
  }
  if (!s.ok()) return unexpected(to_error(s, "read outbox " + db.dir()));
  rocksdb::WriteBatch batch;
  s = batch.Delete(db.cf(kPending), key);
  if (s.ok()) s = batch.Put(db.cf(kRefused), key, encode_refused(why, event));
  if (!s.ok()) return unexpected(to_error(s, "build outbox batch for " + db.dir()));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto st = db.write(wo, &batch, "refuse in outbox " + db.dir()); !st) return st;
  impl_->pending_count.fetch_sub(1);
  impl_->refused_count.fetch_add(1);
  return {};
}

Result<std::vector<RefusedEntry>> Outbox::refused(std::size_t max) const {
  std::vector<RefusedEntry> out;
  if (max == 0) return out;
  auto& db = *impl_->db;
  std::unique_ptr<rocksdb::Iterator> it(
      db.db()->NewIterator(rocksdb::ReadOptions(), db.cf(kRefused)));
  for (it->SeekToFirst(); it->Valid() && out.size() < max; it->Next()) {
    if (it->key().size() != 8) {
      return unexpected(Errc::kCorruption, "outbox " + db.dir() + ": a refused key is " +
                                               std::to_string(it->key().size()) +
                                               " bytes long, expected 8");
    }
    auto e = decode_refused(decode_be64(it->key().ToStringView()), it->value().ToStringView());
    if (!e) return unexpected(e.error());
    out.push_back(std::move(*e));
  }
  if (!it->status().ok()) return unexpected(to_error(it->status(), "read outbox " + db.dir()));
  return out;
}

std::uint64_t Outbox::refused_count() const { return impl_->refused_count.load(); }

Status Outbox::clear_refused() {
  auto& db = *impl_->db;
  std::lock_guard lock(impl_->mutate_mu);
  // Nine 0xff bytes sort after every 8-byte key.
  const std::string end(9, '\xff');
  rocksdb::WriteBatch batch;
  auto s = batch.DeleteRange(db.cf(kRefused), std::string(), end);
  if (!s.ok()) return unexpected(to_error(s, "build outbox batch for " + db.dir()));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto st = db.write(wo, &batch, "clear refused in outbox " + db.dir()); !st) return st;
  impl_->refused_count.store(0);
  return {};
}

}  // namespace kolabus::storage
