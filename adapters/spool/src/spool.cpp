// SpoolAdapter: the drop directory, the rejects and done directories, the outbox.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <tuple>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <adapters/spool.h>
#include <common/private_files.h>

namespace kolabus::adapters {

namespace fs = std::filesystem;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// A file the adapter takes: not hidden, not being written (writers write *.tmp or
// *.part and rename into place), of the configured format.
enum class Candidate { kTake, kIgnore, kOtherFormat };

Candidate classify(const std::string& name, SpoolFormat format) {
  if (name.empty() || name[0] == '.' || ends_with(name, ".tmp") || ends_with(name, ".part")) {
    return Candidate::kIgnore;
  }
  const bool csv = ends_with(name, ".csv");
  const bool jsonl = ends_with(name, ".jsonl") || ends_with(name, ".json");
  if (!csv && !jsonl) return Candidate::kIgnore;
  if ((format == SpoolFormat::kCsv) == csv) return Candidate::kTake;
  return Candidate::kOtherFormat;
}

Status fsync_path(const fs::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0)
    return kolabus::unexpected(Errc::kIoError, "open " + p.string() + ": " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    return kolabus::unexpected(Errc::kIoError, "fsync " + p.string() + ": " + std::strerror(err));
  return {};
}

// Writes `content` to `path` completely and durably, mode 0600: a temporary file,
// fsync, rename, fsync of the directory. A reader never sees half a file.
Status write_file_atomic(const fs::path& path, const std::string& content) {
  if (auto st = write_file_atomically(path.string(), content, kPrivateFileMode, true); !st) {
    return st;
  }
  return sync_dir(path.parent_path().string());
}

// Makes dir/rejects or dir/done (0700), narrowing one an older release left open.
Status make_archive_dir(const fs::path& p) {
  auto made = make_private_dir(p.string());
  if (!made) return kolabus::unexpected(made.error().code, "spool: " + made.error().message);
  if (made->widened)
    spdlog::warn("spool: {}", narrowed_text("directory", p.string(), *made->widened));
  return {};
}

// Removes the regular files of `dir` last modified before `cutoff`; how many.
std::size_t remove_older(const fs::path& dir, fs::file_time_type cutoff, std::error_code& ec) {
  std::size_t removed = 0;
  fs::directory_iterator it(dir, ec);
  if (ec) return 0;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return removed;
    std::error_code file_ec;
    if (!it->is_regular_file(file_ec)) continue;
    const auto when = it->last_write_time(file_ec);
    if (file_ec || when >= cutoff) continue;
    if (fs::remove(it->path(), file_ec)) {
      ++removed;
    } else if (file_ec) {
      spdlog::warn("spool: cannot remove an expired file of {}: {} (retried at the next cleanup)",
                   dir.string(), file_ec.message());
    }
  }
  return removed;
}

std::string rejects_text(const std::vector<SpoolReject>& rejects) {
  std::string out;
  for (const auto& r : rejects) {
    nlohmann::ordered_json j;
    j["line"] = r.line;
    j["reason"] = r.reason;
    j["field"] = r.field;
    j["code"] = r.code;
    j["record"] = r.record;
    // A file that is not UTF-8 still gets its lines recorded (bad bytes as U+FFFD).
    out += j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    out += '\n';
  }
  return out;
}

}  // namespace

SpoolAdapter::SpoolAdapter(SpoolConverter converter, client::Publisher* publisher)
    : converter_(std::move(converter)), publisher_(publisher), dir_(converter_.settings().dir) {}

SpoolAdapter::~SpoolAdapter() { stop(); }

Result<std::unique_ptr<SpoolAdapter>> SpoolAdapter::create(const toml::table& table,
                                                           const AgencyContext& ctx) {
  if (ctx.publisher == nullptr) {
    return kolabus::unexpected(Errc::kInvalidArgument,
                               "[[spool]]: the agency has no publisher (a source needs one)");
  }
  auto converter = SpoolConverter::create(table);
  if (!converter) return kolabus::unexpected(converter.error());
  return std::unique_ptr<SpoolAdapter>(new SpoolAdapter(std::move(*converter), ctx.publisher));
}

