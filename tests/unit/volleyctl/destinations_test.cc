// destinations_test.cc - volleyctl suspend, unsuspend, retry: the requests it
// makes and what it prints of volleyd's answers.
#include "tools/volleyctl/destinations.h"

#include "gtest/gtest.h"

namespace volley::ctl {
namespace {

TEST(DestinationPath, EncodesWhatARequestLineCannotHold) {
  EXPECT_EQ(DestinationPath("example.test", "/suspend"), "/destinations/example.test/suspend");
  EXPECT_EQ(DestinationPath("a/b c", "/retry"), "/destinations/a%2fb%20c/retry");
}

TEST(SuspendBody, OnlyWhatWasGiven) {
  EXPECT_EQ(*SuspendBody("", "", false), "{}");
  EXPECT_EQ(*SuspendBody("2h", "", true), "{\"for\":\"2h\"}");
  EXPECT_EQ(*SuspendBody("2h", "say \"no\"", true), "{\"for\":\"2h\",\"reason\":\"say \\\"no\\\"\"}");
  EXPECT_EQ(*SuspendBody("", "r", false), "{\"reason\":\"r\"}");
  EXPECT_FALSE(SuspendBody("", "", true).ok());
}

TEST(Format, Answers) {
  EXPECT_EQ(*FormatSuspended(R"({"name":"example.test","state":"suspended","suspended":true,)"
                             R"("suspended_until":"2026-12-07T02:10:00Z","suspended_since":)"
                             R"("2026-12-07T00:10:00Z","suspension_reason":"blocklisted\u0007",)"
                             R"("suspended_by":"volleyctl"})"),
            "example.test suspended until 2026-12-07T02:10:00Z (by volleyctl): blocklisted?\n");
  EXPECT_EQ(*FormatReleased(R"({"name":"example.test","suspended":false,"released":12,)"
                            R"("shards":3,"shards_answered":3,"more":false})"),
            "example.test unsuspended: 12 recipients released\n");
  EXPECT_EQ(*FormatMadeDue(R"({"made_due":40,"shards":3,"shards_answered":3,"more":false})"),
            "40 deferred recipients made due now\n");
  EXPECT_EQ(*FormatMadeDue(R"({"made_due":40,"shards":3,"shards_answered":2,"more":true})"),
            "40 deferred recipients made due now (2 of 3 shards answered in time) "
            "(more are queued: run it again)\n");
  EXPECT_FALSE(FormatMadeDue("not json").ok());
  EXPECT_FALSE(FormatSuspended("{}").ok());
}

}  // namespace
}  // namespace volley::ctl
