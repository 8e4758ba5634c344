// kolabus-receiver: a small local HTTP server that stands in for the agencies' own
// systems in the demo and in tests: it accepts every POST, appends the body to a
// JSON Lines file per path, and counts requests and distinct Idempotency-Keys.
// GET /stats answers the counts as JSON. --fail-first N answers 503 to the first N
// requests of each path (to show the webhook's retries).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  CLI::App app{"kolabus-receiver: a stand-in for an agency's HTTP system (demo and tests)"};
  std::string listen = "127.0.0.1", port_file, dir = "var/receiver";
  int port = 0, fail_first = 0;
  app.add_option("--host", listen, "address to listen on")->capture_default_str();
  app.add_option("--port", port, "port (0: any free port)")->capture_default_str();
  app.add_option("--port-file", port_file, "write the bound port here once listening");
  app.add_option("--dir", dir, "where the received bodies go (one .jsonl per path)")
      ->capture_default_str();
  app.add_option("--fail-first", fail_first, "answer 503 to the first N requests of each path");
  CLI11_PARSE(app, argc, argv);

  std::filesystem::create_directories(dir);
  std::mutex mu;
  struct PathStats {
    std::uint64_t requests = 0;
    std::uint64_t refused = 0;
    std::set<std::string> keys;
  };
  std::map<std::string, PathStats> stats;

  httplib::Server server;
  server.Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mu);
    auto& s = stats[req.path];
    s.requests++;
    if (static_cast<int>(s.requests) <= fail_first) {
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
      j[path] = {{"requests", s.requests}, {"refused", s.refused}, {"distinct", s.keys.size()}};
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
  std::cerr << "kolabus-receiver listening on http://" << listen << ":" << bound << "\n";
  server.listen_after_bind();
  return 0;
}
