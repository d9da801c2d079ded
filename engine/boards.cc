#include "engine/boards.h"

#include <algorithm>

namespace volley::engine {

bool JobBoard::ShardFinished(uint32_t job_no, size_t shard) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<bool>& done = finished_[job_no];
  if (done.empty()) done.resize(shards_, false);
  if (done[shard]) return false;
  done[shard] = true;
  if (!std::all_of(done.begin(), done.end(), [](bool b) { return b; })) return false;
  // Done: the job is marked so in the queue next, and no shard loads it again.
  finished_.erase(job_no);
  return true;
}

int SiteShares::Join(const std::string& key, size_t shard) {
  std::lock_guard<std::mutex> lock(mu_);
  reported_[shard].insert(key);
  return Mark(key, shard);
}

std::vector<int> SiteShares::Report(size_t shard, const std::vector<std::string>& active) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::flat_hash_set<std::string> now(active.begin(), active.end());
  for (const std::string& key : reported_[shard]) {
    if (now.contains(key)) continue;
    auto it = sharing_.find(key);
    if (it == sharing_.end()) continue;
    it->second[shard] = false;
    if (std::none_of(it->second.begin(), it->second.end(), [](bool b) { return b; })) {
      sharing_.erase(it);
    }
  }
  std::vector<int> counts;
  counts.reserve(active.size());
  for (const std::string& key : active) counts.push_back(Mark(key, shard));
  reported_[shard] = std::move(now);
  return counts;
}

int SiteShares::Mark(const std::string& key, size_t shard) {
  std::vector<bool>& who = sharing_[key];
  if (who.empty()) who.resize(shards_, false);
  who[shard] = true;
  return static_cast<int>(std::count(who.begin(), who.end(), true));
}

}  // namespace volley::engine
