// load_test.cc - volley-load's library: the job generator, the delivery-log tally, the
// latency histogram, routes and zone output for the sink's addresses, /proc parsing and
// the run report.
#include "bench/load.h"

#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "simdjson.h"

namespace volley::load {
namespace {

std::string Generate(const GenerateOptions& o, GenerateStats* stats = nullptr) {
  std::string out;
  size_t chunks = 0;
  auto s = GenerateJob(o, [&](std::string_view b) {
    out.append(b);
    ++chunks;
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s.status();
  if (stats != nullptr && s.ok()) *stats = *s;
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  EXPECT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "") << "the file must end with a newline";
  lines.pop_back();
  return lines;
}

// The domain of a recipient line {"to":"r0000001@d0001.test",...}.
std::string DomainOf(const std::string& line) {
  const size_t at = line.find('@');
  const size_t end = line.find('"', at);
  return line.substr(at + 1, end - at - 1);
}

GenerateOptions Options(uint64_t n, uint32_t m) {
  GenerateOptions o;
  o.job_id = "j1";
  o.recipients = n;
  o.domains = m;
  return o;
}

TEST(Generate, WritesHeaderAndOneLinePerRecipient) {
  GenerateStats stats;
  const std::string text = Generate(Options(1000, 20), &stats);
  const auto lines = Lines(text);
  ASSERT_EQ(lines.size(), 1001u);
  EXPECT_EQ(stats.recipients, 1000u);
  EXPECT_EQ(stats.bytes, text.size());
  EXPECT_EQ(lines[0].rfind("{\"job\":\"j1\",\"from\":\"bulk@sender.test\",\"message\":\"", 0), 0u)
      << lines[0];
  std::set<std::string> addresses;
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].rfind("{\"to\":\"r", 0), 0u) << lines[i];
    EXPECT_NE(lines[i].find(".test\",\"vars\":{}}"), std::string::npos) << lines[i];
    const size_t end = lines[i].find('"', 7);
    addresses.insert(lines[i].substr(7, end - 7));
  }
  EXPECT_EQ(addresses.size(), 1000u) << "addresses are unique";
}

TEST(Generate, UsesExactlyTheDomainsAsked) {
  GenerateStats stats;
  const auto lines = Lines(Generate(Options(5000, 50), &stats));
  std::map<std::string, uint64_t> seen;
  for (size_t i = 1; i < lines.size(); ++i) ++seen[DomainOf(lines[i])];
  ASSERT_EQ(seen.size(), 50u);
  EXPECT_EQ(seen.begin()->first, "d0001.test");
  EXPECT_EQ(seen.rbegin()->first, "d0050.test");
  ASSERT_EQ(stats.domain_counts.size(), 50u);
  for (uint32_t d = 0; d < 50; ++d) EXPECT_EQ(seen[DomainName(d)], stats.domain_counts[d]);
}

TEST(Generate, FewerRecipientsThanDomains) {
  const auto lines = Lines(Generate(Options(3, 10)));
  ASSERT_EQ(lines.size(), 4u);
  std::set<std::string> seen;
  for (size_t i = 1; i < lines.size(); ++i) seen.insert(DomainOf(lines[i]));
  EXPECT_EQ(seen, (std::set<std::string>{"d0001.test", "d0002.test", "d0003.test"}));
}

TEST(Generate, IsDeterministicForASeed) {
  GenerateOptions a = Options(2000, 30);
  a.personalised = true;
  EXPECT_EQ(Generate(a), Generate(a));
  GenerateOptions b = a;
  b.seed = 2;
  EXPECT_NE(Generate(a), Generate(b)) << "another seed, another order";
  EXPECT_EQ(Lines(Generate(a))[0], Lines(Generate(b))[0]);
}

TEST(Generate, SkewsAFewLargeDomainsAndALongTail) {
  const auto counts = DomainCounts(100000, 100);
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  EXPECT_EQ(total, 100000u);
  EXPECT_TRUE(std::is_sorted(counts.rbegin(), counts.rend())) << "largest first";
  // Zipf, s = 1, over 100 domains: the top domain has about 19%, the top five
  // about 44%, and every domain has some.
  EXPECT_GT(counts[0], 15000u);
  EXPECT_LT(counts[0], 25000u);
  EXPECT_GT(counts[0] + counts[1] + counts[2] + counts[3] + counts[4], 40000u);
  EXPECT_GE(counts[99], 1u);
  EXPECT_LT(counts[99], 1000u) << "long tail: the last domain is under 1%";
  EXPECT_GT(counts[0], 50 * counts[99]);
}

TEST(Generate, ShufflesDomainsThroughTheFile) {
  // The largest domain must not come in one block.
  const auto lines = Lines(Generate(Options(1000, 10)));
  size_t first = 0, last = 0, count = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (DomainOf(lines[i]) == "d0001.test") {
      if (count++ == 0) first = i;
      last = i;
    }
  }
  EXPECT_GT(count, 100u);
  EXPECT_GT(last - first + 1, count + 100) << "interleaved with other domains";
}

TEST(Generate, PadsTheMessageToAboutSize) {
  for (uint64_t size : {200u, 1024u, 10000u, 100000u}) {
    GenerateOptions o = Options(1, 1);
    o.size = size;
    const std::string m = MessageTemplate(o);
    EXPECT_LE(m.size(), size + 2) << size;
    EXPECT_GE(m.size() + 80, size) << size;
    EXPECT_NE(m.find("\r\n\r\n"), std::string::npos) << "headers, blank line, body";
    EXPECT_EQ(m.find("{{"), std::string::npos) << "no variables unless personalised";
  }
}

