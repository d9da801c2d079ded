// feedback_test.cc - reports matched to a job's recipient, recorded and suppressed, with
// a real queue, spool, suppression list, committer and delivery log
#include "engine/feedback.h"

#include <unistd.h>

#include <cctype>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/committer.h"
#include "engine/feedback_spool.h"
#include "engine/intake.h"
#include "engine/token/token.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/classify.h"
#include "metrics/delivery_log.h"
#include "metrics/metrics.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "queue/suppression.h"

namespace volley::engine {
namespace {

namespace fs = std::filesystem;
using metrics::DeliveryStatus;
using metrics::OwnedDeliveryRecord;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::Pair;

constexpr char kBounceDomain[] = "bounces.sender.test";
constexpr char kPeer[] = "192.0.2.7:4711";
// The job every test starts with: lines 2..6.
constexpr char kJob[] = "spring-sale";
const std::vector<std::string> kRecipients = {"ann@inbox.test", "bob@inbox.test",
                                              "cy@inbox.test", "dee@inbox.test",
                                              "erin@inbox.test"};
constexpr uint32_t kAnn = 2, kBob = 3, kCy = 4, kDee = 5, kErin = 6;

std::string JobText(const std::string& id, const std::vector<std::string>& rcpts) {
  std::string text = absl::StrCat(
      R"({"job":")", id,
      R"(","from":"news@sender.test","message":"From: news@sender.test\r\nSubject: Hello\r\n\r\nHello\r\n"})",
      "\n");
  for (const std::string& r : rcpts) absl::StrAppend(&text, R"({"to":")", r, R"("})", "\n");
  return text;
}

// An RFC 3464 report about `rcpt`, with the returned message's headers when
// `returned_headers` is not empty.
std::string Dsn(const std::string& rcpt, const std::string& action, const std::string& status,
                const std::string& diagnostic, const std::string& returned_headers = "") {
  std::string m = absl::StrCat(
      "From: MAILER-DAEMON@mx.isp.test\r\nTo: <someone@bounces.sender.test>\r\n"
      "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
      "--b1\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n\r\n"
      "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
      "Reporting-MTA: dns; mx.isp.test\r\n\r\n"
      "Final-Recipient: rfc822; ", rcpt, "\r\nAction: ", action, "\r\nStatus: ", status,
      "\r\nDiagnostic-Code: ", diagnostic, "\r\n\r\n");
  if (!returned_headers.empty()) {
    absl::StrAppend(&m, "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n", returned_headers,
                    "\r\n");
  }
  absl::StrAppend(&m, "--b1--\r\n");
  return m;
}

// An RFC 5965 report (appendix B's shape) returning `headers`.
std::string Arf(const std::string& type, const std::string& headers) {
  return absl::StrCat(
      "From: <abuse@isp.test>\r\nTo: <fbl@bounces.sender.test>\r\nSubject: FW: Hello\r\n"
      "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nMessage-ID: <arf-1@isp.test>\r\n"
      "MIME-Version: 1.0\r\n"
      "Content-Type: multipart/report; report-type=feedback-report;\r\n"
      " boundary=\"part1\"\r\n\r\n"
      "--part1\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\n\r\n"
      "This is an email abuse report.\r\n\r\n"
      "--part1\r\nContent-Type: message/feedback-report\r\n\r\n"
      "Feedback-Type: ", type, "\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
      "Original-Mail-From: <news@sender.test>\r\n"
      "Arrival-Date: Sun, 06 Dec 2026 11:58:00 +0000\r\n"
      "Source-IP: 192.0.2.1\r\nReported-Domain: sender.test\r\n\r\n"
      "--part1\r\nContent-Type: text/rfc822-headers\r\n\r\n", headers,
      "\r\n--part1--\r\n");
}

// The headers of the message sent to `line`, its To field redacted as many
// providers do, with `trace` as its Volley-Trace field.
std::string ReturnedHeaders(uint32_t line, const std::string& trace,
                            const std::string& to = "[redacted]") {
  return absl::StrCat("From: news@sender.test\r\nTo: ", to, "\r\nSubject: Hello\r\n",
                      "Message-ID: <", kJob, ".", line, ".abcdef012345@sender.test>\r\n",
                      "Volley-Trace: ", trace, "\r\n");
}

// Altered - one base32 character of a token (in its MAC) changed: well-formed,
// but it does not verify.
std::string Altered(std::string token, size_t from_end = 6) {
  char& c = token[token.size() - from_end];
  c = c == 'a' ? 'b' : 'a';
  return token;
}

