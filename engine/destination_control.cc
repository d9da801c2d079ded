// destination_control.cc - suspensions, retry commands and kept backoff levels
#include "engine/destination_control.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::engine {
namespace {

using Record = queue::Queue::DestinationRecord;

// Stored values are tab-separated fields; the reason is last and may hold
// anything printable but a tab (Suspend refuses control characters).
constexpr char kSuspensionVersion[] = "1";

// SplitFields - `value` cut at its first `fields - 1` tabs.
std::vector<std::string_view> SplitFields(std::string_view value, size_t fields) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < fields) {
    const size_t tab = value.find('\t');
    if (tab == std::string_view::npos) break;
    out.push_back(value.substr(0, tab));
    value.remove_prefix(tab + 1);
  }
  out.push_back(value);
  return out;
}

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

bool ParseMicros(std::string_view text, absl::Time* out) {
  int64_t us = 0;
  if (!absl::SimpleAtoi(base::Sv(text), &us)) return false;
  *out = absl::FromUnixMicros(us);
  return true;
}

}  // namespace

std::string EncodeSuspension(const Suspension& s) {
  return absl::StrCat(kSuspensionVersion, "\t", Micros(s.since), "\t", Micros(s.until), "\t",
                      base::Sv(s.by), "\t", base::Sv(s.reason));
}

absl::StatusOr<Suspension> DecodeSuspension(std::string_view domain, std::string_view value) {
  std::vector<std::string_view> f = SplitFields(value, 5);
  Suspension s;
  s.domain = std::string(domain);
  if (f.size() != 5 || f[0] != kSuspensionVersion || !ParseMicros(f[1], &s.since) ||
      !ParseMicros(f[2], &s.until)) {
    return absl::DataLossError(absl::StrCat("suspension of ", base::Sv(domain), ": corrupt record"));
  }
  s.by = std::string(f[3]);
  s.reason = std::string(f[4]);
  return s;
}

std::string EncodeKeptBackoff(const KeptBackoff& b) {
  return absl::StrCat(b.level, "\t", Micros(b.step_at), "\t", absl::ToInt64Microseconds(b.period),
                      "\t", base::Sv(b.reason));
}

absl::StatusOr<KeptBackoff> DecodeKeptBackoff(std::string_view value) {
  std::vector<std::string_view> f = SplitFields(value, 4);
  KeptBackoff b;
  int64_t period_us = 0;
  if (f.size() != 4 || !absl::SimpleAtoi(base::Sv(f[0]), &b.level) ||
      !ParseMicros(f[1], &b.step_at) || !absl::SimpleAtoi(base::Sv(f[2]), &period_us) ||
      b.level < 0 || period_us < 0) {
    return absl::DataLossError("kept backoff level: corrupt record");
  }
  b.period = absl::Microseconds(period_us);
  b.reason = std::string(f[3]);
  return b;
}

absl::StatusOr<std::string> NormalizeDomain(std::string_view domain) {
  if (domain.empty()) return absl::InvalidArgumentError("domain: empty");
  if (domain.size() > kMaxDomainName) {
    return absl::InvalidArgumentError(
        absl::StrCat("domain: longer than ", kMaxDomainName, " octets"));
  }
  std::string out;
  out.reserve(domain.size());
  for (char c : domain) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("domain: \"", base::Sv(domain),
                       "\" holds a character a domain cannot have (letters, digits, '-', '.', '_')"));
    }
    out.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (out.front() == '.' || out.back() == '.' || out.find("..") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("domain: \"", base::Sv(domain), "\" has an empty label"));
  }
  return out;
}

std::string FormatSuspensionDuration(absl::Duration d) {
  int64_t s = absl::ToInt64Seconds(d);
  if (s <= 0) return "0s";
  std::string out;
  if (s >= 86400 && s % 86400 == 0) return absl::StrCat(s / 86400, "d");
  if (s >= 3600) absl::StrAppend(&out, s / 3600, "h");
  s %= 3600;
  if (s >= 60) absl::StrAppend(&out, s / 60, "m");
  s %= 60;
  if (s > 0) absl::StrAppend(&out, s, "s");
  return out;
}

