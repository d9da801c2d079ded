#include "dns/routes.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/host_port.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::dns {

absl::StatusOr<Endpoint> ParseHostPort(std::string_view text) {
  auto where = base::ParseHostPort(text);
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", base::Sv(text), "\": ", where.status().message()));
  }
  Endpoint d;
  if (!base::IpLiteralAddress(*where, &d.addr, &d.addr_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", base::Sv(text), "\": host must be an IP address literal (names need DNS routing)"));
  }
  d.host = std::move(where->host);
  d.port = where->port;
  d.name = base::FormatHostPort(d.host, d.port);
  return d;
}

absl::StatusOr<Route> ParseRoute(std::string_view text) {
  Route route;
  for (absl::string_view part : absl::StrSplit(base::Sv(text), ',')) {
    ASSIGN_OR_RETURN(Endpoint host, ParseHostPort(base::StdSv(absl::StripAsciiWhitespace(part))));
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