TEST(Generate, PersonalisedUsesFirstName) {
  GenerateOptions o = Options(50, 5);
  o.personalised = true;
  const auto lines = Lines(Generate(o));
  EXPECT_NE(lines[0].find("{{first_name}}"), std::string::npos);
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_NE(lines[i].find("\"vars\":{\"first_name\":\""), std::string::npos) << lines[i];
  }
}

TEST(Generate, EscapesTheJobIdAndFrom) {
  GenerateOptions o = Options(1, 1);
  o.job_id = "a\"b";
  o.from = "x\\y@sender.test";
  const auto lines = Lines(Generate(o));
  EXPECT_EQ(lines[0].rfind(R"({"job":"a\"b","from":"x\\y@sender.test",)", 0), 0u) << lines[0];
}

TEST(Generate, StreamsInChunks) {
  size_t chunks = 0, largest = 0, total = 0;
  auto s = GenerateJob(Options(100000, 100), [&](std::string_view b) {
    ++chunks;
    largest = std::max(largest, b.size());
    total += b.size();
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(chunks, 10u);
  EXPECT_LT(largest, 128u * 1024);
  EXPECT_EQ(total, s->bytes);
}

TEST(Generate, StopsOnSinkError) {
  auto s = GenerateJob(Options(100000, 10), [](std::string_view) {
    return absl::DataLossError("disk full");
  });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
}

std::string Record(const std::string& job, int line, const std::string& status,
                   const std::string& ts = "2026-11-28T13:45:01.123Z") {
  return absl::StrCat("{\"ts\":\"", ts, "\",\"job\":\"", job, "\",\"line\":", line,
                      ",\"rcpt\":\"r", line, "@d0001.test\",\"status\":\"", status,
                      "\",\"code\":250,\"enhanced\":\"2.0.0\",\"response\":\"ok\","
                      "\"host\":\"127.0.0.1\",\"port\":2525,\"attempt\":1}\n");
}

// RecordIn - a delivered record of `line` (domain `domain`) sent in transaction `txn`.
std::string RecordIn(const std::string& job, int line, uint32_t domain, const std::string& txn,
                     const std::string& status = "delivered") {
  return absl::StrCat("{\"ts\":\"2026-11-28T13:45:01.123Z\",\"job\":\"", job,
                      "\",\"line\":", line, ",\"rcpt\":\"r", line, "@", DomainName(domain),
                      "\",\"status\":\"", status,
                      "\",\"code\":250,\"enhanced\":\"2.0.0\",\"response\":\"ok\","
                      "\"host\":\"127.0.0.1\",\"port\":2525,\"attempt\":1,\"txn\":\"",
                      txn, "\"}\n");
}

TEST(DeliveryTally, ASharedMessageIsOneMessageForAllItsRecipients) {
  // 1,000 recipients over 7 domains, shared: volleyd sends each domain's
  // recipients 100 to a transaction, so a domain of n recipients is ceil(n/100)
  // messages. Records of different transactions interleave, as the shards'
  // batches do in the log.
  const std::vector<uint64_t> per_domain = DomainCounts(1000, 7);
  std::vector<std::string> records;
  uint64_t want_messages = 0;
  int line = 2;
  for (uint32_t d = 0; d < per_domain.size(); ++d) {
    for (uint64_t i = 0; i < per_domain[d]; ++i, ++line) {
      const uint64_t transaction = want_messages + i / 100;
      records.push_back(RecordIn("j1", line, d, absl::StrCat("mq3k1x2a.", d % 2, ".", transaction)));
    }
    want_messages += (per_domain[d] + 99) / 100;
  }
  std::mt19937 shuffle(7);
  std::shuffle(records.begin(), records.end(), shuffle);
  DeliveryTally t("j1", 1000);
  for (const std::string& r : records) t.Feed(r);
  EXPECT_TRUE(t.complete());
  EXPECT_EQ(t.counts().delivered, 1000u);
  ASSERT_TRUE(t.messages().has_value());
  EXPECT_EQ(*t.messages(), want_messages);
  EXPECT_LT(want_messages, 1000u / 50) << "the counts differ, so the test can tell them apart";
}

TEST(DeliveryTally, MessagesCountDeliveriesOnlyAndAreUnknownWithoutTxn) {
  DeliveryTally t("j1", 3);
  t.Feed(RecordIn("j1", 2, 0, "a.0.1", "deferred"));  // a transaction that delivered nothing
  t.Feed(RecordIn("j1", 3, 0, "a.0.1", "deferred"));
  t.Feed(RecordIn("j1", 2, 0, "a.0.2"));
  t.Feed(RecordIn("j1", 3, 0, "a.0.2"));
  t.Feed(RecordIn("j1", 4, 1, "a.1.1"));
  t.Feed(RecordIn("j1", 4, 1, "b.1.1"));  // sent again after a crash: a second message
  ASSERT_TRUE(t.messages().has_value());
  EXPECT_EQ(*t.messages(), 3u);
  t.Feed(Record("j1", 2, "delivered"));  // an older volleyd's record: no txn
  EXPECT_FALSE(t.messages().has_value()) << "not guessed";
}

TEST(DeliveryTally, CountsLatestStatusPerRecipient) {
  DeliveryTally t("j1", 4);  // lines 2..5
  t.Feed(Record("j1", 2, "deferred"));
  t.Feed(Record("j1", 3, "delivered"));
  t.Feed(Record("other", 4, "delivered"));
  EXPECT_EQ(t.with_outcome(), 2u);
  EXPECT_EQ(t.counts().deferred, 1u);
  t.Feed(Record("j1", 2, "delivered"));
  t.Feed(Record("j1", 4, "bounced"));
  t.Feed(Record("j1", 3, "delivered"));  // a duplicate after a crash
  EXPECT_EQ(t.with_outcome(), 3u);
  EXPECT_FALSE(t.complete());
  EXPECT_EQ(t.missing(), 1u);
  t.Feed(Record("j1", 5, "expired"));
  EXPECT_TRUE(t.complete());
  const OutcomeCounts c = t.counts();
  EXPECT_EQ(c.delivered, 2u);
  EXPECT_EQ(c.deferred, 0u);
  EXPECT_EQ(c.bounced, 1u);
  EXPECT_EQ(c.expired, 1u);
  EXPECT_EQ(t.records(), 6u);
  EXPECT_EQ(t.latest(2), metrics::DeliveryStatus::kDelivered);
}

TEST(DeliveryTally, JoinsPartialLines) {
  const std::string all = Record("j1", 2, "delivered") + Record("j1", 3, "deferred") +
                          Record("j1", 4, "delivered", "2026-11-28T13:45:09.000Z");
  // Every way of cutting the stream in two and in byte-sized pieces gives the same result.
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    DeliveryTally t("j1", 3);
    t.Feed(std::string_view(all).substr(0, cut));
    t.Feed(std::string_view(all).substr(cut));
    EXPECT_TRUE(t.complete()) << cut;
    EXPECT_EQ(t.counts().delivered, 2u) << cut;
    EXPECT_EQ(t.malformed(), 0u) << cut;
  }
  DeliveryTally t("j1", 3);
  for (char c : all) t.Feed(std::string_view(&c, 1));
  EXPECT_TRUE(t.complete());
  ASSERT_TRUE(t.last_outcome().has_value());
  EXPECT_EQ(*t.last_outcome(), *ParseTimestamp("2026-11-28T13:45:09Z"));

  DeliveryTally half("j1", 3);
  half.Feed(all.substr(0, all.size() - 5));
  EXPECT_EQ(half.with_outcome(), 2u) << "the unterminated last record waits";
  EXPECT_EQ(half.pending_bytes(), Record("j1", 4, "delivered").size() - 5);
}

TEST(DeliveryTally, SkipsMalformedAndOutOfRangeLines) {
  DeliveryTally t("j1", 2);
  t.Feed("not json at all \"j1\"\n\n");
  t.Feed("{\"ts\":\"2026-11-28T13:45:01Z\",\"job\":\"j1\",\"line\":2,\"sta");  // torn by a crash
  t.Feed(Record("j1", 3, "delivered"));  // ...glued to the next record
  t.Feed(Record("j1", 9, "delivered"));
  t.Feed(Record("j1", 1, "delivered"));
  t.Feed(Record("j1", 2, "delivered"));
  EXPECT_EQ(t.malformed(), 2u);
  EXPECT_EQ(t.out_of_range(), 2u);
  EXPECT_EQ(t.with_outcome(), 1u);
  EXPECT_EQ(t.latest(2), metrics::DeliveryStatus::kDelivered);
  EXPECT_EQ(t.latest(3), std::nullopt);
  EXPECT_EQ(t.latest(9), std::nullopt);
}

TEST(DeliveryTally, CancelledAndSuppressedAreOtherAndAnUnknownStatusIsNoOutcome) {
  DeliveryTally t("j1", 3);
  t.Feed(Record("j1", 2, "cancelled"));
  t.Feed(Record("j1", 3, "suppressed"));
  // A status this build does not know is not taken for one it does.
  t.Feed(Record("j1", 4, "lost"));
  EXPECT_EQ(t.counts().other, 2u);
  EXPECT_EQ(t.counts().bounced, 0u);
  EXPECT_EQ(t.with_outcome(), 2u);
  EXPECT_EQ(t.malformed(), 1u);
  EXPECT_EQ(t.latest(2), metrics::DeliveryStatus::kCancelled);
  EXPECT_EQ(t.latest(4), std::nullopt);
}

class LogFollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/volley-load-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/deliveries.jsonl";
  }
  void TearDown() override {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  void Append(const std::string& bytes) {
    FILE* f = std::fopen(path_.c_str(), "a");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  std::string dir_, path_;
};

TEST_F(LogFollowerTest, ReadsFromTheStartOffsetAndFollowsGrowth) {
  DeliveryTally t("j1", 2);
  LogFollower missing(path_, 0);
  EXPECT_TRUE(missing.Poll(&t).ok()) << "no log yet is not an error";

  Append(Record("j1", 2, "delivered"));  // before the drop: an older run's record
  auto size = FileSize(path_);
  ASSERT_TRUE(size.ok());
  LogFollower f(path_, *size);
  ASSERT_TRUE(f.Poll(&t).ok());
  EXPECT_EQ(t.with_outcome(), 0u);

  const std::string rec = Record("j1", 2, "deferred");
  Append(rec.substr(0, 20));
  ASSERT_TRUE(f.Poll(&t).ok());
  EXPECT_EQ(t.with_outcome(), 0u);
  Append(rec.substr(20) + Record("j1", 3, "delivered"));
  ASSERT_TRUE(f.Poll(&t).ok());
  EXPECT_EQ(t.with_outcome(), 2u);
  EXPECT_EQ(t.counts().deferred, 1u);
  EXPECT_EQ(f.offset(), *size + rec.size() + Record("j1", 3, "delivered").size());
}

TEST_F(LogFollowerTest, GenerateJobFileWritesTheFile) {
  const std::string job = dir_ + "/j.job";
  auto s = GenerateJobFile(Options(10, 2), job);
  ASSERT_TRUE(s.ok()) << s.status();
  auto size = FileSize(job);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, s->bytes);
  EXPECT_FALSE(GenerateJobFile(Options(10, 2), job).ok()) << "never overwrites";
  std::remove(job.c_str());
}

// ---- Latency

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int us = 1; us <= 100; ++us) h.Add(absl::Microseconds(us));
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.Percentile(50), absl::Microseconds(50));
  EXPECT_EQ(h.Percentile(99), absl::Microseconds(99));
  EXPECT_EQ(h.Percentile(100), absl::Microseconds(100));
  EXPECT_EQ(h.Percentile(1), absl::Microseconds(1));
  EXPECT_EQ(h.min(), absl::Microseconds(1));
  EXPECT_EQ(h.max(), absl::Microseconds(100));
  EXPECT_EQ(h.mean(), absl::Microseconds(50.5));
}

