// Webhook signatures (Standard Webhooks, adapters/webhook_signature.h): the reference
// libraries' test vector, secrets and their files, and the sink's requests checked the
// way the receiving agencies check them: by kolabus-receiver (a separate process, as in
// the demo), through a rotation, and by the Python code docs/ADAPTERS.md gives them.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include "webhook_support.h"
#include <adapters/webhook.h>
#include <adapters/webhook_signature.h>

using namespace kolabus;
using namespace std::chrono_literals;

namespace {

// The Standard Webhooks reference libraries' signing test (e.g. libraries/go,
// TestSign): this secret, id, timestamp and body give this signature.
constexpr const char* kRefSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* kRefId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t kRefTimestamp = 1614265330;
constexpr const char* kRefBody = R"({"test": 2432232314})";
constexpr const char* kRefSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

struct Run {
  int exit_code;
  std::string out;  // stdout and stderr
};

Run run(const std::string& command, const std::string& out_file) {
  const int rc = std::system((command + " > " + out_file + " 2>&1").c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(out_file)};
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    const auto at = s.find(sep, pos);
    out.push_back(s.substr(pos, at - pos));
    if (at == std::string::npos) return out;
    pos = at + 1;
  }
}

}  // namespace

TEST_CASE("Webhook signatures: the Standard Webhooks reference vector, and what verify refuses") {
  auto key = adapters::decode_webhook_secret(kRefSecret);
  REQUIRE(key.has_value());
  CHECK(key->size() == 24);
  CHECK(adapters::webhook_signature(*key, kRefId, kRefTimestamp, kRefBody) == kRefSignature);
  // The example of docs/ADAPTERS.md ("To check code of your own").
  CHECK(adapters::webhook_signature(*key, "01a21e1e-af52-72c1-8000-6920c1dc0e1e", 1795100000,
                                    R"({"sequence":1})") ==
        "v1,5T/sBq6OwNrfa333OGyr7vHrK9xic6SzrHv2wvO3UVo=");

  const std::vector<std::string> keys{*key};
  const std::string ts = std::to_string(kRefTimestamp);
  auto verify = [&](std::string_view id, std::string_view t, std::string_view sig,
                    std::string_view body, std::int64_t now) {
    return adapters::verify_webhook(keys, id, t, sig, body, now);
  };
  auto refusal = [&](const Status& s) { return s ? std::string("accepted") : s.error().message; };

  CHECK(verify(kRefId, ts, kRefSignature, kRefBody, kRefTimestamp));
  // Five minutes either way, and not a second more.
  CHECK(verify(kRefId, ts, kRefSignature, kRefBody, kRefTimestamp + 300));
  CHECK(verify(kRefId, ts, kRefSignature, kRefBody, kRefTimestamp - 300));
  CHECK(refusal(verify(kRefId, ts, kRefSignature, kRefBody, kRefTimestamp + 301)) ==
        "webhook-timestamp is 301 s away from now (at most 300)");
  CHECK_FALSE(verify(kRefId, ts, kRefSignature, kRefBody, kRefTimestamp - 301));
  // The signature covers the id, the timestamp and every byte of the body.
  const std::string body_changed = std::string(kRefBody) + " ";
  CHECK(refusal(verify(kRefId, ts, kRefSignature, body_changed, kRefTimestamp)) ==
        "no signature matches");
  CHECK_FALSE(verify("msg_p5jXN8AQM9LWM0D4loKWxJeK", ts, kRefSignature, kRefBody, kRefTimestamp));
  CHECK_FALSE(
      verify(kRefId, std::to_string(kRefTimestamp + 1), kRefSignature, kRefBody, kRefTimestamp));
  // Headers missing or malformed.
  CHECK(refusal(verify("", ts, kRefSignature, kRefBody, kRefTimestamp)) == "missing webhook-id");
  CHECK(refusal(verify(kRefId, "", kRefSignature, kRefBody, kRefTimestamp)) ==
        "missing webhook-timestamp");
  CHECK(refusal(verify(kRefId, ts, "", kRefBody, kRefTimestamp)) == "missing webhook-signature");
  CHECK_FALSE(verify(kRefId, "soon", kRefSignature, kRefBody, kRefTimestamp));
  CHECK_FALSE(verify(kRefId, ts + ".5", kRefSignature, kRefBody, kRefTimestamp));
  CHECK_FALSE(verify(kRefId, "-1", kRefSignature, kRefBody, 0));
  // Any one of several v1 signatures; other versions and garbage are skipped.
  const std::string sig = kRefSignature;
  CHECK(verify(kRefId, ts, "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + sig, kRefBody,
               kRefTimestamp));
  CHECK(verify(kRefId, ts, "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw== " + sig + " v1,!!", kRefBody,
               kRefTimestamp));
  CHECK_FALSE(verify(kRefId, ts, "v2," + sig.substr(3), kRefBody, kRefTimestamp));
  CHECK_FALSE(verify(kRefId, ts, "v1,", kRefBody, kRefTimestamp));
  CHECK_FALSE(verify(kRefId, ts, sig.substr(0, sig.size() - 2), kRefBody, kRefTimestamp));
  // Another secret does not verify; a list with the right one among others does.
  auto other = adapters::generate_webhook_secret();
  REQUIRE(other.has_value());
  auto other_key = adapters::decode_webhook_secret(*other);
  REQUIRE(other_key.has_value());
  CHECK_FALSE(adapters::verify_webhook({*other_key}, kRefId, ts, sig, kRefBody, kRefTimestamp));
  CHECK(adapters::verify_webhook({*other_key, *key}, kRefId, ts, sig, kRefBody, kRefTimestamp));
  // Two secrets: two signatures, the first secret's first.
  CHECK(adapters::webhook_signature_header({*key, *other_key}, kRefId, kRefTimestamp, kRefBody) ==
        sig + " " + adapters::webhook_signature(*other_key, kRefId, kRefTimestamp, kRefBody));
}

