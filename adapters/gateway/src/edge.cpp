#include "edge.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kolabus::adapters::gateway {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

thread_local RequestState tls_request;

// Connections waiting for a thread, shared by the pool (which writes it) and the
// connections (which read it).
using WaitingCount = std::atomic<std::size_t>;

// httplib's TaskQueue for accepted connections: a thread per connection being served,
// started when no idle one is there, up to `max`; past that, connections wait in order.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  ConnectionPool(std::size_t max, std::shared_ptr<WaitingCount> waiting)
      : max_(std::max<std::size_t>(1, max)), waiting_(std::move(waiting)) {}
  ~ConnectionPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > idle_ + starting_ && threads_.size() < max_) {
      ++starting_;
      threads_.emplace_back([this] { work(); });
    }
    publish_waiting();
    cv_.notify_one();
  }

  // Runs what is queued (each connection sees the server stopping and closes), then
  // joins every thread.
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    --starting_;
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      publish_waiting();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  // Connections no thread will take: neither an idle one nor one being started.
  void publish_waiting() {
    const std::size_t free = idle_ + starting_;
    waiting_->store(jobs_.size() > free ? jobs_.size() - free : 0);
  }

  const std::size_t max_;
  std::shared_ptr<WaitingCount> waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  std::size_t starting_ = 0;
  bool stopping_ = false;
};

enum class Waited { kReady, kTimeout, kStopped, kError };
constexpr ssize_t kWouldBlock = -2;