TEST(LatencyHistogram, LargeValuesWithinOnePart128) {
  // 1 ms .. 10 s in 1 ms steps: p50 is 5 s, p99 9.9 s.
  LatencyHistogram h;
  for (int ms = 1; ms <= 10000; ++ms) h.Add(absl::Milliseconds(ms));
  const double p50 = absl::ToDoubleSeconds(h.Percentile(50));
  const double p99 = absl::ToDoubleSeconds(h.Percentile(99));
  EXPECT_GE(p50, 5.0);
  EXPECT_LE(p50, 5.0 * (1 + 1.0 / 128));
  EXPECT_GE(p99, 9.9);
  EXPECT_LE(p99, 9.9 * (1 + 1.0 / 128));
  EXPECT_EQ(h.Percentile(100), absl::Seconds(10)) << "never above the largest value";
  EXPECT_EQ(h.max(), absl::Seconds(10));
  EXPECT_NEAR(absl::ToDoubleSeconds(h.mean()), 5.0005, 1e-6);
}

TEST(LatencyHistogram, SkewedInput) {
  // 990 fast deliveries and 10 slow ones: p99 is still fast, p99.5 slow.
  LatencyHistogram h;
  for (int i = 0; i < 990; ++i) h.Add(absl::Milliseconds(20));
  for (int i = 0; i < 10; ++i) h.Add(absl::Seconds(30));
  EXPECT_NEAR(absl::ToDoubleSeconds(h.Percentile(50)), 0.020, 0.020 / 128);
  EXPECT_NEAR(absl::ToDoubleSeconds(h.Percentile(99)), 0.020, 0.020 / 128);
  EXPECT_EQ(h.Percentile(99.5), absl::Seconds(30));
}