DestinationControl::DestinationControl(queue::Queue* queue, size_t shards)
    : queue_(queue),
      snapshot_(std::make_shared<const Suspensions>()),
      boxes_(std::max<size_t>(shards, 1)) {
  for (size_t i = 0; i < boxes_.size(); ++i) {
    pending_commands_.push_back(std::make_unique<std::atomic<size_t>>(0));
  }
}

absl::Status DestinationControl::Load(absl::Time now) {
  ASSIGN_OR_RETURN(auto kept, queue_->ListDestinationRecords(Record::kSuspension));
  std::vector<Suspension> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [domain, value] : kept) {
      absl::StatusOr<Suspension> s = DecodeSuspension(domain, value);
      if (!s.ok()) {
        base::LogWarning("%s; deleted", base::StdSv(s.status().message()));
        (void)queue_->DeleteDestinationRecord(Record::kSuspension, domain);
        continue;
      }
      if (s->until <= now) {
        ended.push_back(std::move(*s));
        continue;
      }
      suspensions_[domain] = std::move(*s);
    }
    Publish();
  }
  for (const Suspension& s : ended) {
    base::LogInfo("destination %s: suspension ended (set for %s by %s: %s)", s.domain,
                  FormatSuspensionDuration(s.until - s.since), s.by, s.reason);
    (void)queue_->DeleteDestinationRecord(Record::kSuspension, s.domain);
  }
  ASSIGN_OR_RETURN(auto backoff, queue_->ListDestinationRecords(Record::kBackoff));
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pool, value] : backoff) {
    absl::StatusOr<KeptBackoff> b = DecodeKeptBackoff(value);
    if (!b.ok()) {
      base::LogWarning("pool %s: %s; deleted", pool, base::StdSv(b.status().message()));
      (void)queue_->DeleteDestinationRecord(Record::kBackoff, pool);
      continue;
    }
    backoff_[pool] = std::move(*b);
  }
  return absl::OkStatus();
}

absl::StatusOr<Suspension> DestinationControl::Suspend(std::string_view domain,
                                                       absl::Duration duration,
                                                       std::string_view reason,
                                                       std::string_view by, absl::Time now) {
  ASSIGN_OR_RETURN(std::string name, NormalizeDomain(domain));
  if (duration == absl::ZeroDuration()) duration = kDefaultSuspension;
  if (duration < absl::Seconds(1) || duration > kMaxSuspension) {
    return absl::InvalidArgumentError(absl::StrCat(
        "for: must be 1s..", FormatSuspensionDuration(kMaxSuspension), ", not ",
        FormatSuspensionDuration(duration)));
  }
  if (reason.size() > kMaxSuspensionReason) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason: longer than ", kMaxSuspensionReason, " octets"));
  }
  for (unsigned char c : reason) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("reason: holds a control character");
    }
  }
  Suspension s;
  s.domain = name;
  s.since = absl::FromUnixMicros(absl::ToUnixMicros(now));
  s.until = s.since + absl::Trunc(duration, absl::Microseconds(1));
  s.reason = reason.empty() ? "no reason given" : std::string(reason);
  s.by = std::string(by);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!suspensions_.contains(name) && suspensions_.size() >= kMaxSuspensions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("at most ", kMaxSuspensions, " destinations may be suspended at once"));
    }
    RETURN_IF_ERROR(queue_->PutDestinationRecord(Record::kSuspension, name, EncodeSuspension(s)));
    suspensions_[name] = s;
    Publish();
  }
  base::LogInfo("destination %s suspended for %s by %s: %s", s.domain,
                FormatSuspensionDuration(s.until - s.since), s.by, s.reason);
  return s;
}

absl::StatusOr<RetryResult> DestinationControl::Unsuspend(std::string_view domain,
                                                          std::string_view by, absl::Time now) {
  ASSIGN_OR_RETURN(std::string name, NormalizeDomain(domain));
  Suspension ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = suspensions_.find(name);
    if (it == suspensions_.end()) {
      return absl::NotFoundError(absl::StrCat("destination ", name, " is not suspended"));
    }
    RETURN_IF_ERROR(queue_->DeleteDestinationRecord(Record::kSuspension, name));
    ended = std::move(it->second);
    suspensions_.erase(it);
    Publish();
  }
  (void)now;
  absl::StatusOr<RetryResult> released =
      Send(ShardCommand{ShardCommand::Kind::kRelease, name, ended.until}, kControlAnswerWait);
  base::LogInfo("destination %s unsuspended by %s (%d recipients released)", name,
                base::Sv(by), released.ok() ? released->made_due : 0);
  return released;
}

