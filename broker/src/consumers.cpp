#include <algorithm>
#include <array>
#include <limits>

#include <flatbuffers/flatbuffers.h>

#include <broker/consumers.h>
#include <common/aligned_bytes.h>
#include <schemas/log_generated.h>

namespace kolabus::broker {

namespace {

using protocol::ErrorCode;
using protocol::StartPolicy;

constexpr std::array<std::size_t, 4> kPrefixLengths = {2, 4, 6, 10};
// Operator-visible lag is counted up to here; beyond, the figure is a lower bound.
constexpr std::uint64_t kLagCountLimit = 10'000'000;

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

CommandError unknown_consumer(std::string_view owner, std::string_view name) {
  return {
      ErrorCode::UnknownConsumer, "consumer",
      "consumer: no consumer '" + std::string(name) + "' of agency '" + std::string(owner) + "'"};
}

// The record read in place when aligned, else from a copy in a buffer of this thread:
// valid until the next call on the same thread (scans hand out views into RocksDB's
// blocks, at any offset; see common/aligned_bytes.h).
const log::LogRecord* record_root(std::string_view record) {
  thread_local AlignedBytes copy;
  const auto bytes = aligned(record, copy);
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!log::VerifyLogRecordBuffer(verifier)) return nullptr;
  return log::GetLogRecord(bytes.data());
}

std::string encode_spec(const ConsumerSpec& spec) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto name = fbb.CreateString(spec.name);
  auto kinds = fbb.CreateVector(spec.filter.kinds);
  auto regions = fbb.CreateVectorOfStrings(spec.filter.regions);
  auto filter = protocol::CreateFilter(fbb, kinds, regions);
  fbb.Finish(protocol::CreateConsumerConfig(fbb, name, filter, spec.start, spec.start_sequence,
                                            spec.start_time, spec.ack_wait_ms, spec.max_deliver));
  return {reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()};
}

std::optional<ConsumerSpec> decode_spec(std::string_view bytes) {
  AlignedBytes copy;
  const std::uint8_t* data = aligned(bytes, copy).data();
  flatbuffers::Verifier verifier(data, bytes.size());
  if (!verifier.VerifyBuffer<protocol::ConsumerConfig>(nullptr)) return std::nullopt;
  const auto* c = flatbuffers::GetRoot<protocol::ConsumerConfig>(data);
  ConsumerSpec spec;
  spec.name = c->name()->str();
  if (c->filter() != nullptr) {
    if (c->filter()->kinds() != nullptr) {
      spec.filter.kinds.assign(c->filter()->kinds()->begin(), c->filter()->kinds()->end());
    }
    if (c->filter()->regions() != nullptr) {
      for (const auto* r : *c->filter()->regions()) spec.filter.regions.push_back(r->str());
    }
  }
  spec.start = c->start();
  spec.start_sequence = c->start_sequence();
  spec.start_time = c->start_time();
  spec.ack_wait_ms = c->ack_wait_ms();
  spec.max_deliver = c->max_deliver();
  return spec;
}

}  // namespace

bool Filter::matches_kind(std::uint8_t routing_kind) const {
  if (kinds.empty()) return true;
  return std::binary_search(kinds.begin(), kinds.end(),
                            static_cast<std::uint8_t>(routing_kind & ~kCorrectionBit));
}

