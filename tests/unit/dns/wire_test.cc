#include "dns/wire.h"

#include <arpa/inet.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint16_t kA = 1;
constexpr uint16_t kNs = 2;
constexpr uint16_t kCname = 5;
constexpr uint16_t kSoa = 6;
constexpr uint16_t kMx = 15;
constexpr uint16_t kAaaa = 28;
constexpr uint16_t kOpt = 41;
// QR, RD, RA: what a recursive resolver sets in a response.
constexpr uint16_t kResponseFlags = 0x8180;

// Msg - a DNS message written octet by octet, for tests only.
//
// Names are written from a small syntax: "a.test" is labels and the root, "." the
// root alone, "@12" a compression pointer to offset 12, and "mx1.@12" labels then a
// pointer. Records take care of their own RDLENGTH.
class Msg {
 public:
  // A response header (flags with the RCODE in the low bits) and the question.
  static Msg Response(std::string_view qname, uint16_t qtype, uint16_t flags, uint16_t an,
                      uint16_t ns = 0, uint16_t ar = 0) {
    Msg m;
    m.U16(0x1234).U16(flags).U16(1).U16(an).U16(ns).U16(ar);
    m.Name(qname).U16(qtype).U16(1);
    return m;
  }

  Msg& U8(uint8_t v) {
    bytes.push_back(v);
    return *this;
  }
  Msg& U16(uint16_t v) { return U8(static_cast<uint8_t>(v >> 8)).U8(static_cast<uint8_t>(v)); }
  Msg& U32(uint32_t v) { return U16(static_cast<uint16_t>(v >> 16)).U16(static_cast<uint16_t>(v)); }
  Msg& Raw(std::string_view s) {
    for (char c : s) U8(static_cast<uint8_t>(c));
    return *this;
  }

  Msg& Name(std::string_view name) {
    if (name == ".") return U8(0);
    while (!name.empty()) {
      if (name[0] == '@')
        return U16(static_cast<uint16_t>(0xc000 | std::stoi(std::string(name.substr(1)))));
      const size_t dot = std::min(name.find('.'), name.size());
      U8(static_cast<uint8_t>(dot)).Raw(name.substr(0, dot));
      name.remove_prefix(std::min(dot + 1, name.size()));
    }
    return U8(0);
  }

  // A record whose RDATA is written by `rdata` (RDLENGTH computed).
  template <typename F>
  Msg& Rr(std::string_view owner, uint16_t type, uint32_t ttl, F rdata, uint16_t rclass = 1) {
    Name(owner).U16(type).U16(rclass).U32(ttl);
    const size_t at = bytes.size();
    U16(0);
    rdata(*this);
    const size_t len = bytes.size() - at - 2;
    bytes[at] = static_cast<uint8_t>(len >> 8);
    bytes[at + 1] = static_cast<uint8_t>(len);
    return *this;
  }
  Msg& A(std::string_view owner, uint32_t ttl, const char* ip) {
    in_addr a;
    EXPECT_EQ(inet_pton(AF_INET, ip, &a), 1) << ip;
    return Rr(owner, kA, ttl, [&](Msg& m) {
      for (size_t i = 0; i < 4; ++i) m.U8(reinterpret_cast<const uint8_t*>(&a)[i]);
    });
  }
  Msg& Aaaa(std::string_view owner, uint32_t ttl, const char* ip) {
    in6_addr a;
    EXPECT_EQ(inet_pton(AF_INET6, ip, &a), 1) << ip;
    return Rr(owner, kAaaa, ttl, [&](Msg& m) {
      for (size_t i = 0; i < 16; ++i) m.U8(a.s6_addr[i]);
    });
  }
  Msg& Mx(std::string_view owner, uint32_t ttl, uint16_t pref, std::string_view exchange) {
    return Rr(owner, kMx, ttl, [&](Msg& m) { m.U16(pref).Name(exchange); });
  }
  Msg& Cname(std::string_view owner, uint32_t ttl, std::string_view target) {
    return Rr(owner, kCname, ttl, [&](Msg& m) { m.Name(target); });
  }
  Msg& Soa(std::string_view owner, uint32_t ttl, uint32_t minimum) {
    return Rr(owner, kSoa, ttl, [&](Msg& m) {
      m.Name("ns.test").Name("hostmaster.test").U32(2024010101).U32(7200).U32(900).U32(1209600);
      m.U32(minimum);
    });
  }

