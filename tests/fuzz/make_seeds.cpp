// make_seeds: writes the seed corpora of the fuzz targets, tests/fuzz/corpus/<target>/,
// from real material: events of tools::EventGenerator (at the targets' fixed kNow),
// corrections of the events fuzz_request's brokers hold, one request of every command,
// the CSV and JSON Lines examples of docs/SPOOL.md, examples/medan/siak-births.csv, and
// examples/broker.toml and examples/agencies.toml (with Z85 keys for its key files,
// which the fuzzer cannot read).
//
// Usage: make_seeds <source dir>   (rewrites every file of the four corpus folders)
// Deterministic: the same sources give the same bytes, so a rerun shows as no change.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <flatbuffers/flatbuffers.h>
#include <nlohmann/json.hpp>

#include "fuzz_targets.h"
#include <adapters/spool.h>
#include <schemas/events_generated.h>
#include <schemas/json_codec.h>
#include <schemas/protocol_generated.h>
#include <schemas/regions.h>
#include <tools/event_generator.h>

namespace fs = std::filesystem;
using namespace kolabus;
using Bytes = std::vector<std::uint8_t>;

namespace {

fs::path g_out;

void write(const std::string& target, const std::string& name, const std::string& bytes) {
  std::ofstream out(g_out / target / name, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + (g_out / target / name).string());
}
void write(const std::string& target, const std::string& name, const Bytes& bytes) {
  write(target, name, std::string(bytes.begin(), bytes.end()));
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Bytes finish(flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

events::EventT unpack(const Bytes& event) {
  events::EventT t;
  flatbuffers::GetRoot<events::Event>(event.data())->UnPackTo(&t);
  return t;
}

Bytes pack(const events::EventT& t, bool identifier = true) {
  flatbuffers::FlatBufferBuilder fbb;
  auto root = events::Event::Pack(fbb, &t);
  if (identifier) {
    fbb.Finish(root, events::EventIdentifier());
  } else {
    fbb.Finish(root);
  }
  return finish(fbb);
}

events::Uuid uuid_of(std::uint8_t tag) {
  std::array<std::uint8_t, 16> b{};
  for (std::size_t i = 0; i < 16; ++i) b[i] = static_cast<std::uint8_t>(0x11 * (i % 15) + tag);
  b[6] = 0x70 | (b[6] & 0x0f);  // version 7
  b[8] = 0x80 | (b[8] & 0x3f);  // RFC variant
  return events::Uuid(flatbuffers::span<const std::uint8_t, 16>(b.data(), 16));
}

// A correction (a fresh id `tag`) of `target`: the corrected payload, or a void.
Bytes correction_of(const Bytes& target, std::uint8_t tag, bool void_it) {
  const auto t = unpack(target);
  auto c = std::make_unique<events::CorrectionT>();
  c->target_id = std::make_unique<events::Uuid>(*t.id);
  c->reason = void_it ? "recorded twice by mistake" : "name misspelt on the form";
  c->void_ = void_it;
  if (!void_it) {
    c->corrected = t.payload;
    if (auto* birth = c->corrected.AsBirth()) birth->child_name += " BR";
  }
  events::EventT e;
  e.id = std::make_unique<events::Uuid>(uuid_of(tag));
  e.occurred_at = t.occurred_at;
  e.recorded_at = kolabus::fuzz::kNow - 3'600'000;
  e.regions = t.regions;
  e.payload.Set(std::move(*c));
  return pack(e);
}

// One Request frame.
Bytes request(
    std::uint64_t corr, protocol::Command type,
    const std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder&)>& body) {
  flatbuffers::FlatBufferBuilder fbb;
  auto cmd = body(fbb);
  fbb.Finish(protocol::CreateRequest(fbb, 1, corr, type, cmd), protocol::RequestIdentifier());
  return finish(fbb);
}

Bytes publish(std::uint64_t corr, const Bytes& event) {
  return request(corr, protocol::Command::Publish, [&](flatbuffers::FlatBufferBuilder& fbb) {
    fbb.ForceVectorAlignment(event.size(), 1, 8);
    auto vec = fbb.CreateVector(event);
    return protocol::CreatePublish(fbb, vec).Union();
  });
}

void clear(const std::string& target) {
  fs::create_directories(g_out / target);
  for (const auto& e : fs::directory_iterator(g_out / target)) fs::remove(e.path());
}

void event_seeds(tools::EventGenerator& gen) {
  const std::string t = "fuzz_event";
  clear(t);
  const auto& held = kolabus::fuzz::preloaded_events();
  write(t, "birth.fb", gen.make(tools::GenKind::kBirth));
  write(t, "death.fb", gen.make(tools::GenKind::kDeath));
  for (int i = 0; i < 3; ++i)
    write(t, "move-" + std::to_string(i) + ".fb", gen.make(tools::GenKind::kMove));
  write(t, "birth-no-identifier.fb", pack(unpack(gen.make(tools::GenKind::kBirth)), false));
  write(t, "correction.fb", correction_of(held[0], 1, false));
  write(t, "void.fb", correction_of(held[1], 2, true));

  auto bad = unpack(gen.make(tools::GenKind::kBirth));
  bad.payload.AsBirth()->mother_nik[6] = 'X';
  write(t, "invalid-nik.fb", pack(bad));

  // A kind this build does not know (the union's next member) with a Birth table.
  flatbuffers::FlatBufferBuilder fbb;
  const auto ok = unpack(gen.make(tools::GenKind::kBirth));
  auto birth = events::Birth::Pack(fbb, ok.payload.AsBirth());
  auto regions = fbb.CreateVectorOfStrings(ok.regions);
  const auto id = uuid_of(3);
  fbb.Finish(events::CreateEvent(fbb, &id, 1, ok.occurred_at, ok.recorded_at, 0, regions,
                                 static_cast<events::Payload>(5), birth.Union()),
             events::EventIdentifier());
  write(t, "unknown-kind.fb", finish(fbb));
}

void request_seeds(tools::EventGenerator& gen) {
  const std::string t = "fuzz_request";
  clear(t);
  const auto& held = kolabus::fuzz::preloaded_events();
  using protocol::Command;
  using FBB = flatbuffers::FlatBufferBuilder;
  write(t, "publish-birth.fb", publish(1, gen.make(tools::GenKind::kBirth)));
  write(t, "publish-death.fb", publish(2, gen.make(tools::GenKind::kDeath)));
  write(t, "publish-move.fb", publish(3, gen.make(tools::GenKind::kMove)));
  write(t, "publish-correction.fb", publish(4, correction_of(held[0], 4, false)));
  write(t, "publish-void.fb", publish(5, correction_of(held[1], 5, true)));
  write(t, "publish-duplicate.fb", publish(6, held[2]));
  auto bad = unpack(gen.make(tools::GenKind::kDeath));
  bad.payload.AsDeath()->nik = "127101320195000A";
  write(t, "publish-invalid-nik.fb", publish(7, pack(bad)));

  write(t, "ping.fb",
        request(10, Command::Ping, [](FBB& f) { return protocol::CreatePing(f).Union(); }));
  write(t, "subscribe-new.fb", request(11, Command::Subscribe, [](FBB& f) {
          std::vector<std::uint8_t> kinds{1, 2};
          std::vector<flatbuffers::Offset<flatbuffers::String>> regions{f.CreateString("1271")};
          auto filter = protocol::CreateFilter(f, f.CreateVector(kinds), f.CreateVector(regions));
          auto cfg = protocol::CreateConsumerConfigDirect(
              f, "births-medan", filter, protocol::StartPolicy::AtSequence, 2, 0, 1000, 3);
          return protocol::CreateSubscribe(f, cfg, 10).Union();
        }));
  write(t, "subscribe-seed.fb", request(12, Command::Subscribe, [](FBB& f) {
          auto cfg = protocol::CreateConsumerConfigDirect(f, "seed");
          return protocol::CreateSubscribe(f, cfg, 50).Union();
        }));
  write(t, "unsubscribe.fb", request(13, Command::Unsubscribe, [](FBB& f) {
          return protocol::CreateUnsubscribeDirect(f, "seed").Union();
        }));
  write(t, "ack.fb", request(14, Command::Ack, [](FBB& f) {
          std::vector<std::uint64_t> seqs{1, 3};
          return protocol::CreateAckDirect(f, "seed", &seqs).Union();
        }));
  write(t, "nak.fb", request(15, Command::Nak, [](FBB& f) {
          return protocol::CreateNakDirect(f, "seed", 1, 250).Union();
        }));
  write(t, "reject.fb", request(16, Command::Reject, [](FBB& f) {
          return protocol::CreateRejectDirect(f, "seed", 3, "cannot be processed").Union();
        }));
  write(t, "list-consumers.fb", request(17, Command::ListConsumers, [](FBB& f) {
          return protocol::CreateListConsumers(f).Union();
        }));
  write(t, "seek-sequence.fb", request(18, Command::SeekConsumer, [](FBB& f) {
          return protocol::CreateSeekConsumerDirect(f, "seed", protocol::StartPolicy::AtSequence, 2)
              .Union();
        }));
  write(t, "seek-time.fb", request(19, Command::SeekConsumer, [](FBB& f) {
          return protocol::CreateSeekConsumerDirect(f, "seed", protocol::StartPolicy::AtTime, 0,
                                                    kolabus::fuzz::kNow - 86'400'000)
              .Union();
        }));
  write(t, "delete-consumer.fb", request(20, Command::DeleteConsumer, [](FBB& f) {
          return protocol::CreateDeleteConsumerDirect(f, "seed").Union();
        }));
  write(t, "read-range.fb", request(21, Command::ReadRange, [](FBB& f) {
          std::vector<flatbuffers::Offset<flatbuffers::String>> regions{f.CreateString("127101")};
          auto filter = protocol::CreateFilter(f, 0, f.CreateVector(regions));
          return protocol::CreateReadRange(f, filter, 1, 0, 0, 10).Union();
        }));
  write(
      t, "read-range-time.fb", request(22, Command::ReadRange, [](FBB& f) {
        return protocol::CreateReadRange(f, 0, 0, kolabus::fuzz::kNow - 86'400'000, 0, 100).Union();
      }));
  write(t, "dlq-list.fb", request(23, Command::DlqList, [](FBB& f) {
          return protocol::CreateDlqListDirect(f, "seed", 0, 10).Union();
        }));
  write(t, "dlq-redrive.fb", request(24, Command::DlqRedrive, [](FBB& f) {
          std::vector<std::uint64_t> seqs{2};
          return protocol::CreateDlqRedriveDirect(f, "seed", &seqs).Union();
        }));
  write(t, "dlq-drop.fb", request(25, Command::DlqDrop, [](FBB& f) {
          return protocol::CreateDlqDropDirect(f, "seed").Union();
        }));
}

// The fenced blocks of `lang` in a Markdown text.
std::vector<std::string> fenced(const std::string& md, const std::string& lang) {
  std::vector<std::string> out;
  const std::string open = "```" + lang + "\n";
  for (auto p = md.find(open); p != std::string::npos; p = md.find(open, p)) {
    p += open.size();
    const auto end = md.find("```", p);
    if (end == std::string::npos) break;
    out.push_back(md.substr(p, end - p));
    p = end + 3;
  }
  return out;
}

void json_seeds(const fs::path& src, tools::EventGenerator& gen) {
  const std::string t = "fuzz_json";
  clear(t);
  const std::string md = read_text(src / "docs" / "SPOOL.md");
  const auto csv = fenced(md, "csv");
  for (std::size_t i = 0; i < csv.size(); ++i) {
    write(t, "spool-md-" + std::to_string(i) + ".csv", csv[i]);
  }
  const auto jsonl = fenced(md, "jsonl");
  for (std::size_t i = 0; i < jsonl.size(); ++i) {
    write(t, "spool-md-" + std::to_string(i) + ".jsonl", jsonl[i]);
  }
  write(t, "siak-births.csv", read_text(src / "examples" / "medan" / "siak-births.csv"));

  // The births example of SPOOL.md as mapped JSON Lines (its columns as keys).
  if (!csv.empty()) {
    const auto records = adapters::parse_csv(csv[0], ',');
    std::string lines;
    for (std::size_t r = 1; r < records.size(); ++r) {
      nlohmann::ordered_json j = nlohmann::ordered_json::object();
      for (std::size_t k = 0; k < records[0].fields.size() && k < records[r].fields.size(); ++k) {
        j[records[0].fields[k]] = records[r].fields[k];
      }
      lines += j.dump() + "\n";
    }
    write(t, "births-mapped.jsonl", lines);
  }

  // kolabus JSON Lines as `kolabus gen` writes them, one with and one without ids.
  auto codec = schemas::JsonCodec::create();
  if (!codec) throw std::runtime_error(codec.error().to_string());
  std::string with_ids, without;
  for (int i = 0; i < 4; ++i) {
    auto line = codec->to_json(gen.next());
    if (!line) throw std::runtime_error(line.error().to_string());
    with_ids += *line + "\n";
    auto j = nlohmann::ordered_json::parse(*line);
    j.erase("id");
    j.erase("recorded_at");
    without += j.dump() + "\n";
  }
  write(t, "events.jsonl", with_ids);
  write(t, "events-without-ids.jsonl", without);
  auto corr = codec->to_json(correction_of(kolabus::fuzz::preloaded_events()[0], 6, false));
  if (!corr) throw std::runtime_error(corr.error().to_string());
  write(t, "correction.json", *corr);
}

void config_seeds(const fs::path& src) {
  const std::string t = "fuzz_config";
  clear(t);
  const std::string broker = read_text(src / "examples" / "broker.toml");
  write(t, "broker.toml", broker);
  write(t, "broker-dev.toml",
        std::regex_replace(broker, std::regex("mode = \"curve\""), "mode = \"dev\""));
  // Key files become literal Z85 keys, one per agency.
  std::string agencies = read_text(src / "examples" / "agencies.toml");
  const std::regex key_file("public_key = \"keys/[^\"]*\"");
  std::string out;
  int n = 0;
  auto it = std::sregex_iterator(agencies.begin(), agencies.end(), key_file);
  std::size_t last = 0;
  for (; it != std::sregex_iterator(); ++it) {
    out += agencies.substr(last, static_cast<std::size_t>(it->position()) - last);
    const std::string alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    out +=
        "public_key = \"" + std::string(39, '0') + alphabet[static_cast<std::size_t>(n++)] + "\"";
    last = static_cast<std::size_t>(it->position() + it->length());
  }
  out += agencies.substr(last);
  write(t, "agencies.toml", out);
  write(t, "agencies-one.toml",
        "[[agency]]\nname = \"dev\"\npublic_key = \"" + std::string(40, '0') +
            "\"\noperate = true\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <kolabus source dir>\n");
    return 2;
  }
  const fs::path src(argv[1]);
  g_out = src / "tests" / "fuzz" / "corpus";
  try {
    tools::EventGenerator gen(schemas::RegionTable::embedded(), {11, "1271", kolabus::fuzz::kNow});
    event_seeds(gen);
    request_seeds(gen);
    json_seeds(src, gen);
    config_seeds(src);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  std::printf("seeds written under %s\n", g_out.string().c_str());
  return 0;
}