TEST(LatencyHistogram, EmptyAndNegative) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(50), absl::ZeroDuration());
  EXPECT_EQ(h.mean(), absl::ZeroDuration());
  EXPECT_EQ(h.min(), absl::ZeroDuration());
  h.Add(absl::Milliseconds(-3));  // the log's ts is truncated to milliseconds
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.Percentile(99), absl::ZeroDuration());
}

TEST(LatencyHistogram, BucketsTileTheRange) {
  // Every bucket's top is in it and top + 1 starts the next: no gaps, no overlaps.
  for (size_t b = 0; b + 1 < LatencyHistogram::kBuckets; ++b) {
    const uint64_t top = LatencyHistogram::BucketTop(b);
    ASSERT_EQ(LatencyHistogram::BucketOf(top), b) << b;
    ASSERT_EQ(LatencyHistogram::BucketOf(top + 1), b + 1) << b;
  }
  EXPECT_EQ(LatencyHistogram::BucketOf(UINT64_MAX), LatencyHistogram::kBuckets - 1);
  EXPECT_EQ(LatencyHistogram::BucketTop(LatencyHistogram::kBuckets - 1), UINT64_MAX);
  // The relative width of a bucket is at most 1/128.
  for (size_t b = LatencyHistogram::kSubBuckets; b < LatencyHistogram::kBuckets; b += 97) {
    const uint64_t low = LatencyHistogram::BucketTop(b - 1) + 1;
    const uint64_t top = LatencyHistogram::BucketTop(b);
    EXPECT_LE(static_cast<double>(top - low + 1) / static_cast<double>(low), 1.0 / 128) << b;
  }
}

