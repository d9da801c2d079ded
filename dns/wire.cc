#include "dns/wire.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::dns {
namespace {

using Bytes = std::span<const uint8_t>;

constexpr size_t kHeaderSize = 12;
constexpr size_t kRecordFixedSize = 10;  // TYPE, CLASS, TTL, RDLENGTH after the owner
constexpr size_t kSoaNumbersSize = 20;   // SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
constexpr uint16_t kClassIn = 1;
constexpr uint16_t kTypeNs = 2;
constexpr uint16_t kTypeCname = 5;
constexpr uint16_t kTypeSoa = 6;
constexpr uint16_t kTypeOpt = 41;
constexpr uint16_t kFlagQr = 0x8000;
constexpr uint16_t kFlagTc = 0x0200;
constexpr uint16_t kFlagRd = 0x0100;
constexpr uint8_t kRcodeNoError = 0;
constexpr uint8_t kRcodeNxDomain = 3;
constexpr uint32_t kNoTtl = std::numeric_limits<uint32_t>::max();

uint16_t Get16(Bytes m, size_t at) { return static_cast<uint16_t>(m[at] << 8 | m[at + 1]); }

uint32_t Get32(Bytes m, size_t at) {
  return static_cast<uint32_t>(Get16(m, at)) << 16 | Get16(m, at + 2);
}

void Put16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}

// RFC 2181 section 8: a TTL with the top bit set is to be read as zero.
uint32_t SaneTtl(uint32_t ttl) { return (ttl & 0x80000000u) != 0 ? 0 : ttl; }

std::string TypeName(uint16_t type) {
  switch (type) {
    case static_cast<uint16_t>(RrType::kA):
      return "A";
    case static_cast<uint16_t>(RrType::kMx):
      return "MX";
    case static_cast<uint16_t>(RrType::kAaaa):
      return "AAAA";
    default:
      return absl::StrCat("TYPE", type);  // RFC 3597's spelling
  }
}

bool KnownType(RrType type) {
  return type == RrType::kA || type == RrType::kMx || type == RrType::kAaaa;
}

absl::Status Invalid(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

// A label's octets as presentation text, lowercase; see wire.h for why \DDD.
void AppendLabel(Bytes label, std::string* out) {
  for (uint8_t b : label) {
    if (b >= 'A' && b <= 'Z') {
      out->push_back(static_cast<char>(b - 'A' + 'a'));
    } else if (b < 0x21 || b > 0x7e || b == '.' || b == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>('0' + b / 100));
      out->push_back(static_cast<char>('0' + b / 10 % 10));
      out->push_back(static_cast<char>('0' + b % 10));
    } else {
      out->push_back(static_cast<char>(b));
    }
  }
}

struct Name {
  std::string text;
  size_t end = 0;  // offset just past the name where it stands (past its first pointer)
};

// ReadName - the name at `at`, compression pointers followed.
absl::StatusOr<Name> ReadName(Bytes m, size_t at) {
  Name name;
  // Each pointer must point before the start of the labels that hold it, so every
  // hop goes strictly backwards: no loop is possible.
  size_t segment = at;
  size_t p = at;
  size_t wire = 1;  // the final zero octet
  size_t hops = 0;
  bool jumped = false;
  for (;;) {
    if (p >= m.size()) {
      return Invalid(absl::StrCat("name at offset ", at, " runs past the end of the message (",
                                  m.size(), " octets)"));
    }
    const uint8_t len = m[p];
    if ((len & 0xc0) == 0xc0) {
      if (p + 1 >= m.size()) {
        return Invalid(absl::StrCat("name at offset ", at, ": compression pointer at offset ", p,
                                    " is cut off by the end of the message"));
      }
      const size_t target = static_cast<size_t>(len & 0x3f) << 8 | m[p + 1];
      if (target >= segment) {
        return Invalid(absl::StrCat("name at offset ", at, ": compression pointer at offset ", p,
                                    " points to offset ", target, ", not back before offset ",
                                    segment));
      }
      if (++hops > kMaxPointerHops) {
        return Invalid(absl::StrCat("name at offset ", at, ": more than ", kMaxPointerHops,
                                    " compression pointers"));
      }
      if (!jumped) name.end = p + 2;
      jumped = true;
      segment = target;
      p = target;
      continue;
    }
    if (len > kMaxLabelLength) {  // 0x40 and 0x80: extended label types, long obsolete
      return Invalid(absl::StrCat("name at offset ", at, ": label at offset ", p,
                                  " has length octet ", len, " (a label is at most ",
                                  kMaxLabelLength, " octets; no extended label types)"));
    }
    if (len == 0) {
      if (!jumped) name.end = p + 1;
      break;
    }
    wire += 1 + len;
    if (wire > kMaxNameWireLength) {
      return Invalid(
          absl::StrCat("name at offset ", at, " is longer than ", kMaxNameWireLength, " octets"));
    }
    if (len >= m.size() - p) {
      return Invalid(absl::StrCat("name at offset ", at, ": label at offset ", p,
                                  " runs past the end of the message (", m.size(), " octets)"));
    }
    if (!name.text.empty()) name.text.push_back('.');
    AppendLabel(m.subspan(p + 1, len), &name.text);
    p += 1 + len;
  }
  if (name.text.empty()) name.text.push_back('.');  // the root
  return name;
}