template <typename Cond>
bool WaitFor(Cond cond, absl::Duration limit = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!cond()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

class FeedbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("volley-feedback-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "log");
    auto spool = queue::Spool::Open(spool_dir());
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_.emplace(*std::move(spool));
    // Files are dropped and taken in at once (spool.h, WRITERS).
    spool_->SetSettleTime(absl::ZeroDuration());
    auto q = queue::Queue::Open((dir_ / "queue").string(), queue::QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
    auto log = metrics::DeliveryLog::Open((dir_ / "log").string());
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    queue::SuppressionOptions so;
    so.sync_writes = false;
    so.soft_bounce_limit = 2;
    auto list = queue::SuppressionList::Open((dir_ / "suppression").string(), so);
    ASSERT_TRUE(list.ok()) << list.status();
    list_ = *std::move(list);
    committer_ = std::make_unique<Committer>(queue_.get(), log_.get(), 1);
    ASSERT_TRUE(committer_->Start().ok());
    recorder_ = std::make_unique<FeedbackRecorder>(committer_.get(), 0);
    auto keys = token::Keyring::FromSecrets({{"k1", std::string(32, 's')}});
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = *std::move(keys);
    auto classifier = metrics::Classifier::Create(metrics::DefaultClassifyRules());
    ASSERT_TRUE(classifier.ok()) << classifier.status();
    classifier_.emplace(*std::move(classifier));

    auto r = TakeIn("a.job", JobText(kJob, kRecipients));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->accepted, 5u);
    job_no_ = r->job_no;
    ASSERT_TRUE(fs::exists(dir_ / "spool" / "accepted" / "a.job"));
    MakeProcessor(FeedbackPolicy{});
  }
  void TearDown() override {
    processor_.reset();
    recorder_.reset();
    committer_.reset();
    log_.reset();
    list_.reset();
    queue_.reset();
    fs::remove_all(dir_);
  }

  std::string spool_dir() const { return (dir_ / "spool").string(); }

  void MakeProcessor(FeedbackPolicy policy) {
    FeedbackOptions options;
    options.node = "node-a";
    options.spool = spool_dir();
    options.inbound_domains = {kBounceDomain};
    options.policy = std::move(policy);
    processor_ = std::make_unique<FeedbackProcessor>(std::move(options), keys_, queue_.get(),
                                                     list_.get(), &*classifier_,
                                                     recorder_.get(), &metrics_, &ready_);
  }

  absl::StatusOr<queue::IntakeResult> TakeIn(const std::string& name, const std::string& text) {
    const fs::path tmp = dir_ / "spool" / "tmp" / name;
    std::ofstream(tmp) << text;
    fs::rename(tmp, dir_ / "spool" / "incoming" / name);
    return spool_->Intake(name, *queue_, queue::JobLimits{}, absl::Now());
  }

  FeedbackEnvelope EnvelopeTo(std::string rcpt, std::string mail_from = "") {
    FeedbackEnvelope e;
    e.peer = kPeer;
    e.helo = "mx.isp.test";
    e.mail_from = std::move(mail_from);
    e.rcpt_to = {std::move(rcpt)};
    return e;
  }
  std::string Verp(uint32_t line) { return token::VerpAddress(keys_, kBounceDomain, job_no_, line); }
  std::string Trace(uint32_t line) {
    return token::Issue(keys_, token::Purpose::kTrace, job_no_, line);
  }

  // Every record the delivery log holds.
  std::vector<OwnedDeliveryRecord> Records() {
    std::vector<OwnedDeliveryRecord> out;
    std::ifstream in(log_->path());
    std::string line;
    while (std::getline(in, line)) {
      auto r = metrics::ParseDeliveryRecord(line);
      EXPECT_TRUE(r.ok()) << r.status() << ": " << line;
      if (r.ok()) out.push_back(*std::move(r));
    }
    return out;
  }

  std::optional<queue::Suppression> Suppressed(std::string_view address) {
    auto hit = list_->Check(address, "sender.test", absl::Now());
    EXPECT_TRUE(hit.ok()) << hit.status();
    return hit.ok() ? *hit : std::nullopt;
  }

  queue::JobProgress Progress(uint32_t job_no = 0) {
    auto p = queue_->ReadProgress(job_no == 0 ? job_no_ : job_no);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : queue::JobProgress{};
  }

  // Deliver - the first `n` queued recipients delivered, as a shard would record it.
  void Deliver(size_t n) {
    std::vector<queue::QueuedRecipient> due;
    for (uint16_t p = 0; p < queue::kPartitions && due.size() < n; ++p) {
      ASSERT_TRUE(
          queue_->TakeDue(job_no_, p, "", absl::Now() + absl::Hours(1), n - due.size(), &due)
              .ok());
    }
    ASSERT_EQ(due.size(), n);
    auto batch = queue_->NewOutcomeBatch();
    for (const queue::QueuedRecipient& r : due) batch->Remove(r, queue::Final::kDelivered);
    ASSERT_TRUE(recorder_->Write("", std::move(batch)).ok());
  }

  fs::path dir_;
  std::optional<queue::Spool> spool_;
  std::unique_ptr<queue::Queue> queue_;
  std::unique_ptr<metrics::DeliveryLog> log_;
  std::unique_ptr<queue::SuppressionList> list_;
  std::unique_ptr<Committer> committer_;
  std::unique_ptr<FeedbackRecorder> recorder_;
  token::Keyring keys_;
  std::optional<metrics::Classifier> classifier_;
  metrics::FeedbackMetrics metrics_;
  ReadyJobs ready_;
  std::unique_ptr<FeedbackProcessor> processor_;
  uint32_t job_no_ = 0;
};