bool Filter::matches(std::uint8_t routing_kind,
                     const std::vector<std::string>& event_regions) const {
  if (!matches_kind(routing_kind)) return false;
  if (regions.empty()) return true;
  for (const auto& r : event_regions) {
    for (const auto& p : regions) {
      if (r.compare(0, p.size(), p) == 0) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------

namespace {

struct Attachment {
  ClientId client;
  std::uint32_t window = 0;
  std::uint32_t in_flight = 0;
  std::uint32_t batch = 1;  // deliveries per message, at most
  std::uint64_t id = 0;     // unique within its consumer, never 0
};

struct Pending {
  std::uint32_t attempt = 0;  // deliveries made so far
  TimeMs deadline = 0;        // when the current delivery expires
  // The Attachment::id of the holder of the current delivery; 0: none, due. An id, not
  // the ClientId: no string copied per delivery, a smaller map node.
  std::uint64_t holder = 0;
  bool redrive = false;  // a dead letter being delivered again
  TimeMs first_sent = 0;
};

// Freed nodes of the in-flight maps, kept for the next insert: a catch-up inserts one
// per delivered event and erases it on its acknowledgement, and glibc's malloc spent
// more on them (splitting and merging chunks among the records' sizes) than the tree.
// Holds nodes of one size (the maps' only allocation), at most kMax of them.
class NodeFreeList {
 public:
  NodeFreeList() = default;
  NodeFreeList(const NodeFreeList&) = delete;
  NodeFreeList& operator=(const NodeFreeList&) = delete;
  ~NodeFreeList() {
    for (void* p : free_) ::operator delete(p);
  }

  void* take(std::size_t size) {
    if (size != size_ || free_.empty()) return ::operator new(size);
    void* p = free_.back();
    free_.pop_back();
    return p;
  }
  void give(void* p, std::size_t size) {
    if (size_ == 0) size_ = size;
    if (size != size_ || free_.size() >= kMax) {
      ::operator delete(p);
      return;
    }
    free_.push_back(p);
  }

 private:
  static constexpr std::size_t kMax = 1 << 16;  // 6 MB of nodes of ~96 bytes
  std::vector<void*> free_;
  std::size_t size_ = 0;
};

template <typename T>
struct NodeAllocator {
  using value_type = T;
  NodeFreeList* list;
  explicit NodeAllocator(NodeFreeList* l) : list(l) {}
  template <typename U>
  NodeAllocator(const NodeAllocator<U>& o) : list(o.list) {}  // NOLINT: rebinding
  T* allocate(std::size_t n) {
    if (n != 1) return std::allocator<T>().allocate(n);
    return static_cast<T*>(list->take(sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) {
    if (n != 1) return std::allocator<T>().deallocate(p, n);
    list->give(p, sizeof(T));
  }
  template <typename U>
  bool operator==(const NodeAllocator<U>& o) const {
    return list == o.list;
  }
};

using InFlight = std::map<std::uint64_t, Pending, std::less<std::uint64_t>,
                          NodeAllocator<std::pair<const std::uint64_t, Pending>>>;

struct Consumer {
  explicit Consumer(NodeFreeList& nodes) : in_flight(InFlight::allocator_type(&nodes)) {}

  storage::ConsumerKey key;
  ConsumerSpec spec;
  std::uint64_t ack_floor = 0;
  std::set<std::uint64_t> acked_above;
  std::uint64_t cursor = 1;  // next sequence to consider for a first delivery
  InFlight in_flight;
  std::set<std::uint64_t> due;  // in_flight entries waiting to be sent (again)
  std::deque<std::pair<TimeMs, std::uint64_t>> timers;  // ack deadlines, send order; lazy
  std::multimap<TimeMs, std::uint64_t> delayed;         // Nak with a delay
  std::vector<Attachment> clients;
  std::size_t next_client = 0;
  std::uint64_t last_attachment_id = 0;
  std::uint64_t dead_count = 0;
  bool has_new = true;  // matching events may lie at or after the cursor
  bool dirty = false;   // position changed since the last flush

  std::uint64_t floor() const {
    for (const auto& [seq, p] : in_flight) {
      if (!p.redrive) return std::min(seq - 1, cursor - 1);
    }
    return cursor - 1;
  }
};

struct ClientRec {
  TimeMs last_seen = 0;
  std::set<Consumer*> consumers;
};

// The records of recent sequences, so that fan-out reads a new event from memory once
// per matching consumer instead of from RocksDB (each Medan event goes to about 12
// consumers). Records a scan reads from the log go to RecordBuffers instead.
// A ring by sequence: a record stays until a sequence `slots` later takes its slot, or
// the byte budget leaves no room for it. Bounded by both.
class RecordCache {
 public:
  RecordCache(std::size_t slots, std::size_t max_bytes) : slots_(slots), max_bytes_(max_bytes) {}

  // The cached record of `seq`: `bytes` stored now, or the one already held.
  std::shared_ptr<const std::string> put(std::uint64_t seq, std::string_view bytes) {
    Slot& s = slots_[seq % slots_.size()];
    if (s.seq == seq) return s.bytes;
    std::shared_ptr<std::string> fresh;
    if (s.bytes) bytes_ -= s.bytes->capacity();
    if (s.bytes.use_count() == 1) {
      // No delivery holds the record this slot had (the usual case: it was sent long
      // ago): its string takes the new bytes, with no allocation or free. Only the
      // broker's loop thread holds these pointers, so the count is exact.
      fresh = std::move(s.bytes);
      fresh->assign(bytes);
    } else {
      fresh = std::make_shared<std::string>(bytes);
    }
    s.seq = 0;
    s.bytes.reset();
    // Counted by capacity: a reused string may have more than the record's size.
    if (bytes_ + fresh->capacity() <= max_bytes_) {
      s.seq = seq;
      s.bytes = fresh;
      bytes_ += fresh->capacity();
    }
    return fresh;
  }

  // Null when not held.
  std::shared_ptr<const std::string> get(std::uint64_t seq) const {
    const Slot& s = slots_[seq % slots_.size()];
    return s.seq == seq && seq != 0 ? s.bytes : nullptr;
  }

 private:
  struct Slot {
    std::uint64_t seq = 0;
    // Not const: put() reuses a string no one else holds. Handed out as const.
    std::shared_ptr<std::string> bytes;
  };
  std::vector<Slot> slots_;
  std::size_t bytes_ = 0;  // held by the slots (a delivery may hold a record longer)
  std::size_t max_bytes_;
};

// Copies of records read from the log by a scan (a catch-up), each delivered once: the
// scan's view dies with RocksDB's iterator, so the record is copied, once, here. The
// strings sit in slabs of kSlab with one shared count: a slab no one else holds (its
// deliveries were sent; the count is exact, only the broker's loop thread holds these
// pointers) takes the next records without an allocation, and handing a record out
// touches the slab's count, in cache, not a count of its own. Reused from the front at
// each pump, so the memory written is the memory of the last round, not a buffer
// untouched for 16,384 records (the ring above, whose slots a catch-up would also take
// from live events). At most about `max` strings are kept; beyond, a record gets its
// own allocation.
class RecordBuffers {
 public:
  explicit RecordBuffers(std::size_t max) : max_slabs_(max / kSlab + 1) {}

  // Every slab may be free again (a new pump, or an operator's read).
  void rewind() {
    slab_ = 0;
    next_ = 0;
  }

  // A copy of `bytes`, valid until the next stage() or rewind(); keep() hands it out.
  const std::string& stage(std::string_view bytes) {
    loose_.reset();
    if (!find_room()) {
      loose_ = std::make_shared<std::string>(bytes);
      return *loose_;
    }
    std::string& s = slabs_[slab_]->records[next_];
    s.assign(bytes);
    return s;
  }

  // The string stage() last filled, shared; the next stage() fills another. A string
  // staged and not kept (a record the filter does not take) is filled again.
  std::shared_ptr<const std::string> keep() {
    if (loose_ != nullptr) return std::move(loose_);
    return {slabs_[slab_], &slabs_[slab_]->records[next_++]};
  }

 private:
  static constexpr std::size_t kSlab = 64;
  struct Slab {
    std::array<std::string, kSlab> records;
  };

  // Moves to a string that may be written: the current slab's next one if the slab is
  // this pump's (some handed out already) or no one holds it, else the next such slab.
  bool find_room() {
    for (;;) {
      if (slab_ == slabs_.size()) {
        if (slabs_.size() == max_slabs_) return false;
        slabs_.push_back(std::make_shared<Slab>());
        next_ = 0;
        return true;
      }
      if (next_ < kSlab && (next_ > 0 || slabs_[slab_].use_count() == 1)) return true;
      ++slab_;
      next_ = 0;
    }
  }

  std::vector<std::shared_ptr<Slab>> slabs_;
  std::size_t slab_ = 0;  // the slab being filled
  std::size_t next_ = 0;  // its next string
  std::size_t max_slabs_;
  std::shared_ptr<std::string> loose_;  // staged outside the slabs (all held)
};

}  // namespace

struct Consumers::State {
  storage::EventLog& log;
  storage::ConsumerStore& store;
  const schemas::RegionTable& regions;
  const Clock& clock;
  ConsumersOptions options;

  NodeFreeList in_flight_nodes;  // before `consumers`: their maps give nodes back to it
  std::map<storage::ConsumerKey, std::unique_ptr<Consumer>> consumers;
  std::map<ClientId, ClientRec> clients;
  mutable RecordCache recent{options.record_cache_slots, options.record_cache_bytes};
  // Enough for a pump that fills a client's largest window (a catch-up's first pump);
  // about 7 MB of records of 600 bytes.
  mutable RecordBuffers scanned{std::max<std::size_t>(options.read_batch, options.max_window)};
  // Routing: consumers by region prefix, and those that take every region.
  std::unordered_map<std::string, std::vector<Consumer*>> by_prefix;
  std::vector<Consumer*> all_regions;
  // Consumers with something to send (due events, or new events with credit).
  std::set<Consumer*> work;
  // Consumers held back because their owner is paused, and the predicate.
  std::set<Consumer*> held;
  PausedFn paused;
  std::function<bool(const ClientId&)> can_send;
  bool may_send(const ClientId& c) const { return !can_send || can_send(c); }
  std::optional<std::string> paused_why(const Consumer& c) const {
    return paused ? paused(c.key.owner, c.key.name, c.spec.filter) : std::nullopt;
  }
  // Pending store writes.
  std::vector<storage::DeadLetterEntry> dead_out;
  std::vector<std::pair<storage::ConsumerKey, std::uint64_t>> dead_removed;
  std::vector<storage::ConsumerKey> erased;
  // Nothing expires before this: the earliest ack deadline, delayed retry or client
  // timeout known. Lowered as they are added; recomputed after each expiry pass.
  TimeMs next_due = std::numeric_limits<TimeMs>::max();
  void due_by(TimeMs t) { next_due = std::min(next_due, t); }

  TimeMs compute_next_due() const {
    TimeMs next = std::numeric_limits<TimeMs>::max();
    for (const auto& [key, c] : consumers) {
      if (!c->timers.empty()) next = std::min(next, c->timers.front().first);
      if (!c->delayed.empty()) next = std::min(next, c->delayed.begin()->first);
    }
    for (const auto& [id, rec] : clients) {
      next = std::min(next, rec.last_seen + options.client_timeout_ms);
    }
    return next;
  }

  State(storage::EventLog& l, storage::ConsumerStore& s, const schemas::RegionTable& r,
        const Clock& c, ConsumersOptions o)
      : log(l), store(s), regions(r), clock(c), options(o) {}

  Consumer* find(std::string_view owner, std::string_view name) {
    auto it = consumers.find(storage::ConsumerKey{std::string(owner), std::string(name)});
    return it == consumers.end() ? nullptr : it->second.get();
  }

  void route_add(Consumer* c) {
    if (c->spec.filter.regions.empty()) {
      all_regions.push_back(c);
    } else {
      for (const auto& p : c->spec.filter.regions) by_prefix[p].push_back(c);
    }
  }
  void route_remove(Consumer* c) {
    auto drop = [c](std::vector<Consumer*>& v) { std::erase(v, c); };
    drop(all_regions);
    for (const auto& p : c->spec.filter.regions) {
      auto it = by_prefix.find(p);
      if (it == by_prefix.end()) continue;
      drop(it->second);
      if (it->second.empty()) by_prefix.erase(it);
    }
  }

  Attachment* attachment(Consumer& c, const ClientId& client) {
    for (auto& a : c.clients) {
      if (a.client == client) return &a;
    }
    return nullptr;
  }

  // The delivery of `seq` no longer counts against its client's window.
  void release(Consumer& c, Pending& p) {
    if (p.holder == 0) return;
    for (auto& a : c.clients) {
      if (a.id == p.holder && a.in_flight > 0) a.in_flight--;
    }
    p.holder = 0;
    work.insert(&c);
  }

  void settle(Consumer& c) {
    const std::uint64_t f = c.floor();
    if (f != c.ack_floor) {
      c.ack_floor = f;
      c.dirty = true;
    }
    while (!c.acked_above.empty() && *c.acked_above.begin() <= c.ack_floor) {
      c.acked_above.erase(c.acked_above.begin());
      c.dirty = true;
    }
  }

  void dead_letter(Consumer& c, std::uint64_t seq, std::string reason) {
    auto it = c.in_flight.find(seq);
    if (it == c.in_flight.end()) return;
    release(c, it->second);
    dead_out.push_back(storage::DeadLetterEntry{c.key, seq, it->second.attempt, std::move(reason),
                                                clock.now_ms()});
    if (!it->second.redrive) {
      c.dead_count++;
      c.acked_above.insert(seq);  // done with, as far as the position goes
    }
    c.in_flight.erase(it);
    c.due.erase(seq);
    c.dirty = true;
    settle(c);
  }

  void detach(const ClientId& client, Consumer& c) {
    if (const Attachment* a = attachment(c, client)) {
      for (auto& [seq, p] : c.in_flight) {
        if (p.holder == a->id) {
          p.holder = 0;
          c.due.insert(seq);
        }
      }
    }
    std::erase_if(c.clients, [&](const Attachment& a) { return a.client == client; });
    if (!c.due.empty()) work.insert(&c);
  }

  void detach_all(const ClientId& client) {
    auto it = clients.find(client);
    if (it == clients.end()) return;
    for (Consumer* c : it->second.consumers) detach(client, *c);
    clients.erase(it);
  }

  // Reads up to `max` matching sequences in [from, to_excl). Returns them, the first
  // sequence not yet examined, and whether the range is exhausted. Reads the region
  // index (only the filter's own events) or, for a filter of every region, the log.
  struct Scan {
    std::vector<std::uint64_t> seqs;
    // With Keep::kRecords and a filter of every region: the record of each of `seqs`
    // (read with them). Otherwise empty: read() finds them.
    std::vector<std::shared_ptr<const std::string>> records;
    std::uint64_t next = 0;
    bool done = false;
  };
  enum class Keep { kRecords, kSequences };
  // The record under `seq`, from the cache of recent records or else the log (null if
  // the log does not hold it).
  Result<std::shared_ptr<const std::string>> read(std::uint64_t seq) const {
    if (auto r = recent.get(seq)) return r;
    auto stored = log.read(Sequence{seq});
    if (!stored) return unexpected(stored.error());
    if (!stored->has_value()) return std::shared_ptr<const std::string>();
    return std::make_shared<const std::string>(std::move(**stored));
  }

  Result<Scan> scan_matching(const Filter& f, std::uint64_t from, std::uint64_t to_excl,
                             std::size_t max, Keep keep = Keep::kRecords) const {
    Scan out;
    out.next = from;
    if (from >= to_excl || max == 0) {
      out.done = from >= to_excl;
      return out;
    }
    if (f.regions.empty()) {
      // Every region: read the log itself, a bounded number of records per call.
      const std::size_t examine = std::max<std::size_t>(max * 8, 1024);
      std::size_t examined = 0;
      bool full = false;
      std::uint64_t next = from;
      // Counts a record examined and takes it if its kind matches (`hold` gives the
      // record to send); false once `max` are taken.
      const auto take = [&](std::uint64_t seq, std::string_view bytes, auto&& hold) {
        ++examined;
        const auto* r = record_root(bytes);
        KOLABUS_CHECK(r != nullptr);  // the broker only stores records it built
        if (f.matches_kind(r->routing_kind())) {
          out.seqs.push_back(seq);
          if (keep == Keep::kRecords) out.records.push_back(hold());
        }
        full = out.seqs.size() == max;
        return !full;
      };
      // A consumer at the tail finds its events in the cache of recent records: no read
      // of the log, whose iterator costs more than the rest of a round of a few events.
      // From the first sequence not held (evicted, or no event) on, the log is read.
      if (keep == Keep::kRecords) {
        while (next < to_excl && examined < examine && !full) {
          auto cached = recent.get(next);
          if (!cached) break;
          take(next, *cached, [&] { return std::move(cached); });
          ++next;
        }
        if (next >= to_excl || examined == examine || full) {
          out.next = next;
          out.done = next >= to_excl;
          return out;
        }
      }
      Status st =
          log.scan(Sequence{next}, examine - examined, [&](Sequence seq, std::string_view rec) {
            if (seq.value >= to_excl) return false;
            next = seq.value + 1;
            if (keep == Keep::kSequences) {
              return take(seq.value, rec, [] { return std::shared_ptr<const std::string>(); });
            }
            // The copy to send first (a recent one is held already): it is aligned, so the
            // record is copied once, not once to decode it and again to send it.
            auto recent_copy = recent.get(seq.value);
            const std::string& copy = recent_copy ? *recent_copy : scanned.stage(rec);
            return take(seq.value, copy,
                        [&] { return recent_copy ? std::move(recent_copy) : scanned.keep(); });
          });
      if (!st) return unexpected(st.error());
      // Stopped neither by `max` nor by the examine bound: nothing more up to to_excl.
      out.next = (full || examined == examine) ? next : to_excl;
      out.done = out.next >= to_excl;
      return out;
    }
    // One sorted run per prefix; merge them up to the smallest sequence that every
    // run is known to be complete to.
    std::uint64_t bound = std::numeric_limits<std::uint64_t>::max();
    std::vector<std::pair<std::uint64_t, std::uint8_t>> hits;
    for (const auto& p : f.regions) {
      std::size_t n = 0;
      std::uint64_t last = 0;
      Status st = log.scan_region(p, Sequence{from}, max, [&](const storage::RegionHit& h) {
        if (h.seq.value >= to_excl) return false;
        hits.emplace_back(h.seq.value, h.kind);
        last = h.seq.value;
        return ++n < max;
      });
      if (!st) return unexpected(st.error());
      if (n == max) bound = std::min(bound, last);
    }
    std::sort(hits.begin(), hits.end());
    std::uint64_t prev = 0;
    for (const auto& [seq, kind] : hits) {
      if (seq > bound) break;
      if (seq == prev) continue;
      prev = seq;
      if (!f.matches_kind(kind)) continue;
      out.seqs.push_back(seq);
      if (out.seqs.size() == max) break;
    }
    if (out.seqs.size() == max) {
      out.next = out.seqs.back() + 1;
    } else {
      out.next = bound == std::numeric_limits<std::uint64_t>::max() ? to_excl : bound + 1;
    }
    out.done = out.next >= to_excl;
    return out;
  }

  std::uint32_t credit(const Consumer& c) const {
    std::uint32_t total = 0;
    for (const auto& a : c.clients) {
      if (may_send(a.client)) total += a.window - std::min(a.window, a.in_flight);
    }
    return total;
  }

  Attachment* pick_client(Consumer& c) {
    const std::size_t n = c.clients.size();
    for (std::size_t i = 0; i < n; ++i) {
      Attachment& a = c.clients[(c.next_client + i) % n];
      if (a.in_flight < a.window && may_send(a.client)) {
        c.next_client = (c.next_client + i + 1) % n;
        return &a;
      }
    }
    return nullptr;
  }

  // Sends one in-flight event to a client with room. Returns false when none has.
  // `record`: the event's record when the caller has it (a scan read it), else null.
  bool send(Consumer& c, std::uint64_t seq, Pending& p, TimeMs now, std::vector<Delivery>& out,
            std::shared_ptr<const std::string> record = nullptr) {
    Attachment* a = pick_client(c);
    if (a == nullptr) return false;
    if (record == nullptr) {
      auto rec = read(seq);
      KOLABUS_CHECK(rec.has_value() && *rec != nullptr);  // sequences come from the log
      record = std::move(*rec);
    }
    a->in_flight++;
    p.holder = a->id;
    p.attempt++;
    p.deadline = now + c.spec.ack_wait_ms;
    if (p.first_sent == 0) p.first_sent = now;
    c.timers.emplace_back(p.deadline, seq);
    due_by(p.deadline);
    out.push_back(Delivery{a->client, c.key.owner, c.key.name, Sequence{seq}, p.attempt,
                           std::move(record), a->batch});
    return true;
  }

  void deliver(Consumer& c, TimeMs now, std::vector<Delivery>& out) {
    // Events due again first, oldest first.
    while (!c.due.empty()) {
      const std::uint64_t seq = *c.due.begin();
      auto it = c.in_flight.find(seq);
      if (it == c.in_flight.end()) {
        c.due.erase(c.due.begin());
        continue;
      }
      if (it->second.attempt >= c.spec.max_deliver) {
        dead_letter(c, seq,
                    "not acknowledged after " + std::to_string(it->second.attempt) +
                        " deliveries (max_deliver " + std::to_string(c.spec.max_deliver) + ")");
        continue;
      }
      if (!send(c, seq, it->second, now, out)) return;
      c.due.erase(c.due.begin());
    }
    // Then new events from the cursor, within the clients' credit.
    while (c.has_new) {
      const std::uint32_t room = credit(c);
      if (room == 0) return;
      auto scan = scan_matching(c.spec.filter, c.cursor, log.next_sequence().value,
                                std::min<std::size_t>(room, options.read_batch));
      if (!scan) return;  // a read error: try again on the next turn
      for (std::size_t i = 0; i < scan->seqs.size(); ++i) {
        const std::uint64_t seq = scan->seqs[i];
        c.cursor = seq + 1;
        if (c.acked_above.contains(seq)) continue;  // acknowledged before a restart
        // Above every entry but a redriven dead letter's: the hint makes it O(1).
        Pending& p = c.in_flight.try_emplace(c.in_flight.end(), seq)->second;
        auto record = scan->records.empty() ? nullptr : std::move(scan->records[i]);
        if (!send(c, seq, p, now, out, std::move(record))) {
          // Credit ran out between scan and send (cannot happen: room was counted).
          c.due.insert(seq);
          return;
        }
      }
      c.cursor = std::max(c.cursor, scan->next);
      if (scan->done) c.has_new = false;
    }
  }

  void expire(TimeMs now) {
    for (auto& [key, cp] : consumers) {
      Consumer& c = *cp;
      while (!c.timers.empty() && c.timers.front().first <= now) {
        const auto [deadline, seq] = c.timers.front();
        c.timers.pop_front();
        auto it = c.in_flight.find(seq);
        if (it == c.in_flight.end() || it->second.holder == 0 || it->second.deadline != deadline) {
          continue;  // acknowledged, or delivered again since
        }
        release(c, it->second);
        c.due.insert(seq);
        work.insert(&c);
      }
      while (!c.delayed.empty() && c.delayed.begin()->first <= now) {
        const std::uint64_t seq = c.delayed.begin()->second;
        c.delayed.erase(c.delayed.begin());
        auto it = c.in_flight.find(seq);
        if (it != c.in_flight.end() && it->second.holder == 0) {
          c.due.insert(seq);
          work.insert(&c);
        }
      }
    }
  }

  void expire_clients(TimeMs now) {
    std::vector<ClientId> silent;
    for (const auto& [id, rec] : clients) {
      if (now - rec.last_seen > options.client_timeout_ms) silent.push_back(id);
    }
    for (const auto& id : silent) detach_all(id);
  }

  std::uint64_t count_lag(const Consumer& c) const {
    std::uint64_t n = 0;
    std::uint64_t from = c.ack_floor + 1;
    const std::uint64_t end = log.next_sequence().value;
    while (from < end && n < kLagCountLimit) {
      auto scan = scan_matching(c.spec.filter, from, end, 65536, Keep::kSequences);
      if (!scan) break;
      for (std::uint64_t seq : scan->seqs) n += c.acked_above.contains(seq) ? 0 : 1;
      if (scan->done) break;
      from = scan->next;
    }
    return n;
  }

  // Counting the lag reads the consumer's index range: for operators, not for
  // every Subscribe.
  enum class Lag { kCount, kSkip };
  ConsumerStatus status(const Consumer& c, bool created, Lag lag) const {
    ConsumerStatus s;
    s.owner = c.key.owner;
    s.spec = c.spec;
    s.ack_floor = c.ack_floor;
    s.next_sequence = c.cursor;
    // Delivered at least once and not acknowledged: out with a client, or due again.
    for (const auto& [seq, p] : c.in_flight) {
      if (p.first_sent != 0) s.pending++;
    }
    if (lag == Lag::kCount) s.lag = count_lag(c);
    const TimeMs now = clock.now_ms();
    for (const auto& [seq, p] : c.in_flight) {
      if (p.first_sent != 0) {
        s.oldest_unacked_age_ms = std::max(s.oldest_unacked_age_ms, now - p.first_sent);
      }
    }
    s.clients = static_cast<std::uint32_t>(c.clients.size());
    s.dead_letters = c.dead_count;
    s.created = created;
    if (auto why = paused_why(c)) s.paused = std::move(*why);
    for (const auto& a : c.clients) s.stalled_clients += may_send(a.client) ? 0 : 1;
    return s;
  }

  std::uint64_t start_cursor(StartPolicy policy, std::uint64_t sequence, TimeMs time) const {
    switch (policy) {
      case StartPolicy::Earliest:
        return 1;
      case StartPolicy::Latest:
        return log.next_sequence().value;
      case StartPolicy::AtSequence:
        // Past the end would silently skip every event published up to there.
        return std::clamp<std::uint64_t>(sequence, 1, log.next_sequence().value);
      case StartPolicy::AtTime:
        return sequence_at_time(time);
    }
    return 1;
  }

  std::uint64_t sequence_at_time(TimeMs time) const {
    std::uint64_t lo = 1, hi = log.next_sequence().value;
    while (lo < hi) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      auto rec = log.read(Sequence{mid});
      TimeMs t = 0;
      if (rec && rec->has_value()) {
        if (const auto* r = record_root(**rec)) t = r->received_at();
      }
      if (t < time) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  // The sequences among `wanted` (all, when empty) that are dead letters of `c`.
  CommandResult<std::vector<std::uint64_t>> dead_letter_seqs(
      const Consumer& c, std::span<const std::uint64_t> wanted) const {
    std::vector<std::uint64_t> out;
    if (wanted.empty()) {
      auto all = store.dead_letters(c.key, 0, SIZE_MAX);
      if (!all) return CommandError{ErrorCode::StorageUnavailable, "", all.error().to_string()};
      for (const auto& e : *all) out.push_back(e.sequence);
      return out;
    }
    for (std::uint64_t seq : wanted) {
      auto one = store.dead_letters(c.key, seq, 1);
      if (one && !one->empty() && one->front().sequence == seq) out.push_back(seq);
    }
    return out;
  }

  void reset_position(Consumer& c, std::uint64_t cursor) {
    for (auto& a : c.clients) a.in_flight = 0;
    c.in_flight.clear();
    c.due.clear();
    c.timers.clear();
    c.delayed.clear();
    c.acked_above.clear();
    c.cursor = cursor;
    c.ack_floor = cursor - 1;
    c.has_new = true;
    c.dirty = true;
    work.insert(&c);
  }
};

// ---------------------------------------------------------------------------

Consumers::Consumers(storage::EventLog& log, storage::ConsumerStore& store,
                     const schemas::RegionTable& regions, const Clock& clock,
                     ConsumersOptions options)
    : s_(std::make_unique<State>(log, store, regions, clock, options)) {}

Consumers::~Consumers() = default;

Status Consumers::load() {
  auto all = s_->store.load_all();
  if (!all) return unexpected(all.error());
  for (auto& st : *all) {
    auto spec = decode_spec(st.config);
    if (!spec) {
      return unexpected(Errc::kCorruption, "consumer " + st.key.owner + "/" + st.key.name +
                                               ": stored configuration does not decode");
    }
    auto c = std::make_unique<Consumer>(s_->in_flight_nodes);
    c->key = st.key;
    c->spec = std::move(*spec);
    c->ack_floor = st.ack_floor;
    c->cursor = st.ack_floor + 1;
    c->acked_above.insert(st.acked_above.begin(), st.acked_above.end());
    auto dead = s_->store.count_dead_letters(st.key);
    if (!dead) return unexpected(dead.error());
    c->dead_count = *dead;
    s_->route_add(c.get());
    s_->consumers.emplace(st.key, std::move(c));
  }
  return {};
}

CommandResult<Filter> Consumers::make_filter(std::span<const std::uint8_t> kinds,
                                             const std::vector<std::string>& regions) const {
  Filter f;
  for (std::uint8_t k : kinds) {
    if (k < static_cast<std::uint8_t>(events::Payload::Birth) ||
        k > static_cast<std::uint8_t>(events::Payload::Move)) {
      return CommandError{ErrorCode::InvalidFilter, "filter.kinds",
                          "filter.kinds: " + std::to_string(k) +
                              " is not a kind a consumer can filter on (1 birth, 2 death, 3 "
                              "move; corrections follow the kind they correct)"};
    }
    f.kinds.push_back(k);
  }
  std::sort(f.kinds.begin(), f.kinds.end());
  f.kinds.erase(std::unique(f.kinds.begin(), f.kinds.end()), f.kinds.end());
  std::vector<std::string> rs = regions;
  std::sort(rs.begin(), rs.end());
  rs.erase(std::unique(rs.begin(), rs.end()), rs.end());
  for (const auto& r : rs) {
    if (!storage::is_region_prefix(r) || s_->regions.find(r) == nullptr) {
      return CommandError{ErrorCode::InvalidFilter, "filter.regions",
                          "filter.regions: '" + r +
                              "' is not a province, regency, district or village code in the "
                              "Kemendagri list"};
    }
  }
  // A prefix covered by a shorter one in the same filter adds nothing.
  for (const auto& r : rs) {
    const bool covered = std::any_of(rs.begin(), rs.end(), [&](const std::string& o) {
      return o.size() < r.size() && r.compare(0, o.size(), o) == 0;
    });
    if (!covered) f.regions.push_back(r);
  }
  return f;
}

CommandResult<ConsumerStatus> Consumers::subscribe(const ClientId& client, std::string_view owner,
                                                   const ConsumerSpec& spec, std::uint32_t window,
                                                   std::uint32_t batch) {
  auto& s = *s_;
  batch =
      std::clamp<std::uint32_t>(batch, 1, std::max<std::uint32_t>(1, s.options.max_delivery_batch));
  if (!valid_name(spec.name)) {
    return CommandError{
        ErrorCode::InvalidRequest, "config.name",
        "config.name: '" + spec.name + "' must be 1 to 64 characters of A-Z a-z 0-9 . _ -"};
  }
  if (window == 0 || window > s.options.max_window) {
    return CommandError{ErrorCode::InvalidRequest, "window",
                        "window: must be 1 to " + std::to_string(s.options.max_window)};
  }
  if (spec.ack_wait_ms < 100) {
    return CommandError{ErrorCode::InvalidRequest, "config.ack_wait_ms",
                        "config.ack_wait_ms: must be at least 100"};
  }
  if (spec.max_deliver == 0) {
    return CommandError{ErrorCode::InvalidRequest, "config.max_deliver",
                        "config.max_deliver: must be at least 1"};
  }
  bool created = false;
  Consumer* c = s.find(owner, spec.name);
  if (c != nullptr) {
    if (c->spec.filter != spec.filter) {
      return CommandError{ErrorCode::ConsumerMismatch, "config.filter",
                          "config.filter: consumer '" + spec.name +
                              "' exists with another filter; delete it or use another name"};
    }
    if (c->spec.ack_wait_ms != spec.ack_wait_ms || c->spec.max_deliver != spec.max_deliver) {
      c->spec.ack_wait_ms = spec.ack_wait_ms;
      c->spec.max_deliver = spec.max_deliver;
      c->dirty = true;
    }
  } else {
    auto fresh = std::make_unique<Consumer>(s.in_flight_nodes);
    fresh->key = storage::ConsumerKey{std::string(owner), spec.name};
    fresh->spec = spec;
    fresh->cursor = s.start_cursor(spec.start, spec.start_sequence, spec.start_time);
    fresh->ack_floor = fresh->cursor - 1;
    fresh->dirty = true;
    c = fresh.get();
    s.route_add(c);
    s.consumers.emplace(fresh->key, std::move(fresh));
    created = true;
  }
  if (auto* a = s.attachment(*c, client)) {
    a->window = window;
    a->batch = batch;
  } else {
    c->clients.push_back(Attachment{client, window, 0, batch, ++c->last_attachment_id});
  }
  auto& rec = s.clients[client];
  rec.last_seen = s.clock.now_ms();
  rec.consumers.insert(c);
  s.due_by(rec.last_seen + s.options.client_timeout_ms);
  s.work.insert(c);
  return s.status(*c, created, State::Lag::kSkip);
}

void Consumers::client_gone(const ClientId& client) {
  s_->detach_all(client);
  s_->due_by(s_->clock.now_ms());  // deliver what it held on the next turn
}

std::optional<CommandError> Consumers::unsubscribe(const ClientId& client, std::string_view owner,
                                                   std::string_view name) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  s_->detach(client, *c);
  if (auto it = s_->clients.find(client); it != s_->clients.end()) {
    it->second.consumers.erase(c);
  }
  return std::nullopt;
}

std::optional<CommandError> Consumers::ack(std::string_view owner, std::string_view name,
                                           std::span<const std::uint64_t> sequences) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  for (std::uint64_t seq : sequences) {
    auto it = c->in_flight.find(seq);
    if (it == c->in_flight.end()) continue;  // acknowledged already, or before a seek
    s_->release(*c, it->second);
    const bool redrive = it->second.redrive;
    c->in_flight.erase(it);
    if (redrive) {
      s_->dead_removed.emplace_back(c->key, seq);
      if (c->dead_count > 0) c->dead_count--;
    } else if (seq >= c->cursor || (!c->in_flight.empty() && seq > c->in_flight.begin()->first)) {
      // Not yet at or below the floor. One that is (every in-flight entry and the
      // cursor lie above it: the in-order case) would leave the set again in settle()
      // below, the floor only rising while acknowledgements are taken: no node for it.
      c->acked_above.insert(seq);
    }
    c->due.erase(seq);
    c->dirty = true;
  }
  s_->settle(*c);
  return std::nullopt;
}

std::optional<CommandError> Consumers::nak(std::string_view owner, std::string_view name,
                                           std::uint64_t sequence, std::uint32_t delay_ms) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  auto it = c->in_flight.find(sequence);
  if (it == c->in_flight.end() || it->second.holder == 0) return std::nullopt;
  s_->release(*c, it->second);
  if (delay_ms == 0) {
    c->due.insert(sequence);
  } else {
    c->delayed.emplace(s_->clock.now_ms() + delay_ms, sequence);
    s_->due_by(s_->clock.now_ms() + delay_ms);
  }
  return std::nullopt;
}

std::optional<CommandError> Consumers::reject(std::string_view owner, std::string_view name,
                                              std::uint64_t sequence, std::string reason) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  if (!c->in_flight.contains(sequence)) return std::nullopt;
  s_->dead_letter(*c, sequence,
                  "rejected by the consumer: " + (reason.empty() ? "(no reason)" : reason));
  return std::nullopt;
}

void Consumers::touch(const ClientId& client) {
  auto it = s_->clients.find(client);
  if (it != s_->clients.end()) it->second.last_seen = s_->clock.now_ms();
}

std::size_t Consumers::size() const { return s_->consumers.size(); }

TimeMs Consumers::client_timeout_ms() const { return s_->options.client_timeout_ms; }

std::size_t Consumers::owned(std::string_view owner) const {
  std::size_t n = 0;
  for (auto it = s_->consumers.lower_bound(storage::ConsumerKey{std::string(owner), ""});
       it != s_->consumers.end() && it->first.owner == owner; ++it) {
    ++n;
  }
  return n;
}

std::uint64_t Consumers::windows(std::string_view owner) const {
  std::uint64_t total = 0;
  for (auto it = s_->consumers.lower_bound(storage::ConsumerKey{std::string(owner), ""});
       it != s_->consumers.end() && it->first.owner == owner; ++it) {
    for (const auto& a : it->second->clients) total += a.window;
  }
  return total;
}

std::uint32_t Consumers::window_of(const ClientId& client, std::string_view owner,
                                   std::string_view name) const {
  const Consumer* c = s_->find(owner, name);
  if (c == nullptr) return 0;
  for (const auto& a : c->clients) {
    if (a.client == client) return a.window;
  }
  return 0;
}

void Consumers::set_can_send(std::function<bool(const ClientId&)> can_send) {
  s_->can_send = std::move(can_send);
}

bool Consumers::attached(const ClientId& client) const {
  auto it = s_->clients.find(client);
  return it != s_->clients.end() && !it->second.consumers.empty();
}

std::vector<ConsumerStatus> Consumers::list() const {
  std::vector<ConsumerStatus> out;
  for (const auto& [key, c] : s_->consumers)
    out.push_back(s_->status(*c, false, State::Lag::kCount));
  return out;
}

std::optional<ConsumerSpec> Consumers::spec(std::string_view owner, std::string_view name) const {
  auto it = s_->consumers.find(storage::ConsumerKey{std::string(owner), std::string(name)});
  if (it == s_->consumers.end()) return std::nullopt;
  return it->second->spec;
}

CommandResult<ConsumerStatus> Consumers::seek(std::string_view owner, std::string_view name,
                                              StartPolicy policy, std::uint64_t sequence,
                                              TimeMs time) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  s_->reset_position(*c, s_->start_cursor(policy, sequence, time));
  return s_->status(*c, false, State::Lag::kCount);
}

CommandResult<std::uint64_t> Consumers::remove(std::string_view owner, std::string_view name) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  for (auto& [id, rec] : s_->clients) rec.consumers.erase(c);
  s_->route_remove(c);
  s_->work.erase(c);
  s_->held.erase(c);
  s_->erased.push_back(c->key);
  std::erase_if(s_->dead_out, [&](const auto& d) { return d.key == c->key; });
  std::erase_if(s_->dead_removed, [&](const auto& d) { return d.first == c->key; });
  s_->consumers.erase(c->key);
  return std::uint64_t{1};
}

