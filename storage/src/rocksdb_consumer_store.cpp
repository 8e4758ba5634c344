// The RocksDB consumer store, in the broker's database. Layout (see README.md):
//   consumers     owner 0x00 name -> encoded ConsumerState (encode_state)
//   dead_letters  owner 0x00 name 0x00 8-byte BE seq -> encoded entry (encode_dead_letter)
#include <rocksdb/write_batch.h>

#include "broker_db.h"
#include "rocks_util.h"

namespace kolabus::storage {

namespace {

using detail::append_be;
using detail::read_be;
using detail::to_error;

// The ConsumerState value, encoding version 1, integers big-endian:
//   u8 version (1) | u64 ack_floor | u32 config length | config |
//   u32 count | count LEB128 varints: acked_above[0] - ack_floor, then each
//   acked_above[i] - acked_above[i-1] (all >= 1: the list is strictly increasing)
// Deltas keep a long run of acknowledged sequences near the floor to a byte or two each.
constexpr std::uint8_t kStateEncoding = 1;
// The dead letter value, encoding version 1 (the key carries the consumer and sequence):
//   u8 version (1) | u32 attempts | i64 dead_at (UTC ms) | u32 reason length | reason
constexpr std::uint8_t kDeadLetterEncoding = 1;

std::string consumer_key(const ConsumerKey& k) {
  std::string out;
  out.reserve(k.owner.size() + 1 + k.name.size());
  out.append(k.owner);
  out.push_back('\0');
  out.append(k.name);
  return out;
}

// Every dead letter of `k` starts with this; none of another consumer does (names hold
// no 0x00).
std::string dead_letter_prefix(const ConsumerKey& k) {
  std::string out = consumer_key(k);
  out.push_back('\0');
  return out;
}

// The first key after every key with `prefix`: prefix ends in 0x00, so bump it to 0x01.
std::string dead_letter_end(const ConsumerKey& k) {
  std::string out = consumer_key(k);
  out.push_back('\1');
  return out;
}

std::string dead_letter_key(const ConsumerKey& k, std::uint64_t seq) {
  std::string out = dead_letter_prefix(k);
  detail::append_be64(out, seq);
  return out;
}

void append_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

std::string encode_state(const ConsumerState& c) {
  KOLABUS_CHECK(c.config.size() <= UINT32_MAX && c.acked_above.size() <= UINT32_MAX);
  std::string out;
  out.reserve(1 + 8 + 4 + c.config.size() + 4 + 2 * c.acked_above.size());
  out.push_back(static_cast<char>(kStateEncoding));
  append_be(out, c.ack_floor, 8);
  append_be(out, c.config.size(), 4);
  out.append(c.config);
  append_be(out, c.acked_above.size(), 4);
  std::uint64_t prev = c.ack_floor;
  for (auto seq : c.acked_above) {
    append_varint(out, seq - prev);
    prev = seq;
  }
  return out;
}

// Reads from a value, refusing to run past its end.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool be(int bytes, std::uint64_t& v) {
    if (b_.size() - at_ < static_cast<std::size_t>(bytes)) return false;
    v = read_be(b_, at_, bytes);
    at_ += static_cast<std::size_t>(bytes);
    return true;
  }
  bool bytes(std::size_t n, std::string& out) {
    if (b_.size() - at_ < n) return false;
    out.assign(b_.substr(at_, n));
    at_ += n;
    return true;
  }
  bool varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ == b_.size()) return false;
      const auto byte = static_cast<std::uint8_t>(b_[at_++]);
      // The tenth byte may only carry the top bit.
      if (shift == 63 && byte > 1) return false;
      v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool at_end() const { return at_ == b_.size(); }

 private:
  std::string_view b_;
  std::size_t at_ = 0;
};

class RocksConsumerStore final : public ConsumerStore {
 public:
  RocksConsumerStore(std::shared_ptr<detail::RocksDb> db, detail::OpenMode mode)
      : db_(std::move(db)), mode_(mode) {}

