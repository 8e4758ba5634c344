// broker::Audit: the broker's audit chain (DESIGN.md, security; docs/OPERATIONS.md).
//
// Every access to personal data and every act of authority leaves a record: each
// group commit (per publishing agency, with the keyed hashes of the NIKs of every
// stored event), each batch of deliveries to a consumer, each range read and
// dead-letter listing, every consumer and dead-letter administration, every refusal
// for lack of authority, every agreement that stops or resumes an agency, every
// registry (re)load. A record holds the action, the agency, the consumer, the
// sequences, the time and the BLAKE2b-256 hash of the previous record's bytes.
//
// Audit turns facts into chained records (kolabus.audit.Record, schemas/audit.fbs);
// storage::AuditLog stores them. A group commit's records travel in the same write
// as its events (Core, EventLog::append); every other record is written before the
// reply or delivery it describes is sent (write()).
//
// ChainVerifier checks a chain read in index order: it names the first record whose
// key, index, link, time or decoding is wrong, and, against the recorded head, a
// removed or altered last record. PersonScan finds, for one NIK hash, the events that
// concern the person and every record of those events reaching an agency.
//
// The NIK key: 32 random bytes in audit.key (mode 0600), made on first start, kept
// beside the broker's CURVE key (or at security.audit_key_file), never in the data
// directory when the broker runs with keys. Without it nobody can tell whose hash a
// record holds; with it, only the broker (`kolabus audit person`) matches a NIK against
// the chain. A NIK has few possible values (district, birth date, serial): with the
// key, anyone could hash them all and read the chain's hashes as NIKs, so a copy of the
// data directory alone (a backup, a disk) must not carry it (open_nik_key).
//
// Ownership: Audit borrows the audit log and the clock; they must outlive it.
// Thread-safety: Audit is used by one thread (the server loop); ChainVerifier and
// PersonScan are plain values.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <sodium.h>

#include <common/aligned_bytes.h>
#include <common/clock.h>
#include <common/result.h>
#include <schemas/audit_generated.h>
#include <storage/audit_log.h>

namespace kolabus::broker {

using NikKey = std::array<std::uint8_t, 32>;
using NikHash = std::array<std::uint8_t, 16>;

// The keyed hash stored for a NIK: the first 16 bytes of BLAKE2b-256(nik, key).
NikHash nik_hash(std::string_view nik, const NikKey& key);

// The audit key as open_nik_key found it.
struct NikKeyFile {
  NikKey key{};
  enum class Origin {
    kLoaded,   // read from `path`
    kCreated,  // made now (random) at `path`
    kMoved,    // read from `old_path` and moved to `path`
  } origin = Origin::kLoaded;
  // An identical copy at `old_path` (a move stopped by a crash after the new file was
  // written) was removed.
  bool removed_old_copy = false;
};

// Opens the audit key file `path` (64 hex digits and a newline, mode 0600). `old_path`
// is where releases before this one kept it (the data directory's audit.key); empty, or
// the same file as `path`: none.
//  - `path` exists: its key. A file that group or others may read or write is refused
//    (kInvalidArgument, naming it and `chmod 600`), as a CURVE key pair is
//    (check_secret_mode, common/private_files.h).
//  - only `old_path` exists: its key is moved to `path` (written whole and synced, then
//    removed from the old place), the same 32 bytes: every NIK hash in the chain stays
//    matchable. Refused like `path` when group or others may use it.
//  - both exist: identical, the old copy is removed; different, kInvalidArgument (which
//    one made the chain's hashes is the operator's to tell).
//  - neither: with `may_create`, a new random key at `path` (its directory made 0700
//    if missing); without, kNotFound naming both places.
// Errors: as above; kCorruption (not 64 hex digits); kIoError.
Result<NikKeyFile> open_nik_key(const std::string& path, const std::string& old_path,
                                bool may_create);

// BLAKE2b-256 of `bytes`: a record's hash.
storage::AuditHash audit_hash(std::span<const std::uint8_t> bytes);
std::string to_hex(std::span<const std::uint8_t> bytes);

// What one record says; the chain fields (index, prev_hash, time) are Audit's.
struct AuditFact {
  audit::Action action = audit::Action::BrokerStarted;
  std::string agency;
  std::string consumer;
  std::string owner;
  // The events concerned (any order; duplicates kept once). Stored as first..last
  // plus, unless they are exactly every sequence of that range, the list.
  std::vector<std::uint64_t> sequences;
  // When `sequences` is empty: a single position (a seek's target), or 0.
  std::uint64_t position = 0;
  std::uint64_t count = 0;  // 0: the number of sequences
  struct Person {
    std::uint64_t sequence = 0;
    std::vector<NikHash> niks;
  };
  std::vector<Person> persons;
  std::string detail;
};

// Encoded records ready to store. Entries borrow from the buffers; keep the batch
// alive (and unmoved: moving the vectors is fine, their elements' data stay put)
// until they are stored.
struct AuditBatch {
  std::vector<flatbuffers::DetachedBuffer> buffers;
  std::vector<storage::AuditEntry> entries;
  bool empty() const { return entries.empty(); }
};

class Audit {
 public:
  Audit(storage::AuditLog& log, const Clock& clock, NikKey key);