CommandResult<RangePage> Consumers::read_range(const Filter& filter, std::uint64_t from_sequence,
                                               TimeMs from_time, std::uint64_t to_sequence,
                                               std::uint32_t max_events) const {
  const std::uint64_t end = s_->log.next_sequence().value;
  std::uint64_t from = from_sequence;
  if (from == 0) from = from_time != 0 ? s_->sequence_at_time(from_time) : 1;
  const std::uint64_t to_excl = to_sequence == 0 ? end : std::min(end, to_sequence + 1);
  const std::size_t max = std::clamp<std::uint32_t>(max_events, 1, 10000);
  s_->scanned.rewind();
  auto scan = s_->scan_matching(filter, from, to_excl, max);
  if (!scan) {
    return CommandError{ErrorCode::StorageUnavailable, "", scan.error().to_string()};
  }
  RangePage page;
  for (std::size_t i = 0; i < scan->seqs.size(); ++i) {
    if (!scan->records.empty()) {
      page.records.push_back(*scan->records[i]);
      continue;
    }
    const std::uint64_t seq = scan->seqs[i];
    auto rec = s_->read(seq);
    if (!rec || *rec == nullptr) {
      return CommandError{ErrorCode::StorageUnavailable, "",
                          "cannot read sequence " + std::to_string(seq)};
    }
    page.records.push_back(**rec);
  }
  page.next = scan->next;
  page.done = scan->done;
  return page;
}

