// Private files, as an adversary on the same machine would try them: the broker's data
// directory is 0700 with files 0600 whatever the umask it starts with; a secret key
// (the broker's CURVE key pair, the audit chain's NIK key) that group or others may
// read stops the broker, naming the file and the fix; the NIK key is kept beside the
// broker's key, not in the data directory, and one found there (older releases) is
// moved out once, the same key, so that person queries still find earlier events.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker_process.h"
#include "file_modes.h"
#include "temp_dir.h"
#include "test_events.h"
#include <client/admin.h>
#include <client/curve.h>
#include <client/publisher.h>
#include <common/keys.h>

using namespace kolabus;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr TimeMs kDay = 24LL * 3600 * 1000;
// The mother of test::make_birth's child.
const std::string kMotherNik = "1271015203950001";

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One run of the broker: whether it served (it then got SIGTERM), its exit status when
// it stopped by itself, and everything it logged, at info level.
struct Run {
  bool served = false;
  int code = -1;  // when it exited by itself
  std::string output;
};

Run run_broker(const test::TempDir& dir, std::vector<std::string> args) {
  const std::string out_file = dir.str("run.out"), endpoint_file = dir.str("run.endpoint");
  fs::remove(endpoint_file);
  args.insert(args.end(), {"--endpoint-file", endpoint_file, "--log-level", "info"});
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    args.insert(args.begin(), KOLABUS_BROKER_BIN);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  bool exited = false;
  Run r;
  const bool settled = test::wait_until([&] {
    exited = ::waitpid(pid, &status, WNOHANG) == pid;
    r.served = !exited && fs::exists(endpoint_file);
    return exited || r.served;
  });
  if (!exited) {
    ::kill(pid, settled ? SIGTERM : SIGKILL);
    ::waitpid(pid, &status, 0);
  } else if (WIFEXITED(status)) {
    r.code = WEXITSTATUS(status);
  }
  r.output = slurp(out_file);
  return r;
}

KeyPair gen() {
  auto k = client::generate_key_pair();
  REQUIRE(k.has_value());
  return *k;
}

// A broker with CURVE: its key pair in dir/keys, a registry with one operating agency.
struct CurveSetup {
  test::TempDir dir{"private-broker"};
  KeyPair broker_keys = gen(), registry_keys = gen();

  CurveSetup() {
    REQUIRE(write_key_pair(dir.str("keys"), "broker", broker_keys, false).has_value());
    std::ofstream(dir.str("agencies.toml"))
        << "[[agency]]\nname = \"disdukcapil-medan\"\npublic_key = \"" << registry_keys.public_key
        << "\"\npublish = { kinds = [\"*\"], regions = [\"1271\"] }\n"
           // A person query reports only events within the asker's own receive grant.
           "subscribe = { kinds = [\"*\"], regions = [\"1271\"] }\n"
           "operate = true\n"
           "agreement = { pks = \"PKS/1\", purpose = \"registry\", valid_from = 2020-01-01, "
           "valid_until = 2099-12-31 }\n";
  }
  std::string data() const { return dir.str("data"); }
  std::string key_file() const { return dir.str("keys/broker.key"); }
  std::string audit_key() const { return dir.str("keys/audit.key"); }
  // For a BrokerProcess (which adds the data directory and the endpoint).
  std::vector<std::string> curve_args(std::vector<std::string> more = {}) const {
    std::vector<std::string> a{"--key", key_file(), "--agencies", dir.str("agencies.toml")};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
  // For run_broker: everything.
  std::vector<std::string> args(std::vector<std::string> more = {}) const {
    std::vector<std::string> a{"--data-dir", data(), "--endpoint", "tcp://127.0.0.1:*"};
    for (auto& c : curve_args(std::move(more))) a.push_back(std::move(c));
    return a;
  }
  client::CurveOptions as_registry() const { return {broker_keys.public_key, registry_keys}; }
  std::string log() const { return slurp(data() + ".log"); }
};

void publish_birth(const std::string& endpoint, const std::string& outbox,
                   client::CurveOptions curve = {}) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.outbox_dir = outbox;
  o.curve = std::move(curve);
  o.ack_timeout = 1000ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 300ms;
  auto pub = client::Publisher::open(o);
  REQUIRE(pub.has_value());
  REQUIRE((*pub)->publish(test::make_birth("1271011001", SystemClock().now_ms() - kDay)));
  REQUIRE((*pub)->wait_drained(20s));
  REQUIRE((*pub)->stats().refused == 0);
}

