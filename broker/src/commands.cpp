#include <algorithm>
#include <map>
#include <set>

#include <flatbuffers/flatbuffers.h>
#include <spdlog/spdlog.h>

#include "response_frames.h"
#include <broker/commands.h>
#include <schemas/free_text.h>
#include <schemas/log_generated.h>
#include <schemas/profile.h>
#include <schemas/validate.h>

namespace kolabus::broker {

namespace {

using frames::finish;
using frames::nested;
using protocol::ErrorCode;

flatbuffers::Offset<protocol::Filter> build_filter(flatbuffers::FlatBufferBuilder& fbb,
                                                   const Filter& f) {
  auto kinds = fbb.CreateVector(f.kinds);
  auto regions = fbb.CreateVectorOfStrings(f.regions);
  return protocol::CreateFilter(fbb, kinds, regions);
}

flatbuffers::Offset<protocol::ConsumerInfo> build_info(flatbuffers::FlatBufferBuilder& fbb,
                                                       const ConsumerStatus& st) {
  auto name = fbb.CreateString(st.spec.name);
  auto owner = fbb.CreateString(st.owner);
  auto filter = build_filter(fbb, st.spec.filter);
  auto config = protocol::CreateConsumerConfig(
      fbb, fbb.CreateString(st.spec.name), filter, st.spec.start, st.spec.start_sequence,
      st.spec.start_time, st.spec.ack_wait_ms, st.spec.max_deliver);
  auto paused = st.paused.empty() ? 0 : fbb.CreateString(st.paused);
  return protocol::CreateConsumerInfo(fbb, name, owner, config, st.ack_floor, st.next_sequence,
                                      st.pending, st.lag, st.oldest_unacked_age_ms, st.clients,
                                      st.dead_letters, st.created, paused, st.stalled_clients);
}

flatbuffers::DetachedBuffer done_response(std::uint64_t corr, std::uint64_t count) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return finish(fbb, corr, protocol::Reply::Done, protocol::CreateDone(fbb, count));
}

// The sequence of a stored log record (0 if it does not verify: never sent then).
std::uint64_t sequence_of(std::string_view record) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(record.data());
  flatbuffers::Verifier verifier(bytes, record.size());
  return log::VerifyLogRecordBuffer(verifier) ? log::GetLogRecord(bytes)->sequence() : 0;
}

// The routing kind of a stored log record (0 if it does not verify).
std::uint8_t routing_kind_of(std::string_view record) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(record.data());
  flatbuffers::Verifier verifier(bytes, record.size());
  return log::VerifyLogRecordBuffer(verifier) ? log::GetLogRecord(bytes)->routing_kind() : 0;
}

// What an operator who may not read an event sees of a dead letter's reason: its kind
// ("rejected by the consumer"), never the consumer's own words.
std::string reason_kind(std::string_view reason) {
  const auto colon = reason.find(':');
  return schemas::scrub_free_text(colon == std::string_view::npos ? reason
                                                                  : reason.substr(0, colon));
}

std::vector<std::uint64_t> sequences_of(const flatbuffers::Vector<std::uint64_t>* v) {
  return v == nullptr ? std::vector<std::uint64_t>{}
                      : std::vector<std::uint64_t>(v->begin(), v->end());
}

AuditFact fact(audit::Action action, std::string agency, std::string detail = {}) {
  AuditFact f;
  f.action = action;
  f.agency = std::move(agency);
  f.detail = std::move(detail);
  return f;
}

}  // namespace

// One command being answered: who asks, from where, and the reply being built.
struct Commands::Call {
  std::string_view agency;
  const ClientId& client;
  bool req_socket = false;
  std::uint64_t corr = 0;
  const char* command = "";
  CommandReply reply;
};

// The command handlers: members of Commands in all but name, kept out of the header.
struct Commands::Impl {
  Core& core;
  Consumers& consumers;
  const Policy& policy;
  Hooks& hooks;
  Audit* audit;
  const Commands& self;