  // EDNS0's OPT record: CLASS the payload size, TTL the extended RCODE and flags.
  Msg& Opt(uint32_t ttl) {
    auto no_options = [](Msg&) {};
    return Rr(".", kOpt, ttl, no_options, kEdnsPayloadSize);
  }

  size_t size() const { return bytes.size(); }
  absl::StatusOr<ParsedResponse> Parse(std::string_view name, RrType type) const {
    return ParseResponse(bytes, name, type);
  }

  std::vector<uint8_t> bytes;
};

std::vector<std::string> Ips(const DnsAnswer& a) {
  std::vector<std::string> out;
  for (const IpAddress& ip : a.addresses) out.push_back(ip.ToString());
  return out;
}

// The error's message, or "" when there was none (so HasSubstr fails on success).
template <typename T>
std::string Error(const absl::StatusOr<T>& r) {
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return std::string(base::StdSv(r.status().message()));
}

// --- EncodeQuery ---

TEST(EncodeQueryTest, ExactBytes) {
  absl::StatusOr<std::string> q = EncodeQuery("Mail.A.Test.", RrType::kMx, 0xbeef);
  ASSERT_TRUE(q.ok()) << q.status();
  const std::string want(
      "\xbe\xef"          // id
      "\x01\x00"          // flags: RD only (QR clear, opcode 0)
      "\x00\x01"          // QDCOUNT
      "\x00\x00\x00\x00"  // ANCOUNT, NSCOUNT
      "\x00\x01"          // ARCOUNT: the OPT record
      "\x04mail\x01"
      "a\x04test\x00"     // lowercase, no final dot
      "\x00\x0f\x00\x01"  // MX, IN
      "\x00"              // OPT: root owner
      "\x00\x29"          // TYPE 41
      "\x04\xd0"          // CLASS: payload size 1232
      "\x00\x00\x00\x00"  // TTL: extended RCODE 0, version 0, DO clear
      "\x00\x00",         // RDLENGTH 0
      12 + 13 + 4 + 11);
  EXPECT_EQ(*q, want);
  EXPECT_EQ(kEdnsPayloadSize, 1232);
}

TEST(EncodeQueryTest, TypesAndId) {
  absl::StatusOr<std::string> a = EncodeQuery("a.test", RrType::kA, 7);
  absl::StatusOr<std::string> aaaa = EncodeQuery("a.test", RrType::kAaaa, 0);
  ASSERT_TRUE(a.ok() && aaaa.ok());
  EXPECT_EQ(a->substr(0, 2), std::string("\x00\x07", 2));
  EXPECT_EQ(a->substr(12 + 8, 4), std::string("\x00\x01\x00\x01", 4));
  EXPECT_EQ(aaaa->substr(12 + 8, 4), std::string("\x00\x1c\x00\x01", 4));
}

TEST(EncodeQueryTest, RefusesInvalidNames) {
  for (std::string_view bad :
       {"", ".", "a..test", "-a.test", "a_b.test", "a.test..", "a b.test", "\xc3\xa9.test"}) {
    EXPECT_THAT(Error(EncodeQuery(bad, RrType::kMx, 0)), HasSubstr("not a valid host name")) << bad;
  }
  EXPECT_FALSE(EncodeQuery(std::string(64, 'a') + ".test", RrType::kA, 0).ok());
  EXPECT_TRUE(EncodeQuery(std::string(63, 'a') + ".test", RrType::kA, 0).ok());
  EXPECT_FALSE(EncodeQuery("a.test", static_cast<RrType>(16), 0).ok());  // TXT: not ours
}

// --- ParseResponse: answers ---

TEST(ParseResponseTest, MxWithCompressionTtlIsMinimum) {
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 2);
  // Offset 12 is the question name; "mx1.@12" is mx1.a.test.
  m.Mx("@12", 3600, 10, "mx1.@12");
  const size_t mx2 = m.size() + 12 + 2;  // the second exchange, written after the fixed fields
  m.Mx("@12", 300, 20, "mx2.@12");
  ASSERT_EQ(m.bytes[mx2], 3);
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rcode, 0);
  EXPECT_FALSE(r->truncated);
  EXPECT_EQ(r->answer.kind, AnswerKind::kOk);
  EXPECT_THAT(r->answer.mx, ElementsAre(MxRecord{10, "mx1.a.test"}, MxRecord{20, "mx2.a.test"}));
  EXPECT_EQ(r->answer.ttl, 300u);
  EXPECT_THAT(r->cnames, IsEmpty());
  EXPECT_EQ(r->cname_target, "");
}

