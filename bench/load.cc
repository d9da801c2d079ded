#include "bench/load.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "metrics/delivery_log.h"

namespace volley::load {
namespace {

constexpr size_t kChunk = 64 * 1024;

// SplitMix64: a small, fast generator whose output is the same on every platform
// (std::uniform_int_distribution is not), so a seed always gives the same job.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return Next() % n; }  // bias is negligible for our n

 private:
  uint64_t state_;
};

// Fenwick tree over the recipients each domain still has to get: drawing an index
// with probability proportional to what is left gives a shuffled order with exact
// per-domain totals, in O(log M) a recipient.
class Remaining {
 public:
  explicit Remaining(const std::vector<uint64_t>& counts) : tree_(counts.size() + 1, 0) {
    for (size_t i = 0; i < counts.size(); ++i) Add(i, static_cast<int64_t>(counts[i]));
    for (uint64_t c : counts) total_ += c;
    step_ = 1;
    while (step_ * 2 < tree_.size()) step_ *= 2;
  }
  uint64_t total() const { return total_; }
  // Take - the domain holding the r-th remaining recipient (0 <= r < total), minus one.
  size_t Take(uint64_t r) {
    size_t pos = 0;
    for (size_t step = step_; step > 0; step /= 2) {
      if (pos + step < tree_.size() && tree_[pos + step] <= r) {
        pos += step;
        r -= tree_[pos];
      }
    }
    Add(pos, -1);
    --total_;
    return pos;  // tree index pos+1 is domain pos
  }

 private:
  void Add(size_t i, int64_t delta) {
    for (size_t k = i + 1; k < tree_.size(); k += k & (~k + 1)) {
      tree_[k] = static_cast<uint64_t>(static_cast<int64_t>(tree_[k]) + delta);
    }
  }
  std::vector<uint64_t> tree_;
  uint64_t total_ = 0;
  size_t step_ = 1;
};

constexpr std::string_view kFirstNames[] = {
    "Ada",   "Grace",  "Alan",   "Edsger", "Barbara", "Donald", "Ken",     "Dennis",
    "Frances", "Radia", "Leslie", "Margaret", "John",  "Niklaus", "Tony",   "Shafi",
    "Björn", "Zoë",    "José",   "Amélie",
};

constexpr std::string_view kFiller =
    "Volley load test filler text: the quick brown fox jumps over the lazy dog.";

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(std::string(what), " ", path));
}

}  // namespace

std::string DomainName(uint32_t index) { return absl::StrFormat("d%04u.test", index + 1); }

std::string RecipientAddress(uint64_t index, uint32_t domain) {
  return absl::StrFormat("r%07u@%s", index + 1, DomainName(domain));
}

std::vector<uint64_t> DomainCounts(uint64_t recipients, uint32_t domains) {
  std::vector<uint64_t> counts(domains, 0);
  if (domains == 0) return counts;
  if (recipients <= domains) {
    for (uint64_t i = 0; i < recipients; ++i) counts[i] = 1;
    return counts;
  }
  // One each, then the rest by weight 1/rank with largest remainders.
  const uint64_t rest = recipients - domains;
  double harmonic = 0;
  for (uint32_t i = 0; i < domains; ++i) harmonic += 1.0 / (i + 1);
  std::vector<std::pair<double, uint32_t>> remainders;
  remainders.reserve(domains);
  uint64_t given = 0;
  for (uint32_t i = 0; i < domains; ++i) {
    const double share = static_cast<double>(rest) / (i + 1) / harmonic;
    const auto whole = static_cast<uint64_t>(share);
    counts[i] = 1 + whole;
    given += whole;
    remainders.emplace_back(share - static_cast<double>(whole), i);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; given < rest; ++k, ++given) ++counts[remainders[k % domains].second];
  return counts;
}

