#include "queue/job_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "base/status.h"
#include "base/strings.h"
#include "queue/job_reader.h"

namespace volley::queue {
namespace {

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// The builtins: defined for every recipient, never lacking.
bool IsBuiltin(std::string_view name) { return name == "to" || name == kUnsubscribeTokenName; }

}  // namespace

struct JobFileCheck::State {
  State(JobLimits l, JobHeader h, Template t)
      : limits(l), header(std::move(h)), tpl(std::move(t)) {}

  JobLimits limits;
  JobHeader header;
  Template tpl;
  // The token is made at send time: lines are checked with the longest one a
  // token can be. (State lives on the heap, so the view into the string holds.)
  std::string longest_token = std::string(kMaxUnsubscribeToken, 'x');
  Builtins longest_builtins;
  bool check_rendered_lines = false;
  bool check_unsubscribe_url = false;
  std::string unsubscribe_url;  // scratch

  // A variable a placeholder uses, in the order met: message, return_path,
  // unsubscribe_url.
  struct Tracked {
    std::string name;
    std::string where;  // of its first placeholder without a default
    bool needs_definition = false;  // some placeholder has no default
    uint64_t defined = 0;           // accepted recipients with the name
    uint64_t nonempty = 0;          // ... with a non-empty value
  };
  std::vector<Tracked> vars;
  absl::flat_hash_map<std::string, size_t> index;
  absl::flat_hash_set<std::string> seen_names;  // bounded by kMaxRememberedNames
  uint64_t accepted = 0;

  void Track(std::string_view name, bool has_default, std::string_view where) {
    if (IsBuiltin(name)) return;
    auto [it, added] = index.try_emplace(std::string(name), vars.size());
    if (added) vars.push_back(Tracked{std::string(name), "", false, 0, 0});
    Tracked& v = vars[it->second];
    if (!has_default && !v.needs_definition) {
      v.needs_definition = true;
      v.where = std::string(where);
    }
  }
};

JobFileCheck::JobFileCheck(std::unique_ptr<State> state) : state_(std::move(state)) {}
JobFileCheck::JobFileCheck(JobFileCheck&&) noexcept = default;
JobFileCheck& JobFileCheck::operator=(JobFileCheck&&) noexcept = default;
JobFileCheck::~JobFileCheck() = default;

absl::StatusOr<JobFileCheck> JobFileCheck::Start(std::string_view header_line,
                                                 const JobLimits& limits) {
  ASSIGN_OR_RETURN(JobHeader header, ParseJobHeader(header_line, limits));
  // ParseJobHeader has compiled the template already, so this cannot fail.
  absl::StatusOr<Template> tpl = Template::Compile(header.message);
  if (!tpl.ok()) return absl::InvalidArgumentError(absl::StrCat("message: ", tpl.status().message()));
  RETURN_IF_ERROR(CheckMessageHeaders(header, *tpl));
  auto state = std::make_unique<State>(limits, std::move(header), *std::move(tpl));
  State& s = *state;
  s.longest_builtins.unsubscribe_token = s.longest_token;
  // Without placeholders every recipient gets the same lines, which Compile() has
  // held to 998 octets: nothing is left to check per recipient.
  s.check_rendered_lines = s.tpl.has_placeholders();
  s.check_unsubscribe_url = s.header.unsubscribe_url.find("{{") != std::string::npos;
  for (const Template::Use& use : s.tpl.variable_uses()) {
    const size_t line = use.line_without_default != 0 ? use.line_without_default : use.first_line;
    s.Track(use.name, use.line_without_default == 0, absl::StrCat("message: line ", line));
  }
  for (const InlineVariable& v : InlineTemplateVariables(s.header.return_path)) {
    s.Track(v.name, v.has_default, "return_path");
  }
  for (const InlineVariable& v : InlineTemplateVariables(s.header.unsubscribe_url)) {
    s.Track(v.name, v.has_default, "unsubscribe_url");
  }
  return JobFileCheck(std::move(state));
}

absl::Status JobFileCheck::CheckTimes(absl::Time now) const {
  const JobHeader& h = state_->header;
  if (h.expires && *h.expires <= now) {
    return absl::InvalidArgumentError(absl::StrCat("expires: ", Rfc3339(*h.expires),
                                                   " is in the past (now ", Rfc3339(now),
                                                   "); every recipient would expire unsent"));
  }
  return absl::OkStatus();
}

std::string JobFileCheck::TooLongReason() const {
  return absl::StrCat("line: longer than ", state_->limits.max_recipient_line, " bytes");
}

absl::StatusOr<Recipient> JobFileCheck::CheckRecipient(std::string_view line) {
  State& s = *state_;
  ASSIGN_OR_RETURN(Recipient rcpt, ParseRecipientLine(line, s.limits));
  // RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: no line over 998 octets leaves Volley.
  // Refused here, where the sender can be told, not at delivery.
  if (s.check_rendered_lines) {
    RETURN_IF_ERROR(s.tpl.CheckLineLength(rcpt, s.longest_builtins));
  }
  if (s.check_unsubscribe_url &&
      !RenderUnsubscribeUrl(s.header, rcpt, s.longest_token, &s.unsubscribe_url)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsubscribe_url: renders longer than ", kMaxUnsubscribeUrl,
                     " octets for this recipient (values are percent-encoded)"));
  }
  ++s.accepted;
  for (const auto& [name, value] : rcpt.vars) {
    if (auto it = s.index.find(name); it != s.index.end()) {
      State::Tracked& v = s.vars[it->second];
      ++v.defined;
      if (!value.empty()) ++v.nonempty;
    }
    if (s.seen_names.size() < kMaxRememberedNames) s.seen_names.insert(name);
  }
  return rcpt;
}

