// listen.cc - volley-sink's listening addresses; see listen.h.
#include "engine/smtpd/listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/str_cat.h"
#include "base/host_port.h"
#include "base/strings.h"

namespace volley::smtpd {
namespace {

// Av - Debian 12's absl::string_view is not std::string_view; convert for StrCat.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Bad(std::string_view arg, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--listen '", Av(arg), "': ", Av(why)));
}

// SplitPort - "HOST:PORT" into HOST (brackets kept, so that a range can tell an
// IPv6 literal) and the port number; port 0 binds a free one.
absl::Status SplitPort(std::string_view text, std::string* host, uint16_t* port) {
  auto where = base::ParseHostPort(text, base::PortZero::kAllow);
  if (!where.ok()) return Bad(text, base::StdSv(where.status().message()));
  *host = where->bracketed ? absl::StrCat("[", where->host, "]") : where->host;
  *port = where->port;
  return absl::OkStatus();
}

// ParseIpv4 - a dotted IPv4 literal as a host-order number.
bool ParseIpv4(std::string_view text, uint32_t* out) {
  in_addr a;
  if (inet_pton(AF_INET, std::string(text).c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

std::string Ipv4Text(uint32_t host_order) {
  in_addr a;
  a.s_addr = htonl(host_order);
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, text, sizeof(text));
  return text;
}

}  // namespace

absl::Status ParseListenAddress(std::string_view text, sockaddr_storage* ss, socklen_t* len) {
  std::string host;
  uint16_t port = 0;
  if (absl::Status st = SplitPort(text, &host, &port); !st.ok()) return st;
  *ss = {};
  if (host == "localhost") host = "127.0.0.1";
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a->sin6_addr) != 1) {
      return Bad(text, "bad IPv6 address");
    }
    *len = sizeof(sockaddr_in6);
    return absl::OkStatus();
  }
  auto* a = reinterpret_cast<sockaddr_in*>(ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) {
    return Bad(text, "want an IPv4 literal, localhost or [IPv6]");
  }
  *len = sizeof(sockaddr_in);
  return absl::OkStatus();
}

std::string FormatAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
  return absl::StrCat(host, ":", ntohs(a->sin_port));
}

absl::StatusOr<ListenGroup> ExpandListen(std::string_view arg) {
  ListenGroup g;
  g.arg = std::string(arg);
  std::string host_text;
  if (absl::Status st = SplitPort(arg, &host_text, &g.port); !st.ok()) return st;
  const std::string_view host = host_text;
  const size_t dash = host.find('-');
  if (dash == std::string_view::npos || host.front() == '[') {
    // One address (an IPv6 literal never holds a '-').
    sockaddr_storage ss;
    socklen_t len = 0;
    if (absl::Status st = ParseListenAddress(arg, &ss, &len); !st.ok()) return st;
    g.addresses.push_back(g.arg);
    return g;
  }
  g.range = true;
  const std::string_view first_text = host.substr(0, dash);
  const std::string_view last_text = host.substr(dash + 1);
  uint32_t first = 0;
  uint32_t last = 0;
  if (!ParseIpv4(first_text, &first)) {
    return Bad(arg, "a range is IPv4 only: want A-B:PORT or A-LASTOCTET:PORT, A an IPv4 literal");
  }
  if (last_text.find('.') != std::string_view::npos) {
    if (!ParseIpv4(last_text, &last)) return Bad(arg, "the range's end is not an IPv4 literal");
  } else {
    uint32_t octet = 0;
    bool ok = !last_text.empty() && last_text.size() <= 3;
    for (char c : last_text) {
      if (c < '0' || c > '9') ok = false;
      octet = octet * 10 + static_cast<uint32_t>(c - '0');
    }
    if (!ok || octet > 255) {
      return Bad(arg, "the range's end is neither an IPv4 literal nor a last octet 0..255");
    }
    last = (first & 0xffffff00u) | octet;
  }
  if (last < first) return Bad(arg, "the range ends before it starts");
  const uint64_t count = uint64_t{last} - first + 1;
  if (count > kMaxRangeAddresses) {
    return Bad(arg, absl::StrCat(count, " addresses; a range may name at most ",
                                 kMaxRangeAddresses));
  }
  g.addresses.reserve(count);
  for (uint64_t a = first; a <= last; ++a) {
    g.addresses.push_back(absl::StrCat(Ipv4Text(static_cast<uint32_t>(a)), ":", g.port));
  }
  return g;
}

}  // namespace volley::smtpd
