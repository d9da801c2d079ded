// mx.h - from DNS answers to a delivery plan: which hosts, in which order (RFC 5321 5.1)
//
// SYNOPSIS
//   // 1. the MX answer (from the resolver or the cache) to the hosts to resolve
//   MxHostList list = SelectMxHosts("a.test", mx_answer, options, random);
//   if (list.verdict) Fail(*list.verdict);           // Null MX, NXDOMAIN, SERVFAIL...
//   // 2. for each list.hosts[i]: its A answer (and AAAA unless kIpv4Only)
//   std::vector<HostAnswers> answers = {{&a0, &aaaa0}, {&a1, &aaaa1}};
//   MxPlan plan = PlanDelivery(list, answers, options);
//   if (plan.verdict) Fail(*plan.verdict);
//   for (const PlannedHost& h : plan.hosts)           // most preferred first
//     for (const IpAddress& ip : h.addresses) Try(MakeEndpoint(ip, 25));
//   Pool(plan.site);                                  // "mx1.p.test,mx2.p.test"
//
// DESCRIPTION
//   Pure: no sockets, no resolver, no clock. The c-ares driver feeds it the answers
//   (DnsAnswer, also what dns/cache.h stores), and the shuffle draws from the random
//   source given, so tests are deterministic.
//
//   SelectMxHosts (RFC 5321 section 5.1, RFC 7505):
//   - NXDOMAIN for the domain: bounce 5.1.2 ("domain does not exist").
//   - SERVFAIL or timeout: defer 4.4.3. The implicit MX is never tried on a failed
//     MX lookup (a broken server that answers A but fails MX would send the mail
//     to the wrong host).
//   - A local failure (DnsAnswer::local: no server was asked, our resolver's queue
//     was full): defer 4.4.3 with MxVerdict::local set, "a.test: resolver queue
//     full". Nothing is known about the domain; the engine retries soon.
//   - NODATA (or an empty record list): the implicit MX, the domain itself at
//     preference 0, resolved by its own A/AAAA. Only then are the domain's own
//     addresses used: when MX records exist they never are. When A and AAAA find
//     nothing either, PlanDelivery bounces (below).
//   - Null MX: when every MX record names "." (duplicates collapsed), the domain
//     accepts no mail: bounce 5.1.10 at once, no connection, no retry. RFC 7505 says
//     preference 0; a lone "." at another preference means the same and is treated
//     the same. A "." among other MX records is an error in the zone (RFC 7505
//     section 3: a null MX MUST NOT be published with other MX records); like
//     Postfix, the "." is skipped as an unusable host (noted in `skipped`) and the
//     other exchanges, which were published on purpose, are used.
//   - Exchange names are normalised (NormalizeDomain): lowercase, one final dot
//     dropped; an invalid name is skipped with a note. A name listed twice collapses
//     to its most preferred entry. At most max_mx_hosts are kept: the most
//     preferred, ties broken by name so the choice (and the site) does not depend on
//     the order of the answer. RFC 5321 5.1 lets a client limit the list.
//   - Order: by preference, lowest first; equal preferences in an order drawn from
//     the random source (Fisher-Yates), so equal MX hosts share the load. Unequal
//     preferences are never reordered.
//   - No usable exchange at all (every name invalid): defer 4.4.4.
//   - The site (`site`): the kept exchanges sorted by preference then name, joined
//     with ","; for an implicit MX the domain itself. Two domains hosted by one
//     provider get one site, whatever order their answers came in; connection pools
//     and limits key on it (issue 5).
//
//   PlanDelivery, per host in the list's order:
//   - The A and AAAA answers give its addresses, in the family order of
//     MxOptions::family (IPv4 first, IPv6 first, or IPv4 only: AAAA ignored), each
//     family in the resolver's order. An address seen before (at this host or an
//     earlier one) is not listed again. At most max_addresses_per_host are kept,
//     after filtering.
//   - Address policy (ClassifyAddress): only globally routable unicast addresses
//     pass. Loopback (127.0.0.0/8, ::1) passes with allow_loopback (the product's
//     [dns] allow_loopback; tests and the demo set it). Private ranges (RFC 1918,
//     100.64.0.0/10, fc00::/7, fec0::/10) pass with allow_private. Unspecified,
//     link-local, multicast, broadcast, documentation, benchmarking, reserved,
//     IPv4-mapped/compatible and any IPv6 outside 2000::/3 (save 64:ff9b::/96,
//     NAT64) never pass. Each refusal is noted in `refused`
//     ("mx.a.test: 10.0.0.1 is a private address").
//   - A host with no usable address is left out (noted in `refused`).
//   - No MX, and the domain's A and AAAA questions both answered NODATA (or one of
//     them NXDOMAIN): the domain has no mail service (RFC 5321 section 5.1, the
//     implicit MX has no address): bounce 5.1.2 ("no MX, A or AAAA records for
//     a.test: the domain has no mail service") at once, as for NXDOMAIN and as
//     Postfix does. Both questions must have been asked and answered: a SERVFAIL or
//     timeout on either defers (below), and so does kIpv4Only, which never asks AAAA
//     (the domain may have IPv6 mail service) and so defers 4.4.4 as below.
//   - Otherwise no host left: when some host's lookup was a local failure and
//     gave nothing, defer 4.4.3 with MxVerdict::local set ("a.test: resolver queue
//     full"): the plan is incomplete for want of room on our side, whatever the
//     other hosts' answers said. Otherwise, when some host's lookup failed
//     (SERVFAIL or timeout) and gave nothing, defer 4.4.3 (the next try may
//     resolve it); otherwise defer
//     4.4.4 ("unable to route", RFC 3463) with the reasons, e.g. "no usable address:
//     mx.a.test: 10.0.0.1 is a private address". A deferral rather than a bounce:
//     a zone or our config can be fixed within max_age, and a domain that wants no
//     mail says so with a Null MX or no records at all. This covers MX hosts
//     without A/AAAA, and an implicit MX whose addresses our policy refuses.
//
// LIMITS
//   kMaxDomainLength (253) and 63 octets a label; MxOptions::max_mx_hosts (10) and
//   max_addresses_per_host (8); each reason list is at most kMaxNotes entries.
//
// CONTRACT
//   Plain functions of their arguments. Names must be in ASCII (A-labels): an
//   internationalised domain is converted before it gets here.
#ifndef VOLLEY_DNS_MX_H_
#define VOLLEY_DNS_MX_H_

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dns/routes.h"