  bool record(std::span<const AuditFact> facts) { return facts.empty() || hooks.record(facts); }
  bool record(const AuditFact& f) { return record(std::span<const AuditFact>(&f, 1)); }
  static void respond(Call& in, flatbuffers::DetachedBuffer response) {
    in.reply.response = std::move(response);
  }
  Result<std::uint64_t> reload_registry() {
    if (!hooks.reload) return unexpected(Errc::kInvalidArgument, "no registry to reload");
    return hooks.reload();
  }
  std::optional<Minimised> minimise(std::string_view record, std::string_view agency) const {
    return self.minimise(record, agency);
  }

  void reply_error(Call& in, const CommandError& e) {
    const Nack n{e.code, e.field, e.message, false};
    if (e.code == ErrorCode::NotAuthorised) {
      record(fact(audit::Action::Refused, std::string(in.agency),
                  std::string(in.command) + ": " + e.message));
    }
    in.reply.refusal = n;
  }
  void refuse(Call& in, const Denial& d) {
    reply_error(in, CommandError{d.code, d.field, d.message});
  }

  // Data may leave only with its audit record written.
  void reply_unaudited(Call& in) {
    const Nack n{ErrorCode::StorageUnavailable, "",
                 "the audit chain cannot be written now, so no data is sent; try again later",
                 true};
    in.reply.refusal = n;
  }

  // Parses a filter from the wire into the consumers' form (checked, normalised).
  CommandResult<Filter> filter_of(const protocol::Filter* f) {
    std::vector<std::uint8_t> kinds;
    std::vector<std::string> regions;
    if (f != nullptr && f->kinds() != nullptr) kinds.assign(f->kinds()->begin(), f->kinds()->end());
    if (f != nullptr && f->regions() != nullptr) {
      for (const auto* r : *f->regions()) regions.push_back(r->str());
    }
    return consumers.make_filter(kinds, regions);
  }