TEST_CASE("Webhook secrets: whsec_ and the base64 of 24 to 64 bytes, new ones random") {
  auto error = [](std::string_view s) {
    auto k = adapters::decode_webhook_secret(s);
    return k ? std::string("accepted") : k.error().message;
  };
  CHECK(error("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").find("whsec_") != std::string::npos);
  CHECK(error("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS*").find("base64") != std::string::npos);
  CHECK(error("whsec_").find("0 bytes") != std::string::npos);
  CHECK(error("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==").find("22 bytes") != std::string::npos);
  const std::string b64_65 = std::string(84, 'A') + "AAA=";  // 88 characters: 65 bytes
  CHECK(error("whsec_" + b64_65).find("must have 24 to 64") != std::string::npos);
  // An error never repeats the secret.
  CHECK(error("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS*").find("MfKQ9r8") == std::string::npos);

  for (std::size_t n : {24u, 32u, 64u}) {
    auto s = adapters::generate_webhook_secret(n);
    REQUIRE(s.has_value());
    CHECK(s->rfind("whsec_", 0) == 0);
    auto k = adapters::decode_webhook_secret(*s);
    REQUIRE(k.has_value());
    CHECK(k->size() == n);
  }
  CHECK_FALSE(adapters::generate_webhook_secret(23).has_value());
  CHECK_FALSE(adapters::generate_webhook_secret(65).has_value());
  auto a = adapters::generate_webhook_secret();
  auto b = adapters::generate_webhook_secret();
  REQUIRE((a.has_value() && b.has_value()));
  CHECK(*a != *b);
  CHECK(a->size() == 6 + 44);  // 32 bytes
}