// One resource record as it stands in the message; RDATA is read only when used.
struct Record {
  std::string owner;
  uint16_t type = 0;
  uint16_t rclass = 0;
  uint32_t ttl = 0;  // as received
  size_t rdata = 0;  // offset of the RDATA
  uint16_t rdlength = 0;
  std::string where;  // "answer section, record 2 of 3 at offset 45", for errors
};

absl::Status ReadSection(Bytes m, const char* section, uint16_t count, size_t* pos,
                         std::vector<Record>* records) {
  if (count > kMaxRecordsPerSection) {
    return Invalid(absl::StrCat(section, " section: ", count, " records, more than the ",
                                kMaxRecordsPerSection, " read"));
  }
  records->reserve(count);
  for (uint16_t i = 0; i < count; ++i) {
    Record r;
    r.where = absl::StrCat(section, " section, record ", i + 1, " of ", count, " at offset ", *pos);
    absl::StatusOr<Name> owner = ReadName(m, *pos);
    if (!owner.ok()) return Invalid(absl::StrCat(r.where, ": owner: ", owner.status().message()));
    *pos = owner->end;
    if (m.size() - *pos < kRecordFixedSize) {
      return Invalid(absl::StrCat(r.where,
                                  ": cut off after the owner name by the end of the message (",
                                  m.size(), " octets)"));
    }
    r.owner = std::move(owner->text);
    r.type = Get16(m, *pos);
    r.rclass = Get16(m, *pos + 2);
    r.ttl = Get32(m, *pos + 4);
    r.rdlength = Get16(m, *pos + 8);
    *pos += kRecordFixedSize;
    r.rdata = *pos;
    if (r.rdlength > m.size() - *pos) {
      return Invalid(absl::StrCat(r.where, ": RDLENGTH ", r.rdlength,
                                  " runs past the end of the message (", m.size(), " octets)"));
    }
    *pos += r.rdlength;
    records->push_back(std::move(r));
  }
  return absl::OkStatus();
}

// ReadRdataName - a name at `at` in r's RDATA that must end exactly at `end`.
absl::StatusOr<std::string> ReadRdataName(Bytes m, const Record& r, const char* what, size_t at,
                                          size_t end) {
  absl::StatusOr<Name> name = ReadName(m, at);
  if (!name.ok()) return Invalid(absl::StrCat(r.where, ": ", what, ": ", name.status().message()));
  if (name->end != end) {
    return Invalid(absl::StrCat(r.where, ": ", what, " ends at offset ", name->end,
                                ", not at the end of the RDATA (offset ", end, ")"));
  }
  return std::move(name->text);
}

// NegativeTtl - RFC 2308 section 5: min(SOA TTL, SOA MINIMUM) of the first SOA in
// the authority section, bounded by `chain_ttl`; 0 without an SOA.
absl::StatusOr<uint32_t> NegativeTtl(Bytes m, const std::vector<Record>& authority,
                                     uint32_t chain_ttl) {
  for (const Record& r : authority) {
    if (r.type != kTypeSoa || r.rclass != kClassIn) continue;
    const size_t end = r.rdata + r.rdlength;
    absl::StatusOr<Name> mname = ReadName(m, r.rdata);
    if (!mname.ok())
      return Invalid(absl::StrCat(r.where, ": SOA MNAME: ", mname.status().message()));
    absl::StatusOr<Name> rname = ReadName(m, mname->end);
    if (!rname.ok())
      return Invalid(absl::StrCat(r.where, ": SOA RNAME: ", rname.status().message()));
    if (rname->end > end || end - rname->end != kSoaNumbersSize) {
      return Invalid(absl::StrCat(r.where, ": SOA RDATA of ", r.rdlength,
                                  " octets does not hold two names and 20 octets of numbers"));
    }
    const uint32_t minimum = SaneTtl(Get32(m, end - 4));
    return std::min({SaneTtl(r.ttl), minimum, chain_ttl});
  }
  return 0u;
}

