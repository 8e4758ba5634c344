// Clock: the only source of "now" for code that makes time-based decisions, so that
// tests can drive it. Times are UTC milliseconds since the Unix epoch.
//
// Thread-safety: SystemClock is stateless; ManualClock is safe to read and advance
// from several threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace kolabus {

using TimeMs = std::int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimeMs now_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimeMs now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimeMs start) : now_(start) {}
  TimeMs now_ms() const override { return now_.load(); }
  void set(TimeMs t) { now_.store(t); }
  void advance(TimeMs d) { now_.fetch_add(d); }

 private:
  std::atomic<TimeMs> now_;
};

}  // namespace kolabus
