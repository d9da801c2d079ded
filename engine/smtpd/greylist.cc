// greylist.cc - volley-sink's greylisting table; see greylist.h.
#include "engine/smtpd/greylist.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::smtpd {

Greylist::Greylist(size_t max_entries) : max_entries_(max_entries == 0 ? 1 : max_entries) {}

bool Greylist::Pass(std::string_view sender, std::string_view recipient, absl::Duration delay,
                    absl::Time now) {
  std::string key = absl::StrCat(base::Sv(sender), absl::string_view("\0", 1), base::Sv(recipient));
  absl::AsciiStrToLower(&key);
  const std::lock_guard<std::mutex> lock(mu_);
  auto it = first_seen_.find(key);
  if (it != first_seen_.end()) return now - it->second >= delay;
  while (first_seen_.size() >= max_entries_ && !order_.empty()) {
    first_seen_.erase(order_.front());
    order_.pop_front();
  }
  first_seen_.emplace(key, now);
  order_.push_back(std::move(key));
  return false;
}

size_t Greylist::size() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return first_seen_.size();
}

}  // namespace volley::smtpd
