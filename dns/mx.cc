#include "dns/mx.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/strings.h"

namespace volley::dns {
namespace {

void AddNote(std::vector<std::string>* notes, std::string note) {
  if (notes->size() < kMaxNotes) notes->push_back(std::move(note));
}

// Shown in reasons: a domain as received may be anything, so it is clipped.
std::string_view Clip(std::string_view text) { return text.substr(0, kMaxDomainLength); }

bool IsNullExchange(std::string_view exchange) { return exchange.empty() || exchange == "."; }

MxVerdict Verdict(bool permanent, std::string enhanced, std::string reason) {
  MxVerdict v;
  v.permanent = permanent;
  v.enhanced = std::move(enhanced);
  v.reason = std::move(reason);
  return v;
}

// LocalVerdict - a lookup our resolver refused (its queue full): no server's
// word, so no SERVFAIL either; retried soon (MxVerdict::local).
MxVerdict LocalVerdict(const std::string& domain, std::string_view why) {
  MxVerdict v = Verdict(false, "4.4.3",
                        absl::StrCat(domain, ": ", base::Sv(why.empty() ? "resolver queue full" : why)));
  v.local = true;
  return v;
}

AddressClass ClassifyV4(const uint8_t* b) {
  if (b[0] == 0) return AddressClass::kUnspecified;
  if (b[0] == 127) return AddressClass::kLoopback;
  if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
      (b[0] == 100 && (b[1] & 0xc0) == 64)) {
    return AddressClass::kPrivate;
  }
  if (b[0] == 169 && b[1] == 254) return AddressClass::kLinkLocal;
  if (b[0] >= 224 && b[0] <= 239) return AddressClass::kMulticast;
  if (b[0] >= 240) return AddressClass::kReserved;  // 240/4 and 255.255.255.255
  // IETF protocol assignments, the three documentation nets, the old 6to4 relay
  // anycast, and the benchmarking net: never a real mail server.
  if ((b[0] == 192 && b[1] == 0 && (b[2] == 0 || b[2] == 2)) ||
      (b[0] == 198 && b[1] == 51 && b[2] == 100) || (b[0] == 203 && b[1] == 0 && b[2] == 113) ||
      (b[0] == 192 && b[1] == 88 && b[2] == 99) || (b[0] == 198 && (b[1] & 0xfe) == 18)) {
    return AddressClass::kReserved;
  }
  return AddressClass::kGlobal;
}

bool AllZero(const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

AddressClass ClassifyV6(const uint8_t* b) {
  if (AllZero(b, 16)) return AddressClass::kUnspecified;
  if (AllZero(b, 15) && b[15] == 1) return AddressClass::kLoopback;
  // ::ffff:0:0/96 (mapped) and ::/96 (compatible): an AAAA record has no business
  // holding either, and one could smuggle 127.0.0.1 past the IPv4 checks.
  if (AllZero(b, 12) || (AllZero(b, 10) && b[10] == 0xff && b[11] == 0xff)) {
    return AddressClass::kReserved;
  }
  if (b[0] == 0xff) return AddressClass::kMulticast;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return AddressClass::kPrivate;  // site-local
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::kPrivate;                   // ULA
  // 64:ff9b::/96, NAT64: as good as the IPv4 address it carries.
  static constexpr uint8_t kNat64[12] = {0x00, 0x64, 0xff, 0x9b};
  if (std::memcmp(b, kNat64, 12) == 0) return ClassifyV4(b + 12);
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) {
    return AddressClass::kReserved;  // 2001:db8::/32, documentation
  }
  if ((b[0] & 0xe0) == 0x20) return AddressClass::kGlobal;  // 2000::/3
  return AddressClass::kReserved;
}

// HasNoAddressRecords - whether the implicit MX's A and AAAA questions were both
// asked and both said the name has no such records (NODATA, or NXDOMAIN though the
// MX question found the name). A question not asked (AAAA under kIpv4Only) or a
// failed one (SERVFAIL, timeout) proves nothing: a bounce feeds suppression lists,
// so it needs both answers.
bool HasNoAddressRecords(std::span<const HostAnswers> answers) {
  if (answers.empty()) return false;
  auto negative = [](const DnsAnswer* a) {
    return a != nullptr && (a->kind == AnswerKind::kNoData || a->kind == AnswerKind::kNxDomain);
  };
  return negative(answers[0].a) && negative(answers[0].aaaa);
}

bool Allowed(AddressClass c, const MxOptions& options) {
  switch (c) {
    case AddressClass::kGlobal:
      return true;
    case AddressClass::kLoopback:
      return options.allow_loopback;
    case AddressClass::kPrivate:
      return options.allow_private;
    default:
      return false;
  }
}

}  // namespace

