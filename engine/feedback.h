// feedback.h - what comes back (bounces, complaints, unsubscribes): matched, recorded, suppressed
//
// SYNOPSIS
//   FeedbackRecorder recorder(&committer, /*lane=*/shards);
//   FeedbackProcessor feedback(options, keys, queue, suppressions, classifier, &recorder,
//                              &metrics, &ready_jobs);
//   RETURN_IF_ERROR(feedback.Handle(envelope, content));      // one inbound message
//   RETURN_IF_ERROR(feedback.Unsubscribe(claim, "192.0.2.7")); // one one-click POST
//
// DESCRIPTION
//   The inbound listener (engine/inbound.h) stores each message sent to an
//   inbound domain; the feedback thread hands it to Handle, which parses it
//   (engine/feedback/report.h) and then:
//
//   Matches it to the recipient it is about, trusting only what Volley signed:
//     1. verp: an envelope recipient b-<token>@<inbound domain> whose token
//        verifies (engine/token, Purpose::kVerp); a token that does not verify
//        matches nothing and suppresses nothing, whatever the report says;
//     2. trace: a Volley-Trace field of the returned message (Purpose::kTrace);
//     3. message_id: the returned Message-ID <job.line.random@domain>, which
//        anyone can write, so it counts only when the address on that line of
//        the job is also an address the report names.
//   A token names a job number and a line; the address is read back from the
//   job's file in accepted/ (queue/job_lines.h).
//
//   Records one delivery-log event per matched recipient (metrics/
//   delivery_status.h): bounced_async for a DSN's Action: failed or a
//   non-standard bounce, delayed_async for Action: delayed (recorded, nothing
//   more), complained for a feedback report, and unmatched for a report that
//   names no job of ours (with what it said). Auto-replies (RFC 3834) and
//   anything else are counted and logged, not recorded. The job's progress
//   counts bounced_async, complained and unsubscribed in the same write.
//
//   Suppresses (queue/suppression.h), under FeedbackPolicy (SetPolicy replaces
//   it on a reload; the soft-bounce limits and the scope are the list's own
//   policy, SuppressionList::SetPolicy): a bounce whose class
//   (metrics/classify.h, the [[classify]] rules over the DSN's status and
//   diagnostic) is a hard one at once; a soft one after soft_bounce_limit in
//   soft_bounce_window; a complaint of a suppressing Feedback-Type and an
//   unsubscribe permanently. Scope: the list's (global or the From domain).
//
//   Pauses a job whose complaint rate (complained / delivered, once at least
//   min_delivered_for_rate were delivered) reaches pause_on_complaint_rate,
//   with one log line; `volleyctl resume` resumes it.
//
//   FeedbackRecorder writes those records through the committer's feedback
//   lane (engine/committer.h), so the delivery log keeps one writer; intake's
//   `suppressed` records go the same way.
//
// CONTRACT
//   FeedbackProcessor: any thread, one call at a time (a mutex: the feedback
//   thread, the unsubscribe endpoint's threads and nothing else call it; the
//   volume is that of reports, not of mail). FeedbackRecorder: any thread.
//   Handle returns an error only when something must be tried again (a write
//   failed): the caller keeps the message and calls Handle again later, which
//   may log its events twice (never lose them).
#ifndef VOLLEY_ENGINE_FEEDBACK_H_
#define VOLLEY_ENGINE_FEEDBACK_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/committer.h"
#include "engine/feedback/report.h"
#include "engine/feedback_spool.h"
#include "engine/intake.h"
#include "engine/token/token.h"
#include "metrics/classify.h"
#include "metrics/delivery_log.h"
#include "metrics/metrics.h"
#include "queue/job_lines.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "queue/suppression.h"

namespace volley::engine {

// FeedbackRecorder - the committer's feedback lane, for threads that are not shards.
class FeedbackRecorder {
 public:
  FeedbackRecorder(Committer* committer, size_t lane) : committer_(committer), lane_(lane) {}
  // Write - log the records and apply the batch (may be null) after them; blocks
  // until both are written or the committer gives up (its error).
  absl::Status Write(std::string log_bytes, std::unique_ptr<queue::Queue::OutcomeBatch> batch);

 private:
  std::mutex mu_;
  Committer* committer_;
  size_t lane_;
};

struct FeedbackPolicy {
  // Classes of a bounce (metrics/classify.h) that suppress at once, and those
  // counted as soft bounces; a bounce of any other class (policy, content,
  // rate) is the sender's problem, not the address's: recorded only.
  std::vector<std::string> hard_bounce_classes = {"invalid_recipient", "inactive_mailbox"};
  std::vector<std::string> soft_bounce_classes = {"mailbox_full"};
  // Feedback-Types that suppress (lower case); "not-spam" and the like do not.
  std::vector<std::string> complaint_types = {"abuse", "fraud", "virus", "other"};
  // Pause a job when complained / delivered reaches this; 0 = never.
  double pause_on_complaint_rate = 0;
  // The rate is not judged before this many recipients were delivered (one
  // complaint among ten deliveries is noise, not a rate).
  uint64_t min_delivered_for_rate = 1000;
};

struct FeedbackOptions {
  std::string node;                          // every event's "node" (NodeName)
  std::string spool;                         // accepted/ is read for addresses
  std::vector<std::string> inbound_domains;  // lower case
  FeedbackPolicy policy;
  feedback::ParseLimits parse_limits;
  queue::JobLimits job_limits;
};

class FeedbackProcessor {
 public:
  // `suppressions` may be null (no list: nothing is suppressed, all is still
  // recorded); `ready` is told of a job paused for complaints.
  FeedbackProcessor(FeedbackOptions options, const token::Keyring& keys, queue::Queue* queue,
                    queue::SuppressionList* suppressions, const metrics::Classifier* classifier,
                    FeedbackRecorder* recorder, metrics::FeedbackMetrics* metrics,
                    ReadyJobs* ready);

