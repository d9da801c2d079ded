// Tests of the delivery log's records on their own: the status names, the exact
// text FormatDeliveryRecord writes (docs/delivery-log.md is a contract), and
// ParseDeliveryRecord as its inverse: format then parse gives the same record,
// and every kind of bad line is refused with the field it is about.
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/delivery_log.h"
#include "metrics/delivery_status.h"

namespace volley::metrics {
namespace {

using ::testing::HasSubstr;

TEST(DeliveryStatus, EveryStatusHasOneNameAndBack) {
  const std::vector<std::string_view> want = {
      "delivered",     "deferred",      "bounced",    "expired",      "cancelled", "suppressed",
      "bounced_async", "delayed_async", "complained", "unsubscribed", "unmatched"};
  ASSERT_EQ(want.size(), kDeliveryStatuses);
  for (size_t i = 0; i < kDeliveryStatuses; ++i) {
    const auto s = static_cast<DeliveryStatus>(i);
    EXPECT_EQ(DeliveryStatusName(s), want[i]);
    absl::StatusOr<DeliveryStatus> back = ParseDeliveryStatus(want[i]);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, s);
  }
}

TEST(DeliveryStatus, OutcomesComeFirstAndEventsAreNotOutcomes) {
  for (size_t i = 0; i < kDeliveryStatuses; ++i) {
    EXPECT_EQ(IsFeedbackEvent(static_cast<DeliveryStatus>(i)), i >= kDeliveryOutcomes) << i;
  }
  EXPECT_FALSE(IsFeedbackEvent(DeliveryStatus::kSuppressed));
  EXPECT_TRUE(IsFeedbackEvent(DeliveryStatus::kBouncedAsync));
}

TEST(DeliveryStatus, AnUnknownNameIsAnErrorNotABounce) {
  for (std::string_view name : {"lost", "Delivered", "", "bounced ", "deferred\n"}) {
    absl::StatusOr<DeliveryStatus> s = ParseDeliveryStatus(name);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()),
                HasSubstr("\"" + std::string(name) + "\""));
  }
}

// The record of docs/delivery-log.md's example.
OwnedDeliveryRecord DocExample() {
  OwnedDeliveryRecord r;
  r.ts = absl::FromUnixMillis(1795873501123);  // 2026-11-28T13:45:01.123Z
  r.job = "spring-sale";
  r.line = 2;
  r.rcpt = "ann@d0001.test";
  r.status = DeliveryStatus::kDelivered;
  r.code = 250;
  r.enhanced = "2.0.0";
  r.response = "Ok: queued";
  r.host = "127.0.0.1";
  r.port = 2525;
  r.attempt = 1;
  r.node = "node-a";
  return r;
}

std::string Format(const OwnedDeliveryRecord& r) {
  std::string out;
  FormatDeliveryRecord(ViewOf(r), &out);
  return out;
}

TEST(FormatDeliveryRecord, WritesTheDocumentedLine) {
  EXPECT_EQ(Format(DocExample()),
            R"({"ts":"2026-11-28T13:45:01.123Z","job":"spring-sale","line":2,)"
            R"("rcpt":"ann@d0001.test","status":"delivered","code":250,"enhanced":"2.0.0",)"
            R"("response":"Ok: queued","host":"127.0.0.1","port":2525,"attempt":1,)"
            R"("node":"node-a"})"
            "\n");
  OwnedDeliveryRecord r = DocExample();
  r.status = DeliveryStatus::kDeferred;
  r.klass = "rate_limited";
  r.code = 451;
  r.backoff = 2;
  r.mx = "mx1.d0001.test";
  r.source = "pool-a";
  r.tls_version = "TLSv1.3";
  r.tls_cipher = "TLS_AES_256_GCM_SHA384";
  EXPECT_EQ(Format(r),
            R"({"ts":"2026-11-28T13:45:01.123Z","job":"spring-sale","line":2,)"
            R"("rcpt":"ann@d0001.test","status":"deferred","class":"rate_limited","code":451,)"
            R"("enhanced":"2.0.0","response":"Ok: queued","host":"127.0.0.1","port":2525,)"
            R"("attempt":1,"node":"node-a","backoff":2,"mx":"mx1.d0001.test","source":"pool-a",)"
            R"("tls_version":"TLSv1.3","tls_cipher":"TLS_AES_256_GCM_SHA384"})"
            "\n");
}