namespace volley::dns {

inline constexpr size_t kMaxDomainLength = 253;
inline constexpr size_t kMaxLabelLength = 63;
// Bound on MxHostList::skipped and MxPlan::refused: the first reasons say enough.
inline constexpr size_t kMaxNotes = 16;

// NormalizeDomain - "MX.A.Test." -> "mx.a.test"; nullopt unless every label is
// 1..63 letters, digits and hyphens (not first or last) and the whole is 1..253
// octets. "." (the root, Null MX's exchange) is not a valid name.
std::optional<std::string> NormalizeDomain(std::string_view name);

// IpAddress - an IPv4 or IPv6 address as a value.
struct IpAddress {
  int family = AF_UNSPEC;          // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};  // network order; AF_INET uses the first 4

  static IpAddress V4(const in_addr& a);
  static IpAddress V6(const in6_addr& a);
  // "192.0.2.1" or "2001:db8::1"; nullopt otherwise.
  static std::optional<IpAddress> Parse(std::string_view text);
  std::string ToString() const;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// MakeEndpoint - the address and port as routes.h's Endpoint (name
// "192.0.2.1:25" or "[2001:db8::1]:25"), ready for connect().
Endpoint MakeEndpoint(const IpAddress& ip, uint16_t port);

enum class AddressClass : uint8_t {
  kGlobal,       // globally routable unicast: always usable
  kLoopback,     // 127.0.0.0/8, ::1: with allow_loopback
  kPrivate,      // 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10: with allow_private
  kUnspecified,  // 0.0.0.0/8, ::
  kLinkLocal,    // 169.254/16, fe80::/10
  kMulticast,    // 224/4, ff00::/8
  kReserved,     // documentation, benchmarking, 240/4, broadcast, mapped, outside 2000::/3...
};
AddressClass ClassifyAddress(const IpAddress& ip);
// "a loopback address", "a private address", ... for the reasons.
std::string_view AddressClassName(AddressClass c);

// How a DNS question ended. kServFail covers SERVFAIL, REFUSED, a timeout and
// any other failure that says nothing about the name: retry later.
enum class AnswerKind : uint8_t { kOk, kNoData, kNxDomain, kServFail };
std::string_view AnswerKindName(AnswerKind kind);  // "ok", "nodata", "nxdomain", "servfail"

// The question types the mailer asks (dns/cache.h, dns/wire.h); the values are the DNS type numbers.
enum class RrType : uint16_t { kA = 1, kMx = 15, kAaaa = 28 };

struct MxRecord {
  uint16_t preference = 0;
  std::string exchange;  // as received; "." (or "") is Null MX's
  friend bool operator==(const MxRecord&, const MxRecord&) = default;
};

// DnsAnswer - one answer for one (name, type), as the resolver gives it and the
// cache keeps it. `mx` is filled for an MX question, `addresses` for A/AAAA.
struct DnsAnswer {
  AnswerKind kind = AnswerKind::kServFail;
  std::vector<MxRecord> mx;
  std::vector<IpAddress> addresses;
  // Seconds: the smallest TTL of the RRset (kOk), the negative TTL of RFC 2308
  // section 5, min(SOA TTL, SOA MINIMUM) (kNoData, kNxDomain); ignored for
  // kServFail. The cache clamps it.
  uint32_t ttl = 0;
  // No server said this: our own bound (the resolver's queue full, or no file
  // descriptor for a socket) refused the question, kind is kServFail. Never
  // cached, never a delivery attempt. local_why says which, for the logs (a
  // static string).
  bool local = false;
  std::string_view local_why;
};

enum class AddressFamilies : uint8_t { kIpv4First, kIpv6First, kIpv4Only };

struct MxOptions {
  // Accept 127.0.0.0/8 and ::1 (the product's [dns] allow_loopback). Default: false.
  bool allow_loopback = false;
  // Accept private ranges (RFC 1918, 100.64.0.0/10, fc00::/7). Default: false.
  bool allow_private = false;
  // Family order of each host's addresses. Default: IPv4 first (bulk senders'
  // IPv4 reputation and reverse DNS are usually the established ones).
  AddressFamilies families = AddressFamilies::kIpv4First;
  // MX hosts considered, most preferred first. Default: 10.
  size_t max_mx_hosts = 10;
  // Addresses kept per host, after filtering. Default: 8.
  size_t max_addresses_per_host = 8;
};

// WantsAaaa - whether the driver needs the AAAA answers at all.
inline bool WantsAaaa(const MxOptions& options) {
  return options.families != AddressFamilies::kIpv4Only;
}

// MxVerdict - the end of the road for this attempt, no connection made.
struct MxVerdict {
  bool permanent = false;  // bounce (true) or defer
  std::string enhanced;    // RFC 3463: "5.1.10", "5.1.2", "5.1.3", "4.4.3", "4.4.4"
  std::string reason;      // for the delivery log's response
  // No lookup answered: one of our own bounds refused it (the resolver's queue,
  // the cache's questions in flight, the router's plans); always a 4.4.3
  // deferral. The engine retries soon and counts no attempt.
  bool local = false;
};

struct MxHost {
  std::string name;  // normalised
  uint16_t preference = 0;
};

struct MxHostList {
  std::optional<MxVerdict> verdict;  // set: nothing to resolve, hosts is empty
  std::string domain;                // normalised
  bool implicit = false;             // no MX records: the domain itself
  std::vector<MxHost> hosts;         // in the order to try
  std::string site;
  std::vector<std::string> skipped;  // records not used, and why
};

// SiteKey - the exchanges sorted by preference, then name, joined with ",":
// independent of the order of the answer, so two domains published with the same
// exchanges at the same preferences share one key.
std::string SiteKey(std::span<const MxHost> hosts);

// SelectMxHosts - the MX answer for `domain` into the hosts to resolve.
// `random` is called only to shuffle equal preferences; an empty one leaves
// them in name order.
MxHostList SelectMxHosts(std::string_view domain, const DnsAnswer& mx, const MxOptions& options,
                         const std::function<uint64_t()>& random);

// HostAnswers - the address answers of one host; nullptr for a question not asked
// (AAAA under kIpv4Only), which gives no addresses, like NODATA, but is no proof
// that the name has none (an implicit MX is bounced only on answers received).
struct HostAnswers {
  const DnsAnswer* a = nullptr;
  const DnsAnswer* aaaa = nullptr;
};

struct PlannedHost {
  std::string name;
  uint16_t preference = 0;
  std::vector<IpAddress> addresses;  // never empty
};

struct MxPlan {
  std::optional<MxVerdict> verdict;  // set: hosts is empty
  std::string site;
  std::vector<PlannedHost> hosts;
  std::vector<std::string> refused;  // hosts and addresses left out, and why
};

// PlanDelivery - answers[i] belongs to list.hosts[i]; a host without an entry
// gives no addresses, as if not asked. A list that carries a verdict passes it on.
MxPlan PlanDelivery(const MxHostList& list, std::span<const HostAnswers> answers,
                    const MxOptions& options);

}  // namespace volley::dns

#endif  // VOLLEY_DNS_MX_H_