TEST_CASE("Webhook secrets: a file group or others may read is refused, naming it and the fix") {
  test::TempDir dir("webhook-secret");
  const std::string file = dir.str("hook.whsec");
  const std::string secret = test::write_secret(file);
  CHECK(mode_of(file) == 0600);
  CHECK(read_file(file) == secret + "\n");
  REQUIRE(adapters::load_webhook_secret(file).has_value());

  for (mode_t mode : {0644, 0640, 0604, 0660, 0666}) {
    CAPTURE(mode);
    REQUIRE(::chmod(file.c_str(), mode) == 0);
    auto k = adapters::load_webhook_secret(file);
    REQUIRE_FALSE(k.has_value());
    CHECK(k.error().message.find(file + " are too open") != std::string::npos);
    CHECK(k.error().message.find("(chmod 600 " + file + ")") != std::string::npos);
  }
  REQUIRE(::chmod(file.c_str(), 0400) == 0);
  CHECK(adapters::load_webhook_secret(file).has_value());

  // The adapter: a configuration error naming the key, the file and the fix.
  REQUIRE(::chmod(file.c_str(), 0644) == 0);
  toml::table t = test::webhook_table("hook", "http://127.0.0.1:9/hook");
  t.insert_or_assign("secret_file", file);
  std::string e = test::error_of(t);
  CHECK(e.find("secret_file") != std::string::npos);
  CHECK(e.find("permissions 0644 for the webhook secret file " + file) != std::string::npos);
  CHECK(e.find("chmod 600 " + file) != std::string::npos);
  // The same as previous_secret_file.
  t.insert_or_assign("secret_file", test::shared_secret_file());
  t.insert_or_assign("previous_secret_file", file);
  e = test::error_of(t);
  CHECK(e.find("previous_secret_file") != std::string::npos);
  CHECK(e.find("chmod 600 " + file) != std::string::npos);

  // kolabus-adapter refuses to start: exit 2 (configuration), the message on its log.
  const std::string config = dir.str("agency.toml");
  std::ofstream(config) << "[agency]\nname = \"test-agency\"\nbroker = \"tcp://127.0.0.1:9\"\n"
                        << "data_dir = \"" << dir.str("agency") << "\"\n\n[[webhook]]\n"
                        << "consumer = \"hook\"\nurl = \"http://127.0.0.1:9/hook\"\n"
                        << "secret_file = \"" << file << "\"\n";
  const Run r = run(std::string(KOLABUS_ADAPTER_BIN) + " --config " + config, dir.str("out"));
  CHECK(r.exit_code == 2);
  CHECK(r.out.find("too open") != std::string::npos);
  CHECK(r.out.find("(chmod 600 " + file + ")") != std::string::npos);
  CHECK(r.out.find(secret.substr(6)) == std::string::npos);

  // Other bad files.
  std::ofstream(dir.str("two.whsec")) << "# two secrets\n" << secret << "\n" << secret << "\n";
  ::chmod(dir.str("two.whsec").c_str(), 0600);
  auto two = adapters::load_webhook_secret(dir.str("two.whsec"));
  REQUIRE_FALSE(two.has_value());
  CHECK(two.error().message.find("one whsec_ line, not 2") != std::string::npos);
  std::ofstream(dir.str("commented.whsec")) << "# dinkes-births\n\n  " << secret << "  \r\n";
  ::chmod(dir.str("commented.whsec").c_str(), 0600);
  CHECK(adapters::load_webhook_secret(dir.str("commented.whsec")).has_value());
  auto missing = adapters::load_webhook_secret(dir.str("none.whsec"));
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == Errc::kNotFound);
  CHECK(missing.error().message.find(dir.str("none.whsec")) != std::string::npos);
}

TEST_CASE("Webhook: kolabus-receiver accepts every request the sink signs") {
  test::TempDir dir("webhook-sign");
  test::BrokerProcess broker(dir.str("broker"));
  const std::string secret_file = dir.str("agency.whsec");
  test::write_secret(secret_file);
  test::ReceiverProcess receiver(dir.str(), {"--secret", "/agency/births=" + secret_file});
  const auto evs = test::generate(8, 31);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);

  toml::table t = test::webhook_table("signed", receiver.url("/agency/births"));
  t.insert_or_assign("secret_file", secret_file);
  auto adapter = test::make(t, test::context(dir, broker));
  CHECK(adapter->describe().find("signed with 1 secret)") != std::string::npos);
  REQUIRE(test::started(*adapter));
  REQUIRE(test::wait_until([&] { return receiver.stat("/agency/births", "distinct") == 8; }));
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "signed"); }));
  adapter->stop();
  CHECK(receiver.stat("/agency/births", "unauthorised") == 0);
  CHECK(receiver.stat("/agency/births", "requests") == 8);
}

