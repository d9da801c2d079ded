// intake_notices_test - what the intake thread logs about incoming/ is said once
// per name and reason, not once per scan (engine/intake.h, IncomingNotices);
// which names arrived by rename (RenamedIn).
#include "engine/intake.h"

#include <sys/inotify.h>

#include <string>
#include <utility>
#include <vector>

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
  // A file found without a rename seen waits out the settle time once:
  // nothing to say.
  EXPECT_FALSE(n.Waiting("a.job", renamed_in));
  EXPECT_FALSE(n.Waiting("a.job", renamed_in));
  // Modified again while it waited: someone is writing it.
  const IntakeWait written{WaitReason::kRecentlyModified, "", t + absl::Seconds(3)};
  EXPECT_TRUE(n.Waiting("a.job", written));
  EXPECT_FALSE(n.Waiting("a.job", IntakeWait{WaitReason::kRecentlyModified, "", t + absl::Seconds(9)}));
}

// A buffer of inotify events as the kernel lays them out: each name
// NUL-padded to a multiple of 8 bytes.
std::string Events(const std::vector<std::pair<uint32_t, std::string>>& events) {
  std::string buffer;
  for (const auto& [mask, name] : events) {
    inotify_event e{};
    e.wd = 1;
    e.mask = mask;
    e.len = name.empty() ? 0 : static_cast<uint32_t>((name.size() + 1 + 7) / 8 * 8);
    buffer.append(reinterpret_cast<const char*>(&e), sizeof e);
    std::string padded = name;
    padded.resize(e.len, '\0');
    buffer += padded;
  }
  return buffer;
}

TEST(RenamedIn, ARenameIsTrustedUntilAWriteClosesOnTheFile) {
  RenamedIn r;
  const std::string b = Events({{IN_MOVED_TO, "a.job"}, {IN_MOVED_TO, "b.job"},
                                {IN_CLOSE_WRITE, "c.job"}});
  r.Events(b.data(), b.size());
  EXPECT_EQ(r.ArrivalOf("a.job"), queue::Arrival::kRenamedIn);
  EXPECT_EQ(r.ArrivalOf("b.job"), queue::Arrival::kRenamedIn);
  EXPECT_EQ(r.ArrivalOf("c.job"), queue::Arrival::kUnknown) << "written in place";
  // Opened and written in place after its rename: it waits as any file does.
  const std::string w = Events({{IN_CLOSE_WRITE, "a.job"}});
  r.Events(w.data(), w.size());
  EXPECT_EQ(r.ArrivalOf("a.job"), queue::Arrival::kUnknown);
  // Gone from incoming/: forgotten.
  r.Retain({"c.job"});
  EXPECT_EQ(r.ArrivalOf("b.job"), queue::Arrival::kUnknown);
  EXPECT_EQ(r.size(), 0u);
}

TEST(RenamedIn, AnOverflowForgetsEveryNameAndACutEventIsLeft) {
  RenamedIn r;
  const std::string b = Events({{IN_MOVED_TO, "a.job"}});
  r.Events(b.data(), b.size());
  const std::string overflow = Events({{IN_Q_OVERFLOW, ""}});
  r.Events(overflow.data(), overflow.size());
  EXPECT_EQ(r.ArrivalOf("a.job"), queue::Arrival::kUnknown) << "a close may have been lost";
  // An event cut short by the buffer's end is not read past it.
  const std::string cut = Events({{IN_MOVED_TO, "long-name.job"}});
  r.Events(cut.data(), cut.size() - 3);
  EXPECT_EQ(r.size(), 0u);
}

TEST(RenamedIn, RemembersABoundedNumberOfNames) {
  RenamedIn r;
  for (size_t i = 0; i < RenamedIn::kMaxNames + 10; ++i) {
    const std::string b = Events({{IN_MOVED_TO, "j" + std::to_string(i) + ".job"}});
    r.Events(b.data(), b.size());
  }
  EXPECT_EQ(r.size(), RenamedIn::kMaxNames);
  EXPECT_EQ(r.ArrivalOf("j" + std::to_string(RenamedIn::kMaxNames + 5) + ".job"),
            queue::Arrival::kUnknown);
}

}  // namespace
}  // namespace volley::engine