absl::Status JobFileCheck::Finish() const {
  const State& s = *state_;
  if (s.accepted == 0) return absl::OkStatus();
  std::vector<std::string> candidates(s.seen_names.begin(), s.seen_names.end());
  // Sorted, so that which of two equally close names is suggested does not
  // depend on hashing.
  std::sort(candidates.begin(), candidates.end());
  candidates.emplace_back("to");
  std::string message;
  size_t undefined = 0;
  for (const State::Tracked& v : s.vars) {
    if (!v.needs_definition || v.defined > 0) continue;
    if (++undefined > kMaxUndefinedListed) continue;
    if (!message.empty()) message.append("; ");
    absl::StrAppend(&message, v.where, ": {{", v.name, "}}: no recipient defines \"", v.name,
                    "\" and the placeholder has no default");
    if (const std::string_view near = ClosestName(v.name, candidates); !near.empty()) {
      absl::StrAppend(&message, "; did you mean \"", base::Sv(near), "\"?");
    }
  }
  if (undefined == 0) return absl::OkStatus();
  if (undefined > kMaxUndefinedListed) {
    absl::StrAppend(&message, "; and ", undefined - kMaxUndefinedListed,
                    " more undefined placeholders");
  }
  return absl::InvalidArgumentError(message);
}

std::vector<LackingVariable> JobFileCheck::Lacking() const {
  const State& s = *state_;
  std::vector<LackingVariable> out;
  for (const State::Tracked& v : s.vars) {
    const uint64_t lacking = s.accepted - v.nonempty;
    if (lacking > 0) out.push_back(LackingVariable{v.name, lacking, !v.needs_definition});
  }
  std::stable_sort(out.begin(), out.end(), [](const LackingVariable& a, const LackingVariable& b) {
    return a.recipients > b.recipients;
  });
  return out;
}

uint64_t JobFileCheck::accepted() const { return state_->accepted; }
const JobHeader& JobFileCheck::header() const { return state_->header; }
const Template& JobFileCheck::tpl() const { return state_->tpl; }

std::string FormatLacking(const std::vector<LackingVariable>& lacking, size_t max_listed) {
  std::string out;
  for (size_t i = 0; i < lacking.size() && i < max_listed; ++i) {
    if (i > 0) out.append(", ");
    absl::StrAppend(&out, lacking[i].name, " ", lacking[i].recipients,
                    lacking[i].has_default ? " (default used)" : " (rendered empty)");
  }
  if (lacking.size() > max_listed) absl::StrAppend(&out, ", and ", lacking.size() - max_listed, " more");
  return out;
}