TEST(ParseResponseTest, MxExchangePointingIntoAnEarlierRdata) {
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 2);
  const size_t first_exchange = m.size() + 12 + 2;
  m.Mx("@12", 60, 10, "mx.other.test");
  m.Mx("@12", 60, 20, absl::StrCat("backup.@", first_exchange + 3));  // other.test
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->answer.mx,
              ElementsAre(MxRecord{10, "mx.other.test"}, MxRecord{20, "backup.other.test"}));
}

TEST(ParseResponseTest, AAndAaaa) {
  Msg a = Msg::Response("mx.a.test", kA, kResponseFlags, 3);
  a.A("@12", 100, "192.0.2.1").A("@12", 50, "192.0.2.2").Aaaa("@12", 10, "2001:db8::1");
  absl::StatusOr<ParsedResponse> r = a.Parse("mx.a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kOk);
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.1", "192.0.2.2"));  // the AAAA is ignored
  EXPECT_EQ(r->answer.ttl, 50u);
  EXPECT_THAT(r->answer.mx, IsEmpty());

  Msg six = Msg::Response("mx.a.test", kAaaa, kResponseFlags, 2);
  six.Aaaa("@12", 900, "2001:db8::1").Aaaa("@12", 800, "2001:db8::2:1");
  r = six.Parse("mx.a.test", RrType::kAaaa);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kOk);
  EXPECT_THAT(Ips(r->answer), ElementsAre("2001:db8::1", "2001:db8::2:1"));
  EXPECT_EQ(r->answer.addresses[0].family, AF_INET6);
  EXPECT_EQ(r->answer.ttl, 800u);
}

TEST(ParseResponseTest, TtlWithTopBitSetCountsAsZero) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 2);
  m.A("@12", 300, "192.0.2.1").A("@12", 0x80000005u, "192.0.2.2");
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.ttl, 0u);
}

