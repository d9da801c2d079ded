// host_port.cc - "HOST:PORT" text; see host_port.h.
#include "base/host_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace volley::base {

absl::StatusOr<HostPort> ParseHostPort(std::string_view text, PortZero zero) {
  HostPort hp;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':' ||
        close == 1) {
      return absl::InvalidArgumentError("expected [IPv6]:PORT");
    }
    hp.host = std::string(text.substr(1, close - 1));
    hp.bracketed = true;
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError("expected HOST:PORT");
    }
    // "::1:25" could be ::1 port 25 or ::1:25 with no port: refuse to guess.
    if (text.substr(0, colon).find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError("expected [IPv6]:PORT");
    }
    hp.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  const uint32_t min_port = zero == PortZero::kAllow ? 0 : 1;
  uint32_t port = 0;
  bool ok = !port_text.empty() && port_text.size() <= 5;
  for (char c : port_text) {
    if (c < '0' || c > '9') ok = false;
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!ok || port < min_port || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port must be ", min_port, "..65535"));
  }
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

std::string FormatHostPort(std::string_view host, uint16_t port) {
  const absl::string_view h(host.data(), host.size());
  return host.find(':') != std::string_view::npos ? absl::StrCat("[", h, "]:", port)
                                                  : absl::StrCat(h, ":", port);
}

bool IpLiteralAddress(const HostPort& hp, sockaddr_storage* addr, socklen_t* len) {
  *addr = {};
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (!hp.bracketed && inet_pton(AF_INET, hp.host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(hp.port);
    std::memcpy(addr, &v4, sizeof v4);
    *len = sizeof v4;
    return true;
  }
  if (hp.bracketed && inet_pton(AF_INET6, hp.host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(hp.port);
    std::memcpy(addr, &v6, sizeof v6);
    *len = sizeof v6;
    return true;
  }
  return false;
}

}  // namespace volley::base
