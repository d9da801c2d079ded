// Whose a deferral is (the recipient's or the route's), and a destination's
// reachability: when it changes, which is when volleyd logs.
#include "engine/reasons.h"

#include <string>

#include "absl/time/time.h"
#include "engine/config.h"
#include "gtest/gtest.h"
#include "metrics/classify.h"
#include "metrics/delivery_status.h"

namespace volley::engine {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

smtp::Outcome Reply(int code, std::string enhanced, std::string text,
                    smtp::Stage stage = smtp::Stage::kRcpt) {
  smtp::Outcome o;
  o.kind = code >= 500 ? smtp::Outcome::Kind::kPermanent : smtp::Outcome::Kind::kTransient;
  o.code = code;
  o.enhanced = std::move(enhanced);
  o.text = std::move(text);
  o.stage = stage;
  return o;
}

// The class the built-in [[classify]] table gives a deferral: what the shard
// passes ScopeOf.
std::string ClassOf(const smtp::Outcome& o) {
  static const auto* classifier = [] {
    auto c = metrics::Classifier::Create(metrics::DefaultClassifyRules());
    return new metrics::Classifier(std::move(*c));
  }();
  return std::string(
      classifier->Classify(metrics::DeliveryStatus::kDeferred, o.code, o.enhanced, o.text));
}

ReplyScope Scope(const smtp::Outcome& o) { return ScopeOf(o, ClassOf(o)); }

TEST(ReplyScopeTest, GreylistingAtRcptIsTheRecipients) {
  // volley-sink's and Postgrey's words; the first is rate_limited by the
  // built-in table ("try again later"), the greylisting words win.
  const smtp::Outcome sink = Reply(451, "4.7.1", "Greylisted, please try again later");
  EXPECT_EQ(ClassOf(sink), "rate_limited");
  EXPECT_EQ(Scope(sink), ReplyScope::kRecipient);
  EXPECT_EQ(Scope(Reply(450, "4.2.0",
                        "<a@d.test>: Recipient address rejected: Greylisted, see "
                        "http://postgrey.schweikert.ch/help/d.test.html")),
            ReplyScope::kRecipient);
  EXPECT_EQ(Scope(Reply(450, "4.2.0", "graylisting in effect")), ReplyScope::kRecipient);
  const smtp::Outcome bare = Reply(451, "4.7.1", "Greylisted");
  EXPECT_EQ(ClassOf(bare), "policy");
  EXPECT_EQ(Scope(bare), ReplyScope::kRecipient);
}

TEST(ReplyScopeTest, OtherRecipientTroubleAtRcptIsTheRecipients) {
  EXPECT_EQ(Scope(Reply(452, "4.2.2", "mailbox over quota")), ReplyScope::kRecipient);
  EXPECT_EQ(Scope(Reply(450, "4.2.1", "mailbox busy")), ReplyScope::kRecipient);
  EXPECT_EQ(Scope(Reply(451, "4.3.0", "temporary lookup failure")), ReplyScope::kRecipient);
}

TEST(ReplyScopeTest, A421IsTheRoutesAtAnyStage) {
  EXPECT_EQ(Scope(Reply(421, "4.7.0", "Try again later, closing connection")),
            ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(421, "4.7.0", "Greylisted, closing")), ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(421, "4.3.2", "busy", smtp::Stage::kGreeting)), ReplyScope::kRoute);
}

TEST(ReplyScopeTest, ThrottlingAtRcptIsTheRoutes) {
  EXPECT_EQ(Scope(Reply(450, "4.7.28", "unusual rate of unsolicited mail from your IP")),
            ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(451, "4.7.1", "too many messages, slow down")), ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(451, "4.7.5", "TLS required")), ReplyScope::kRoute);
  // A blocklist or reputation deferral (X.7.X, class policy) is the sender's.
  EXPECT_EQ(Scope(Reply(450, "4.7.1", "blocked for policy reasons")), ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(450, "4.7.1", "Client host blocked using zen.spamhaus.org")),
            ReplyScope::kRoute);
}

TEST(ReplyScopeTest, ALostConnectionIsTheRoutesEvenAtRcpt) {
  // What the client makes of a connection lost while it waits for a RCPT reply.
  EXPECT_EQ(Scope(Reply(451, "4.4.2", "connection lost while awaiting rcpt reply")),
            ReplyScope::kRoute);
  EXPECT_EQ(Scope(Reply(451, "4.4.2", "timed out while awaiting rcpt reply (greylist?)")),
            ReplyScope::kRoute);
}