// IsReferral - NS records and no SOA in the authority section of a NOERROR
// response without the records asked for: a delegation, not a negative answer.
bool IsReferral(const std::vector<Record>& authority) {
  bool ns = false;
  for (const Record& r : authority) {
    if (r.rclass != kClassIn) continue;
    if (r.type == kTypeSoa) return false;
    if (r.type == kTypeNs) ns = true;
  }
  return ns;
}

}  // namespace

absl::StatusOr<std::string> EncodeQuery(std::string_view name, RrType type, uint16_t id) {
  if (!KnownType(type)) {
    return Invalid(absl::StrCat("EncodeQuery: ", TypeName(static_cast<uint16_t>(type)),
                                " is not a type the mailer asks for"));
  }
  std::optional<std::string> normal = NormalizeDomain(name);
  if (!normal) {
    return Invalid(absl::StrCat("EncodeQuery: \"", base::Sv(name.substr(0, kMaxDomainLength)),
                                "\" is not a valid host name"));
  }
  std::string out;
  out.reserve(kHeaderSize + normal->size() + 2 + 4 + 11);
  Put16(&out, id);
  Put16(&out, kFlagRd);  // opcode 0 (QUERY), QR clear
  Put16(&out, 1);        // QDCOUNT
  Put16(&out, 0);        // ANCOUNT
  Put16(&out, 0);        // NSCOUNT
  Put16(&out, 1);        // ARCOUNT: the OPT record
  std::string_view rest = *normal;
  while (!rest.empty()) {
    const size_t dot = std::min(rest.find('.'), rest.size());
    out.push_back(static_cast<char>(dot));
    out.append(rest.substr(0, dot));
    rest.remove_prefix(std::min(dot + 1, rest.size()));
  }
  out.push_back(0);
  Put16(&out, static_cast<uint16_t>(type));
  Put16(&out, kClassIn);
  // OPT (RFC 6891 section 6.1.2): root owner, CLASS the UDP payload size, TTL the
  // extended RCODE, version 0 and flags (all zero), no options.
  out.push_back(0);
  Put16(&out, kTypeOpt);
  Put16(&out, kEdnsPayloadSize);
  Put16(&out, 0);
  Put16(&out, 0);
  Put16(&out, 0);  // RDLENGTH
  return out;
}