std::string MessageTemplate(const GenerateOptions& options) {
  std::string m;
  m += absl::StrCat("From: Volley Load <", options.from, ">\r\n");
  m += "To: undisclosed-recipients:;\r\n";
  m += absl::StrCat("Subject: Volley load test ", options.job_id, "\r\n");
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: text/plain; charset=utf-8\r\n";
  m += "\r\n";
  m += options.personalised ? "Hello {{first_name}},\r\n" : "Hello,\r\n";
  m += "\r\n";
  while (m.size() + kFiller.size() + 2 <= options.size) {
    m += kFiller;
    m += "\r\n";
  }
  if (m.size() + 3 <= options.size) {  // top up with a shorter last line
    m += kFiller.substr(0, options.size - m.size() - 2);
    m += "\r\n";
  }
  return m;
}

absl::StatusOr<GenerateStats> GenerateJob(
    const GenerateOptions& options,
    absl::FunctionRef<absl::Status(std::string_view)> sink) {
  if (options.job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  if (options.domains == 0) return absl::InvalidArgumentError("need at least one domain");
  GenerateStats stats;
  stats.domain_counts = DomainCounts(options.recipients, options.domains);

  std::string buf;
  buf.reserve(kChunk + 4096);
  auto flush = [&]() -> absl::Status {
    if (buf.empty()) return absl::OkStatus();
    stats.bytes += buf.size();
    absl::Status s = sink(buf);
    buf.clear();
    return s;
  };

  buf += "{\"job\":";
  base::AppendJsonString(&buf, options.job_id);
  buf += ",\"from\":";
  base::AppendJsonString(&buf, options.from);
  buf += ",\"message\":";
  base::AppendJsonString(&buf, MessageTemplate(options));
  buf += "}\n";

  Remaining remaining(stats.domain_counts);
  Rng rng(options.seed);
  for (uint64_t i = 0; i < options.recipients; ++i) {
    const auto domain = static_cast<uint32_t>(remaining.Take(rng.Below(remaining.total())));
    buf += "{\"to\":";
    base::AppendJsonString(&buf, RecipientAddress(i, domain));
    buf += ",\"vars\":{";
    if (options.personalised) {
      buf += "\"first_name\":";
      base::AppendJsonString(&buf, kFirstNames[rng.Below(std::size(kFirstNames))]);
    }
    buf += "}}\n";
    ++stats.recipients;
    if (buf.size() >= kChunk) RETURN_IF_ERROR(flush());
  }
  RETURN_IF_ERROR(flush());
  return stats;
}

absl::StatusOr<GenerateStats> GenerateJobFile(const GenerateOptions& options,
                                              const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  auto result = GenerateJob(options, [&](std::string_view bytes) -> absl::Status {
    return base::WriteAll(fd, bytes, path);
  });
  if (result.ok() && ::fsync(fd) != 0) result = Errno("cannot fsync", path);
  if (::close(fd) != 0 && result.ok()) result = Errno("cannot close", path);
  if (!result.ok()) ::unlink(path.c_str());
  return result;
}

std::optional<absl::Time> ParseTimestamp(std::string_view text) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) return t;
  return std::nullopt;
}

DeliveryTally::DeliveryTally(std::string job_id, uint64_t recipients,
                             std::optional<absl::Time> drop)
    : job_id_(std::move(job_id)), states_(recipients), drop_(drop) {}

void DeliveryTally::Feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      partial_.append(bytes);
      return;
    }
    if (partial_.empty()) {
      Line(bytes.substr(0, nl));
    } else {
      partial_.append(bytes.substr(0, nl));
      Line(partial_);
      partial_.clear();
    }
    bytes.remove_prefix(nl + 1);
  }
}

void DeliveryTally::Line(std::string_view text) {
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (text.empty()) return;
  // Cheap filter first: most lines of a shared log may belong to other jobs.
  std::string quoted;
  base::AppendJsonString(&quoted, job_id_);
  if (text.find(quoted) == std::string_view::npos) return;
  absl::StatusOr<metrics::OwnedDeliveryRecord> rec = metrics::ParseDeliveryRecord(text);
  if (!rec.ok()) {
    ++malformed_;
    return;
  }
  if (rec->job != job_id_) return;
  // Feedback events come after a recipient's terminal record and do not change it.
  if (metrics::IsFeedbackEvent(rec->status)) return;
  ++records_;
  if (rec->line < 2 || uint64_t{rec->line} - 2 >= states_.size()) {
    ++out_of_range_;
    return;
  }
  std::optional<metrics::DeliveryStatus>& state = states_[rec->line - 2];
  if (!state.has_value()) ++with_outcome_;
  // Only the first delivery counts: a duplicate after a crash is not a second message.
  constexpr auto kDelivered = metrics::DeliveryStatus::kDelivered;
  if (rec->status == kDelivered && state != kDelivered && drop_) {
    latency_.Add(rec->ts - *drop_);
  }
  state = rec->status;
  if (!last_outcome_ || rec->ts > *last_outcome_) last_outcome_ = rec->ts;
  if (rec->status == kDelivered) {
    // Every delivered record counts here, a duplicate after a crash too: it
    // came in a transaction of its own, which the server took as a message.
    if (rec->txn.empty()) {
      ++delivered_without_txn_;
    } else {
      delivered_txns_.insert(std::move(rec->txn));
    }
  }
}

