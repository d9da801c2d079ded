// wire.h - DNS messages on the wire: our queries out, the resolver's responses in (RFC 1035)
//
// SYNOPSIS
//   absl::StatusOr<std::string> query = EncodeQuery("a.test", RrType::kMx, 0);
//   ares_send(channel, query->data(), query->size(), OnResponse, ...);  // c-ares sets the id
//   // in OnResponse, with the raw bytes c-ares matched to the query:
//   absl::StatusOr<ParsedResponse> r = ParseResponse(bytes, "a.test", RrType::kMx);
//   if (!r.ok()) Complete(ServFail());                     // malformed: a server failure
//   else if (!r->cname_target.empty()) Ask(r->cname_target, RrType::kMx);  // chain goes on
//   else Complete(r->answer);                             // kOk, kNoData, kNxDomain...
//
// DESCRIPTION
//   Pure functions of their arguments. The c-ares driver sends the bytes EncodeQuery
//   makes and hands the response to ParseResponse, rather than using c-ares's own
//   parsers, which drop the MX records' TTL and the authority section's SOA that
//   negative caching (RFC 2308) needs.
//
//   EncodeQuery: a standard query (opcode 0) with RD set, one question (the name as
//   NormalizeDomain gives it, lowercase, the type, class IN) and, in the additional
//   section, an EDNS0 OPT record (RFC 6891: version 0, DO clear, no options)
//   advertising kEdnsPayloadSize, so that an answer of up to that size comes over UDP
//   and a larger one sets TC (c-ares then asks again over TCP).
//
//   ParseResponse checks, in this order: the 12-octet header; QR set and opcode 0;
//   exactly one question, equal to (name, type, IN), the name compared in lowercase
//   without a final dot. Then by RCODE (the 4 bits of the header):
//   - 0 (NOERROR) and 3 (NXDOMAIN): the answer, authority and additional sections are
//     read in full, every record checked to lie within the message. An OPT record in
//     the additional section with a non-zero extended RCODE (BADVERS...) makes the
//     answer kServFail: its real RCODE is not NOERROR or NXDOMAIN at all.
//   - anything else (FORMERR 1, SERVFAIL 2, NOTIMP 4, REFUSED 5...): kServFail; the
//     sections are not read.
//   In the answer section the CNAME chain is followed from the question name (a CNAME
//   record owned by the current name leads to the next; the first one counts), then
//   the records of `type` owned by the chain's last name are taken, A and AAAA into
//   answer.addresses, MX into answer.mx, in the order of the message. Records of
//   other owners, other types or another class than IN are ignored, and so is the
//   RDATA of records not taken (only what is used must be well formed).
//   - NOERROR with records: kOk; ttl the smallest TTL of the records and of the
//     CNAMEs followed.
//   - NOERROR without records: kNoData. When a chain was followed, cname_target is
//     its last name, which this message says nothing about: the caller asks again.
//     Without a chain, NS records and no SOA in the authority section make it a
//     referral (RFC 2308 section 2.2), not NODATA: kServFail with `referral` set, as
//     from a server that does not recurse (it would otherwise pass every name it is
//     asked about for one without records, and bounce the mail as having none).
//   - NXDOMAIN: kNxDomain (it is about the end of the chain, RFC 6604); no records.
//   For kNoData and kNxDomain, ttl is the negative TTL of RFC 2308 section 5:
//   min(SOA TTL, SOA MINIMUM) of the first SOA record (class IN) in the authority
//   section, and no more than the TTL of any CNAME followed (the chain is part of
//   the answer); 0 without an SOA. A TTL (or MINIMUM) with the top bit set counts as
//   0 (RFC 2181 section 8).
//
//   Names are decoded in full (RFC 1035 section 4.1.4 compression included) to
//   lowercase dotted text without the final dot, the root as ".". An octet of a label
//   outside '!'..'~', or a '.' or '\' in a label, is written \DDD (RFC 1035 section
//   5.1 presentation), so it can never pass for a separator; NormalizeDomain refuses
//   such a name, as an MX exchange should be refused. MX exchanges are kept as
//   decoded ("." for Null MX, RFC 7505).
//
//   A response with TC set is parsed like any other, `truncated` telling so: when
//   its records are complete the answer is as usual (but possibly part of an RRset,
//   RFC 2181 section 9, so not to be cached as the whole one); when the message is
//   cut inside a record it is the error below, as for any other message. c-ares
//   retries over TCP on TC, so such a response should not reach the caller at all.
//
// LIMITS
//   Names: 63 octets a label, 255 octets on the wire (RFC 1035 section 2.3.4); a
//   compression pointer must point before the start of the labels that hold it, so a
//   name cannot loop, and a name follows at most kMaxPointerHops of them.
//   kMaxRecordsPerSection records a section; kMaxCnameChain CNAMEs followed.
//
// ERRORS
//   Both: InvalidArgument for an RrType outside the enum.
//   EncodeQuery: InvalidArgument for a name NormalizeDomain refuses.
//   ParseResponse: InvalidArgument for a message that is malformed (too short, a
//   record or name past the end, a bad compression pointer, a label over 63 octets or
//   of an unknown type, a name over 255 octets, an A record whose RDATA is not 4
//   octets, an AAAA not 16, an MX, CNAME or SOA whose RDATA is not exactly what it
//   should hold, more than kMaxRecordsPerSection records in a section), naming the
//   section, the record (from 1) and the byte offset; for a response that is not a
//   response to this question ("response question ... does not match ..."), has
//   another opcode or QR clear; and for a CNAME loop or a chain longer than
//   kMaxCnameChain. The driver treats each like SERVFAIL.
#ifndef VOLLEY_DNS_WIRE_H_
#define VOLLEY_DNS_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dns/mx.h"