TEST(ReplyScopeTest, SessionStagesAreTheRoutes) {
  for (const smtp::Stage stage : {smtp::Stage::kConnect, smtp::Stage::kGreeting,
                                  smtp::Stage::kEhlo, smtp::Stage::kMail, smtp::Stage::kData,
                                  smtp::Stage::kDataDone}) {
    EXPECT_EQ(Scope(Reply(451, "4.7.1", "Greylisted", stage)), ReplyScope::kRoute)
        << static_cast<int>(stage);
  }
  // A permanent reply is not a deferral: not the recipient's to keep apart.
  EXPECT_EQ(Scope(Reply(550, "5.1.1", "no such user")), ReplyScope::kRoute);
}

TEST(ReachabilityTest, LogsOncePerChangeNotPerAttempt) {
  Reachability r;
  EXPECT_FALSE(r.unreachable());
  EXPECT_FALSE(r.OnConnected());  // reachable already: nothing to say
  EXPECT_TRUE(r.OnConnectFailed("127.0.0.1:1", "connection refused", kT0 + absl::Seconds(30),
                                kT0));
  EXPECT_TRUE(r.unreachable());
  EXPECT_EQ(r.last_error(), "cannot connect to 127.0.0.1:1: connection refused");
  EXPECT_EQ(r.Describe(kT0),
            "cannot connect to 127.0.0.1:1: connection refused; next try in 30s");
  // The same failure again: no change, but the next try moves.
  EXPECT_FALSE(r.OnConnectFailed("127.0.0.1:1", "connection refused", kT0 + absl::Seconds(90),
                                 kT0 + absl::Seconds(30)));
  EXPECT_EQ(r.next_try(), kT0 + absl::Seconds(90));
  EXPECT_EQ(r.since(), kT0);
  // Another error is a change.
  EXPECT_TRUE(r.OnConnectFailed("127.0.0.1:1", "connection timed out", kT0 + absl::Minutes(5),
                                kT0 + absl::Seconds(90)));
  EXPECT_TRUE(r.OnConnected());
  EXPECT_FALSE(r.unreachable());
  EXPECT_TRUE(r.last_error().empty());
  EXPECT_FALSE(r.OnConnected());
  // Down again: a change again.
  EXPECT_TRUE(r.OnConnectFailed("127.0.0.1:1", "connection refused", kT0 + absl::Minutes(9),
                                kT0 + absl::Minutes(8)));
  EXPECT_EQ(r.since(), kT0 + absl::Minutes(8));
}

TEST(ReachabilityTest, ANextTryKnownBeforeStandsWhenNothingWaited) {
  Reachability r;
  r.OnConnectFailed("h:25", "connection refused", kT0 + absl::Minutes(5), kT0);
  // A later failure with nothing waiting (what waited was deferred already).
  r.OnConnectFailed("h:25", "connection refused", absl::InfiniteFuture(), kT0 + absl::Minutes(1));
  EXPECT_EQ(r.next_try(), kT0 + absl::Minutes(5));
  // Rounded up to whole seconds.
  EXPECT_EQ(r.Describe(kT0 + absl::Minutes(5) - absl::Milliseconds(200)),
            "cannot connect to h:25: connection refused; next try in 1s");
  // Once that time is past, there is no next try to speak of.
  r.OnConnectFailed("h:25", "connection refused", absl::InfiniteFuture(), kT0 + absl::Minutes(6));
  EXPECT_EQ(r.next_try(), absl::InfiniteFuture());
  EXPECT_EQ(r.Describe(kT0 + absl::Minutes(6)), "cannot connect to h:25: connection refused");
}

TEST(ReachabilityTest, ALongErrorIsCutAtACharacter) {
  Reachability r;
  const std::string greeting = std::string(kMaxReachErrorBytes - 1, 'x') + "\xc3\xa9 tail";
  r.OnConnectFailed("h:25", greeting, absl::InfiniteFuture(), kT0);
  EXPECT_EQ(r.last_error(), "cannot connect to h:25: " + std::string(kMaxReachErrorBytes - 1, 'x'));
}

}  // namespace
}  // namespace volley::engine