TEST_F(FeedbackTest, HardBounceToTheVerpAddressIsRecordedAndSuppressed) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(Verp(kBob)),
                           Dsn("bob@inbox.test", "failed", "5.1.1",
                               "smtp; 550 5.1.1 <bob@inbox.test>: User unknown"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  const OwnedDeliveryRecord& r = records[0];
  EXPECT_EQ(r.status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(r.job, kJob);
  EXPECT_EQ(r.line, kBob);
  EXPECT_EQ(r.rcpt, "bob@inbox.test");  // read from the job file
  EXPECT_EQ(r.klass, "invalid_recipient");
  EXPECT_EQ(r.code, 550);
  EXPECT_EQ(r.enhanced, "5.1.1");
  EXPECT_EQ(r.matched_by, "verp");
  EXPECT_EQ(r.node, "node-a");  // feedback events name the node too
  EXPECT_EQ(r.via, "dsn");
  EXPECT_EQ(r.reporting_mta, "mx.isp.test");

  const std::optional<queue::Suppression> hit = Suppressed("bob@inbox.test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, queue::SuppressionReason::kHardBounce);
  EXPECT_THAT(hit->source, ::testing::HasSubstr("job spring-sale line 3"));
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
  EXPECT_EQ(Progress().bounced_async, 1u);
  EXPECT_EQ(metrics_.suppressions_added[0].value(), 1u);
}

TEST_F(FeedbackTest, TheVerpAddressMatchesInAnyCase) {
  // Mail systems may change the case of a local part (token.h).
  std::string upper = Verp(kCy);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(upper), Dsn("cy@inbox.test", "failed", "5.1.1",
                                                  "smtp; 550 5.1.1 unknown"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].matched_by, "verp");
  EXPECT_EQ(records[0].line, kCy);
  EXPECT_TRUE(Suppressed("cy@inbox.test").has_value());
}

TEST_F(FeedbackTest, SoftBouncesSuppressOnlyAtTheLimit) {
  const std::string dsn = Dsn("dee@inbox.test", "failed", "5.2.2",
                              "smtp; 552 5.2.2 Mailbox full");
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kDee)), dsn).ok());
  EXPECT_FALSE(Suppressed("dee@inbox.test").has_value());  // one of soft_bounce_limit 2
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kDee)), dsn).ok());
  const std::optional<queue::Suppression> hit = Suppressed("dee@inbox.test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, queue::SuppressionReason::kSoftBounce);
  EXPECT_NE(hit->expires, absl::InfiniteFuture());

  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 2u);
  for (const OwnedDeliveryRecord& r : records) {
    EXPECT_EQ(r.status, DeliveryStatus::kBouncedAsync);
    EXPECT_EQ(r.klass, "mailbox_full");
    EXPECT_EQ(r.rcpt, "dee@inbox.test");
  }
  EXPECT_EQ(Progress().bounced_async, 2u);
  EXPECT_EQ(metrics_.suppressions_added[1].value(), 1u);  // soft_bounce, once
}

// A reload (SuppressionList::SetPolicy) changes the limit the next soft bounce
// is judged by: raised from the fixture's 2 to 3, two bounces do not suppress;
// lowered to 1, the next one does.
TEST_F(FeedbackTest, AReloadedSoftBounceLimitIsTheOneTheNextBounceMeets) {
  const std::string dsn = Dsn("dee@inbox.test", "failed", "5.2.2",
                              "smtp; 552 5.2.2 Mailbox full");
  queue::SuppressionOptions policy = list_->options();
  policy.soft_bounce_limit = 3;
  ASSERT_TRUE(list_->SetPolicy(policy).ok());
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kDee)), dsn).ok());
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kDee)), dsn).ok());
  EXPECT_FALSE(Suppressed("dee@inbox.test").has_value());  // two of 3

  policy.soft_bounce_limit = 1;
  ASSERT_TRUE(list_->SetPolicy(policy).ok());
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kDee)), dsn).ok());
  const std::optional<queue::Suppression> hit = Suppressed("dee@inbox.test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, queue::SuppressionReason::kSoftBounce);
  EXPECT_EQ(metrics_.suppressions_added[1].value(), 1u);
}

// A reloaded scope decides where the next automatic entry goes.
TEST_F(FeedbackTest, AReloadedScopeIsTheOneTheNextEntryGets) {
  queue::SuppressionOptions policy = list_->options();
  policy.scope = queue::SuppressionScope::kFromDomain;
  ASSERT_TRUE(list_->SetPolicy(policy).ok());
  token::Claim claim;
  claim.job_no = job_no_;
  claim.line = kDee;
  ASSERT_TRUE(processor_->Unsubscribe(claim, "192.0.2.9").ok());
  std::vector<queue::Suppression> entries;
  ASSERT_TRUE(list_->List("", "", 10, &entries).ok());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].address, "dee@inbox.test");
  EXPECT_EQ(entries[0].scope, "sender.test");  // the job's From domain, not global
}

