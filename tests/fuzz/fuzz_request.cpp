// fuzz_request: bytes as one protocol Request frame, handled as broker/src/server.cpp
// handles a frame from a development-mode client, against a socket-free broker: Core
// and Consumers over a memory log and a memory consumer store, the embedded region
// list and a manual clock.
//
// The frame decoding itself (Verifier, version, the switch over the command, the field
// reads of each command) lives in server.cpp's private Impl, which needs a ZeroMQ
// socket, so it is mirrored here step by step (read_one and handle_command as of this
// writing). Where server.cpp reads a pointer it has not checked, the mirror reports it
// instead of crashing. Keep the mirror in step with server.cpp until the decoding moves
// into the broker library (see tests/fuzz/README.md).
//
// Each input meets a fresh broker holding three events and a consumer "seed" of the
// client "fuzz-client" with those events delivered, one of them dead-lettered, so
// that Ack, Nak, Reject, Seek and the Dlq commands of the seed corpus act on real state.
#include <algorithm>
#include <string>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "fuzz_targets.h"
#include <broker/consumers.h>
#include <broker/core.h>
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <schemas/validate.h>
#include <storage/memory_consumer_store.h>
#include <storage/memory_event_log.h>

namespace kolabus::fuzz {

namespace {

using protocol::Command;
using protocol::ErrorCode;

constexpr std::uint16_t kProtocolVersion = 1;      // server.cpp
constexpr std::size_t kMaxMessageBytes = 1 << 20;  // ServerOptions default
constexpr std::string_view kAgency = "dev";        // ServerOptions::dev_agency
const broker::ClientId kClient{"fuzz-client"};

struct World {
  storage::MemoryEventLog log;
  storage::MemoryConsumerStore store;
  ManualClock clock{kNow};
  broker::Core core{log, schemas::RegionTable::embedded(), clock};
  broker::Consumers consumers{log, store, schemas::RegionTable::embedded(), clock};

  World() {
    if (!consumers.load()) report("setup: Consumers::load failed on an empty store");
    std::vector<broker::PublishRequest> reqs;
    for (const auto& e : preloaded_events()) reqs.push_back({e, kAgency});
    for (const auto& o : core.publish_batch(reqs)) {
      if (!o.acked()) report("setup: a preloaded event was refused");
    }
    consumers.on_appended(core.last_appended());
    broker::ConsumerSpec spec;
    spec.name = "seed";
    if (std::holds_alternative<broker::CommandError>(
            consumers.subscribe(kClient, kAgency, spec, 100))) {
      report("setup: subscribing the seed consumer failed");
    }
    if (consumers.pump().size() != preloaded_events().size()) {
      report("setup: the seed consumer did not get the preloaded events");
    }
    if (consumers.reject(kAgency, "seed", 2, "preloaded dead letter")) {
      report("setup: rejecting sequence 2 failed");
    }
    if (!consumers.flush()) report("setup: flush failed");
  }

