// Result<T> and Status: expected failures as values.
//
// The member names follow std::expected (C++23), so that a later switch to it is a
// `using`. An Error is a code from one small enum plus a message for people.
// Protocol errors that travel to clients use kolabus::protocol::ErrorCode (in
// schemas/protocol.fbs) instead; this enum is for failures inside one process.
//
// Thread-safety: values; no shared state.
#pragma once

#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>
#include <variant>

namespace kolabus {

enum class Errc {
  kNotFound,
  kInvalidArgument,
  kCorruption,   // stored bytes that do not decode: data at risk, never ignore
  kIoError,      // disk full, permission, read-only filesystem: often transient
  kBusy,         // lock held by another process
  kUnavailable,  // a peer is not there (yet)
  kInternal,
};

inline const char* errc_name(Errc c) {
  switch (c) {
    case Errc::kNotFound:
      return "not found";
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kCorruption:
      return "corruption";
    case Errc::kIoError:
      return "I/O error";
    case Errc::kBusy:
      return "busy";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kInternal:
      return "internal error";
  }
  return "unknown";
}

struct Error {
  Errc code = Errc::kInternal;
  std::string message;

  std::string to_string() const { return std::string(errc_name(code)) + ": " + message; }
};

template <typename E>
struct Unexpected {
  E error;
};
inline Unexpected<Error> unexpected(Errc code, std::string message) {
  return {Error{code, std::move(message)}};
}
inline Unexpected<Error> unexpected(Error e) { return {std::move(e)}; }

// A broken invariant is a bug: abort loudly, in release builds too.
[[noreturn]] inline void fail_invariant(const char* what, const char* file, int line) {
  std::cerr << "kolabus: invariant broken: " << what << " at " << file << ":" << line << std::endl;
  std::abort();
}
#define KOLABUS_CHECK(cond) \
  ((cond) ? (void)0 : ::kolabus::fail_invariant(#cond, __FILE__, __LINE__))

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT implicit
  Result(Unexpected<Error> e) : v_(std::in_place_index<1>, std::move(e.error)) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & {
    KOLABUS_CHECK(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    KOLABUS_CHECK(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    KOLABUS_CHECK(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const {
    KOLABUS_CHECK(!has_value());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Unexpected<Error> e) : ok_(false), error_(std::move(e.error)) {}  // NOLINT
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const { KOLABUS_CHECK(ok_); }
  const Error& error() const {
    KOLABUS_CHECK(!ok_);
    return error_;
  }

 private:
  bool ok_ = true;
  Error error_;
};

using Status = Result<void>;

}  // namespace kolabus