// A bounce in words (qmail's), no delivery-status part: the VERP address says
// whose it is; the text's paragraph gives the reply.
TEST_F(FeedbackTest, ABounceInWordsToTheVerpAddressIsRecorded) {
  const std::string qmail = absl::StrCat(
      "From: MAILER-DAEMON@mx.isp.test\r\nTo: ", Verp(kBob), "\r\nSubject: failure notice\r\n\r\n"
      "Hi. This is the qmail-send program at mx.isp.test.\r\n"
      "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
      "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
      "<bob@inbox.test>:\r\n192.0.2.10 does not like recipient.\r\n"
      "Remote host said: 550 5.1.1 <bob@inbox.test>: Recipient address rejected: User unknown\r\n"
      "Giving up on 192.0.2.10.\r\n\r\n");
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kBob)), qmail).ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(records[0].via, "bounce_text");
  EXPECT_EQ(records[0].matched_by, "verp");
  EXPECT_EQ(records[0].line, kBob);
  EXPECT_EQ(records[0].klass, "invalid_recipient");
  EXPECT_TRUE(Suppressed("bob@inbox.test").has_value());
  EXPECT_EQ(Progress().bounced_async, 1u);
}

TEST_F(FeedbackTest, ABounceInWordsNamingNoAddressIsTheVerpRecipients) {
  const std::string text = absl::StrCat(
      "From: Mail Delivery System <MAILER-DAEMON@mx.isp.test>\r\nTo: ", Verp(kCy),
      "\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n"
      "Your message could not be delivered.\r\n"
      "Remote host said: 550 5.1.1 User unknown\r\n");
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kCy)), text).ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(records[0].via, "bounce_text");
  EXPECT_EQ(records[0].rcpt, "cy@inbox.test");
  EXPECT_EQ(records[0].line, kCy);
  // The text's reply classifies it: a hard bounce, suppressed.
  EXPECT_EQ(records[0].enhanced, "5.1.1");
  EXPECT_EQ(records[0].klass, "invalid_recipient");
  EXPECT_TRUE(Suppressed("cy@inbox.test").has_value());
}

TEST_F(FeedbackTest, APolicyBounceIsRecordedButDoesNotSuppress) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(Verp(kAnn)),
                           Dsn("ann@inbox.test", "failed", "5.7.1",
                               "smtp; 550 5.7.1 Client host rejected: Access denied"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(records[0].klass, "policy");
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
  EXPECT_EQ(Progress().bounced_async, 1u);  // counted all the same
}

TEST_F(FeedbackTest, ADelayIsRecordedOnly) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(Verp(kAnn)),
                           Dsn("ann@inbox.test", "delayed", "4.2.2",
                               "smtp; 452 4.2.2 Mailbox full"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kDelayedAsync);
  EXPECT_EQ(records[0].line, kAnn);
  EXPECT_EQ(records[0].code, 452);
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
  const queue::JobProgress p = Progress();
  EXPECT_EQ(p.bounced_async, 0u);
  EXPECT_EQ(p.complained, 0u);
  EXPECT_EQ(p.pending(), 5u);
  // Not even counted toward soft_bounce_limit: a second delay suppresses nothing.
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(Verp(kAnn)),
                           Dsn("ann@inbox.test", "delayed", "4.2.2", "smtp; 452 4.2.2 full"))
                  .ok());
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
}

TEST_F(FeedbackTest, AVerpAddressThatDoesNotVerifyMatchesNothing) {
  const std::string verp = Verp(kErin);
  const size_t at = verp.find('@');
  const std::string forged = Altered(verp.substr(0, at)) + verp.substr(at);
  ASSERT_NE(forged, verp);
  // The report names a real recipient; only what Volley signed counts.
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(forged),
                           Dsn("erin@inbox.test", "failed", "5.1.1",
                               "smtp; 550 5.1.1 User unknown"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kUnmatched);
  EXPECT_EQ(records[0].job, "");
  EXPECT_EQ(records[0].line, 0u);
  EXPECT_EQ(records[0].rcpt, "erin@inbox.test");  // what the report said
  EXPECT_EQ(records[0].host, "192.0.2.7");
  EXPECT_FALSE(Suppressed("erin@inbox.test").has_value());
  EXPECT_EQ(Progress().bounced_async, 0u);
}

TEST_F(FeedbackTest, AVerpTokenForAJobTheQueueDoesNotKnowIsUnmatched) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo(token::VerpAddress(keys_, kBounceDomain, job_no_ + 7, 2)),
                           Dsn("ann@inbox.test", "failed", "5.1.1", "smtp; 550 5.1.1 unknown"))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kUnmatched);
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
}

