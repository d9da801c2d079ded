// feedback.cc - see feedback.h
#include "engine/feedback.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::engine {
namespace {

using metrics::DeliveryStatus;

// At most this much of what a report said goes into one record's response.
constexpr size_t kMaxResponse = 512;
// Notes kept for one log line about one report.
constexpr size_t kMaxNotes = 8;

std::string Clip(std::string_view s, size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\t') c = ' ';
  }
  return out;
}

bool Contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

void Note(std::vector<std::string>* notes, std::string note) {
  if (notes->size() < kMaxNotes) notes->push_back(std::move(note));
}

// ReportSummary - "abuse report from abuse@isp.test (SomeGenerator/1.0)".
std::string ReportSummary(const feedback::Report& report) {
  const std::string& ua = report.feedback.user_agent;
  return absl::StrCat(report.feedback.feedback_type, " report from ",
                      report.from.empty() ? "?" : report.from, ua.empty() ? "" : " (", ua,
                      ua.empty() ? "" : ")");
}

size_t KindIndex(feedback::ReportKind kind) {
  switch (kind) {
    case feedback::ReportKind::kDeliveryStatus: return 0;
    case feedback::ReportKind::kFeedback: return 1;
    case feedback::ReportKind::kBounceText: return 2;
    case feedback::ReportKind::kAutoReply: return 3;
    case feedback::ReportKind::kOther: return 4;
  }
  return 4;
}
constexpr size_t kUnreadable = 5;
constexpr size_t kUnsubscribeRequest = 6;

size_t ReasonIndex(queue::SuppressionReason reason) {
  return static_cast<size_t>(reason) - 1;  // kHardBounce = 1 .. kManual = 5
}

}  // namespace

std::optional<std::pair<std::string, uint32_t>> ParseMessageIdClaim(std::string_view id) {
  if (!id.empty() && id.front() == '<') id.remove_prefix(1);
  if (!id.empty() && id.back() == '>') id.remove_suffix(1);
  const size_t at = id.rfind('@');
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view local = id.substr(0, at);
  const size_t dot_random = local.rfind('.');
  if (dot_random == std::string_view::npos) return std::nullopt;
  const std::string_view random = local.substr(dot_random + 1);
  if (random.empty() || random.size() > 16 ||
      !std::all_of(random.begin(), random.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
    return std::nullopt;
  }
  local = local.substr(0, dot_random);
  const size_t dot_line = local.rfind('.');
  if (dot_line == std::string_view::npos || dot_line == 0) return std::nullopt;
  uint32_t line = 0;
  const std::string_view digits = local.substr(dot_line + 1);
  if (digits.empty() || digits.size() > 10 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return absl::ascii_isdigit(c); }) ||
      !absl::SimpleAtoi(base::Sv(digits), &line)) {
    return std::nullopt;
  }
  return std::make_pair(std::string(local.substr(0, dot_line)), line);
}