size_t EditDistance(std::string_view a, std::string_view b, size_t cap) {
  if (a.size() > b.size()) std::swap(a, b);
  if (b.size() - a.size() > cap) return cap + 1;
  // Optimal string alignment: insertions, deletions, substitutions and the
  // transposition of two neighbours ("frist" is one step from "first").
  std::vector<size_t> before(a.size() + 1), prev(a.size() + 1), cur(a.size() + 1);
  for (size_t i = 0; i <= a.size(); ++i) prev[i] = i;
  for (size_t j = 1; j <= b.size(); ++j) {
    cur[0] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[i] = std::min({prev[i] + 1, cur[i - 1] + 1, prev[i - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[i] = std::min(cur[i], before[i - 2] + 1);
      }
    }
    before.swap(prev);
    prev.swap(cur);
  }
  return std::min(prev[a.size()], cap + 1);
}

std::string_view ClosestName(std::string_view name, const std::vector<std::string>& candidates) {
  // One step for a short name ("tag" is not a typo of "to"), two for a longer one.
  const size_t worth = name.size() <= 4 ? 1 : 2;
  std::string_view best;
  size_t best_distance = worth + 1;
  for (const std::string& c : candidates) {
    if (c == name) continue;
    const size_t d = EditDistance(name, c, worth);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

absl::StatusOr<JobFileReport> CheckJobFile(
    const std::string& path, std::string_view shown_as, const JobLimits& limits, absl::Time now,
    const std::function<void(const RejectedLine&)>& on_rejected, const HeaderCheck& header_check) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  auto refused = [&](uint64_t line, std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(base::Sv(shown_as), ":", line, ": ", base::Sv(why)));
  };
  LineReader reader(fd);
  ASSIGN_OR_RETURN(HeaderLine header_line, ReadHeaderLine(reader, limits, path));
  if (!header_line.refusal.empty()) return refused(1, header_line.refusal);
  std::string line = std::move(header_line.line);
  absl::StatusOr<JobFileCheck> check = JobFileCheck::Start(line, limits);
  if (!check.ok()) return refused(1, base::StdSv(check.status().message()));
  if (header_check) {
    if (absl::Status bad = header_check(check->header(), check->tpl()); !bad.ok()) {
      return refused(1, base::StdSv(bad.message()));
    }
  }
  if (absl::Status bad = check->CheckTimes(now); !bad.ok()) return refused(1, base::StdSv(bad.message()));
  JobFileReport report;
  report.job = check->header().id;
  for (;;) {
    const auto r = reader.Next(limits.max_recipient_line, &line);
    if (r == LineReader::Result::kEnd) break;
    if (r == LineReader::Result::kError) {
      errno = reader.error();
      return base::ErrnoError(path, "read");
    }
    const uint64_t line_no = reader.line_no();
    if (line_no > UINT32_MAX) return refused(line_no, kTooManyLinesReason);
    if (r == LineReader::Result::kTooLong) {
      ++report.rejected;
      const std::string why = check->TooLongReason();
      if (on_rejected) on_rejected(RejectedLine{line_no, why, ""});
      continue;
    }
    if (line.empty()) continue;
    absl::StatusOr<Recipient> rcpt = check->CheckRecipient(line);
    if (!rcpt.ok()) {
      ++report.rejected;
      if (on_rejected) on_rejected(RejectedLine{line_no, base::StdSv(rcpt.status().message()), line});
    }
  }
  if (absl::Status bad = check->Finish(); !bad.ok()) return refused(1, base::StdSv(bad.message()));
  report.accepted = check->accepted();
  report.lacking = check->Lacking();
  return report;
}

std::string HeaderTooLongReason(const JobLimits& limits) {
  return absl::StrCat("header: longer than ", limits.max_header_line, " bytes");
}

absl::StatusOr<HeaderLine> ReadHeaderLine(LineReader& reader, const JobLimits& limits,
                                          std::string_view path) {
  HeaderLine got;
  switch (reader.Next(limits.max_header_line, &got.line)) {
    case LineReader::Result::kLine:
      break;
    case LineReader::Result::kTooLong:
      got.refusal = HeaderTooLongReason(limits);
      break;
    case LineReader::Result::kEnd:
      got.refusal = std::string(kEmptyJobFileReason);
      break;
    case LineReader::Result::kError:
      errno = reader.error();
      return base::ErrnoError(path, "read");
  }
  return got;
}

}  // namespace volley::queue
