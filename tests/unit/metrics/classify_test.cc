// Tests of bounce and deferral classification: the default table against replies
// the big providers really send, rule order, matcher syntax and errors.
#include "metrics/classify.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::metrics {
namespace {

using ::testing::HasSubstr;
using enum DeliveryStatus;

struct Reply {
  DeliveryStatus status;
  int code;
  std::string enhanced;
  std::string text;
  std::string want;
};

class DefaultRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = Classifier::Create(DefaultClassifyRules());
    ASSERT_TRUE(c.ok()) << c.status();
    classifier_.emplace(*std::move(c));
  }
  void ExpectClasses(const std::vector<Reply>& replies) {
    for (const Reply& r : replies) {
      EXPECT_EQ(classifier_->Classify(r.status, r.code, r.enhanced, r.text), r.want)
          << DeliveryStatusName(r.status) << " " << r.code << " " << r.enhanced << " " << r.text;
    }
  }
  std::optional<Classifier> classifier_;
};

TEST_F(DefaultRulesTest, InvalidRecipient) {
  ExpectClasses({
      {kBounced, 550, "5.1.1",
       "The email account that you tried to reach does not exist. Please try\n"
       "double-checking the recipient's email address for typos or\nunnecessary spaces. "
       "Learn more at\nhttps://support.google.com/mail/?p=NoSuchUser "
       "a1si123456wrb.12 - gsmtp",
       "invalid_recipient"},
      // Outlook: no telling enhanced code, only the words.
      {kBounced, 550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302)",
       "invalid_recipient"},
      // Exchange Online's directory-based edge blocking.
      {kBounced, 550, "5.4.1",
       "Recipient address rejected: Access denied. For more information see "
       "https://aka.ms/EXOSmtpErrors [AM4PEPF00027A5E.eurprd04.prod.outlook.com]",
       "invalid_recipient"},
      {kBounced, 550, "5.1.10",
       "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
       "invalid_recipient"},
      // Yahoo sends no enhanced code for this one.
      {kBounced, 554, "",
       "delivery error: dd This user doesn't have a yahoo.com account "
       "(nobody@yahoo.test) [0] - mta1234.mail.ne1.yahoo.com",
       "invalid_recipient"},
      {kBounced, 550, "5.1.0", "<x@d.test>: User unknown in virtual mailbox table",
       "invalid_recipient"},
      {kBounced, 550, "", "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
       "invalid_recipient"},
      {kBounced, 553, "5.1.3", "<x@@d.test>: bad recipient address syntax", "invalid_recipient"},
  });
}

TEST_F(DefaultRulesTest, MailboxFullAndInactive) {
  ExpectClasses({
      {kDeferred, 452, "4.2.2",
       "The email account that you tried to reach is over quota. Please direct\nthe recipient "
       "to\nhttps://support.google.com/mail/?p=OverQuotaTemp a1si1234wrb.12 - gsmtp",
       "mailbox_full"},
      {kBounced, 552, "5.2.2", "Mailbox full", "mailbox_full"},
      {kBounced, 552, "", "Requested mail action aborted: exceeded storage allocation; quota",
       "mailbox_full"},
      {kBounced, 550, "5.2.1",
       "The email account that you tried to reach is disabled. Learn more at\n"
       "https://support.google.com/mail/?p=DisabledUser a1si1234wrb.12 - gsmtp",
       "inactive_mailbox"},
      {kBounced, 554, "", "delivery error: dd This account has been deactivated",
       "inactive_mailbox"},
  });
}

TEST_F(DefaultRulesTest, RateLimitedComesBeforePolicy) {
  ExpectClasses({
      // Gmail's rate limit mentions spam: the rule for 4.7.28 must win.
      {kDeferred, 421, "4.7.28",
       "[192.0.2.1      15] Our system has detected an unusual rate of\nunsolicited mail "
       "originating from your IP address. To protect our\nusers from spam, mail sent from your "
       "IP address has been temporarily\nrate limited. - gsmtp",
       "rate_limited"},
      {kDeferred, 421, "4.7.0", "Try again later, closing connection. (EHLO)", "rate_limited"},
      {kDeferred, 421, "4.7.0",
       "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
       "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
       "rate_limited"},
      {kDeferred, 451, "4.7.500",
       "Server busy. Please try again later from [192.0.2.1]. (S77714) "
       "[DM6NAM11FT011.eop-nam11.prod.protection.outlook.com]",
       "rate_limited"},
      {kDeferred, 450, "4.2.1",
       "The user you are trying to contact is receiving mail at a rate that\nprevents "
       "additional messages from being delivered. - gsmtp",
       "rate_limited"},
      {kDeferred, 451, "4.7.1", "Throttled: too many messages from your IP", "rate_limited"},
      // "rate" as a word: "generate" is not one.
      {kDeferred, 451, "4.3.0", "Local error: cannot generate a queue file", "other"},
  });
}

