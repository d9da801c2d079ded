// connection_guard_test.cc - the policy that keeps the HTTP endpoints
// answering: who is shut down at the cap, and at the deadlines. Time is passed
// in; descriptors are plain numbers.
#include "engine/http/connection_guard.h"

#include <vector>

#include "gtest/gtest.h"

namespace volley::http {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(ConnectionGuardTest, AtTheCapTheOldestSilentOneGoes) {
  ConnectionGuard guard(3, absl::Seconds(5));
  EXPECT_EQ(guard.Opened(1, 101, kT0), std::nullopt);
  EXPECT_EQ(guard.Opened(2, 102, kT0 + absl::Seconds(1)), std::nullopt);
  EXPECT_EQ(guard.Opened(3, 103, kT0 + absl::Seconds(2)), std::nullopt);
  // 1 sent its head: 2 is now the oldest silent one.
  guard.HeadReceived(1, kT0 + absl::Seconds(2));
  EXPECT_EQ(guard.Opened(4, 104, kT0 + absl::Seconds(3)), std::optional<int>(102));
  EXPECT_EQ(guard.Opened(5, 105, kT0 + absl::Seconds(3)), std::optional<int>(103));
  EXPECT_EQ(guard.size(), 3u);
  EXPECT_EQ(guard.waiting_for_head(), 2u);
  EXPECT_EQ(guard.evicted(), 2u);
  // A named connection is forgotten: its close, or its head, changes nothing.
  guard.Closed(2);
  guard.HeadReceived(3, kT0 + absl::Seconds(3));
  EXPECT_EQ(guard.size(), 3u);
}

TEST(ConnectionGuardTest, ARealRequestIsNeverTheOneRefused) {
  // Every held connection has sent its head (or been answered): none is
  // named, not even the newcomer; the server's hard limit is above the cap.
  ConnectionGuard guard(2, absl::Seconds(5));
  EXPECT_EQ(guard.Opened(1, 101, kT0), std::nullopt);
  EXPECT_EQ(guard.Opened(2, 102, kT0), std::nullopt);
  guard.HeadReceived(1, kT0);
  guard.HeadReceived(2, kT0);
  guard.Answered(2);
  EXPECT_EQ(guard.Opened(3, 103, kT0), std::nullopt);
  EXPECT_EQ(guard.size(), 3u);
  // The newcomer is silent now, and the oldest silent one when a fourth comes.
  EXPECT_EQ(guard.Opened(4, 104, kT0), std::optional<int>(103));
}

TEST(ConnectionGuardTest, TheFloodFromTheIssue) {
  // 10,000 idle connections held against a cap of 1,024, and a scrape that
  // connects and sends its head at once, every second: the scrape is never
  // named, and the idle ones never exceed the cap.
  ConnectionGuard guard(1024, absl::Seconds(5));
  std::vector<int> named;
  ConnectionGuard::Id next = 1;
  absl::Time now = kT0;
  for (int i = 0; i < 10'000; ++i) {
    if (auto fd = guard.Opened(next, static_cast<int>(next), now)) named.push_back(*fd);
    ++next;
    if (i % 1000 == 0) {
      const ConnectionGuard::Id scrape = next++;
      if (auto fd = guard.Opened(scrape, -1, now)) named.push_back(*fd);
      guard.HeadReceived(scrape, now);
      for (int fd : named) ASSERT_NE(fd, -1) << "a scrape was named at step " << i;
      guard.Answered(scrape);
      guard.Closed(scrape);
    }
    ASSERT_LE(guard.size(), 1024u);
    now += absl::Microseconds(100);
  }
  EXPECT_EQ(named.size(), 10'000u - 1024u);
}

TEST(ConnectionGuardTest, DeadlinesForHeadThenBody) {
  ConnectionGuard guard(100, absl::Seconds(5));
  guard.Opened(1, 101, kT0);                       // silent
  guard.Opened(2, 102, kT0 + absl::Seconds(1));    // sends its head at 2 s, body never ends
  guard.Opened(3, 103, kT0 + absl::Seconds(1));    // answered at once
  guard.HeadReceived(2, kT0 + absl::Seconds(2));
  guard.HeadReceived(3, kT0 + absl::Seconds(1));
  guard.Answered(3);
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(4)), std::vector<int>{});
  // A slowloris that has sent bytes all along is cut all the same: the
  // deadline runs from accept, not from the last byte.
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(5)), std::vector<int>{101});
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(6)), std::vector<int>{});
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(7)), std::vector<int>{102});
  EXPECT_EQ(guard.Expired(kT0 + absl::Hours(1)), std::vector<int>{});  // 3 was answered
  EXPECT_EQ(guard.expired(), 2u);
  EXPECT_EQ(guard.size(), 1u);
  guard.Closed(3);
  EXPECT_EQ(guard.size(), 0u);
}

TEST(ConnectionGuardTest, KeptConnectionsGoAfterTheSilentOnes) {
  // A scraper that keeps its connection between scrapes (Prometheus) sits
  // idle among a flood of silent ones: at the cap the silent ones go first,
  // then the idle ones, the longest idle first.
  ConnectionGuard guard(3, absl::Seconds(5), absl::Seconds(75));
  guard.Opened(1, 101, kT0);
  guard.HeadReceived(1, kT0);
  guard.Answered(1);
  guard.Idle(1, kT0);                                // the scraper, idle since 0 s
  guard.Opened(2, 102, kT0 + absl::Seconds(1));
  guard.HeadReceived(2, kT0 + absl::Seconds(1));
  guard.Answered(2);
  guard.Idle(2, kT0 + absl::Seconds(1));             // another, idle since 1 s
  guard.Opened(3, 103, kT0 + absl::Seconds(2));      // silent
  EXPECT_EQ(guard.idle(), 2u);
  EXPECT_EQ(guard.Opened(4, 104, kT0 + absl::Seconds(3)), std::optional<int>(103));
  EXPECT_EQ(guard.Opened(5, 105, kT0 + absl::Seconds(3)), std::optional<int>(104));
  // The scraper's next request: busy again, no longer among the idle.
  guard.HeadReceived(1, kT0 + absl::Seconds(4));
  EXPECT_EQ(guard.idle(), 1u);
  guard.HeadReceived(5, kT0 + absl::Seconds(4));
  // No silent one left: the one idle the longest goes.
  EXPECT_EQ(guard.Opened(6, 106, kT0 + absl::Seconds(5)), std::optional<int>(102));
  EXPECT_EQ(guard.evicted(), 3u);
}

TEST(ConnectionGuardTest, AnIdleConnectionHasItsOwnDeadline) {
  ConnectionGuard guard(100, absl::Seconds(5), absl::Seconds(75));
  guard.Opened(1, 101, kT0);
  guard.HeadReceived(1, kT0);
  guard.Answered(1);
  guard.Idle(1, kT0 + absl::Seconds(1));
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(75)), std::vector<int>{});
  // A next head begun while idle (a slowloris after one real request) must
  // be complete by the same deadline.
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(76)), std::vector<int>{101});
  // A next request in time goes back to the request deadlines.
  guard.Opened(2, 102, kT0);
  guard.HeadReceived(2, kT0);
  guard.Answered(2);
  guard.Idle(2, kT0);
  guard.HeadReceived(2, kT0 + absl::Seconds(70));
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(74)), std::vector<int>{});
  EXPECT_EQ(guard.Expired(kT0 + absl::Seconds(75)), std::vector<int>{102});
  EXPECT_EQ(guard.size(), 0u);
}

}  // namespace
}  // namespace volley::http
