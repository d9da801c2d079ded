#include "engine/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/host_port.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/toml_reader.h"
#include "dns/routes.h"
#include "engine/config_sections.h"
#include "engine/dkim/dkim.h"
#include "engine/host_name.h"
#include "engine/smtp/client.h"
#include "engine/token/token.h"
#include "queue/job.h"
#include "toml++/toml.h"

namespace volley::engine {
namespace {

using base::GetBool;
using base::GetInt;
using base::GetIntInto;
using base::GetString;
using base::GetStringList;
using base::ReadTable;
using base::TablesOf;
using base::TomlFile;
using base::TomlKeys;
using config_sections::AdminKeys;
using config_sections::BackoffRuleKeys;
using config_sections::CheckCluster;
using config_sections::ClusterKeys;
using config_sections::ClassifyRuleKeys;
using config_sections::DeliveryKeys;
using config_sections::DestinationKeys;
using config_sections::DkimKeyKeys;
using config_sections::DnsKeys;
using config_sections::InboundKeys;
using config_sections::IntakeKeys;
using config_sections::LogKeys;
using config_sections::MetricsKeys;
using config_sections::PathsKeys;
using config_sections::QueueKeys;
using config_sections::ReadBackoffRules;
using config_sections::ReadClassifyRules;
using config_sections::ReadDkimKeys;
using config_sections::ReadSources;
using config_sections::ReadTokenKeys;
using config_sections::RetryKeys;
using config_sections::SmtpKeys;
using config_sections::SourceKeys;
using config_sections::SuppressionKeys;
using config_sections::TokenKeyKeys;
using config_sections::UnsubscribeKeys;
using config_sections::VerpKeys;

// The sections that are one plain table of keys, in the order the docs list them.
struct PlainSection {
  std::string_view name;
  TomlKeys (*keys)(const TomlFile&, Config*);
};
constexpr PlainSection kPlainSections[] = {
    {"paths", PathsKeys}, {"smtp", SmtpKeys},   {"dns", DnsKeys},     {"retry", RetryKeys},
    {"delivery", DeliveryKeys}, {"queue", QueueKeys}, {"log", LogKeys}, {"verp", VerpKeys},
    {"metrics", MetricsKeys},   {"admin", AdminKeys}, {"unsubscribe", UnsubscribeKeys},
    {"inbound", InboundKeys},   {"suppression", SuppressionKeys},
    {"intake", IntakeKeys},     {"cluster", ClusterKeys},
};

// [routes]: domain or "*" to HOST:PORT, or an array of them.
absl::Status ReadRoutes(const TomlFile& file, const toml::node& node, Config* c) {
  const auto* table = node.as_table();
  if (table == nullptr) return file.Error(node, "routes", "must be a table");
  c->routes.clear();
  for (const auto& [domain, target] : *table) {
    std::string value;
    const std::string key = absl::StrCat("routes.\"", base::Sv(domain.str()), "\"");
    if (target.is_array()) {
      // Several hosts, most preferred first: kept as the comma-separated form
      // that dns::ParseRoute reads.
      std::vector<std::string> hosts;
      RETURN_IF_ERROR(GetStringList(file, target, key, &hosts));
      if (hosts.empty()) return file.Error(target, key, "must name at least one HOST:PORT");
      value = absl::StrJoin(hosts, ",");
    } else {
      RETURN_IF_ERROR(GetString(file, target, key, &value));
    }
    if (auto route = dns::ParseRoute(value); !route.ok()) {
      return file.Error(target, key, base::StdSv(route.status().message()));
    }
    c->routes.emplace_back(std::string(domain.str()), value);
  }
  return absl::OkStatus();
}

// [destination."NAME"] tables start from [smtp]'s and [retry]'s values, so
// they are read last, whatever their place in the file.
absl::Status ReadDestinations(const TomlFile& file, const toml::node& node, Config* c) {
  const auto* table = node.as_table();
  if (table == nullptr) return file.Error(node, "destination", "must be a table of tables");
  for (const auto& [dest_name, body] : *table) {
    const std::string key = absl::StrCat("destination.\"", base::Sv(dest_name.str()), "\"");
    if (dest_name.str().empty()) return file.Error(body, key, "name must not be empty");
    DestinationPolicy p = c->smtp.defaults;
    RETURN_IF_ERROR(ReadTable(file, body, key, DestinationKeys(file, &p, c->sources)));
    if (p.retry.initial <= absl::ZeroDuration() || p.retry.max < p.retry.initial) {
      return file.Error(body, key, "retry: need 0 < retry_initial <= retry_max");
    }
    std::string lower(dest_name.str());
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    for (const auto& [seen, unused] : c->destinations) {
      if (seen == lower) {
        return file.Error(body, key, "named twice (names are compared case-insensitively)");
      }
    }
    c->destinations.emplace_back(std::move(lower), std::move(p));
  }
  return absl::OkStatus();
}

// ReadSection - one top-level entry of the file, [[source]] and [destination]
// excepted (Apply reads them first and last).
absl::Status ReadSection(const TomlFile& file, std::string_view name, const toml::node& node,
                         Config* c) {
  for (const PlainSection& section : kPlainSections) {
    if (name != section.name) continue;
    RETURN_IF_ERROR(ReadTable(file, node, name, section.keys(file, c)));
    if (name == "dns") {
      const auto& cache = c->dns.router.cache;
      if (cache.min_ttl > cache.max_ttl || cache.negative_min_ttl > cache.negative_max_ttl) {
        return file.Error(node, name, "min_ttl must not exceed max_ttl (nor negative_min_ttl negative_max_ttl)");
      }
    }
    if (name == "cluster") RETURN_IF_ERROR(CheckCluster(file, node, *c));
    return absl::OkStatus();
  }
  if (name == "routes") return ReadRoutes(file, node, c);
  if (name == "backoff") return ReadBackoffRules(file, node, &c->backoff);
  if (name == "classify") return ReadClassifyRules(file, node, &c->classify);
  if (name == "dkim") return ReadDkimKeys(file, node, &c->dkim);
  if (name == "token_key") return ReadTokenKeys(file, node, &c->token_keys);
  return file.Error(node, name, "unknown section");
}

absl::Status Apply(const TomlFile& file, const toml::table& root, Config* c) {
  // [[source]] first: [smtp] and [destination] tables name sources.
  if (const toml::node* sources = root.get("source")) {
    RETURN_IF_ERROR(ReadSources(file, *sources, &c->sources));
  }
  for (const auto& [section, node] : root) {
    const std::string_view name = section.str();
    if (name == "source" || name == "destination") continue;  // read first and last
    RETURN_IF_ERROR(ReadSection(file, name, node, c));
  }
  if (c->retry.initial <= absl::ZeroDuration() || c->retry.max < c->retry.initial) {
    return absl::InvalidArgumentError(
        absl::StrCat(base::Sv(file.name), ": retry: need 0 < initial <= max"));
  }
  if (!c->verp_domain.empty() && c->token_keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        base::Sv(file.name), ": verp.domain: signed VERP needs a [[token_key]] to sign with"));
  }
  if (!c->unsubscribe.listen.empty() && c->token_keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        base::Sv(file.name),
        ": unsubscribe.listen: the unsubscribe endpoint needs a [[token_key]] to check tokens with"));
  }
  if (!c->inbound.listen.empty() && c->inbound.domains.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        base::Sv(file.name), ": inbound.domains: required when inbound.listen is set"));
  }
  if (c->inbound.tls_cert_file.empty() != c->inbound.tls_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        base::Sv(file.name), ": inbound: tls_cert_file and tls_key_file go together"));
  }
  c->smtp.defaults.retry = c->retry;
  if (const toml::node* dests = root.get("destination")) {
    RETURN_IF_ERROR(ReadDestinations(file, *dests, c));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff:
      return "off";
    case TlsMode::kOpportunistic:
      return "opportunistic";
    case TlsMode::kRequired:
      return "required";
    case TlsMode::kVerify:
      return "verify";
  }
  return "?";
}

