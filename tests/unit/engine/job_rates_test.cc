// job_rates_test.cc - rate and ETA from sampled counters, age classes, and the
// admin API's read-side JSON (job fields, refused jobs, every destination).
#include "engine/job_rates.h"

#include <gtest/gtest.h>

#include <thread>

#include "engine/admin.h"

namespace volley::engine {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

queue::JobProgress Progress(uint64_t total, uint64_t delivered, uint64_t bounced = 0) {
  queue::JobProgress p;
  p.total = total;
  p.delivered = delivered;
  p.bounced = bounced;
  return p;
}

TEST(JobRatesTest, NoRateUntilTwoSamplesFarEnoughApart) {
  JobRates rates;
  EXPECT_FALSE(rates.Rate(1).has_value());
  rates.Record(1, kT0, Progress(100, 0));
  EXPECT_FALSE(rates.Rate(1).has_value());
  rates.Record(1, kT0 + absl::Seconds(2), Progress(100, 10));
  EXPECT_FALSE(rates.Rate(1).has_value()) << "2 s is under kJobRateMinSpan";
  rates.Record(1, kT0 + absl::Seconds(5), Progress(100, 25));
  ASSERT_TRUE(rates.Rate(1).has_value());
  EXPECT_DOUBLE_EQ(*rates.Rate(1), 5.0);
}

TEST(JobRatesTest, BouncesCountAsFinishedAndDeferralsDoNot) {
  JobRates rates;
  rates.Record(1, kT0, Progress(100, 0));
  queue::JobProgress later = Progress(100, 10, 10);
  later.deferred = 30;
  later.deferrals = 50;
  rates.Record(1, kT0 + absl::Seconds(10), later);
  EXPECT_DOUBLE_EQ(*rates.Rate(1), 2.0);
}

TEST(JobRatesTest, RateIsOverTheLastWindowOnly) {
  JobRates rates;
  // Fast for the first minute, then stalled: the rate falls to zero once the
  // fast minute has left the window.
  uint64_t done = 0;
  for (int s = 0; s <= 60; s += 5) {
    rates.Record(1, kT0 + absl::Seconds(s), Progress(10000, done));
    done += 100;
  }
  EXPECT_GT(*rates.Rate(1), 10.0);
  for (int s = 65; s <= 200; s += 5) rates.Record(1, kT0 + absl::Seconds(s), Progress(10000, done));
  EXPECT_DOUBLE_EQ(*rates.Rate(1), 0.0);
}

TEST(JobRatesTest, SamplesLessThanASecondApartAreDropped) {
  JobRates rates;
  rates.Record(1, kT0, Progress(100, 0));
  rates.Record(1, kT0 + absl::Seconds(10), Progress(100, 20));
  rates.Record(1, kT0 + absl::Seconds(10) + absl::Milliseconds(300), Progress(100, 90));
  EXPECT_DOUBLE_EQ(*rates.Rate(1), 2.0);
}

TEST(JobRatesTest, ACounterThatShrankGivesNoRate) {
  JobRates rates;
  rates.Record(1, kT0, Progress(100, 50));
  rates.Record(1, kT0 + absl::Seconds(10), Progress(100, 10));
  EXPECT_FALSE(rates.Rate(1).has_value());
}

TEST(JobRatesTest, JobsAreBounded) {
  JobRates rates;
  for (uint32_t j = 0; j < kJobRateMaxJobs + 10; ++j) {
    rates.Record(j, kT0 + absl::Seconds(j), Progress(1, 0));
  }
  EXPECT_EQ(rates.jobs(), kJobRateMaxJobs);
  // The least recently sampled went first.
  rates.Record(0, kT0 + absl::Seconds(100000), Progress(1, 0));
  EXPECT_EQ(rates.jobs(), kJobRateMaxJobs);
}

TEST(JobEtaTest, PendingOverRate) {
  EXPECT_EQ(JobEta(0, std::nullopt), absl::ZeroDuration());
  EXPECT_EQ(JobEta(100, 4.0), absl::Seconds(25));
  EXPECT_EQ(JobEta(10, 3.0), absl::Seconds(4)) << "rounded up";
  EXPECT_FALSE(JobEta(100, std::nullopt).has_value());
  EXPECT_FALSE(JobEta(100, 0.0).has_value()) << "a stalled job has no finish time";
  EXPECT_FALSE(JobEta(100, -1.0).has_value());
  EXPECT_FALSE(JobEta(uint64_t{1} << 40, 0.001).has_value()) << "beyond a year";
}

TEST(FormatAgeTest, ReadableUnits) {
  EXPECT_EQ(FormatAge(absl::Seconds(-5)), "0s");
  EXPECT_EQ(FormatAge(absl::Seconds(45)), "45s");
  EXPECT_EQ(FormatAge(absl::Minutes(12) + absl::Seconds(30)), "12m");
  EXPECT_EQ(FormatAge(absl::Hours(2)), "2h");
  EXPECT_EQ(FormatAge(absl::Minutes(95)), "1h35m");
  EXPECT_EQ(FormatAge(absl::Hours(76)), "3d4h");
}

TEST(QueueAgeBucketTest, QshapeClasses) {
  EXPECT_EQ(QueueAgeBucket(absl::Seconds(-1)), 0u);
  EXPECT_EQ(QueueAgeBucket(absl::Minutes(4)), 0u);
  EXPECT_EQ(QueueAgeBucket(absl::Minutes(5)), 1u);
  EXPECT_EQ(QueueAgeBucket(absl::Minutes(12)), 2u);
  EXPECT_EQ(QueueAgeBucket(absl::Minutes(159)), 5u);
  EXPECT_EQ(QueueAgeBucket(absl::Minutes(160)), 6u);
  EXPECT_EQ(QueueAgeBucketName(0), "0-5m");
  EXPECT_EQ(QueueAgeBucketName(6), "160m+");
}

TEST(AdminReadTest, JobJsonGainsReadFieldsAndScheduledState) {
  queue::JobRecord job;
  job.id = "spring";
  job.job_no = 3;
  job.state = queue::JobState::kReady;
  job.queued_at = kT0;
  job.first_due = kT0 + absl::Hours(1);
  job.header_json =
      R"({"job":"spring","send_after":"2027-01-15T09:00:00Z","expires":"2027-01-17T08:00:00Z"})";
  AdminJobReading reading;
  reading.now = kT0;
  reading.rate = 2.0;
  reading.rejected = 4;
  const std::string json = AdminJobJson(job, Progress(100, 20), reading);
  EXPECT_NE(json.find("\"state\":\"scheduled\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rate\":2.000,\"eta_seconds\":40,\"eta\":\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rejected\":4"), std::string::npos) << json;
  EXPECT_NE(json.find("\"send_after\":\"2027-01-15T09:00:00Z\",\"expires\":\"2027-01-17T08:00:00Z\"}"),
            std::string::npos)
      << json;
  // Once its time has come it is ready; unknown fields are null.
  reading.now = kT0 + absl::Hours(2);
  reading.rate.reset();
  reading.rejected.reset();
  job.header_json = R"({"job":"spring"})";
  EXPECT_NE(AdminJobJson(job, Progress(100, 20), AdminJobReading{kT0, std::nullopt, std::nullopt}).find("\"ready\""),
            std::string::npos)
      << "no send_after: ready, whatever its first due time";
  const std::string later = AdminJobJson(job, Progress(100, 20), reading);
  EXPECT_NE(later.find("\"state\":\"ready\""), std::string::npos) << later;
  EXPECT_NE(later.find("\"rate\":null,\"eta_seconds\":null,\"eta\":null,\"rejected\":null,"
                       "\"send_after\":null,\"expires\":null}"),
            std::string::npos)
      << later;
}

TEST(AdminReadTest, RefusedJobJsonIsEscapedAndBounded) {
  const std::string big(2 * kAdminMaxRefusalText, 'x');
  const std::string json = AdminRefusedJobJson("j1", "j1.job", "line 1: \"from\"\n" + big);
  EXPECT_EQ(json.rfind("{\"id\":\"j1\",\"state\":\"refused\",\"file\":\"failed/j1.job\",\"error\":"
                       "\"line 1: \\\"from\\\"\\n",
                       0),
            0u)
      << json.substr(0, 100);
  EXPECT_LT(json.size(), kAdminMaxRefusalText + 200);
}

TEST(AdminReadTest, AllDestinationsSortedBoundedAndFiltered) {
  DestinationStates states(2);
  states.PublishAll({{5, 1, false, R"({"name":"a"})"}, {0, 0, false, R"({"name":"idle"})"}}, 0);
  states.PublishAll({{9, 2, false, R"({"name":"b"})"}, {0, 0, true, R"({"name":"sick"})"}}, 1);
  EXPECT_EQ(states.AllJson(10, false),
            "{\"destinations\":[{\"name\":\"b\"},{\"name\":\"a\"},{\"name\":\"sick\"},"
            "{\"name\":\"idle\"}],\"total\":4,\"truncated\":false}\n");
  EXPECT_EQ(states.AllJson(10, true),
            "{\"destinations\":[{\"name\":\"b\"},{\"name\":\"a\"},{\"name\":\"sick\"}],"
            "\"total\":4,\"truncated\":false}\n");
  EXPECT_EQ(states.AllJson(1, false),
            "{\"destinations\":[{\"name\":\"b\"}],\"total\":4,\"truncated\":true}\n");
  EXPECT_EQ(states.InFlight(), 3u);
  // The troubled list is what it was.
  EXPECT_EQ(states.Json(), "{\"destinations\":[]}\n");
}

TEST(AdminReadTest, RefreshWaitsForEveryRunningShardsAnswer) {
  DestinationStates states(2);
  // No shard running: nothing to wait for.
  EXPECT_TRUE(states.Refresh(absl::Milliseconds(1)));
  states.Attach(0);
  states.Attach(1);
  // Shard 1 answers the ticket it sees; shard 0 does not: the reader gives up
  // after its wait, with what was there.
  std::thread one([&] {
    uint64_t ticket = 0;
    while ((ticket = states.Asked()) == 1) std::this_thread::yield();  // Refresh #1 was seen
    states.PublishAll({{7, 7, false, R"({"name":"one"})"}}, 1);
    states.Answered(1, ticket);
  });
  EXPECT_FALSE(states.Refresh(absl::Milliseconds(300)));
  one.join();
  EXPECT_EQ(states.InFlight(), 7u);
  // Both answer: the reader goes on as soon as the last one has.
  std::thread both([&] {
    uint64_t ticket = 0;
    while ((ticket = states.Asked()) == 2) std::this_thread::yield();
    states.Answered(0, ticket);
    states.Answered(1, ticket);
  });
  EXPECT_TRUE(states.Refresh(absl::Seconds(30)));
  both.join();
  // A stopped shard holds no reader up, even one that never answered.
  states.Detach(0);
  std::thread last([&] {
    uint64_t ticket = 0;
    while ((ticket = states.Asked()) == 3) std::this_thread::yield();
    states.Answered(1, ticket);
  });
  EXPECT_TRUE(states.Refresh(absl::Seconds(30)));
  last.join();
  // An answer to an older ticket does not count for a newer one.
  states.Answered(1, 1);
  EXPECT_FALSE(states.Refresh(absl::Milliseconds(50)));
}

}  // namespace
}  // namespace volley::engine