  // What the server loop does after each drain: route, deliver, persist; then let
  // time pass so that ack deadlines and client timeouts fire too.
  void settle() {
    consumers.pump();
    if (!consumers.flush()) report("Consumers::flush failed on a memory store");
    clock.advance(60'000);
    consumers.pump();
    if (!consumers.flush()) report("Consumers::flush failed on a memory store");
    (void)consumers.next_deadline();
  }
};

void check_command_error(const broker::CommandError& e, const char* command) {
  count(std::string("refused.") + protocol::EnumNameErrorCode(e.code));
  if (e.message.empty()) report(std::string(command) + ": a refusal without a message");
  if (e.code == ErrorCode::None || e.code == ErrorCode::Internal) {
    report(std::string(command) + ": refused with code " + protocol::EnumNameErrorCode(e.code));
  }
}

// server.cpp reads this command's table without checking that it is there.
void null_table(const char* command) {
  report(std::string("server.cpp dereferences a null ") + command +
         " table: a Request with command_type " + command +
         " and no command value passes the Verifier");
}

// server.cpp Impl::filter_of.
broker::CommandResult<broker::Filter> filter_of(World& w, const protocol::Filter* f) {
  std::vector<std::uint8_t> kinds;
  std::vector<std::string> regions;
  if (f != nullptr && f->kinds() != nullptr) kinds.assign(f->kinds()->begin(), f->kinds()->end());
  if (f != nullptr && f->regions() != nullptr) {
    for (const auto* r : *f->regions()) regions.push_back(r->str());
  }
  return w.consumers.make_filter(kinds, regions);
}

std::vector<std::uint64_t> sequences_of(const flatbuffers::Vector<std::uint64_t>* v) {
  return v == nullptr ? std::vector<std::uint64_t>{}
                      : std::vector<std::uint64_t>(v->begin(), v->end());
}

std::vector<std::string> regions_of(const events::Event* ev) {
  std::vector<std::string> out;
  if (ev != nullptr && ev->regions() != nullptr) {
    for (const auto* r : *ev->regions()) out.push_back(r->str());
  }
  return out;
}

// The publish path: Core::publish_batch as Server::Impl::commit calls it, and what
// the protocol promises about its answers (PROTOCOL.md 3.2, 3.4).
void publish(World& w, std::span<const std::uint8_t> event) {
  const schemas::ValidationContext ctx{schemas::RegionTable::embedded(), w.clock.now_ms()};
  const auto violation = schemas::validate_event(event, ctx);
  const Sequence before = w.log.next_sequence();
  const broker::PublishRequest req{event, kAgency};
  // The same event twice in one drain: stored once, the second ACKed as a duplicate.
  const std::vector<broker::PublishRequest> twice{req, req};
  const auto out = w.core.publish_batch(twice);
  if (out.size() != 2) return report("publish_batch: not one outcome per request");
  const auto appended = w.core.last_appended();
  w.consumers.on_appended(appended);
  const Sequence after = w.log.next_sequence();

  if (const auto* ack = std::get_if<broker::Ack>(&out[0].result)) {
    if (!out[0].id) return report("publish: an ACK without the event id");
    const auto* second = std::get_if<broker::Ack>(&out[1].result);
    if (second == nullptr || !second->duplicate || second->sequence != ack->sequence) {
      return report("publish: the repeat in the same batch is not a duplicate ACK of the first");
    }
    if (ack->duplicate) {
      count("publish.duplicate");
      if (after != before) return report("publish: a duplicate ACK stored something");
      if (ack->sequence.value >= before.value) {
        return report("publish: a duplicate ACK names a sequence that is not in the log");
      }
    } else {
      count("publish.acked");
      if (violation) {
        return report("publish: an event that fails validate_event was stored (" +
                      violation->message + ")");
      }
      if (ack->sequence != before || after.value != before.value + 1) {
        return report("publish: a new event did not take exactly the next sequence");
      }
      auto rec = w.log.read(ack->sequence);
      if (!rec || !rec->has_value()) return report("publish: the ACKed sequence is not in the log");
      const auto info = broker::decode_stored_event(**rec);
      if (!info) return report("publish: the stored record does not decode");
      const auto* ev = schemas::verified_event(event);
      if (ev == nullptr || info->kind != ev->payload_type() || info->regions != regions_of(ev)) {
        return report("publish: the stored record does not hold the event as published");
      }
      auto found = w.log.find_id(*out[0].id);
      if (!found || !found->has_value() || **found != ack->sequence) {
        return report("publish: the id index does not point at the ACKed sequence");
      }
      if (appended.size() != 1 || appended[0].sequence != ack->sequence) {
        return report("publish: last_appended does not name the stored event");
      }
      // The seed consumer takes every kind and region: the new event is delivered.
      const auto deliveries = w.consumers.pump();
      const bool delivered =
          std::any_of(deliveries.begin(), deliveries.end(), [&](const broker::Delivery& d) {
            return d.consumer == "seed" && d.sequence == ack->sequence;
          });
      if (!delivered) return report("publish: the stored event was not delivered to 'seed'");
    }
    // A resend in a later drain: the same sequence, flagged duplicate (3.4).
    const auto again = w.core.publish_batch(std::span(&req, 1));
    const auto* a = again.size() == 1 ? std::get_if<broker::Ack>(&again[0].result) : nullptr;
    if (a == nullptr || !a->duplicate || a->sequence != ack->sequence) {
      report("publish: a resend of an ACKed event is not a duplicate ACK of its sequence");
    }
    return;
  }

  const auto& n = std::get<broker::Nack>(out[0].result);
  count(std::string("publish.nack.") + protocol::EnumNameErrorCode(n.code));
  if (after != before || !appended.empty()) return report("publish: a refused event was stored");
  if (n.code == ErrorCode::None || n.code == ErrorCode::Internal ||
      n.code == ErrorCode::StorageUnavailable || n.retryable) {
    return report(std::string("publish: refused with ") + protocol::EnumNameErrorCode(n.code) +
                  " by a memory log that cannot fail");
  }
  if (n.message.empty()) return report("publish: a Nack without a message");
  if (!n.field.empty() && n.message.rfind(n.field, 0) != 0) {
    return report("publish: the Nack message does not start with its field '" + n.field +
                  "': " + n.message);
  }
  // Without a duplicate in the log, the broker's refusal is validate_event's, or one
  // of the rules that need the log (a correction's target).
  if (violation) {
    if (violation->code != n.code || violation->field != n.field) {
      return report(std::string("publish: the Nack (") + protocol::EnumNameErrorCode(n.code) + " " +
                    n.field + ") differs from validate_event's (" +
                    protocol::EnumNameErrorCode(violation->code) + " " + violation->field + ")");
    }
  } else if (n.code != ErrorCode::UnknownTarget && n.code != ErrorCode::InvalidCorrection &&
             n.code != ErrorCode::InvalidRegions) {
    return report(std::string("publish: a valid event refused with ") +
                  protocol::EnumNameErrorCode(n.code));
  }
  const auto* second = std::get_if<broker::Nack>(&out[1].result);
  if (second == nullptr || second->code != n.code || second->field != n.field) {
    return report("publish: the same refused event got two different answers in one batch");
  }
}

// server.cpp Impl::handle_command, development mode (every grant allowed).
void handle_command(World& w, const protocol::Request* req) {
  const char* name = protocol::EnumNameCommand(req->command_type());
  count(std::string("command.") + name);
  auto done = [&](const std::optional<broker::CommandError>& e) {
    if (e) check_command_error(*e, name);
  };
  switch (req->command_type()) {
    case Command::Subscribe: {
      const auto* sub = req->command_as_Subscribe();
      if (sub == nullptr) return null_table(name);
      const auto* cfg = sub->config();
      if (cfg == nullptr || cfg->name() == nullptr) return count("refused.MissingField");
      auto filter = filter_of(w, cfg->filter());
      if (auto* e = std::get_if<broker::CommandError>(&filter)) return done(*e);
      broker::ConsumerSpec spec{cfg->name()->str(), std::get<broker::Filter>(filter),
                                cfg->start(),       cfg->start_sequence(),
                                cfg->start_time(),  cfg->ack_wait_ms(),
                                cfg->max_deliver()};
      auto r = w.consumers.subscribe(kClient, kAgency, spec, sub->window());
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      const auto& st = std::get<broker::ConsumerStatus>(r);
      if (st.owner != kAgency || st.spec.name != spec.name) {
        report("Subscribe: the status names another consumer");
      }
      return;
    }
    case Command::Unsubscribe: {
      const auto* u = req->command_as_Unsubscribe();
      if (u == nullptr) return null_table(name);
      return done(w.consumers.unsubscribe(kClient, kAgency, u->consumer()->string_view()));
    }
    case Command::Ack: {
      const auto* a = req->command_as_Ack();
      if (a == nullptr) return null_table(name);
      const auto seqs = sequences_of(a->sequences());
      return done(w.consumers.ack(kAgency, a->consumer()->string_view(), seqs));
    }
    case Command::Nak: {
      const auto* n = req->command_as_Nak();
      if (n == nullptr) return null_table(name);
      return done(
          w.consumers.nak(kAgency, n->consumer()->string_view(), n->sequence(), n->delay_ms()));
    }
    case Command::Reject: {
      const auto* r = req->command_as_Reject();
      if (r == nullptr) return null_table(name);
      return done(w.consumers.reject(kAgency, r->consumer()->string_view(), r->sequence(),
                                     r->reason() ? r->reason()->str() : ""));
    }
    case Command::ListConsumers: {
      for (const auto& st : w.consumers.list()) {
        if (st.owner.empty() || st.spec.name.empty()) report("ListConsumers: a nameless consumer");
      }
      return;
    }
    case Command::SeekConsumer: {
      const auto* sk = req->command_as_SeekConsumer();
      if (sk == nullptr) return null_table(name);
      const std::string whose =
          sk->owner() != nullptr && sk->owner()->size() > 0 ? sk->owner()->str() : "dev";
      (void)w.consumers.spec(whose, sk->consumer()->string_view());
      auto r = w.consumers.seek(whose, sk->consumer()->string_view(), sk->start(), sk->sequence(),
                                sk->time());
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      return;
    }
    case Command::DeleteConsumer: {
      const auto* d = req->command_as_DeleteConsumer();
      if (d == nullptr) return null_table(name);
      const std::string whose =
          d->owner() != nullptr && d->owner()->size() > 0 ? d->owner()->str() : "dev";
      auto r = w.consumers.remove(whose, d->consumer()->string_view());
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      return;
    }
    case Command::ReadRange: {
      const auto* rr = req->command_as_ReadRange();
      if (rr == nullptr) return null_table(name);
      auto filter = filter_of(w, rr->filter());
      if (auto* e = std::get_if<broker::CommandError>(&filter)) return done(*e);
      auto r = w.consumers.read_range(std::get<broker::Filter>(filter), rr->from_sequence(),
                                      rr->from_time(), rr->to_sequence(), rr->max_events());
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      const auto& page = std::get<broker::RangePage>(r);
      if (page.records.size() > 10000 ||
          (rr->max_events() > 0 && page.records.size() > rr->max_events())) {
        report("ReadRange: a page larger than max_events (or 10,000)");
      }
      for (const auto& rec : page.records) {
        if (!broker::decode_stored_event(rec)) report("ReadRange: a record that does not decode");
      }
      return;
    }
    case Command::DlqList: {
      const auto* l = req->command_as_DlqList();
      if (l == nullptr) return null_table(name);
      const std::string whose =
          l->owner() != nullptr && l->owner()->size() > 0 ? l->owner()->str() : "dev";
      auto r = w.consumers.dead_letters(whose, l->consumer() ? l->consumer()->string_view() : "",
                                        l->from_sequence(), l->max());
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      return;
    }
    case Command::DlqRedrive:
    case Command::DlqDrop: {
      const bool redrive = req->command_type() == Command::DlqRedrive;
      const flatbuffers::String* owner = nullptr;
      const flatbuffers::String* consumer = nullptr;
      const flatbuffers::Vector<std::uint64_t>* seqs = nullptr;
      if (redrive) {
        const auto* c = req->command_as_DlqRedrive();
        if (c == nullptr) return null_table(name);
        owner = c->owner(), consumer = c->consumer(), seqs = c->sequences();
      } else {
        const auto* c = req->command_as_DlqDrop();
        if (c == nullptr) return null_table(name);
        owner = c->owner(), consumer = c->consumer(), seqs = c->sequences();
      }
      const std::string whose = owner != nullptr && owner->size() > 0 ? owner->str() : "dev";
      const auto list = sequences_of(seqs);
      auto r = redrive ? w.consumers.redrive(whose, consumer->string_view(), list)
                       : w.consumers.drop_dead_letters(whose, consumer->string_view(), list);
      if (auto* e = std::get_if<broker::CommandError>(&r)) return done(*e);
      return;
    }
    case Command::NONE:
    case Command::Publish:
    case Command::Ping:
      return;  // handled by read_one
    default:
      // A command of this build that the mirror does not follow (yet).
      return count(std::string("command.unmirrored.") + name);
  }
}

}  // namespace

// server.cpp Impl::read_one, from the frame on (one body frame, a DEALER client).
void request_one(std::span<const std::uint8_t> data) {
  if (data.size() > kMaxMessageBytes) return count("frame.too_large");
  flatbuffers::Verifier verifier(data.data(), data.size());
  if (!verifier.VerifyBuffer<protocol::Request>(nullptr)) return count("frame.malformed");
  const auto* req = flatbuffers::GetRoot<protocol::Request>(data.data());
  if (req->version() != kProtocolVersion) return count("frame.unsupported_version");

  World w;
  switch (req->command_type()) {
    case Command::Ping:
      count("command.Ping");
      if (w.core.next_sequence().value != preloaded_events().size() + 1) {
        report("Ping: next_sequence is not the log's next sequence");
      }
      break;
    case Command::Publish: {
      const auto* pub = req->command_as_Publish();
      if (pub == nullptr || pub->event() == nullptr || pub->event()->size() == 0) {
        count("publish.no_event");
        break;
      }
      publish(w, {pub->event()->data(), pub->event()->size()});
      break;
    }
    case Command::NONE:
      count("command.NONE");
      break;
    default:
      // The Verifier passes union types it does not know; server.cpp answers them
      // UnknownCommand, like NONE.
      if (req->command_type() > Command::MAX) {
        count("refused.UnknownCommand");
        break;
      }
      // ... and a known type without its table MissingField "command".
      if (req->command() == nullptr) {
        count("refused.MissingField");
        break;
      }
      handle_command(w, req);
      break;
  }
  w.settle();
}

}  // namespace kolabus::fuzz

#ifdef KOLABUS_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kolabus::fuzz::request_one({data, size});
  return 0;
}
#endif