TEST(ParseResponseTest, CnameChainFollowedTtlIncludesCname) {
  Msg m = Msg::Response("www.a.test", kA, kResponseFlags, 3);
  m.Cname("@12", 30, "host.b.test");
  const size_t host = m.size() - 13;  // "host.b.test" on the wire: 13 octets
  m.Cname(absl::StrCat("@", host), 600, "final.c.test");
  const size_t final_name = m.size() - 14;
  m.A(absl::StrCat("@", final_name), 300, "192.0.2.7");
  absl::StatusOr<ParsedResponse> r = m.Parse("www.a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kOk);
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.7"));
  EXPECT_EQ(r->answer.ttl, 30u);  // the first CNAME's
  EXPECT_THAT(r->cnames, ElementsAre("host.b.test", "final.c.test"));
  EXPECT_EQ(r->cname_target, "");
}

TEST(ParseResponseTest, CnameChainInAnyOrder) {
  Msg m = Msg::Response("www.a.test", kMx, kResponseFlags, 3);
  m.Mx("final.c.test", 300, 5, "mx.c.test");
  m.Cname("host.b.test", 400, "final.c.test");
  m.Cname("www.a.test", 500, "host.b.test");
  absl::StatusOr<ParsedResponse> r = m.Parse("www.a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->answer.mx, ElementsAre(MxRecord{5, "mx.c.test"}));
  EXPECT_EQ(r->answer.ttl, 300u);
}

TEST(ParseResponseTest, CnameChainEndingWithoutRecordsGivesTarget) {
  Msg m = Msg::Response("www.a.test", kMx, kResponseFlags, 2);
  m.Cname("@12", 300, "Elsewhere.B.Test");
  m.Mx("other.test", 300, 10, "mx.other.test");  // not the chain's end: ignored
  absl::StatusOr<ParsedResponse> r = m.Parse("www.a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kNoData);
  EXPECT_EQ(r->cname_target, "elsewhere.b.test");
  EXPECT_THAT(r->cnames, ElementsAre("elsewhere.b.test"));
  EXPECT_THAT(r->answer.mx, IsEmpty());
  EXPECT_EQ(r->answer.ttl, 0u);  // no SOA
}

TEST(ParseResponseTest, CnameLoopRefused) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 2);
  m.Cname("a.test", 300, "b.test").Cname("b.test", 300, "A.test.");
  EXPECT_THAT(Error(m.Parse("a.test", RrType::kA)),
              HasSubstr("CNAME loop: b.test points back to a.test"));

  Msg self = Msg::Response("a.test", kA, kResponseFlags, 1);
  self.Cname("@12", 300, "@12");  // a pointer to the owner: the name itself
  EXPECT_THAT(Error(self.Parse("a.test", RrType::kA)), HasSubstr("CNAME loop"));

  Msg later = Msg::Response("a.test", kA, kResponseFlags, 3);
  later.Cname("a.test", 300, "b.test").Cname("b.test", 300, "c.test").Cname("c.test", 1, "b.test");
  EXPECT_THAT(Error(later.Parse("a.test", RrType::kA)), HasSubstr("CNAME loop"));
}

Msg Chain(size_t links) {
  Msg m = Msg::Response("n0.test", kA, kResponseFlags, static_cast<uint16_t>(links + 1));
  for (size_t i = 0; i < links; ++i) {
    m.Cname(absl::StrCat("n", i, ".test"), 300, absl::StrCat("n", i + 1, ".test"));
  }
  m.A(absl::StrCat("n", links, ".test"), 300, "192.0.2.9");
  return m;
}

TEST(ParseResponseTest, CnameChainLongerThanLimitRefused) {
  absl::StatusOr<ParsedResponse> r = Chain(kMaxCnameChain).Parse("n0.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->cnames.size(), kMaxCnameChain);
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.9"));
  EXPECT_THAT(Error(Chain(kMaxCnameChain + 1).Parse("n0.test", RrType::kA)),
              HasSubstr("longer than 8"));
}

// --- ParseResponse: negative answers and failures ---

TEST(ParseResponseTest, NoDataTtlFromSoa) {
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 0, 1);
  m.Soa("@12", 3600, 900);
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kNoData);
  EXPECT_EQ(r->answer.ttl, 900u);  // min(3600, MINIMUM 900)
  EXPECT_EQ(r->cname_target, "");

  Msg low_ttl = Msg::Response("a.test", kMx, kResponseFlags, 0, 1);
  low_ttl.Soa("@12", 120, 900);
  r = low_ttl.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.ttl, 120u);  // min(TTL 120, 900)
}

TEST(ParseResponseTest, NoDataWithoutSoaHasZeroTtl) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 1);
  m.Aaaa("@12", 300, "2001:db8::1");  // another type: NODATA for A
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kNoData);
  EXPECT_EQ(r->answer.ttl, 0u);
  EXPECT_THAT(r->answer.addresses, IsEmpty());
}

// RFC 2308 section 2.2: NS and no SOA in the authority section is a referral (a
// server that does not recurse), which says nothing about the name; NS beside an
// SOA is an ordinary NODATA (type 1).
TEST(ParseResponseTest, ReferralIsServFailNotNoData) {
  Msg referral = Msg::Response("a.test", kA, 0x8100, 0, 2);  // QR, RD; RA and AA clear
  referral.Rr("test", kNs, 172800, [](Msg& m) { m.Name("ns1.test"); });
  referral.Rr("test", kNs, 172800, [](Msg& m) { m.Name("ns2.test"); });
  absl::StatusOr<ParsedResponse> r = referral.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rcode, 0);
  EXPECT_TRUE(r->referral);
  EXPECT_EQ(r->answer.kind, AnswerKind::kServFail);

  Msg nodata = Msg::Response("a.test", kA, kResponseFlags, 0, 2);
  nodata.Rr("a.test", kNs, 3600, [](Msg& m) { m.Name("ns1.a.test"); });
  nodata.Soa("a.test", 3600, 300);
  r = nodata.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->referral);
  EXPECT_EQ(r->answer.kind, AnswerKind::kNoData);
  EXPECT_EQ(r->answer.ttl, 300u);

  // A referral after a CNAME: the caller asks for the target anyway.
  Msg chain = Msg::Response("www.a.test", kA, kResponseFlags, 1, 1);
  chain.Cname("@12", 300, "host.b.test");
  chain.Rr("b.test", kNs, 3600, [](Msg& m) { m.Name("ns.b.test"); });
  r = chain.Parse("www.a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->referral);
  EXPECT_EQ(r->cname_target, "host.b.test");
}