std::optional<uint64_t> DeliveryTally::messages() const {
  if (delivered_without_txn_ != 0) return std::nullopt;
  return delivered_txns_.size();
}

OutcomeCounts DeliveryTally::counts() const {
  OutcomeCounts c;
  for (const std::optional<metrics::DeliveryStatus>& s : states_) {
    if (!s.has_value()) continue;
    switch (*s) {
      case metrics::DeliveryStatus::kDelivered: ++c.delivered; break;
      case metrics::DeliveryStatus::kDeferred: ++c.deferred; break;
      case metrics::DeliveryStatus::kBounced: ++c.bounced; break;
      case metrics::DeliveryStatus::kExpired: ++c.expired; break;
      case metrics::DeliveryStatus::kCancelled:
      case metrics::DeliveryStatus::kSuppressed: ++c.other; break;
      default: break;  // feedback events are never kept here
    }
  }
  return c;
}

std::optional<metrics::DeliveryStatus> DeliveryTally::latest(int64_t line) const {
  if (line < 2 || static_cast<uint64_t>(line - 2) >= states_.size()) return std::nullopt;
  return states_[static_cast<size_t>(line - 2)];
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return 0;
    return Errno("cannot stat", path);
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::Status LogFollower::Poll(DeliveryTally* tally) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("cannot open", path_);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Errno("cannot stat", path_);
  }
  const auto inode = static_cast<uint64_t>(st.st_ino);
  if ((inode_ != 0 && inode != inode_) || static_cast<uint64_t>(st.st_size) < offset_) {
    offset_ = 0;  // the log was replaced or truncated: read the new one from the start
  }
  inode_ = inode;
  std::string buf(1 << 20, '\0');
  absl::Status status;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset_));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = Errno("cannot read", path_);
      break;
    }
    if (n == 0) break;
    tally->Feed(std::string_view(buf.data(), static_cast<size_t>(n)));
    offset_ += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return status;
}

// ---- LatencyHistogram

size_t LatencyHistogram::BucketOf(uint64_t us) {
  if (us < kSubBuckets) return static_cast<size_t>(us);
  const int shift = std::bit_width(us) - 1 - kSubBucketBits;  // 0 for [128, 256)
  const uint64_t mantissa = us >> shift;                      // kSubBuckets .. 2x - 1
  return (static_cast<size_t>(shift) + 1) * kSubBuckets +
         static_cast<size_t>(mantissa - kSubBuckets);
}

uint64_t LatencyHistogram::BucketTop(size_t bucket) {
  if (bucket < kSubBuckets) return bucket;
  const size_t shift = bucket / kSubBuckets - 1;
  const uint64_t mantissa = kSubBuckets + bucket % kSubBuckets;
  // For the very last bucket the shift wraps to 0 and the subtraction to UINT64_MAX,
  // which is that bucket's top.
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::Add(absl::Duration d) {
  const uint64_t us =
      d <= absl::ZeroDuration() ? 0 : static_cast<uint64_t>(absl::ToInt64Microseconds(d));
  ++counts_[BucketOf(us)];
  ++count_;
  min_us_ = std::min(min_us_, us);
  max_us_ = std::max(max_us_, us);
  sum_us_ += static_cast<long double>(us);
}

absl::Duration LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return absl::ZeroDuration();
  p = std::clamp(p, 0.0, 100.0);
  // p x count first, so that 99 of 100 samples is exactly rank 99; the small slack
  // keeps a product like 29.000000000000004 from rounding up to the next rank.
  const double exact = p * static_cast<double>(count_) / 100.0;
  auto rank = static_cast<uint64_t>(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t b = 0; b < counts_.size(); ++b) {
    seen += counts_[b];
    if (seen >= rank) {
      return absl::Microseconds(static_cast<int64_t>(std::min(BucketTop(b), max_us_)));
    }
  }
  return absl::Microseconds(static_cast<int64_t>(max_us_));
}