CommandResult<std::vector<DeadLetter>> Consumers::dead_letters(std::string_view owner,
                                                               std::string_view name,
                                                               std::uint64_t from,
                                                               std::uint32_t max) const {
  std::vector<const Consumer*> which;
  if (name.empty()) {
    for (const auto& [key, c] : s_->consumers) {
      if (key.owner == owner) which.push_back(c.get());
    }
  } else {
    auto it = s_->consumers.find(storage::ConsumerKey{std::string(owner), std::string(name)});
    if (it == s_->consumers.end()) return unknown_consumer(owner, name);
    which.push_back(it->second.get());
  }
  std::vector<DeadLetter> out;
  for (const Consumer* c : which) {
    if (out.size() >= max) break;
    auto entries = s_->store.dead_letters(c->key, from, max - out.size());
    if (!entries) {
      return CommandError{ErrorCode::StorageUnavailable, "", entries.error().to_string()};
    }
    for (auto& e : *entries) {
      auto rec = s_->log.read(Sequence{e.sequence});
      DeadLetter d{std::move(e), {}};
      if (rec && rec->has_value()) d.record = std::move(**rec);
      out.push_back(std::move(d));
    }
  }
  return out;
}

CommandResult<std::uint64_t> Consumers::redrive(std::string_view owner, std::string_view name,
                                                std::span<const std::uint64_t> sequences) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  auto seqs = s_->dead_letter_seqs(*c, sequences);
  if (auto* e = std::get_if<CommandError>(&seqs)) return *e;
  std::uint64_t n = 0;
  for (std::uint64_t seq : std::get<std::vector<std::uint64_t>>(seqs)) {
    if (c->in_flight.contains(seq)) continue;  // already redriving
    Pending& p = c->in_flight[seq];
    p.redrive = true;
    c->due.insert(seq);
    ++n;
  }
  s_->work.insert(c);
  return n;
}

