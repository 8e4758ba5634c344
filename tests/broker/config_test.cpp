#include <doctest/doctest.h>

#include <broker/config.h>

using namespace kolabus;

TEST_CASE("Config: every key is optional and defaults are sane") {
  auto c = broker::parse_config("", "broker.toml");
  REQUIRE(c.has_value());
  CHECK(c->server.endpoint == "tcp://127.0.0.1:7400");
  CHECK(c->server.max_message_bytes == 1048576);
  CHECK(c->data_dir == "var/broker");
  CHECK(c->regions_file.empty());
  CHECK(c->server.disk_reserve_bytes == 64 << 20);
}

TEST_CASE("Config: values are read") {
  auto c = broker::parse_config(R"(
[broker]
endpoint = "tcp://127.0.0.1:9999"
max_message_bytes = 4096
max_clock_skew_seconds = 60
disk_reserve_bytes = 1048576
[regions]
file = "x.csv"
[log]
level = "debug"
)",
                                "b.toml");
  REQUIRE(c.has_value());
  CHECK(c->server.endpoint == "tcp://127.0.0.1:9999");
  CHECK(c->server.max_message_bytes == 4096);
  CHECK(c->max_clock_skew_ms == 60000);
  CHECK(c->server.disk_reserve_bytes == 1048576);
  CHECK(c->regions_file == "x.csv");
  CHECK(c->log_level == "debug");
}

TEST_CASE("Config: mistakes are errors that name the key") {
  SUBCASE("unknown key") {
    auto c = broker::parse_config("[broker]\nendpont = \"x\"\n", "b.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().message.find("broker.endpont") != std::string::npos);
  }
  SUBCASE("wrong type") {
    auto c = broker::parse_config("[broker]\nmax_message_bytes = \"big\"\n", "b.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().message.find("max_message_bytes") != std::string::npos);
  }
  SUBCASE("syntax error names the line") {
    auto c = broker::parse_config("[broker]\nendpoint = \n", "b.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().message.find("line 2") != std::string::npos);
  }
  SUBCASE("unknown section") {
    auto c = broker::parse_config("[brokr]\n", "b.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().message.find("brokr") != std::string::npos);
  }
  // Found by fuzzing: a float where an integer belongs converted out of range inside
  // toml++, and huge values overflowed when added to times.
  SUBCASE("a float, however large, is not an integer") {
    auto c = broker::parse_config("[broker]\nmax_batch_bytes = 8e76\n", "b.toml");
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().message.find("max_batch_bytes") != std::string::npos);
  }
  SUBCASE("times that would overflow are refused") {
    for (const char* text : {"[broker]\nmax_clock_skew_seconds = 9223372036854775807\n",
                             "[broker]\nclient_timeout_ms = 9223372036854775807\n"}) {
      auto c = broker::parse_config(text, "b.toml");
      REQUIRE_FALSE(c.has_value());
      CHECK(c.error().message.find("at most") != std::string::npos);
    }
  }
}

TEST_CASE("Config: the audit key is beside the broker's key unless configured, never in the data") {
  auto c = broker::parse_config(R"(
[broker]
data_dir = "/srv/kolabus/data"
[security]
key_file = "/etc/kolabus/keys/broker.key"
agencies_file = "/etc/kolabus/agencies.toml"
)",
                                "b.toml");
  REQUIRE(c.has_value());
  CHECK(c->audit_key_file.empty());
  CHECK(broker::audit_key_path(*c) == "/etc/kolabus/keys/audit.key");
  c->audit_key_file = "/etc/kolabus/secret/nik.key";  // --audit-key
  CHECK(broker::audit_key_path(*c) == "/etc/kolabus/secret/nik.key");

  auto set = broker::parse_config("[security]\naudit_key_file = \"/k/audit.key\"\n", "b.toml");
  REQUIRE(set.has_value());
  CHECK(set->audit_key_file == "/k/audit.key");
  CHECK(broker::audit_key_path(*set) == "/k/audit.key");

  // Development mode has no keys: the data directory, as before.
  auto dev = broker::parse_config(
      "[broker]\ndata_dir = \"d\"\n[security]\nmode = \"dev\"\n"
      "key_file = \"k/broker.key\"\n",
      "b.toml");
  REQUIRE(dev.has_value());
  CHECK(broker::audit_key_path(*dev) == "d/audit.key");

  auto bad = broker::parse_config("[security]\naudit_key_file = 7\n", "b.toml");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("security.audit_key_file") != std::string::npos);
}
