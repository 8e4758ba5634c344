// A minimal Redis client over TCP (no hiredis): RESP2 commands as arrays of bulk
// strings, written into a buffer and sent with flush() (pipelining), and a reply
// parser for the five RESP2 types, nested arrays included (XREAD).
//
// Ownership: owns its connection (move-only). Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "tcp.h"
#include <common/result.h>

namespace kolabus::bench {

struct RespValue {
  enum class Type { kSimple, kError, kInteger, kBulk, kArray, kNull };
  Type type = Type::kNull;
  std::string str;  // simple string, error, bulk string
  std::int64_t integer = 0;
  std::vector<RespValue> elements;
};

class RespConnection {
 public:
  static Result<RespConnection> connect(int port);

  // Buffers one command.
  void command(std::initializer_list<std::string_view> args);
  // Buffers a command whose last argument, `size` bytes, the caller appends to
  // out() followed by "\r\n".
  void command_head(std::initializer_list<std::string_view> args, std::size_t last_size);
  std::string& out() { return out_; }
  Status flush();

  // Waits up to `timeout` for replies (0: only what is there) and calls `on_reply`
  // for each complete one, in order. Returns how many.
  Result<std::size_t> poll(std::chrono::milliseconds timeout,
                           const std::function<void(const RespValue&)>& on_reply);
  // Sends one command and waits for its reply. REQUIRES: no other reply pending.
  Result<RespValue> call(std::initializer_list<std::string_view> args,
                         std::chrono::milliseconds timeout);

 private:
  TcpConnection conn_;
  std::string in_;
  std::size_t pos_ = 0;
  std::string out_;
};

}  // namespace kolabus::bench