  // Consumer and operator commands: answered at once, in arrival order. Each is judged
  // by the policy as it is now (policy.h; docs/SECURITY.md prints the same table).
  void handle_command(Call& in, const protocol::Request* req) {
    const ClientId& client = in.client;
    const std::string owner(in.agency);
    // The agency whose consumer an operator command names: the caller's own unless
    // `owner` says otherwise.
    auto owner_of = [&](const flatbuffers::String* o) {
      return o != nullptr && o->size() > 0 ? o->str() : owner;
    };
    auto missing = [&](const char* field) {
      reply_error(in, {ErrorCode::MissingField, field, std::string(field) + ": required"});
    };
    switch (req->command_type()) {
      case protocol::Command::Subscribe: {
        const auto* sub = req->command_as_Subscribe();
        const auto* cfg = sub->config();
        if (cfg == nullptr || cfg->name() == nullptr) return missing("config.name");
        if (in.req_socket) {
          return reply_error(in, {ErrorCode::InvalidRequest, "",
                                  "a consumer needs a DEALER socket: deliveries arrive unasked, "
                                  "which a REQ socket cannot receive"});
        }
        auto filter = filter_of(cfg->filter());
        if (auto* e = std::get_if<CommandError>(&filter)) return reply_error(in, *e);
        const Filter& wanted = std::get<Filter>(filter);
        if (auto denied = policy.subscribe(owner, wanted.kinds, wanted.regions))
          return refuse(in, *denied);
        ConsumerSpec spec{cfg->name()->str(),    std::get<Filter>(filter), cfg->start(),
                          cfg->start_sequence(), cfg->start_time(),        cfg->ack_wait_ms(),
                          cfg->max_deliver()};
        if (const Limits* limits = policy.limits(owner)) {
          if (!consumers.spec(owner, spec.name) && consumers.owned(owner) >= limits->consumers) {
            return reply_error(
                in, {ErrorCode::LimitExceeded, "config.name",
                     "agency '" + owner + "' has " + std::to_string(limits->consumers) +
                         " consumers, its limit (limits.consumers in the agency registry): "
                         "delete one, or ask the bus's operators to raise the limit"});
          }
          // The window this client already has on the consumer is replaced, not added.
          const std::uint64_t others =
              consumers.windows(owner) - consumers.window_of(client, owner, spec.name);
          if (others + sub->window() > limits->unacked) {
            return reply_error(
                in, {ErrorCode::LimitExceeded, "window",
                     "window: agency '" + owner + "' may have " + std::to_string(limits->unacked) +
                         " deliveries unacknowledged (limits.unacked in the agency registry); "
                         "its other clients' windows take " +
                         std::to_string(others) + ": ask for a smaller window"});
          }
        }
        auto r = consumers.subscribe(client, owner, spec, sub->window(), sub->batch());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& st = std::get<ConsumerStatus>(r);
        if (st.created)
          spdlog::info("consumer {}/{} created at sequence {}", owner, spec.name, st.next_sequence);
        {
          auto f = fact(audit::Action::Subscribe, owner, st.created ? "created" : "joined");
          f.consumer = spec.name;
          f.position = st.next_sequence;
          record(f);
        }
        flatbuffers::FlatBufferBuilder fbb(512);
        auto info = build_info(fbb, st);
        return respond(in, finish(fbb, in.corr, protocol::Reply::Subscribed,
                                  protocol::CreateSubscribed(fbb, info)));
      }
      case protocol::Command::Unsubscribe: {
        const auto* u = req->command_as_Unsubscribe();
        if (auto e = consumers.unsubscribe(client, owner, u->consumer()->string_view())) {
          return reply_error(in, *e);
        }
        return respond(in, done_response(in.corr, 1));
      }
      case protocol::Command::Ack: {
        const auto* a = req->command_as_Ack();
        const auto seqs = sequences_of(a->sequences());
        if (auto e = consumers.ack(owner, a->consumer()->string_view(), seqs)) {
          reply_error(in, *e);
        }
        return;  // no reply on success
      }
      case protocol::Command::Nak: {
        const auto* n = req->command_as_Nak();
        if (auto e =
                consumers.nak(owner, n->consumer()->string_view(), n->sequence(), n->delay_ms())) {
          reply_error(in, *e);
        }
        return;
      }
      case protocol::Command::Reject: {
        const auto* r = req->command_as_Reject();
        // The reason is the consumer's free text: it may quote the event. Stored scrubbed
        // and cut (schemas/free_text.h), as every dead letter's reason.
        if (auto e = consumers.reject(
                owner, r->consumer()->string_view(), r->sequence(),
                schemas::scrub_free_text(r->reason() ? r->reason()->string_view() : "",
                                         schemas::kMaxStoredReasonBytes - 32))) {
          reply_error(in, *e);
        }
        return;
      }
      case protocol::Command::ListConsumers: {
        flatbuffers::FlatBufferBuilder fbb(1024);
        std::vector<flatbuffers::Offset<protocol::ConsumerInfo>> infos;
        const bool all = !policy.operate(owner);  // operators see every agency's
        for (const auto& st : consumers.list()) {
          if (all || st.owner == owner) infos.push_back(build_info(fbb, st));
        }
        auto list = protocol::CreateConsumerList(fbb, fbb.CreateVector(infos));
        return respond(in, finish(fbb, in.corr, protocol::Reply::ConsumerList, list));
      }
      case protocol::Command::SeekConsumer: {
        const auto* sk = req->command_as_SeekConsumer();
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        const std::string whose = owner_of(sk->owner());
        if (auto sp = consumers.spec(whose, sk->consumer()->string_view())) {
          if (auto denied = policy.replay(owner, whose, sp->filter.kinds, sp->filter.regions)) {
            return refuse(in, *denied);
          }
        }
        auto r = consumers.seek(whose, sk->consumer()->string_view(), sk->start(), sk->sequence(),
                                sk->time());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& st = std::get<ConsumerStatus>(r);
        spdlog::info("consumer {}/{} moved to sequence {} by {}", whose, st.spec.name,
                     st.next_sequence, owner);
        {
          auto f = fact(audit::Action::Seek, owner);
          f.consumer = st.spec.name;
          f.owner = whose;
          f.position = st.next_sequence;
          record(f);
        }
        flatbuffers::FlatBufferBuilder fbb(512);
        auto info = build_info(fbb, st);
        return respond(in, finish(fbb, in.corr, protocol::Reply::Subscribed,
                                  protocol::CreateSubscribed(fbb, info)));
      }
      case protocol::Command::DeleteConsumer: {
        const auto* d = req->command_as_DeleteConsumer();
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        const std::string whose = owner_of(d->owner());
        auto r = consumers.remove(whose, d->consumer()->string_view());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        spdlog::info("consumer {}/{} deleted by {}", whose, d->consumer()->string_view(), owner);
        {
          auto f = fact(audit::Action::DeleteConsumer, owner);
          f.consumer = d->consumer()->str();
          f.owner = whose;
          record(f);
        }
        return respond(in, done_response(in.corr, std::get<std::uint64_t>(r)));
      }
      case protocol::Command::ReadRange: {
        const auto* rr = req->command_as_ReadRange();
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        auto filter = filter_of(rr->filter());
        if (auto* e = std::get_if<CommandError>(&filter)) return reply_error(in, *e);
        const Filter& wanted = std::get<Filter>(filter);
        if (auto denied = policy.read_range(owner, wanted.kinds, wanted.regions))
          return refuse(in, *denied);
        auto r = consumers.read_range(std::get<Filter>(filter), rr->from_sequence(),
                                      rr->from_time(), rr->to_sequence(), rr->max_events());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& page = std::get<RangePage>(r);
        flatbuffers::FlatBufferBuilder fbb(4096);
        std::vector<flatbuffers::Offset<protocol::Record>> records;
        auto f = fact(audit::Action::Read, owner);
        for (const auto& rec : page.records) {
          if (auto m = minimise(rec, owner)) {
            records.push_back(protocol::CreateRecord(fbb, nested(fbb, m->of(rec))));
            f.sequences.push_back(sequence_of(rec));
          }
        }
        if (!f.sequences.empty() && !record(f)) return reply_unaudited(in);
        auto body = protocol::CreateRangePage(fbb, fbb.CreateVector(records), page.next, page.done);
        return respond(in, finish(fbb, in.corr, protocol::Reply::RangePage, body));
      }
      case protocol::Command::DlqList: {
        const auto* l = req->command_as_DlqList();
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        const std::string whose = owner_of(l->owner());
        auto r = consumers.dead_letters(whose, l->consumer() ? l->consumer()->string_view() : "",
                                        l->from_sequence(), l->max());
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        const auto& letters = std::get<std::vector<DeadLetter>>(r);
        // Operating is not reading: the event and the reason's text only within the
        // operator's own receive grant, agreement and field profile; otherwise the
        // metadata (sequence, kind, regions, the reason's kind, attempts, times).
        std::vector<std::optional<StoredEventInfo>> facts;
        std::vector<std::uint8_t> routing;
        std::vector<bool> readable;
        for (const auto& d : letters) {
          facts.push_back(decode_stored_event(d.record));
          routing.push_back(routing_kind_of(d.record));
          readable.push_back(facts.back() && policy.may_read_content(
                                                 owner, {routing.back(), facts.back()->regions}));
        }
        auto f = fact(audit::Action::ReadDeadLetters, owner);
        f.owner = whose;
        if (l->consumer() != nullptr) f.consumer = l->consumer()->str();
        for (const auto& d : letters) f.sequences.push_back(d.entry.sequence);
        if (!f.sequences.empty() && !record(f)) return reply_unaudited(in);
        flatbuffers::FlatBufferBuilder fbb(4096);
        std::vector<flatbuffers::Offset<protocol::DeadLetter>> items;
        for (std::size_t k = 0; k < letters.size(); ++k) {
          const auto& d = letters[k];
          std::optional<Minimised> m;
          if (readable[k]) m = minimise(d.record, owner);
          // The reason is free text about the person, like a correction's: whole (scrubbed)
          // only to a reader whose profile allows every field of the event's kind.
          const schemas::FieldProfile* profile = policy.profile(owner);
          const bool whole =
              m && profile != nullptr &&
              profile->allows_whole(static_cast<events::Payload>(routing[k] & ~kCorrectionBit));
          const std::string reason =
              whole ? schemas::scrub_free_text(d.entry.reason) : reason_kind(d.entry.reason);
          auto record = nested(fbb, m ? m->of(d.record) : std::string_view());
          auto regions =
              fbb.CreateVectorOfStrings(facts[k] ? facts[k]->regions : std::vector<std::string>{});
          items.push_back(protocol::CreateDeadLetter(
              fbb, fbb.CreateString(d.entry.key.name), d.entry.sequence, d.entry.attempts,
              fbb.CreateString(reason), d.entry.dead_at, record, routing[k], regions));
        }
        auto body = protocol::CreateDeadLetterList(fbb, fbb.CreateVector(items));
        return respond(in, finish(fbb, in.corr, protocol::Reply::DeadLetterList, body));
      }
      case protocol::Command::DlqRedrive:
      case protocol::Command::DlqDrop: {
        const bool redrive = req->command_type() == protocol::Command::DlqRedrive;
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        const std::string whose = owner_of(redrive ? req->command_as_DlqRedrive()->owner()
                                                   : req->command_as_DlqDrop()->owner());
        const auto* name = redrive ? req->command_as_DlqRedrive()->consumer()
                                   : req->command_as_DlqDrop()->consumer();
        const auto seqs = sequences_of(redrive ? req->command_as_DlqRedrive()->sequences()
                                               : req->command_as_DlqDrop()->sequences());
        auto r = redrive ? consumers.redrive(whose, name->string_view(), seqs)
                         : consumers.drop_dead_letters(whose, name->string_view(), seqs);
        if (auto* e = std::get_if<CommandError>(&r)) return reply_error(in, *e);
        spdlog::info("consumer {}/{}: {} {} dead letters", whose, name->string_view(),
                     redrive ? "redrove" : "dropped", std::get<std::uint64_t>(r));
        {
          auto f = fact(redrive ? audit::Action::Redrive : audit::Action::DropDeadLetters, owner);
          f.consumer = name->str();
          f.owner = whose;
          f.sequences = seqs;
          f.count = std::get<std::uint64_t>(r);
          record(f);
        }
        return respond(in, done_response(in.corr, std::get<std::uint64_t>(r)));
      }
      case protocol::Command::ReloadRegistry: {
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        auto r = reload_registry();
        if (!r) {
          return reply_error(
              in, {ErrorCode::InvalidRequest, "",
                   "agency registry not reloaded, the old one stays: " + r.error().message});
        }
        return respond(in, done_response(in.corr, *r));
      }
      case protocol::Command::AuditRead: {
        if (auto denied = policy.operate(owner)) return refuse(in, *denied);
        if (audit == nullptr) return reply_error(in, no_audit());
        return audit_read(in, req->command_as_AuditRead());
      }
      case protocol::Command::AuditPerson: {
        if (auto denied = policy.person_query(owner)) return refuse(in, *denied);
        if (audit == nullptr) return reply_error(in, no_audit());
        return audit_person(in, owner, req->command_as_AuditPerson());
      }
      case protocol::Command::NONE:
      case protocol::Command::Publish:
      case protocol::Command::Ping:
        break;  // handled by read_one
    }
  }

