// fuzz_dns_wire - libFuzzer target for the DNS response parser (dns/wire.h)
//
// INPUT
//   the whole input is the response message, as c-ares would hand it over
//
// DESCRIPTION
//   ParseResponse is called on the input for the fixed question "a.test" with each of
//   MX, A and AAAA (the seeds ask that), and for the question read from the input
//   itself by a plain reading of its first name (uncompressed labels of printable
//   octets) and type, so that mutated messages keep matching their question. The
//   derived question is asked again in upper case with a final dot, which must give
//   the same result. Every result must keep the contract of wire.h:
//   - an error is InvalidArgument with a message;
//   - rcode and truncated are the header's; an RCODE other than 0 and 3 is kServFail,
//     kNxDomain only with 3, kOk and kNoData only with 0;
//   - kOk has records and only of the type asked (A: IPv4, AAAA: IPv6); any other kind
//     has none; no more records than the message has room for;
//   - at most kMaxCnameChain CNAMEs, distinct, none the question; cname_target set
//     exactly when NOERROR ended on a chain without records, and then the chain's last;
//   - every name is lowercase presentation text: "." or labels of '!'..'~' joined by
//     dots, any '\' starting a \DDD escape of at most 255, at most 255 octets on the
//     wire;
//   - TTLs never have the top bit set.
//   EncodeQuery of the derived name (when NormalizeDomain takes it), its QR bit set,
//   must parse back as a NODATA answer to that question.
//
//   FUZZ_TRACE=1 prints every result (kind and counts, or the error), e.g. to see
//   which paths a corpus reaches:
//     FUZZ_TRACE=1 build-fuzz/tests/fuzz/fuzz_dns_wire -runs=0 DIR 2>&1 | sort | uniq -c
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dns/mx.h"
#include "dns/wire.h"

namespace {

using volley::dns::AnswerKind;
using volley::dns::ParsedResponse;
using volley::dns::RrType;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_dns_wire: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

constexpr size_t kHeader = 12;

// ValidName - lowercase presentation text whose wire form fits 255 octets.
bool ValidName(std::string_view name) {
  if (name == ".") return true;
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  size_t wire = 1;  // the root octet
  size_t label = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char ch = name[i];
    if (ch == '.') {
      if (label == 0) return false;
      wire += 1 + label;
      label = 0;
      continue;
    }
    if (ch < 0x21 || ch > 0x7e || (ch >= 'A' && ch <= 'Z')) return false;
    if (ch == '\\') {
      if (i + 3 >= name.size()) return false;
      int value = 0;
      for (size_t k = 1; k <= 3; ++k) {
        const char d = name[i + k];
        if (d < '0' || d > '9') return false;
        value = value * 10 + (d - '0');
      }
      if (value > 255) return false;
      i += 3;
    }
    if (++label > 63) return false;
  }
  wire += 1 + label;
  return wire <= 255;
}

// FUZZ_TRACE=1 prints each result, to see what a corpus reaches.
void Trace(std::string_view question, RrType type, const absl::StatusOr<ParsedResponse>& result) {
  static const bool trace = std::getenv("FUZZ_TRACE") != nullptr;
  if (!trace) return;
  const std::string q(question);
  if (!result.ok()) {
    const std::string why(result.status().message());
    std::fprintf(stderr, "%s/%d: error: %s\n", q.c_str(), static_cast<int>(type), why.c_str());
    return;
  }
  const std::string kind(volley::dns::AnswerKindName(result->answer.kind));
  std::fprintf(stderr, "%s/%d: %s rcode %d, %zu mx, %zu addresses, %zu cnames, ttl %u%s%s\n",
               q.c_str(), static_cast<int>(type), kind.c_str(), result->rcode,
               result->answer.mx.size(), result->answer.addresses.size(), result->cnames.size(),
               result->answer.ttl, result->cname_target.empty() ? "" : ", target ",
               result->cname_target.c_str());
}

