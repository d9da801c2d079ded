// intake_notices_test - what the intake thread logs about incoming/ is said once
// per name and reason, not once per scan (engine/intake.h, IncomingNotices).
#include "engine/intake.h"

#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using queue::IntakeWait;
using queue::WaitReason;

TEST(IncomingNotices, EachIgnoredNameIsSaidOnceWhileItStays) {
  IncomingNotices n;
  EXPECT_TRUE(n.Ignored("sub", queue::Ignored::kDirectory));
  EXPECT_FALSE(n.Ignored("sub", queue::Ignored::kDirectory));
  EXPECT_TRUE(n.Ignored(".x", queue::Ignored::kDotFile));
  n.Retain({".x"});  // "sub" was removed
  EXPECT_EQ(n.size(), 1u);
  EXPECT_TRUE(n.Ignored("sub", queue::Ignored::kDirectory)) << "a new one under the old name";
  EXPECT_FALSE(n.Ignored(".x", queue::Ignored::kDotFile));
}

TEST(IncomingNotices, EachWaitReasonIsSaidOncePerFile) {
  IncomingNotices n;
  EXPECT_TRUE(n.Waiting("a.job", IntakeWait{WaitReason::kNoFinalLf, "", absl::InfinitePast()}));
  EXPECT_FALSE(n.Waiting("a.job", IntakeWait{WaitReason::kNoFinalLf, "", absl::InfinitePast()}));
  EXPECT_TRUE(n.Waiting("a.job", IntakeWait{WaitReason::kOpenForWriting, "", absl::InfinitePast()}));
  EXPECT_FALSE(n.Waiting("a.job", IntakeWait{WaitReason::kNoFinalLf, "", absl::InfinitePast()}));
  EXPECT_TRUE(n.Waiting("b.job", IntakeWait{WaitReason::kNoFinalLf, "", absl::InfinitePast()}));
  n.Forget("a.job");  // taken in
  EXPECT_TRUE(n.Waiting("a.job", IntakeWait{WaitReason::kNoFinalLf, "", absl::InfinitePast()}));
}

TEST(IncomingNotices, ASettleWaitIsSaidOnlyWhenTheFileIsModifiedAgain) {
  IncomingNotices n;
  const absl::Time t = absl::FromUnixSeconds(1000);
  const IntakeWait renamed_in{WaitReason::kRecentlyModified, "", t};
  // A file renamed in waits out the settle time once: nothing to say.
  EXPECT_FALSE(n.Waiting("a.job", renamed_in));
  EXPECT_FALSE(n.Waiting("a.job", renamed_in));
  // Modified again while it waited: someone is writing it.
  const IntakeWait written{WaitReason::kRecentlyModified, "", t + absl::Seconds(3)};
  EXPECT_TRUE(n.Waiting("a.job", written));
  EXPECT_FALSE(n.Waiting("a.job", IntakeWait{WaitReason::kRecentlyModified, "", t + absl::Seconds(9)}));
}

}  // namespace
}  // namespace volley::engine
