#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <broker/audit.h>
#include <common/private_files.h>

namespace kolabus::broker {

namespace {

constexpr storage::AuditHash kGenesis{};

// libsodium picks its fastest implementations at initialisation; idempotent.
[[maybe_unused]] const int kSodiumReady = sodium_init();

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

bool from_hex(std::string_view hex, std::span<std::uint8_t> out) {
  if (hex.size() != out.size() * 2) return false;
  std::size_t bin_len = 0;
  return sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &bin_len,
                        nullptr) == 0 &&
         bin_len == out.size();
}

flatbuffers::DetachedBuffer encode_record(const AuditFact& f, std::uint64_t index,
                                          const storage::AuditHash& prev, TimeMs time) {
  flatbuffers::FlatBufferBuilder fbb(256 + f.sequences.size() * 8 + f.persons.size() * 40);
  std::vector<std::uint64_t> seqs = f.sequences;
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  std::uint64_t first = f.position, last = f.position;
  if (!seqs.empty()) {
    first = seqs.front();
    last = seqs.back();
  }
  // Every sequence of first..last: the range says it all.
  const bool contiguous = !seqs.empty() && last - first + 1 == seqs.size();
  std::vector<flatbuffers::Offset<audit::Person>> persons;
  // A person's hashes side by side, straight from the vector of arrays (no copy).
  static_assert(sizeof(NikHash) == 16);
  for (const auto& p : f.persons) {
    const auto* hashes = reinterpret_cast<const std::uint8_t*>(p.niks.data());
    persons.push_back(
        audit::CreatePerson(fbb, p.sequence, fbb.CreateVector(hashes, p.niks.size() * 16)));
  }
  auto prev_v = fbb.CreateVector(prev.data(), prev.size());
  auto agency = fbb.CreateString(f.agency);
  auto consumer = f.consumer.empty() ? 0 : fbb.CreateString(f.consumer);
  auto owner = f.owner.empty() ? 0 : fbb.CreateString(f.owner);
  auto seq_v = contiguous || seqs.empty() ? 0 : fbb.CreateVector(seqs);
  auto persons_v = persons.empty() ? 0 : fbb.CreateVector(persons);
  auto detail = f.detail.empty() ? 0 : fbb.CreateString(f.detail);
  audit::RecordBuilder b(fbb);
  b.add_index(index);
  b.add_prev_hash(prev_v);
  b.add_time(time);
  b.add_action(f.action);
  b.add_agency(agency);
  if (!consumer.IsNull()) b.add_consumer(consumer);
  if (!owner.IsNull()) b.add_owner(owner);
  b.add_first_sequence(first);
  b.add_last_sequence(last);
  if (!seq_v.IsNull()) b.add_sequences(seq_v);
  b.add_count(f.count != 0 ? f.count : seqs.size());
  if (!persons_v.IsNull()) b.add_persons(persons_v);
  if (!detail.IsNull()) b.add_detail(detail);
  fbb.Finish(b.Finish(), audit::RecordIdentifier());
  return fbb.Release();
}

// Whether the record concerns `seq`.
bool concerns(const audit::Record& r, std::uint64_t seq) {
  if (r.first_sequence() == 0 || seq < r.first_sequence() || seq > r.last_sequence()) return false;
  if (r.sequences() == nullptr) return true;
  return std::binary_search(r.sequences()->begin(), r.sequences()->end(), seq);
}

}  // namespace

NikHash nik_hash(std::string_view nik, const NikKey& key) {
  std::array<std::uint8_t, crypto_generichash_BYTES> full{};
  crypto_generichash(full.data(), full.size(), reinterpret_cast<const std::uint8_t*>(nik.data()),
                     nik.size(), key.data(), key.size());
  NikHash out{};
  std::copy_n(full.begin(), out.size(), out.begin());
  return out;
}

NikHash Audit::hash_nik(std::string_view nik) const {
  crypto_generichash_state st = keyed_;
  crypto_generichash_update(&st, reinterpret_cast<const std::uint8_t*>(nik.data()), nik.size());
  std::array<std::uint8_t, crypto_generichash_BYTES> full{};
  crypto_generichash_final(&st, full.data(), full.size());
  NikHash out{};
  std::copy_n(full.begin(), out.size(), out.begin());
  return out;
}