namespace volley::dns {

// The UDP payload our OPT record advertises: the DNS flag day 2020 figure, which
// fits the usual MTU without fragmentation.
inline constexpr uint16_t kEdnsPayloadSize = 1232;
// CNAMEs followed in one response; more is an error.
inline constexpr size_t kMaxCnameChain = 8;
// Records read from one section: far more than a mail domain's answer holds, and a
// bound on the work a hostile message can ask for.
inline constexpr size_t kMaxRecordsPerSection = 512;
// Compression pointers followed in one name. Each must point further back than the
// last, so a name cannot loop anyway; this bounds the work too.
inline constexpr size_t kMaxPointerHops = 128;
// A name on the wire, its length octets and final zero included (RFC 1035 2.3.4).
inline constexpr size_t kMaxNameWireLength = 255;

// EncodeQuery - a standard query: RD set, one question (name, type, class IN), and an
// EDNS0 OPT record in the additional section advertising kEdnsPayloadSize. The id is
// written as given (c-ares overwrites it). A final dot on name is optional.
// InvalidArgument for a name that is not a valid host name (NormalizeDomain's rules).
absl::StatusOr<std::string> EncodeQuery(std::string_view name, RrType type, uint16_t id);

struct ParsedResponse {
  uint8_t rcode = 0;       // the header's RCODE as received (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN...)
  bool truncated = false;  // TC bit
  bool referral = false;   // NOERROR with a delegation instead of an answer: kServFail
  DnsAnswer answer;        // see DESCRIPTION
  // Set when the CNAME chain from the question name ends at a name that has no records
  // of the type in this message (and rcode is NOERROR): the caller asks again for that
  // name. Normalised (lowercase, no final dot).
  std::string cname_target;
  // The chain followed, in order (normalised): each CNAME's target, so the question
  // name is not in it and cname_target, when set, is the last.
  std::vector<std::string> cnames;
};

// ParseResponse - a response to the question (name, type).
absl::StatusOr<ParsedResponse> ParseResponse(std::span<const uint8_t> message,
                                             std::string_view name, RrType type);

}  // namespace volley::dns

#endif  // VOLLEY_DNS_WIRE_H_
