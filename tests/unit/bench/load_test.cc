#include "bench/load.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

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

TEST(ParseLogRecord, ReadsTheFieldsInAnyOrder) {
  auto r = ParseLogRecord(
      R"({"status":"deferred","line":7,"job":"j\"1","rcpt":"a@b.test","ts":"2026-11-28T13:45:01.5Z","code":451})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job, "j\"1");
  EXPECT_EQ(r->line, 7);
  EXPECT_EQ(r->status, "deferred");
  EXPECT_EQ(r->rcpt, "a@b.test");
  ASSERT_TRUE(r->ts.has_value());
  EXPECT_EQ(*r->ts, absl::FromUnixMillis(1795873501500));
  EXPECT_FALSE(ParseLogRecord(R"({"job":"j1","status":"delivered","line":2)").ok());
  EXPECT_FALSE(ParseLogRecord(R"({"job":"j1","status":"deliv{"job":"j1","status":"delivered"})").ok());
  EXPECT_FALSE(ParseLogRecord(R"({"job":"j1","status":"delivered"}{"job":"j1"})").ok());
  EXPECT_FALSE(ParseLogRecord(R"([1,2])").ok());
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
  EXPECT_EQ(t.latest(2), Outcome::kDelivered);
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
  EXPECT_EQ(t.latest(2), Outcome::kDelivered);
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

}  // namespace
}  // namespace volley::load
