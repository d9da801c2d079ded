// host_port.h - "HOST:PORT" text, split and checked once for every program
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(HostPort hp, ParseHostPort("[::1]:2525"));   // host "::1", 2525
//   ASSIGN_OR_RETURN(HostPort any, ParseHostPort("127.0.0.1:0", PortZero::kAllow));
//   sockaddr_storage ss; socklen_t len;
//   if (IpLiteralAddress(hp, &ss, &len)) connect(fd, (sockaddr*)&ss, len);
//   std::string text = FormatHostPort(hp);                       // "[::1]:2525"
//
// DESCRIPTION
//   One address and port as the config, routes and command lines write them:
//   "127.0.0.1:25", "[::1]:2525" (an IPv6 literal always in brackets, since its
//   own colons would make the port ambiguous), "mx.example:25". The parser only
//   splits and checks the syntax; whether HOST must be an IP literal, may be
//   "localhost" or a name is the caller's rule (IpLiteralAddress helps with the
//   first). It knows nothing of mail: dns/ (routes, resolver servers), engine
//   (listen addresses), volleyctl, volley-sink and volley-load share it.
//
// ERRORS
//   InvalidArgument with a short reason, without the text itself (callers name
//   the flag or key and quote the text): "expected HOST:PORT" (no colon, or an
//   empty host), "expected [IPv6]:PORT" (an unclosed bracket, nothing or not ":"
//   after "]", or an unbracketed host with a colon), "port must be 1..65535"
//   ("0..65535" with PortZero::kAllow; digits only).
//
// BOUNDS
//   PORT is at most 5 digits; HOST is not length-checked here (a caller that
//   resolves it does).
#ifndef VOLLEY_BASE_HOST_PORT_H_
#define VOLLEY_BASE_HOST_PORT_H_

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace volley::base {

struct HostPort {
  std::string host;        // without brackets: "::1", "127.0.0.1", "mx.example"
  uint16_t port = 0;
  bool bracketed = false;  // written as "[host]:port"
};

// Whether port 0 ("pick a free one" to bind) is a valid port for the caller.
enum class PortZero { kRefuse, kAllow };

// ParseHostPort - split and check "HOST:PORT" or "[HOST]:PORT".
absl::StatusOr<HostPort> ParseHostPort(std::string_view text, PortZero zero = PortZero::kRefuse);

// FormatHostPort - the canonical text: brackets around a host holding a colon.
std::string FormatHostPort(std::string_view host, uint16_t port);
inline std::string FormatHostPort(const HostPort& hp) { return FormatHostPort(hp.host, hp.port); }

// IpLiteralAddress - fill `addr`/`len` when hp.host is an IPv4 or IPv6 literal
// (IPv6 only when it was bracketed); false when it is anything else (a name).
bool IpLiteralAddress(const HostPort& hp, sockaddr_storage* addr, socklen_t* len);

}  // namespace volley::base

#endif  // VOLLEY_BASE_HOST_PORT_H_
