#include <mutex>

#include "broker_db.h"
#include <storage/memory_consumer_store.h>

namespace kolabus::storage {

Status MemoryConsumerStore::apply(const ConsumerWrite& write) {
  detail::check_consumer_write(write);
  if (write.empty()) return {};
  std::unique_lock lock(mu_);
  if (fail_writes_.load()) return unexpected(Errc::kIoError, "injected failure");
  // The order the contract gives (consumer_store.h): erase, put, dead letters, removals.
  for (const auto& k : write.erase) {
    consumers_.erase(k);
    auto first = dead_letters_.lower_bound({k, 0});
    auto last = first;
    while (last != dead_letters_.end() && last->first.first == k) ++last;
    dead_letters_.erase(first, last);
  }
  for (const auto& c : write.put) consumers_.insert_or_assign(c.key, c);
  for (const auto& d : write.dead_letters) dead_letters_.insert_or_assign({d.key, d.sequence}, d);
  for (const auto& r : write.dead_letters_removed) dead_letters_.erase(r);
  return {};
}

Result<std::vector<ConsumerState>> MemoryConsumerStore::load_all() const {
  std::shared_lock lock(mu_);
  std::vector<ConsumerState> out;
  out.reserve(consumers_.size());
  for (const auto& [k, c] : consumers_) out.push_back(c);
  return out;
}

Result<std::vector<DeadLetterEntry>> MemoryConsumerStore::dead_letters(const ConsumerKey& key,
                                                                       std::uint64_t from,
                                                                       std::size_t max) const {
  std::shared_lock lock(mu_);
  std::vector<DeadLetterEntry> out;
  for (auto it = dead_letters_.lower_bound({key, from});
       it != dead_letters_.end() && it->first.first == key && out.size() < max; ++it) {
    out.push_back(it->second);
  }
  return out;
}

Result<std::uint64_t> MemoryConsumerStore::count_dead_letters(const ConsumerKey& key) const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (auto it = dead_letters_.lower_bound({key, 0});
       it != dead_letters_.end() && it->first.first == key; ++it) {
    ++n;
  }
  return n;
}

}  // namespace kolabus::storage