// The sequences of the events the audit chain links to the person with this NIK.
std::vector<std::uint64_t> person_sequences(client::AdminClient& admin, const std::string& nik) {
  std::vector<std::uint64_t> seqs;
  std::uint64_t from = 1;
  while (true) {
    auto page = admin.audit_person(nik, from, 1000, seqs);
    if (!page) FAIL(page.error().to_string());
    seqs = page->sequences;
    if (page->done) return seqs;
    from = page->next_index;
  }
}

}  // namespace

TEST_CASE("Private files: the broker's data directory is 0700 with files 0600 under umask 022") {
  const test::Umask mask(022);
  CurveSetup s;
  {
    test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
    publish_birth(broker.endpoint(), s.dir.str("outbox"), s.as_registry());
    broker.stop(SIGTERM);
  }
  std::size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(s.data())) {
    files += e.is_regular_file() ? 1 : 0;
  }
  CHECK(files > 5);
  auto open = test::not_private(s.data());
  CHECK_MESSAGE(open.empty(), test::joined(open));
  CHECK(test::mode_of(s.audit_key()) == 0600);
  CHECK(test::mode_of(s.data() + ".endpoint") == 0600);
  // The agency's outbox, made by the client library in the test's own process.
  open = test::not_private(s.dir.str("outbox"));
  CHECK_MESSAGE(open.empty(), test::joined(open));

  // A data directory an older release left 0755 is narrowed, and the log says so.
  fs::permissions(s.data(), fs::perms(0755));
  test::BrokerProcess again(s.data(), "tcp://127.0.0.1:*", s.curve_args());
  CHECK(test::mode_of(s.data()) == 0700);
  CHECK(contains(s.log(), "data directory " + s.data() + " was mode 0755"));
}

TEST_CASE("Private files: a group-readable broker key stops the broker, naming the file") {
  CurveSetup s;
  for (mode_t mode : {0640, 0604, 0660}) {
    INFO("mode ", test::mode_of(s.key_file()));
    REQUIRE(::chmod(s.key_file().c_str(), mode) == 0);
    const auto r = run_broker(s.dir, s.args());
    CHECK(!r.served);
    CHECK(r.code != 0);
    CHECK_MESSAGE(contains(r.output, "chmod 600 " + s.key_file()), r.output);
  }
  REQUIRE(::chmod(s.key_file().c_str(), 0600) == 0);
  test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
}

TEST_CASE("Private files: a group-readable audit.key stops the broker, naming the file") {
  CurveSetup s;
  { test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args()); }
  REQUIRE(fs::exists(s.audit_key()));
  SUBCASE("beside the broker's key") {
    REQUIRE(::chmod(s.audit_key().c_str(), 0640) == 0);
    const auto r = run_broker(s.dir, s.args());
    CHECK(!r.served);
    CHECK(r.code != 0);
    CHECK_MESSAGE(contains(r.output, "audit key file " + s.audit_key()), r.output);
    CHECK_MESSAGE(contains(r.output, "chmod 600 " + s.audit_key()), r.output);
  }
  SUBCASE("in the data directory of an older release") {
    fs::rename(s.audit_key(), s.data() + "/audit.key");
    REQUIRE(::chmod((s.data() + "/audit.key").c_str(), 0644) == 0);
    const auto r = run_broker(s.dir, s.args());
    CHECK(!r.served);
    CHECK(r.code != 0);
    CHECK_MESSAGE(contains(r.output, "chmod 600 " + s.data() + "/audit.key"), r.output);
    CHECK(!fs::exists(s.audit_key()));  // not moved
  }
}

TEST_CASE("Private files: audit.key is beside the broker's key, or where --audit-key says") {
  CurveSetup s;
  auto r = run_broker(s.dir, s.args());
  REQUIRE_MESSAGE(r.served, r.output);
  CHECK(fs::exists(s.audit_key()));
  CHECK(!fs::exists(s.data() + "/audit.key"));
  CHECK_MESSAGE(contains(r.output, "audit key " + s.audit_key() +
                                       " (made now; outside the data "
                                       "directory: back it up with the keys)"),
                r.output);
  const auto first = slurp(s.audit_key());
  r = run_broker(s.dir, s.args());
  REQUIRE(r.served);
  CHECK_MESSAGE(contains(r.output, "audit key " + s.audit_key() + " (loaded;"), r.output);
  CHECK(slurp(s.audit_key()) == first);

  // Configured elsewhere: the operator brings the key there. The broker does not make a
  // new one for a chain that has records; it says where it looked.
  const std::string elsewhere = s.dir.str("secrets/audit.key");
  r = run_broker(s.dir, s.args({"--audit-key", elsewhere}));
  CHECK(!r.served);
  CHECK(r.code != 0);
  CHECK_MESSAGE(contains(r.output, "no audit key at " + elsewhere), r.output);
  CHECK_MESSAGE(contains(r.output, "--new-audit-key"), r.output);
  CHECK(!fs::exists(elsewhere));

  fs::create_directories(s.dir.str("secrets"));
  fs::copy_file(s.audit_key(), elsewhere);
  fs::remove(s.audit_key());
  r = run_broker(s.dir, s.args({"--audit-key", elsewhere}));
  REQUIRE_MESSAGE(r.served, r.output);
  CHECK_MESSAGE(contains(r.output, "audit key " + elsewhere + " (loaded;"), r.output);
  CHECK(slurp(elsewhere) == first);
  CHECK(!fs::exists(s.audit_key()));

  // Development mode (no keys): in the data directory, as before.
  test::TempDir dev("private-dev");
  r = run_broker(dev, {"--dev", "--data-dir", dev.str("data"), "--endpoint", "tcp://127.0.0.1:*"});
  REQUIRE_MESSAGE(r.served, r.output);
  CHECK(test::mode_of(dev.str("data/audit.key")) == 0600);
  CHECK_MESSAGE(contains(r.output, "audit key " + dev.str("data/audit.key") +
                                       " (made now; development mode: in the data directory)"),
                r.output);
}