absl::Duration LatencyHistogram::mean() const {
  if (count_ == 0) return absl::ZeroDuration();
  return absl::Microseconds(static_cast<double>(sum_us_ / static_cast<long double>(count_)));
}

// ---- Routes and zone

namespace {

constexpr uint32_t kLoopbackNet = 127;
constexpr uint32_t kMaxPort = 65535;
// Negative answers (a mistyped name) are cached this long, whatever the --ttl.
constexpr uint32_t kNegativeTtl = 60;

std::optional<uint32_t> ParseIPv4(std::string_view s) {
  uint32_t address = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (s.empty() || s.front() != '.') return std::nullopt;
      s.remove_prefix(1);
    }
    size_t n = 0;
    uint32_t octet = 0;
    while (n < s.size() && n <= 3 && s[n] >= '0' && s[n] <= '9') {
      octet = octet * 10 + static_cast<uint32_t>(s[n] - '0');
      ++n;
    }
    // No leading zeros: "127.0.01.1" might be meant as octal by another tool.
    if (n == 0 || n > 3 || octet > 255 || (n > 1 && s.front() == '0')) return std::nullopt;
    address = address << 8 | octet;
    s.remove_prefix(n);
  }
  if (!s.empty()) return std::nullopt;
  return address;
}

bool IsLoopback(uint32_t address) { return address >> 24 == kLoopbackNet; }

absl::Status CheckRouting(const RoutingOptions& o) {
  if (o.domains == 0 || o.domains > kMaxDomains) {
    return absl::InvalidArgumentError(
        absl::StrCat("domains must be 1 to ", kMaxDomains, ", not ", o.domains));
  }
  const AddressRange& r = o.addresses;
  if (!IsLoopback(r.first) || !IsLoopback(r.last) || r.first > r.last) {
    return absl::InvalidArgumentError(absl::StrCat("sink addresses ", FormatAddress(r.first),
                                                   "-", FormatAddress(r.last),
                                                   " are not a range in 127.0.0.0/8"));
  }
  return absl::OkStatus();
}

// The zone-relative name of domain i: "d0001" for d0001.test.
std::string ZoneLabel(uint32_t index) {
  std::string name = DomainName(index);
  name.resize(name.size() - std::string_view(".test").size());
  return name;
}

// ChunkedWriter - text built in a buffer and handed to the sink about every kChunk
// bytes, so a million domains never sit in memory at once.
class ChunkedWriter {
 public:
  explicit ChunkedWriter(absl::FunctionRef<absl::Status(std::string_view)> sink)
      : sink_(sink) {
    buf_.reserve(kChunk + 4096);
  }
  std::string* buf() { return &buf_; }
  absl::Status MaybeFlush() { return buf_.size() >= kChunk ? Flush() : absl::OkStatus(); }
  absl::Status Flush() {
    if (buf_.empty()) return absl::OkStatus();
    absl::Status s = sink_(buf_);
    buf_.clear();
    return s;
  }

 private:
  absl::FunctionRef<absl::Status(std::string_view)> sink_;
  std::string buf_;
};

std::string RangeText(const AddressRange& r) {
  return r.first == r.last ? FormatAddress(r.first)
                           : absl::StrCat(FormatAddress(r.first), "-", FormatAddress(r.last));
}

}  // namespace