TEST(ParseResponseTest, NxDomainTtlFromSoa) {
  Msg m = Msg::Response("nowhere.test", kMx, kResponseFlags | 3, 0, 1);
  m.Soa("test", 600, 3600);
  absl::StatusOr<ParsedResponse> r = m.Parse("nowhere.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rcode, 3);
  EXPECT_EQ(r->answer.kind, AnswerKind::kNxDomain);
  EXPECT_EQ(r->answer.ttl, 600u);
}

TEST(ParseResponseTest, NxDomainAtTheEndOfAChain) {
  Msg m = Msg::Response("www.a.test", kA, kResponseFlags | 3, 1, 1);
  m.Cname("@12", 60, "gone.b.test");
  m.Soa("b.test", 600, 3600);
  absl::StatusOr<ParsedResponse> r = m.Parse("www.a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kNxDomain);
  EXPECT_THAT(r->cnames, ElementsAre("gone.b.test"));
  EXPECT_EQ(r->cname_target, "");  // nothing to ask: the end does not exist
  EXPECT_EQ(r->answer.ttl, 60u);   // bounded by the CNAME's TTL
}

TEST(ParseResponseTest, FailureRcodesAreServFail) {
  for (uint16_t rcode : {1, 2, 4, 5, 9}) {
    Msg m = Msg::Response("a.test", kMx, kResponseFlags | rcode, 1);
    m.Mx("@12", 300, 10, "mx.a.test");  // whatever it holds, it is not used
    absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rcode, rcode);
    EXPECT_EQ(r->answer.kind, AnswerKind::kServFail) << rcode;
    EXPECT_THAT(r->answer.mx, IsEmpty());
  }
}

TEST(ParseResponseTest, ExtendedRcodeInOptIsServFail) {
  // BADVERS (16): header RCODE 0, the upper bits 1 in the OPT record's TTL.
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 0, 0, 1);
  m.Opt(0x01000000);
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kServFail);

  Msg plain = Msg::Response("a.test", kMx, kResponseFlags, 0, 0, 1);
  plain.Opt(0);
  r = plain.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kNoData);
}

TEST(ParseResponseTest, NullMx) {
  Msg m = Msg::Response("nomail.test", kMx, kResponseFlags, 1);
  m.Mx("@12", 3600, 0, ".");
  absl::StatusOr<ParsedResponse> r = m.Parse("nomail.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer.kind, AnswerKind::kOk);
  EXPECT_THAT(r->answer.mx, ElementsAre(MxRecord{0, "."}));
}

TEST(ParseResponseTest, TruncatedFlagReported) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags | 0x0200, 1);
  m.A("@12", 300, "192.0.2.1");
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->truncated);
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.1"));

  // Cut inside the record it announces: an error like any other.
  Msg cut = Msg::Response("a.test", kA, kResponseFlags | 0x0200, 1);
  cut.A("@12", 300, "192.0.2.1");
  cut.bytes.resize(cut.size() - 2);
  EXPECT_THAT(Error(cut.Parse("a.test", RrType::kA)), HasSubstr("RDLENGTH 4 runs past the end"));
}

// --- ParseResponse: the question ---

TEST(ParseResponseTest, QuestionMismatchRefused) {
  Msg m = Msg::Response("b.test", kMx, kResponseFlags, 0);
  EXPECT_THAT(
      Error(m.Parse("a.test", RrType::kMx)),
      HasSubstr("response question (b.test MX class 1) does not match the query (a.test MX"));
  EXPECT_THAT(Error(m.Parse("b.test", RrType::kA)), HasSubstr("does not match"));
  EXPECT_THAT(Error(m.Parse("a.b.test", RrType::kMx)), HasSubstr("does not match"));

  Msg chaos = Msg::Response("a.test", kMx, kResponseFlags, 0);
  chaos.bytes[chaos.size() - 1] = 3;  // class CH
  EXPECT_THAT(Error(chaos.Parse("a.test", RrType::kMx)), HasSubstr("does not match"));
}

TEST(ParseResponseTest, QuestionMatchIgnoresCaseAndFinalDot) {
  Msg m = Msg::Response("MX.A.Test", kA, kResponseFlags, 1);
  m.A("@12", 300, "192.0.2.1");
  for (std::string_view name : {"mx.a.test", "Mx.a.TEST.", "MX.A.Test"}) {
    absl::StatusOr<ParsedResponse> r = m.Parse(name, RrType::kA);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status();
    EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.1"));
  }
}