CommandResult<std::uint64_t> Consumers::drop_dead_letters(
    std::string_view owner, std::string_view name, std::span<const std::uint64_t> sequences) {
  Consumer* c = s_->find(owner, name);
  if (c == nullptr) return unknown_consumer(owner, name);
  auto seqs = s_->dead_letter_seqs(*c, sequences);
  if (auto* e = std::get_if<CommandError>(&seqs)) return *e;
  std::uint64_t n = 0;
  for (std::uint64_t seq : std::get<std::vector<std::uint64_t>>(seqs)) {
    if (auto it = c->in_flight.find(seq); it != c->in_flight.end() && it->second.redrive) {
      s_->release(*c, it->second);
      c->in_flight.erase(it);
      c->due.erase(seq);
    }
    s_->dead_removed.emplace_back(c->key, seq);
    if (c->dead_count > 0) c->dead_count--;
    ++n;
  }
  return n;
}

void Consumers::on_appended(std::span<const AppendedEvent> events) {
  auto& s = *s_;
  for (const auto& e : events) {
    s.recent.put(e.sequence.value, e.record);
    auto mark = [&](Consumer* c) {
      if (!c->has_new && c->spec.filter.matches_kind(e.routing_kind)) {
        c->has_new = true;
      }
      if (c->has_new && !c->clients.empty()) s.work.insert(c);
    };
    for (Consumer* c : s.all_regions) mark(c);
    for (const auto& r : e.regions) {
      for (std::size_t len : kPrefixLengths) {
        if (r.size() < len) break;
        auto it = s.by_prefix.find(r.substr(0, len));
        if (it == s.by_prefix.end()) continue;
        for (Consumer* c : it->second) mark(c);
      }
    }
  }
}