  // Handle - one message sent to an inbound domain (see DESCRIPTION).
  absl::Status Handle(const FeedbackEnvelope& envelope, std::string_view content);

  // SetPolicy - the policy Handle and Unsubscribe judge by from their next
  // call on (a SIGHUP reload: [inbound] pause_on_complaint_rate and
  // min_delivered_for_rate). Any thread; it swaps one pointer and never waits
  // for a call under way, which finishes under the policy it started with.
  void SetPolicy(FeedbackPolicy policy);
  // Policy - the policy in force (options.policy until SetPolicy).
  std::shared_ptr<const FeedbackPolicy> Policy() const;

  // Unsubscribe - a one-click unsubscribe whose token verified: suppress the
  // address, log `unsubscribed`. NotFound when the claim names no job or line
  // Volley still has (the job file was removed).
  absl::Status Unsubscribe(const token::Claim& claim, std::string_view peer);

  // The parts of Handle, public for tests.
  struct Match {
    uint32_t job_no = 0;
    uint32_t line = 0;
    std::string matched_by;  // "verp", "trace", "message_id"
    std::string job_left;    // message_id: the job part (an id, or "j<number>")
  };

 private:
  struct JobInfo {
    queue::JobRecord record;
    std::string from_domain;  // lower case
  };
  struct Target {
    JobInfo job;
    uint32_t line = 0;
    std::string rcpt;
    std::string matched_by;
  };
  absl::Status HandleLocked(const FeedbackEnvelope& envelope, std::string_view content,
                            absl::Time now);
  std::optional<Match> MatchOf(const FeedbackEnvelope& envelope, const feedback::Report& report,
                               std::vector<std::string>* notes) const;
  absl::StatusOr<std::optional<JobInfo>> JobOf(uint32_t job_no);
  absl::StatusOr<std::optional<JobInfo>> JobNamed(std::string_view left);
  // Resolve - the job and address a match names; nullopt (with a note) when
  // that is not known, or a message_id match whose address the report does not
  // name.
  absl::StatusOr<std::optional<Target>> Resolve(const Match& m, const feedback::Report& report,
                                                std::vector<std::string>* notes);
  absl::Status Suppress(const Target& t, queue::SuppressionReason reason, absl::Time now,
                        std::string_view why);
  absl::Status MaybePause(const Target& t);
  metrics::DeliveryRecord EventOf(metrics::DeliveryStatus status, const Target* t,
                                  absl::Time now) const;

  FeedbackOptions options_;
  const token::Keyring& keys_;
  queue::Queue* queue_;
  queue::SuppressionList* suppressions_;
  const metrics::Classifier* classifier_;
  FeedbackRecorder* recorder_;
  metrics::FeedbackMetrics* metrics_;
  ReadyJobs* ready_;
  // Replaced whole by SetPolicy (the reload thread) while a call may read it.
  std::atomic<std::shared_ptr<const FeedbackPolicy>> policy_;

  std::mutex mu_;
  queue::AcceptedJobFiles files_;
  std::map<uint32_t, JobInfo> jobs_;  // by number; refreshed from the queue on a miss
};

// SuppressedAtIntake - intake's suppression hook (queue/spool.h, SUPPRESSION):
// a `suppressed` delivery-log record for each recipient the list names, written
// through the recorder before the job commits (in chunks of kChunk bytes on the
// way, so that a job of a million suppressed lines needs no more memory than
// that), and counted in metrics->recipients_suppressed; each record names
// `node` (NodeName). For the intake thread.
queue::IntakeSuppression SuppressedAtIntake(std::string node, const queue::SuppressionList* list,
                                            FeedbackRecorder* recorder,
                                            metrics::IntakeMetrics* metrics);

// FeedbackThread - takes the inbound listener's files (engine/feedback_spool.h)
// from <spool>/feedback/new/, oldest first, hands each to the processor and
// deletes it once handled. A file that cannot be read as one is moved to
// <spool>/feedback/failed/ (logged), so that it is neither lost nor read
// forever. A failed write (Handle's error) keeps the file and is tried again
// kRetry later: a report is processed at least once.
class FeedbackThread {
 public:
  static constexpr absl::Duration kPoll = absl::Milliseconds(250);
  static constexpr absl::Duration kRetry = absl::Seconds(5);

  FeedbackThread(std::string spool_dir, uint64_t max_message_size, FeedbackProcessor* processor);
  ~FeedbackThread();  // Stop
  void Start();
  // Stop - finish the file under way and end the thread.
  void Stop();

 private:
  void Loop();
  // Drain - every file waiting now; false when a write failed (try later).
  bool Drain();

  std::string spool_dir_;
  uint64_t max_message_size_;
  FeedbackProcessor* processor_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

// ParseMessageIdClaim - "<left>.<line>.<hex>@domain" (compose.h's Message-ID)
// into left and line; nullopt when the Message-ID is not of that shape.
std::optional<std::pair<std::string, uint32_t>> ParseMessageIdClaim(std::string_view message_id);

// ReplyCodeOf - the SMTP reply code in a DSN's Diagnostic-Code ("smtp; 550 5.1.1
// ..." -> 550), else 0.
int ReplyCodeOf(std::string_view diagnostic);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_FEEDBACK_H_