TEST_F(DefaultRulesTest, PolicyAndContent) {
  ExpectClasses({
      {kBounced, 550, "5.7.1",
       "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet "
       "service provider since part of their network is on our block list (S3150). You can "
       "also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. "
       "[AM2PEPF0001C70B.eurprd02.prod.outlook.com]",
       "policy"},
      {kBounced, 550, "5.7.26",
       "This message does not have authentication information or fails to\npass authentication "
       "checks (SPF or DKIM). To best protect our users\nfrom spam, the message has been "
       "blocked. - gsmtp",
       "policy"},
      {kBounced, 554, "5.7.9",
       "Message not accepted for policy reasons.  See "
       "https://postmaster.yahooinc.com/error-codes",
       "policy"},
      {kBounced, 554, "", "Service unavailable; Client host [192.0.2.1] blocked using "
                           "zen.spamhaus.org",
       "policy"},
      {kBounced, 552, "5.7.0",
       "This message was blocked because its content presents a potential\nsecurity issue. "
       "- gsmtp",
       "content_rejected"},
      {kBounced, 554, "5.6.0", "Mail message is malformed. Not accepted.", "content_rejected"},
      {kBounced, 550, "5.7.1", "Message rejected due to content restrictions",
       "content_rejected"},
  });
}

TEST_F(DefaultRulesTest, VolleysOwnOutcomes) {
  ExpectClasses({
      {kBounced, 0, "5.1.10", "d.test does not accept mail (null MX, RFC 7505)", "dns_failure"},
      {kBounced, 0, "5.1.2", "d.test: no such domain (NXDOMAIN)", "dns_failure"},
      {kDeferred, 0, "4.4.3", "d.test: MX lookup failed (SERVFAIL or timeout)", "dns_failure"},
      {kDeferred, 0, "4.4.4", "d.test: no usable MX host: mx.d.test: no address",
       "dns_failure"},
      {kDeferred, 451, "4.7.5", "I/O error (handshake failed) during the TLS handshake",
       "tls_failure"},
      {kDeferred, 451, "4.7.10",
       "TLS is required for this destination, but the server does not offer STARTTLS",
       "tls_failure"},
      {kDeferred, 421, "4.7.0", "TLS required for RCPT domain, closing connection",
       "tls_failure"},
      {kDeferred, 451, "4.4.2", "connection lost after RCPT TO", "other"},
      // Expired is expired, whatever the last reply said.
      {kExpired, 550, "5.1.1", "message expired after 9 attempts; last reply: no such user",
       "expired"},
      {kExpired, 0, "5.4.7", "message expired after 3 attempts", "expired"},
  });
}

TEST_F(DefaultRulesTest, OnlyFailuresGetAClass) {
  EXPECT_EQ(classifier_->Classify(kDelivered, 250, "2.0.0", "OK"), "");
  EXPECT_EQ(classifier_->Classify(kCancelled, 0, "", "job cancelled"), "");
  EXPECT_EQ(classifier_->Classify(kSuppressed, 0, "", ""), "");
  EXPECT_EQ(classifier_->Classify(kBounced, 554, "5.0.0", "go away"), "other");
}

TEST_F(DefaultRulesTest, ClassesAreBoundedAndComplete) {
  const std::vector<std::string> classes = classifier_->Classes();
  for (const char* want : {"invalid_recipient", "mailbox_full", "inactive_mailbox", "policy",
                           "content_rejected", "dns_failure", "tls_failure", "rate_limited",
                           "expired", "other"}) {
    EXPECT_NE(std::find(classes.begin(), classes.end(), want), classes.end()) << want;
  }
  EXPECT_EQ(classes.size(), 10u);
  // docs/delivery-log.md numbers the rules: a rule added here goes there too.
  EXPECT_EQ(DefaultClassifyRules().size(), 31u);
}