int ReplyCodeOf(std::string_view diagnostic) {
  std::string_view s = base::StdSv(absl::StripLeadingAsciiWhitespace(base::Sv(diagnostic)));
  const size_t semi = s.find(';');
  if (semi != std::string_view::npos && semi < 16) s = s.substr(semi + 1);
  s = base::StdSv(absl::StripLeadingAsciiWhitespace(base::Sv(s)));
  if (s.size() < 3 || s[0] < '2' || s[0] > '5' || !absl::ascii_isdigit(s[1]) ||
      !absl::ascii_isdigit(s[2])) {
    return 0;
  }
  if (s.size() > 3 && s[3] != ' ' && s[3] != '-') return 0;
  return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

absl::Status FeedbackRecorder::Write(std::string log_bytes,
                                     std::unique_ptr<queue::Queue::OutcomeBatch> batch) {
  std::lock_guard<std::mutex> lock(mu_);
  committer_->Submit(Committer::Unit{std::move(log_bytes), std::move(batch), {}, {}}, lane_);
  std::optional<Committer::Unit> done = committer_->WaitDone(lane_);
  if (!done.has_value()) return absl::InternalError("feedback: the committer lost a unit");
  return done->status;
}

FeedbackProcessor::FeedbackProcessor(FeedbackOptions options, const token::Keyring& keys,
                                     queue::Queue* queue, queue::SuppressionList* suppressions,
                                     const metrics::Classifier* classifier,
                                     FeedbackRecorder* recorder,
                                     metrics::FeedbackMetrics* metrics, ReadyJobs* ready)
    : options_(std::move(options)),
      keys_(keys),
      queue_(queue),
      suppressions_(suppressions),
      classifier_(classifier),
      recorder_(recorder),
      metrics_(metrics),
      ready_(ready),
      policy_(std::make_shared<const FeedbackPolicy>(options_.policy)),
      files_(options_.spool) {}

std::shared_ptr<const FeedbackPolicy> FeedbackProcessor::Policy() const {
  return policy_.load(std::memory_order_acquire);
}

void FeedbackProcessor::SetPolicy(FeedbackPolicy policy) {
  policy_.store(std::make_shared<const FeedbackPolicy>(std::move(policy)),
                std::memory_order_release);
}

absl::StatusOr<std::optional<FeedbackProcessor::JobInfo>> FeedbackProcessor::JobOf(
    uint32_t job_no) {
  auto it = jobs_.find(job_no);
  if (it == jobs_.end()) {
    ASSIGN_OR_RETURN(std::vector<queue::JobRecord> all, queue_->ListJobs());
    for (queue::JobRecord& record : all) {
      if (jobs_.contains(record.job_no) || record.state == queue::JobState::kLoading) continue;
      JobInfo info;
      absl::StatusOr<queue::JobHeader> h = queue::ParseJobHeader(record.header_json,
                                                                 options_.job_limits);
      if (h.ok()) info.from_domain = absl::AsciiStrToLower(base::Sv(queue::DomainOf(h->from)));
      info.record = std::move(record);
      jobs_.emplace(info.record.job_no, std::move(info));
    }
    it = jobs_.find(job_no);
  }
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::optional<FeedbackProcessor::JobInfo>> FeedbackProcessor::JobNamed(
    std::string_view left) {
  ASSIGN_OR_RETURN(std::optional<queue::JobRecord> record, queue_->FindJob(left));
  if (record.has_value()) return JobOf(record->job_no);
  // compose.h writes "j<number>" for an id that is not a dot-atom.
  uint32_t job_no = 0;
  if (left.size() > 1 && left[0] == 'j' && absl::SimpleAtoi(base::Sv(left.substr(1)), &job_no)) {
    return JobOf(job_no);
  }
  return std::nullopt;
}

std::optional<FeedbackProcessor::Match> FeedbackProcessor::MatchOf(
    const FeedbackEnvelope& envelope, const feedback::Report& report,
    std::vector<std::string>* notes) const {
  for (const std::string& rcpt : envelope.rcpt_to) {
    const std::string domain = absl::AsciiStrToLower(base::Sv(queue::DomainOf(rcpt)));
    if (!Contains(options_.inbound_domains, domain)) continue;
    const std::string_view local = std::string_view(rcpt).substr(0, rcpt.size() - domain.size() - 1);
    if (local.size() < token::kVerpPrefix.size() ||
        !base::EqualsIgnoreCase(local.substr(0, token::kVerpPrefix.size()), token::kVerpPrefix)) {
      continue;
    }
    absl::StatusOr<token::Claim> claim = token::CheckVerpAddress(keys_, rcpt);
    if (claim.ok()) return Match{claim->job_no, claim->line, "verp", {}};
    Note(notes, absl::StrCat("VERP address does not verify (", claim.status().message(),
                             "): it suppresses nothing"));
  }
  for (const std::string& trace : report.original.traces) {
    absl::StatusOr<token::Claim> claim = token::Check(keys_, token::Purpose::kTrace, trace);
    if (claim.ok()) return Match{claim->job_no, claim->line, "trace", {}};
    Note(notes, absl::StrCat("Volley-Trace does not verify (", claim.status().message(), ")"));
  }
  if (!report.original.message_id.empty()) {
    if (std::optional<std::pair<std::string, uint32_t>> m =
            ParseMessageIdClaim(report.original.message_id)) {
      return Match{0, m->second, "message_id", std::move(m->first)};
    }
  }
  return std::nullopt;
}

absl::StatusOr<std::optional<FeedbackProcessor::Target>> FeedbackProcessor::Resolve(
    const Match& m, const feedback::Report& report, std::vector<std::string>* notes) {
  ASSIGN_OR_RETURN(std::optional<JobInfo> job,
                   m.job_left.empty() ? JobOf(m.job_no) : JobNamed(m.job_left));
  if (!job.has_value()) {
    Note(notes, m.job_left.empty()
                    ? absl::StrCat(m.matched_by, " names job number ", m.job_no,
                                   ", which the queue does not know")
                    : absl::StrCat("Message-ID names job \"", Clip(m.job_left, 64),
                                   "\", which the queue does not know"));
    return std::nullopt;
  }
  absl::StatusOr<std::string> rcpt =
      files_.RecipientAt(job->record.id, m.line, options_.job_limits);
  if (!rcpt.ok()) {
    Note(notes, absl::StrCat(m.matched_by, " names job \"", job->record.id, "\" line ", m.line,
                             ": ", rcpt.status().message()));
    return std::nullopt;
  }
  if (m.matched_by == "message_id") {
    // Anyone can write a Message-ID: it counts only with the address it names.
    std::vector<std::string_view> named;
    for (const feedback::DsnRecipient& r : report.recipients) {
      named.push_back(r.final_recipient);
      named.push_back(r.original_recipient);
    }
    for (const std::string& a : report.feedback.original_rcpt_to) named.push_back(a);
    for (absl::string_view a : absl::StrSplit(report.original.to, ", ")) {
      named.push_back(base::StdSv(a));
    }
    if (std::none_of(named.begin(), named.end(),
                     [&](std::string_view a) { return base::EqualsIgnoreCase(a, *rcpt); })) {
      Note(notes, absl::StrCat("Message-ID names job \"", job->record.id, "\" line ", m.line,
                               ", but the report does not name that recipient's address"));
      return std::nullopt;
    }
  }
  return Target{*std::move(job), m.line, *std::move(rcpt), m.matched_by};
}

absl::Status FeedbackProcessor::Suppress(const Target& t, queue::SuppressionReason reason,
                                         absl::Time now, std::string_view why) {
  if (suppressions_ == nullptr) return absl::OkStatus();
  const std::string source =
      absl::StrCat("job ", t.job.record.id, " line ", t.line, " (", base::Sv(why), ")");
  if (reason == queue::SuppressionReason::kSoftBounce) {
    ASSIGN_OR_RETURN(const bool added,
                     suppressions_->RecordSoftBounce(t.rcpt, t.job.from_domain, now, source));
    if (added) metrics_->suppressions_added[ReasonIndex(reason)].Add();
    return absl::OkStatus();
  }
  queue::Suppression entry;
  entry.address = t.rcpt;
  entry.scope = suppressions_->ScopeFor(t.job.from_domain);
  entry.reason = reason;
  entry.source = source;
  entry.added = now;
  RETURN_IF_ERROR(suppressions_->Add(entry));
  metrics_->suppressions_added[ReasonIndex(reason)].Add();
  return absl::OkStatus();
}

absl::Status FeedbackProcessor::MaybePause(const Target& t) {
  const std::shared_ptr<const FeedbackPolicy> policy = Policy();
  const FeedbackPolicy& p = *policy;
  if (p.pause_on_complaint_rate <= 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const queue::JobProgress progress, queue_->ReadProgress(t.job.record.job_no));
  if (progress.delivered < p.min_delivered_for_rate || progress.delivered == 0) {
    return absl::OkStatus();
  }
  const double rate =
      static_cast<double>(progress.complained) / static_cast<double>(progress.delivered);
  if (rate < p.pause_on_complaint_rate) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<queue::JobRecord> now_record, queue_->FindJob(t.job.record.id));
  if (!now_record.has_value() || now_record->paused ||
      now_record->state != queue::JobState::kReady) {
    return absl::OkStatus();  // finished, cancelled, or paused already
  }
  absl::StatusOr<queue::JobRecord> paused = queue_->SetPaused(t.job.record.id, true);
  if (!paused.ok()) {
    // Finished meanwhile: nothing left to hold back.
    if (absl::IsFailedPrecondition(paused.status())) return absl::OkStatus();
    return paused.status();
  }
  if (ready_ != nullptr) ready_->Push(t.job.record.id);
  metrics_->jobs_paused.Add();
  jobs_.erase(t.job.record.job_no);  // its record changed
  base::LogWarning(
      "job \"%s\" paused: complaint rate %.3f%% (%llu complaints, %llu delivered) reached "
      "[inbound] pause_on_complaint_rate %.3f%%; volleyctl resume %s sends the rest",
      t.job.record.id, rate * 100, static_cast<unsigned long long>(progress.complained),
      static_cast<unsigned long long>(progress.delivered), p.pause_on_complaint_rate * 100,
      t.job.record.id);
  return absl::OkStatus();
}

metrics::DeliveryRecord FeedbackProcessor::EventOf(DeliveryStatus status, const Target* t,
                                                   absl::Time now) const {
  metrics::DeliveryRecord r;
  r.ts = now;
  r.node = options_.node;
  r.status = status;
  if (t != nullptr) {
    r.job = t->job.record.id;
    r.line = t->line;
    r.rcpt = t->rcpt;
    r.matched_by = t->matched_by;
  }
  return r;
}

absl::Status FeedbackProcessor::Handle(const FeedbackEnvelope& envelope,
                                       std::string_view content) {
  std::lock_guard<std::mutex> lock(mu_);
  return HandleLocked(envelope, content, absl::Now());
}

absl::Status FeedbackProcessor::HandleLocked(const FeedbackEnvelope& envelope,
                                             std::string_view content, absl::Time now) {
  std::string log;
  std::unique_ptr<queue::Queue::OutcomeBatch> batch = queue_->NewOutcomeBatch();
  std::vector<std::string> notes;
  const std::string from_peer =
      absl::StrCat("from <", Clip(envelope.mail_from, 64), "> at ", Clip(envelope.peer, 64));

  absl::StatusOr<feedback::Report> parsed =
      feedback::ParseReport(content, envelope.mail_from, options_.parse_limits);
  if (!parsed.ok()) {
    metrics_->reports[kUnreadable].Add();
    metrics::DeliveryRecord r = EventOf(DeliveryStatus::kUnmatched, nullptr, now);
    const std::string response = Clip(absl::StrCat("unreadable: ", parsed.status().message()),
                                      kMaxResponse);
    r.response = response;
    const std::string client = PeerAddress(envelope.peer);
    r.host = client;
    metrics::FormatDeliveryRecord(r, &log);
    base::LogWarning("feedback: a message %s is unreadable (%s); logged as unmatched", from_peer,
                     base::StdSv(parsed.status().message()));
    RETURN_IF_ERROR(recorder_->Write(std::move(log), nullptr));
    metrics_->CountEvent(DeliveryStatus::kUnmatched, "");
    return absl::OkStatus();
  }
  const feedback::Report& report = *parsed;
  metrics_->reports[KindIndex(report.kind)].Add();
  const std::string_view kind = feedback::ReportKindName(report.kind);
  if (report.kind == feedback::ReportKind::kAutoReply) {
    base::LogInfo("feedback: an auto-reply %s (\"%s\"): not a bounce, nothing recorded",
                  from_peer, Clip(report.subject, 80));
    return absl::OkStatus();
  }

  std::optional<Target> target;
  if (std::optional<Match> m = MatchOf(envelope, report, &notes)) {
    ASSIGN_OR_RETURN(target, Resolve(*m, report, &notes));
  }
  if (report.kind == feedback::ReportKind::kOther && !target.has_value()) {
    base::LogInfo("feedback: a message %s (\"%s\") is no report and names no job: ignored",
                  from_peer, Clip(report.subject, 80));
    return absl::OkStatus();
  }

  const std::string via = report.kind == feedback::ReportKind::kDeliveryStatus ? "dsn"
                          : report.kind == feedback::ReportKind::kFeedback     ? "arf"
                                                                               : "bounce_text";
  const std::string client = PeerAddress(envelope.peer);
  std::vector<std::string> said;  // for the log line
  bool attributed = false;        // the target got its event
  // Events to count once written (a failed write is tried again: no double count).
  std::vector<std::pair<DeliveryStatus, std::string>> counted;
  auto unmatched = [&](std::string_view rcpt, std::string response,
                       std::string_view feedback_type = {}) {
    metrics::DeliveryRecord r = EventOf(DeliveryStatus::kUnmatched, nullptr, now);
    r.rcpt = rcpt;
    const std::string clipped = Clip(response, kMaxResponse);
    r.response = clipped;
    r.via = via;
    r.feedback_type = feedback_type;
    r.reporting_mta = report.reporting_mta;
    r.host = client;
    metrics::FormatDeliveryRecord(r, &log);
    counted.emplace_back(DeliveryStatus::kUnmatched, std::string(queue::DomainOf(rcpt)));
  };

  if (report.kind == feedback::ReportKind::kFeedback) {
    const std::string& type = report.feedback.feedback_type;
    if (target.has_value()) {
      metrics::DeliveryRecord r = EventOf(DeliveryStatus::kComplained, &*target, now);
      r.via = via;
      r.feedback_type = type;
      r.reporting_mta = report.reporting_mta;
      const std::string response = Clip(ReportSummary(report), kMaxResponse);
      r.response = response;
      metrics::FormatDeliveryRecord(r, &log);
      counted.emplace_back(DeliveryStatus::kComplained, std::string(queue::DomainOf(target->rcpt)));
      if (Contains(Policy()->complaint_types, type)) {
        // Only a complaint counts toward the complaint rate: a "not-spam" or
        // "auth-failure" report is recorded, not held against the job.
        batch->Count(target->job.record.job_no, queue::Counted::kComplained);
        RETURN_IF_ERROR(Suppress(*target, queue::SuppressionReason::kComplaint, now,
                                 absl::StrCat("complaint: ", type)));
        said.push_back(absl::StrCat(target->rcpt, " complained (", type, "), suppressed"));
      } else {
        said.push_back(absl::StrCat(target->rcpt, " feedback ", type, ", not suppressed"));
      }
      attributed = true;
    } else {
      const std::string rcpt = report.feedback.original_rcpt_to.empty()
                                   ? std::string()
                                   : report.feedback.original_rcpt_to.front();
      unmatched(rcpt, ReportSummary(report), type);
      said.push_back(absl::StrCat("feedback report (", type, ") matching no job"));
    }
  } else {
    // A DSN, or a bounce in words: per recipient. One message of Volley's has one
    // recipient when it can be matched (VERP, trace), so the target gets the
    // first failure; the rest of a report that names several are noted.
    std::vector<feedback::DsnRecipient> recipients = report.recipients;
    if (recipients.empty() && report.kind == feedback::ReportKind::kBounceText &&
        target.has_value()) {
      feedback::DsnRecipient r;
      r.final_recipient = target->rcpt;
      r.action = feedback::DsnAction::kFailed;
      r.diagnostic_code = Clip(report.text, kMaxResponse);
      r.status = feedback::StatusInText(report.text);  // for the classification
      recipients.push_back(std::move(r));
    }
    for (const feedback::DsnRecipient& dr : recipients) {
      const bool failed = dr.action == feedback::DsnAction::kFailed ||
                          (report.kind == feedback::ReportKind::kBounceText &&
                           dr.action == feedback::DsnAction::kUnknown);
      const bool delayed = dr.action == feedback::DsnAction::kDelayed;
      if (!failed && !delayed) {
        Note(&notes, absl::StrCat(Clip(dr.final_recipient, 64), ": Action ",
                                  base::Sv(feedback::DsnActionName(dr.action)), ", nothing to record"));
        continue;
      }
      const int code = ReplyCodeOf(dr.diagnostic_code);
      const DeliveryStatus status =
          failed ? DeliveryStatus::kBouncedAsync : DeliveryStatus::kDelayedAsync;
      const std::string_view diagnostic =
          dr.diagnostic_code.empty() ? std::string_view(report.text) : dr.diagnostic_code;
      if (!target.has_value()) {
        unmatched(dr.final_recipient.empty() ? dr.original_recipient : dr.final_recipient,
                  absl::StrCat(dr.status, " ", Clip(diagnostic, kMaxResponse)));
        continue;
      }
      if (attributed) {
        Note(&notes, absl::StrCat("the report also names ", Clip(dr.final_recipient, 64),
                                  "; only ", target->rcpt, " was sent this message"));
        continue;
      }
      attributed = true;
      metrics::DeliveryRecord r = EventOf(status, &*target, now);
      const std::string klass = std::string(
          classifier_->Classify(status, code, dr.status, diagnostic));
      const std::string response = Clip(diagnostic, kMaxResponse);
      r.klass = klass;
      r.code = code;
      r.enhanced = dr.status;
      r.response = response;
      r.via = via;
      r.reporting_mta = report.reporting_mta;
      r.remote_mta = dr.remote_mta;
      metrics::FormatDeliveryRecord(r, &log);
      counted.emplace_back(status, std::string(queue::DomainOf(target->rcpt)));
      if (delayed) {
        said.push_back(absl::StrCat(target->rcpt, " delayed (", dr.status, ")"));
        continue;
      }
      batch->Count(target->job.record.job_no, queue::Counted::kBouncedAsync);
      std::string action = "not suppressed";
      if (Contains(Policy()->hard_bounce_classes, klass)) {
        RETURN_IF_ERROR(Suppress(*target, queue::SuppressionReason::kHardBounce, now,
                                 absl::StrCat("bounced ", dr.status, " ", klass)));
        action = "suppressed";
      } else if (Contains(Policy()->soft_bounce_classes, klass)) {
        RETURN_IF_ERROR(Suppress(*target, queue::SuppressionReason::kSoftBounce, now,
                                 absl::StrCat("bounced ", dr.status, " ", klass)));
        action = "soft bounce counted";
      }
      said.push_back(absl::StrCat(target->rcpt, " bounced (", dr.status, " ", klass, "), ",
                                  action));
    }
    if (recipients.empty()) {
      if (target.has_value()) {
        Note(&notes, "the report names no recipient");
      } else {
        unmatched("", absl::StrCat(base::Sv(kind), ": ", Clip(report.subject, 200)));
      }
    }
  }
  if (!target.has_value() && log.empty()) {
    unmatched("", absl::StrCat(base::Sv(kind), ": ", Clip(report.subject, 200)));
  }
  for (const std::string& n : report.notes) Note(&notes, n);
  RETURN_IF_ERROR(recorder_->Write(std::move(log), std::move(batch)));
  for (const auto& [event, domain] : counted) metrics_->CountEvent(event, domain);
  base::LogInfo("feedback: %s %s: %s%s%s", kind, from_peer,
                said.empty() ? std::string("matched no job") : absl::StrJoin(said, "; "),
                notes.empty() ? "" : "; ", absl::StrJoin(notes, "; "));
  if (attributed && report.kind == feedback::ReportKind::kFeedback) {
    RETURN_IF_ERROR(MaybePause(*target));
  }
  return absl::OkStatus();
}

absl::Status FeedbackProcessor::Unsubscribe(const token::Claim& claim, std::string_view peer) {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  metrics_->reports[kUnsubscribeRequest].Add();
  std::vector<std::string> notes;
  ASSIGN_OR_RETURN(std::optional<Target> target,
                   Resolve(Match{claim.job_no, claim.line, "one_click", {}}, feedback::Report{},
                           &notes));
  if (!target.has_value()) {
    const std::string why = notes.empty() ? std::string("no such recipient") : notes.front();
    metrics::DeliveryRecord r = EventOf(DeliveryStatus::kUnmatched, nullptr, now);
    const std::string response =
        Clip(absl::StrCat("one-click unsubscribe for job number ", claim.job_no, " line ",
                          claim.line, ": ", why),
             kMaxResponse);
    r.response = response;
    r.via = "one_click";
    r.host = peer;
    std::string log;
    metrics::FormatDeliveryRecord(r, &log);
    RETURN_IF_ERROR(recorder_->Write(std::move(log), nullptr));
    metrics_->CountEvent(DeliveryStatus::kUnmatched, "");
    return absl::NotFoundError(why);
  }
  target->matched_by = "token";
  RETURN_IF_ERROR(Suppress(*target, queue::SuppressionReason::kUnsubscribe, now, "one-click"));
  metrics::DeliveryRecord r = EventOf(DeliveryStatus::kUnsubscribed, &*target, now);
  r.via = "one_click";
  r.host = peer;
  std::string log;
  metrics::FormatDeliveryRecord(r, &log);
  std::unique_ptr<queue::Queue::OutcomeBatch> batch = queue_->NewOutcomeBatch();
  batch->Count(target->job.record.job_no, queue::Counted::kUnsubscribed);
  RETURN_IF_ERROR(recorder_->Write(std::move(log), std::move(batch)));
  metrics_->CountEvent(DeliveryStatus::kUnsubscribed, queue::DomainOf(target->rcpt));
  base::LogInfo("feedback: %s unsubscribed (job \"%s\" line %u, one-click from %s)", target->rcpt,
                target->job.record.id, target->line, Clip(peer, 64));
  return absl::OkStatus();
}

queue::IntakeSuppression SuppressedAtIntake(std::string node, const queue::SuppressionList* list,
                                            FeedbackRecorder* recorder,
                                            metrics::IntakeMetrics* metrics) {
  // The records of the job being taken in, not yet written. A job whose intake
  // stopped half-way hands its records over again, from its first line, when
  // it is taken in again, so what a stopped intake left here is dropped when
  // another job begins or the same job's lines start over.
  struct Pending {
    uint32_t job_no = 0;
    uint32_t last_line = 0;  // of this pass over the file
    uint32_t furthest = 0;   // of every pass: lines up to it were counted
    std::string log;
    std::string node;
  };
  static constexpr size_t kChunk = 1 << 20;
  auto pending = std::make_shared<Pending>();
  pending->node = std::move(node);
  queue::IntakeSuppression hook;
  hook.list = list;
  hook.on_suppressed = [pending, recorder, metrics](const queue::JobRecord& job, uint32_t line,
                                                     std::string_view address,
                                                     const queue::Suppression& entry) {
    if (pending->job_no != job.job_no || line <= pending->last_line) {
      if (pending->job_no != job.job_no) pending->furthest = 0;
      pending->job_no = job.job_no;
      pending->log.clear();
    }
    pending->last_line = line;
    metrics::DeliveryRecord r;
    r.ts = absl::Now();
    r.job = job.id;
    r.line = line;
    r.rcpt = address;
    r.node = pending->node;
    r.status = DeliveryStatus::kSuppressed;
    r.enhanced = "5.7.1";
    const std::string why = absl::StrCat(
        "suppressed: ", base::Sv(queue::SuppressionReasonName(entry.reason)), " (", entry.source, ")");
    r.response = why;
    metrics::FormatDeliveryRecord(r, &pending->log);
    if (metrics != nullptr && line > pending->furthest) metrics->recipients_suppressed.Add();
    pending->furthest = std::max(pending->furthest, line);
    if (pending->log.size() < kChunk) return absl::OkStatus();
    return recorder->Write(std::exchange(pending->log, std::string()), nullptr);
  };
  hook.before_commit = [pending, recorder](const queue::JobRecord& job, uint64_t) {
    if (pending->job_no != job.job_no || pending->log.empty()) return absl::OkStatus();
    return recorder->Write(std::exchange(pending->log, std::string()), nullptr);
  };
  return hook;
}

FeedbackThread::FeedbackThread(std::string spool_dir, uint64_t max_message_size,
                               FeedbackProcessor* processor)
    : spool_dir_(std::move(spool_dir)), max_message_size_(max_message_size),
      processor_(processor) {}

FeedbackThread::~FeedbackThread() { Stop(); }

void FeedbackThread::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "volley-feedback");
    Loop();
  });
}

