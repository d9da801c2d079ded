// host_name.h - the names this machine goes by: the EHLO name when [smtp]
// ehlo_name is not set, and the node's name in a cluster
//
// SYNOPSIS
//   const EhloNameChoice& d = DefaultEhloName();   // looked up once per process
//   config.smtp.ehlo_name = d.name;
//   if (!IsQualifiedEhloName(config.smtp.ehlo_name))
//     Warn(EhloNameWarning(config.smtp.ehlo_name));  // at start-up, on stderr
//
//   const std::string node = NodeName(config);   // "node-a", or gethostname()
//
// DESCRIPTION
//   RFC 5321 section 4.1.1.1: the EHLO argument is the client's fully qualified
//   domain name, or an address literal when it has none. Receivers compare it with
//   the connecting address's reverse DNS, and many refuse or score down a bare
//   name such as "vm" or "localhost".
//
//   DefaultEhloName: this machine's own name, as `hostname -f` finds it:
//   gethostname(); when that has no dot, its canonical name from getaddrinfo()
//   with AI_CANONNAME, which reads /etc/hosts and then the resolver in the order
//   of /etc/nsswitch.conf. Only this host's own name is ever looked up, and only
//   once per process (the answer is kept): a resolver that does not answer delays
//   start-up once, by its timeout. The choice between the two is
//   ChooseEhloName's.
//
//   ChooseEhloName, pure: the first of (canonical, host) that is a qualified host
//   name; else the first of (host, canonical) that is a valid host name at all, so
//   that gethostname() is the fallback; else "localhost". Names are normalised
//   (dns::NormalizeDomain: lowercase, one final dot dropped); an invalid one
//   (a character a host name cannot hold) is never chosen.
//
//   IsQualifiedEhloName: an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"),
//   or a name with at least two labels whose last is neither "localdomain" nor
//   "localhost" (what /etc/hosts often maps a host with no real name to).
//
//   NodeName: the name this volleyd writes in every delivery-log record
//   ("node") and as the node label of every volley_* metric, and is known by in
//   the cluster's Redis keys: [cluster] node when set, else gethostname() as the
//   kernel gives it (`hostname`), asked once per process. Not cut at the first
//   dot: node names must differ across a cluster, and "mx1.dc1" and "mx1.dc2"
//   would not. No resolver lookup either (the EHLO name's may differ from it):
//   the name must not depend on DNS answering at start-up. A host whose name
//   cannot be read (gethostname fails or gives "") is "localhost", which
//   docs/cluster.md tells the operator to replace by setting [cluster] node.
//
// DIAGNOSTICS
//   EhloNameWarning names the EHLO name, the rule, and the two ways out
//   (a qualified host name, or [smtp] ehlo_name). volleyd prints it at start-up
//   (engine/main.cc) and runs on: a bare name is legal, only unwise.
#ifndef VOLLEY_ENGINE_HOST_NAME_H_
#define VOLLEY_ENGINE_HOST_NAME_H_

#include <string>
#include <string_view>

namespace volley::engine {

struct Config;

struct EhloNameChoice {
  std::string name;        // never empty; passes smtp::ValidateEhloName
  bool qualified = false;  // IsQualifiedEhloName(name)
};

// ChooseEhloName - from gethostname()'s result and the canonical name ("" when
// the lookup failed). See DESCRIPTION.
EhloNameChoice ChooseEhloName(std::string_view host, std::string_view canonical);

// DefaultEhloName - ChooseEhloName of this machine's names, looked up on the first
// call only. Thread-safe.
const EhloNameChoice& DefaultEhloName();

// IsQualifiedEhloName - an address literal, or a fully qualified domain name.
bool IsQualifiedEhloName(std::string_view name);

// EhloNameWarning - the start-up warning for a name IsQualifiedEhloName refuses.
std::string EhloNameWarning(std::string_view name);

// ChooseNodeName - `configured` ([cluster] node) when set, else `host`
// (gethostname()), else "localhost". Pure.
std::string ChooseNodeName(std::string_view configured, std::string_view host);

// NodeName - ChooseNodeName(config.cluster.node, this machine's host name); the
// host name is read on the first call only. Never empty. Thread-safe.
std::string NodeName(const Config& config);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_HOST_NAME_H_
