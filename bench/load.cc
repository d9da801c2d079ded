#include "bench/load.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "simdjson.h"

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

std::string_view OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kNone: return "none";
    case Outcome::kDelivered: return "delivered";
    case Outcome::kDeferred: return "deferred";
    case Outcome::kBounced: return "bounced";
    case Outcome::kExpired: return "expired";
    case Outcome::kOther: return "other";
  }
  return "other";
}

Outcome ParseOutcome(std::string_view status) {
  if (status == "delivered") return Outcome::kDelivered;
  if (status == "deferred") return Outcome::kDeferred;
  if (status == "bounced") return Outcome::kBounced;
  if (status == "expired") return Outcome::kExpired;
  return Outcome::kOther;
}

std::optional<absl::Time> ParseTimestamp(std::string_view text) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) return t;
  return std::nullopt;
}

absl::StatusOr<LogRecord> ParseLogRecord(std::string_view text) {
  // The DOM parser validates the whole line, so a record torn by a crash and glued to
  // the next one is refused rather than half read. One parser per thread.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto err = parser.parse(text.data(), text.size()).get(doc); err) {
    return absl::InvalidArgumentError(simdjson::error_message(err));
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) return absl::InvalidArgumentError("not a JSON object");
  LogRecord rec;
  bool has_job = false;
  bool has_status = false;
  for (auto [key, value] : obj) {
    std::string_view s;
    if (key == "job") {
      if (value.get_string().get(s)) return absl::InvalidArgumentError("job is not a string");
      rec.job = std::string(s);
      has_job = true;
    } else if (key == "status") {
      if (value.get_string().get(s)) return absl::InvalidArgumentError("status is not a string");
      rec.status = std::string(s);
      has_status = true;
    } else if (key == "rcpt") {
      if (!value.get_string().get(s)) rec.rcpt = std::string(s);
    } else if (key == "ts") {
      if (!value.get_string().get(s)) rec.ts = ParseTimestamp(s);
    } else if (key == "line") {
      int64_t n = 0;
      if (value.get_int64().get(n)) return absl::InvalidArgumentError("line is not an integer");
      rec.line = n;
    }
  }
  if (!has_job || !has_status) return absl::InvalidArgumentError("no job or status");
  return rec;
}

DeliveryTally::DeliveryTally(std::string job_id, uint64_t recipients)
    : job_id_(std::move(job_id)), states_(recipients, Outcome::kNone) {}

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
  auto rec = ParseLogRecord(text);
  if (!rec.ok()) {
    ++malformed_;
    return;
  }
  if (rec->job != job_id_) return;
  ++records_;
  if (!rec->line || *rec->line < 2 ||
      static_cast<uint64_t>(*rec->line - 2) >= states_.size()) {
    ++out_of_range_;
    return;
  }
  Outcome& state = states_[static_cast<size_t>(*rec->line - 2)];
  if (state == Outcome::kNone) ++with_outcome_;
  state = ParseOutcome(rec->status);
  if (rec->ts && (!last_outcome_ || *rec->ts > *last_outcome_)) last_outcome_ = rec->ts;
}

OutcomeCounts DeliveryTally::counts() const {
  OutcomeCounts c;
  for (Outcome o : states_) {
    switch (o) {
      case Outcome::kNone: break;
      case Outcome::kDelivered: ++c.delivered; break;
      case Outcome::kDeferred: ++c.deferred; break;
      case Outcome::kBounced: ++c.bounced; break;
      case Outcome::kExpired: ++c.expired; break;
      case Outcome::kOther: ++c.other; break;
    }
  }
  return c;
}

Outcome DeliveryTally::latest(int64_t line) const {
  if (line < 2 || static_cast<uint64_t>(line - 2) >= states_.size()) return Outcome::kNone;
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

}  // namespace volley::load
