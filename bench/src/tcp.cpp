#include "tcp.h"

#include <cerrno>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kolabus::bench {

TcpConnection& TcpConnection::operator=(TcpConnection&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

TcpConnection::~TcpConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Result<TcpConnection> TcpConnection::connect(int port) {
  TcpConnection c;
  c.fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd_ < 0) return unexpected(Errc::kIoError, std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return unexpected(Errc::kUnavailable,
                      "connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

Status TcpConnection::write_all(std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return unexpected(Errc::kUnavailable, std::string("write: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Result<std::size_t> TcpConnection::read_some(std::string& in, std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return std::size_t{0};
  const std::size_t old = in.size();
  std::size_t total = 0;
  // Read what is there, in chunks, without waiting again.
  for (;;) {
    in.resize(old + total + 65536);
    const ssize_t n = ::recv(fd_, in.data() + old + total, 65536, MSG_DONTWAIT);
    if (n > 0) {
      total += static_cast<std::size_t>(n);
      if (n < 65536) break;
      continue;
    }
    in.resize(old + total);
    if (n == 0) {
      if (total > 0) return total;
      return unexpected(Errc::kUnavailable, "connection closed by the server");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return total;
    return unexpected(Errc::kUnavailable, std::string("read: ") + std::strerror(errno));
  }
  in.resize(old + total);
  return total;
}

}  // namespace kolabus::bench
