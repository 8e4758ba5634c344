// MemoryConsumerStore: a ConsumerStore held in memory, for fast deterministic tests of
// the broker core. It honours the full ConsumerStore contract (the same contract suite
// runs on it and on the RocksDB store) but nothing survives the object.
//
// Thread-safety: as ConsumerStore (concurrent readers plus one writer); fail_writes()
// may be called from any thread.
#pragma once

#include <atomic>
#include <map>
#include <shared_mutex>
#include <utility>

#include <storage/consumer_store.h>

namespace kolabus::storage {

class MemoryConsumerStore final : public ConsumerStore {
 public:
  MemoryConsumerStore() = default;

  // While on, apply() returns Errc::kIoError ("injected failure") and stores nothing,
  // so tests can drive the broker's handling of a failing disk.
  void fail_writes(bool on) { fail_writes_.store(on); }

  Status apply(const ConsumerWrite& write) override;
  Result<std::vector<ConsumerState>> load_all() const override;
  Result<std::vector<DeadLetterEntry>> dead_letters(const ConsumerKey& key, std::uint64_t from,
                                                    std::size_t max) const override;
  Result<std::uint64_t> count_dead_letters(const ConsumerKey& key) const override;

 private:
  mutable std::shared_mutex mu_;
  std::map<ConsumerKey, ConsumerState> consumers_;
  // Ordered by (key, sequence), as on disk.
  std::map<std::pair<ConsumerKey, std::uint64_t>, DeadLetterEntry> dead_letters_;
  std::atomic<bool> fail_writes_{false};
};

}  // namespace kolabus::storage
