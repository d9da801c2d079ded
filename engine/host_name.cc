// host_name.cc - see host_name.h
#include "engine/host_name.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "dns/mx.h"
#include "engine/config.h"

namespace volley::engine {
namespace {

// LocalNames - gethostname() and, when that is not qualified, its canonical name;
// each "" when unavailable.
struct LocalNames {
  std::string host;
  std::string canonical;
};

LocalNames LookUpLocalNames() {
  LocalNames out;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return out;
  out.host = name;
  // A name that is already qualified is this host's FQDN by choice: asking the
  // resolver about it could only delay start-up. A name that is no host name at
  // all is not handed to the resolver either.
  if (out.host.empty() || IsQualifiedEhloName(out.host) || !dns::NormalizeDomain(out.host)) {
    return out;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address, not one per socket type
  hints.ai_flags = AI_CANONNAME;
  addrinfo* found = nullptr;
  if (::getaddrinfo(out.host.c_str(), nullptr, &hints, &found) == 0 && found != nullptr) {
    // Only the first entry carries ai_canonname (getaddrinfo(3)).
    if (found->ai_canonname != nullptr) out.canonical = found->ai_canonname;
  }
  if (found != nullptr) ::freeaddrinfo(found);
  return out;
}

}  // namespace

bool IsQualifiedEhloName(std::string_view name) {
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') return true;
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  const size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return false;
  const std::string_view last = name.substr(dot + 1);
  return !last.empty() && !base::EqualsIgnoreCase(last, "localdomain") &&
         !base::EqualsIgnoreCase(last, "localhost");
}

EhloNameChoice ChooseEhloName(std::string_view host, std::string_view canonical) {
  const std::optional<std::string> h = dns::NormalizeDomain(host);
  const std::optional<std::string> c = dns::NormalizeDomain(canonical);
  for (const std::optional<std::string>* n : {&c, &h}) {
    if (*n && IsQualifiedEhloName(**n)) return EhloNameChoice{**n, true};
  }
  // Nothing qualified: gethostname()'s answer first, as it is what the
  // administrator set.
  for (const std::optional<std::string>* n : {&h, &c}) {
    if (*n) return EhloNameChoice{**n, false};
  }
  return EhloNameChoice{"localhost", false};
}

const EhloNameChoice& DefaultEhloName() {
  static const EhloNameChoice* const kChoice = [] {
    const LocalNames names = LookUpLocalNames();
    return new EhloNameChoice(ChooseEhloName(names.host, names.canonical));
  }();
  return *kChoice;
}

std::string EhloNameWarning(std::string_view name) {
  return absl::StrCat(
      "EHLO name \"", base::Sv(name),
      "\" is not a fully qualified domain name (RFC 5321 section 4.1.1.1); receivers may "
      "refuse or distrust it: give this host a qualified name (/etc/hosts or DNS) or set "
      "[smtp] ehlo_name to one");
}

std::string ChooseNodeName(std::string_view configured, std::string_view host) {
  if (!configured.empty()) return std::string(configured);
  if (!host.empty()) return std::string(host);
  return "localhost";
}

std::string NodeName(const Config& config) {
  static const std::string* const kHost = [] {
    char name[256] = {};
    // POSIX leaves a truncated name unterminated: the last byte stays 0.
    const bool ok = ::gethostname(name, sizeof name - 1) == 0;
    return new std::string(ok ? name : "");
  }();
  return ChooseNodeName(config.cluster.node, *kHost);
}

}  // namespace volley::engine