absl::Duration DestinationPolicy::TimeoutFor(smtp::Wait wait) const {
  switch (wait) {
    case smtp::Wait::kNone:
      return idle_timeout;
    case smtp::Wait::kGreeting:
      return greeting_timeout;
    case smtp::Wait::kEhlo:
    case smtp::Wait::kTlsHandshake:
      return ehlo_timeout;
    case smtp::Wait::kMail:
    case smtp::Wait::kRset:
      return mail_timeout;
    case smtp::Wait::kRcpt:
      return rcpt_timeout;
    case smtp::Wait::kDataInit:
      return data_timeout;
    case smtp::Wait::kDataDone:
      return data_done_timeout;
    case smtp::Wait::kQuit:
      return quit_timeout;
  }
  return idle_timeout;
}

absl::StatusOr<absl::Duration> ParseDuration(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  int64_t n = 0;
  if (digits == 0 || digits > 9 || !absl::SimpleAtoi(base::Sv(text.substr(0, digits)), &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", base::Sv(text), "\" is not a duration (a number and ms, s, m, h or d)"));
  }
  const std::string_view unit = text.substr(digits);
  if (unit == "ms") return absl::Milliseconds(n);
  if (unit == "s") return absl::Seconds(n);
  if (unit == "m") return absl::Minutes(n);
  if (unit == "h") return absl::Hours(n);
  if (unit == "d") return absl::Hours(24 * n);
  return absl::InvalidArgumentError(
      absl::StrCat("\"", base::Sv(text), "\" is not a duration (a number and ms, s, m, h or d)"));
}

