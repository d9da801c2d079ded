// routes.h - static mail routing: which host and port take a domain's mail
//
// SYNOPSIS
//   auto routes = StaticRoutes::Create({{"example.test", "127.0.0.1:2525"},
//                                       {"*", "127.0.0.1:2526"}});
//   const Route* r = routes->Find("user@example.test" domain part);
//   for (const Endpoint& host : r->hosts) ...   // in order of preference
//
// DESCRIPTION
//   The [routes] table of the config: a domain (case-insensitive, exact match)
//   or "*" (every other domain) maps to HOST:PORT, or to several separated by
//   commas ("127.0.0.1:2526,127.0.0.1:2525"), tried in that order as the MX hosts
//   of a domain are (RFC 5321 section 5.1): a host that cannot be reached or that
//   refuses the session sends the client on to the next. Until MX resolution lands this
//   is the only routing; afterwards it stays as an override (a smart host).
//   HOST is an IPv4 or IPv6 literal ("[::1]:25"): the table never needs a name
//   lookup, so a static route can never reach anything the operator did not name.
//
// ERRORS
//   Create returns InvalidArgument naming the entry: "routes.\"a.test\": port
//   must be 1..65535".
#ifndef VOLLEY_DNS_ROUTES_H_
#define VOLLEY_DNS_ROUTES_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace volley::dns {

// Endpoint - where to connect: one address and port. `name` ("127.0.0.1:2525")
// keys the connection pool and is what the delivery log shows. (Not a
// "destination": in the engine that is the pool of one route, with its limits.)
struct Endpoint {
  std::string name;
  std::string host;  // the address literal, without brackets
  uint16_t port = 0;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  // Routed by DNS: the MX host this address belongs to and its preference (hosts
  // of equal preference share the load). A static route's hosts have no name and
  // preferences 0, 1, 2... in the order written: tried strictly in that order.
  std::string mx;
  uint16_t preference = 0;
};

// ParseHostPort - "1.2.3.4:25" or "[::1]:25" into an Endpoint (base/host_port.h
// checks the syntax; here HOST must also be an IP literal).
absl::StatusOr<Endpoint> ParseHostPort(std::string_view text);

// Route - the hosts that take a domain's mail, most preferred first. `name` joins
// the hosts' names with ","; it keys the connection pool.
struct Route {
  std::string name;
  std::vector<Endpoint> hosts;  // never empty
};

// ParseRoute - "HOST:PORT[,HOST:PORT...]" (spaces around commas allowed).
absl::StatusOr<Route> ParseRoute(std::string_view text);

class StaticRoutes {
 public:
  static absl::StatusOr<std::unique_ptr<StaticRoutes>> Create(
      const std::vector<std::pair<std::string, std::string>>& table);

  // The route for `domain`, or nullptr when no entry (and no "*") matches.
  const Route* Find(std::string_view domain) const;

 private:
  absl::flat_hash_map<std::string, Route> by_domain_;
  std::unique_ptr<Route> fallback_;
};

}  // namespace volley::dns

#endif  // VOLLEY_DNS_ROUTES_H_