// One accepted connection, plain or TLS, as an httplib::Stream whose reads know which
// part of the request they are reading and its deadline.
class Connection final : public httplib::Stream {
 public:
  Connection(socket_t sock, SSL_CTX* tls, const std::atomic<socket_t>& listener,
             const EdgeLimits& limits, const WaitingCount& waiting)
      : sock_(sock), tls_ctx_(tls), listener_(listener), limits_(limits), waiting_(waiting) {}
  ~Connection() override {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The header phase of a request begins: now, or at the accept for the first one.
  void start_request() {
    phase_ = Phase::kHeaders;
    started_ = Clock::now();
    deadline_ = started_ + limits_.header_timeout;
    header_bytes_ = 0;
    header_lines_ = 0;
    written_ = 0;
    tls_request = RequestState{};
    tls_request.started = started_;
  }
  void start_body() {
    if (phase_ != Phase::kHeaders) return;
    phase_ = Phase::kBody;
    deadline_ = Clock::now() + limits_.body_timeout;
  }

  // The TLS handshake, within the first request's header deadline.
  bool handshake() {
    if (tls_ctx_ == nullptr) return true;
    ssl_ = SSL_new(tls_ctx_);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, sock_) != 1) return false;
    for (;;) {
      ERR_clear_error();
      const int r = SSL_accept(ssl_);
      if (r == 1) return true;
      short want = 0;
      switch (SSL_get_error(ssl_, r)) {
        case SSL_ERROR_WANT_READ:
          want = POLLIN;
          break;
        case SSL_ERROR_WANT_WRITE:
          want = POLLOUT;
          break;
        default:
          return false;
      }
      if (wait_for(want, /*stoppable=*/true) != Waited::kReady) return false;
    }
  }

  // Between two requests: true once the next one's first byte is there.
  bool wait_next_request() {
    if (buffered()) return true;
    const auto deadline = Clock::now() + limits_.keep_alive_timeout;
    for (;;) {
      // Idle connections make way for waiting ones.
      if (listener_.load() == INVALID_SOCKET || waiting_.load() > 0) return false;
      const auto now = Clock::now();
      if (now >= deadline) return false;
      const auto slice = std::min<Clock::duration>(deadline - now, 50ms);
      pollfd p{sock_, POLLIN, 0};
      const int r = ::poll(
          &p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  // A response of our own when the edge cut the request before httplib could answer.
  void answer_cut() {
    if (written_ > 0) return;
    const bool timeout =
        tls_request.cut == Cut::kHeaderTimeout || tls_request.cut == Cut::kBodyTimeout;
    const std::string body = timeout ? R"({"error":"request timeout: the request line and headers )"
                                       R"(did not arrive in time"})"
                                     : R"({"error":"request header fields too large"})";
    const std::string head =
        std::string("HTTP/1.1 ") +
        (timeout ? "408 Request Timeout" : "431 Request Header Fields Too Large") +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n";
    const std::string all = head + body;
    write(all.data(), all.size());
  }

  // Ends the connection. With `drain`, the client may still be sending a body we did not
  // read: stop writing, then read and drop what comes for a moment, so that closing with
  // unread data (a reset) does not destroy the response before the client reads it.
  void close(bool graceful, bool drain) {
    if (ssl_ != nullptr && graceful) {
      ERR_clear_error();
      SSL_shutdown(ssl_);
    }
    if (drain) {
      ::shutdown(sock_, SHUT_WR);
      const auto until = Clock::now() + 500ms;
      std::size_t dropped = 0;
      char buf[4096];
      while (dropped < (1u << 20) && Clock::now() < until) {
        pollfd p{sock_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const ssize_t n = ::recv(sock_, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) break;
        if (n > 0) dropped += static_cast<std::size_t>(n);
      }
    }
    ::shutdown(sock_, SHUT_RDWR);
    ::close(sock_);
  }

  // ---- httplib::Stream ----------------------------------------------------

  bool is_readable() const override {
    if (buffered()) return true;
    pollfd p{sock_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  bool is_writable() const override {
    pollfd p{sock_, POLLOUT, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  ssize_t read(char* ptr, size_t size) override {
    if (size == 0) return 0;
    if (phase_ == Phase::kHeaders) {
      if (header_bytes_ >= limits_.max_header_bytes) return cut(Cut::kHeadersTooLarge);
      // Request line + headers + the blank line.
      if (header_lines_ >= limits_.max_headers + 2) return cut(Cut::kTooManyHeaders);
      size = std::min(size, limits_.max_header_bytes - header_bytes_);
    }
    if (off_ == len_) {
      const ssize_t r = fill();
      if (r <= 0) return r;
    }
    const std::size_t n = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_ + off_, n);
    if (phase_ == Phase::kHeaders) {
      header_bytes_ += n;
      header_lines_ += static_cast<std::size_t>(std::count(ptr, ptr + n, '\n'));
    }
    off_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    const auto deadline = Clock::now() + limits_.write_timeout;
    std::size_t done = 0;
    while (done < size) {
      short want = 0;
      const ssize_t r = send_some(ptr + done, size - done, want);
      if (r > 0) {
        done += static_cast<std::size_t>(r);
        continue;
      }
      if (r != kWouldBlock) return -1;
      if (wait_until(want, deadline, /*stoppable=*/false) != Waited::kReady) return -1;
    }
    written_ += done;
    return static_cast<ssize_t>(done);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      name_of(addr, len, ip, port);
    }
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      name_of(addr, len, ip, port);
    }
  }
  socket_t socket() const override { return sock_; }

 private:
  enum class Phase { kHeaders, kBody };

  static void name_of(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port) {
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof host, serv,
                      sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  bool buffered() const { return off_ < len_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0); }

  ssize_t cut(Cut why) {
    tls_request.cut = why;
    return -1;
  }

  // Reads what is available into the buffer, waiting up to the phase's deadline.
  ssize_t fill() {
    for (;;) {
      short want = 0;
      const ssize_t r = recv_some(buf_, sizeof buf_, want);
      if (r != kWouldBlock) {
        off_ = 0;
        len_ = r > 0 ? static_cast<std::size_t>(r) : 0;
        return r;
      }
      switch (wait_for(want, /*stoppable=*/phase_ == Phase::kHeaders)) {
        case Waited::kReady:
          break;
        case Waited::kTimeout:
          return cut(phase_ == Phase::kHeaders ? Cut::kHeaderTimeout : Cut::kBodyTimeout);
        case Waited::kStopped:
        case Waited::kError:
          return -1;
      }
    }
  }

  // Waits for the socket up to the phase's deadline; in the header phase, also until
  // the server stops, and only header_timeout_when_busy while connections wait.
  Waited wait_for(short events, bool stoppable) { return wait_until(events, deadline_, stoppable); }
  Waited wait_until(short events, Clock::time_point deadline, bool stoppable) {
    for (;;) {
      if (stoppable && listener_.load() == INVALID_SOCKET) return Waited::kStopped;
      const auto now = Clock::now();
      auto until = deadline;
      if (stoppable && phase_ == Phase::kHeaders && waiting_.load() > 0) {
        until = std::min(until, started_ + limits_.header_timeout_when_busy);
      }
      if (now >= until) return Waited::kTimeout;
      const auto slice = std::min<Clock::duration>(until - now, 50ms);
      pollfd p{sock_, events, 0};
      const int r = ::poll(
          &p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
      if (r > 0) return Waited::kReady;
      if (r < 0 && errno != EINTR) return Waited::kError;
    }
  }

  ssize_t tls_result(int r, short& want) {
    switch (SSL_get_error(ssl_, r)) {
      case SSL_ERROR_WANT_READ:
        want = POLLIN;
        return kWouldBlock;
      case SSL_ERROR_WANT_WRITE:
        want = POLLOUT;
        return kWouldBlock;
      case SSL_ERROR_ZERO_RETURN:
        return 0;
      default:
        return -1;
    }
  }

  // > 0 bytes, 0 end of stream, -1 error, kWouldBlock with `want` the poll events.
  ssize_t recv_some(char* buf, std::size_t n, short& want) {
    if (ssl_ != nullptr) {
      ERR_clear_error();
      const int r = SSL_read(ssl_, buf, static_cast<int>(std::min<std::size_t>(n, INT_MAX)));
      return r > 0 ? r : tls_result(r, want);
    }
    for (;;) {
      const ssize_t r = ::recv(sock_, buf, n, MSG_DONTWAIT);
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        want = POLLIN;
        return kWouldBlock;
      }
      return -1;
    }
  }
  ssize_t send_some(const char* buf, std::size_t n, short& want) {
    if (ssl_ != nullptr) {
      ERR_clear_error();
      const int r = SSL_write(ssl_, buf, static_cast<int>(std::min<std::size_t>(n, INT_MAX)));
      return r > 0 ? r : tls_result(r, want);
    }
    for (;;) {
      const ssize_t r = ::send(sock_, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        want = POLLOUT;
        return kWouldBlock;
      }
      return -1;
    }
  }

  const socket_t sock_;
  SSL_CTX* const tls_ctx_;
  SSL* ssl_ = nullptr;
  const std::atomic<socket_t>& listener_;
  const EdgeLimits& limits_;
  const WaitingCount& waiting_;

  Phase phase_ = Phase::kHeaders;
  Clock::time_point started_{};
  Clock::time_point deadline_{};
  std::size_t header_bytes_ = 0;
  std::size_t header_lines_ = 0;
  std::size_t written_ = 0;
  char buf_[4096];
  std::size_t off_ = 0;
  std::size_t len_ = 0;
};

thread_local Connection* tls_connection = nullptr;

// What the gateway may ask of an edge server beyond httplib::Server's interface.
class EdgeControl {
 public:
  virtual ~EdgeControl() = default;
  virtual void set_backlog(int backlog) = 0;
};

// httplib's server (plain or TLS) with our connection loop in place of its own.
template <typename Base>
class EdgeServer final : public Base, public EdgeControl {
 public:
  template <typename... Args>
  explicit EdgeServer(const EdgeLimits& limits, Args&&... args)
      : Base(std::forward<Args>(args)...),
        limits_(limits),
        waiting_(std::make_shared<WaitingCount>(0)) {
    this->new_task_queue = [max = limits_.max_connections, waiting = waiting_] {
      return new ConnectionPool(max, waiting);
    };
  }

  void set_backlog(int backlog) override {
    const socket_t sock = this->svr_sock_.load();
    if (sock != INVALID_SOCKET) ::listen(sock, backlog);
  }

 private:
  // Overrides httplib's (private) per-connection loop: detail::process_server_socket with
  // a SocketStream or SSLSocketStream per request, which bound only each read.
  bool process_and_close_socket(socket_t sock) override {
    SSL_CTX* ctx = nullptr;
    if constexpr (std::is_same_v<Base, httplib::SSLServer>) ctx = this->ssl_context();
    const int flags = ::fcntl(sock, F_GETFL, 0);
    if (flags >= 0) ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);

    Connection conn(sock, ctx, this->svr_sock_, limits_, *waiting_);
    conn.start_request();
    bool ok = false;
    bool drain = false;
    if (conn.handshake()) {
      tls_connection = &conn;
      for (std::size_t left = limits_.keep_alive_max; left > 0; --left) {
        if (left != limits_.keep_alive_max) {
          if (!conn.wait_next_request()) break;
          conn.start_request();
        }
        const bool last = left == 1 || this->svr_sock_.load() == INVALID_SOCKET;
        bool closed = false;
        ok = this->process_request(conn, last, closed, nullptr);
        if (!ok && tls_request.cut != Cut::kNone) conn.answer_cut();
        drain = tls_request.close;
        if (!ok || closed || tls_request.close || tls_request.cut != Cut::kNone) break;
      }
      tls_connection = nullptr;
    }
    conn.close(ok, drain);
    return ok;
  }

  const EdgeLimits limits_;
  std::shared_ptr<WaitingCount> waiting_;
};

std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

}  // namespace

RequestState& current_request() { return tls_request; }

void set_listen_backlog(httplib::Server& server, int backlog) {
  if (auto* edge = dynamic_cast<EdgeControl*>(&server)) edge->set_backlog(backlog);
}

void headers_complete() {
  if (tls_connection != nullptr) tls_connection->start_body();
}

Result<std::unique_ptr<httplib::Server>> make_edge_server(const EdgeLimits& limits,
                                                          const std::optional<TlsFiles>& tls) {
  if (!tls) return std::unique_ptr<httplib::Server>(new EdgeServer<httplib::Server>(limits));
  ERR_clear_error();
  auto svr =
      std::make_unique<EdgeServer<httplib::SSLServer>>(limits, tls->cert.c_str(), tls->key.c_str());
  if (!svr->is_valid()) {
    return unexpected(Errc::kInvalidArgument, "cannot load the TLS certificate " + tls->cert +
                                                  " and key " + tls->key + ": " + openssl_errors());
  }
  SSL_CTX_set_min_proto_version(svr->ssl_context(), TLS1_2_VERSION);
  return std::unique_ptr<httplib::Server>(std::move(svr));
}

}  // namespace kolabus::adapters::gateway
