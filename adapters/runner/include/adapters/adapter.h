// adapters::Adapter: one way of connecting an agency's own systems to the bus,
// hosted by the adapter runner (kolabus-adapter), one process per agency.
//
// Sources (spool directory, HTTP gateway) turn the agency's records into events and
// publish them through the agency's one Publisher, whose durable outbox the runner
// owns. Sinks (webhook, ward register) are durable consumers with an inbox each.
//
// Each adapter reads its own TOML table (one [[spool]], [[gateway]], [[webhook]] or
// [[ward]] entry of agency.toml), validates it in its factory, and runs on threads of
// its own between start() and stop().
//
// Ownership: the runner owns the adapters and the AgencyContext, which outlives them.
// Thread-safety: start() and stop() are called from the runner's thread; stop() must
// make every thread of the adapter finish before it returns.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include <client/publisher.h>
#include <common/result.h>

namespace kolabus::adapters {

// Fans the Publisher's outcomes out to every source that wants them (the gateway
// records each event's status). Outcomes that arrive before open() (the publisher
// resumes its outbox at once, while the adapters are still being built) are kept
// and handed over by open(), so no listener misses one.
// Thread-safety: listen() before open(); notify() from the publisher's thread.
class OutcomeHub {
 public:
  using Listener = std::function<void(const client::Outcome&)>;
  void listen(Listener l) {
    std::lock_guard lock(mu_);
    listeners_.push_back(std::move(l));
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    for (const auto& o : early_) {
      for (auto& l : listeners_) l(o);
    }
    early_.clear();
  }
  void notify(const client::Outcome& o) {
    std::lock_guard lock(mu_);
    if (!open_) {
      early_.push_back(o);
      return;
    }
    for (auto& l : listeners_) l(o);
  }

 private:
  std::mutex mu_;
  bool open_ = false;
  std::vector<client::Outcome> early_;
  std::vector<Listener> listeners_;
};

struct AgencyContext {
  std::string agency;    // the agency's name, e.g. "disdukcapil-medan"
  std::string broker;    // the broker endpoint
  std::string data_dir;  // this agency's state: outbox, inboxes, registers
  // The agency's publisher (its outbox is data_dir/outbox). Null when the agency
  // has no source adapter.
  client::Publisher* publisher = nullptr;
  OutcomeHub* outcomes = nullptr;
  // CURVE for every connection of the agency (its key pair, the broker's public
  // key); empty against a --dev broker. Sinks put it into their ConsumerOptions.
  client::CurveOptions curve{};
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  // One line for the log: "spool /srv/siak/export (csv, births)".
  virtual std::string describe() const = 0;
  virtual Status start() = 0;
  virtual void stop() = 0;
};

// The factory of each adapter kind: checks the table (errors name the key) and
// builds the adapter. REQUIRES: sources get a context with a publisher.
using Factory = Result<std::unique_ptr<Adapter>> (*)(const toml::table& table,
                                                     const AgencyContext& context);

}  // namespace kolabus::adapters
