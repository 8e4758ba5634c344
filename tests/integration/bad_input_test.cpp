// The bad input catalogue (issue 7, item 4): what a buggy or hostile client can put on
// the wire, sent by a raw DEALER socket to a real kolabus-broker. Each row must be
// answered with its precise error (code, field, a message naming the field, corr),
// store nothing (Pong.next_sequence unchanged, and a ReadRange of the whole log holds
// exactly the valid events sent so far), and leave the broker serving the next client
// (a valid event from a fresh socket is ACKed with the next sequence).
//
// frames_test.cpp already covers garbage, an empty frame, three garbage frames, an
// oversized frame, protocol version 2, a Request without command, a garbage event and
// a correction of an unknown event; this file covers the rest.
//
// One broker serves all rows of a test case (each ctest case is its own process); a
// row that kills it fails, and the next row gets a fresh broker on the same log.
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "broker_process.h"
#include <common/clock.h>
#include <common/ids.h>
#include <schemas/events_generated.h>
#include <schemas/log_generated.h>
#include <schemas/protocol_generated.h>

using namespace kolabus;
using namespace std::chrono_literals;
using protocol::ErrorCode;
using Bytes = std::vector<std::uint8_t>;
using Frames = std::vector<std::string>;

namespace {

constexpr std::uint64_t kCorr = 0x5eed;
constexpr TimeMs kHour = 3'600'000;
// 2100-01-01 00:00 UTC.
constexpr TimeMs k2100 = 4102444800000;

TimeMs now_ms() { return SystemClock().now_ms(); }

std::string str(const Bytes& b) { return {b.begin(), b.end()}; }

events::Uuid uuid(const EventId& id) {
  return events::Uuid(flatbuffers::span<const std::uint8_t, 16>(id.bytes.data(), 16));
}

// ---------------------------------------------------------------------------------
// Frames

Bytes request(std::uint64_t corr, protocol::Command type,
              const std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder&)>&
                  body = nullptr) {
  flatbuffers::FlatBufferBuilder fbb;
  const auto cmd = body ? body(fbb) : flatbuffers::Offset<void>();
  fbb.Finish(protocol::CreateRequest(fbb, 1, corr, type, cmd), protocol::RequestIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

Bytes publish(std::uint64_t corr, const Bytes& event) {
  return request(corr, protocol::Command::Publish, [&](flatbuffers::FlatBufferBuilder& fbb) {
    fbb.ForceVectorAlignment(event.size(), 1, 8);
    return protocol::CreatePublish(fbb, fbb.CreateVector(event)).Union();
  });
}

std::uint32_t read_u32(const Bytes& b, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}
void write_u32(Bytes& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

template <typename T>
std::size_t offset_of(const Bytes& buffer, const T* object) {
  REQUIRE(object != nullptr);
  return static_cast<std::size_t>(reinterpret_cast<const std::uint8_t*>(object) - buffer.data());
}

// ---------------------------------------------------------------------------------
// Events: valid by default (real Medan codes, NIKs of the right shape, times an hour
// or two ago); each row changes one thing.

struct Spec {
  events::Payload kind = events::Payload::Birth;
  std::uint8_t type_on_wire = 0;  // the payload_type written; 0: `kind`
  TimeMs occurred = now_ms() - 2 * kHour;
  TimeMs recorded = now_ms() - kHour;
  TimeMs when = now_ms() - 2 * kHour;  // born_at / died_at / moved_at
  std::vector<std::string> regions{"1271011001"};
  std::string village = "1271011001";
  // Birth
  std::string child_name = "Putri Siregar";
  std::string place = "RSUD dr. Pirngadi";
  std::string mother_nik = "1271015203950001";
  std::string father_nik;  // empty: absent
  std::string kk = "1271012002200001";
  // Death
  std::string nik = "1271011505500003";
  std::string name = "Budi Lubis";
  // Move
  std::vector<std::string> niks{"1271010101800001"};
  std::string destination = "1271021003";
  events::MoveType move_type = events::MoveType::BetweenKecamatan;
};

Spec birth() { return {}; }
Spec death() {
  Spec s;
  s.kind = events::Payload::Death;
  return s;
}
Spec move() {
  Spec s;
  s.kind = events::Payload::Move;
  s.regions = {"1271011001", "1271021003"};
  return s;
}

flatbuffers::Offset<void> payload(flatbuffers::FlatBufferBuilder& fbb, const Spec& s) {
  switch (s.kind) {
    case events::Payload::Birth: {
      auto name = fbb.CreateString(s.child_name);
      auto place = fbb.CreateString(s.place);
      auto village = fbb.CreateString(s.village);
      auto mother = fbb.CreateString(s.mother_nik);
      auto father = s.father_nik.empty() ? 0 : fbb.CreateString(s.father_nik);
      auto kk = fbb.CreateString(s.kk);
      return events::CreateBirth(fbb, name, events::Sex::Female, s.when, place, village, mother,
                                 father, kk)
          .Union();
    }
    case events::Payload::Death: {
      auto nik = fbb.CreateString(s.nik);
      auto name = fbb.CreateString(s.name);
      auto village = fbb.CreateString(s.village);
      return events::CreateDeath(fbb, nik, name, s.when, 0, village).Union();
    }
    case events::Payload::Move: {
      auto niks = fbb.CreateVectorOfStrings(s.niks);
      auto kk = fbb.CreateString(s.kk);
      auto origin = fbb.CreateString(s.village);
      auto dest = fbb.CreateString(s.destination);
      return events::CreateMove(fbb, niks, kk, origin, dest, s.when, 0, s.move_type).Union();
    }
    default:
      FAIL("no builder for this kind");
      return {};
  }
}

Bytes build(const Spec& s, const EventId& id) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  const auto body = payload(fbb, s);
  auto regions = fbb.CreateVectorOfStrings(s.regions);
  const auto u = uuid(id);
  const auto type = s.type_on_wire != 0 ? static_cast<events::Payload>(s.type_on_wire) : s.kind;
  fbb.Finish(events::CreateEvent(fbb, &u, 1, s.occurred, s.recorded, 0, regions, type, body),
             events::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// A correction of `target` whose corrected payload is `inner` (already a union).
Bytes correction(
    const EventId& id, const EventId& target, events::Payload inner_type,
    const std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder&)>& inner,
    const std::vector<std::string>& regions) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  const auto value = inner(fbb);
  const auto t = uuid(target);
  auto c = events::CreateCorrection(fbb, &t, fbb.CreateString("fixing a typo"), false, inner_type,
                                    value);
  auto regs = fbb.CreateVectorOfStrings(regions);
  const auto u = uuid(id);
  const TimeMs when = now_ms() - kHour;
  fbb.Finish(
      events::CreateEvent(fbb, &u, 1, when, when, 0, regs, events::Payload::Correction, c.Union()),
      events::EventIdentifier());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// ---------------------------------------------------------------------------------
// The broker under test and a raw client

bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  if (!(in >> pid_s >> comm >> state)) return false;
  return state != "Z" && state != "X";
}

class Raw {
 public:
  explicit Raw(const std::string& endpoint) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  void send(const Frames& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  // The last frame of the next message, or nullopt when none arrived in time or the
  // broker process `pid` died first.
  std::optional<std::string> reply(pid_t pid, std::chrono::milliseconds timeout = 10s) {
    std::optional<std::string> body;
    test::wait_until(
        [&] {
          std::vector<zmq::message_t> parts;
          if (zmq::recv_multipart(socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
            body = parts.back().to_string();
            return true;
          }
          return !alive(pid);
        },
        timeout);
    return body;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_{context_, zmq::socket_type::dealer};
};

// The Response in `body` (which must outlive it), or nullptr after a failed check.
// Nothing here throws: a failed REQUIRE would end the test case and skip the rows
// after it, and each row should be reported on its own.
const protocol::Response* response(const std::optional<std::string>& body,
                                   const std::string& what) {
  if (!body) {
    FAIL_CHECK("no answer to " << what);
    return nullptr;
  }
  flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(body->data()), body->size());
  if (!v.VerifyBuffer<protocol::Response>(nullptr)) {
    FAIL_CHECK("the answer to " << what << " is not a Response");
    return nullptr;
  }
  return flatbuffers::GetRoot<protocol::Response>(body->data());
}

class Broker {
 public:
  static Broker& get() {
    static Broker b;
    return b;
  }

  // Starts a fresh broker on the same log if a row killed the last one.
  void ensure_running() {
    if (!alive(process_->pid())) {
      process_.reset();
      process_ = std::make_unique<test::BrokerProcess>(dir_.str("broker"));
    }
  }
  pid_t pid() const { return process_->pid(); }
  const std::string& endpoint() const { return process_->endpoint(); }

  std::optional<std::uint64_t> next_sequence() {
    Raw c(endpoint());
    c.send({str(request(1, protocol::Command::Ping,
                        [](auto& fbb) { return protocol::CreatePing(fbb).Union(); }))});
    const auto body = c.reply(pid());
    const auto* r = response(body, "a Ping");
    if (r == nullptr) return std::nullopt;
    if (r->reply_type() != protocol::Reply::Pong) {
      FAIL_CHECK("a Ping is not answered with a Pong");
      return std::nullopt;
    }
    return r->reply_as_Pong()->next_sequence();
  }

  // A valid event from a fresh socket is ACKed as the next sequence.
  void expect_serving(std::uint64_t next) {
    const EventId id = new_uuid_v7();
    Raw c(endpoint());
    c.send({str(publish(2, build(birth(), id)))});
    const auto body = c.reply(pid());
    const auto* r = response(body, "the next client's valid event");
    if (r == nullptr) return;
    CHECK_MESSAGE(r->reply_type() == protocol::Reply::PublishAck,
                  "the next client's valid event is not ACKed");
    if (r->reply_type() != protocol::Reply::PublishAck) return;
    CHECK(r->reply_as_PublishAck()->sequence() == next);
    CHECK_FALSE(r->reply_as_PublishAck()->duplicate());
    stored_.insert(id);
  }

  void accepted(const EventId& id) { stored_.insert(id); }

  // The log holds exactly the valid events sent so far, each once.
  void expect_log_holds_only_valid_events() {
    Raw c(endpoint());
    c.send({str(request(3, protocol::Command::ReadRange, [](auto& fbb) {
      return protocol::CreateReadRange(fbb, 0, 1, 0, 0, 10000).Union();
    }))});
    const auto body = c.reply(pid());
    const auto* r = response(body, "a ReadRange of the whole log");
    if (r == nullptr) return;
    const auto* page = r->reply_as_RangePage();
    CHECK_MESSAGE(page != nullptr, "a ReadRange is not answered with a RangePage");
    if (page == nullptr || page->records() == nullptr) return;
    std::multiset<EventId> ids;
    for (const auto* rec : *page->records()) {
      const auto* lr = flatbuffers::GetRoot<kolabus::log::LogRecord>(rec->bytes()->data());
      const auto* ev = flatbuffers::GetRoot<events::Event>(lr->event()->data());
      ids.insert(
          EventId::from_span(std::span<const std::uint8_t, 16>(ev->id()->bytes()->data(), 16)));
    }
    CHECK(ids == std::multiset<EventId>(stored_.begin(), stored_.end()));
  }

 private:
  Broker() : process_(std::make_unique<test::BrokerProcess>(dir_.str("broker"))) {}

  test::TempDir dir_{"bad-input"};
  std::unique_ptr<test::BrokerProcess> process_;
  std::set<EventId> stored_;  // ids ACKed as new
};

// ---------------------------------------------------------------------------------
// Rows

enum class Corr { kEchoed, kZero };

struct Expect {
  std::optional<ErrorCode> code;  // nullopt: a valid edge case, ACKed
  std::string field;
  std::string message_has;  // a part of the message (the field, where one is named)
  Corr corr = Corr::kEchoed;
  bool names_id = false;  // the Nack carries the event id
};

struct Input {
  Frames frames;
  std::optional<EventId> id;  // the event's, when there is one
};

struct Row {
  std::string name;
  std::function<Input()> make;
  Expect expect;
};

// A row publishing one event built from a spec: refused naming the field, with the id.
Row event_row(std::string name, std::function<void(Spec&)> change, Spec base,
              std::optional<ErrorCode> code, std::string field) {
  Expect e{code, field, field, Corr::kEchoed, true};
  return Row{std::move(name),
             [=] {
               Spec s = base;
               change(s);
               const EventId id = new_uuid_v7();
               return Input{{str(publish(kCorr, build(s, id)))}, id};
             },
             e};
}

// A row publishing raw event bytes (no usable id).
Row bytes_row(std::string name, std::function<Bytes()> event, ErrorCode code,
              std::string field = "", std::string message_has = "") {
  return Row{std::move(name),
             [=] {
               return Input{{str(publish(kCorr, event()))}, std::nullopt};
             },
             Expect{code, field, message_has, Corr::kEchoed, false}};
}

// Checks the answer to one row; true when it is as expected so far.
void check_answer(const Row& row, const Input& in, const protocol::Response* r,
                  std::uint64_t before) {
  const Expect& x = row.expect;
  if (!x.code) {
    const auto* nack = r->reply_as_Nack();
    const std::string why = nack && nack->message() ? nack->message()->str() : "";
    CHECK_MESSAGE(r->reply_type() == protocol::Reply::PublishAck,
                  "a valid event is refused: " << why);
    if (r->reply_type() != protocol::Reply::PublishAck) return;
    CHECK(r->reply_as_PublishAck()->sequence() == before);
    if (in.id) Broker::get().accepted(*in.id);
    return;
  }
  const std::string reply_type = protocol::EnumNameReply(r->reply_type());
  CHECK_MESSAGE(r->reply_type() == protocol::Reply::Nack,
                "answered " << reply_type << " instead of a Nack");
  const auto* n = r->reply_as_Nack();
  if (n == nullptr) return;
  const std::string field = n->field() ? n->field()->str() : "";
  const std::string message = n->message() ? n->message()->str() : "";
  const std::string code = protocol::EnumNameErrorCode(n->code());
  INFO("Nack " << code << " field '" << field << "': " << message);
  CHECK(n->code() == *x.code);
  CHECK(field == x.field);
  CHECK_FALSE(message.empty());
  if (!x.message_has.empty()) CHECK(message.find(x.message_has) != std::string::npos);
  CHECK(r->corr() == (x.corr == Corr::kEchoed ? kCorr : 0));
  CHECK_FALSE(n->retryable());
  if (x.names_id) {
    CHECK_MESSAGE(n->id() != nullptr, "the Nack does not name the event id");
    if (n->id() != nullptr && in.id) {
      CHECK(EventId::from_span(std::span<const std::uint8_t, 16>(n->id()->bytes()->data(), 16)) ==
            *in.id);
    }
  }
}

void run(const Row& row) {
  auto& broker = Broker::get();
  broker.ensure_running();
  const auto before = broker.next_sequence();
  if (!before) return;
  const Input in = row.make();
  const pid_t pid = broker.pid();
  Raw c(broker.endpoint());
  c.send(in.frames);
  const auto body = c.reply(pid);
  if (!body) {
    // (doctest streams a char* as a pointer: pieces of messages are std::strings.)
    const std::string what = alive(pid) ? "stayed silent" : "died";
    FAIL_CHECK("no answer: the broker " << what);
    broker.ensure_running();
  } else if (const auto* r = response(body, "the bad input")) {
    check_answer(row, in, r, *before);
  }
  // Nothing of the bad input stored, and the next client served normally.
  const std::uint64_t next = row.expect.code ? *before : *before + 1;
  CHECK(broker.next_sequence() == next);
  broker.expect_serving(next);
  broker.expect_log_holds_only_valid_events();
}

void run_all(const std::vector<Row>& rows) {
  for (const auto& row : rows) {
    SUBCASE(row.name.c_str()) { run(row); }
  }
}

// A valid publish frame, to cut, extend or corrupt.
Bytes valid_frame() { return publish(kCorr, build(birth(), new_uuid_v7())); }

// The Event inside `frame` (a Publish), for patching offsets that point into it.
const events::Event* event_in(const Bytes& event) {
  return flatbuffers::GetRoot<events::Event>(event.data());
}

}  // namespace

TEST_CASE("Bad input: a message of another frame layout is refused MalformedFrame") {
  auto layout = [](std::string name, std::function<Frames(const std::string&)> frames,
                   std::string count) {
    return Row{std::move(name),
               [=] {
                 return Input{frames(str(valid_frame())), std::nullopt};
               },
               Expect{ErrorCode::MalformedFrame, "", count, Corr::kZero}};
  };
  run_all({
      layout(
          "a valid request split over two frames",
          [](const std::string& f) {
            return Frames{f.substr(0, f.size() / 2), f.substr(f.size() / 2)};
          },
          "got 2 frames"),
      layout(
          "a valid request followed by an extra frame",
          [](const std::string& f) {
            return Frames{f, "extra"};
          },
          "got 2 frames"),
      layout(
          "a valid request followed by an empty frame",
          [](const std::string& f) {
            return Frames{f, ""};
          },
          "got 2 frames"),
      layout(
          "an empty delimiter, a valid request and an extra frame",
          [](const std::string& f) {
            return Frames{"", f, "extra"};
          },
          "got 3 frames"),
      layout(
          "two empty delimiters before a valid request",
          [](const std::string& f) {
            return Frames{"", "", f};
          },
          "got 3 frames"),
      layout(
          "an empty delimiter and an empty body",
          [](const std::string&) {
            return Frames{"", ""};
          },
          "verifier failed"),
  });
}

TEST_CASE("Bad input: a truncated Request frame is refused MalformedFrame with corr 0") {
  std::vector<Row> rows;
  for (double share : {0.1, 0.25, 0.5, 0.75, 0.9, 0.99}) {
    rows.push_back(
        Row{"a valid publish cut to " + std::to_string(int(share * 100)) + " percent of its bytes",
            [share] {
              std::string f = str(valid_frame());
              return Input{{f.substr(0, std::size_t(double(f.size()) * share))}, std::nullopt};
            },
            Expect{ErrorCode::MalformedFrame, "", "verifier failed", Corr::kZero}});
  }
  for (std::size_t cut : {1, 3, 4, 7}) {
    rows.push_back(Row{"a valid publish without its last " + std::to_string(cut) + " bytes",
                       [cut] {
                         std::string f = str(valid_frame());
                         return Input{{f.substr(0, f.size() - cut)}, std::nullopt};
                       },
                       Expect{ErrorCode::MalformedFrame, "", "verifier failed", Corr::kZero}});
  }
  run_all(rows);
}

TEST_CASE("Bad input: offsets out of range and absurd lengths are refused, never followed") {
  auto frame_row = [](std::string name, std::function<void(Bytes&)> corrupt) {
    return Row{std::move(name),
               [=] {
                 Bytes f = valid_frame();
                 corrupt(f);
                 return Input{{str(f)}, std::nullopt};
               },
               Expect{ErrorCode::MalformedFrame, "", "verifier failed", Corr::kZero}};
  };
  auto event_row_raw = [](std::string name, std::function<void(Bytes&)> corrupt) {
    return bytes_row(
        std::move(name),
        [=] {
          Bytes ev = build(birth(), new_uuid_v7());
          corrupt(ev);
          return ev;
        },
        ErrorCode::MalformedEvent);
  };
  auto string_length = [](std::function<const flatbuffers::String*(const events::Event*)> pick,
                          std::uint32_t length) {
    return [=](Bytes& ev) { write_u32(ev, offset_of(ev, pick(event_in(ev))), length); };
  };
  auto child_name = [](const events::Event* e) { return e->payload_as_Birth()->child_name(); };
  auto region0 = [](const events::Event* e) { return e->regions()->Get(0); };
  run_all({
      frame_row("Request root offset past the end", [](Bytes& f) { write_u32(f, 0, 0x7ffffff0); }),
      frame_row("Request root offset not aligned", [](Bytes& f) { write_u32(f, 0, 5); }),
      frame_row("Request vtable offset out of range",
                [](Bytes& f) { write_u32(f, read_u32(f, 0), 0x7ffffff0); }),
      frame_row("Request vtable size absurd",
                [](Bytes& f) {
                  const std::size_t table = read_u32(f, 0);
                  const auto vtable = static_cast<std::size_t>(static_cast<std::int64_t>(table) -
                                                               std::int32_t(read_u32(f, table)));
                  f[vtable] = 0xfe;
                  f[vtable + 1] = 0xff;
                }),
      frame_row("Publish.event length of 2 GiB",
                [](Bytes& f) {
                  const auto* req = flatbuffers::GetRoot<protocol::Request>(f.data());
                  write_u32(f, offset_of(f, req->command_as_Publish()->event()), 0x7ffffff0);
                }),
      frame_row("Publish.event length one byte past the frame",
                [](Bytes& f) {
                  const auto* req = flatbuffers::GetRoot<protocol::Request>(f.data());
                  const auto at = offset_of(f, req->command_as_Publish()->event());
                  write_u32(f, at, std::uint32_t(f.size() - at - 4 + 1));
                }),
      event_row_raw("Event root offset past the end",
                    [](Bytes& ev) { write_u32(ev, 0, 0x7ffffff0); }),
      event_row_raw("Event vtable offset out of range",
                    [](Bytes& ev) { write_u32(ev, read_u32(ev, 0), 0x80000000); }),
      event_row_raw(
          "Event.regions vector length of 2 GiB",
          [](Bytes& ev) { write_u32(ev, offset_of(ev, event_in(ev)->regions()), 0x7ffffff0); }),
      event_row_raw("a region string length of 2 GiB", string_length(region0, 0x7ffffff0)),
      event_row_raw("a child_name string length of 4 GiB - 1",
                    string_length(child_name, 0xffffffff)),
      event_row_raw("a child_name without its terminating zero",
                    [](Bytes& ev) {
                      const auto* s = event_in(ev)->payload_as_Birth()->child_name();
                      const auto at = offset_of(ev, s) + 4 + s->size();
                      ev[at] = 'X';
                    }),
      event_row_raw("the payload offset pointing backwards at the Event table",
                    [](Bytes& ev) {
                      // Event.payload's uoffset lives in the table where the vtable
                      // says; make it point back at the table (offsets only go forward).
                      const std::size_t table = read_u32(ev, 0);
                      const auto vtable = static_cast<std::size_t>(
                          static_cast<std::int64_t>(table) - std::int32_t(read_u32(ev, table)));
                      std::uint16_t field_at;
                      std::memcpy(&field_at, ev.data() + vtable + events::Event::VT_PAYLOAD, 2);
                      REQUIRE(field_at != 0);
                      write_u32(ev, table + field_at, std::uint32_t(0) - field_at);
                    }),
  });
}

TEST_CASE("Bad input: deep nesting and huge tables") {
  const std::vector<std::string> pasar_baru{"1271011001"};
  auto nested = [pasar_baru](int depth) {
    return [=] {
      // A correction of a correction of ... of a birth, `depth` corrections deep.
      flatbuffers::FlatBufferBuilder fbb(1 << 16);
      Spec b = birth();
      flatbuffers::Offset<void> inner = payload(fbb, b);
      events::Payload type = events::Payload::Birth;
      const auto target = uuid(new_uuid_v7());
      for (int i = 1; i < depth; ++i) {
        inner =
            events::CreateCorrection(fbb, &target, fbb.CreateString("again"), false, type, inner)
                .Union();
        type = events::Payload::Correction;
      }
      auto c =
          events::CreateCorrection(fbb, &target, fbb.CreateString("nested"), false, type, inner);
      auto regs = fbb.CreateVectorOfStrings(pasar_baru);
      const auto u = uuid(new_uuid_v7());
      const TimeMs when = now_ms() - kHour;
      fbb.Finish(events::CreateEvent(fbb, &u, 1, when, when, 0, regs, events::Payload::Correction,
                                     c.Union()));
      return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    };
  };
  auto niks = [](std::size_t n) {
    // Distinct men's NIKs: born on the 1st to 28th of January 1960, serials 0001-9999.
    auto two = [](std::size_t v) {
      return std::string(1, char('0' + v / 10)) + char('0' + v % 10);
    };
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t serial = i % 9999 + 1;
      out.push_back("127101" + two(i / 9999 % 28 + 1) + "0160" + two(serial / 100) +
                    two(serial % 100));
    }
    return out;
  };
  run_all({
      bytes_row("a correction nested 200 deep", nested(200), ErrorCode::MalformedEvent),
      bytes_row("a correction nested 17 deep (past the verifier's depth of 16)", nested(17),
                ErrorCode::MalformedEvent),
      bytes_row("a correction of a correction", nested(2), ErrorCode::InvalidCorrection,
                "payload.corrected", "payload.corrected"),
      event_row(
          "a move of 1001 people", [&](Spec& s) { s.niks = niks(1001); }, move(),
          ErrorCode::InvalidValue, "payload.niks"),
      event_row(
          "a move of 30000 people in a 0.9 MB frame", [&](Spec& s) { s.niks = niks(30000); },
          move(), ErrorCode::InvalidValue, "payload.niks"),
      event_row(
          "40000 regions in a 0.8 MB frame", [](Spec& s) { s.regions.assign(40000, "1271011001"); },
          birth(), ErrorCode::InvalidRegions, "regions[1]"),
      event_row(
          "a child_name of 201 bytes", [](Spec& s) { s.child_name = std::string(201, 'a'); },
          birth(), ErrorCode::InvalidValue, "payload.child_name"),
      event_row(
          "a child_name of 200 bytes (the limit)",
          [](Spec& s) { s.child_name = std::string(200, 'a'); }, birth(), std::nullopt, ""),
      event_row(
          "a place_of_birth of 100000 bytes", [](Spec& s) { s.place = std::string(100000, 'p'); },
          birth(), ErrorCode::InvalidValue, "payload.place_of_birth"),
  });
}

TEST_CASE("Bad input: names that are not UTF-8 or hold control characters are refused") {
  std::vector<Row> rows;
  const std::vector<std::pair<std::string, std::string>> bad{
      {"an invalid continuation byte", "Siti \xC3\x28 Aminah"},
      {"an overlong encoding of a slash", "Siti \xC0\xAF"},
      {"a UTF-16 surrogate", "Siti \xED\xA0\x80"},
      {"a code point above U+10FFFF", "Siti \xF4\x90\x80\x80"},
      {"a sequence cut at the end", "Siti \xE2\x82"},
      {"a byte 0xFF", "Siti \xFF"},
      {"Latin-1 instead of UTF-8", "Jos\xE9"},
      {"a NUL byte", std::string("Siti\0Aminah", 11)},
      {"an ANSI escape", "Siti \x1B[31mAminah"},
      {"a C1 control (NEL)", "Siti \xC2\x85"},
      {"a line break", "Siti\nAminah"},
  };
  for (const auto& [what, name] : bad) {
    rows.push_back(event_row(
        "child_name with " + what, [n = name](Spec& s) { s.child_name = n; }, birth(),
        ErrorCode::InvalidValue, "payload.child_name"));
    rows.push_back(event_row(
        "a death's name with " + what, [n = name](Spec& s) { s.name = n; }, death(),
        ErrorCode::InvalidValue, "payload.name"));
  }
  rows.push_back(event_row(
      "place_of_birth not UTF-8", [](Spec& s) { s.place = "RS \xC3\x28"; }, birth(),
      ErrorCode::InvalidValue, "payload.place_of_birth"));
  rows.push_back(event_row(
      "valid UTF-8 beyond ASCII is a name like any other",
      [](Spec& s) { s.child_name = "Ni Luh Ayu Dewi \xC3\xA9\xE2\x80\x99"; }, birth(), std::nullopt,
      ""));
  run_all(rows);
}

TEST_CASE("Bad input: NIKs and KK numbers with letters or impossible dates are refused") {
  auto mother = [](std::string name, std::string nik, std::optional<ErrorCode> code) {
    return event_row(
        "mother_nik " + name, [=](Spec& s) { s.mother_nik = nik; }, birth(), code,
        code ? "payload.mother_nik" : "");
  };
  auto father = [](std::string name, std::string nik, std::optional<ErrorCode> code) {
    return event_row(
        "father_nik " + name, [=](Spec& s) { s.father_nik = nik; }, birth(), code,
        code ? "payload.father_nik" : "");
  };
  auto kk = [](std::string name, std::string number) {
    return event_row(
        "kk_number " + name, [=](Spec& s) { s.kk = number; }, birth(), ErrorCode::InvalidKk,
        "payload.kk_number");
  };
  const auto nik = ErrorCode::InvalidNik;
  run_all({
      mother("with a letter O for a zero", "12710152O3950001", nik),
      mother("with a space", "1271015203 50001", nik),
      mother("of 15 digits", "127101520395001", nik),
      mother("of 17 digits", "12710152039500011", nik),
      mother("with full-width digits",
             "\xEF\xBC\x91"
             "271015203950001",
             nik),
      mother("day 72 (32 + 40)", "1271017201950001", nik),
      mother("month 13", "1271015213950001", nik),
      mother("month 00", "1271015200950001", nik),
      mother("30 February (70)", "1271017002950001", nik),
      mother("29 February 1995 (69, not a leap year)", "1271016902950001", nik),
      mother("day 40 (neither a man's nor a woman's)", "1271014001950001", nik),
      mother("day 00", "1271010001950001", nik),
      mother("a man's (day 12)", "1271011203950001", nik),
      mother("serial 0000", "1271015203950000", nik),
      mother("province 99 (does not exist)", "9971015203950001", nik),
      mother("province 00", "0071015203950001", nik),
      mother("29 February 2000 (69, a leap year): valid", "1271016902000001", std::nullopt),
      mother("1 January (41): valid", "1271014101950001", std::nullopt),
      mother("31 December (71): valid", "1271017112950001", std::nullopt),
      father("day 32", "1271013201900002", nik),
      father("30 February", "1271013002900002", nik),
      father("a woman's (day 52)", "1271015201900002", nik),
      father("31 April", "1271013104900002", nik),
      father("with letters", "1271O11505900002", nik),
      father("31 December 1990: valid", "1271013112900002", std::nullopt),
      event_row(
          "a death's nik of 31 November", [](Spec& s) { s.nik = "1271013111500003"; }, death(), nik,
          "payload.nik"),
      event_row(
          "a death's nik with a letter", [](Spec& s) { s.nik = "127101150550000X"; }, death(), nik,
          "payload.nik"),
      event_row(
          "a move's second nik with a letter",
          [](Spec& s) {
            s.niks = {"1271010101800001", "12710101018A0001"};
          },
          move(), nik, "payload.niks[1]"),
      event_row(
          "a move's nik of day 32 month 13", [](Spec& s) { s.niks = {"1271013213800001"}; }, move(),
          nik, "payload.niks[0]"),
      kk("with a letter", "1271012002200O01"),
      kk("with a woman's day (60 = 20 + 40)", "1271016002200001"),
      kk("of 31 February", "1271013102200001"),
      kk("month 13", "1271012013200001"),
      kk("serial 0000", "1271012002200000"),
  });
}

TEST_CASE("Bad input: well-formed region codes that are not in the Kemendagri list") {
  auto both = [](std::string name, std::string code) {
    return event_row(
        name,
        [=](Spec& s) {
          s.village = code;
          s.regions = {code};
        },
        birth(), ErrorCode::UnknownRegion, "regions[0]");
  };
  run_all({
      both("a village number that Medan Kota does not have", "1271019999"),
      both("a province that does not exist", "9901011001"),
      both("all nines", "9999999999"),
      both("all zeros", "0000000000"),
      both("a district code (6 digits)", "127101"),
      both("a city code (4 digits)", "1271"),
      both("a village code with dots", "12.71.01.1001"),
      both("a village code with a trailing space", "1271011001 "),
      both("11 digits", "12710110011"),
      event_row(
          "regions right, village_code absent from the list",
          [](Spec& s) { s.village = "1271019999"; }, birth(), ErrorCode::UnknownRegion,
          "payload.village_code"),
      event_row(
          "a move to a village that does not exist",
          [](Spec& s) {
            s.destination = "1271029999";
            s.regions = {"1271011001", "1271029999"};
          },
          move(), ErrorCode::UnknownRegion, "regions[1]"),
  });
}

TEST_CASE("Bad input: dates in 2100 and other impossible times are refused InvalidDate") {
  const auto date = ErrorCode::InvalidDate;
  run_all({
      event_row(
          "occurred_at in 2100", [](Spec& s) { s.occurred = s.recorded = s.when = k2100; }, birth(),
          date, "occurred_at"),
      event_row(
          "recorded_at in 2100", [](Spec& s) { s.recorded = k2100; }, birth(), date, "recorded_at"),
      event_row(
          "born_at in 2100", [](Spec& s) { s.when = k2100; }, birth(), date, "payload.born_at"),
      event_row(
          "died_at in 2100", [](Spec& s) { s.when = k2100; }, death(), date, "payload.died_at"),
      event_row(
          "moved_at in 2100", [](Spec& s) { s.when = k2100; }, move(), date, "payload.moved_at"),
      event_row(
          "occurred_at one hour ahead (beyond the 5 minutes of skew)",
          [](Spec& s) { s.occurred = s.recorded = now_ms() + kHour; }, birth(), date,
          "occurred_at"),
      event_row(
          "occurred_at the largest time there is",
          [](Spec& s) { s.occurred = s.recorded = std::numeric_limits<TimeMs>::max(); }, birth(),
          date, "occurred_at"),
      event_row(
          "occurred_at the smallest time there is",
          [](Spec& s) { s.occurred = std::numeric_limits<TimeMs>::min(); }, birth(), date,
          "occurred_at"),
      event_row(
          "occurred_at in 1899", [](Spec& s) { s.occurred = -2208988800001; }, birth(), date,
          "occurred_at"),
      event_row(
          "recorded before it occurred", [](Spec& s) { s.recorded = s.occurred - 1; }, birth(),
          date, "recorded_at"),
      event_row(
          "a death before the birth in the NIK (1950)",
          [](Spec& s) {
            s.when = -631152000000; /* 1950-01-01 */
          },
          death(), date, "payload.died_at"),
  });
}

TEST_CASE("Bad input: kinds the broker does not know") {
  const EventId nobody = new_uuid_v7();
  auto unknown_kind = [](std::string name, std::uint8_t type) {
    return event_row(
        name, [=](Spec& s) { s.type_on_wire = type; }, birth(), ErrorCode::UnknownKind, "payload");
  };
  // A command type this build does not know: past the end of the union.
  auto unknown_command = [](std::string name, std::uint8_t type) {
    return Row{std::move(name),
               [=] {
                 return Input{
                     {str(request(kCorr, static_cast<protocol::Command>(type),
                                  [](auto& fbb) { return protocol::CreatePing(fbb).Union(); }))},
                     std::nullopt};
               },
               Expect{ErrorCode::UnknownCommand, "command", "unknown", Corr::kEchoed}};
  };
  // A known command type whose table is absent: the union value is missing, which the
  // FlatBuffers Verifier lets through (a null table verifies).
  auto without_table = [](protocol::Command type) {
    return Row{std::string("a ") + protocol::EnumNameCommand(type) + " without its table",
               [=] {
                 return Input{{str(request(kCorr, type))}, std::nullopt};
               },
               Expect{ErrorCode::MissingField, "command", "command", Corr::kEchoed}};
  };
  const auto next_command = static_cast<std::uint8_t>(protocol::Command::MAX) + 1;
  std::vector<Row> rows{
      unknown_kind("payload_type 5 (the next planned kind, Stillbirth)", 5),
      unknown_kind("payload_type 255", 255),
      bytes_row(
          "a correction whose corrected payload is of kind 9",
          [&] {
            return correction(new_uuid_v7(), nobody, static_cast<events::Payload>(9),
                              [](auto& fbb) { return payload(fbb, birth()); }, {"1271011001"});
          },
          ErrorCode::UnknownKind, "payload.corrected", "payload.corrected"),
      bytes_row(
          "payload_type NONE with a payload table",
          [] {
            // A Birth value under the type NONE.
            const Spec s = birth();
            flatbuffers::FlatBufferBuilder fbb;
            auto body = payload(fbb, s);
            auto regs = fbb.CreateVectorOfStrings(s.regions);
            const auto u = uuid(new_uuid_v7());
            fbb.Finish(events::CreateEvent(fbb, &u, 1, s.occurred, s.recorded, 0, regs,
                                           events::Payload::NONE, body));
            return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
          },
          ErrorCode::MalformedEvent, "payload"),
      bytes_row(
          "a Request where the Event should be",
          [] {
            return request(kCorr, protocol::Command::Ping,
                           [](auto& fbb) { return protocol::CreatePing(fbb).Union(); });
          },
          ErrorCode::MalformedEvent, "", "not a verifiable kolabus Event"),
      unknown_command("command type " + std::to_string(next_command) + " (the next one)",
                      next_command),
      unknown_command("command type 255", 255),
      Row{"a Publish whose event is empty",
          [] {
            return Input{{str(publish(kCorr, {}))}, std::nullopt};
          },
          Expect{ErrorCode::MissingField, "event", "event", Corr::kEchoed}},
  };
  for (auto type :
       {protocol::Command::Subscribe, protocol::Command::Unsubscribe, protocol::Command::Ack,
        protocol::Command::Nak, protocol::Command::Reject, protocol::Command::SeekConsumer,
        protocol::Command::DeleteConsumer, protocol::Command::ReadRange, protocol::Command::DlqList,
        protocol::Command::DlqRedrive, protocol::Command::DlqDrop}) {
    rows.push_back(without_table(type));
  }
  run_all(rows);
}