std::string FormatAddress(uint32_t a) {
  return absl::StrFormat("%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

absl::StatusOr<AddressRange> ParseAddressRange(std::string_view text) {
  const std::string where = absl::StrCat("sink addresses \"", base::Sv(text), "\": ");
  const size_t dash = text.find('-');
  const std::string_view first_text = text.substr(0, dash);
  const std::string_view last_text =
      dash == std::string_view::npos ? text : text.substr(dash + 1);
  AddressRange r;
  for (auto [part, out] : {std::pair{first_text, &r.first}, std::pair{last_text, &r.last}}) {
    const std::optional<uint32_t> a = ParseIPv4(part);
    if (!a) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "\"", base::Sv(part),
          "\" is not an IPv4 address (want A.B.C.D or A.B.C.D-E.F.G.H, in 127.0.0.0/8)"));
    }
    if (!IsLoopback(*a)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, base::Sv(part),
          " is not in 127.0.0.0/8: volley-load only routes to loopback"));
    }
    if (*a == kLoopbackNet << 24 || *a == (kLoopbackNet << 24 | 0xffffff)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, base::Sv(part), " is the network or broadcast address of 127.0.0.0/8"));
    }
    *out = *a;
  }
  if (r.first > r.last) {
    return absl::InvalidArgumentError(absl::StrCat(where, "the first address ",
                                                   base::Sv(first_text), " is after the last ",
                                                   base::Sv(last_text)));
  }
  if (r.size() > kMaxSinkAddresses) {
    return absl::InvalidArgumentError(absl::StrCat(where, r.size(), " addresses, more than the ",
                                                   kMaxSinkAddresses, " allowed"));
  }
  return r;
}

absl::Status WriteRoutes(const RoutingOptions& o,
                         absl::FunctionRef<absl::Status(std::string_view)> sink) {
  RETURN_IF_ERROR(CheckRouting(o));
  if (o.port == 0 || o.port > kMaxPort) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be 1 to ", kMaxPort, ", not ", o.port));
  }
  ChunkedWriter w(sink);
  absl::StrAppendFormat(w.buf(),
                        "# volley-load routes: %u domains %s .. %s over %d sink addresses %s\n"
                        "# (round robin), port %u. Goes into volleyd's config: docs/config.md.\n"
                        "[routes]\n",
                        o.domains, DomainName(0), DomainName(o.domains - 1),
                        o.addresses.size(), RangeText(o.addresses), o.port);
  for (uint32_t i = 0; i < o.domains; ++i) {
    absl::StrAppendFormat(w.buf(), "\"%s\" = \"%s:%u\"\n", DomainName(i),
                          FormatAddress(o.addresses.At(i)), o.port);
    RETURN_IF_ERROR(w.MaybeFlush());
  }
  return w.Flush();
}

absl::Status WriteZone(const RoutingOptions& o,
                       absl::FunctionRef<absl::Status(std::string_view)> sink) {
  RETURN_IF_ERROR(CheckRouting(o));
  if (o.ttl == 0 || o.ttl > kMaxZoneTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl must be 1 to ", kMaxZoneTtl, ", not ", o.ttl));
  }
  ChunkedWriter w(sink);
  absl::StrAppendFormat(
      w.buf(),
      "; volley-load zone: %u domains %s .. %s, each MX mx.<domain>, whose A is one of\n"
      "; %d sink addresses %s (round robin). Serve it with nsd: docs/volley-load.md.\n"
      "$ORIGIN test.\n"
      "$TTL %u\n"
      "@ IN SOA ns.test. hostmaster.test. %u 3600 600 86400 %u\n"
      "@ IN NS ns.test.\n"
      "ns IN A 127.0.0.1\n",
      o.domains, DomainName(0), DomainName(o.domains - 1), o.addresses.size(),
      RangeText(o.addresses), o.ttl, o.serial, std::min(o.ttl, kNegativeTtl));
  for (uint32_t i = 0; i < o.domains; ++i) {
    const std::string label = ZoneLabel(i);
    absl::StrAppendFormat(w.buf(), "%s IN MX 10 mx.%s\nmx.%s IN A %s\n", label, label, label,
                          FormatAddress(o.addresses.At(i)));
    RETURN_IF_ERROR(w.MaybeFlush());
  }
  return w.Flush();
}

// ---- /proc