TEST(ParseResponseTest, OwnerCaseIgnoredForChainAndRecords) {
  Msg m = Msg::Response("www.a.test", kA, kResponseFlags, 2);
  m.Cname("WWW.A.TEST", 300, "Host.B.Test");
  m.A("HOST.b.test", 300, "192.0.2.3");
  absl::StatusOr<ParsedResponse> r = m.Parse("www.a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.3"));
}

TEST(ParseResponseTest, HeaderChecks) {
  EXPECT_THAT(Error(ParseResponse(std::vector<uint8_t>(11, 0), "a.test", RrType::kA)),
              HasSubstr("shorter than the 12-octet header"));
  Msg query = Msg::Response("a.test", kA, 0x0100, 0);
  EXPECT_THAT(Error(query.Parse("a.test", RrType::kA)), HasSubstr("QR clear"));
  Msg notify = Msg::Response("a.test", kA, kResponseFlags | (4 << 11), 0);
  EXPECT_THAT(Error(notify.Parse("a.test", RrType::kA)), HasSubstr("opcode 4"));
  Msg two = Msg::Response("a.test", kA, kResponseFlags, 0);
  two.bytes[5] = 2;
  EXPECT_THAT(Error(two.Parse("a.test", RrType::kA)), HasSubstr("2 questions, not 1"));
  Msg none = Msg::Response("a.test", kA, kResponseFlags | 5, 0);
  none.bytes[5] = 0;
  EXPECT_THAT(Error(none.Parse("a.test", RrType::kA)), HasSubstr("0 questions"));
  Msg cut = Msg::Response("a.test", kA, kResponseFlags, 0);
  cut.bytes.resize(cut.size() - 1);
  EXPECT_THAT(Error(cut.Parse("a.test", RrType::kA)), HasSubstr("question: cut off"));
}

// --- ParseResponse: names ---

TEST(ParseResponseTest, PointerLoopRefused) {
  // The question name is a pointer to itself.
  Msg self;
  self.U16(1).U16(kResponseFlags).U16(1).U16(0).U16(0).U16(0).U16(0xc00c).U16(kA).U16(1);
  EXPECT_THAT(Error(self.Parse("a.test", RrType::kA)),
              HasSubstr("compression pointer at offset 12 points to offset 12, not back before"));

  // An owner "x" then a pointer back to its own start: x.x.x...
  Msg own = Msg::Response("a.test", kA, kResponseFlags, 1);
  const size_t owner = own.size();
  own.U8(1).Raw("x").U16(static_cast<uint16_t>(0xc000 | owner));
  own.U16(kA).U16(1).U32(300).U16(4).U32(0xc0000201);
  EXPECT_THAT(Error(own.Parse("a.test", RrType::kA)),
              HasSubstr(absl::StrCat("points to offset ", owner, ", not back before")));
}

TEST(ParseResponseTest, PointerBackIntoLabelsAlreadyReadRefused) {
  // "abcd" "efgh" then a pointer to "efgh": it points back from where it stands,
  // but into the name itself, so reading it would go round for ever.
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 1);
  const size_t owner = m.size();
  m.U8(4).Raw("abcd").U8(4).Raw("efgh").U16(static_cast<uint16_t>(0xc000 | (owner + 5)));
  m.U16(kA).U16(1).U32(300).U16(4).U32(0xc0000201);
  std::string e = Error(m.Parse("a.test", RrType::kA));
  EXPECT_THAT(e, HasSubstr(absl::StrCat("answer section, record 1 of 1 at offset ", owner)));
  EXPECT_THAT(
      e, HasSubstr(absl::StrCat("compression pointer at offset ", owner + 10, " points to offset ",
                                owner + 5, ", not back before offset ", owner)));
}

TEST(ParseResponseTest, ChainOfBackwardPointersAccepted) {
  // mx.b.@12 written once, then "c.@<b>": each hop further back, as compressors write.
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 2);
  const size_t first = m.size() + 14;  // the first exchange: "mx" "b" then @12
  m.Mx("@12", 300, 10, "mx.b.@12");
  m.Mx("@12", 300, 20, absl::StrCat("c.@", first + 3));  // -> b.a.test
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->answer.mx, ElementsAre(MxRecord{10, "mx.b.a.test"}, MxRecord{20, "c.b.a.test"}));
}

