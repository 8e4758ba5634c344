// SpoolAdapter: the drop directory, the rejects and done directories, the outbox.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <adapters/spool.h>

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

// Writes `content` to `path` completely and durably: a temporary file, fsync, rename,
// fsync of the directory. A reader never sees half a file.
Status write_file_atomic(const fs::path& path, const std::string& content) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return kolabus::unexpected(Errc::kIoError,
                               "create " + tmp.string() + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return kolabus::unexpected(Errc::kIoError,
                                 "write " + tmp.string() + ": " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return kolabus::unexpected(Errc::kIoError, "fsync " + tmp.string() + ": " + std::strerror(err));
  }
  ::close(fd);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    return kolabus::unexpected(Errc::kIoError, "rename " + tmp.string() + ": " + ec.message());
  return fsync_path(path.parent_path(), O_RDONLY | O_DIRECTORY);
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
  for (const fs::path& p : {fs::path(dir_), fs::path(dir_) / "rejects", fs::path(dir_) / "done"}) {
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec)
      return kolabus::unexpected(Errc::kIoError,
                                 "spool: cannot create " + p.string() + ": " + ec.message());
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
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    (void)poll_once();  // errors are logged (once) inside
    lock.lock();
    cv_.wait_for(lock, poll, [this] { return stopping_; });
  }
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
    std::error_code ec;
    fs::create_directories(rejects.parent_path(), ec);
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
    fs::create_directories(fs::path(dir_) / "done", ec);
    fs::rename(path, fs::path(dir_) / "done" / archive, ec);
    if (ec) {
      // Its events are queued: processing it again queues the same ids (harmless).
      log_once(name,
               name + ": queued, but cannot move it to done/: " + ec.message() + " (retrying)");
      return FileOutcome::kStopPoll;
    }
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
