// status_test.cc - volleyctl's read side: progress bars, tables, the status
// screen and JSON, and trace over a real (rotated) delivery log folder.
#include "tools/volleyctl/status.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tools/volleyctl/ctl.h"

namespace volley::ctl {
namespace {

TEST(ProgressBarTest, CellsAddUpAndEveryKindShows) {
  EXPECT_EQ(ProgressBar(50, 0, 0, 50, 10), "[#####.....]");
  EXPECT_EQ(ProgressBar(0, 0, 0, 0, 4), "[    ]");
  EXPECT_EQ(ProgressBar(100, 0, 0, 0, 10), "[##########]");
  // One bounce in a thousand still gets its cell; deferred counts inside pending.
  const std::string bar = ProgressBar(998, 1, 1, 1, 10);
  EXPECT_EQ(bar.size(), 12u);
  EXPECT_NE(bar.find('x'), std::string::npos) << bar;
  EXPECT_NE(bar.find('~'), std::string::npos) << bar;
  EXPECT_EQ(bar.find('.'), std::string::npos) << "no recipient pending and not deferred: " << bar;
  EXPECT_EQ(ProgressBar(10, 10, 10, 30, 20), "[####xxxx~~~~........]");
}

TEST(FormatTest, RatesAndDurations) {
  EXPECT_EQ(FormatRate(2.345), "2.3/s");
  EXPECT_EQ(FormatRate(1234.5), "1234/s");
  EXPECT_EQ(FormatRate(-1), "-");
  EXPECT_EQ(FormatSeconds(59), "59s");
  EXPECT_EQ(FormatSeconds(750), "12m30s");
  EXPECT_EQ(FormatSeconds(5700), "1h35m");
  EXPECT_EQ(FormatSeconds(3 * 86400 + 4 * 3600), "3d4h");
}

TEST(PathsTest, QueryValuesAreEncoded) {
  EXPECT_EQ(DestinationsPath(true, 100), "/destinations?all=1&limit=100");
  EXPECT_EQ(QueuePath("", ""), "/queue");
  EXPECT_EQ(QueuePath("d1.test", "a b&c"), "/queue?domain=d1.test&job=a%20b%26c");
}

constexpr char kDestinations[] =
    R"({"destinations":[{"name":"mx.d1.test","pool":"mx|default","state":"backoff","queued":12,)"
    R"("waiting":10,"in_flight":2,"deferrals":7,"connections":1,"max_connections":5,"rate":3.5,)"
    R"("max_message_rate":4,"level":1,"next_retry":"2026-12-06T20:10:00Z","reason":"451",)"
    R"("last_reply":"451 4.7.1 Greylisted","last_status":"deferred","last_class":"policy",)"
    R"("last_reply_at":"2026-12-06T20:09:00Z"}],"total":3,"truncated":true})";

TEST(FormatDestinationsTableTest, OneRowPerDestination) {
  absl::StatusOr<std::string> t = FormatDestinationsTable(kDestinations);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(t->find("DESTINATION"), std::string::npos);
  EXPECT_NE(t->find("mx.d1.test"), std::string::npos);
  EXPECT_NE(t->find("1/5"), std::string::npos) << *t;
  EXPECT_NE(t->find("3.5/s/4.0/s"), std::string::npos) << *t;
  EXPECT_NE(t->find("451 4.7.1 Greylisted [policy]"), std::string::npos) << *t;
  EXPECT_NE(t->find("(1 of 3 destinations)"), std::string::npos) << *t;
  EXPECT_FALSE(FormatDestinationsTable("{}").ok());
}

constexpr char kQueue[] =
    R"({"ready":3,"deferred":2,"scheduled":1,"in_flight":1,"total":6,"ages":{"0-5m":4,"5-10m":0,)"
    R"("10-20m":2,"20-40m":0,"40-80m":0,"80-160m":0,"160m+":0},)"
    R"("oldest_queued_at":"2026-12-06T20:00:00Z","oldest_age_seconds":750,)"
    R"("next_due":"2026-12-06T20:13:00Z","scanned":6,"truncated":false})";

TEST(FormatQueueSummaryTest, CountsAndAges) {
  absl::StatusOr<std::string> t = FormatQueueSummary(kQueue);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(t->find("total: 6\nready: 3\ndeferred: 2\nscheduled: 1\nin_flight: 1\n"),
            std::string::npos)
      << *t;
  EXPECT_NE(t->find("oldest: 12m30s (2026-12-06T20:00:00Z)"), std::string::npos) << *t;
  EXPECT_NE(t->find("0-5m  5-10m  10-20m"), std::string::npos) << *t;
  EXPECT_EQ(t->find("counted the first"), std::string::npos);
}

TEST(StatusTest, ScreenAndJsonKeepErrors) {
  StatusAnswers a;
  a.jobs = R"({"jobs":[{"id":"j1","state":"ready","paused":false,"total":100,"delivered":40,)"
           R"("bounced":5,"expired":0,"cancelled":0,"suppressed":0,"deferred":10,"pending":55,)"
           R"("rate":2.5,"eta_seconds":22}]})";
  a.destinations = kDestinations;
  a.errors.push_back("queue: volleyd: boom");
  const std::string screen = FormatStatus(a, 10);
  EXPECT_NE(screen.find("j1"), std::string::npos) << screen;
  EXPECT_NE(screen.find("2.5/s"), std::string::npos) << screen;
  EXPECT_NE(screen.find("22s"), std::string::npos) << screen;
  EXPECT_NE(screen.find("mx.d1.test"), std::string::npos) << screen;
  EXPECT_NE(screen.find("error: queue: volleyd: boom"), std::string::npos) << screen;
  const std::string json = StatusJson(a);
  EXPECT_EQ(json.rfind("{\"jobs\":[{\"id\":\"j1\"", 0), 0u) << json;
  EXPECT_NE(json.find("\"queue\":null,\"errors\":[\"queue: volleyd: boom\"]}"), std::string::npos)
      << json;
}

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/volley-trace-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

TEST_F(TraceTest, RotatedFilesInOrderThenTheCurrentOne) {
  const std::string a = R"({"ts":"1","job":"j","line":2,"rcpt":"Ann@d1.test","status":"deferred",)"
                        R"("code":451,"enhanced":"4.7.1","response":"Greylisted","host":"127.0.0.1",)"
                        R"("port":25,"attempt":1,"class":"policy"})";
  const std::string b = R"({"ts":"2","job":"j","line":2,"rcpt":"ann@d1.test","status":"deferred",)"
                        R"("code":451,"enhanced":"4.7.1","response":"again","attempt":2})";
  const std::string c = R"({"ts":"3","job":"j","line":2,"rcpt":"ann@d1.test","status":"delivered",)"
                        R"("code":250,"enhanced":"2.0.0","response":"ok","host":"127.0.0.1",)"
                        R"("port":25,"attempt":3,"tls_version":"TLSv1.3","tls_cipher":"X"})";
  const std::string other = R"({"ts":"9","job":"k","line":5,"rcpt":"bob@d1.test","status":"delivered"})";
  const std::string other_job = R"({"ts":"4","job":"k","line":9,"rcpt":"ann@d1.test","status":"delivered"})";
  Write("deliveries-20261206T100000Z-1.jsonl", b + "\n" + other + "\n");
  Write("deliveries-20261206T100000Z.jsonl", a + "\n");
  Write("deliveries.jsonl", c + "\n" + other_job + "\n" + std::string(kMaxTraceLine + 10, 'x') +
                                "ann@d1.test\n");
  Write("deliveries-20261206T100000Z.jsonl.gz", "not ours");
  absl::StatusOr<std::vector<std::string>> files = DeliveryLogFiles(dir_);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0], dir_ + "/deliveries-20261206T100000Z.jsonl");
  EXPECT_EQ((*files)[1], dir_ + "/deliveries-20261206T100000Z-1.jsonl");
  EXPECT_EQ((*files)[2], dir_ + "/deliveries.jsonl");

  std::vector<std::string> seen;
  ASSERT_TRUE(TraceRecipient(*files, "ANN@d1.test", "j",
                             [&](std::string_view r) { seen.emplace_back(r); })
                  .ok());
  EXPECT_EQ(seen, (std::vector<std::string>{a, b, c}));
  seen.clear();
  ASSERT_TRUE(
      TraceRecipient(*files, "ann@d1.test", "", [&](std::string_view r) { seen.emplace_back(r); })
          .ok());
  EXPECT_EQ(seen.size(), 4u) << "every job's records without --job";

  const std::string line = FormatTraceRecord(a);
  EXPECT_NE(line.find("deferred  attempt 1  127.0.0.1:25  451 4.7.1 Greylisted  [policy]"),
            std::string::npos)
      << line;
  EXPECT_NE(FormatTraceRecord(c).find("tls TLSv1.3 X"), std::string::npos);
  EXPECT_EQ(FormatTraceRecord("not json\x1b"), "not json?\n");
}

TEST_F(TraceTest, NoLogIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(DeliveryLogFiles(dir_).status()));
  EXPECT_TRUE(absl::IsNotFound(DeliveryLogFiles(dir_ + "/none").status()));
}

}  // namespace
}  // namespace volley::ctl