TEST(DeliveryTally, LatencyFromTheDropForFirstDeliveries) {
  const absl::Time drop = *ParseTimestamp("2026-11-28T13:45:00.000Z");
  DeliveryTally t("j1", 4, drop);
  t.Feed(Record("j1", 2, "delivered", "2026-11-28T13:45:00.250Z"));
  t.Feed(Record("j1", 3, "deferred", "2026-11-28T13:45:01.000Z"));  // not a delivery
  t.Feed(Record("j1", 3, "delivered", "2026-11-28T13:45:05.000Z"));  // after a retry
  t.Feed(Record("j1", 2, "delivered", "2026-11-28T13:45:09.000Z"));  // a duplicate
  t.Feed(Record("j1", 4, "bounced", "2026-11-28T13:45:02.000Z"));
  t.Feed(Record("j1", 5, "delivered", "2026-11-28T13:44:59.999Z"));  // clocks a ms apart
  const LatencyHistogram& h = t.latency();
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.max(), absl::Seconds(5));
  EXPECT_EQ(h.min(), absl::ZeroDuration());
  EXPECT_NEAR(absl::ToDoubleSeconds(h.Percentile(50)), 0.25, 0.25 / 128);

  DeliveryTally no_drop("j1", 1);
  no_drop.Feed(Record("j1", 2, "delivered"));
  EXPECT_EQ(no_drop.latency().count(), 0u) << "no drop time, no latency";
}

// ---- Sink addresses, routes and zone

TEST(ParseAddressRange, TakesARangeOrOneAddress) {
  auto r = ParseAddressRange("127.0.1.1-127.0.1.250");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatAddress(r->first), "127.0.1.1");
  EXPECT_EQ(FormatAddress(r->last), "127.0.1.250");
  EXPECT_EQ(r->size(), 250u);
  auto one = ParseAddressRange("127.0.0.1");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->size(), 1u);
  EXPECT_EQ(FormatAddress(one->At(7)), "127.0.0.1");
  auto across = ParseAddressRange("127.0.0.255-127.0.1.1");  // crosses an octet
  ASSERT_TRUE(across.ok()) << across.status();
  EXPECT_EQ(across->size(), 3u);
  EXPECT_EQ(FormatAddress(across->At(1)), "127.0.1.0");
  auto widest = ParseAddressRange("127.1.0.0-127.1.255.255");
  ASSERT_TRUE(widest.ok()) << widest.status();
  EXPECT_EQ(widest->size(), kMaxSinkAddresses);
}

