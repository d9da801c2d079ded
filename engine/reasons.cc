#include "engine/reasons.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::engine {

bool LooksLikeGreylisting(std::string_view text) {
  // Replies are bounded (engine/smtp/reply.h), so a lower-case copy is cheap.
  const std::string lower = absl::AsciiStrToLower(base::Sv(text));
  for (const std::string_view word : {"greylist", "graylist", "grey-list", "gray-list"}) {
    if (lower.find(word) != std::string::npos) return true;
  }
  return false;
}

ReplyScope ScopeOf(const smtp::Outcome& reply, std::string_view klass) {
  if (reply.kind != smtp::Outcome::Kind::kTransient || reply.stage != smtp::Stage::kRcpt ||
      reply.code < 400 || reply.code > 499 || reply.code == 421) {
    return ReplyScope::kRoute;
  }
  if (reply.enhanced.starts_with("4.4.")) return ReplyScope::kRoute;
  const bool route_class = std::find(std::begin(kRouteClasses), std::end(kRouteClasses),
                                     klass) != std::end(kRouteClasses);
  if (route_class && !LooksLikeGreylisting(reply.text)) return ReplyScope::kRoute;
  return ReplyScope::kRecipient;
}

std::string_view CutUtf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  // Back off continuation bytes (10xxxxxx): the cut lands before a sequence.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

bool Reachability::OnConnectFailed(std::string_view host, std::string_view error,
                                   absl::Time next_try, absl::Time now) {
  std::string described =
      absl::StrCat("cannot connect to ", base::Sv(host), ": ",
                   base::Sv(CutUtf8(error, kMaxReachErrorBytes)));
  // Nothing waited this time (it was deferred by an earlier failure): the
  // next try known before still stands while it is ahead.
  if (next_try != absl::InfiniteFuture() || next_try_ <= now) next_try_ = next_try;
  if (unreachable_ && described == last_error_) return false;
  if (!unreachable_) since_ = now;
  unreachable_ = true;
  last_error_ = std::move(described);
  return true;
}

bool Reachability::OnConnected() {
  if (!unreachable_) return false;
  unreachable_ = false;
  last_error_.clear();
  next_try_ = absl::InfiniteFuture();
  since_ = absl::InfinitePast();
  return true;
}

std::string Reachability::Describe(absl::Time now) const {
  if (next_try_ == absl::InfiniteFuture()) return last_error_;
  // Whole seconds, rounded up: "in 0" would read as "now" for a retry 0.8 s away.
  const absl::Duration in =
      std::max(absl::ZeroDuration(), absl::Ceil(next_try_ - now, absl::Seconds(1)));
  return absl::StrCat(last_error_, "; next try in ", absl::FormatDuration(in));
}

}  // namespace volley::engine