std::string SpoolAdapter::describe() const {
  const auto& s = converter_.settings();
  std::string what;
  if (s.kind) {
    what = std::string(s.format == SpoolFormat::kCsv ? "csv" : "jsonl") + ", " +
           events::EnumNamePayload(*s.kind);
  } else {
    what = "jsonl, kolabus events";
  }
  return "spool " + dir_ + " (" + what + ")";
}

Status SpoolAdapter::start() {
  if (thread_.joinable())
    return kolabus::unexpected(Errc::kInvalidArgument, "spool: already started");
  // The drop directory: 0700 when made here; one that exists is the exporter's
  // interface, left as the operator set it up.
  if (auto made = make_private_dir(dir_, /*narrow=*/false); !made) {
    return kolabus::unexpected(made.error().code, "spool: " + made.error().message);
  }
  for (const char* sub : {"rejects", "done"}) {
    if (auto st = make_archive_dir(fs::path(dir_) / sub); !st) return st;
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void SpoolAdapter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SpoolAdapter::run() {
  const auto poll = converter_.settings().poll;
  std::optional<std::chrono::steady_clock::time_point> last_cleanup;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    const auto now = std::chrono::steady_clock::now();
    if (!last_cleanup || now - *last_cleanup >= kCleanupEvery) {
      last_cleanup = now;
      if (auto c = clean_archives(std::chrono::system_clock::now()); !c) {
        spdlog::warn("{} (retried in an hour)", c.error().message);
      }
    }
    (void)poll_once();  // errors are logged (once) inside
    lock.lock();
    cv_.wait_for(lock, poll, [this] { return stopping_; });
  }
}

Result<SpoolCleanup> SpoolAdapter::clean_archives(std::chrono::system_clock::time_point now) {
  const auto& s = converter_.settings();
  // File times are compared on the file clock: `now` converted once.
  const auto file_now =
      fs::file_time_type::clock::now() + std::chrono::duration_cast<fs::file_time_type::duration>(
                                             now - std::chrono::system_clock::now());
  SpoolCleanup out;
  for (const auto& [sub, days, count] : {std::tuple<const char*, std::uint32_t, std::size_t*>{
                                             "done", s.done_retention_days, &out.done},
                                         {"rejects", s.rejects_retention_days, &out.rejects}}) {
    const fs::path dir = fs::path(dir_) / sub;
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;
    *count = remove_older(dir, file_now - std::chrono::hours(24) * days, ec);
    if (*count > 0) {
      spdlog::info("spool: removed {} file{} older than {} days from {}", *count,
                   *count == 1 ? "" : "s", days, dir.string());
    } else {
      spdlog::debug("spool: nothing older than {} days in {}", days, dir.string());
    }
    if (ec) {
      return kolabus::unexpected(Errc::kIoError,
                                 "spool: cannot clean " + dir.string() + ": " + ec.message());
    }
  }
  return out;
}

SpoolStats SpoolAdapter::stats() const {
  std::lock_guard lock(stats_mu_);
  return stats_;
}

void SpoolAdapter::log_once(const std::string& name, const std::string& message) {
  if (failing_.insert(name).second) spdlog::error("spool: {}", message);
}

Status SpoolAdapter::poll_once() {
  std::error_code ec;
  std::vector<std::string> names;
  fs::directory_iterator it(dir_, ec);
  if (ec) {
    log_once("", "cannot read " + dir_ + ": " + ec.message() + " (retrying)");
    return kolabus::unexpected(Errc::kIoError, "spool: cannot read " + dir_ + ": " + ec.message());
  }
  failing_.erase("");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    std::string name = it->path().filename().string();
    switch (classify(name, converter_.settings().format)) {
      case Candidate::kTake:
        names.push_back(std::move(name));
        break;
      case Candidate::kOtherFormat:
        if (failing_.insert(name).second) {
          spdlog::warn("spool: {}/{} left alone: this spool reads {} files", dir_, name,
                       converter_.settings().format == SpoolFormat::kCsv ? ".csv" : ".jsonl/.json");
        }
        break;
      case Candidate::kIgnore:
        break;
    }
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    if (process_file(name) == FileOutcome::kStopPoll) {
      return kolabus::unexpected(Errc::kIoError, "spool: " + name + " could not be queued");
    }
  }
  return {};
}