std::optional<std::string> NormalizeDomain(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > kMaxDomainLength) return std::nullopt;
  std::string out;
  out.reserve(name.size());
  size_t label = 0;
  char prev = '.';
  for (char ch : name) {
    if (ch == '.') {
      if (label == 0 || prev == '-') return std::nullopt;
      label = 0;
    } else {
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      const bool ldh = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
      if (!ldh || (ch == '-' && label == 0) || ++label > kMaxLabelLength) return std::nullopt;
    }
    out.push_back(ch);
    prev = ch;
  }
  if (label == 0 || prev == '-') return std::nullopt;  // "a.test.." ends in an empty label
  return out;
}

IpAddress IpAddress::V4(const in_addr& a) {
  IpAddress ip;
  ip.family = AF_INET;
  std::memcpy(ip.bytes.data(), &a, 4);
  return ip;
}

IpAddress IpAddress::V6(const in6_addr& a) {
  IpAddress ip;
  ip.family = AF_INET6;
  std::memcpy(ip.bytes.data(), &a, 16);
  return ip;
}

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  // inet_pton wants a terminated string; anything this long is no address.
  if (text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return V4(v4);
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) return V6(v6);
  return std::nullopt;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family != AF_INET && family != AF_INET6) return "(no address)";
  if (inet_ntop(family, bytes.data(), buf, sizeof buf) == nullptr) return "(no address)";
  return buf;
}

Endpoint MakeEndpoint(const IpAddress& ip, uint16_t port) {
  Endpoint d;
  d.host = ip.ToString();
  d.port = port;
  if (ip.family == AF_INET6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    std::memcpy(&v6.sin6_addr, ip.bytes.data(), 16);
    std::memcpy(&d.addr, &v6, sizeof v6);
    d.addr_len = sizeof v6;
    d.name = absl::StrCat("[", d.host, "]:", port);
  } else {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    std::memcpy(&v4.sin_addr, ip.bytes.data(), 4);
    std::memcpy(&d.addr, &v4, sizeof v4);
    d.addr_len = sizeof v4;
    d.name = absl::StrCat(d.host, ":", port);
  }
  return d;
}

AddressClass ClassifyAddress(const IpAddress& ip) {
  if (ip.family == AF_INET) return ClassifyV4(ip.bytes.data());
  if (ip.family == AF_INET6) return ClassifyV6(ip.bytes.data());
  return AddressClass::kUnspecified;
}

std::string_view AddressClassName(AddressClass c) {
  switch (c) {
    case AddressClass::kGlobal:
      return "a global address";
    case AddressClass::kLoopback:
      return "a loopback address";
    case AddressClass::kPrivate:
      return "a private address";
    case AddressClass::kUnspecified:
      return "an unspecified address";
    case AddressClass::kLinkLocal:
      return "a link-local address";
    case AddressClass::kMulticast:
      return "a multicast address";
    case AddressClass::kReserved:
      return "a reserved address";
  }
  return "an unknown address";
}

std::string_view AnswerKindName(AnswerKind kind) {
  switch (kind) {
    case AnswerKind::kOk:
      return "ok";
    case AnswerKind::kNoData:
      return "nodata";
    case AnswerKind::kNxDomain:
      return "nxdomain";
    case AnswerKind::kServFail:
      return "servfail";
  }
  return "unknown";
}

std::string SiteKey(std::span<const MxHost> hosts) {
  std::vector<const MxHost*> sorted;
  sorted.reserve(hosts.size());
  for (const MxHost& h : hosts) sorted.push_back(&h);
  std::sort(sorted.begin(), sorted.end(), [](const MxHost* a, const MxHost* b) {
    return std::tie(a->preference, a->name) < std::tie(b->preference, b->name);
  });
  std::string key;
  for (const MxHost* h : sorted) {
    if (!key.empty()) key += ",";
    key += h->name;
  }
  return key;
}