TEST_F(FeedbackTest, AnAbuseReportWithAValidTraceIsAComplaintAndSuppresses) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                           Arf("abuse", ReturnedHeaders(kAnn, Trace(kAnn))))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  const OwnedDeliveryRecord& r = records[0];
  EXPECT_EQ(r.status, DeliveryStatus::kComplained);
  EXPECT_EQ(r.job, kJob);
  EXPECT_EQ(r.line, kAnn);
  EXPECT_EQ(r.rcpt, "ann@inbox.test");  // though the report redacted it
  EXPECT_EQ(r.matched_by, "trace");
  EXPECT_EQ(r.via, "arf");
  EXPECT_EQ(r.feedback_type, "abuse");
  const std::optional<queue::Suppression> hit = Suppressed("ann@inbox.test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, queue::SuppressionReason::kComplaint);
  EXPECT_EQ(hit->expires, absl::InfiniteFuture());
  EXPECT_EQ(Progress().complained, 1u);
}

TEST_F(FeedbackTest, ANotSpamReportIsRecordedButDoesNotSuppress) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                           Arf("not-spam", ReturnedHeaders(kBob, Trace(kBob))))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kComplained);
  EXPECT_EQ(records[0].feedback_type, "not-spam");
  EXPECT_EQ(records[0].rcpt, "bob@inbox.test");
  EXPECT_FALSE(Suppressed("bob@inbox.test").has_value());
}

TEST_F(FeedbackTest, AnAlteredTraceMatchesNothing) {
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                           Arf("abuse", ReturnedHeaders(kErin, Altered(Trace(kErin)))))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kUnmatched);
  EXPECT_EQ(records[0].job, "");
  EXPECT_EQ(records[0].line, 0u);
  EXPECT_EQ(records[0].feedback_type, "abuse");
  EXPECT_FALSE(Suppressed("erin@inbox.test").has_value());
  EXPECT_EQ(Progress().complained, 0u);
}

TEST_F(FeedbackTest, AMessageIdCountsWithTheAddressOfItsLine) {
  const std::string returned =
      absl::StrCat("From: news@sender.test\r\nTo: bob@inbox.test\r\nSubject: Hello\r\n",
                   "Message-ID: <", kJob, ".", kBob, ".abcdef012345@sender.test>\r\n");
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("postmaster@bounces.sender.test"),
                           Dsn("bob@inbox.test", "failed", "5.1.1",
                               "smtp; 550 5.1.1 User unknown", returned))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(records[0].matched_by, "message_id");
  EXPECT_EQ(records[0].line, kBob);
  EXPECT_EQ(records[0].rcpt, "bob@inbox.test");
  EXPECT_TRUE(Suppressed("bob@inbox.test").has_value());
}

TEST_F(FeedbackTest, AMessageIdWithAnotherAddressIsUnmatched) {
  // Anyone can write a Message-ID: one naming bob's line in a report about ann
  // must not suppress either of them.
  const std::string returned =
      absl::StrCat("From: news@sender.test\r\nTo: ann@inbox.test\r\nSubject: Hello\r\n",
                   "Message-ID: <", kJob, ".", kBob, ".abcdef012345@sender.test>\r\n");
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("postmaster@bounces.sender.test"),
                           Dsn("ann@inbox.test", "failed", "5.1.1",
                               "smtp; 550 5.1.1 User unknown", returned))
                  .ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kUnmatched);
  EXPECT_EQ(records[0].rcpt, "ann@inbox.test");
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
  EXPECT_FALSE(Suppressed("bob@inbox.test").has_value());
}

TEST_F(FeedbackTest, AutoRepliesAndRepliesAreNotRecorded) {
  const std::string auto_reply = absl::StrCat(
      "From: Ann <ann@inbox.test>\r\nTo: <", Verp(kAnn), ">\r\n"
      "Subject: Out of Office: Hello\r\nAuto-Submitted: auto-replied\r\n"
      "In-Reply-To: <spring-sale.2.abcdef012345@sender.test>\r\n\r\n"
      "I am away until Monday.\r\n");
  ASSERT_TRUE(processor_->Handle(EnvelopeTo(Verp(kAnn)), auto_reply).ok());
  const std::string reply = absl::StrCat(
      "From: Bob <bob@inbox.test>\r\nTo: <fbl@bounces.sender.test>\r\n"
      "Subject: Re: Hello\r\nIn-Reply-To: <spring-sale.3.abcdef012345@sender.test>\r\n\r\n"
      "Thanks, but please tell me more.\r\n");
  ASSERT_TRUE(processor_->Handle(EnvelopeTo("fbl@bounces.sender.test", "bob@inbox.test"), reply)
                  .ok());
  EXPECT_THAT(Records(), IsEmpty());
  EXPECT_FALSE(Suppressed("ann@inbox.test").has_value());
  EXPECT_FALSE(Suppressed("bob@inbox.test").has_value());
  const queue::JobProgress p = Progress();
  EXPECT_EQ(p.bounced_async + p.complained + p.unsubscribed, 0u);
  EXPECT_EQ(metrics_.reports[3].value(), 1u);  // auto_reply
  EXPECT_EQ(metrics_.reports[4].value(), 1u);  // other
}

