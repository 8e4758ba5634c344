// kolabus-receiver: a small local HTTP server that stands in for the agencies' own
// systems in the demo and in tests. It checks every POST as a receiving agency should
// (Standard Webhooks: webhook-id, webhook-timestamp within 5 minutes, a "v1," signature
// made with the path's secret; adapters/webhook_signature.h) and answers 401 to a
// request without a valid one; it appends the body of each accepted request to a JSON
// Lines file per path, and counts requests and distinct Idempotency-Keys.
// GET /stats answers the counts as JSON. --fail-first N answers 503 to the first N
// signed requests of each path (to show the webhook's retries).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <adapters/webhook_signature.h>

int main(int argc, char** argv) {
  CLI::App app{"kolabus-receiver: a stand-in for an agency's HTTP system (demo and tests)"};
  std::string listen = "127.0.0.1", port_file, dir = "var/receiver";
  int port = 0, fail_first = 0;
  std::vector<std::string> secret_args;
  app.add_option("--host", listen, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "port (0: any free port)")->capture_default_str();
  app.add_option("--port-file", port_file, "write the bound port here once listening");
  app.add_option("--dir", dir, "where the received bodies go (one .jsonl per path)")
      ->capture_default_str();
  app.add_option("--fail-first", fail_first,
                 "answer 503 to the first N signed requests of each path");
  app.add_option("--secret", secret_args,
                 "PATH=FILE: requests to PATH must be signed with the webhook secret in FILE "
                 "(whsec_..., mode 0600). Give a PATH twice to accept either secret (a "
                 "rotation). Requests to a path without a secret are answered 401.");
  CLI11_PARSE(app, argc, argv);

  std::map<std::string, std::vector<std::string>> keys;  // path -> HMAC keys
  for (const auto& arg : secret_args) {
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || arg.front() != '/') {
      std::cerr << "kolabus-receiver: --secret " << arg << ": expected PATH=FILE, e.g. "
                << "/dinkes/births=var/keys/dinkes-births.whsec\n";
      return 2;
    }
    auto key = kolabus::adapters::load_webhook_secret(arg.substr(eq + 1));
    if (!key) {
      std::cerr << "kolabus-receiver: " << key.error().message << "\n";
      return 2;
    }
    keys[arg.substr(0, eq)].push_back(std::move(*key));
  }
  if (keys.empty()) {
    std::cerr << "kolabus-receiver: no --secret given: every request will be answered 401\n";
  }

  std::filesystem::create_directories(dir);
  std::mutex mu;
  struct PathStats {
    std::uint64_t requests = 0;
    std::uint64_t unauthorised = 0;  // answered 401: no valid signature
    std::uint64_t refused = 0;       // answered 503 (--fail-first)
    std::set<std::string> keys;
  };
  std::map<std::string, PathStats> stats;

  httplib::Server server;
  server.Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    const auto it = keys.find(req.path);
    const kolabus::Status verdict =
        it == keys.end() ? kolabus::Status(kolabus::unexpected(kolabus::Errc::kInvalidArgument,
                                                               "no secret for this path"))
                         : kolabus::adapters::verify_webhook(
                               it->second, req.get_header_value("webhook-id"),
                               req.get_header_value("webhook-timestamp"),
                               req.get_header_value("webhook-signature"), req.body, now_s);
    std::lock_guard lock(mu);
    auto& s = stats[req.path];
    s.requests++;
    if (!verdict) {
      s.unauthorised++;
      std::cerr << "kolabus-receiver: 401 to POST " << req.path << ": " << verdict.error().message
                << "\n";
      res.status = 401;
      res.set_content(nlohmann::json{{"error", verdict.error().message}}.dump(),
                      "application/json");
      return;
    }
    if (static_cast<std::int64_t>(s.requests - s.unauthorised) <= fail_first) {
      s.refused++;
      res.status = 503;
      res.set_content(R"({"error":"busy, try again"})", "application/json");
      return;
    }
    s.keys.insert(req.get_header_value("Idempotency-Key"));
    std::string file = req.path;
    for (char& c : file) {
      if (c == '/') c = '_';
    }
    std::ofstream(dir + "/" + file.substr(1) + ".jsonl", std::ios::app) << req.body << "\n";
    res.status = 200;
    res.set_content(R"({"status":"received"})", "application/json");
  });
  server.Get("/stats", [&](const httplib::Request&, httplib::Response& res) {
    std::lock_guard lock(mu);
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [path, s] : stats) {
      j[path] = {{"requests", s.requests},
                 {"unauthorised", s.unauthorised},
                 {"refused", s.refused},
                 {"distinct", s.keys.size()}};
    }
    res.set_content(j.dump(), "application/json");
  });

  const int bound = port == 0 ? server.bind_to_any_port(listen) : port;
  if (port != 0 && !server.bind_to_port(listen, port)) {
    std::cerr << "kolabus-receiver: cannot listen on " << listen << ":" << port << "\n";
    return 4;
  }
  if (bound < 0) {
    std::cerr << "kolabus-receiver: cannot listen on " << listen << "\n";
    return 4;
  }
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << bound << "\n";
    std::filesystem::rename(port_file + ".tmp", port_file);
  }
  std::cerr << "kolabus-receiver listening on http://" << listen << ":" << bound << ", "
            << keys.size() << (keys.size() == 1 ? " path" : " paths") << " with secrets\n";
  server.listen_after_bind();
  return 0;
}