MxHostList SelectMxHosts(std::string_view domain, const DnsAnswer& mx, const MxOptions& options,
                         const std::function<uint64_t()>& random) {
  MxHostList list;
  std::optional<std::string> normal = NormalizeDomain(domain);
  if (!normal) {
    list.verdict = Verdict(true, "5.1.3",
                           absl::StrCat("invalid domain name \"", base::Sv(Clip(domain)), "\""));
    return list;
  }
  list.domain = *std::move(normal);
  const std::string& d = list.domain;

  switch (mx.kind) {
    case AnswerKind::kNxDomain:
      list.verdict = Verdict(true, "5.1.2", absl::StrCat(d, ": no such domain (NXDOMAIN)"));
      return list;
    case AnswerKind::kServFail:
      list.verdict = mx.local
                         ? LocalVerdict(d, mx.local_why)
                         : Verdict(false, "4.4.3",
                                   absl::StrCat(d, ": MX lookup failed (SERVFAIL or timeout)"));
      return list;
    case AnswerKind::kNoData:
    case AnswerKind::kOk:
      break;
  }
  if (mx.kind == AnswerKind::kNoData || mx.mx.empty()) {
    list.implicit = true;
    list.hosts.push_back(MxHost{d, 0});
    list.site = d;
    return list;
  }

  size_t null_records = 0;
  std::vector<MxHost> hosts;
  for (const MxRecord& r : mx.mx) {
    if (IsNullExchange(r.exchange)) {
      ++null_records;
      continue;
    }
    std::optional<std::string> name = NormalizeDomain(r.exchange);
    if (!name) {
      AddNote(&list.skipped, absl::StrCat("MX ", r.preference, " \"",
                                          base::Sv(Clip(r.exchange)), "\": invalid host name"));
      continue;
    }
    auto same = std::find_if(hosts.begin(), hosts.end(),
                             [&](const MxHost& h) { return h.name == *name; });
    if (same != hosts.end()) {
      same->preference = std::min(same->preference, r.preference);
    } else {
      hosts.push_back(MxHost{*std::move(name), r.preference});
    }
  }
  if (null_records == mx.mx.size()) {
    list.verdict = Verdict(true, "5.1.10",
                           absl::StrCat(d, " does not accept mail (null MX, RFC 7505)"));
    return list;
  }
  if (null_records > 0) {
    AddNote(&list.skipped, "MX \".\": null MX among other MX records (a zone error, RFC 7505 "
                           "section 3): ignored");
  }
  if (hosts.empty()) {
    list.verdict =
        Verdict(false, "4.4.4",
                absl::StrCat(d, ": no usable MX host: ", absl::StrJoin(list.skipped, "; ")));
    return list;
  }

  std::sort(hosts.begin(), hosts.end(), [](const MxHost& a, const MxHost& b) {
    return std::tie(a.preference, a.name) < std::tie(b.preference, b.name);
  });
  const size_t limit = std::max<size_t>(options.max_mx_hosts, 1);
  if (hosts.size() > limit) {
    AddNote(&list.skipped, absl::StrCat(hosts.size() - limit, " MX hosts past the limit of ",
                                        limit, " ignored"));
    hosts.resize(limit);
  }
  list.site = SiteKey(hosts);

  // Fisher-Yates within each run of equal preference.
  for (size_t begin = 0; begin < hosts.size();) {
    size_t end = begin + 1;
    while (end < hosts.size() && hosts[end].preference == hosts[begin].preference) ++end;
    if (random) {
      for (size_t k = end - begin - 1; k > 0; --k) {
        const size_t j = static_cast<size_t>(random() % (k + 1));
        std::swap(hosts[begin + k], hosts[begin + j]);
      }
    }
    begin = end;
  }
  list.hosts = std::move(hosts);
  return list;
}