TEST_F(FeedbackTest, ComplaintsReachingTheRatePauseTheJobOnce) {
  FeedbackPolicy policy;
  policy.pause_on_complaint_rate = 0.5;
  policy.min_delivered_for_rate = 3;
  MakeProcessor(policy);
  auto complain = [&](uint32_t line) {
    ASSERT_TRUE(processor_
                    ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                             Arf("abuse", ReturnedHeaders(line, Trace(line))))
                    .ok());
  };
  auto paused = [&] {
    auto record = queue_->FindJob(kJob);
    EXPECT_TRUE(record.ok() && record->has_value());
    return record.ok() && record->has_value() && (*record)->paused;
  };
  // Two deliveries: below min_delivered_for_rate, whatever the rate (1 / 2).
  Deliver(2);
  complain(kAnn);
  EXPECT_FALSE(paused());
  EXPECT_THAT(ready_.TakeAll(), IsEmpty());

  // Four: the next complaint makes 2 / 4, which reaches 0.5.
  Deliver(2);
  ASSERT_EQ(Progress().delivered, 4u);
  complain(kBob);
  EXPECT_TRUE(paused());
  EXPECT_THAT(ready_.TakeAll(), ElementsAre(kJob));
  EXPECT_EQ(metrics_.jobs_paused.value(), 1u);

  complain(kCy);  // paused already: no second pause, no second push
  EXPECT_TRUE(paused());
  EXPECT_THAT(ready_.TakeAll(), IsEmpty());
  EXPECT_EQ(metrics_.jobs_paused.value(), 1u);
  EXPECT_EQ(Progress().complained, 3u);
}

// A reload (SetPolicy) turns pausing on for the processor already running:
// started with the default (never), the next complaint is judged by the new rate.
TEST_F(FeedbackTest, AReloadedComplaintRateIsTheOneTheNextComplaintMeets) {
  EXPECT_EQ(processor_->Policy()->pause_on_complaint_rate, 0);
  FeedbackPolicy policy = *processor_->Policy();
  policy.pause_on_complaint_rate = 0.5;
  policy.min_delivered_for_rate = 1;
  processor_->SetPolicy(policy);
  Deliver(2);
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                           Arf("abuse", ReturnedHeaders(kAnn, Trace(kAnn))))
                  .ok());
  auto record = queue_->FindJob(kJob);
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_TRUE((*record)->paused);  // 1 / 2 reaches 0.5
  EXPECT_THAT(ready_.TakeAll(), ElementsAre(kJob));
}

TEST_F(FeedbackTest, ARateBelowThePolicyDoesNotPause) {
  FeedbackPolicy policy;
  policy.pause_on_complaint_rate = 0.5;
  policy.min_delivered_for_rate = 1;
  MakeProcessor(policy);
  Deliver(4);
  ASSERT_TRUE(processor_
                  ->Handle(EnvelopeTo("fbl@bounces.sender.test", "abuse@isp.test"),
                           Arf("abuse", ReturnedHeaders(kAnn, Trace(kAnn))))
                  .ok());
  auto record = queue_->FindJob(kJob);
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_FALSE((*record)->paused);  // 1 / 4
  EXPECT_THAT(ready_.TakeAll(), IsEmpty());
}

TEST_F(FeedbackTest, UnsubscribeSuppressesAndRecords) {
  token::Claim claim;
  claim.job_no = job_no_;
  claim.line = kDee;
  ASSERT_TRUE(processor_->Unsubscribe(claim, "192.0.2.9").ok());
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kUnsubscribed);
  EXPECT_EQ(records[0].job, kJob);
  EXPECT_EQ(records[0].line, kDee);
  EXPECT_EQ(records[0].rcpt, "dee@inbox.test");
  EXPECT_EQ(records[0].via, "one_click");
  EXPECT_EQ(records[0].host, "192.0.2.9");
  const std::optional<queue::Suppression> hit = Suppressed("dee@inbox.test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->reason, queue::SuppressionReason::kUnsubscribe);
  EXPECT_EQ(Progress().unsubscribed, 1u);
}

TEST_F(FeedbackTest, UnsubscribeForAnUnknownJobOrLineIsNotFoundAndUnmatched) {
  token::Claim claim;
  claim.job_no = job_no_ + 9;
  claim.line = kDee;
  EXPECT_TRUE(absl::IsNotFound(processor_->Unsubscribe(claim, "192.0.2.9")));
  claim.job_no = job_no_;
  claim.line = 99;  // past the end of the file
  EXPECT_TRUE(absl::IsNotFound(processor_->Unsubscribe(claim, "192.0.2.9")));
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 2u);
  for (const OwnedDeliveryRecord& r : records) {
    EXPECT_EQ(r.status, DeliveryStatus::kUnmatched);
    EXPECT_EQ(r.job, "");
    EXPECT_EQ(r.via, "one_click");
  }
  EXPECT_FALSE(Suppressed("dee@inbox.test").has_value());
  EXPECT_EQ(Progress().unsubscribed, 0u);
}