TEST(ParseResponseTest, ForwardPointerRefused) {
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 1);
  const size_t rec = m.size();
  // The exchange points to a name after it (inside the message).
  // owner 2 + fixed fields 10 + preference 2 + "mx" 3 + the pointer 2: just past it.
  m.Mx("@12", 300, 10, absl::StrCat("mx.@", rec + 19));
  m.Name("a.test");
  std::string e = Error(m.Parse("a.test", RrType::kMx));
  EXPECT_THAT(e, HasSubstr("MX exchange"));
  EXPECT_THAT(e, HasSubstr("not back before"));
}

TEST(ParseResponseTest, PointerPastEndRefused) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 1);
  m.A("@1000", 300, "192.0.2.1");
  EXPECT_THAT(Error(m.Parse("a.test", RrType::kA)),
              HasSubstr("answer section, record 1 of 1 at offset 24: owner: name at offset 24: "
                        "compression pointer at offset 24 points to offset 1000"));
  Msg cut = Msg::Response("a.test", kA, kResponseFlags, 1);
  cut.U8(0xc0);  // half a pointer, then the end
  EXPECT_THAT(Error(cut.Parse("a.test", RrType::kA)), HasSubstr("cut off by the end"));
}

TEST(ParseResponseTest, LabelOver63Refused) {
  Msg ok = Msg::Response(std::string(63, 'a') + ".test", kA, kResponseFlags, 0);
  EXPECT_TRUE(ok.Parse(std::string(63, 'a') + ".test", RrType::kA).ok());
  Msg m;
  m.U16(1).U16(kResponseFlags).U16(1).U16(0).U16(0).U16(0);
  m.U8(64).Raw(std::string(64, 'a')).U8(0).U16(kA).U16(1);
  EXPECT_THAT(Error(m.Parse(std::string(64, 'a'), RrType::kA)), HasSubstr("length octet 64"));
  Msg ext = Msg::Response("a.test", kA, kResponseFlags, 0);
  ext.bytes[12] = 0x81;  // extended label type 10
  EXPECT_THAT(Error(ext.Parse("a.test", RrType::kA)), HasSubstr("length octet 129"));
}

TEST(ParseResponseTest, NameOver255Refused) {
  // Four 63-octet labels: 4 * 64 + 1 = 257 octets.
  std::string long_name;
  for (int i = 0; i < 4; ++i) long_name += std::string(63, 'a' + i) + ".";
  long_name.pop_back();
  Msg m = Msg::Response(long_name, kA, kResponseFlags, 0);
  EXPECT_THAT(Error(m.Parse(long_name, RrType::kA)), HasSubstr("longer than 255 octets"));

  // 255 exactly passes: three 63-octet labels and one of 61.
  std::string max_name = long_name.substr(0, 64 * 3) + std::string(61, 'z');
  Msg ok = Msg::Response(max_name, kA, kResponseFlags, 0);
  EXPECT_TRUE(ok.Parse(max_name, RrType::kA).ok());

  // 256: one octet too many.
  std::string over_name = long_name.substr(0, 64 * 3) + std::string(62, 'z');
  Msg over = Msg::Response(over_name, kA, kResponseFlags, 0);
  EXPECT_THAT(Error(over.Parse(over_name, RrType::kA)), HasSubstr("longer than 255 octets"));

  // Over 255 only through a pointer: the owner adds a label to the full-length name.
  Msg via = Msg::Response(max_name, kA, kResponseFlags, 1);
  via.A("b.@12", 300, "192.0.2.1");
  EXPECT_THAT(Error(via.Parse(max_name, RrType::kA)), HasSubstr("longer than 255 octets"));
}

TEST(ParseResponseTest, OddOctetsInLabelsEscaped) {
  Msg m = Msg::Response("a.test", kMx, kResponseFlags, 1);
  m.Rr("@12", kMx, 300,
       [](Msg& w) { w.U16(10).U8(6).Raw(std::string("m\0x.\\\xff", 6)).U8(3).Raw("A B").U8(0); });
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kMx);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->answer.mx.size(), 1u);
  EXPECT_EQ(r->answer.mx[0].exchange, "m\\000x\\046\\092\\255.a\\032b");
  EXPECT_EQ(NormalizeDomain(r->answer.mx[0].exchange), std::nullopt);
}