  Status apply(const ConsumerWrite& write) override {
    detail::check_consumer_write(write);
    if (mode_ == detail::OpenMode::kReadOnly) {
      return unexpected(Errc::kInvalidArgument,
                        "consumer store " + db_->dir() + " is open read-only");
    }
    if (write.empty()) return {};
    auto* consumers = db_->cf(detail::kConsumers);
    auto* dead = db_->cf(detail::kDeadLetters);
    // The order the contract gives (consumer_store.h): erase, put, dead letters,
    // removals. A WriteBatch applies in order, so a later put wins over an erase.
    rocksdb::WriteBatch batch;
    rocksdb::Status s;
    for (const auto& k : write.erase) {
      if (s.ok()) s = batch.Delete(consumers, consumer_key(k));
      if (s.ok()) s = batch.DeleteRange(dead, dead_letter_prefix(k), dead_letter_end(k));
    }
    for (const auto& c : write.put) {
      if (s.ok()) s = batch.Put(consumers, consumer_key(c.key), encode_state(c));
    }
    for (const auto& d : write.dead_letters) {
      KOLABUS_CHECK(d.reason.size() <= UINT32_MAX);
      std::string v;
      v.push_back(static_cast<char>(kDeadLetterEncoding));
      append_be(v, d.attempts, 4);
      append_be(v, static_cast<std::uint64_t>(d.dead_at), 8);
      append_be(v, d.reason.size(), 4);
      v.append(d.reason);
      if (s.ok()) s = batch.Put(dead, dead_letter_key(d.key, d.sequence), v);
    }
    for (const auto& [k, seq] : write.dead_letters_removed) {
      if (s.ok()) s = batch.Delete(dead, dead_letter_key(k, seq));
    }
    if (!s.ok()) return unexpected(to_error(s, "build consumer batch for " + db_->dir()));
    rocksdb::WriteOptions wo;
    wo.sync = false;  // consumer_store.h: a lost position means some redeliveries
    s = db_->db()->Write(wo, &batch);
    if (!s.ok()) return unexpected(to_error(s, "write consumer state to " + db_->dir()));
    return {};
  }