namespace {

constexpr size_t kMaxProcFile = 64 * 1024;

absl::StatusOr<std::string> ReadProcFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  std::string text(kMaxProcFile, '\0');
  size_t used = 0;
  absl::Status status;
  while (used < text.size()) {
    const ssize_t n = ::read(fd, text.data() + used, text.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = Errno("cannot read", path);
      break;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  RETURN_IF_ERROR(status);
  text.resize(used);
  return text;
}

}  // namespace

absl::StatusOr<uint64_t> ParseProcStatCpuTicks(std::string_view stat) {
  // "PID (COMM) STATE PPID ...": the command name may hold ") ", so split after the last.
  const size_t paren = stat.rfind(')');
  if (paren == std::string_view::npos) {
    return absl::InvalidArgumentError("/proc stat: no \")\" after the command name");
  }
  std::string_view rest = stat.substr(paren + 1);
  // Fields after the name start at 3 (state); utime is 14, stime 15.
  constexpr int kFirst = 3, kUtime = 14, kStime = 15;
  uint64_t ticks = 0;
  int field = kFirst - 1;
  while (field < kStime) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc stat: ends at field ", field, ", before stime (", kStime, ")"));
    }
    ++field;
    const size_t end = std::min(rest.find(' '), rest.size());
    if (field == kUtime || field == kStime) {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(base::Sv(rest.substr(0, end)), &n)) {
        return absl::InvalidArgumentError(absl::StrCat("/proc stat: field ", field, " \"",
                                                       base::Sv(rest.substr(0, end)),
                                                       "\" is not a number"));
      }
      ticks += n;
    }
    rest.remove_prefix(end);
  }
  return ticks;
}

absl::StatusOr<uint64_t> ParseProcStatusKb(std::string_view status, std::string_view field) {
  size_t pos = 0;
  while (pos < status.size()) {
    const size_t nl = std::min(status.find('\n', pos), status.size());
    std::string_view line = status.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.size() <= field.size() || line.substr(0, field.size()) != field ||
        line[field.size()] != ':') {
      continue;
    }
    line.remove_prefix(field.size() + 1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.size() >= 3 && line.substr(line.size() - 3) == " kB") line.remove_suffix(3);
    uint64_t kb = 0;
    if (!absl::SimpleAtoi(base::Sv(line), &kb)) {
      return absl::InvalidArgumentError(absl::StrCat("/proc status: ", base::Sv(field),
                                                     ": \"", base::Sv(line),
                                                     "\" is not a number of kB"));
    }
    return kb;
  }
  return absl::NotFoundError(absl::StrCat("/proc status: no ", base::Sv(field), " line"));
}

absl::StatusOr<double> ReadCpuSeconds(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  ASSIGN_OR_RETURN(std::string text, ReadProcFile(path));
  auto ticks = ParseProcStatCpuTicks(text);
  if (!ticks.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", ticks.status().message()));
  }
  const long per_second = ::sysconf(_SC_CLK_TCK);
  if (per_second <= 0) return absl::InternalError("sysconf(_SC_CLK_TCK) failed");
  return static_cast<double>(*ticks) / static_cast<double>(per_second);
}

absl::StatusOr<uint64_t> ReadPeakRssKb(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  ASSIGN_OR_RETURN(std::string text, ReadProcFile(path));
  auto kb = ParseProcStatusKb(text, "VmHWM");
  if (!kb.ok()) {
    return absl::Status(kb.status().code(), absl::StrCat(path, ": ", kb.status().message()));
  }
  return *kb;
}

// ---- Report

double Report::RecipientsPerSecond() const {
  return elapsed_seconds > 0 ? static_cast<double>(counts.delivered) / elapsed_seconds : 0;
}

std::optional<double> Report::MessagesPerSecond() const {
  if (!messages) return std::nullopt;
  return elapsed_seconds > 0 ? static_cast<double>(*messages) / elapsed_seconds : 0;
}

double Report::MegabytesPerSecond() const {
  return elapsed_seconds > 0 ? static_cast<double>(counts.delivered) *
                                   static_cast<double>(message_bytes) / 1e6 / elapsed_seconds
                             : 0;
}

std::optional<double> Report::CpuSecondsPer10k() const {
  if (!volleyd_cpu_seconds || counts.delivered == 0) return std::nullopt;
  return *volleyd_cpu_seconds / static_cast<double>(counts.delivered) * 10000;
}