// --- ParseResponse: records ---

TEST(ParseResponseTest, TruncatedRecordRefused) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 2);
  m.A("@12", 300, "192.0.2.1");
  const size_t second = m.size();
  m.U16(0xc00c).U16(kA).U16(1);  // the second record stops inside its fixed fields
  EXPECT_THAT(Error(m.Parse("a.test", RrType::kA)),
              HasSubstr(absl::StrCat("answer section, record 2 of 2 at offset ", second,
                                     ": cut off after the owner name")));

  Msg missing = Msg::Response("a.test", kA, kResponseFlags, 1, 1);
  missing.A("@12", 300, "192.0.2.1");  // the authority record is missing altogether
  EXPECT_THAT(Error(missing.Parse("a.test", RrType::kA)),
              HasSubstr("authority section, record 1 of 1"));

  Msg rdlength = Msg::Response("a.test", kMx, kResponseFlags, 1);
  rdlength.Mx("@12", 300, 10, "mx.a.test");
  rdlength.bytes[12 + 12 + 2 + 8 + 1] += 1;  // RDLENGTH one past the end
  EXPECT_THAT(Error(rdlength.Parse("a.test", RrType::kMx)),
              HasSubstr("answer section, record 1 of 1 at offset 24: RDLENGTH 14 runs past"));
}

TEST(ParseResponseTest, WrongRdlengthRefused) {
  Msg a = Msg::Response("a.test", kA, kResponseFlags, 1);
  a.Rr("@12", kA, 300, [](Msg& w) { w.U32(0xc0000201).U8(0); });
  EXPECT_THAT(Error(a.Parse("a.test", RrType::kA)), HasSubstr("A record with RDLENGTH 5, not 4"));

  Msg aaaa = Msg::Response("a.test", kAaaa, kResponseFlags, 1);
  aaaa.Rr("@12", kAaaa, 300, [](Msg& w) { w.U32(1).U32(2).U32(3); });
  EXPECT_THAT(Error(aaaa.Parse("a.test", RrType::kAaaa)), HasSubstr("RDLENGTH 12, not 16"));

  Msg mx = Msg::Response("a.test", kMx, kResponseFlags, 1);
  mx.Rr("@12", kMx, 300, [](Msg& w) { w.U16(10).Name("mx.a.test").U8(0); });  // one octet over
  EXPECT_THAT(Error(mx.Parse("a.test", RrType::kMx)), HasSubstr("not at the end of the RDATA"));

  Msg short_mx = Msg::Response("a.test", kMx, kResponseFlags, 1);
  short_mx.Rr("@12", kMx, 300, [](Msg& w) { w.U16(10); });
  EXPECT_THAT(Error(short_mx.Parse("a.test", RrType::kMx)), HasSubstr("RDLENGTH 2, too short"));

  Msg soa = Msg::Response("a.test", kMx, kResponseFlags, 0, 1);
  soa.Rr("@12", kSoa, 300, [](Msg& w) { w.Name("ns.test").Name("h.test").U32(1).U32(2); });
  EXPECT_THAT(Error(soa.Parse("a.test", RrType::kMx)), HasSubstr("SOA RDATA of"));
}

TEST(ParseResponseTest, RecordsOfOtherOwnersTypesAndClassesIgnored) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, 5);
  m.A("b.test", 1, "192.0.2.99");
  m.Rr(
      "@12", kA, 1, [](Msg& w) { w.U8(1); }, 3);  // malformed, but of class CH
  m.Mx("@12", 1, 10, "mx.a.test");
  m.Rr("@12", 16, 1, [](Msg& w) { w.U8(2).Raw("hi"); });  // TXT
  m.A("@12", 300, "192.0.2.1");
  absl::StatusOr<ParsedResponse> r = m.Parse("a.test", RrType::kA);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Ips(r->answer), ElementsAre("192.0.2.1"));
  EXPECT_EQ(r->answer.ttl, 300u);  // the ignored records' TTL of 1 does not count
}

TEST(ParseResponseTest, TooManyRecordsRefused) {
  Msg m = Msg::Response("a.test", kA, kResponseFlags, kMaxRecordsPerSection + 1);
  EXPECT_THAT(Error(m.Parse("a.test", RrType::kA)), HasSubstr("513 records, more than the 512"));
}

}  // namespace
}  // namespace volley::dns