std::vector<OwnedDeliveryRecord> RoundTripCases() {
  std::vector<OwnedDeliveryRecord> cases;
  // Every status, with the fields that are left out when empty or 0.
  for (size_t i = 0; i < kDeliveryStatuses; ++i) {
    OwnedDeliveryRecord r = DocExample();
    r.status = static_cast<DeliveryStatus>(i);
    cases.push_back(r);
  }
  // A feedback event with every field of its own.
  OwnedDeliveryRecord event = DocExample();
  event.status = DeliveryStatus::kBouncedAsync;
  event.klass = "invalid_recipient";
  event.code = 550;
  event.enhanced = "5.1.1";
  event.response = "smtp; 550 5.1.1 <ann@d0001.test>: Recipient address rejected";
  event.host = "";
  event.port = 0;
  event.attempt = 0;
  event.via = "dsn";
  event.matched_by = "verp";
  event.reporting_mta = "mx.d0001.test";
  event.remote_mta = "mx2.d0001.test";
  cases.push_back(event);
  OwnedDeliveryRecord complaint = event;
  complaint.status = DeliveryStatus::kComplained;
  complaint.via = "arf";
  complaint.feedback_type = "abuse";
  complaint.matched_by = "trace";
  cases.push_back(complaint);
  // Nothing tried: code 0, no host, attempt 0, empty strings.
  OwnedDeliveryRecord untried = DocExample();
  untried.status = DeliveryStatus::kCancelled;
  untried.code = 0;
  untried.enhanced = "";
  untried.host = "";
  untried.port = 0;
  untried.attempt = 0;
  untried.rcpt = "";
  cases.push_back(untried);
  // Every optional field.
  OwnedDeliveryRecord full = DocExample();
  full.status = DeliveryStatus::kBounced;
  full.klass = "invalid_recipient";
  full.code = 550;
  full.enhanced = "5.1.1";
  full.backoff = 4;
  full.mx = "mx.d0001.test";
  full.source = "b";
  full.tls_version = "TLSv1.2";
  full.tls_cipher = "ECDHE-RSA-AES128-GCM-SHA256";
  full.txn = "mq3k1x2a.1.4127";
  cases.push_back(full);
  // An expiry untried that names the reply its last attempt got.
  OwnedDeliveryRecord expired = DocExample();
  expired.status = DeliveryStatus::kExpired;
  expired.klass = "expired";
  expired.code = 0;
  expired.enhanced = "5.4.7";
  expired.response = "message expired after 3 attempts";
  expired.host = "";
  expired.port = 0;
  expired.attempt = 3;
  expired.last_reply = "451 4.7.1 Greylisted, please try again later";
  expired.last_class = "rate_limited";
  cases.push_back(expired);
  // What remote servers and job files may put in a string: quotes, backslashes,
  // a multi-line reply, every control character, and UTF-8 (also the two
  // characters that end a line in JavaScript).
  OwnedDeliveryRecord escapes = DocExample();
  escapes.job = "j\"1\\";
  escapes.rcpt = "\"a b\"@d.test";
  std::string controls;
  for (int c = 1; c < 0x20; ++c) controls.push_back(static_cast<char>(c));
  escapes.response = "550-5.1.1 line one\n550 5.1.1 \"two\"\t\\ " + controls + "\x7f";
  escapes.mx = "m\xc3\xbc.test \xe2\x80\xa8\xe2\x80\xa9 \xf0\x9f\x93\xa8";
  escapes.klass = "a/b";
  cases.push_back(escapes);
  // Extremes of each number, and a time without milliseconds and one far off.
  OwnedDeliveryRecord big = DocExample();
  big.line = UINT32_MAX;
  big.attempt = UINT32_MAX;
  big.port = UINT16_MAX;
  big.code = 999;
  big.ts = absl::FromUnixSeconds(4102444800);  // 2100-01-01
  cases.push_back(big);
  // Written by a volleyd before the node field (or a writer outside volleyd).
  OwnedDeliveryRecord nameless = DocExample();
  nameless.node = "";
  cases.push_back(nameless);
  OwnedDeliveryRecord epoch = DocExample();
  epoch.ts = absl::UnixEpoch();
  cases.push_back(epoch);
  return cases;
}

TEST(ParseDeliveryRecord, IsTheInverseOfFormat) {
  for (const OwnedDeliveryRecord& want : RoundTripCases()) {
    const std::string line = Format(want);
    absl::StatusOr<OwnedDeliveryRecord> got = ParseDeliveryRecord(line);
    ASSERT_TRUE(got.ok()) << got.status() << "\n" << line;
    EXPECT_EQ(*got, want) << line;
    // And back: the same bytes, with or without the newline.
    EXPECT_EQ(Format(*got), line);
    absl::StatusOr<OwnedDeliveryRecord> bare =
        ParseDeliveryRecord(std::string_view(line).substr(0, line.size() - 1));
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_EQ(*bare, want);
  }
}