absl::StatusOr<ParsedResponse> ParseResponse(std::span<const uint8_t> message,
                                             std::string_view name, RrType type) {
  const Bytes m = message;
  if (!KnownType(type)) {
    // The records would be taken but not read (see the switch below).
    return Invalid(absl::StrCat("ParseResponse: ", TypeName(static_cast<uint16_t>(type)),
                                " is not a type the mailer asks for"));
  }
  if (m.size() < kHeaderSize) {
    return Invalid(absl::StrCat("response of ", m.size(), " octets is shorter than the ",
                                kHeaderSize, "-octet header"));
  }
  const uint16_t flags = Get16(m, 2);
  if ((flags & kFlagQr) == 0) return Invalid("message is a query (QR clear), not a response");
  const unsigned opcode = (flags >> 11) & 0xf;
  if (opcode != 0) return Invalid(absl::StrCat("response has opcode ", opcode, ", not 0 (QUERY)"));
  const uint16_t qdcount = Get16(m, 4);
  if (qdcount != 1) {
    return Invalid(absl::StrCat("response has ", qdcount, " questions, not 1"));
  }

  std::string want(name);
  for (char& ch : want) {
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  }
  if (!want.empty() && want.back() == '.') want.pop_back();
  if (want.empty()) want.push_back('.');
  absl::StatusOr<Name> qname = ReadName(m, kHeaderSize);
  if (!qname.ok()) return Invalid(absl::StrCat("question: ", qname.status().message()));
  size_t pos = qname->end;
  if (m.size() - pos < 4) return Invalid("question: cut off after the name");
  const uint16_t qtype = Get16(m, pos);
  const uint16_t qclass = Get16(m, pos + 2);
  pos += 4;
  if (qname->text != want || qtype != static_cast<uint16_t>(type) || qclass != kClassIn) {
    return Invalid(absl::StrCat("response question (", qname->text, " ", TypeName(qtype), " class ",
                                qclass, ") does not match the query (", want, " ",
                                TypeName(static_cast<uint16_t>(type)), " class 1)"));
  }

  ParsedResponse out;
  out.rcode = static_cast<uint8_t>(flags & 0xf);
  out.truncated = (flags & kFlagTc) != 0;
  out.answer.kind = AnswerKind::kServFail;
  if (out.rcode != kRcodeNoError && out.rcode != kRcodeNxDomain) return out;

  std::vector<Record> answers;
  std::vector<Record> authority;
  std::vector<Record> additional;
  absl::Status s = ReadSection(m, "answer", Get16(m, 6), &pos, &answers);
  if (s.ok()) s = ReadSection(m, "authority", Get16(m, 8), &pos, &authority);
  if (s.ok()) s = ReadSection(m, "additional", Get16(m, 10), &pos, &additional);
  if (!s.ok()) return s;
  for (const Record& r : additional) {
    // The upper 8 bits of a 12-bit RCODE: set, the real RCODE is neither of ours.
    if (r.type == kTypeOpt && (r.ttl >> 24) != 0) return out;
  }

  // The CNAME chain from the question name.
  std::string current = std::move(qname->text);
  uint32_t chain_ttl = kNoTtl;
  for (;;) {
    const Record* cname = nullptr;
    for (const Record& r : answers) {
      if (r.type == kTypeCname && r.rclass == kClassIn && r.owner == current) {
        cname = &r;
        break;
      }
    }
    if (cname == nullptr) break;
    if (out.cnames.size() == kMaxCnameChain) {
      return Invalid(
          absl::StrCat("CNAME chain from ", want, " is longer than ", kMaxCnameChain, " links"));
    }
    absl::StatusOr<std::string> target =
        ReadRdataName(m, *cname, "CNAME target", cname->rdata, cname->rdata + cname->rdlength);
    if (!target.ok()) return target.status();
    if (*target == want ||
        std::find(out.cnames.begin(), out.cnames.end(), *target) != out.cnames.end()) {
      return Invalid(absl::StrCat("CNAME loop: ", current, " points back to ", *target));
    }
    chain_ttl = std::min(chain_ttl, SaneTtl(cname->ttl));
    out.cnames.push_back(*target);
    current = *std::move(target);
  }

  DnsAnswer& answer = out.answer;
  if (out.rcode == kRcodeNxDomain) {
    answer.kind = AnswerKind::kNxDomain;
    absl::StatusOr<uint32_t> ttl = NegativeTtl(m, authority, chain_ttl);
    if (!ttl.ok()) return ttl.status();
    answer.ttl = *ttl;
    return out;
  }

  uint32_t ttl = chain_ttl;
  bool found = false;
  for (const Record& r : answers) {
    if (r.type != static_cast<uint16_t>(type) || r.rclass != kClassIn || r.owner != current) {
      continue;
    }
    switch (type) {
      case RrType::kA: {
        if (r.rdlength != sizeof(in_addr)) {
          return Invalid(absl::StrCat(r.where, ": A record with RDLENGTH ", r.rdlength, ", not 4"));
        }
        in_addr a;
        std::memcpy(&a, m.data() + r.rdata, sizeof(a));
        answer.addresses.push_back(IpAddress::V4(a));
        break;
      }
      case RrType::kAaaa: {
        if (r.rdlength != sizeof(in6_addr)) {
          return Invalid(
              absl::StrCat(r.where, ": AAAA record with RDLENGTH ", r.rdlength, ", not 16"));
        }
        in6_addr a;
        std::memcpy(&a, m.data() + r.rdata, sizeof(a));
        answer.addresses.push_back(IpAddress::V6(a));
        break;
      }
      case RrType::kMx: {
        if (r.rdlength < 3) {  // the preference and at least the root
          return Invalid(absl::StrCat(r.where, ": MX record with RDLENGTH ", r.rdlength,
                                      ", too short for a preference and a name"));
        }
        absl::StatusOr<std::string> exchange =
            ReadRdataName(m, r, "MX exchange", r.rdata + 2, r.rdata + r.rdlength);
        if (!exchange.ok()) return exchange.status();
        answer.mx.push_back(MxRecord{Get16(m, r.rdata), *std::move(exchange)});
        break;
      }
    }
    found = true;
    ttl = std::min(ttl, SaneTtl(r.ttl));
  }
  if (found) {
    answer.kind = AnswerKind::kOk;
    answer.ttl = ttl;
    return out;
  }
  if (out.cnames.empty() && IsReferral(authority)) {
    // Not NODATA (RFC 2308 section 2.2): the server sent us elsewhere instead of
    // recursing, and knows nothing of the name. Taken for NODATA, a resolver that
    // does not recurse would make every domain look like one without mail service.
    out.referral = true;
    return out;  // kServFail
  }
  answer.kind = AnswerKind::kNoData;
  if (!out.cnames.empty()) out.cname_target = current;
  absl::StatusOr<uint32_t> negative = NegativeTtl(m, authority, chain_ttl);
  if (!negative.ok()) return negative.status();
  answer.ttl = *negative;
  return out;
}

}  // namespace volley::dns