void FillLatency(const LatencyHistogram& latency, Report* report) {
  report->latency_samples = latency.count();
  report->latency_p50_seconds = absl::ToDoubleSeconds(latency.Percentile(50));
  report->latency_p99_seconds = absl::ToDoubleSeconds(latency.Percentile(99));
  report->latency_max_seconds = absl::ToDoubleSeconds(latency.max());
  report->latency_mean_seconds = absl::ToDoubleSeconds(latency.mean());
}

std::string ReportJson(const Report& r) {
  std::string out = "{\"job\":";
  base::AppendJsonString(&out, r.job);
  // The keys up to timed_out are volley-load's first report: bench scripts read them.
  absl::StrAppendFormat(
      &out,
      ",\"recipients\":%d,\"domains\":%d,\"size\":%d,\"with_outcome\":%d,\"missing\":%d,"
      "\"delivered\":%d,\"deferred\":%d,\"bounced\":%d,\"expired\":%d,\"other\":%d,"
      "\"records\":%d,\"malformed_log_lines\":%d,\"elapsed_seconds\":%.3f,"
      "\"messages_per_second\":%.1f,\"timed_out\":%s",
      r.recipients, r.domains, r.size, r.with_outcome, r.missing, r.counts.delivered,
      r.counts.deferred, r.counts.bounced, r.counts.expired, r.counts.other, r.records,
      r.malformed_log_lines, r.elapsed_seconds, r.RecipientsPerSecond(),
      r.timed_out ? "true" : "false");
  // Recipients and messages apart: messages_per_second above is the older key,
  // which counts recipients (scripts read it); these say which is which.
  const std::optional<double> messages_per_second = r.MessagesPerSecond();
  absl::StrAppendFormat(
      &out, ",\"recipients_per_second\":%.1f,\"messages_delivered\":%s,\"messages_delivered_per_second\":%s",
      r.RecipientsPerSecond(), r.messages ? absl::StrCat(*r.messages) : "null",
      messages_per_second ? absl::StrFormat("%.1f", *messages_per_second) : "null");
  const bool latency = r.latency_samples > 0;
  auto seconds = [&](double v) {
    return latency ? absl::StrFormat("%.3f", v) : std::string("null");
  };
  absl::StrAppendFormat(
      &out,
      ",\"message_bytes\":%d,\"megabytes_per_second\":%.3f,\"generate_seconds\":%.3f,"
      "\"latency_samples\":%d,\"latency_p50_seconds\":%s,\"latency_p99_seconds\":%s,"
      "\"latency_max_seconds\":%s,\"latency_mean_seconds\":%s",
      r.message_bytes, r.MegabytesPerSecond(), r.generate_seconds, r.latency_samples,
      seconds(r.latency_p50_seconds), seconds(r.latency_p99_seconds),
      seconds(r.latency_max_seconds), seconds(r.latency_mean_seconds));
  const std::optional<double> per_10k = r.CpuSecondsPer10k();
  absl::StrAppendFormat(
      &out,
      ",\"volleyd_pid\":%s,\"volleyd_cpu_seconds\":%s,\"volleyd_cpu_seconds_per_10k\":%s,"
      "\"volleyd_peak_rss_kb\":%s",
      r.volleyd_pid ? absl::StrCat(*r.volleyd_pid) : "null",
      r.volleyd_cpu_seconds ? absl::StrFormat("%.3f", *r.volleyd_cpu_seconds) : "null",
      per_10k ? absl::StrFormat("%.4f", *per_10k) : "null",
      r.volleyd_peak_rss_kb ? absl::StrCat(*r.volleyd_peak_rss_kb) : "null");
  if (!r.refused.empty()) {
    out += ",\"refused\":";
    base::AppendJsonString(&out, r.refused);
  }
  out += "}\n";
  return out;
}

