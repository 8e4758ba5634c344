// The ward register adapter (adapters/ward.h): a consumer thread whose handler writes
// one register row per event.
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "register.h"
#include <adapters/consumer_loop.h>
#include <adapters/ward.h>
#include <client/consumer.h>
#include <schemas/json_codec.h>

namespace kolabus::adapters {
namespace {

using namespace std::chrono_literals;

// An SQLite failure (disk full, a lock held too long) is retried after this long.
constexpr std::uint32_t kRetryDelayMs = 2000;

class WardAdapter final : public Adapter {
 public:
  WardAdapter(ward::WardConfig config, const AgencyContext& ctx)
      : config_(std::move(config)), ctx_(ctx) {}
  ~WardAdapter() override { stop(); }

  std::string describe() const override {
    std::string regions;
    for (const auto& r : config_.regions) regions += (regions.empty() ? "" : ",") + r;
    return "ward " + config_.consumer + " -> " + config_.register_path + " (regions " + regions +
           ")";
  }

  Status start() override {
    if (loop_) return kolabus::unexpected(Errc::kInvalidArgument, "already started");
    auto codec = schemas::JsonCodec::create();
    if (!codec) return kolabus::unexpected(codec.error());
    codec_.emplace(std::move(*codec));

    auto reg = ward::Register::open(config_.register_path, ward::OpenMode::kReadWrite);
    if (!reg) return kolabus::unexpected(reg.error());
    register_ = std::move(*reg);

    auto opts = sink_consumer_options(ctx_, "ward " + config_.consumer, config_.consumer);
    if (!opts) {
      register_.reset();
      return kolabus::unexpected(opts.error());
    }
    client::ConsumerOptions& o = *opts;
    o.regions = config_.regions;
    o.start = config_.start;
    o.window = config_.window;
    auto consumer = client::Consumer::open(std::move(o));
    if (!consumer) {
      register_.reset();
      return kolabus::unexpected(consumer.error().code, "ward " + config_.consumer +
                                                            ": inbox: " + consumer.error().message);
    }
    consumer_ = std::move(*consumer);
    loop_.emplace("ward " + config_.consumer, *consumer_,
                  [this](const client::Received& r, storage::Inbox::Txn&) { return handle(r); });
    loop_->start();
    spdlog::info("started {}", describe());
    return {};
  }

  void stop() override {
    if (!loop_) return;
    loop_->stop();
    loop_.reset();
    consumer_->close();
    consumer_.reset();
    register_.reset();
    codec_.reset();
  }

 private:
  client::HandlerResult handle(const client::Received& r) {
    ward::Row row;
    row.event_id = r.id.to_string();
    row.sequence = r.sequence.value;
    row.received_at = r.received_at;
    row.source = std::string(r.source);
    bool foreign = false;
    ward::classify(*r.event_root, config_.regions, row, foreign);
    if (foreign) {
      spdlog::warn("ward {}: seq {} ({}) names no village inside the register's regions",
                   config_.consumer, r.sequence.value, row.kind);
    }
    if (auto j = codec_->to_json(r.event)) row.json = std::move(*j);

    auto added = register_->insert(row);
    if (!added) {
      spdlog::error("ward {}: seq {}: {}", config_.consumer, r.sequence.value,
                    added.error().message);
      return {client::Verdict::kNak, {}, kRetryDelayMs};
    }
    if (!*added) {
      // Written before a crash, or by a replay: the inbox had lost the mark.
      spdlog::debug("ward {}: seq {} already in the register", config_.consumer, r.sequence.value);
    }
    return {};
  }

  const ward::WardConfig config_;
  const AgencyContext ctx_;
  std::unique_ptr<client::Consumer> consumer_;
  std::unique_ptr<ward::Register> register_;  // used on the consumer thread only
  std::optional<schemas::JsonCodec> codec_;   // used on the consumer thread only
  std::optional<ConsumerLoop> loop_;          // runs between start() and stop()
};

}  // namespace

Result<std::unique_ptr<Adapter>> make_ward(const toml::table& table, const AgencyContext& context) {
  auto config = ward::parse_config(table, context);
  if (!config) return kolabus::unexpected(config.error());
  return std::unique_ptr<Adapter>(std::make_unique<WardAdapter>(std::move(*config), context));
}

}  // namespace kolabus::adapters