  Result<std::vector<ConsumerState>> load_all() const override {
    std::vector<ConsumerState> out;
    auto* cf = db_->cf(detail::kConsumers);
    if (cf == nullptr) return out;  // a read-only database that predates consumers
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(rocksdb::ReadOptions(), cf));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto c = decode_state(it->key().ToStringView(), it->value().ToStringView());
      if (!c) return unexpected(c.error());
      out.push_back(std::move(*c));
    }
    if (!it->status().ok()) {
      return unexpected(to_error(it->status(), "read consumers of " + db_->dir()));
    }
    return out;
  }

  Result<std::vector<DeadLetterEntry>> dead_letters(const ConsumerKey& key, std::uint64_t from,
                                                    std::size_t max) const override {
    std::vector<DeadLetterEntry> out;
    if (max == 0) return out;
    auto s = scan_dead(key, from, [&](std::uint64_t seq, std::string_view v) -> Result<bool> {
      auto d = decode_dead_letter(key, seq, v);
      if (!d) return unexpected(d.error());
      out.push_back(std::move(*d));
      return out.size() < max;
    });
    if (!s) return unexpected(s.error());
    return out;
  }

  Result<std::uint64_t> count_dead_letters(const ConsumerKey& key) const override {
    std::uint64_t n = 0;
    auto s = scan_dead(key, 0, [&](std::uint64_t, std::string_view) -> Result<bool> {
      ++n;
      return true;
    });
    if (!s) return unexpected(s.error());
    return n;
  }

 private:
  // Calls fn(seq, value) for each dead letter of `key` with seq >= from, in order, while
  // fn returns true; an error from fn is returned.
  template <typename Fn>
  Status scan_dead(const ConsumerKey& key, std::uint64_t from, Fn&& fn) const {
    auto* cf = db_->cf(detail::kDeadLetters);
    if (cf == nullptr) return {};  // a read-only database that predates dead letters
    const std::string prefix = dead_letter_prefix(key);
    const std::string end = dead_letter_end(key);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(ro, cf));
    for (it->Seek(dead_letter_key(key, from)); it->Valid(); it->Next()) {
      const auto k = it->key().ToStringView();
      if (k.size() != prefix.size() + 8 || k.substr(0, prefix.size()) != prefix) {
        return unexpected(Errc::kCorruption, "consumer store " + db_->dir() +
                                                 ": malformed dead letter key of " + key.owner +
                                                 "/" + key.name);
      }
      auto more = fn(detail::decode_be64(k.substr(prefix.size())), it->value().ToStringView());
      if (!more) return unexpected(more.error());
      if (!*more) return {};
    }
    if (!it->status().ok()) {
      return unexpected(to_error(it->status(), "read dead letters of " + db_->dir()));
    }
    return {};
  }

  Result<ConsumerState> decode_state(std::string_view k, std::string_view v) const {
    auto bad = [&](const std::string& why) {
      return unexpected(Errc::kCorruption, "consumer store " + db_->dir() + ": consumer '" +
                                               std::string(k) + "': " + why);
    };
    ConsumerState c;
    const auto sep = k.find('\0');
    if (sep == std::string_view::npos || k.find('\0', sep + 1) != std::string_view::npos) {
      return bad("key is not owner 0x00 name");
    }
    c.key.owner.assign(k.substr(0, sep));
    c.key.name.assign(k.substr(sep + 1));
    Reader r(v);
    std::uint64_t version = 0, config_len = 0, count = 0;
    if (!r.be(1, version)) return bad("empty value");
    if (version != kStateEncoding)
      return bad("unknown encoding version " + std::to_string(version));
    if (!r.be(8, c.ack_floor) || !r.be(4, config_len) || !r.bytes(config_len, c.config) ||
        !r.be(4, count)) {
      return bad("truncated");
    }
    // Each delta takes at least one byte: a count beyond the bytes left is corrupt, and
    // checking it first keeps a corrupt count from reserving gigabytes.
    if (count > v.size()) return bad("acknowledged count exceeds the value");
    c.acked_above.reserve(count);
    std::uint64_t prev = c.ack_floor;
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint64_t delta = 0;
      if (!r.varint(delta)) return bad("truncated or overlong acknowledged delta");
      if (delta == 0 || delta > UINT64_MAX - prev) return bad("acknowledged deltas out of range");
      prev += delta;
      c.acked_above.push_back(prev);
    }
    if (!r.at_end()) return bad("trailing bytes");
    return c;
  }

  Result<DeadLetterEntry> decode_dead_letter(const ConsumerKey& key, std::uint64_t seq,
                                             std::string_view v) const {
    auto bad = [&](const std::string& why) {
      return unexpected(Errc::kCorruption, "consumer store " + db_->dir() + ": dead letter " +
                                               std::to_string(seq) + " of " + key.owner + "/" +
                                               key.name + ": " + why);
    };
    DeadLetterEntry d;
    d.key = key;
    d.sequence = seq;
    Reader r(v);
    std::uint64_t version = 0, attempts = 0, dead_at = 0, reason_len = 0;
    if (!r.be(1, version)) return bad("empty value");
    if (version != kDeadLetterEncoding) {
      return bad("unknown encoding version " + std::to_string(version));
    }
    if (!r.be(4, attempts) || !r.be(8, dead_at) || !r.be(4, reason_len) ||
        !r.bytes(reason_len, d.reason)) {
      return bad("truncated");
    }
    if (!r.at_end()) return bad("trailing bytes");
    d.attempts = static_cast<std::uint32_t>(attempts);
    d.dead_at = static_cast<TimeMs>(dead_at);
    return d;
  }

  // Shared with the event log: one database holds both (rocksdb_broker_store.h), and the
  // broker may destroy the two in either order.
  std::shared_ptr<detail::RocksDb> db_;
  const detail::OpenMode mode_;
};

}  // namespace

namespace detail {

std::unique_ptr<ConsumerStore> make_rocks_consumer_store(std::shared_ptr<RocksDb> db,
                                                         OpenMode mode) {
  return std::make_unique<RocksConsumerStore>(std::move(db), mode);
}

}  // namespace detail

}  // namespace kolabus::storage