  static CommandError no_audit() {
    return {ErrorCode::InvalidRequest, "", "this broker keeps no audit chain"};
  }

  void storage_error(Call& in, const Error& e) {
    spdlog::error("audit chain: {}", e.to_string());
    const Nack n{ErrorCode::StorageUnavailable, "", "cannot read the audit chain: " + e.message,
                 true};
    in.reply.refusal = n;
  }

  void audit_read(Call& in, const protocol::AuditRead* ar) {
    constexpr std::uint32_t kMaxPage = 10000;
    const auto& log = audit->log();
    std::uint64_t from = ar->from_index();
    if (from == 0) {
      auto at = first_index_at(log, ar->since_time());
      if (!at) return storage_error(in, at.error());
      from = *at;
    }
    const std::size_t max = std::clamp<std::uint32_t>(ar->max(), 1, kMaxPage);
    const auto head = log.head();
    flatbuffers::FlatBufferBuilder fbb(64 * 1024);
    std::vector<flatbuffers::Offset<protocol::AuditBlob>> blobs;
    std::uint64_t next = from;
    Status st = log.scan(from, max, [&](std::uint64_t key, std::string_view bytes) {
      auto v = fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      blobs.push_back(protocol::CreateAuditBlob(fbb, key, v));
      next = key + 1;
      return true;
    });
    if (!st) return storage_error(in, st.error());
    const bool done = blobs.size() < max;
    auto records = fbb.CreateVector(blobs);
    auto hash = fbb.CreateVector(head.hash.data(), head.hash.size());
    auto body = protocol::CreateAuditPage(fbb, records, next, done, head.index, hash);
    respond(in, finish(fbb, in.corr, protocol::Reply::AuditPage, body));
  }