void Check(std::span<const uint8_t> msg, std::string_view question, RrType type,
           const absl::StatusOr<ParsedResponse>& result) {
  Trace(question, type, result);
  if (!result.ok()) {
    EXPECT(result.status().code() == absl::StatusCode::kInvalidArgument);
    EXPECT(!result.status().message().empty());
    return;
  }
  const ParsedResponse& r = *result;
  EXPECT(msg.size() >= kHeader);
  EXPECT(r.rcode == (msg[3] & 0x0f));
  EXPECT(r.truncated == ((msg[2] & 0x02) != 0));
  const AnswerKind kind = r.answer.kind;
  if (r.rcode != 0 && r.rcode != 3) EXPECT(kind == AnswerKind::kServFail);
  if (kind == AnswerKind::kNxDomain) EXPECT(r.rcode == 3);
  if (kind == AnswerKind::kOk || kind == AnswerKind::kNoData) EXPECT(r.rcode == 0);

  const size_t records = r.answer.mx.size() + r.answer.addresses.size();
  if (kind == AnswerKind::kOk) EXPECT(records > 0);
  if (kind != AnswerKind::kOk) EXPECT(records == 0);
  if (type == RrType::kMx) EXPECT(r.answer.addresses.empty());
  if (type != RrType::kMx) EXPECT(r.answer.mx.empty());
  // Past the header and the question (5 octets at least), each record takes its
  // owner (2 at least), 10 octets of fixed fields and its RDATA: 4, 16, or 3 for MX.
  size_t room = msg.size() - kHeader - 5;
  for (const volley::dns::IpAddress& ip : r.answer.addresses) {
    EXPECT(ip.family == (type == RrType::kA ? AF_INET : AF_INET6));
    const size_t need = type == RrType::kA ? 16 : 28;
    EXPECT(room >= need);
    room -= need;
  }
  for (const volley::dns::MxRecord& mx : r.answer.mx) {
    EXPECT(ValidName(mx.exchange));
    EXPECT(room >= 15);
    room -= 15;
  }
  EXPECT((r.answer.ttl & 0x80000000u) == 0);
  if (kind == AnswerKind::kServFail) EXPECT(r.cnames.empty());

  EXPECT(r.cnames.size() <= volley::dns::kMaxCnameChain);
  for (size_t i = 0; i < r.cnames.size(); ++i) {
    EXPECT(ValidName(r.cnames[i]));
    EXPECT(r.cnames[i] != question);
    for (size_t j = 0; j < i; ++j) EXPECT(r.cnames[i] != r.cnames[j]);
  }
  const bool chain_unanswered = r.rcode == 0 && kind == AnswerKind::kNoData && !r.cnames.empty();
  EXPECT(r.cname_target.empty() != chain_unanswered);
  if (chain_unanswered) EXPECT(r.cname_target == r.cnames.back());
}

bool Same(const ParsedResponse& a, const ParsedResponse& b) {
  return a.rcode == b.rcode && a.truncated == b.truncated && a.answer.kind == b.answer.kind &&
         a.answer.mx == b.answer.mx && a.answer.addresses == b.answer.addresses &&
         a.answer.ttl == b.answer.ttl && a.cname_target == b.cname_target && a.cnames == b.cnames;
}

// The question as a plain reader sees it: uncompressed labels of octets that need
// no escaping, lowercase; and a type we ask for.
struct Question {
  std::string name;
  RrType type = RrType::kA;
};
std::optional<Question> ReadQuestion(std::span<const uint8_t> msg) {
  Question q;
  size_t p = kHeader;
  while (p < msg.size() && msg[p] != 0) {
    const size_t len = msg[p];
    if (len > 63 || p + 1 + len > msg.size()) return std::nullopt;
    if (!q.name.empty()) q.name.push_back('.');
    for (size_t i = p + 1; i < p + 1 + len; ++i) {
      char ch = static_cast<char>(msg[i]);
      if (ch < 0x21 || ch > 0x7e || ch == '.' || ch == '\\') return std::nullopt;
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      q.name.push_back(ch);
    }
    p += 1 + len;
  }
  if (p + 3 > msg.size() || q.name.empty()) return std::nullopt;  // also the root: skipped
  const uint16_t type = static_cast<uint16_t>(msg[p + 1] << 8 | msg[p + 2]);
  if (type != 1 && type != 15 && type != 28) return std::nullopt;
  q.type = static_cast<RrType>(type);
  return q;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::span<const uint8_t> msg(bytes, size);
  for (RrType type : {RrType::kMx, RrType::kA, RrType::kAaaa}) {
    Check(msg, "a.test", type, volley::dns::ParseResponse(msg, "a.test", type));
  }

  std::optional<Question> q = ReadQuestion(msg);
  if (!q) return 0;
  absl::StatusOr<ParsedResponse> r = volley::dns::ParseResponse(msg, q->name, q->type);
  Check(msg, q->name, q->type, r);
  std::string upper = q->name + ".";
  for (char& ch : upper) {
    if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
  }
  absl::StatusOr<ParsedResponse> again = volley::dns::ParseResponse(msg, upper, q->type);
  EXPECT(r.ok() == again.ok());
  if (r.ok()) EXPECT(Same(*r, *again));

  if (!volley::dns::NormalizeDomain(q->name)) return 0;
  const uint16_t id = static_cast<uint16_t>(bytes[0] << 8 | bytes[1]);
  absl::StatusOr<std::string> query = volley::dns::EncodeQuery(q->name, q->type, id);
  EXPECT(query.ok());
  EXPECT(query->size() == kHeader + q->name.size() + 2 + 4 + 11);
  std::vector<uint8_t> echo(query->begin(), query->end());
  EXPECT(echo[0] == bytes[0] && echo[1] == bytes[1]);
  EXPECT(echo[2] == 0x01 && echo[3] == 0x00);  // RD only
  echo[2] |= 0x80;                             // QR: the query as its own empty answer
  absl::StatusOr<ParsedResponse> empty = volley::dns::ParseResponse(echo, q->name, q->type);
  EXPECT(empty.ok());
  EXPECT(empty->answer.kind == AnswerKind::kNoData && empty->answer.ttl == 0);
  EXPECT(empty->rcode == 0 && !empty->truncated && empty->cnames.empty());
  return 0;
}
