#include "checker.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include <flatbuffers/flatbuffers.h>

#include "crash_suite.h"
#include "journal.h"
#include <common/aligned_bytes.h>
#include <common/ids.h>
#include <schemas/events_generated.h>
#include <schemas/log_generated.h>
#include <storage/inbox.h>
#include <storage/outbox.h>
#include <storage/rocksdb_broker_store.h>

namespace kolabus::crash {

namespace {

struct LogEntry {
  std::uint64_t sequence = 0;
  std::uint8_t routing_kind = 0;
  std::vector<std::string> regions;
  std::string event;  // the event's bytes as stored
};

struct PublisherSide {
  std::map<EventId, int> sent;                       // id -> publisher
  std::map<EventId, std::set<std::uint64_t>> acked;  // id -> sequences ACKed
  std::set<EventId> refused;
  std::uint64_t ack_records = 0;
  std::uint64_t duplicate_acks = 0;
  std::uint64_t finished = 0;  // publishers whose journal ends in "D"
  std::uint64_t outbox_pending = 0;
  std::uint64_t outbox_refused = 0;
  std::uint64_t sent_twice = 0;  // an id in two publishers' journals: a suite bug
};

std::optional<EventId> parse_id(std::string_view s) { return EventId::parse(s); }

PublisherSide read_publishers(const RunFacts& facts, std::vector<std::string>& problems) {
  PublisherSide p;
  for (int k = 0; k < facts.publishers; ++k) {
    const std::string dir = publisher_dir(facts.work_dir, k);
    bool done = false;
    for (const auto& line : read_journal(dir + "/sent.log")) {
      const auto f = split_fields(line);
      if (f[0] == "I" && f.size() >= 3) {
        for (std::size_t i = 3; i < f.size(); ++i) {
          const auto id = parse_id(f[i]);
          if (!id) {
            problems.push_back(dir + "/sent.log: bad id " + std::string(f[i]));
            continue;
          }
          auto [it, fresh] = p.sent.emplace(*id, k);
          if (!fresh && it->second != k) p.sent_twice++;
        }
      } else if (f[0] == "D") {
        done = true;
      }
    }
    if (done) p.finished++;
    for (const auto& line : read_journal(dir + "/acked.log")) {
      const auto f = split_fields(line);
      const auto id = f.size() >= 2 ? parse_id(f[1]) : std::nullopt;
      if (!id) {
        problems.push_back(dir + "/acked.log: bad record " + line);
        continue;
      }
      if (f[0] == "A" && f.size() == 4) {
        p.acked[*id].insert(to_u64(f[2]));
        p.ack_records++;
        if (f[3] == "1") p.duplicate_acks++;
      } else if (f[0] == "R") {
        p.refused.insert(*id);
        problems.push_back("publisher " + std::to_string(k) + ": the broker refused " + line);
      }
    }
    auto outbox = storage::Outbox::open(dir + "/outbox");
    if (!outbox) {
      problems.push_back(dir + "/outbox: " + outbox.error().to_string());
      continue;
    }
    p.outbox_pending += (*outbox)->pending_count();
    p.outbox_refused += (*outbox)->refused_count();
  }
  return p;
}

struct LogSide {
  std::map<EventId, std::vector<LogEntry>> by_id;
  std::uint64_t records = 0;
  std::uint64_t bad_records = 0;  // gaps, sequence mismatches, unverifiable bytes
  std::uint64_t index_off = 0;    // the id index disagrees with the log
  std::uint64_t time_back = 0;    // received_at smaller than the record before
  bool read = false;
};

LogSide read_log(const std::string& dir, std::vector<std::string>& problems) {
  LogSide out;
  auto store = storage::open_rocksdb_broker_store_read_only(dir);
  if (!store) {
    problems.push_back("cannot open the broker's log " + dir + ": " + store.error().to_string());
    return out;
  }
  std::uint64_t expect = 1;
  std::int64_t last_received = 0;
  AlignedBytes copy;  // a scan's view into a RocksDB block sits at any address
  auto st = store->log->scan(Sequence{1}, SIZE_MAX, [&](Sequence seq, std::string_view rec) {
    out.records++;
    if (seq.value != expect) {
      problems.push_back("log: sequence " + std::to_string(seq.value) + " where " +
                         std::to_string(expect) + " was next (a gap)");
      out.bad_records++;
    }
    expect = seq.value + 1;
    const auto* bytes = aligned(rec, copy).data();
    flatbuffers::Verifier rv(bytes, rec.size());
    if (!rv.VerifyBuffer<log::LogRecord>(nullptr)) {
      problems.push_back("log: record " + std::to_string(seq.value) + " does not verify");
      out.bad_records++;
      return true;
    }
    const auto* lr = flatbuffers::GetRoot<log::LogRecord>(bytes);
    if (lr->sequence() != seq.value || lr->event() == nullptr) {
      problems.push_back("log: record " + std::to_string(seq.value) + " carries sequence " +
                         std::to_string(lr->sequence()) + " or no event");
      out.bad_records++;
      return true;
    }
    flatbuffers::Verifier ev_verifier(lr->event()->data(), lr->event()->size());
    if (!ev_verifier.VerifyBuffer<events::Event>(nullptr)) {
      problems.push_back("log: the event of record " + std::to_string(seq.value) +
                         " does not verify");
      out.bad_records++;
      return true;
    }
    if (lr->received_at() < last_received) out.time_back++;
    last_received = lr->received_at();
    const auto* ev = flatbuffers::GetRoot<events::Event>(lr->event()->data());
    if (ev->id() == nullptr) {
      out.bad_records++;
      return true;
    }
    const EventId id =
        EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
    LogEntry e{
        seq.value,
        lr->routing_kind(),
        {},
        std::string(reinterpret_cast<const char*>(lr->event()->data()), lr->event()->size())};
    if (ev->regions() != nullptr) {
      for (const auto* r : *ev->regions()) e.regions.push_back(r->str());
    }
    out.by_id[id].push_back(std::move(e));
    return true;
  });
  if (!st) {
    problems.push_back("log scan: " + st.error().to_string());
    return out;
  }
  for (const auto& [id, entries] : out.by_id) {
    auto found = store->log->find_id(id);
    if (!found || !found->has_value() || (*found)->value != entries.front().sequence) {
      out.index_off++;
    }
  }
  out.read = true;
  return out;
}

ConsumerRow check_consumer(const RunFacts& facts, int index, const LogSide& log,
                           std::vector<std::string>& problems) {
  const FilterSpec filter = filter_for(index);
  ConsumerRow row;
  row.name = consumer_name(index);
  row.filter = filter.label;
  if (index < static_cast<int>(facts.final_info.size()) && facts.final_info[index]) {
    const auto& info = *facts.final_info[index];
    row.dead_letters = info.dead_letters;
    row.caught_up = info.lag == 0 && info.pending == 0;
  }
  const std::string dir = consumer_dir(facts.work_dir, index) + "/inbox";
  auto inbox = storage::Inbox::open(dir);
  if (!inbox) {
    problems.push_back(row.name + ": cannot open its inbox: " + inbox.error().to_string());
    return row;
  }
  // Committed handler calls per event id, with the sequences they were given.
  std::map<EventId, std::vector<std::uint64_t>> committed;
  auto st = (*inbox)->scan("h/", [&](std::string_view key, std::string_view value) {
    const auto id = key.size() >= 2 + 36 ? EventId::parse(key.substr(2, 36)) : std::nullopt;
    if (!id) {
      problems.push_back(row.name + ": a handler key that does not parse: " + std::string(key));
      return true;
    }
    committed[*id].push_back(to_u64(value));
    return true;
  });
  if (!st) problems.push_back(row.name + ": inbox scan: " + st.error().to_string());
  const std::uint64_t marks = (*inbox)->processed_count();
  row.marks_off = marks > committed.size() ? marks - committed.size() : committed.size() - marks;

  for (const auto& [id, entries] : log.by_id) {
    const LogEntry& e = entries.front();
    if (!filter.matches(e.routing_kind, e.regions)) continue;
    row.matching++;
    auto it = committed.find(id);
    if (it == committed.end()) {
      row.missing++;
      if (row.missing <= 5) {
        problems.push_back(row.name + ": never handled: " + id.to_string() + " (sequence " +
                           std::to_string(e.sequence) + ")");
      }
      continue;
    }
    if (it->second.size() == 1) {
      row.handled_once++;
    } else {
      row.duplicates++;
      if (row.duplicates <= 5) {
        problems.push_back(row.name + ": handled " + std::to_string(it->second.size()) +
                           " times: " + id.to_string() + " (sequence " +
                           std::to_string(e.sequence) + ")");
      }
    }
    for (auto s : it->second) {
      if (s != e.sequence) row.wrong_sequence++;
    }
  }
  for (const auto& [id, seqs] : committed) {
    auto it = log.by_id.find(id);
    if (it == log.by_id.end() ||
        !filter.matches(it->second.front().routing_kind, it->second.front().regions)) {
      row.not_matching++;
      if (row.not_matching <= 5) {
        problems.push_back(
            row.name + ": handled an event " +
            (it == log.by_id.end() ? "the log does not hold: " : "its filter does not match: ") +
            id.to_string());
      }
    }
  }
  return row;
}

// Sums, over the processes that wrote `path`, each one's last stats record.
std::vector<std::uint64_t> sum_stats(const std::string& path, std::size_t fields) {
  std::map<std::string, std::vector<std::uint64_t>> last;
  for (const auto& line : read_journal(path)) {
    const auto f = split_fields(line);
    if (f.size() != fields + 2 || f[0] != "S") continue;
    auto& v = last[std::string(f[1])];
    v.clear();
    for (std::size_t i = 2; i < f.size(); ++i) v.push_back(to_u64(f[i]));
  }
  std::vector<std::uint64_t> sum(fields, 0);
  for (const auto& [pid, v] : last) {
    for (std::size_t i = 0; i < fields; ++i) sum[i] += v[i];
  }
  sum.push_back(last.size());  // processes
  return sum;
}

}  // namespace

bool ConsumerRow::ok() const {
  return missing == 0 && duplicates == 0 && not_matching == 0 && wrong_sequence == 0 &&
         marks_off == 0 && dead_letters == 0 && caught_up && handled_once == matching;
}

bool Report::ok() const {
  if (!problems.empty()) return false;
  for (const auto& r : publish) {
    if (!r.ok()) return false;
  }
  for (const auto& c : consumers) {
    if (!c.ok()) return false;
  }
  return true;
}

Report check_run(const RunFacts& facts) {
  Report report;
  report.problems = facts.problems;
  auto& problems = report.problems;
  const PublisherSide pub = read_publishers(facts, problems);
  const LogSide log = read_log(facts.work_dir + "/broker", problems);

  const auto generated = static_cast<std::uint64_t>(facts.publishers) *
                         static_cast<std::uint64_t>(facts.events_per_publisher);
  std::uint64_t acked_missing = 0, acked_elsewhere = 0, acked_two_sequences = 0;
  for (const auto& [id, seqs] : pub.acked) {
    if (seqs.size() > 1) acked_two_sequences++;
    auto it = log.by_id.find(id);
    if (it == log.by_id.end()) {
      acked_missing++;
      if (acked_missing <= 5) {
        problems.push_back("ACKed but not in the log: " + id.to_string() + " (ACKed as sequence " +
                           std::to_string(*seqs.begin()) + ")");
      }
    } else if (*seqs.begin() != it->second.front().sequence) {
      acked_elsewhere++;
    }
  }
  std::uint64_t sent_missing = 0, sent_not_acked = 0;
  for (const auto& [id, k] : pub.sent) {
    if (!log.by_id.contains(id)) {
      sent_missing++;
      if (sent_missing <= 5) {
        problems.push_back("publisher " + std::to_string(k) +
                           " sent it, the log does not hold it: " + id.to_string());
      }
    }
    if (!pub.acked.contains(id) && !pub.refused.contains(id)) sent_not_acked++;
  }
  // What each publisher sent, byte for byte: the log must hold exactly those bytes.
  std::map<EventId, std::vector<std::uint8_t>> generated_events;
  for (int k = 0; k < facts.publishers; ++k) {
    for (auto& e : publisher_events(facts.seed, k, facts.events_per_publisher, facts.now_ms)) {
      const auto* ev = flatbuffers::GetRoot<events::Event>(e.data());
      generated_events.emplace(
          EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16)),
          std::move(e));
    }
  }
  std::uint64_t journal_not_generated = 0;
  for (const auto& [id, k] : pub.sent) {
    if (!generated_events.contains(id)) journal_not_generated++;
  }
  std::uint64_t stored_twice = 0, unknown = 0, bytes_differ = 0;
  for (const auto& [id, entries] : log.by_id) {
    if (auto g = generated_events.find(id); g != generated_events.end()) {
      const auto& stored = entries.front().event;
      if (stored.size() != g->second.size() ||
          !std::equal(stored.begin(), stored.end(), g->second.begin(),
                      [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; })) {
        bytes_differ++;
        if (bytes_differ <= 5)
          problems.push_back("stored bytes differ from the sent event: " + id.to_string());
      }
    }
    if (entries.size() > 1) {
      stored_twice++;
      if (stored_twice <= 5) {
        problems.push_back("stored twice: " + id.to_string() + " at sequences " +
                           std::to_string(entries[0].sequence) + " and " +
                           std::to_string(entries[1].sequence));
      }
    }
    if (!pub.sent.contains(id)) unknown++;
  }

  auto row = [&](std::string label, std::uint64_t v, std::optional<std::uint64_t> must = {}) {
    report.publish.push_back({std::move(label), v, must});
  };
  row("events generated (publishers x events)", generated);
  row("events sent (journalled, then enqueued)", pub.sent.size(), generated);
  row("publishers drained and done", pub.finished, static_cast<std::uint64_t>(facts.publishers));
  row("events ACKed (journalled ACK)", pub.acked.size());
  row("  ACK records (one per answer, resends too)", pub.ack_records);
  row("  sent, ACK lost with its publisher (info)", sent_not_acked);
  row("refused by the broker", pub.refused.size() + pub.outbox_refused, 0);
  row("still in outboxes (never ACKed)", pub.outbox_pending, 0);
  row("events in the broker log", log.records, generated);
  row("ACKed but missing from the log", acked_missing, 0);
  row("ACKed under another sequence than stored", acked_elsewhere + acked_two_sequences, 0);
  row("sent but missing from the log", sent_missing, 0);
  row("stored twice", stored_twice, 0);
  row("in the log, sent by no publisher", unknown, 0);
  row("log records out of sequence or unreadable", log.bad_records, 0);
  row("id index disagrees with the log", log.index_off, 0);
  row("received_at going back along the log", log.time_back, 0);
  row("stored bytes differ from the sent event", bytes_differ, 0);
  row("journal ids not regenerated (suite bug)", journal_not_generated + pub.sent_twice, 0);
  if (!log.read) problems.push_back("the broker's log could not be read");

  for (int c = 0; c < facts.consumers; ++c) {
    report.consumers.push_back(check_consumer(facts, c, log, problems));
  }

  std::vector<std::uint64_t> ps(5, 0), cs(6, 0);
  for (int k = 0; k < facts.publishers; ++k) {
    const auto s = sum_stats(publisher_dir(facts.work_dir, k) + "/stats.log", 4);
    for (std::size_t i = 0; i < ps.size(); ++i) ps[i] += s[i];
  }
  for (int k = 0; k < facts.consumers; ++k) {
    const auto s = sum_stats(consumer_dir(facts.work_dir, k) + "/stats.log", 5);
    for (std::size_t i = 0; i < cs.size(); ++i) cs[i] += s[i];
  }
  auto info = [&](std::string label, std::uint64_t v) {
    report.coverage.push_back({std::move(label), v, std::nullopt});
  };
  info("publisher processes (starts)", ps[4]);
  info("publish frames sent (resends included)", ps[0]);
  info("publisher retries (timeouts, retryable NACKs)", ps[3]);
  info("duplicate ACKs (stored before, sent again)", pub.duplicate_acks);
  info("consumer processes (starts)", cs[5]);
  info("deliveries received", cs[0]);
  info("handler calls (failures on purpose included)", cs[1]);
  info("deliveries skipped by the inbox (redeliveries)", cs[2]);
  info("Naks (failures on purpose)", cs[3]);
  info("consumer reconnects", cs[4]);
  return report;
}