TEST_CASE("Private files: a lost audit.key is not silently replaced while the chain has records") {
  CurveSetup s;
  {
    test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
    publish_birth(broker.endpoint(), s.dir.str("outbox"), s.as_registry());
  }
  const auto old_key = slurp(s.audit_key());
  fs::remove(s.audit_key());
  const auto r = run_broker(s.dir, s.args());
  CHECK(!r.served);
  CHECK(r.code != 0);
  CHECK_MESSAGE(contains(r.output, "no audit key at " + s.audit_key()), r.output);
  CHECK(!fs::exists(s.audit_key()));

  // The operator's decision: a new key, and earlier events no longer match a NIK.
  test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args({"--new-audit-key"}));
  CHECK(fs::exists(s.audit_key()));
  CHECK(slurp(s.audit_key()) != old_key);
  auto ops = client::AdminClient::connect(broker.endpoint(), 10s, s.as_registry());
  REQUIRE(ops.has_value());
  CHECK(person_sequences(**ops, kMotherNik).empty());
}

TEST_CASE(
    "Private files: a data directory's audit.key moves beside the key, person queries go on") {
  CurveSetup s;
  // Development mode keeps the key in the data directory, as every release before did.
  {
    test::BrokerProcess broker(s.data());
    publish_birth(broker.endpoint(), s.dir.str("outbox-dev"));
  }
  REQUIRE(fs::exists(s.data() + "/audit.key"));
  const auto key = slurp(s.data() + "/audit.key");

  SUBCASE("moved once, the same key") {
    {
      test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
      CHECK(!fs::exists(s.data() + "/audit.key"));
      CHECK(slurp(s.audit_key()) == key);
      CHECK(test::mode_of(s.audit_key()) == 0600);
      CHECK_MESSAGE(
          contains(s.log(), "audit key moved from " + s.data() + "/audit.key to " + s.audit_key()),
          s.log());
      publish_birth(broker.endpoint(), s.dir.str("outbox"), s.as_registry());
      auto ops = client::AdminClient::connect(broker.endpoint(), 10s, s.as_registry());
      REQUIRE(ops.has_value());
      // The event published before the move (1) and the one after (2), one NIK hash.
      CHECK(person_sequences(**ops, kMotherNik) == std::vector<std::uint64_t>{1, 2});
    }
    // And on the next start, nothing to move.
    test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
    CHECK(slurp(s.audit_key()) == key);
    CHECK(!fs::exists(s.data() + "/audit.key"));
  }
  SUBCASE("a copy left by an interrupted move is removed") {
    fs::copy_file(s.data() + "/audit.key", s.audit_key());
    test::BrokerProcess broker(s.data(), "tcp://127.0.0.1:*", s.curve_args());
    CHECK(!fs::exists(s.data() + "/audit.key"));
    CHECK(slurp(s.audit_key()) == key);
  }
  SUBCASE("two different keys: the operator chooses") {
    std::string other = key;
    other[0] = other[0] == '0' ? '1' : '0';
    { std::ofstream(s.audit_key()) << other; }
    REQUIRE(::chmod(s.audit_key().c_str(), 0600) == 0);
    const auto r = run_broker(s.dir, s.args());
    CHECK(!r.served);
    CHECK(r.code != 0);
    CHECK_MESSAGE(contains(r.output, "two different audit keys"), r.output);
    CHECK(slurp(s.data() + "/audit.key") == key);  // nothing removed
  }
}