TEST_CASE("Webhook: a wrong secret is answered 401 by the receiver, and the events are dead") {
  test::TempDir dir("webhook-sign");
  test::BrokerProcess broker(dir.str("broker"));
  const std::string agencys = dir.str("agency.whsec");  // what the agency has
  const std::string ours = dir.str("ours.whsec");       // what the adapter was given
  test::write_secret(agencys);
  test::write_secret(ours);
  test::ReceiverProcess receiver(dir.str(), {"--secret", "/agency/births=" + agencys});
  const auto evs = test::generate(3, 32);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);

  toml::table t = test::webhook_table("wrong", receiver.url("/agency/births"));
  t.insert_or_assign("secret_file", ours);
  auto adapter = test::make(t, test::context(dir, broker));
  REQUIRE(test::started(*adapter));
  const auto dead = test::wait_for_dead(broker.endpoint(), "wrong", evs.size());
  CHECK(dead.size() == evs.size());
  for (const auto& d : dead) {
    CHECK(d.attempts == 1);  // a 4xx is not retried
    CHECK(d.reason.find("HTTP 401") != std::string::npos);
    CHECK(d.reason.find("no signature matches") != std::string::npos);
  }
  REQUIRE(test::wait_until([&] { return test::caught_up(broker.endpoint(), "wrong"); }));
  adapter->stop();
  CHECK(receiver.stat("/agency/births", "unauthorised") == evs.size());
  CHECK(receiver.stat("/agency/births", "distinct") == 0);
}

TEST_CASE("Webhook: during a rotation every request carries both signatures, either verifies") {
  test::TempDir dir("webhook-sign");
  test::BrokerProcess broker(dir.str("broker"));
  const std::string old_file = dir.str("old.whsec");
  const std::string new_file = dir.str("new.whsec");
  test::write_secret(old_file);
  test::write_secret(new_file);
  const std::string old_key = test::key_of(old_file);
  const std::string new_key = test::key_of(new_file);
  // One agency still has the old secret, another already the new one.
  test::ReceiverProcess receiver(
      dir.str(), {"--secret", "/before=" + old_file, "--secret", "/after=" + new_file});
  test::Endpoint endpoint([](const test::Hit&, std::size_t) { return test::Reply{200, "ok"}; });
  const auto evs = test::generate(5, 33);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);

  const auto ctx = test::context(dir, broker);
  std::vector<std::unique_ptr<adapters::Adapter>> adapters;
  for (const auto& [consumer, url] :
       {std::pair{"rot-before", receiver.url("/before")},
        std::pair{"rot-after", receiver.url("/after")}, std::pair{"rot-seen", endpoint.url()}}) {
    toml::table t = test::webhook_table(consumer, url);
    t.insert_or_assign("secret_file", new_file);
    t.insert("previous_secret_file", old_file);
    adapters.push_back(test::make(t, ctx));
    CHECK(adapters.back()->describe().find("signed with 2 secrets") != std::string::npos);
    REQUIRE(test::started(*adapters.back()));
  }
  REQUIRE(test::wait_until([&] {
    return receiver.stat("/before", "distinct") == evs.size() &&
           receiver.stat("/after", "distinct") == evs.size() &&
           endpoint.keys_answered(200) == test::ids_of(evs);
  }));
  for (auto& a : adapters) a->stop();
  CHECK(receiver.stat("/before", "unauthorised") == 0);
  CHECK(receiver.stat("/after", "unauthorised") == 0);

  auto other = adapters::generate_webhook_secret();
  REQUIRE(other.has_value());
  const std::string other_key = *adapters::decode_webhook_secret(*other);
  for (const auto& h : endpoint.hits()) {
    const auto sigs = split(h.webhook_signature, ' ');
    REQUIRE(sigs.size() == 2);
    const std::int64_t ts = std::stoll(h.webhook_timestamp);
    CHECK(sigs[0] == adapters::webhook_signature(new_key, h.webhook_id, ts, h.body));
    CHECK(sigs[1] == adapters::webhook_signature(old_key, h.webhook_id, ts, h.body));
    auto check = [&](const std::string& k) {
      return adapters::verify_webhook({k}, h.webhook_id, h.webhook_timestamp, h.webhook_signature,
                                      h.body, h.received_s)
          .has_value();
    };
    CHECK(check(old_key));
    CHECK(check(new_key));
    CHECK_FALSE(check(other_key));
  }
}

