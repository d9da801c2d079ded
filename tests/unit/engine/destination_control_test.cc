// destination_control_test.cc - suspensions and kept backoff levels survive a
// reopened queue, expire by themselves, and a retry command reaches the shards.
#include "engine/destination_control.h"

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "queue/queue.h"

namespace volley::engine {
namespace {

class DestinationControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "destination_control_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<queue::Queue> Open() {
    auto q = queue::Queue::Open(dir_ + "/queue", queue::QueueOptions{});
    EXPECT_TRUE(q.ok()) << q.status();
    return q.ok() ? *std::move(q) : nullptr;
  }

  std::string dir_;
  const absl::Time now_ = absl::FromUnixSeconds(1796000000);
};

TEST_F(DestinationControlTest, SuspensionSurvivesReopenAndExpires) {
  {
    auto q = Open();
    DestinationControl control(q.get(), 2);
    ASSERT_TRUE(control.Load(now_).ok());
    auto s = control.Suspend("Held.TEST", absl::Hours(2), "blocklisted", "volleyctl", now_);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->domain, "held.test");
    EXPECT_EQ(s->until, now_ + absl::Hours(2));
    ASSERT_TRUE(control.Suspend("short.test", absl::Seconds(30), "", "volleyctl", now_).ok());
    EXPECT_EQ(control.Snapshot()->size(), 2u);
  }
  {
    // Reopened (a restart): both are back, with their time and reason.
    auto q = Open();
    DestinationControl control(q.get(), 1);
    ASSERT_TRUE(control.Load(now_ + absl::Seconds(10)).ok());
    auto held = control.Snapshot();
    ASSERT_EQ(held->size(), 2u);
    EXPECT_EQ(held->at("held.test").reason, "blocklisted");
    EXPECT_EQ(held->at("held.test").until, now_ + absl::Hours(2));
    EXPECT_EQ(held->at("short.test").reason, "no reason given");
    // short.test ends by itself; the generation says so to the shards.
    const uint64_t generation = control.generation();
    control.ExpireDue(now_ + absl::Seconds(31));
    EXPECT_NE(control.generation(), generation);
    EXPECT_EQ(control.Snapshot()->size(), 1u);
    EXPECT_EQ(control.Snapshot()->count("short.test"), 0u);
  }
  {
    // The expiry was stored: it does not come back.
    auto q = Open();
    DestinationControl control(q.get(), 1);
    ASSERT_TRUE(control.Load(now_ + absl::Seconds(40)).ok());
    EXPECT_EQ(control.Snapshot()->size(), 1u);
    // One that ended while volleyd was down is dropped at Load.
    DestinationControl later(q.get(), 1);
    ASSERT_TRUE(later.Load(now_ + absl::Hours(3)).ok());
    EXPECT_TRUE(later.Snapshot()->empty());
  }
  auto q = Open();
  auto kept = q->ListDestinationRecords(queue::Queue::DestinationRecord::kSuspension);
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->empty());
}

TEST_F(DestinationControlTest, RefusesBadInput) {
  auto q = Open();
  DestinationControl control(q.get(), 1);
  ASSERT_TRUE(control.Load(now_).ok());
  auto st = control.Suspend("", absl::Hours(1), "", "volleyctl", now_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = control.Suspend("a/b.test", absl::Hours(1), "", "volleyctl", now_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = control.Suspend("a..test", absl::Hours(1), "", "volleyctl", now_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = control.Suspend("a.test", kMaxSuspension + absl::Seconds(1), "", "volleyctl", now_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("for:"), absl::string_view::npos);
  st = control.Suspend("a.test", absl::Hours(1), "tab\there", "volleyctl", now_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = control.Suspend("a.test", absl::Hours(1), std::string(kMaxSuspensionReason + 1, 'x'),
                       "volleyctl", now_)
           .status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  // The default duration.
  auto s = control.Suspend("a.test", absl::ZeroDuration(), "", "volleyctl", now_);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->until - s->since, kDefaultSuspension);
  EXPECT_EQ(control.Unsuspend("other.test", "volleyctl", now_).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DestinationControlTest, CommandsReachEveryShardAndAddUp) {
  auto q = Open();
  DestinationControl control(q.get(), 2);
  ASSERT_TRUE(control.Load(now_).ok());
  std::thread shards([&] {
    size_t answered = 0;
    while (answered < 2) {
      for (size_t i = 0; i < 2; ++i) {
        if (!control.HasCommands(i)) continue;
        for (const ShardCommand& c : control.TakeCommands(i)) {
          EXPECT_EQ(c.kind, ShardCommand::Kind::kRetryDomain);
          EXPECT_EQ(c.target, "grey.test");
          control.Answer(c.id, i == 0 ? 3 : 4, false);
          ++answered;
        }
      }
      std::this_thread::yield();
    }
  });
  auto r = control.Retry(ShardCommand{ShardCommand::Kind::kRetryDomain, "GREY.test"},
                         absl::Seconds(30));
  shards.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->made_due, 7u);
  EXPECT_EQ(r->shards_answered, 2u);
  // Nobody answers: DeadlineExceeded, not a hang.
  auto none = control.Retry(ShardCommand{ShardCommand::Kind::kRetryDomain, "grey.test"},
                            absl::Milliseconds(50));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(DestinationControlTest, BackoffLevelSurvivesReopen) {
  {
    auto q = Open();
    DestinationControl control(q.get(), 1);
    ASSERT_TRUE(control.Load(now_).ok());
    control.SaveBackoff("mx.test:25|bulk",
                        KeptBackoff{2, now_ + absl::Minutes(5), absl::Minutes(10), "421 slow down"});
    control.SaveBackoff("other:25|", KeptBackoff{1, now_, absl::Minutes(1), "x"});
    control.SaveBackoff("other:25|", KeptBackoff{0, now_, absl::Minutes(1), ""});  // recovered
  }
  auto q = Open();
  DestinationControl control(q.get(), 1);
  ASSERT_TRUE(control.Load(now_).ok());
  auto kept = control.KeptBackoffFor("mx.test:25|bulk");
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->level, 2);
  EXPECT_EQ(kept->step_at, now_ + absl::Minutes(5));
  EXPECT_EQ(kept->period, absl::Minutes(10));
  EXPECT_EQ(kept->reason, "421 slow down");
  EXPECT_FALSE(control.KeptBackoffFor("other:25|").has_value());
}

TEST(DestinationControlFormat, Durations) {
  EXPECT_EQ(FormatSuspensionDuration(absl::Hours(2)), "2h");
  EXPECT_EQ(FormatSuspensionDuration(absl::Minutes(90)), "1h30m");
  EXPECT_EQ(FormatSuspensionDuration(absl::Seconds(3)), "3s");
  EXPECT_EQ(FormatSuspensionDuration(absl::Hours(48)), "2d");
}

}  // namespace
}  // namespace volley::engine
