// The gateway as an edge, tried as an adversary would: without or with a wrong token,
// over TLS, with slow clients (slowloris), too many headers, bodies that are not UTF-8,
// truncated, deep or huge, wrong methods; and readiness while the broker is down.
// Everything on loopback, ports chosen at run time, every wait bounded.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sodium.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway_support.h"

using namespace kolabus;
using namespace kolabus::gwtest;
using Steady = std::chrono::steady_clock;

namespace {

std::string sha256_hex(const std::string& text) {
  REQUIRE(sodium_init() >= 0);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  char hex[2 * sizeof digest + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

const std::string kToken = "kgw_test_token_of_the_hospital_0123456789abcdef";
const std::string kOtherToken = "kgw_test_token_of_the_clinic_fedcba9876543210";

std::string tokens_toml() {
  return "tokens = [{ name = \"hospital-1\", sha256 = \"" + sha256_hex(kToken) +
         "\" }, { name = \"clinic-2\", sha256 = \"" + sha256_hex(kOtherToken) + "\" }]\n";
}

// A self-signed certificate for 127.0.0.1 and its key (mode 0600), made by the openssl
// command as an operator would.
struct Certificate {
  explicit Certificate(const test::TempDir& dir)
      : cert(dir.str("gateway.crt")), key(dir.str("gateway.key")) {
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
        "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '" +
        key + "' -out '" + cert + "' >/dev/null 2>&1";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "openssl req failed: " << cmd);
    std::filesystem::permissions(
        key, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  std::string toml() const { return "tls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\n"; }
  std::string cert, key;
};

// ---- raw sockets -----------------------------------------------------------

// A connection to the gateway, or -1 (no assertion: the attacker's thread uses it too).
int try_connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_to(int port) {
  const int fd = try_connect(port);
  REQUIRE(fd >= 0);
  return fd;
}

bool send_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Everything the server sends until it closes, or until `timeout`.
std::string read_until_closed(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  const auto deadline = Steady::now() + timeout;
  if (closed != nullptr) *closed = false;
  while (Steady::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Sends a whole request on a fresh connection; returns the response's status and body.
struct RawResponse {
  int status = 0;
  std::string head;
  std::string body;
};
RawResponse raw_exchange(int port, const std::string& request) {
  const int fd = connect_to(port);
  send_all(fd, request);
  const std::string text = read_until_closed(fd, 10s);
  ::close(fd);
  RawResponse r;
  const auto end = text.find("\r\n\r\n");
  if (text.rfind("HTTP/1.1 ", 0) == 0 && text.size() >= 12) r.status = std::atoi(text.c_str() + 9);
  if (end != std::string::npos) {
    r.head = text.substr(0, end);
    r.body = text.substr(end + 4);
  }
  return r;
}

std::string get_health_with_headers(std::size_t headers, std::size_t value_bytes = 8) {
  std::string req = "GET /v1/health HTTP/1.1\r\nConnection: close\r\n";
  for (std::size_t i = 1; i < headers; ++i) {
    req += "X-Filler-" + std::to_string(i) + ": " + std::string(value_bytes, 'v') + "\r\n";
  }
  return req + "\r\n";
}

// Captures the default logger's lines for the life of the object.
struct LogCapture {
  LogCapture() : previous(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out.str();
  }
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> previous;
};

httplib::Result post_with_token(httplib::Client& c, const Json& body, const std::string& token) {
  return c.Post("/v1/events", {{"Authorization", "Bearer " + token}}, body.dump(),
                "application/json");
}

}  // namespace

TEST_CASE("Gateway edge: bearer tokens: 401 without a valid one, and the log names the client") {
  LogCapture log;
  {
    Agency a(tokens_toml());
    auto c = a.http();
    const Json event = generate(1, 101)[0];

    SUBCASE("no token") {
      auto r = post(c, event);
      const Json body = body_of(r);
      CHECK(r->status == 401);
      CHECK(r->get_header_value("WWW-Authenticate").rfind("Bearer", 0) == 0);
      CHECK(body["error"].get<std::string>().find("Bearer") != std::string::npos);
      auto g = c.Get("/v1/events/" + event["id"].get<std::string>());
      CHECK(body_of(g).contains("error"));
      CHECK(g->status == 401);
    }
    SUBCASE("a wrong token, another scheme, an empty bearer") {
      const std::vector<std::string> headers = {"Bearer kgw_not_a_token",
                                                "Basic aG9zcGl0YWw6cGFzcw==",
                                                "Bearer ",
                                                "Bearer",
                                                "Bearer " + kToken + "x",
                                                kToken};
      for (const std::string& header : headers) {
        auto r =
            c.Post("/v1/events", {{"Authorization", header}}, event.dump(), "application/json");
        INFO("Authorization: " << header);
        CHECK(body_of(r).contains("error"));
        CHECK(r->status == 401);
        CHECK(r->get_header_value("WWW-Authenticate").rfind("Bearer", 0) == 0);
      }
    }
    SUBCASE("the right token publishes; either client's token works") {
      auto r = post_with_token(c, event, kToken);
      CHECK(body_of(r)["ids"][0] == event["id"]);
      CHECK(r->status == 202);
      auto r2 = post_with_token(c, generate(1, 102)[0], kOtherToken);
      CHECK(r2->status == 202);
      auto lower = c.Post("/v1/events", {{"Authorization", "bearer " + kToken}},
                          generate(1, 103)[0].dump(), "application/json");
      CHECK(lower->status == 202);
      auto g = c.Get("/v1/events/" + event["id"].get<std::string>(),
                     {{"Authorization", "Bearer " + kToken}});
      REQUIRE(g);
      CHECK(g->status == 200);
    }
    SUBCASE("health and readiness need no token") {
      auto h = c.Get("/v1/health");
      REQUIRE(h);
      CHECK(h->status == 200);
      auto r = c.Get("/v1/ready");
      REQUIRE(r);
      CHECK(r->status == 200);
    }
  }
  const std::string text = log.text();
  INFO(text);
  CHECK(text.find("2 client tokens loaded") != std::string::npos);
  CHECK(text.find(kToken) == std::string::npos);
  CHECK(text.find(kOtherToken) == std::string::npos);
  if (text.find(" 202 ") != std::string::npos) {
    CHECK(text.find("POST /v1/events 202") != std::string::npos);
    CHECK(text.find("client hospital-1") != std::string::npos);
    CHECK(text.find("client clinic-2") != std::string::npos);
  }
}

TEST_CASE("Gateway edge: TLS with the operator's certificate, and plain HTTP gets nothing") {
  test::TempDir certs("gateway-cert");
  const Certificate cert(certs);
  Agency a(cert.toml() + tokens_toml());
  httplib::Client c("https://127.0.0.1:" + std::to_string(a.port));
  c.set_ca_cert_path(cert.cert.c_str());
  c.enable_server_certificate_verification(true);
  c.set_connection_timeout(5s);
  c.set_read_timeout(20s);
  c.set_bearer_token_auth(kToken.c_str());

  const Json event = generate(1, 110)[0];
  auto r = post(c, event);
  REQUIRE_MESSAGE(r, "TLS request failed: " << httplib::to_string(r.error()));
  CHECK(r->status == 202);
  wait_status(c, event["id"], "acknowledged");
  // Keep-alive over TLS: many requests on one connection.
  for (int i = 0; i < 5; ++i) {
    auto h = c.Get("/v1/health");
    REQUIRE(h);
    CHECK(h->status == 200);
  }
  auto plain = a.http();
  CHECK(!plain.Get("/v1/health"));

  // A client that does not trust the certificate refuses it.
  httplib::Client stranger("https://127.0.0.1:" + std::to_string(a.port));
  stranger.enable_server_certificate_verification(true);
  stranger.set_ca_cert_path(certs.str("nothing.pem").c_str());
  stranger.set_connection_timeout(5s);
  CHECK(!stranger.Get("/v1/health"));
}

TEST_CASE(
    "Gateway edge: a TLS key readable by others, or a certificate that is not one, stops it") {
  test::TempDir certs("gateway-cert");
  const Certificate cert(certs);
  Agency a;
  SUBCASE("key mode 0644") {
    std::filesystem::permissions(
        cert.key, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
        std::filesystem::perm_options::add);
    auto g = adapters::make_gateway(
        toml::parse("listen = \"127.0.0.1:0\"\n" + cert.toml() + tokens_toml()), a.ctx);
    REQUIRE(!g.has_value());
    CHECK(g.error().message.find("tls_key") != std::string::npos);
    CHECK(g.error().message.find("chmod 600") != std::string::npos);
  }
  SUBCASE("a certificate file that holds no certificate") {
    const std::string bogus = certs.str("bogus.crt");
    {
      std::FILE* f = std::fopen(bogus.c_str(), "w");
      REQUIRE(f != nullptr);
      std::fputs("not a certificate\n", f);
      std::fclose(f);
    }
    auto g = adapters::make_gateway(toml::parse("listen = \"127.0.0.1:0\"\ntls_cert = \"" + bogus +
                                                "\"\ntls_key = \"" + cert.key + "\"\n"),
                                    a.ctx);
    REQUIRE(g.has_value());
    auto st = (*g)->start();
    REQUIRE(!st.has_value());
    CHECK(st.error().message.find("TLS certificate") != std::string::npos);
  }
}

TEST_CASE("Gateway edge: eight slowloris clients never hold a normal POST back a second") {
  Agency a("header_timeout_seconds = 3\n");
  const int port = a.port;
  // Eight clients, each sending one byte of its headers per second; the server cuts them
  // after header_timeout_seconds and they reconnect at once, as an attacker would.
  constexpr int kSlow = 8;
  const std::string slow_request =
      "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "X-Padding: " +
      std::string(200, 'p') + "\r\n";
  std::atomic<bool> done{false};
  std::atomic<int> rounds{0};
  std::atomic<int> reconnects{0};
  std::thread attacker([&] {
    std::vector<int> fds;
    std::vector<std::size_t> sent(kSlow, 0);
    for (int i = 0; i < kSlow; ++i) fds.push_back(try_connect(port));
    const auto until = Steady::now() + 20s;  // bound, whatever happens to `done`
    while (!done.load() && Steady::now() < until) {
      for (int i = 0; i < kSlow; ++i) {
        const char byte = slow_request[sent[i] % slow_request.size()];
        if (fds[i] < 0 || ::send(fds[i], &byte, 1, MSG_NOSIGNAL) != 1) {
          if (fds[i] >= 0) ::close(fds[i]);
          fds[i] = try_connect(port);
          sent[i] = 0;
          ++reconnects;
          continue;
        }
        ++sent[i];
      }
      ++rounds;
      const auto next = Steady::now() + 1s;
      while (!done.load() && Steady::now() < next) std::this_thread::sleep_for(10ms);
    }
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  });
  // The eight connections are accepted and have started their headers.
  REQUIRE(test::wait_until([&] { return rounds.load() >= 2; }, 10s));

  std::vector<double> latencies;
  const auto stop_at = Steady::now() + 7s;  // more than two header timeouts
  std::uint64_t seed = 200;
  while (Steady::now() < stop_at && latencies.size() < 200) {
    httplib::Client c("127.0.0.1", port);  // a new connection each time
    c.set_connection_timeout(5s);
    c.set_read_timeout(5s);
    const auto t0 = Steady::now();
    auto r = post(c, generate(1, seed++)[0]);
    const double ms = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
    REQUIRE_MESSAGE(r, "the normal client got no answer while 8 slow clients were connected");
    CHECK(r->status == 202);
    latencies.push_back(ms);
    std::this_thread::sleep_for(100ms);
  }
  done = true;
  attacker.join();

  std::sort(latencies.begin(), latencies.end());
  const double worst = latencies.back();
  const double median = latencies[latencies.size() / 2];
  MESSAGE("slowloris x8: " << latencies.size() << " POSTs, median " << median << " ms, worst "
                           << worst << " ms; the slow clients were cut and reconnected "
                           << reconnects.load() << " times");
  CHECK(latencies.size() >= 10);
  CHECK(worst < 1000.0);
  CHECK(reconnects.load() >= kSlow);  // every slow client was cut at least once
}

TEST_CASE("Gateway edge: slow clients outnumbering the threads are cut after a second") {
  Agency a("max_connections = 4\n");
  const int port = a.port;
  std::vector<int> slow;
  for (int i = 0; i < 8; ++i) {
    slow.push_back(connect_to(port));
    REQUIRE(send_all(slow.back(), "GET /v1/hea"));
  }
  // Four hold the threads, four wait; the normal client queues behind them. The busy
  // rule cuts headers older than a second, so it is served within about two.
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5s);
  c.set_read_timeout(10s);
  const auto t0 = Steady::now();
  auto h = c.Get("/v1/health");
  const double ms = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
  MESSAGE("4 threads, 8 silent clients: a health check answered in " << ms << " ms");
  REQUIRE(h);
  CHECK(h->status == 200);
  CHECK(ms < 3000.0);
  for (int fd : slow) ::close(fd);
}

TEST_CASE("Gateway edge: a client that never finishes its headers gets 408 and is closed") {
  Agency a("header_timeout_seconds = 1\n");
  const int fd = connect_to(a.port);
  REQUIRE(send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\n"));
  bool closed = false;
  const auto t0 = Steady::now();
  const std::string text = read_until_closed(fd, 5s, &closed);
  ::close(fd);
  CHECK(closed);
  CHECK(Steady::now() - t0 < 3s);
  CHECK(text.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(text.find("\"error\"") != std::string::npos);

  // Not even a request line: closed with a 408 too.
  const int idle = connect_to(a.port);
  const std::string nothing = read_until_closed(idle, 5s, &closed);
  ::close(idle);
  CHECK(closed);
  CHECK(nothing.rfind("HTTP/1.1 408", 0) == 0);
}

TEST_CASE("Gateway edge: at most max_headers headers and max_header_bytes bytes: else 431") {
  Agency a("max_headers = 20\nmax_header_bytes = 4096\n");
  CHECK(raw_exchange(a.port, get_health_with_headers(20)).status == 200);
  const auto many = raw_exchange(a.port, get_health_with_headers(21));
  CHECK(many.status == 431);
  CHECK(Json::parse(many.body).contains("error"));
  const auto big = raw_exchange(a.port, get_health_with_headers(2, 5000));
  CHECK(big.status == 431);
  CHECK(Json::parse(big.body).contains("error"));
  // A request line longer than the limit, never ended.
  const auto line = raw_exchange(a.port, "GET /" + std::string(10000, 'a'));
  CHECK(line.status == 431);
  // An endless stream of headers is cut, not read for ever.
  const int fd = connect_to(a.port);
  std::string flood = "GET /v1/health HTTP/1.1\r\n";
  for (int i = 0; i < 2000; ++i) flood += "X-A: b\r\n";
  send_all(fd, flood);
  bool closed = false;
  const std::string text = read_until_closed(fd, 5s, &closed);
  ::close(fd);
  CHECK(text.rfind("HTTP/1.1 431", 0) == 0);
}

TEST_CASE("Gateway edge: every malformed body is a 400 with a JSON error, never a 500") {
  Agency a("max_body_bytes = 65536\n");
  auto c = a.http();
  const Json event = generate(1, 120)[0];
  std::string deep_event = event.dump();
  deep_event.insert(deep_event.size() - 1, ",\"x\":" + std::string(40, '[') + std::string(40, ']'));

  const std::vector<std::pair<std::string, std::string>> bodies = {
      {"not UTF-8 at all", "\xff\xfe"},
      {"a string holding 0xff", R"({"id": ")" + std::string("\xff") + R"("})"},
      {"an event whose source holds 0xff 0xfe 0xfd",
       [&] {
         std::string s = event.dump();
         const auto p = s.find("\"payload\"");
         return s.substr(0, p) + "\"source\":\"\xff\xfe\xfd\"," + s.substr(p);
       }()},
      {"overlong UTF-8", "{\"id\": \"\xc0\xaf\"}"},
      {"a lone surrogate escape", R"({"id": "\ud800"})"},
      {"truncated", event.dump().substr(0, 40)},
      {"empty", ""},
      {"only whitespace", "   \n"},
      {"a number too large for a double", "1e400"},
      {"nested 100000 deep", std::string(100000, '[') + std::string(100000, ']')},
      {"nested 40 deep inside an event", deep_event},
      {"an empty array", "[]"},
      {"a string", "\"birth\""},
      {"null", "null"},
      {"trailing garbage", event.dump() + "}"},
      {"NUL bytes", std::string("{\"id\"\0:1}", 10)},
  };
  for (const auto& [what, body] : bodies) {
    INFO(what);
    auto r = c.Post("/v1/events", body, "application/json");
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->get_header_value("Content-Type") == "application/json");
    const Json parsed = Json::parse(r->body);  // valid JSON, whatever came in
    CHECK(parsed["error"].is_string());
  }
  // Well-formed JSON whose events break the rules: 422, per event, never 500.
  const std::vector<std::pair<std::string, Json>> events = {
      {"a number where a string goes",
       [&] {
         Json e = event;
         e["payload"]["child_name"] = 42;
         return e;
       }()},
      {"an integer beyond 64 bits",
       [&] {
         Json e = event;
         e["occurred_at"] = 1e30;
         return e;
       }()},
      {"an object where an array goes",
       [&] {
         Json e = event;
         e["regions"] = Json::object();
         return e;
       }()},
      {"a huge negative time",
       [&] {
         Json e = event;
         e["recorded_at"] = -9223372036854775807LL;
         return e;
       }()},
  };
  for (const auto& [what, e] : events) {
    INFO(what);
    auto r = post(c, e);
    REQUIRE(r);
    CHECK(r->status == 422);
    CHECK(Json::parse(r->body)["errors"].is_array());
  }
  auto wrong_type = c.Post("/v1/events", event.dump(), "application/x-www-form-urlencoded");
  REQUIRE(wrong_type);
  CHECK(wrong_type->status == 415);
  // A declared length over the limit is refused before the body is read.
  const auto big = raw_exchange(a.port,
                                "POST /v1/events HTTP/1.1\r\nContent-Type: application/json\r\n"
                                "Content-Length: 99999999999\r\n\r\n{");
  CHECK(big.status == 400);
  CHECK(Json::parse(big.body)["error"].get<std::string>().find("max_body_bytes") !=
        std::string::npos);
  const auto nan_length =
      raw_exchange(a.port,
                   "POST /v1/events HTTP/1.1\r\nContent-Type: application/json\r\n"
                   "Content-Length: twelve\r\n\r\n{");
  CHECK(nan_length.status == 400);
  CHECK(a.publisher->stats().pending == 0);
}

TEST_CASE("Gateway edge: wrong methods are 405 with Allow, unknown methods 400, paths 404") {
  Agency a(tokens_toml());
  auto c = a.http();
  const std::string id = "/v1/events/" + new_uuid_v7().to_string();
  struct Case {
    std::string method, path, allow;
  };
  const std::vector<Case> cases = {
      {"GET", "/v1/events", "POST"},
      {"PUT", "/v1/events", "POST"},
      {"DELETE", "/v1/events", "POST"},
      {"PATCH", "/v1/events", "POST"},
      {"OPTIONS", "/v1/events", "POST"},
      {"HEAD", "/v1/events", "POST"},
      {"POST", id, "GET"},
      {"PUT", id, "GET"},
      {"DELETE", id, "GET"},
      {"POST", "/v1/health", "GET"},
      {"PUT", "/v1/ready", "GET"},
      {"TRACE", "/v1/health", "GET"},
      {"CONNECT", "/v1/ready", "GET"},
  };
  for (const auto& k : cases) {
    INFO(k.method << " " << k.path);
    const auto r = raw_exchange(a.port, k.method + " " + k.path +
                                            " HTTP/1.1\r\nContent-Length: 2\r\n"
                                            "Content-Type: application/json\r\n\r\n{}");
    CHECK(r.status == 405);
    CHECK(r.head.find("Allow: " + k.allow) != std::string::npos);
    if (k.method != "HEAD") CHECK(Json::parse(r.body)["error"].is_string());
  }
  const auto unknown = raw_exchange(a.port, "BREW /v1/events HTTP/1.1\r\n\r\n");
  CHECK(unknown.status == 400);
  CHECK(Json::parse(unknown.body)["error"].is_string());
  const auto nowhere = raw_exchange(a.port, "GET /admin HTTP/1.1\r\n\r\n");
  CHECK(nowhere.status == 404);
  CHECK(Json::parse(nowhere.body)["error"].is_string());
}

TEST_CASE("Gateway edge: /v1/ready is 503 while the broker is down, /v1/health stays 200") {
  Agency a;
  auto c = a.http();
  auto ready = [&] {
    auto r = c.Get("/v1/ready");
    REQUIRE(r);
    const Json body = Json::parse(r->body);
    if (r->status == 200) CHECK(body["status"] == "ready");
    if (r->status == 503) {
      CHECK(body["status"] == "unavailable");
      CHECK(body["error"].is_string());
      CHECK(r->get_header_value("Retry-After") == "1");
    }
    return r->status;
  };
  CHECK(test::wait_until([&] { return ready() == 200; }, 10s));
  a.broker.stop(SIGKILL);
  CHECK(test::wait_until([&] { return ready() == 503; }, 10s));
  auto h = c.Get("/v1/health");
  REQUIRE(h);
  CHECK(h->status == 200);
  // A slow broker does not slow readiness down beyond the ping's timeout.
  const auto t0 = Steady::now();
  for (int i = 0; i < 3; ++i) CHECK(ready() == 503);
  CHECK(Steady::now() - t0 < 3s);
  a.broker.restart();
  CHECK(test::wait_until([&] { return ready() == 200; }, 20s));
}

TEST_CASE("Gateway edge: stop() is prompt with slow and idle clients connected") {
  Agency a;
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {
    fds.push_back(connect_to(a.port));
    send_all(fds.back(), "GET /v1/hea");
  }
  auto c = a.http();
  auto h = c.Get("/v1/health");  // and one idle keep-alive connection
  REQUIRE(h);
  const auto t0 = Steady::now();
  a.gateway->stop();
  CHECK(Steady::now() - t0 < 2s);
  for (int fd : fds) ::close(fd);
}
