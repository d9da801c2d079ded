#include "dns/routes.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::dns {

absl::StatusOr<Destination> ParseHostPort(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", base::Sv(text), "\": expected [IPv6]:PORT"));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("\"", base::Sv(text), "\": expected HOST:PORT"));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(base::Sv(port_text), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", base::Sv(text), "\": port must be 1..65535"));
  }
  Destination d;
  d.host = std::string(host);
  d.port = static_cast<uint16_t>(port);
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (inet_pton(AF_INET, d.host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(d.port);
    std::memcpy(&d.addr, &v4, sizeof v4);
    d.addr_len = sizeof v4;
    d.name = absl::StrCat(d.host, ":", d.port);
  } else if (inet_pton(AF_INET6, d.host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(d.port);
    std::memcpy(&d.addr, &v6, sizeof v6);
    d.addr_len = sizeof v6;
    d.name = absl::StrCat("[", d.host, "]:", d.port);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", base::Sv(text), "\": host must be an IP address literal (names need DNS routing)"));
  }
  return d;
}

absl::StatusOr<Route> ParseRoute(std::string_view text) {
  Route route;
  for (absl::string_view part : absl::StrSplit(base::Sv(text), ',')) {
    ASSIGN_OR_RETURN(Destination host, ParseHostPort(base::StdSv(absl::StripAsciiWhitespace(part))));
    if (!route.name.empty()) route.name += ",";
    route.name += host.name;
    host.preference = static_cast<uint16_t>(std::min<size_t>(route.hosts.size(), UINT16_MAX));
    route.hosts.push_back(std::move(host));
  }
  return route;
}

absl::StatusOr<std::unique_ptr<StaticRoutes>> StaticRoutes::Create(
    const std::vector<std::pair<std::string, std::string>>& table) {
  auto routes = std::unique_ptr<StaticRoutes>(new StaticRoutes);
  for (const auto& [domain, target] : table) {
    auto route = ParseRoute(target);
    if (!route.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("routes.\"", domain, "\": ", route.status().message()));
    }
    if (domain == "*") {
      routes->fallback_ = std::make_unique<Route>(*std::move(route));
    } else {
      routes->by_domain_[absl::AsciiStrToLower(domain)] = *std::move(route);
    }
  }
  return routes;
}

const Route* StaticRoutes::Find(std::string_view domain) const {
  auto it = by_domain_.find(absl::AsciiStrToLower(base::Sv(domain)));
  if (it != by_domain_.end()) return &it->second;
  return fallback_.get();
}

}  // namespace volley::dns