void Report::print(std::ostream& out) const {
  char line[256];
  out << "\n  publish path                                     count     must\n";
  for (const auto& r : publish) {
    std::snprintf(line, sizeof line, "  %-46s %9llu %8s %s\n", r.label.c_str(),
                  static_cast<unsigned long long>(r.value),
                  r.must ? std::to_string(*r.must).c_str() : "", r.ok() ? "" : "  <-- FAIL");
    out << line;
  }
  out << "\n  fault coverage (the processes' counters)\n";
  for (const auto& r : coverage) {
    std::snprintf(line, sizeof line, "  %-46s %9llu\n", r.label.c_str(),
                  static_cast<unsigned long long>(r.value));
    out << line;
  }
  out << "\n  consumer   filter              matching  once  missing  dup  not-matching"
         "  wrong-seq  marks-off  dead  caught-up\n";
  for (const auto& c : consumers) {
    std::snprintf(line, sizeof line,
                  "  %-10s %-18s %9llu %5llu %8llu %4llu %13llu %10llu %10llu %5llu  %-9s%s\n",
                  c.name.c_str(), c.filter.c_str(), static_cast<unsigned long long>(c.matching),
                  static_cast<unsigned long long>(c.handled_once),
                  static_cast<unsigned long long>(c.missing),
                  static_cast<unsigned long long>(c.duplicates),
                  static_cast<unsigned long long>(c.not_matching),
                  static_cast<unsigned long long>(c.wrong_sequence),
                  static_cast<unsigned long long>(c.marks_off),
                  static_cast<unsigned long long>(c.dead_letters), c.caught_up ? "yes" : "NO",
                  c.ok() ? "" : "  <-- FAIL");
    out << line;
  }
  if (!problems.empty()) {
    out << "\n  problems:\n";
    for (const auto& p : problems) out << "    - " << p << "\n";
  }
}

}  // namespace kolabus::crash