MxPlan PlanDelivery(const MxHostList& list, std::span<const HostAnswers> answers,
                    const MxOptions& options) {
  MxPlan plan;
  plan.site = list.site;
  if (list.verdict) {
    plan.verdict = list.verdict;
    return plan;
  }
  const size_t per_host = std::max<size_t>(options.max_addresses_per_host, 1);
  bool any_servfail = false;
  bool any_local = false;
  std::string_view local_why;  // of the first local answer
  std::vector<IpAddress> kept;  // across hosts: an address is tried once
  for (size_t i = 0; i < list.hosts.size(); ++i) {
    const MxHost& host = list.hosts[i];
    const HostAnswers ans = i < answers.size() ? answers[i] : HostAnswers{};
    const DnsAnswer* order[2] = {ans.a, ans.aaaa};
    if (options.families == AddressFamilies::kIpv6First) std::swap(order[0], order[1]);
    if (options.families == AddressFamilies::kIpv4Only) order[1] = nullptr;

    PlannedHost planned;
    planned.name = host.name;
    planned.preference = host.preference;
    bool servfail = false;
    bool local = false;
    bool nxdomain = false;
    size_t listed = 0;
    size_t refused = 0;
    std::string first_refusal;
    for (const DnsAnswer* answer : order) {
      if (answer == nullptr) continue;
      if (answer->kind == AnswerKind::kServFail && answer->local) {
        local = true;
        if (local_why.empty()) local_why = answer->local_why;
      }
      if (answer->kind == AnswerKind::kServFail && !answer->local) servfail = true;
      if (answer->kind == AnswerKind::kNxDomain) nxdomain = true;
      if (answer->kind != AnswerKind::kOk) continue;
      for (const IpAddress& ip : answer->addresses) {
        if (ip.family != AF_INET && ip.family != AF_INET6) continue;
        if (options.families == AddressFamilies::kIpv4Only && ip.family != AF_INET) continue;
        ++listed;
        const AddressClass c = ClassifyAddress(ip);
        if (!Allowed(c, options)) {
          if (refused++ == 0) {
            first_refusal = absl::StrCat(ip.ToString(), " is ", base::Sv(AddressClassName(c)));
          }
          continue;
        }
        if (planned.addresses.size() >= per_host) continue;
        if (std::find(kept.begin(), kept.end(), ip) != kept.end()) continue;
        if (std::find(planned.addresses.begin(), planned.addresses.end(), ip) !=
            planned.addresses.end()) {
          continue;
        }
        planned.addresses.push_back(ip);
      }
    }
    if (refused > 0) {
      std::string note = absl::StrCat(host.name, ": ", first_refusal);
      if (refused > 1) absl::StrAppend(&note, " (and ", refused - 1, " more refused)");
      AddNote(&plan.refused, std::move(note));
    }
    if (planned.addresses.empty()) {
      if (refused > 0 || listed > 0) {
        // Refused (noted above), or every address is already some earlier host's.
      } else if (local) {
        any_local = true;
        AddNote(&plan.refused,
                absl::StrCat(host.name, ": address lookup not made (",
                             base::Sv(local_why.empty() ? "resolver queue full" : local_why), ")"));
      } else if (servfail) {
        any_servfail = true;
        AddNote(&plan.refused,
                absl::StrCat(host.name, ": address lookup failed (SERVFAIL or timeout)"));
      } else if (nxdomain) {
        AddNote(&plan.refused, absl::StrCat(host.name, ": no such host (NXDOMAIN)"));
      } else {
        AddNote(&plan.refused,
                absl::StrCat(host.name, options.families == AddressFamilies::kIpv4Only
                                            ? ": no A record"
                                            : ": no A or AAAA record"));
      }
      continue;
    }
    kept.insert(kept.end(), planned.addresses.begin(), planned.addresses.end());
    plan.hosts.push_back(std::move(planned));
  }
  if (plan.hosts.empty() && list.implicit && HasNoAddressRecords(answers)) {
    // RFC 5321 5.1: no MX and no address records means the domain has no mail
    // service. That is what the zone says, not a failure to learn it (unlike
    // SERVFAIL) nor our policy (unlike a refused address): retrying for days would
    // only delay the bounce, so it comes now, as for NXDOMAIN.
    plan.verdict = Verdict(true, "5.1.2",
                           absl::StrCat("no MX, A or AAAA records for ", list.domain,
                                        ": the domain has no mail service"));
    return plan;
  }
  if (plan.hosts.empty() && any_local) {
    // Some host was never looked up: its answer might have given addresses, so
    // neither 4.4.3 from the servers nor 4.4.4 is known yet.
    plan.verdict = LocalVerdict(list.domain, local_why);
    return plan;
  }
  if (plan.hosts.empty()) {
    const std::string reasons = absl::StrJoin(plan.refused, "; ");
    plan.verdict = any_servfail
                       ? Verdict(false, "4.4.3",
                                 absl::StrCat(list.domain, ": temporary DNS failure: ", reasons))
                       : Verdict(false, "4.4.4",
                                 absl::StrCat(list.domain, ": no usable address: ", reasons));
  }
  return plan;
}

}  // namespace volley::dns