SpoolAdapter::FileOutcome SpoolAdapter::process_file(const std::string& name) {
  const fs::path path = fs::path(dir_) / name;
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::error_code ec;
      if (fs::exists(path, ec)) log_once(name, "cannot open " + path.string() + " (retrying)");
      return FileOutcome::kRetryLater;
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) {
      log_once(name, "cannot read " + path.string() + " (retrying)");
      return FileOutcome::kRetryLater;
    }
    text = std::move(buf).str();
  }

  // A name already in done/ (a new export with a reused name) gets a numbered
  // archive name, used for its rejects too. A crash before the move leaves done/
  // as it was, so the retry picks the same name.
  std::string archive = name;
  for (int n = 1;; ++n) {
    std::error_code ec;
    if (!fs::exists(fs::path(dir_) / "done" / archive, ec)) break;
    archive = name + "." + std::to_string(n);
  }

  const TimeMs now = SystemClock().now_ms();
  SpoolFileResult result = converter_.convert(text, now);

  // 1. The rejects, completely, before anything is queued.
  const fs::path rejects = fs::path(dir_) / "rejects" / (archive + ".rejects.jsonl");
  if (!result.rejects.empty()) {
    (void)make_private_dir(rejects.parent_path().string(), /*narrow=*/false);
    if (auto st = write_file_atomic(rejects, rejects_text(result.rejects)); !st) {
      log_once(name, name + ": cannot write its rejects: " + st.error().message + " (retrying)");
      return FileOutcome::kStopPoll;
    }
  } else {
    std::error_code ec;
    fs::remove(rejects, ec);  // from an earlier version of this file, if any
  }

  // 2. One durable batch for the whole file.
  if (!result.events.empty()) {
    std::vector<std::span<const std::uint8_t>> batch;
    batch.reserve(result.events.size());
    for (const auto& e : result.events) batch.emplace_back(e.event.bytes);
    auto r = publisher_->publish_batch(batch);
    if (!r) {
      log_once(name, name + ": cannot queue " + std::to_string(batch.size()) +
                         " events in the outbox: " + r.error().to_string() +
                         " (the file stays; retrying every poll)");
      return FileOutcome::kStopPoll;
    }
  }

  // 3. Only now is the file done.
  {
    std::error_code ec;
    (void)make_private_dir((fs::path(dir_) / "done").string(), /*narrow=*/false);
    const fs::path archived = fs::path(dir_) / "done" / archive;
    fs::rename(path, archived, ec);
    if (ec) {
      // Its events are queued: processing it again queues the same ids (harmless).
      log_once(name,
               name + ": queued, but cannot move it to done/: " + ec.message() + " (retrying)");
      return FileOutcome::kStopPoll;
    }
    // Owner-only like everything the adapter keeps, and dated now: its retention counts
    // from the day it was archived. Both fail on a file of another user (the exporter's),
    // which done/ (0700) hides all the same; it then ages from the export's own time.
    (void)narrow_file(archived.string());
    (void)::utimensat(AT_FDCWD, archived.c_str(), nullptr, 0);
    (void)fsync_path(fs::path(dir_) / "done", O_RDONLY | O_DIRECTORY);
    (void)fsync_path(fs::path(dir_), O_RDONLY | O_DIRECTORY);
  }
  failing_.erase(name);

  {
    std::lock_guard lock(stats_mu_);
    ++stats_.files;
    stats_.lines += result.lines;
    stats_.queued += result.events.size();
    stats_.rejected += result.rejects.size();
    stats_.skipped_empty += result.skipped_empty;
  }
  std::string summary = "spool: " + name + ": " + std::to_string(result.lines) + " lines, " +
                        std::to_string(result.events.size()) + " queued, " +
                        std::to_string(result.rejects.size()) + " rejected";
  if (result.skipped_empty > 0) summary += ", " + std::to_string(result.skipped_empty) + " empty";
  if (archive != name) summary += " (kept as done/" + archive + ")";
  if (result.rejects.empty()) {
    spdlog::info("{}", summary);
  } else {
    spdlog::warn("{} (see {})", summary, rejects.string());
  }
  return FileOutcome::kDone;
}

Result<std::unique_ptr<Adapter>> make_spool(const toml::table& table, const AgencyContext& ctx) {
  auto a = SpoolAdapter::create(table, ctx);
  if (!a) return kolabus::unexpected(a.error());
  return std::unique_ptr<Adapter>(std::move(*a));
}

}  // namespace kolabus::adapters