std::vector<Delivery> Consumers::pump() {
  auto& s = *s_;
  const TimeMs now = s.clock.now_ms();
  if (now >= s.next_due) {
    s.expire_clients(now);
    s.expire(now);
    s.next_due = s.compute_next_due();
  }
  s.scanned.rewind();
  std::vector<Delivery> out;
  // Held consumers whose owner may receive again go back to work.
  for (auto it = s.held.begin(); it != s.held.end();) {
    if (!s.paused_why(**it)) {
      s.work.insert(*it);
      it = s.held.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<Consumer*> visit(s.work.begin(), s.work.end());
  s.work.clear();
  for (Consumer* c : visit) {
    if (c->clients.empty()) continue;  // revisited when a client attaches
    if (s.paused_why(*c)) {
      s.held.insert(c);
      continue;
    }
    s.deliver(*c, now, out);
  }
  return out;
}

Status Consumers::flush() {
  auto& s = *s_;
  storage::ConsumerWrite w;
  for (auto& [key, c] : s.consumers) {
    if (!c->dirty) continue;
    w.put.push_back(storage::ConsumerState{
        key, encode_spec(c->spec), c->ack_floor,
        std::vector<std::uint64_t>(c->acked_above.begin(), c->acked_above.end())});
  }
  w.erase = s.erased;
  w.dead_letters = s.dead_out;
  w.dead_letters_removed = s.dead_removed;
  if (w.empty()) return {};
  if (Status st = s.store.apply(w); !st) return st;  // kept dirty: tried again next time
  for (auto& [key, c] : s.consumers) c->dirty = false;
  s.erased.clear();
  s.dead_out.clear();
  s.dead_removed.clear();
  return {};
}

std::optional<TimeMs> Consumers::next_deadline() const {
  if (s_->next_due == std::numeric_limits<TimeMs>::max()) return std::nullopt;
  return s_->next_due;
}

std::uint64_t Consumers::sequence_at_time(TimeMs time) const { return s_->sequence_at_time(time); }

void Consumers::set_paused(PausedFn paused) { s_->paused = std::move(paused); }

}  // namespace kolabus::broker