void FeedbackThread::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool FeedbackThread::Drain() {
  absl::StatusOr<std::vector<std::string>> waiting = ListFeedback(spool_dir_);
  if (!waiting.ok()) {
    base::LogWarning("feedback: %s", base::StdSv(waiting.status().message()));
    return false;
  }
  for (const std::string& path : *waiting) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return true;
    }
    // The envelope line and the message: the listener's own bound on each.
    absl::StatusOr<FeedbackMessage> m = ReadFeedback(path, max_message_size_);
    if (!m.ok()) {
      const std::string failed_dir = spool_dir_ + "/feedback/failed";
      ::mkdir(failed_dir.c_str(), 0750);
      const std::string to = failed_dir + path.substr(path.rfind('/'));
      const bool moved = ::rename(path.c_str(), to.c_str()) == 0;
      base::LogWarning("feedback: %s; %s", base::StdSv(m.status().message()),
                       moved ? absl::StrCat("moved to ", to) : std::string("left in place"));
      if (!moved) return false;
      continue;
    }
    const absl::Status handled = processor_->Handle(m->envelope, m->content);
    if (!handled.ok()) {
      base::LogWarning("feedback: %s: %s (kept; tried again in %s)", path,
                       base::StdSv(handled.message()), absl::FormatDuration(kRetry));
      return false;
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      base::LogWarning("feedback: %s: cannot remove it (%s): it will be read again", path,
                       std::strerror(errno));
      return false;
    }
  }
  return true;
}

void FeedbackThread::Loop() {
  for (;;) {
    const bool drained = Drain();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoMilliseconds(drained ? kPoll : kRetry),
                 [&] { return stop_; });
    if (stop_) return;
  }
}

}  // namespace volley::engine