void DestinationControl::ExpireDue(absl::Time now) {
  if (absl::ToUnixMicros(now) < next_expiry_us_.load(std::memory_order_acquire)) return;
  std::vector<Suspension> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = suspensions_.begin(); it != suspensions_.end();) {
      if (it->second.until <= now) {
        ended.push_back(std::move(it->second));
        it = suspensions_.erase(it);
      } else {
        ++it;
      }
    }
    if (ended.empty()) return;  // another shard took them a moment ago
    for (const Suspension& s : ended) {
      (void)queue_->DeleteDestinationRecord(Record::kSuspension, s.domain);
    }
    Publish();
  }
  for (const Suspension& s : ended) {
    base::LogInfo("destination %s: suspension ended (set for %s by %s: %s)", s.domain,
                  FormatSuspensionDuration(s.until - s.since), s.by, s.reason);
  }
  // What they held is due at `until` already: no release needed.
}

std::shared_ptr<const DestinationControl::Suspensions> DestinationControl::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

void DestinationControl::Publish() {
  snapshot_ = std::make_shared<const Suspensions>(suspensions_);
  int64_t next = INT64_MAX;
  for (const auto& [name, s] : suspensions_) next = std::min(next, absl::ToUnixMicros(s.until));
  next_expiry_us_.store(next, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

absl::StatusOr<RetryResult> DestinationControl::Retry(ShardCommand command,
                                                      absl::Duration wait) {
  if (command.kind == ShardCommand::Kind::kRetryDomain) {
    ASSIGN_OR_RETURN(command.target, NormalizeDomain(command.target));
  }
  return Send(std::move(command), wait);
}

absl::StatusOr<RetryResult> DestinationControl::Send(ShardCommand command, absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  for (const auto& box : boxes_) {
    if (box.size() >= kMaxShardCommands) {
      return absl::ResourceExhaustedError("too many control commands waiting for the shards");
    }
  }
  command.id = next_command_++;
  Pending& p = answers_[command.id];
  p.waiting = boxes_.size();
  p.result.shards = boxes_.size();
  for (size_t i = 0; i < boxes_.size(); ++i) {
    boxes_[i].push_back(command);
    pending_commands_[i]->store(boxes_[i].size(), std::memory_order_release);
  }
  const uint64_t id = command.id;
  answered_.wait_for(lock, absl::ToChronoMilliseconds(wait),
                     [&] { return answers_[id].waiting == 0; });
  RetryResult result = answers_[id].result;
  // A shard that answers later finds no entry and its count is dropped: the
  // recipients were still made due.
  answers_.erase(id);
  if (result.shards_answered == 0) {
    return absl::DeadlineExceededError("no delivery shard answered in time");
  }
  return result;
}

std::vector<ShardCommand> DestinationControl::TakeCommands(size_t shard) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_commands_[shard]->store(0, std::memory_order_release);
  return std::exchange(boxes_[shard], {});
}

void DestinationControl::Answer(uint64_t id, uint64_t made_due, bool more) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = answers_.find(id);
  if (it == answers_.end()) return;
  it->second.result.made_due += made_due;
  it->second.result.more = it->second.result.more || more;
  ++it->second.result.shards_answered;
  if (it->second.waiting > 0) --it->second.waiting;
  answered_.notify_all();
}

void DestinationControl::SaveBackoff(const std::string& pool, const KeptBackoff& backoff) {
  absl::Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (backoff.level <= 0) {
      if (backoff_.erase(pool) == 0) return;
      st = queue_->DeleteDestinationRecord(Record::kBackoff, pool);
    } else {
      backoff_[pool] = backoff;
      st = queue_->PutDestinationRecord(Record::kBackoff, pool, EncodeKeptBackoff(backoff));
    }
  }
  if (!st.ok()) {
    base::LogWarning("pool %s: cannot keep its backoff level: %s", pool,
                     base::StdSv(st.message()));
  }
}

std::optional<KeptBackoff> DestinationControl::KeptBackoffFor(const std::string& pool) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = backoff_.find(pool);
  if (it == backoff_.end()) return std::nullopt;
  return it->second;
}

}  // namespace volley::engine
