// A blocking TCP connection to 127.0.0.1 with an input buffer, for the text-protocol
// clients (NATS, RESP). Writes are buffered by the caller and sent with write_all();
// reads append whatever the kernel has to `in`, waiting up to a timeout.
//
// Ownership: owns its file descriptor (move-only).
// Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include <common/result.h>

namespace kolabus::bench {

class TcpConnection {
 public:
  TcpConnection() = default;
  TcpConnection(TcpConnection&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  TcpConnection& operator=(TcpConnection&& o) noexcept;
  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;
  ~TcpConnection();

  // Connects to 127.0.0.1:port (TCP_NODELAY). kUnavailable if refused.
  static Result<TcpConnection> connect(int port);

  Status write_all(std::string_view data);
  // Waits up to `timeout` (0: not at all) for data, appends what is there to `in`.
  // Returns the number of bytes read (0: nothing came); kUnavailable when the peer
  // closed the connection.
  Result<std::size_t> read_some(std::string& in, std::chrono::milliseconds timeout);

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace kolabus::bench