TEST_F(FeedbackTest, SuppressedAtIntakeRecordsEachBeforeTheCommit) {
  for (const char* a : {"bob@inbox.test", "Dee@Inbox.test"}) {
    queue::Suppression s;
    s.address = a;
    s.reason = queue::SuppressionReason::kComplaint;
    s.source = "test";
    s.added = absl::Now();
    ASSERT_TRUE(list_->Add(s).ok());
  }
  metrics::IntakeMetrics intake_metrics;
  queue::IntakeSuppression hook = SuppressedAtIntake("node-a", list_.get(), recorder_.get(),
                                                     &intake_metrics);
  std::vector<OwnedDeliveryRecord> at_commit;
  std::optional<queue::JobState> state_at_commit;
  auto before_commit = hook.before_commit;
  hook.before_commit = [&](const queue::JobRecord& job, uint64_t n) {
    absl::Status st = before_commit(job, n);
    at_commit = Records();
    auto record = queue_->FindJob(job.id);
    if (record.ok() && record->has_value()) state_at_commit = (*record)->state;
    return st;
  };
  spool_->SetSuppression(std::move(hook));
  auto r = TakeIn("second.job", JobText("second", kRecipients));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 3u);
  EXPECT_EQ(r->suppressed, 2u);

  ASSERT_EQ(at_commit.size(), 2u);
  EXPECT_EQ(state_at_commit, queue::JobState::kLoading);
  EXPECT_EQ(at_commit[0].status, DeliveryStatus::kSuppressed);
  EXPECT_EQ(at_commit[0].job, "second");
  EXPECT_EQ(at_commit[0].line, kBob);
  EXPECT_EQ(at_commit[0].rcpt, "bob@inbox.test");
  EXPECT_EQ(at_commit[0].node, "node-a");
  EXPECT_THAT(at_commit[0].response, ::testing::HasSubstr("complaint"));
  EXPECT_EQ(at_commit[1].line, kDee);
  EXPECT_EQ(at_commit[1].rcpt, "dee@inbox.test");
  EXPECT_EQ(Records().size(), 2u);  // nothing more after the commit

  const queue::JobProgress p = Progress(r->job_no);
  EXPECT_EQ(p.total, 5u);
  EXPECT_EQ(p.suppressed, 2u);
  EXPECT_EQ(p.pending(), 3u);
  EXPECT_EQ(intake_metrics.recipients_suppressed.value(), 2u);
}

TEST_F(FeedbackTest, SuppressedAtIntakeRecordsEachOnceWhenAnIntakeResumes) {
  queue::Suppression s;
  s.address = "gone@inbox.test";
  s.reason = queue::SuppressionReason::kHardBounce;
  s.source = "test";
  s.added = absl::Now();
  ASSERT_TRUE(list_->Add(s).ok());
  metrics::IntakeMetrics intake_metrics;
  spool_->SetSuppression(SuppressedAtIntake("node-a", list_.get(), recorder_.get(), &intake_metrics));
  // The disk "fills" at intake's first check after the start: the job stops
  // half-way, kLoading, after its suppressed line was handed over (not yet
  // written: that waits for the commit).
  int checks = 0;
  queue::FreeSpaceFloor floor;
  floor.min_free = 1;
  floor.free_bytes = [&](const std::string&) -> absl::StatusOr<uint64_t> {
    return ++checks == 1 ? uint64_t{1} << 30 : uint64_t{0};
  };
  spool_->SetFreeSpaceFloor(floor);
  std::vector<std::string> rcpts = {"gone@inbox.test"};
  for (uint64_t i = 0; i < queue::kFreeSpaceCheckEvery + 1; ++i) {
    rcpts.push_back(absl::StrCat("r", i, "@inbox.test"));
  }
  const std::string text = JobText("big", rcpts);
  auto first = TakeIn("big.job", text);
  ASSERT_TRUE(absl::IsResourceExhausted(first.status())) << first.status();
  EXPECT_THAT(Records(), IsEmpty());

  // Room again: the next intake of the same file resumes the job from its
  // first line, and the suppressed line is handed over a second time.
  spool_->SetFreeSpaceFloor(queue::FreeSpaceFloor{});
  auto second = spool_->Intake("big.job", *queue_, queue::JobLimits{}, absl::Now());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->resumed);
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kSuppressed);
  EXPECT_EQ(records[0].line, 2u);
  EXPECT_EQ(Progress(second->job_no).suppressed, 1u);
  EXPECT_EQ(intake_metrics.recipients_suppressed.value(), 1u);
}

