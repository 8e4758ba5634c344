// broker::Commands: the consumer and operator commands (Subscribe, Ack, Nak, Reject,
// ListConsumers, SeekConsumer, DeleteConsumer, ReadRange, the Dlq* commands,
// ReloadRegistry, AuditRead, AuditPerson), socket-free.
//
// The server hands it each decoded request with the agency the connection's key
// belongs to now (Policy::identify); Commands asks the Policy whether the agency may,
// acts on the consumers, reads the log and the audit chain, writes the audit records
// before any data leaves, and returns what the server is to send: a Response, a
// refusal (a Nack; NotAuthorised ones are already in the audit chain), or nothing
// (Ack, Nak and Reject answer only when they fail). It also decides what an agency may
// see of a stored record (minimise), for deliveries as for replies.
//
// Ownership: borrows the core (for the log), the consumers and the policy (the
// server's, replaced in place on every registry reload), which must outlive it.
// Thread-safety: none; the server loop calls it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <broker/audit.h>
#include <broker/consumers.h>
#include <broker/core.h>
#include <broker/policy.h>
#include <schemas/protocol_generated.h>

namespace kolabus::broker {

// What the server is to send for one command.
struct CommandReply {
  std::optional<flatbuffers::DetachedBuffer> response;
  std::optional<Nack> refusal;  // sent as a Nack (and logged) instead
};

// What an agency may see of a stored record: all of it (keep), or its event with only
// the payload fields (and free text) of the agency's field profile. Stored events stay
// whole.
struct Minimised {
  bool keep = false;
  std::string stripped;  // the record to send instead, unless keep
  std::string_view of(std::string_view record) const { return keep ? record : stripped; }
};

class Commands {
 public:
  struct Hooks {
    // Writes audit records; false when the chain cannot be written (then no data is
    // sent). REQUIRED.
    std::function<bool(std::span<const AuditFact>)> record;
    // Loads the agency registry again and installs it; returns its agency count.
    std::function<Result<std::uint64_t>()> reload;
  };

  Commands(Core& core, Consumers& consumers, const Policy& policy, Hooks hooks);

  // The audit chain the audit commands read (null: none). Borrowed.
  void set_audit(Audit* audit) { audit_ = audit; }

  // One command of `agency` (as the policy identified it now) from `client`.
  // `req_socket`: the client is a REQ socket (it cannot receive deliveries).
  // REQUIRES: req's command is a known one other than Publish, Ping and NONE, with
  // its table present (the server checks both).
  CommandReply handle(std::string_view agency, const ClientId& client, bool req_socket,
                      const protocol::Request& req);

  // What `agency` may see of `record` (a stored LogRecord); nullopt when it may see
  // nothing of it (not in the registry), or the record cannot be minimised (logged).
  std::optional<Minimised> minimise(std::string_view record, std::string_view agency) const;

 private:
  struct Call;
  struct Impl;
  Core& core_;
  Consumers& consumers_;
  const Policy& policy_;
  Hooks hooks_;
  Audit* audit_ = nullptr;
};

}  // namespace kolabus::broker