storage::AuditHash audit_hash(std::span<const std::uint8_t> bytes) {
  storage::AuditHash h{};
  crypto_generichash(h.data(), h.size(), bytes.data(), bytes.size(), nullptr, 0);
  return h;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

namespace {

// The key of an audit key file's text: 64 hex digits, then only white space.
Result<NikKey> parse_nik_key(const std::string& path, const std::string& text) {
  NikKey key{};
  std::istringstream in(text);
  std::string hex, rest;
  in >> hex >> rest;
  if (!rest.empty() || !from_hex(hex, key)) {
    return unexpected(Errc::kCorruption,
                      path + ": not a kolabus audit key (expected 64 hex digits)");
  }
  return key;
}

// Reads an audit key file: std::nullopt when it does not exist.
Result<std::optional<NikKey>> read_nik_key(const std::string& path) {
  auto text = read_secret_file(path, "audit key file");
  if (!text) {
    if (text.error().code == Errc::kNotFound) return std::optional<NikKey>();
    return unexpected(text.error());
  }
  auto key = parse_nik_key(path, *text);
  if (!key) return unexpected(key.error());
  return std::optional<NikKey>(*key);
}

Status write_nik_key(const std::string& path, const NikKey& key) {
  const auto dir = std::filesystem::path(path).parent_path().string();
  if (!dir.empty()) {
    if (auto made = make_private_dir(dir, /*narrow=*/false); !made) {
      return unexpected(made.error());
    }
  }
  if (auto st = write_file_atomically(path, to_hex(key) + "\n", kPrivateFileMode, false); !st) {
    return st;
  }
  return sync_dir(dir);
}

Status remove_old_key(const std::string& old_path) {
  if (::unlink(old_path.c_str()) != 0) {
    const int e = errno;
    return unexpected(Errc::kIoError, "cannot remove " + old_path + ": " + std::strerror(e));
  }
  return sync_dir(std::filesystem::path(old_path).parent_path().string());
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  const auto ca = std::filesystem::weakly_canonical(a, ec);
  if (ec) return a == b;
  const auto cb = std::filesystem::weakly_canonical(b, ec);
  if (ec) return a == b;
  return ca == cb;
}

}  // namespace

Result<NikKeyFile> open_nik_key(const std::string& path, const std::string& old_path,
                                bool may_create) {
  const bool has_old_place = !old_path.empty() && !same_file(path, old_path);
  auto current = read_nik_key(path);
  if (!current) return unexpected(current.error());
  std::optional<NikKey> old;
  if (has_old_place) {
    auto o = read_nik_key(old_path);
    if (!o) return unexpected(o.error());
    old = *o;
  }
  NikKeyFile out;
  if (*current) {
    out.key = **current;
    if (old) {
      if (*old != out.key) {
        return unexpected(Errc::kInvalidArgument,
                          "two different audit keys: " + path + " and " + old_path +
                              " (where earlier releases kept it); the audit chain's NIK hashes "
                              "were made with one of them: remove the other");
      }
      if (auto st = remove_old_key(old_path); !st) return unexpected(st.error());
      out.removed_old_copy = true;
    }
    return out;
  }
  if (old) {
    // Written whole at the new place first: a crash in between leaves two identical
    // copies, which the next start resolves above.
    if (auto st = write_nik_key(path, *old); !st) return unexpected(st.error());
    if (auto st = remove_old_key(old_path); !st) return unexpected(st.error());
    out.key = *old;
    out.origin = NikKeyFile::Origin::kMoved;
    return out;
  }
  if (!may_create) {
    return unexpected(
        Errc::kNotFound,
        "no audit key at " + path + (has_old_place ? " (nor at " + old_path + ")" : std::string()));
  }
  if (sodium_init() < 0) return unexpected(Errc::kInternal, "libsodium failed to initialise");
  randombytes_buf(out.key.data(), out.key.size());
  if (auto st = write_nik_key(path, out.key); !st) return unexpected(st.error());
  out.origin = NikKeyFile::Origin::kCreated;
  return out;
}

const audit::Record* verified_record(std::string_view bytes, AlignedBytes& storage) {
  const auto data = aligned(bytes, storage);
  flatbuffers::Verifier verifier(data.data(), data.size());
  if (!audit::VerifyRecordBuffer(verifier)) return nullptr;
  return audit::GetRecord(data.data());
}

Audit::Audit(storage::AuditLog& log, const Clock& clock, NikKey key)
    : log_(log), clock_(clock), key_(key) {
  crypto_generichash_init(&keyed_, key_.data(), key_.size(), crypto_generichash_BYTES);
  const auto head = log_.head();
  if (head.index > 0) {
    (void)log_.scan(head.index, 1, [&](std::uint64_t, std::string_view bytes) {
      AlignedBytes copy;
      if (const auto* r = verified_record(bytes, copy)) last_time_ = r->time();
      return false;
    });
  }
}

AuditBatch Audit::encode(std::span<const AuditFact> facts) {
  AuditBatch batch;
  auto head = log_.head();
  const TimeMs time = std::max(clock_.now_ms(), last_time_);
  last_time_ = time;
  batch.buffers.reserve(facts.size());
  for (const auto& f : facts) {
    batch.buffers.push_back(encode_record(f, head.index + 1, head.hash, time));
    const auto& buf = batch.buffers.back();
    head = {head.index + 1, audit_hash({buf.data(), buf.size()})};
    batch.entries.push_back({head.index, {buf.data(), buf.size()}, head.hash});
  }
  return batch;
}

Status Audit::write(std::span<const AuditFact> facts) {
  if (facts.empty()) return {};
  const auto batch = encode(facts);
  return log_.append(batch.entries, /*sync=*/false);
}

void ChainVerifier::add_anchor(std::uint64_t index, const storage::AuditHash& hash) {
  anchors_.emplace_back(index, hash);
  std::sort(anchors_.begin(), anchors_.end());
}

std::optional<AuditProblem> ChainVerifier::fail(std::uint64_t index, std::string what) {
  problem_ = AuditProblem{index, std::move(what)};
  return problem_;
}

std::optional<AuditProblem> ChainVerifier::feed(std::uint64_t key, std::string_view bytes) {
  if (problem_) return problem_;
  const std::uint64_t expected = last_.index + 1;
  if (key != expected) {
    return fail(expected, key > expected
                              ? "record " + std::to_string(expected) +
                                    (key - expected > 1 ? " to " + std::to_string(key - 1) + " are"
                                                        : std::string(" is")) +
                                    " missing: the next stored record is " + std::to_string(key)
                              : "record key " + std::to_string(key) + " out of order");
  }
  AlignedBytes copy;
  const auto* r = verified_record(bytes, copy);
  if (r == nullptr) return fail(key, "record " + std::to_string(key) + " does not decode");
  if (r->index() != key) {
    return fail(
        key, "record " + std::to_string(key) + " says it is record " + std::to_string(r->index()));
  }
  const storage::AuditHash& prev = last_.index == 0 ? kGenesis : last_.hash;
  if (r->prev_hash() == nullptr || r->prev_hash()->size() != prev.size() ||
      !std::equal(prev.begin(), prev.end(), r->prev_hash()->begin())) {
    if (last_.index == 0) {
      return fail(key, "record 1 does not start a chain (its previous hash is not zero)");
    }
    return fail(last_.index, "record " + std::to_string(last_.index) +
                                 " was altered: its hash no longer matches the link in record " +
                                 std::to_string(key) + " (or that link was altered)");
  }
  if (r->time() < last_time_) {
    return fail(key, "record " + std::to_string(key) + " is dated before record " +
                         std::to_string(last_.index));
  }
  last_ = {key, audit_hash(as_bytes(bytes))};
  last_time_ = r->time();
  while (anchors_seen_ < anchors_.size() && anchors_[anchors_seen_].first == key) {
    if (anchors_[anchors_seen_].second != last_.hash) {
      return fail(key, "record " + std::to_string(key) +
                           " does not match the anchor kept for it: the chain was rewritten "
                           "from this record or earlier");
    }
    ++anchors_seen_;
  }
  return std::nullopt;
}

std::optional<AuditProblem> ChainVerifier::finish(const storage::AuditHead& recorded) {
  if (problem_) return problem_;
  if (recorded.index > last_.index) {
    const std::uint64_t from = last_.index + 1;
    return fail(from, "record " + std::to_string(from) +
                          (recorded.index > from ? " to " + std::to_string(recorded.index) + " are"
                                                 : std::string(" is")) +
                          " missing: the recorded head is record " +
                          std::to_string(recorded.index));
  }
  if (recorded.index < last_.index) {
    return fail(recorded.index + 1, "record " + std::to_string(recorded.index + 1) +
                                        " follows the recorded head (record " +
                                        std::to_string(recorded.index) +
                                        "): added behind the "
                                        "broker's back, or the head was altered");
  }
  if (recorded.index > 0 && recorded.hash != last_.hash) {
    return fail(last_.index, "record " + std::to_string(last_.index) +
                                 " was altered: its hash does not match the recorded head");
  }
  if (anchors_seen_ < anchors_.size()) {
    return fail(anchors_[anchors_seen_].first, "record " +
                                                   std::to_string(anchors_[anchors_seen_].first) +
                                                   " (an anchor) is not in the chain");
  }
  return std::nullopt;
}

Result<ChainVerifier> verify_chain(
    const storage::AuditLog& log,
    std::span<const std::pair<std::uint64_t, storage::AuditHash>> anchors) {
  ChainVerifier v;
  for (const auto& [index, hash] : anchors) v.add_anchor(index, hash);
  const auto head = log.head();
  Status st = log.scan(
      1, static_cast<std::size_t>(-1),
      [&](std::uint64_t key, std::string_view bytes) { return !v.feed(key, bytes).has_value(); });
  if (!st) return unexpected(st.error());
  v.finish(head);
  return v;
}

PersonScan::PersonScan(NikHash who, std::vector<std::uint64_t> known_sequences)
    : who_(who), sequences_(std::move(known_sequences)) {
  std::sort(sequences_.begin(), sequences_.end());
  sequences_.erase(std::unique(sequences_.begin(), sequences_.end()), sequences_.end());
}

void PersonScan::feed(std::uint64_t index, std::string_view bytes, std::vector<PersonHit>& out) {
  AlignedBytes copy;
  const auto* r = verified_record(bytes, copy);
  if (r == nullptr) return;
  auto hit = [&](std::uint64_t seq) {
    out.push_back(PersonHit{index, r->time(), r->action(), r->agency() ? r->agency()->str() : "",
                            r->consumer() ? r->consumer()->str() : "", seq});
  };
  if (r->action() == audit::Action::Publish && r->persons() != nullptr) {
    for (const auto* p : *r->persons()) {
      if (p->nik_hashes() == nullptr) continue;
      const auto* h = p->nik_hashes()->data();
      const std::size_t n = p->nik_hashes()->size() / who_.size();
      for (std::size_t i = 0; i < n; ++i) {
        if (std::equal(who_.begin(), who_.end(), h + i * who_.size())) {
          sequences_.insert(std::upper_bound(sequences_.begin(), sequences_.end(), p->sequence()),
                            p->sequence());
          hit(p->sequence());
          break;
        }
      }
    }
    return;
  }
  if (r->action() != audit::Action::Deliver && r->action() != audit::Action::Read &&
      r->action() != audit::Action::ReadDeadLetters) {
    return;
  }
  for (std::uint64_t seq : sequences_) {
    if (concerns(*r, seq)) hit(seq);
  }
}

Result<std::uint64_t> first_index_at(const storage::AuditLog& log, TimeMs since) {
  std::uint64_t lo = 1, hi = log.head().index + 1;  // answer in [lo, hi]
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    std::optional<TimeMs> t;
    std::uint64_t at = 0;
    Status st = log.scan(mid, 1, [&](std::uint64_t key, std::string_view bytes) {
      at = key;
      AlignedBytes copy;
      if (const auto* r = verified_record(bytes, copy)) t = r->time();
      return false;
    });
    if (!st) return unexpected(st.error());
    // No record from mid on (the tail is missing), or one that does not decode: look
    // earlier. Verify reports the damage; the search only needs to stay in bounds.
    if (!t || *t >= since) {
      hi = mid;
    } else {
      lo = std::max(mid, at) + 1;
    }
  }
  return lo;
}

}  // namespace kolabus::broker