TEST(ParseDeliveryRecord, TakesKeysInAnyOrderAndSkipsUnknownOnes) {
  absl::StatusOr<OwnedDeliveryRecord> r = ParseDeliveryRecord(
      R"({"attempt":3,"port":25,"host":"192.0.2.1","response":"later","enhanced":"4.2.1",)"
      R"("code":450,"class":"other","status":"deferred","rcpt":"a@b.test","line":7,)"
      R"("dkim":{"selector":["s1",null]},"job":"j\u00e9","ts":"2026-11-28T13:45:01.5Z",)"
      R"("future":1.5e3})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job, "j\xc3\xa9");
  EXPECT_EQ(r->line, 7u);
  EXPECT_EQ(r->status, DeliveryStatus::kDeferred);
  EXPECT_EQ(r->klass, "other");
  EXPECT_EQ(r->code, 450);
  EXPECT_EQ(r->attempt, 3u);
  EXPECT_EQ(r->port, 25);
  EXPECT_EQ(r->ts, absl::FromUnixMillis(1795873501500));
  EXPECT_EQ(r->mx, "");
  EXPECT_EQ(r->backoff, 0);
}

struct BadLine {
  std::string line;
  std::string want;  // in the error message
};

// A record of the example with `field`'s "key":value replaced by `replacement`.
std::string Edited(std::string_view key_and_value, std::string_view replacement) {
  std::string line = Format(DocExample());
  const size_t at = line.find(key_and_value);
  EXPECT_NE(at, std::string::npos) << key_and_value;
  line.replace(at, key_and_value.size(), replacement);
  return line;
}

TEST(ParseDeliveryRecord, RefusesBadLinesNamingTheField) {
  const std::string good = Format(DocExample());
  const std::vector<BadLine> cases = {
      // Not one JSON object.
      {"", "not one JSON object"},
      {"\n", "not one JSON object"},
      {"not json at all", "not one JSON object"},
      {"[1,2]", "not one JSON object"},
      {"\"delivered\"", "not one JSON object"},
      {good.substr(0, good.size() / 2), "not one JSON object"},  // torn by a crash
      // ...and glued to the next record.
      {good.substr(0, 40) + good, "not one JSON object"},
      {good.substr(0, 60) + good, "\"line\": not an unsigned integer"},
      {good.substr(0, good.size() - 1) + good, "not one JSON object"},
      {good.substr(0, good.size() - 1) + "}", "not one JSON object"},
      {"{\"job\":\"j1\",\"status\":\"delivered\"}{\"job\":\"j1\"}", "not one JSON object"},
      // A field missing: each of those every record has.
      {Edited(R"("ts":"2026-11-28T13:45:01.123Z",)", ""), "\"ts\": missing"},
      {Edited(R"("job":"spring-sale",)", ""), "\"job\": missing"},
      {Edited(R"("line":2,)", ""), "\"line\": missing"},
      {Edited(R"("rcpt":"ann@d0001.test",)", ""), "\"rcpt\": missing"},
      {Edited(R"("status":"delivered",)", ""), "\"status\": missing"},
      {Edited(R"("code":250,)", ""), "\"code\": missing"},
      {Edited(R"("enhanced":"2.0.0",)", ""), "\"enhanced\": missing"},
      {Edited(R"("response":"Ok: queued",)", ""), "\"response\": missing"},
      {Edited(R"("host":"127.0.0.1",)", ""), "\"host\": missing"},
      {Edited(R"("port":2525,)", ""), "\"port\": missing"},
      {Edited(R"(,"attempt":1)", ""), "\"attempt\": missing"},
      // A field of the wrong type or out of range.
      {Edited(R"("status":"delivered")", R"("status":"lost")"),
       "\"status\": unknown delivery status \"lost\""},
      {Edited(R"("status":"delivered")", R"("status":"Delivered")"), "\"status\": unknown"},
      {Edited(R"("status":"delivered")", R"("status":1)"), "\"status\": not a string"},
      {Edited(R"("job":"spring-sale")", R"("job":null)"), "\"job\": not a string"},
      {Edited(R"("rcpt":"ann@d0001.test")", R"("rcpt":["a"])"), "\"rcpt\": not a string"},
      {Edited(R"("line":2)", R"("line":"2")"), "\"line\": not an unsigned integer"},
      {Edited(R"("line":2)", R"("line":-2)"), "\"line\": not an unsigned integer"},
      {Edited(R"("line":2)", R"("line":2.5)"), "\"line\": not an unsigned integer"},
      {Edited(R"("line":2)", R"("line":4294967296)"), "\"line\": 4294967296 is over 4294967295"},
      {Edited(R"("port":2525)", R"("port":65536)"), "\"port\": 65536 is over 65535"},
      {Edited(R"("code":250)", R"("code":1000)"), "\"code\": 1000 is over 999"},
      {Edited(R"("attempt":1)", R"("attempt":true)"), "\"attempt\": not an unsigned integer"},
      {Edited(R"("ts":"2026-11-28T13:45:01.123Z")", R"("ts":"yesterday")"),
       "\"ts\": \"yesterday\" is not an RFC 3339 UTC time"},
      {Edited(R"("ts":"2026-11-28T13:45:01.123Z")", R"("ts":"2026-11-28 13:45:01")"),
       "\"ts\": "},
      {Edited(R"("host":"127.0.0.1")", R"("host":"127.0.0.1","host":"::1")"),
       "\"host\": appears twice"},
      {Edited(R"(,"attempt":1)", R"(,"attempt":1,"backoff":-1)"),
       "\"backoff\": not an unsigned integer"},
      {Edited(R"(,"attempt":1)", R"(,"attempt":1,"class":false)"), "\"class\": not a string"},
  };
  for (const BadLine& c : cases) {
    absl::StatusOr<OwnedDeliveryRecord> r = ParseDeliveryRecord(c.line);
    ASSERT_FALSE(r.ok()) << c.line;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.want)) << c.line;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("delivery record: ")) << c.line;
  }
}