TEST(ParseAddressRange, RefusesWhatIsNotALoopbackRange) {
  struct Case {
    const char* text;
    const char* why;
  };
  for (const Case& c : std::vector<Case>{
           {"10.0.0.1", "10.0.0.1 is not in 127.0.0.0/8"},
           {"127.0.0.1-192.168.1.1", "192.168.1.1 is not in 127.0.0.0/8"},
           {"::1", "is not an IPv4 address"},
           {"127.0.0.9-127.0.0.2", "the first address 127.0.0.9 is after the last 127.0.0.2"},
           {"127.0.0.0-127.0.0.5", "network or broadcast"},
           {"127.255.255.255", "network or broadcast"},
           {"127.0.0.1-127.1.0.1", "65537 addresses, more than the 65536 allowed"},
           {"127.0.0", "\"127.0.0\" is not an IPv4 address"},
           {"127.0.0.256", "is not an IPv4 address"},
           {"127.0.0.01", "is not an IPv4 address"},
           {"127.0.0.1.", "is not an IPv4 address"},
           {"127.0.0.1-", "\"\" is not an IPv4 address"},
           {"127.0.0.1-127.0.0.2-127.0.0.3", "is not an IPv4 address"},
           {" 127.0.0.1", "is not an IPv4 address"},
           {"", "is not an IPv4 address"},
       }) {
    auto r = ParseAddressRange(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    const std::string message(r.status().message());
    EXPECT_NE(message.find(absl::StrCat("sink addresses \"", c.text, "\"")), std::string::npos)
        << "names the text: " << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << c.text << ": " << message;
  }
}

std::string Collect(absl::FunctionRef<absl::Status(
                        absl::FunctionRef<absl::Status(std::string_view)>)> write,
                    size_t* chunks = nullptr) {
  std::string out;
  absl::Status s = write([&](std::string_view b) {
    out.append(b);
    if (chunks != nullptr) ++*chunks;
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

RoutingOptions Routing(uint32_t domains, const char* range) {
  RoutingOptions o;
  o.domains = domains;
  auto r = ParseAddressRange(range);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) o.addresses = *r;
  return o;
}

TEST(WriteRoutes, EveryDomainRoundRobinOverTheRange) {
  RoutingOptions o = Routing(1000, "127.0.1.1-127.0.1.250");
  o.port = 2526;
  size_t chunks = 0;
  const std::string text = Collect([&](auto sink) { return WriteRoutes(o, sink); }, &chunks);
  std::map<std::string, std::string> routes;
  bool in_table = false;
  for (const std::string& line : Lines(text)) {
    if (line.empty() || line[0] == '#') continue;
    if (line == "[routes]") {
      EXPECT_FALSE(in_table) << "one table";
      in_table = true;
      continue;
    }
    ASSERT_TRUE(in_table) << "entries come after [routes]: " << line;
    std::vector<std::string> kv = absl::StrSplit(line, " = ");
    ASSERT_EQ(kv.size(), 2u) << line;
    for (const std::string& quoted : kv) {
      ASSERT_TRUE(quoted.size() >= 2 && quoted.front() == '"' && quoted.back() == '"') << line;
    }
    const std::string domain = kv[0].substr(1, kv[0].size() - 2);
    EXPECT_TRUE(routes.emplace(domain, kv[1].substr(1, kv[1].size() - 2)).second)
        << "twice: " << domain;
  }
  ASSERT_EQ(routes.size(), 1000u);
  std::map<std::string, int> per_address;
  for (uint32_t i = 0; i < 1000; ++i) {
    const std::string& target = routes[DomainName(i)];
    // Round robin: d0001 -> .1, d0250 -> .250, d0251 -> .1 again.
    EXPECT_EQ(target, absl::StrCat("127.0.1.", i % 250 + 1, ":2526")) << DomainName(i);
    ++per_address[target];
  }
  EXPECT_EQ(per_address.size(), 250u);
  for (const auto& [address, n] : per_address) EXPECT_EQ(n, 4) << address;
  EXPECT_EQ(chunks, 1u) << "a small table is one write";
}

TEST(WriteRoutes, StreamsAndChecksItsOptions) {
  size_t chunks = 0;
  RoutingOptions o = Routing(100000, "127.0.0.1");
  const std::string text = Collect([&](auto sink) { return WriteRoutes(o, sink); }, &chunks);
  EXPECT_GT(chunks, 10u);
  EXPECT_NE(text.find("\"d100000.test\" = \"127.0.0.1:2525\"\n"), std::string::npos);

  auto fails = [](const RoutingOptions& bad) {
    return WriteRoutes(bad, [](std::string_view) { return absl::OkStatus(); });
  };
  RoutingOptions bad = Routing(10, "127.0.0.1");
  bad.port = 0;
  EXPECT_EQ(fails(bad).code(), absl::StatusCode::kInvalidArgument);
  bad.port = 65536;
  EXPECT_EQ(fails(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Routing(0, "127.0.0.1");
  EXPECT_EQ(fails(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Routing(10, "127.0.0.1");
  bad.addresses.first = bad.addresses.last = 0x0a000001;  // 10.0.0.1, built by hand
  EXPECT_EQ(fails(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(WriteRoutes(Routing(10, "127.0.0.1"), [](std::string_view) {
                 return absl::DataLossError("disk full");
               }).ok());
}

TEST(WriteZone, AnMxAndAnAddressForEveryDomain) {
  RoutingOptions o = Routing(300, "127.0.2.10-127.0.2.19");
  o.ttl = 600;
  o.serial = 42;
  const std::string text = Collect([&](auto sink) { return WriteZone(o, sink); });
  const auto lines = Lines(text);
  std::map<std::string, std::string> mx, a;
  bool origin = false, soa = false, ns = false, ttl = false;
  for (const std::string& line : lines) {
    if (line.empty() || line[0] == ';') continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f[0] == "$ORIGIN") {
      origin = f.size() == 2 && f[1] == "test.";
    } else if (f[0] == "$TTL") {
      ttl = f.size() == 2 && f[1] == "600";
    } else if (f.size() >= 4 && f[2] == "SOA") {
      soa = f[0] == "@" && f.size() == 10 && f[5] == "42";
    } else if (f.size() >= 3 && f[2] == "NS") {
      ns = f[0] == "@";
    } else if (f.size() == 5 && f[2] == "MX") {
      EXPECT_EQ(f[3], "10") << line;
      EXPECT_TRUE(mx.emplace(f[0], f[4]).second) << "twice: " << line;
    } else if (f.size() == 4 && f[2] == "A") {
      EXPECT_TRUE(a.emplace(f[0], f[3]).second) << "twice: " << line;
    } else {
      ADD_FAILURE() << "unexpected line: " << line;
    }
  }
  EXPECT_TRUE(origin && soa && ns && ttl) << text.substr(0, 400);
  ASSERT_EQ(mx.size(), 300u);
  for (uint32_t i = 0; i < 300; ++i) {
    const std::string domain = DomainName(i);
    ASSERT_TRUE(domain.ends_with(".test")) << domain;
    const std::string label = domain.substr(0, domain.size() - 5);
    ASSERT_EQ(mx[label], "mx." + label) << label;
    EXPECT_EQ(a["mx." + label], absl::StrCat("127.0.2.", 10 + i % 10)) << label;
  }
  // 300 MX hosts, plus ns: every A record is on loopback.
  EXPECT_EQ(a.size(), 301u);
  for (const auto& [name, address] : a) {
    EXPECT_EQ(address.rfind("127.", 0), 0u) << name << " " << address;
  }
  o.ttl = 0;
  EXPECT_EQ(WriteZone(o, [](std::string_view) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kInvalidArgument);
  o.ttl = kMaxZoneTtl + 1;
  EXPECT_EQ(WriteZone(o, [](std::string_view) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kInvalidArgument);
}

// nsd's own checker, when it is installed (scripts/install-deps puts it there).
TEST_F(LogFollowerTest, ZoneLoadsInNsdCheckzone) {
  const char* checker = "/usr/sbin/nsd-checkzone";
  if (::access(checker, X_OK) != 0) GTEST_SKIP() << "no " << checker;
  RoutingOptions o = Routing(2000, "127.0.1.1-127.0.1.250");
  const std::string text = Collect([&](auto sink) { return WriteZone(o, sink); });
  const std::string zone = dir_ + "/test.zone";
  Append(text);  // into path_, then renamed: the fixture removes path_ only
  ASSERT_EQ(::rename(path_.c_str(), zone.c_str()), 0);
  const std::string command = absl::StrCat(checker, " test ", zone, " >/dev/null 2>&1");
  const int status = std::system(command.c_str());
  std::remove(zone.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  EXPECT_EQ(WEXITSTATUS(status), 0) << command;
}

// ---- /proc

TEST(Proc, ParsesStatPastAnOddCommandName) {
  // A command name may hold spaces and ")": fields are counted after the last ")".
  const std::string stat =
      "4242 (vol) ley d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 3 0 "
      "100 200000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
  auto ticks = ParseProcStatCpuTicks(stat);
  ASSERT_TRUE(ticks.ok()) << ticks.status();
  EXPECT_EQ(*ticks, 1234u + 567u);
  EXPECT_FALSE(ParseProcStatCpuTicks("4242 volleyd S 1").ok()) << "no parentheses";
  EXPECT_FALSE(ParseProcStatCpuTicks("4242 (volleyd) S 1 2 3").ok()) << "too short";
  EXPECT_FALSE(ParseProcStatCpuTicks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 5 0").ok()) << "utime";
}

TEST(Proc, ParsesStatusKb) {
  const std::string status =
      "Name:\tvolleyd\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
  auto hwm = ParseProcStatusKb(status, "VmHWM");
  ASSERT_TRUE(hwm.ok()) << hwm.status();
  EXPECT_EQ(*hwm, 51234u);
  EXPECT_EQ(*ParseProcStatusKb(status, "VmRSS"), 40000u);
  EXPECT_EQ(ParseProcStatusKb(status, "VmSwap").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseProcStatusKb(status, "Vm").status().code(), absl::StatusCode::kNotFound)
      << "a prefix of a field is not the field";
  EXPECT_FALSE(ParseProcStatusKb("VmHWM:\tlots kB\n", "VmHWM").ok());
}

TEST(Proc, ReadsThisProcess) {
  // Burn a little CPU so there is something to count.
  volatile uint64_t x = 0;
  for (uint64_t i = 0; i < 50'000'000; ++i) x = x + i;
  auto cpu = ReadCpuSeconds(::getpid());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_GT(*cpu, 0.0);
  auto hwm = ReadPeakRssKb(::getpid());
  ASSERT_TRUE(hwm.ok()) << hwm.status();
  EXPECT_GT(*hwm, 1000u) << "a test binary uses more than 1 MB";
  EXPECT_FALSE(ReadCpuSeconds(0).ok()) << "/proc/0 does not exist";
}

// ---- Report

Report SampleReport() {
  Report r;
  r.job = "load-\"1\"";
  r.recipients = 20000;
  r.domains = 100;
  r.size = 1024;
  r.message_bytes = 1000;
  r.with_outcome = 20000;
  r.counts.delivered = 19990;
  r.counts.bounced = 10;
  r.messages = 200;
  r.records = 20005;
  r.elapsed_seconds = 4.0;
  r.generate_seconds = 0.125;
  LatencyHistogram h;
  for (int ms = 1; ms <= 1000; ++ms) h.Add(absl::Milliseconds(ms));
  FillLatency(h, &r);
  return r;
}

simdjson::dom::element ParseJson(simdjson::dom::parser& parser, const std::string& text) {
  simdjson::dom::element doc;
  const auto err = parser.parse(text).get(doc);
  EXPECT_FALSE(err) << simdjson::error_message(err) << ": " << text;
  return doc;
}

double Double(simdjson::dom::element doc, const char* key) {
  double v = -1;
  simdjson::dom::element e;
  EXPECT_FALSE(doc[key].get(e)) << key;
  if (e.is_int64()) return static_cast<double>(e.get_int64().value());
  EXPECT_FALSE(e.get_double().get(v)) << key;
  return v;
}

TEST(Report, JsonHasTheOldAndTheNewKeys) {
  const Report r = SampleReport();
  const std::string text = ReportJson(r);
  ASSERT_EQ(text.back(), '\n');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << "one line";
  simdjson::dom::parser parser;
  simdjson::dom::element doc = ParseJson(parser, text);
  std::string_view job;
  ASSERT_FALSE(doc["job"].get(job));
  EXPECT_EQ(job, "load-\"1\"");
  // What bench/intake_bench.sh reads.
  EXPECT_EQ(Double(doc, "recipients"), 20000);
  EXPECT_EQ(Double(doc, "delivered"), 19990);
  EXPECT_EQ(Double(doc, "deferred"), 0);
  EXPECT_EQ(Double(doc, "bounced"), 10);
  EXPECT_EQ(Double(doc, "elapsed_seconds"), 4.0);
  EXPECT_EQ(Double(doc, "messages_per_second"), 4997.5);
  // Recipients and messages apart (issue 21).
  EXPECT_EQ(Double(doc, "recipients_per_second"), 4997.5);
  EXPECT_EQ(Double(doc, "messages_delivered"), 200);
  EXPECT_EQ(Double(doc, "messages_delivered_per_second"), 50);
  for (const char* key : {"domains", "size", "with_outcome", "missing", "expired", "other",
                          "records", "malformed_log_lines", "timed_out"}) {
    EXPECT_FALSE(doc[key].error()) << "key " << key;
  }
  EXPECT_EQ(Double(doc, "message_bytes"), 1000);
  EXPECT_NEAR(Double(doc, "megabytes_per_second"), 4.9975, 0.001);  // 19990 x 1000 B / 4 s
  EXPECT_EQ(Double(doc, "generate_seconds"), 0.125);
  EXPECT_EQ(Double(doc, "latency_samples"), 1000);
  EXPECT_NEAR(Double(doc, "latency_p50_seconds"), 0.5, 0.5 / 128 + 0.001);
  EXPECT_NEAR(Double(doc, "latency_p99_seconds"), 0.99, 0.99 / 128 + 0.001);
  EXPECT_EQ(Double(doc, "latency_max_seconds"), 1.0);
  EXPECT_NEAR(Double(doc, "latency_mean_seconds"), 0.5005, 0.001);
  for (const char* key : {"volleyd_pid", "volleyd_cpu_seconds", "volleyd_cpu_seconds_per_10k",
                          "volleyd_peak_rss_kb"}) {
    EXPECT_TRUE(doc[key].is_null()) << key << " is null without --volleyd-pid";
  }
  EXPECT_TRUE(doc["refused"].error()) << "only when refused";
  EXPECT_EQ(doc["timed_out"].get_bool().value(), false);
}

TEST(Report, JsonWithVolleydAndRefusal) {
  Report r = SampleReport();
  r.volleyd_pid = 4242;
  r.volleyd_cpu_seconds = 3.998;
  r.volleyd_peak_rss_kb = 51234;
  r.refused = "line 3: to: \"x\" is not an address";
  simdjson::dom::parser parser;
  simdjson::dom::element doc = ParseJson(parser, ReportJson(r));
  EXPECT_EQ(Double(doc, "volleyd_pid"), 4242);
  EXPECT_EQ(Double(doc, "volleyd_cpu_seconds"), 3.998);
  EXPECT_EQ(Double(doc, "volleyd_cpu_seconds_per_10k"), 2.0);  // 3.998 s / 19990 x 10^4
  EXPECT_EQ(Double(doc, "volleyd_peak_rss_kb"), 51234);
  std::string_view refused;
  ASSERT_FALSE(doc["refused"].get(refused));
  EXPECT_EQ(refused, r.refused);

  // No deliveries: rates are zero and per-10k and latencies are null, never NaN.
  Report none;
  none.job = "j";
  none.recipients = 5;
  none.volleyd_pid = 1;
  none.volleyd_cpu_seconds = 0.5;
  const std::string text = ReportJson(none);
  EXPECT_EQ(text.find("nan"), std::string::npos) << text;
  EXPECT_EQ(text.find("inf"), std::string::npos) << text;
  doc = ParseJson(parser, text);
  EXPECT_EQ(Double(doc, "messages_per_second"), 0);
  EXPECT_EQ(Double(doc, "recipients_per_second"), 0);
  EXPECT_TRUE(doc["messages_delivered"].is_null()) << "not counted: unknown, not 0";
  EXPECT_TRUE(doc["messages_delivered_per_second"].is_null());
  EXPECT_TRUE(doc["volleyd_cpu_seconds_per_10k"].is_null());
  EXPECT_TRUE(doc["latency_p50_seconds"].is_null());
  EXPECT_TRUE(doc["volleyd_peak_rss_kb"].is_null());
}

TEST(Report, TextCountsRecipientsAndMessagesUnderTheirNames) {
  Report r = SampleReport();
  r.volleyd_pid = 4242;
  r.volleyd_cpu_seconds = 3.998;
  r.volleyd_peak_rss_kb = 51200;
  const auto lines = Lines(ReportText(r));
  ASSERT_GE(lines.size(), 6u);
  EXPECT_EQ(lines[0], "delivered 19990  deferred 0  bounced 10  expired 0  (of 20000 recipients)");
  EXPECT_EQ(lines[1], "messages delivered 200 (SMTP transactions; a shared message is one)");
  EXPECT_EQ(lines[2], "elapsed 4.000 s (drop to last outcome), 4997.5 recipients/s, 50.0 messages/s");
  EXPECT_EQ(lines[3], "throughput 4997.5 recipients/s, 5.00 MB/s at 1000 bytes per recipient");
  EXPECT_EQ(lines[4].rfind("latency (drop to delivered): p50 0.50", 0), 0u) << lines[4];
  EXPECT_EQ(lines[5], "volleyd (pid 4242): 4.00 CPU s, 2.000 CPU s per 10,000 recipients, "
                      "peak RSS 50.0 MiB");
  r.messages.reset();
  EXPECT_EQ(Lines(ReportText(r))[1],
            "messages delivered unknown (delivery records without txn)");
}

TEST(Progress, BarRateAndEta) {
  const std::string half = ProgressLine(500, 1000, 450, absl::Seconds(10));
  EXPECT_EQ(half, "[########........]  50.0%  delivered 450/1000  45 rcpt/s  other 50  ETA 0:10")
      << half;
  EXPECT_EQ(ProgressLine(0, 1000, 0, absl::Seconds(1)),
            "[................]   0.0%  delivered 0/1000  0 rcpt/s  ETA --");
  EXPECT_EQ(ProgressLine(1000, 1000, 1000, absl::Seconds(3725)),
            "[################] 100.0%  delivered 1000/1000  0 rcpt/s  done in 1:02:05");
  EXPECT_LE(ProgressLine(999999, 1000000, 999999, absl::Seconds(100)).size(), 80u)
      << "fits a terminal line for a million recipients";
}

}  // namespace
}  // namespace volley::load