TEST_CASE("Webhook: the Python verification of docs/ADAPTERS.md accepts what the sink sent") {
  test::TempDir dir("webhook-sign");
  test::BrokerProcess broker(dir.str("broker"));
  const std::string old_file = dir.str("old.whsec");
  const std::string new_file = dir.str("new.whsec");
  test::write_secret(old_file);
  test::write_secret(new_file);
  test::Endpoint endpoint([](const test::Hit&, std::size_t) { return test::Reply{200, "ok"}; });
  const auto evs = test::generate(1, 34);
  test::publish_all(broker.endpoint(), dir.str("outbox"), evs);
  toml::table t = test::webhook_table("py", endpoint.url());
  t.insert_or_assign("secret_file", new_file);
  t.insert("previous_secret_file", old_file);
  auto adapter = test::make(t, test::context(dir, broker));
  REQUIRE(test::started(*adapter));
  REQUIRE(test::wait_until([&] { return endpoint.keys_answered(200) == test::ids_of(evs); }));
  adapter->stop();

  const test::Hit h = endpoint.hits().front();
  const std::string req_dir = dir.str("request");
  std::filesystem::create_directories(req_dir);
  std::ofstream(req_dir + "/body", std::ios::binary) << h.body;
  std::ofstream(req_dir + "/request.json") << nlohmann::json{
      {"headers",
       {{"webhook-id", h.webhook_id},
        {"webhook-timestamp", h.webhook_timestamp},
        {"webhook-signature", h.webhook_signature},
        {"idempotency-key", h.key},
        {"content-type", h.content_type}}},
      {"body_file", "body"},
      {"secret_files", {new_file, old_file}}}.dump();
  const std::string src = KOLABUS_SOURCE_DIR;
  const Run r = run(std::string(KOLABUS_PYTHON3) + " " + src +
                        "/tests/adapters/sinks/check_verify_snippets.py --doc " + src +
                        "/docs/ADAPTERS.md --request " + req_dir,
                    dir.str("python.out"));
  INFO(r.out);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("the request as the sink sent it: accepted") != std::string::npos);
  CHECK(r.out.find("FAIL") == std::string::npos);
}

TEST_CASE(
    "kolabus keygen --webhook writes a new secret at mode 0600 and keeps it without --force") {
  test::TempDir dir("webhook-keygen");
  const std::string keys = dir.str("keys");
  const std::string file = keys + "/dinkes-births.whsec";
  const std::string cli = KOLABUS_CLI_BIN;
  Run r = run(cli + " keygen dinkes-births --webhook --dir " + keys, dir.str("out"));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("wrote " + file) != std::string::npos);
  CHECK(mode_of(file) == 0600);
  CHECK(mode_of(keys) == 0700);
  const std::string first = read_file(file);
  CHECK(first.rfind("whsec_", 0) == 0);
  CHECK(r.out.find(first.substr(6, 44)) == std::string::npos);  // never printed
  auto key = adapters::load_webhook_secret(file);
  REQUIRE(key.has_value());
  CHECK(key->size() == 32);

  r = run(cli + " keygen dinkes-births --webhook --dir " + keys, dir.str("out"));
  CHECK(r.exit_code == 2);
  CHECK(r.out.find("already exists") != std::string::npos);
  CHECK(r.out.find("--force") != std::string::npos);
  CHECK(read_file(file) == first);

  r = run(cli + " keygen dinkes-births --webhook --force --json --dir " + keys, dir.str("out"));
  CHECK(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["secret_file"] == file);
  CHECK(j["name"] == "dinkes-births");
  CHECK(read_file(file) != first);
  CHECK(mode_of(file) == 0600);
  CHECK(r.out.find("whsec_") == std::string::npos);
}
