#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include <broker/config.h>

namespace kolabus::broker {

namespace {

constexpr std::int64_t kMaxSkewSeconds = 24 * 3600;
constexpr TimeMs kMaxClientTimeoutMs = 24 * 3600 * 1000;

Unexpected<Error> bad(const std::string& path, const std::string& what) {
  return unexpected(Errc::kInvalidArgument, path + ": " + what);
}

// Refuses keys the broker does not know, naming them.
Status check_keys(const toml::table& t, const std::string& section,
                  const std::set<std::string>& known, const std::string& path) {
  for (const auto& [key, value] : t) {
    if (!known.contains(std::string(key.str()))) {
      return bad(path, "unknown key '" + (section.empty() ? "" : section + ".") +
                           std::string(key.str()) + "'");
    }
  }
  return {};
}

template <typename T>
Status read_key(const toml::table& t, const char* section, const char* key, T& out,
                const std::string& path) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return {};
  if constexpr (std::is_same_v<T, std::string>) {
    if (auto v = node->value<std::string>()) {
      out = *v;
      return {};
    }
    return bad(path, std::string(section) + "." + key + " must be a string");
  } else {
    // value_exact: an integer only. value<int64_t>() would also convert a float, and
    // one out of range (8e76) is undefined behaviour inside toml++.
    if (auto v = node->value_exact<std::int64_t>(); v && *v > 0) {
      out = static_cast<T>(*v);
      return {};
    }
    return bad(path, std::string(section) + "." + key + " must be a positive integer");
  }
}

}  // namespace

Result<Config> parse_config(std::string_view toml_text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(toml_text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << "line " << e.source().begin.line << ": " << e.description();
    return bad(path, msg.str());
  }
  Config c;
  if (auto st = check_keys(root, "", {"broker", "regions", "log", "security"}, path); !st) {
    return unexpected(st.error());
  }
  auto section = [&](const char* name) -> const toml::table* {
    return root.get_as<toml::table>(name);
  };
  for (const char* name : {"broker", "regions", "log", "security"}) {
    if (root.get(name) != nullptr && section(name) == nullptr) {
      return bad(path, std::string("[") + name + "] must be a table");
    }
  }
  if (const auto* b = section("broker")) {
    if (auto st = check_keys(*b, "broker",
                             {"endpoint", "data_dir", "max_message_bytes", "max_batch_messages",
                              "max_batch_bytes", "max_clock_skew_seconds", "dev_agency",
                              "client_timeout_ms", "disk_reserve_bytes", "max_outgoing_bytes"},
                             path);
        !st) {
      return unexpected(st.error());
    }
    std::int64_t skew_s = c.max_clock_skew_ms / 1000;
    for (Status st :
         {read_key(*b, "broker", "endpoint", c.server.endpoint, path),
          read_key(*b, "broker", "data_dir", c.data_dir, path),
          read_key(*b, "broker", "max_message_bytes", c.server.max_message_bytes, path),
          read_key(*b, "broker", "max_batch_messages", c.server.max_batch_messages, path),
          read_key(*b, "broker", "max_batch_bytes", c.server.max_batch_bytes, path),
          read_key(*b, "broker", "max_clock_skew_seconds", skew_s, path),
          read_key(*b, "broker", "dev_agency", c.server.dev_agency, path),
          read_key(*b, "broker", "client_timeout_ms", c.client_timeout_ms, path),
          read_key(*b, "broker", "disk_reserve_bytes", c.server.disk_reserve_bytes, path),
          read_key(*b, "broker", "max_outgoing_bytes", c.server.max_outgoing_bytes, path)}) {
      if (!st) return unexpected(st.error());
    }
    // Both are added to times (now + skew, last seen + timeout): bounded, they cannot
    // overflow.
    if (skew_s > kMaxSkewSeconds) {
      return bad(path, "broker.max_clock_skew_seconds must be at most " +
                           std::to_string(kMaxSkewSeconds) + " (one day)");
    }
    if (c.client_timeout_ms > kMaxClientTimeoutMs) {
      return bad(path, "broker.client_timeout_ms must be at most " +
                           std::to_string(kMaxClientTimeoutMs) + " (one day)");
    }
    c.max_clock_skew_ms = skew_s * 1000;
  }
  if (const auto* r = section("regions")) {
    if (auto st = check_keys(*r, "regions", {"file"}, path); !st) return unexpected(st.error());
    if (auto st = read_key(*r, "regions", "file", c.regions_file, path); !st) {
      return unexpected(st.error());
    }
  }
  if (const auto* l = section("log")) {
    if (auto st = check_keys(*l, "log", {"level"}, path); !st) return unexpected(st.error());
    if (auto st = read_key(*l, "log", "level", c.log_level, path); !st)
      return unexpected(st.error());
  }
  if (const auto* sec = section("security")) {
    if (auto st = check_keys(*sec, "security",
                             {"mode", "key_file", "agencies_file", "audit_key_file"}, path);
        !st) {
      return unexpected(st.error());
    }
    std::string mode = "curve";
    for (Status st : {read_key(*sec, "security", "mode", mode, path),
                      read_key(*sec, "security", "key_file", c.key_file, path),
                      read_key(*sec, "security", "agencies_file", c.agencies_file, path),
                      read_key(*sec, "security", "audit_key_file", c.audit_key_file, path)}) {
      if (!st) return unexpected(st.error());
    }
    if (mode != "curve" && mode != "dev") {
      return bad(path, "security.mode must be \"curve\" or \"dev\"");
    }
    c.dev = mode == "dev";
  }
  if (c.server.max_message_bytes > (64u << 20)) {
    return bad(path, "broker.max_message_bytes must be at most 64 MiB");
  }
  return c;
}

std::string audit_key_path(const Config& config) {
  if (!config.audit_key_file.empty()) return config.audit_key_file;
  if (config.dev || config.key_file.empty()) {
    return (std::filesystem::path(config.data_dir) / "audit.key").string();
  }
  return (std::filesystem::path(config.key_file).parent_path() / "audit.key").string();
}

Result<Config> load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return unexpected(Errc::kNotFound, path + ": cannot open the configuration file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace kolabus::broker