std::string ReportText(const Report& r) {
  // Recipients and messages apart: the delivery log has a record per recipient,
  // and a message shared by several recipients is one transaction (its records
  // share a txn), so each rate says which it counts.
  std::string out = absl::StrFormat("delivered %d  deferred %d  bounced %d  expired %d",
                                    r.counts.delivered, r.counts.deferred, r.counts.bounced,
                                    r.counts.expired);
  if (r.counts.other != 0) absl::StrAppendFormat(&out, "  other %d", r.counts.other);
  absl::StrAppendFormat(&out, "  (of %d recipients)\n", r.recipients);
  const std::optional<double> messages_per_second = r.MessagesPerSecond();
  if (r.messages) {
    absl::StrAppendFormat(&out, "messages delivered %d (SMTP transactions; a shared message is one)\n",
                          *r.messages);
  } else {
    out += "messages delivered unknown (delivery records without txn)\n";
  }
  absl::StrAppendFormat(&out, "elapsed %.3f s (drop to last outcome), %.1f recipients/s, %s messages/s\n",
                        r.elapsed_seconds, r.RecipientsPerSecond(),
                        messages_per_second ? absl::StrFormat("%.1f", *messages_per_second) : "?");
  absl::StrAppendFormat(&out, "throughput %.1f recipients/s, %.2f MB/s at %d bytes per recipient\n",
                        r.RecipientsPerSecond(), r.MegabytesPerSecond(), r.message_bytes);
  if (r.latency_samples > 0) {
    absl::StrAppendFormat(&out,
                          "latency (drop to delivered): p50 %.3f s, p99 %.3f s, max %.3f s, "
                          "mean %.3f s over %d recipients\n",
                          r.latency_p50_seconds, r.latency_p99_seconds, r.latency_max_seconds,
                          r.latency_mean_seconds, r.latency_samples);
  }
  if (r.volleyd_pid) {
    absl::StrAppendFormat(&out, "volleyd (pid %d):", *r.volleyd_pid);
    if (r.volleyd_cpu_seconds) {
      absl::StrAppendFormat(&out, " %.2f CPU s", *r.volleyd_cpu_seconds);
      if (auto per_10k = r.CpuSecondsPer10k()) {
        absl::StrAppendFormat(&out, ", %.3f CPU s per 10,000 recipients", *per_10k);
      }
    } else {
      out += " CPU time unknown";
    }
    if (r.volleyd_peak_rss_kb) {
      absl::StrAppendFormat(&out, ", peak RSS %.1f MiB",
                            static_cast<double>(*r.volleyd_peak_rss_kb) / 1024);
    }
    out += "\n";
  }
  if (r.malformed_log_lines != 0) {
    absl::StrAppendFormat(&out, "warning: %d delivery-log lines did not parse\n",
                          r.malformed_log_lines);
  }
  return out;
}

namespace {

constexpr int kProgressBarWidth = 16;

std::string Clock(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

std::string ProgressLine(uint64_t with_outcome, uint64_t recipients, uint64_t delivered,
                         absl::Duration elapsed) {
  const double done =
      recipients == 0 ? 1.0 : static_cast<double>(with_outcome) / static_cast<double>(recipients);
  const int filled = std::clamp(static_cast<int>(done * kProgressBarWidth), 0, kProgressBarWidth);
  std::string out = "[";
  out.append(static_cast<size_t>(filled), '#');
  out.append(static_cast<size_t>(kProgressBarWidth - filled), '.');
  const double secs = absl::ToDoubleSeconds(elapsed);
  absl::StrAppendFormat(&out, "] %5.1f%%  delivered %d/%d  %.0f rcpt/s", done * 100, delivered,
                        recipients, secs > 0 ? static_cast<double>(delivered) / secs : 0.0);
  if (with_outcome > delivered) absl::StrAppendFormat(&out, "  other %d", with_outcome - delivered);
  if (with_outcome >= recipients) {
    absl::StrAppendFormat(&out, "  done in %s", Clock(elapsed));
  } else if (with_outcome == 0 || secs <= 0) {
    out += "  ETA --";
  } else {
    // At the pace so far: recipients still without an outcome over outcomes a second.
    const double left = static_cast<double>(recipients - with_outcome) * secs /
                        static_cast<double>(with_outcome);
    absl::StrAppendFormat(&out, "  ETA %s", Clock(absl::Seconds(left)));
  }
  return out;
}

}  // namespace volley::load
