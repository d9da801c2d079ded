// NAME
//   listen.h - volley-sink's listening addresses: "HOST:PORT" and IPv4 ranges
//
// SYNOPSIS
//   #include "engine/smtpd/listen.h"
//
//   ASSIGN_OR_RETURN(ListenGroup g, ExpandListen("127.0.1.1-250:2525"));
//   for (const std::string& a : g.addresses) ...;        // "127.0.1.1:2525", ...
//   sockaddr_storage ss;
//   socklen_t len;
//   RETURN_IF_ERROR(ParseListenAddress("[::1]:2525", &ss, &len));
//
// DESCRIPTION
//   One --listen argument names one address, "HOST:PORT" (HOST an IPv4 literal,
//   "localhost" or a bracketed IPv6 literal), or a range of IPv4 addresses on one
//   port: "A-B:PORT" where A is an IPv4 literal and B either a whole IPv4 literal
//   ("127.0.1.1-127.0.2.10:2525") or a last octet ("127.0.1.1-250:2525"), both
//   ends included. On Linux every address of 127.0.0.0/8 is local, so one range
//   lets one sink stand for thousands of destination hosts with no set-up.
//
//   Expanded addresses are written back as "a.b.c.d:PORT", the text a
//   [listener."..."] profile entry may name.
//
// DIAGNOSTICS
//   InvalidArgument, naming the argument: no ":PORT", a bad port, a bad address,
//   a range whose end is before its start, an IPv6 or "localhost" range, or a
//   range of more than kMaxRangeAddresses addresses.
//
// BOUNDS
//   A range names at most kMaxRangeAddresses addresses.
#ifndef VOLLEY_ENGINE_SMTPD_LISTEN_H_
#define VOLLEY_ENGINE_SMTPD_LISTEN_H_

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::smtpd {

// Addresses one range may name: a /16's worth, far more than the listening sockets
// a usual RLIMIT_NOFILE allows.
inline constexpr size_t kMaxRangeAddresses = 65536;

// What one --listen argument names.
struct ListenGroup {
  std::string arg;                     // the argument as given
  std::vector<std::string> addresses;  // "HOST:PORT" each; one unless a range
  bool range = false;
  uint16_t port = 0;                   // the same for every address
};

// ExpandListen - one --listen argument into its addresses (see DESCRIPTION).
absl::StatusOr<ListenGroup> ExpandListen(std::string_view arg);

// ParseListenAddress - one "HOST:PORT" (no range) into a socket address.
absl::Status ParseListenAddress(std::string_view text, sockaddr_storage* ss, socklen_t* len);

// FormatAddress - "127.0.0.1:2525" or "[::1]:2525".
std::string FormatAddress(const sockaddr_storage& ss);

}  // namespace volley::smtpd

#endif  // VOLLEY_ENGINE_SMTPD_LISTEN_H_
