#include <algorithm>
#include <unordered_map>
#include <utility>

#include <flatbuffers/flatbuffers.h>

#include <broker/core.h>
#include <common/aligned_bytes.h>
#include <schemas/log_generated.h>
#include <schemas/validate.h>

namespace kolabus::broker {

namespace {

using protocol::ErrorCode;

// A violation's message already starts with its field.
Nack nack_from(const schemas::Violation& v) { return Nack{v.code, v.field, v.message, false}; }

// A policy refusal as the publisher's NACK.
Nack nack_from(const Denial& d) { return Nack{d.code, d.field, d.message, false}; }

Nack storage_unavailable(const std::string& detail) {
  return Nack{ErrorCode::StorageUnavailable, "",
              "storage unavailable (" + detail + "); nothing was stored, send again later", true};
}

// Verifies only the structure, so that the id of a bad event can be read and
// named in its NACK. Rule checks come later (schemas::validate_event).
const events::Event* structural_root(std::span<const std::uint8_t> bytes) {
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!verifier.VerifyBuffer<events::Event>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<events::Event>(bytes.data());
}

flatbuffers::DetachedBuffer build_record(Sequence seq, TimeMs received_at, std::string_view source,
                                         std::uint8_t routing_kind,
                                         std::span<const std::uint8_t> event) {
  // The fixed part (fields, vtable, identifier, alignment, and the builder's scratch
  // space for the vtable) needs about 100 bytes: with 64 the builder grew twice,
  // copying the event each time.
  flatbuffers::FlatBufferBuilder fbb(event.size() + source.size() + 128);
  // The event is a FlatBuffer of its own: keep it 8-byte aligned inside the record.
  fbb.ForceVectorAlignment(event.size(), sizeof(std::uint8_t), 8);
  auto event_vec = fbb.CreateVector(event.data(), event.size());
  auto src = fbb.CreateString(source.data(), source.size());
  fbb.Finish(log::CreateLogRecord(fbb, seq.value, received_at, src, event_vec, routing_kind),
             log::LogRecordIdentifier());
  return fbb.Release();
}

}  // namespace

std::optional<StoredEventInfo> decode_stored_event(std::string_view record) {
  AlignedBytes copy;
  const std::uint8_t* bytes = aligned(record, copy).data();
  flatbuffers::Verifier verifier(bytes, record.size());
  if (!log::VerifyLogRecordBuffer(verifier)) return std::nullopt;
  const auto* rec = log::GetLogRecord(bytes);
  if (rec->event() == nullptr) return std::nullopt;
  const auto* ev = schemas::verified_event({rec->event()->data(), rec->event()->size()});
  if (ev == nullptr || ev->regions() == nullptr) return std::nullopt;
  StoredEventInfo info{ev->payload_type(), {}, rec->source() ? rec->source()->str() : ""};
  for (const auto* r : *ev->regions()) info.regions.emplace_back(r->string_view());
  return info;
}

Core::Core(storage::EventLog& log, const schemas::RegionTable& regions, const Clock& clock,
           CoreOptions options)
    : log_(log), regions_(regions), clock_(clock), options_(options) {
  const Sequence next = log_.next_sequence();
  if (next.value > 1) {
    auto rec = log_.read(Sequence{next.value - 1});
    if (rec && rec->has_value()) {
      const auto* bytes = reinterpret_cast<const std::uint8_t*>((*rec)->data());
      flatbuffers::Verifier verifier(bytes, (*rec)->size());
      if (log::VerifyLogRecordBuffer(verifier)) {
        last_received_at_ = log::GetLogRecord(bytes)->received_at();
      }
    }
  }
}

Core::AppendedBatch Core::take_appended() {
  AppendedBatch b{std::move(appended_), std::move(appended_records_)};
  appended_.clear();
  appended_records_.clear();
  return b;
}

std::vector<PublishOutcome> Core::publish_batch(std::span<const PublishRequest> requests,
                                                Commit commit) {
  const TimeMs now = clock_.now_ms();
  const schemas::ValidationContext ctx{regions_, now, options_.max_clock_skew_ms};
  const TimeMs received_at = std::max(now, last_received_at_);
  const Policy policy(agencies_, clock_);
  appended_.clear();
  appended_records_.clear();

  // Events accepted in this batch, in sequence order.
  struct Accepted {
    std::size_t request;
    EventId id;
    std::uint8_t index_kind;
    events::Payload kind;
    std::vector<std::string> regions;
    flatbuffers::DetachedBuffer record;
    std::vector<NikHash> persons;  // keyed hashes of the event's NIKs (audit on)
  };
  std::vector<Accepted> accepted;
  accepted.reserve(requests.size());
  std::unordered_map<EventId, std::size_t> accepted_by_id;
  accepted_by_id.reserve(requests.size());
  // Requests that repeat an id accepted earlier in this same batch.
  std::vector<std::pair<std::size_t, std::size_t>> repeats;  // (request, accepted index)

  std::vector<PublishOutcome> out(requests.size());
  std::vector<std::string_view> niks;  // one event's NIKs at a time (audit on)
  Sequence next = log_.appended_end();

  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto bytes = requests[i].event;
    PublishOutcome& o = out[i];

    // The strict structure check validate_event starts with, once: a well-formed event
    // then needs only the rules. Anything else takes the lenient path as before.
    const events::Event* checked = schemas::verified_event(bytes);
    const events::Event* ev = checked != nullptr ? checked : structural_root(bytes);
    if (ev == nullptr || ev->id() == nullptr) {
      auto v = schemas::validate_event(bytes, ctx);
      o.result =
          v ? nack_from(*v) : Nack{ErrorCode::MalformedEvent, "", "event does not verify", false};
      continue;
    }
    const EventId id =
        EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16));
    o.id = id;

    std::vector<std::string> regions;
    if (ev->regions() != nullptr) {
      regions.reserve(ev->regions()->size());
      for (const auto* r : *ev->regions()) {
        if (r != nullptr) regions.emplace_back(r->string_view());
      }
    }
    // Authorisation first, before deduplication: an agency learns nothing of events it
    // may not publish, not even that an id exists. A correction is judged against its
    // target: who published it, its kind and its regions.
    std::uint8_t index_kind = static_cast<std::uint8_t>(ev->payload_type());
    std::optional<StoredEventInfo> target;
    std::optional<EventId> unknown_target;
    if (ev->payload_type() != events::Payload::Correction) {
      if (auto d = policy.publish(requests[i].source, static_cast<std::uint8_t>(ev->payload_type()),
                                  regions)) {
        o.result = nack_from(*d);
        continue;
      }
    } else {
      if (auto d = policy.may_correct(requests[i].source)) {
        o.result = nack_from(*d);
        continue;
      }
      const auto* corr = ev->payload_as_Correction();
      if (corr != nullptr && corr->target_id() != nullptr) {
        const EventId target_id = EventId::from_span(
            std::span<const std::uint8_t, 16>(corr->target_id()->bytes()->data(), 16));
        if (auto it = accepted_by_id.find(target_id); it != accepted_by_id.end()) {
          const Accepted& t = accepted[it->second];
          target = StoredEventInfo{t.kind, t.regions, std::string(requests[t.request].source)};
        } else if (auto seq = log_.find_id(target_id); !seq) {
          o.result = storage_unavailable(seq.error().to_string());
          continue;
        } else if (seq->has_value()) {
          auto rec = log_.read(**seq);
          if (!rec) {
            o.result = storage_unavailable(rec.error().to_string());
            continue;
          }
          KOLABUS_CHECK(rec->has_value());  // the id index never points at nothing
          target = decode_stored_event(**rec);
          KOLABUS_CHECK(target.has_value());  // the broker only stores what it verified
        } else {
          // Answered after validation, so that a malformed correction gets the rule it
          // breaks. Its own id cannot be in the log: a stored correction's target is
          // there too (the log never drops an event), so deduplication tells nothing.
          unknown_target = target_id;
        }
        if (target) {
          if (auto d = policy.correct(requests[i].source, target->source,
                                      static_cast<std::uint8_t>(target->kind), target->regions,
                                      regions)) {
            o.result = nack_from(*d);
            continue;
          }
          index_kind = static_cast<std::uint8_t>(target->kind) | kCorrectionBit;
        }
      }
    }

    // Idempotency comes before validation: an id already stored is ACKed with its
    // original sequence even if the rules (or the region list) changed since.
    if (auto it = accepted_by_id.find(id); it != accepted_by_id.end()) {
      repeats.emplace_back(i, it->second);
      continue;
    }
    auto found = log_.find_id(id);
    if (!found) {
      o.result = storage_unavailable(found.error().to_string());
      continue;
    }
    if (found->has_value()) {
      // A resend of the agency's own event: its original sequence. Another agency's id is
      // refused like an unauthorised publish, so that an id learnt elsewhere (as a
      // consumer) tells the sender nothing of where it sits in the log.
      if (agencies_ != nullptr) {
        auto rec = log_.read(**found);
        if (!rec) {
          o.result = storage_unavailable(rec.error().to_string());
          continue;
        }
        KOLABUS_CHECK(rec->has_value());  // the id index never points at nothing
        const auto stored = decode_stored_event(**rec);
        KOLABUS_CHECK(stored.has_value());
        if (stored->source != requests[i].source) {
          o.result = Nack{ErrorCode::NotAuthorised, "id",
                          "id: another agency's event has this id; an agency may resend only "
                          "its own events (give each event a new id)",
                          false};
          continue;
        }
      }
      o.result = Ack{**found, true};
      continue;
    }

    if (auto v = checked != nullptr ? schemas::check_rules(*checked, ctx)
                                    : schemas::validate_event(bytes, ctx)) {
      o.result = nack_from(*v);
      continue;
    }
    if (unknown_target) {
      o.result = Nack{ErrorCode::UnknownTarget, "payload.target_id",
                      "payload.target_id: no event with id " + unknown_target->to_string() +
                          " is in the log; a correction must name an event the broker holds",
                      false};
      continue;
    }
    if (target) {
      if (auto v = schemas::check_correction_target(*ev, {target->kind, target->regions})) {
        o.result = nack_from(*v);
        continue;
      }
    }

    Accepted a{i, id, index_kind, ev->payload_type(), std::move(regions), {}, {}};
    a.record = build_record(next, received_at, requests[i].source, index_kind, bytes);
    if (audit_ != nullptr) {
      schemas::payload_nik_views(ev->payload_type(), ev->payload(), &niks);
      a.persons.reserve(niks.size());
      for (const std::string_view nik : niks) a.persons.push_back(audit_->hash_nik(nik));
    }
    next.value++;
    accepted_by_id.emplace(id, accepted.size());
    accepted.push_back(std::move(a));
  }

  // The batch's audit records: one Publish per agency that stores events, one Refused
  // per agency refused for lack of authority (with the first reason).
  auto audit_facts = [&](Sequence first) {
    std::vector<AuditFact> facts;
    if (audit_ == nullptr) return facts;
    auto fact_for = [&](audit::Action action, std::string_view agency) -> AuditFact& {
      for (auto& f : facts) {
        if (f.action == action && f.agency == agency) return f;
      }
      facts.emplace_back();
      facts.back().action = action;
      facts.back().agency = std::string(agency);
      return facts.back();
    };
    for (std::size_t k = 0; k < accepted.size(); ++k) {
      auto& f = fact_for(audit::Action::Publish, requests[accepted[k].request].source);
      const std::uint64_t seq = first.value + k;
      f.sequences.push_back(seq);
      // Moved: the event's hashes are not needed after its audit record.
      if (!accepted[k].persons.empty()) {
        f.persons.push_back({seq, std::move(accepted[k].persons)});
      }
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
      const auto* n = std::get_if<Nack>(&out[i].result);
      if (n == nullptr || n->code != ErrorCode::NotAuthorised) continue;
      auto& f = fact_for(audit::Action::Refused, requests[i].source);
      if (f.count++ == 0) f.detail = "publish: " + n->message;
    }
    return facts;
  };

  if (!accepted.empty()) {
    std::vector<storage::AppendRecord> records;
    records.reserve(accepted.size());
    appended_records_.reserve(accepted.size());
    const Sequence first = log_.appended_end();
    for (std::size_t k = 0; k < accepted.size(); ++k) {
      const Accepted& a = accepted[k];
      records.push_back(storage::AppendRecord{Sequence{first.value + k},
                                              a.id,
                                              a.index_kind,
                                              a.regions,
                                              {a.record.data(), a.record.size()}});
    }
    const auto facts = audit_facts(first);
    const AuditBatch audit = audit_ != nullptr ? audit_->encode(facts) : AuditBatch{};
    const Status st = commit == Commit::kSynced ? log_.append(records, audit.entries)
                                                : log_.append_unsynced(records, audit.entries);
    stats_.batches++;
    for (std::size_t k = 0; k < accepted.size(); ++k) {
      if (st) {
        out[accepted[k].request].result = Ack{Sequence{first.value + k}, false};
        auto& rec = appended_records_.emplace_back(std::move(accepted[k].record));
        appended_.push_back(
            {Sequence{first.value + k}, accepted[k].index_kind, std::move(accepted[k].regions),
             std::string_view(reinterpret_cast<const char*>(rec.data()), rec.size())});
      } else {
        out[accepted[k].request].result = storage_unavailable(st.error().to_string());
      }
    }
    if (st) last_received_at_ = received_at;
    for (auto [req, k] : repeats) {
      out[req].result = st ? PublishOutcome::Result{Ack{Sequence{first.value + k}, true}}
                           : PublishOutcome::Result{storage_unavailable(st.error().to_string())};
    }
  } else if (audit_ != nullptr) {
    const auto facts = audit_facts(Sequence{0});
    if (!facts.empty() && !audit_->write(facts)) stats_.audit_failures++;
  }

  for (const auto& o : out) {
    if (const auto* a = std::get_if<Ack>(&o.result)) {
      (a->duplicate ? stats_.duplicates : stats_.accepted)++;
    } else {
      const auto& n = std::get<Nack>(o.result);
      (n.code == ErrorCode::StorageUnavailable ? stats_.storage_failures : stats_.refused)++;
    }
  }
  return out;
}

}  // namespace kolabus::broker