TEST(Classifier, FirstMatchWinsAndMatchersAreWholeParts) {
  auto c = Classifier::Create({
      {"exact", "", "5.1.1", ""},
      {"family", "55", "5.1", ""},
      {"words", "", "", "(?i)over\\s+QUOTA"},
      {"no_reply", "0", "", ""},
      {"everything", "", "", ""},
      {"unreachable", "", "", ""},
  });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Classify(kBounced, 550, "5.1.1", ""), "exact");
  // "5.1.1" is not a prefix of 5.1.10: whole parts only.
  EXPECT_EQ(c->Classify(kBounced, 550, "5.1.10", ""), "family");
  EXPECT_EQ(c->Classify(kBounced, 541, "5.1.10", ""), "everything");
  EXPECT_EQ(c->Classify(kDeferred, 452, "", "mailbox Over  quota"), "words");
  EXPECT_EQ(c->Classify(kDeferred, 0, "4.4.3", ""), "no_reply");
  // "0" is no reply, not a prefix: 421 is not matched by it.
  EXPECT_EQ(c->Classify(kDeferred, 421, "", ""), "everything");
  const std::vector<std::string> classes = c->Classes();
  EXPECT_EQ(classes.front(), "exact");
  EXPECT_EQ(classes.back(), "other");
}

TEST(Classifier, NoRulesMeansOther) {
  auto c = Classifier::Create({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->Classify(kBounced, 550, "5.1.1", "no such user"), "other");
}

TEST(Classifier, OnlyTheStartOfAHugeReplyIsSearched) {
  auto c = Classifier::Create({{"late", "", "", "needle"}});
  ASSERT_TRUE(c.ok());
  std::string text(kMaxClassifiedText, 'x');
  EXPECT_EQ(c->Classify(kBounced, 550, "", text + "needle"), "other");
  text.replace(kMaxClassifiedText - 6, 6, "needle");
  EXPECT_EQ(c->Classify(kBounced, 550, "", text), "late");
}

TEST(Classifier, AHostilePatternAndReplyStayFast) {
  // (a+)+$ is exponential for a backtracking engine on "aaaa...!"; RE2 is linear.
  auto c = Classifier::Create({{"x", "", "", "(a+)+$"}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->Classify(kBounced, 550, "", std::string(4000, 'a') + "!"), "other");
}

TEST(Classifier, BadRulesAreErrorsNamingTheRuleAndKey) {
  const auto error = [](std::vector<ClassifyRule> rules) {
    auto c = Classifier::Create(rules);
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  EXPECT_THAT(error({{"a", "", "", ""}, {"b", "", "", "(unclosed"}}),
              HasSubstr("classify[2].text: not a valid RE2 regular expression: missing )"));
  EXPECT_THAT(error({{"", "", "", ""}}), HasSubstr("classify[1].class: must not be empty"));
  EXPECT_THAT(error({{"has space", "", "", ""}}), HasSubstr("classify[1].class:"));
  EXPECT_THAT(error({{"a", "5x", "", ""}}), HasSubstr("classify[1].code: \"5x\" is not"));
  EXPECT_THAT(error({{"a", "6", "", ""}}), HasSubstr("classify[1].code:"));
  EXPECT_THAT(error({{"a", "5501", "", ""}}), HasSubstr("classify[1].code:"));
  EXPECT_THAT(error({{"a", "", "5.1.1.1", ""}}), HasSubstr("classify[1].enhanced:"));
  EXPECT_THAT(error({{"a", "", "5.", ""}}), HasSubstr("classify[1].enhanced:"));
  EXPECT_THAT(error({{"a", "", "3.1.1", ""}}), HasSubstr("classify[1].enhanced:"));
  EXPECT_THAT(error({{"a", "", "5.1234", ""}}), HasSubstr("classify[1].enhanced:"));
  EXPECT_THAT(error({{"a", "", "", std::string(kMaxClassifyPatternLength + 1, 'a')}}),
              HasSubstr("classify[1].text: longer than"));
  EXPECT_THAT(error(std::vector<ClassifyRule>(kMaxClassifyRules + 1, {"a", "", "", ""})),
              HasSubstr("at most"));
  EXPECT_EQ(error({{"a.b-C_1", "5", "4", ""}, {"b", "0", "2.0", ""}, {"c", "42", "5.7.26", ""}}),
            "ok");
}

}  // namespace
}  // namespace volley::metrics