TEST_F(FeedbackTest, TheFeedbackThreadHandlesAndDeletesFiles) {
  auto fspool = FeedbackSpool::Open(spool_dir(), 100);
  ASSERT_TRUE(fspool.ok()) << fspool.status();
  smtpd::Envelope e;
  e.helo = "mx.isp.test";
  e.peer = kPeer;
  e.rcpt_to = {Verp(kBob)};
  auto name = fspool->Write(e, Dsn("bob@inbox.test", "failed", "5.1.1", "smtp; 550 5.1.1 no"),
                            absl::Now());
  ASSERT_TRUE(name.ok()) << name.status();
  // And one that is no stored message at all.
  const fs::path bad = dir_ / "spool" / "feedback" / "new" / "9999999999999-0000000000-1";
  std::ofstream(bad) << "not an envelope\r\nSubject: x\r\n\r\n";

  FeedbackThread thread(spool_dir(), 1 << 20, processor_.get());
  thread.Start();
  const fs::path failed = dir_ / "spool" / "feedback" / "failed" / bad.filename();
  ASSERT_TRUE(WaitFor([&] { return fs::is_empty(dir_ / "spool" / "feedback" / "new"); }));
  thread.Stop();
  EXPECT_TRUE(fs::exists(failed));
  const std::vector<OwnedDeliveryRecord> records = Records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, DeliveryStatus::kBouncedAsync);
  EXPECT_EQ(records[0].rcpt, "bob@inbox.test");
  EXPECT_TRUE(Suppressed("bob@inbox.test").has_value());
}

TEST(ParseMessageIdClaimTest, TakesTheJobAndLineOfComposesMessageId) {
  EXPECT_THAT(ParseMessageIdClaim("<spring-sale.3.abcdef012345@sender.test>"),
              Optional(Pair("spring-sale", 3u)));
  EXPECT_THAT(ParseMessageIdClaim("spring-sale.3.abcdef012345@sender.test"),
              Optional(Pair("spring-sale", 3u)));
  // Dots in the job id: the last two dots split.
  EXPECT_THAT(ParseMessageIdClaim("<news.2026.12.17.ABCDEF@sender.test>"),
              Optional(Pair("news.2026.12", 17u)));
  EXPECT_THAT(ParseMessageIdClaim("<j42.1000000.0@sender.test>"), Optional(Pair("j42", 1000000u)));
  EXPECT_THAT(ParseMessageIdClaim("<a.4294967295.f@x.test>"), Optional(Pair("a", 4294967295u)));
}

TEST(ParseMessageIdClaimTest, RefusesOtherShapes) {
  for (const char* id : {"", "<>", "<abc@sender.test>",
                         "<spring-sale.3.abcdef012345>",           // no domain
                         "<spring-sale.3@sender.test>",            // no random part
                         "<3.abcdef@sender.test>",                 // no job
                         "<.3.abcdef@sender.test>",                // empty job
                         "<spring-sale..abcdef@sender.test>",      // no line
                         "<spring-sale.3.@sender.test>",           // empty random
                         "<spring-sale.3.xyz@sender.test>",        // random not hex
                         "<spring-sale.0x3.abcdef@sender.test>",   // line not digits
                         "<spring-sale.-3.abcdef@sender.test>",
                         "<spring-sale.3.abcdef0123456789a@sender.test>",  // random > 16
                         "<spring-sale.12345678901.abcdef@sender.test>",  // 11 digits
                         "<spring-sale.4294967296.abcdef@sender.test>"}) {  // > uint32
    EXPECT_EQ(ParseMessageIdClaim(id), std::nullopt) << id;
  }
}

TEST(ReplyCodeOfTest, ReadsTheReplyCodeOfADiagnostic) {
  EXPECT_EQ(ReplyCodeOf("smtp; 550 5.1.1 <bob@inbox.test>: User unknown"), 550);
  EXPECT_EQ(ReplyCodeOf("smtp;550 5.1.1 User unknown"), 550);
  EXPECT_EQ(ReplyCodeOf("SMTP; 452-4.2.2 Mailbox full"), 452);
  EXPECT_EQ(ReplyCodeOf("  smtp;   421 4.7.0 try later"), 421);
  EXPECT_EQ(ReplyCodeOf("550 5.1.1 no such user"), 550);
  EXPECT_EQ(ReplyCodeOf("X-Unix; 550"), 550);
  EXPECT_EQ(ReplyCodeOf("250"), 250);
}

TEST(ReplyCodeOfTest, IsZeroWithoutAReplyCode) {
  for (const char* d : {"", "smtp;", "x-postfix; unknown user", "smtp; 5.1.1 unknown user",
                        "smtp; 55", "smtp; 5500 five digits", "smtp; 550x", "smtp; 650 no",
                        "smtp; 150 no", "smtp; 5a0 no", "x-local; delivery failed 550"}) {
    EXPECT_EQ(ReplyCodeOf(d), 0) << d;
  }
}

}  // namespace
}  // namespace volley::engine