  // nik_hash(nik, key), from a BLAKE2b state that has already absorbed the key: one
  // compression per NIK instead of two (every published event hashes its NIKs).
  NikHash hash_nik(std::string_view nik) const;

  // Encodes `facts` as the records that follow the stored head, in order. Stores
  // nothing: pass the entries to EventLog::append with the events they describe.
  AuditBatch encode(std::span<const AuditFact> facts);

  // Encodes and stores `facts` (an unsynced write: it survives a crash of the broker,
  // and the next group commit's sync makes it durable). Errors: as AuditLog::append.
  Status write(std::span<const AuditFact> facts);
  Status write(const AuditFact& fact) { return write(std::span<const AuditFact>(&fact, 1)); }

  const storage::AuditLog& log() const { return log_; }

 private:
  storage::AuditLog& log_;
  const Clock& clock_;
  NikKey key_;
  crypto_generichash_state keyed_;  // initialised with key_, never updated
  TimeMs last_time_ = 0;            // records' times never decrease along the chain
};

// The first bad record of a chain, and why.
struct AuditProblem {
  std::uint64_t index = 0;
  std::string what;
};

// Checks a chain fed in key order. After the first problem it stops checking (and
// keeps returning that problem).
class ChainVerifier {
 public:
  // An externally kept (index, hash) the chain must still match: a copy of an earlier
  // head. Anchors catch what the recorded head cannot: a chain rewritten from some
  // record on, with its head rewritten too.
  void add_anchor(std::uint64_t index, const storage::AuditHash& hash);

  // The next stored record: its key and bytes.
  std::optional<AuditProblem> feed(std::uint64_t key, std::string_view bytes);
  // After the last stored record: compares the chain's end with the recorded head and
  // checks that every anchor was seen.
  std::optional<AuditProblem> finish(const storage::AuditHead& recorded);

  std::uint64_t checked() const { return last_.index; }
  const storage::AuditHead& last() const { return last_; }
  const std::optional<AuditProblem>& problem() const { return problem_; }

 private:
  std::optional<AuditProblem> fail(std::uint64_t index, std::string what);

  storage::AuditHead last_;  // the last record fed, as computed
  TimeMs last_time_ = 0;
  std::vector<std::pair<std::uint64_t, storage::AuditHash>> anchors_;
  std::size_t anchors_seen_ = 0;
  std::optional<AuditProblem> problem_;
};

// Verifies the whole stored chain (a broker's own, or one opened read-only).
// Returns the verifier after finish(); kIoError/kCorruption when it cannot be read.
Result<ChainVerifier> verify_chain(
    const storage::AuditLog& log,
    std::span<const std::pair<std::uint64_t, storage::AuditHash>> anchors = {});

// One record that shows a person's event reaching an agency (or being published).
struct PersonHit {
  std::uint64_t index = 0;
  TimeMs time = 0;
  audit::Action action = audit::Action::Publish;
  std::string agency;
  std::string consumer;
  std::uint64_t sequence = 0;
};

// Finds a person's records in a chain fed in index order. Publish records name the
// person's events (by NIK hash); later records that carry one of those sequences
// (deliveries, range reads, dead-letter listings) are hits. The state (the person's
// sequences so far) can be carried between pages by the caller.
class PersonScan {
 public:
  PersonScan(NikHash who, std::vector<std::uint64_t> known_sequences = {});
  // Appends this record's hits to `out`. Records that do not decode are skipped (verify
  // reports them).
  void feed(std::uint64_t index, std::string_view bytes, std::vector<PersonHit>& out);
  // The person's sequences found so far, sorted.
  const std::vector<std::uint64_t>& sequences() const { return sequences_; }

 private:
  NikHash who_;
  std::vector<std::uint64_t> sequences_;  // sorted
};

// The index of the first record with time >= `since` (head.index + 1 when none):
// a binary search, since record times never decrease.
Result<std::uint64_t> first_index_at(const storage::AuditLog& log, TimeMs since);

// The record's bytes as a verified Record, or null. Reads `bytes` in place when they
// are 8-byte aligned, else a copy of them made in `storage` (a view into a RocksDB
// block is at any offset): the Record is valid while both live and `storage` is not
// used again.
const audit::Record* verified_record(std::string_view bytes, AlignedBytes& storage);

}  // namespace kolabus::broker