  void audit_person(Call& in, const std::string& owner, const protocol::AuditPerson* ap) {
    constexpr std::uint32_t kMaxScan = 100000;
    const std::string_view nik = ap->nik()->string_view();
    if (nik.size() != 16 ||
        !std::all_of(nik.begin(), nik.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return reply_error(in, {ErrorCode::InvalidRequest, "nik", "nik: must be 16 digits"});
    }
    const std::uint64_t from = std::max<std::uint64_t>(ap->from_index(), 1);
    // The question itself is an access to personal data: every page is recorded
    // (without the NIK) before it is answered.
    {
      const auto f = fact(audit::Action::PersonQuery, owner,
                          "which agencies received a person's events (audit records from " +
                              std::to_string(from) + ")");
      if (!record(f)) return reply_unaudited(in);
    }
    const auto& log = audit->log();
    const std::size_t max = std::clamp<std::uint32_t>(ap->max(), 1, kMaxScan);
    PersonScan scan(audit->hash_nik(nik), sequences_of(ap->sequences()));
    std::vector<PersonHit> hits;
    std::uint64_t next = from;
    std::size_t scanned = 0;
    Status st = log.scan(from, max, [&](std::uint64_t key, std::string_view bytes) {
      scan.feed(key, bytes, hits);
      next = key + 1;
      ++scanned;
      return true;
    });
    if (!st) return storage_error(in, st.error());
    flatbuffers::FlatBufferBuilder fbb(4096);
    std::vector<flatbuffers::Offset<protocol::PersonHit>> out;
    // Operating is not reading: only the events within the asker's own receive grant
    // (that a person has an event elsewhere, and who received it, is itself personal).
    std::map<std::uint64_t, Summary> events;
    auto summary = [&](std::uint64_t seq) -> const Summary& {
      auto it = events.find(seq);
      if (it == events.end()) it = events.emplace(seq, event_summary(seq, owner)).first;
      return it->second;
    };
    for (const auto& h : hits) {
      const Summary& e = summary(h.sequence);
      if (!e.readable) continue;
      auto agency = fbb.CreateString(h.agency);
      auto consumer = fbb.CreateString(h.consumer);
      out.push_back(protocol::CreatePersonHit(fbb, h.index, h.time, h.action, agency, consumer,
                                              h.sequence, e.id ? &*e.id : nullptr, e.kind));
    }
    std::vector<std::uint64_t> readable_sequences;
    for (std::uint64_t seq : scan.sequences()) {
      if (summary(seq).readable) readable_sequences.push_back(seq);
    }
    auto hits_v = fbb.CreateVector(out);
    auto seqs = fbb.CreateVector(readable_sequences);
    auto body = protocol::CreateAuditPersonPage(fbb, hits_v, seqs, next, scanned < max);
    respond(in, finish(fbb, in.corr, protocol::Reply::AuditPersonPage, body));
  }

  // The id and kind of the event stored under `seq` (for a person's hits), and whether
  // `reader` may see that it exists.
  struct Summary {
    std::optional<events::Uuid> id;
    std::uint8_t kind = 0;
    bool readable = false;
  };
  Summary event_summary(std::uint64_t seq, std::string_view reader) {
    auto rec = core.log().read(Sequence{seq});
    if (!rec || !rec->has_value()) return {};
    const auto* bytes = reinterpret_cast<const std::uint8_t*>((*rec)->data());
    flatbuffers::Verifier verifier(bytes, (*rec)->size());
    if (!log::VerifyLogRecordBuffer(verifier)) return {};
    const auto* lr = log::GetLogRecord(bytes);
    const auto* ev =
        lr->event() ? schemas::verified_event({lr->event()->data(), lr->event()->size()}) : nullptr;
    if (ev == nullptr || ev->regions() == nullptr) return {};
    std::vector<std::string> regions;
    for (const auto* r : *ev->regions()) regions.emplace_back(r->string_view());
    return {*ev->id(), static_cast<std::uint8_t>(ev->payload_type()),
            policy.may_read_content(reader, {lr->routing_kind(), regions})};
  }
};

Commands::Commands(Core& core, Consumers& consumers, const Policy& policy, Hooks hooks)
    : core_(core), consumers_(consumers), policy_(policy), hooks_(std::move(hooks)) {}

CommandReply Commands::handle(std::string_view agency, const ClientId& client, bool req_socket,
                              const protocol::Request& req) {
  Call call{agency, client, req_socket, req.corr(), protocol::EnumNameCommand(req.command_type()),
            {}};
  Impl impl{core_, consumers_, policy_, hooks_, audit_, *this};
  impl.handle_command(call, &req);
  return std::move(call.reply);
}

std::optional<Minimised> Commands::minimise(std::string_view record,
                                            std::string_view agency) const {
  const schemas::FieldProfile* profile = policy_.profile(agency);
  if (profile == nullptr) return std::nullopt;
  if (profile->keeps_everything()) return Minimised{true, {}};
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(record.data());
  flatbuffers::Verifier verifier(bytes, record.size());
  if (!log::VerifyLogRecordBuffer(verifier)) return std::nullopt;
  const auto* rec = log::GetLogRecord(bytes);
  // A correction's routing kind names the kind it corrects: a void's reason follows
  // that kind's profile (schemas::strip_event).
  const auto target_kind =
      (rec->routing_kind() & kCorrectionBit) != 0
          ? static_cast<events::Payload>(rec->routing_kind() & ~kCorrectionBit & 0xff)
          : events::Payload::NONE;
  auto stripped =
      schemas::strip_event({rec->event()->data(), rec->event()->size()}, *profile, target_kind);
  if (!stripped) {
    spdlog::error("sequence {} not sent to {}: cannot minimise it: {}", rec->sequence(), agency,
                  stripped.error().to_string());
    return std::nullopt;
  }
  flatbuffers::FlatBufferBuilder fbb(stripped->size() + 128);
  fbb.ForceVectorAlignment(stripped->size(), sizeof(std::uint8_t), 8);
  auto ev = fbb.CreateVector(*stripped);
  auto src = fbb.CreateString(rec->source() ? rec->source()->str() : "");
  fbb.Finish(
      log::CreateLogRecord(fbb, rec->sequence(), rec->received_at(), src, ev, rec->routing_kind()),
      log::LogRecordIdentifier());
  return Minimised{
      false, std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize())};
}

}  // namespace kolabus::broker