TEST(ParseDeliveryRecord, ReadsLinesOneAfterAnother) {
  // The parser is kept from one call to the next: a bad line leaves nothing
  // behind for the good one after it.
  const std::string good = Format(DocExample());
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(ParseDeliveryRecord(good.substr(0, 50)).ok());
    absl::StatusOr<OwnedDeliveryRecord> r = ParseDeliveryRecord(good);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, DocExample());
  }
}

TEST(FormatDeliveryRecord, WritesTheTimeAsAbslFormatTimeDoes) {
  // The record's "ts" comes from a per-second prefix kept between records
  // plus the milliseconds: it must read exactly as the formatter it stands in
  // for, at every edge (a second's first and last millisecond and nanosecond,
  // the clock going back, years at the ends of the four-digit range, and
  // times outside it that go the slow way).
  const absl::Time doc = absl::FromUnixMillis(1795873501123);
  const absl::Time times[] = {
      doc,
      doc,                                   // the same second again: the kept prefix
      doc + absl::Milliseconds(876),         // its last millisecond
      doc + absl::Milliseconds(877),         // the next second
      doc + absl::Milliseconds(877) - absl::Nanoseconds(1),  // back, rounds down to .999
      doc - absl::Hours(24 * 400),           // back past a leap day
      absl::FromCivil(absl::CivilSecond(2028, 2, 29, 23, 59, 59), absl::UTCTimeZone()),
      absl::UnixEpoch(),
      absl::UnixEpoch() + absl::Nanoseconds(999999),
      absl::UnixEpoch() - absl::Nanoseconds(1),  // before 1970: the slow way
      absl::FromUnixSeconds(-62135596800),       // year 1
      absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59), absl::UTCTimeZone()) +
          absl::Milliseconds(999),
      absl::FromCivil(absl::CivilSecond(10000, 1, 1, 0, 0, 0), absl::UTCTimeZone()),
      absl::InfiniteFuture(),
      absl::InfinitePast(),
      doc,
  };
  for (const absl::Time t : times) {
    OwnedDeliveryRecord r = DocExample();
    r.ts = t;
    const std::string line = Format(r);
    const std::string want =
        absl::StrCat(R"({"ts":")",
                     absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone()), "\",");
    EXPECT_EQ(line.substr(0, want.size()), want) << "at " << absl::FormatTime(t);
  }
}

TEST(FormatDeliveryRecord, AppendsToWhatIsThere) {
  // Records go one after another into the shard's buffer.
  std::string out = "before\n";
  FormatDeliveryRecord(ViewOf(DocExample()), &out);
  FormatDeliveryRecord(ViewOf(DocExample()), &out);
  EXPECT_EQ(out, "before\n" + Format(DocExample()) + Format(DocExample()));
}

}  // namespace
}  // namespace volley::metrics