absl::StatusOr<uint64_t> ParseSize(std::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", base::Sv(text), "\" is not a size (bytes, or a number and KiB, MiB, GiB or TiB)"));
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  uint64_t n = 0;
  // At most 15 digits (below 2^50) to parse; the scaled value is checked
  // against 2^64 below.
  if (digits == 0 || digits > 15 || !absl::SimpleAtoi(base::Sv(text.substr(0, digits)), &n)) {
    return bad();
  }
  const std::string_view unit = text.substr(digits);
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "KiB") {
    shift = 10;
  } else if (unit == "MiB") {
    shift = 20;
  } else if (unit == "GiB") {
    shift = 30;
  } else if (unit == "TiB") {
    shift = 40;
  } else {
    return bad();
  }
  if (n > (UINT64_MAX >> shift)) return bad();
  return n << shift;
}

std::string_view BackoffActionName(BackoffAction a) {
  switch (a) {
    case BackoffAction::kBackoff: return "backoff";
    case BackoffAction::kSuspend: return "suspend";
    case BackoffAction::kBounce: return "bounce";
  }
  return "backoff";
}

std::vector<BackoffRule> DefaultBackoffRules() {
  return {{"rate_limited", BackoffAction::kBackoff, absl::Minutes(5)}};
}

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name) {
  Config c;
  ASSIGN_OR_RETURN(toml::table root, base::ParseToml(text, file_name));
  RETURN_IF_ERROR(Apply(TomlFile{file_name}, root, &c));
  if (const auto* name = root["smtp"]["ehlo_name"].node()) {
    // It goes into EHLO verbatim: CR/LF or spaces there would inject commands.
    if (absl::Status st = smtp::ValidateEhloName(c.smtp.ehlo_name); !st.ok()) {
      return TomlFile{file_name}.Error(*name, "smtp.ehlo_name", base::StdSv(st.message()));
    }
  } else {
    // Looked up only when needed: a configured name spares the resolver.
    c.smtp.ehlo_name = DefaultEhloName().name;
  }
  return c;
}

std::vector<std::string> AcceptedConfigKeys() {
  const TomlFile file{"(keys)"};
  Config c;
  std::vector<std::string> out;
  const auto add = [&out](std::string_view section, const TomlKeys& keys) {
    for (const std::string& key : base::TomlKeyNames(keys)) {
      out.push_back(absl::StrCat(base::Sv(section), ".", key));
    }
  };
  for (const PlainSection& section : kPlainSections) add(section.name, section.keys(file, &c));
  DestinationPolicy policy;
  add("destination", DestinationKeys(file, &policy, c.sources));
  BackoffRule backoff;
  add("backoff", BackoffRuleKeys(file, &backoff));
  EgressSource source;
  add("source", SourceKeys(file, &source));
  metrics::ClassifyRule classify;
  add("classify", ClassifyRuleKeys(file, &classify));
  DkimKeyConfig dkim_key;
  add("dkim", DkimKeyKeys(file, &dkim_key));
  TokenKeyConfig token_key;
  add("token_key", TokenKeyKeys(file, &token_key));
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

}  // namespace volley::engine
