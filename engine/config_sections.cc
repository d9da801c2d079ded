// config_sections.cc - the config file's sections, one *Keys function each (see
// config_sections.h); moved out of config.cc unchanged.
#include "engine/config_sections.h"

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
#include "engine/dkim/dkim.h"
#include "engine/host_name.h"
#include "engine/smtp/client.h"
#include "engine/token/token.h"
#include "queue/job.h"
#include "toml++/toml.h"

namespace volley::engine::config_sections {
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

absl::Status GetDuration(const TomlFile& file, const toml::node& node, std::string_view key,
                         absl::Duration* out) {
  return base::GetParsed(file, node, key, &ParseDuration,
                         "a duration string such as \"30s\"", out);
}

// GetDurationIn - GetDuration within [lo, hi].
absl::Status GetDurationIn(const TomlFile& file, const toml::node& node, std::string_view key,
                           absl::Duration lo, absl::Duration hi, absl::Duration* out) {
  absl::Duration d;
  RETURN_IF_ERROR(GetDuration(file, node, key, &d));
  RETURN_IF_ERROR(base::CheckDurationIn(file, node, key, lo, hi, d));
  *out = d;
  return absl::OkStatus();
}

// GetSize - a byte count: an integer, or a string ParseSize reads.
absl::Status GetSize(const TomlFile& file, const toml::node& node, std::string_view key,
                     uint64_t* out) {
  if (const auto* i = node.as_integer()) {
    if (i->get() < 0) return file.Error(node, key, "must not be negative");
    *out = static_cast<uint64_t>(i->get());
    return absl::OkStatus();
  }
  return base::GetParsed(file, node, key, &ParseSize, "a size such as \"256MiB\" or bytes", out);
}

// GetRate - "3000/min", "10/s", "0" (engine/shaping.h).
absl::Status GetRate(const TomlFile& file, const toml::node& node, std::string_view key,
                     Rate* out) {
  std::string text;
  RETURN_IF_ERROR(GetString(file, node, key, &text));
  absl::StatusOr<Rate> rate = ParseRate(text);
  if (!rate.ok()) return file.Error(node, key, base::StdSv(rate.status().message()));
  *out = *std::move(rate);
  return absl::OkStatus();
}

absl::Status GetTlsMode(const TomlFile& file, const toml::node& node, std::string_view key,
                        TlsMode* out) {
  const auto* v = node.as_string();
  for (TlsMode m : {TlsMode::kOff, TlsMode::kOpportunistic, TlsMode::kRequired, TlsMode::kVerify}) {
    if (v != nullptr && v->get() == TlsModeName(m)) {
      *out = m;
      return absl::OkStatus();
    }
  }
  return file.Error(node, key, "must be \"off\", \"opportunistic\", \"required\" or \"verify\"");
}

// GetListenAddress - an IP literal and port to listen on ([admin], [metrics]).
absl::Status GetListenAddress(const TomlFile& file, const toml::node& node, std::string_view key,
                              std::string* out) {
  RETURN_IF_ERROR(GetString(file, node, key, out));
  auto where = base::ParseHostPort(*out);
  if (!where.ok()) {
    return file.Error(node, key, absl::StrCat("\"", *out, "\": ", where.status().message()));
  }
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  if (!base::IpLiteralAddress(*where, &addr, &addr_len)) {
    return file.Error(node, key, absl::StrCat("\"", *out, "\": host must be an IP address literal"));
  }
  return absl::OkStatus();
}

// ResolveSources - a `sources` list of names into indices of `sources`.
absl::Status ResolveSources(const TomlFile& file, const toml::node& node, std::string_view key,
                            const std::vector<std::string>& names,
                            const std::vector<EgressSource>& sources, std::vector<size_t>* out) {
  out->clear();
  for (const std::string& name : names) {
    size_t i = 0;
    while (i < sources.size() && sources[i].name != name) ++i;
    if (i == sources.size()) {
      return file.Error(node, key, absl::StrCat("no [[source]] is named \"", name, "\""));
    }
    if (std::find(out->begin(), out->end(), i) != out->end()) {
      return file.Error(node, key, absl::StrCat("\"", name, "\" is listed twice"));
    }
    out->push_back(i);
  }
  return absl::OkStatus();
}

}  // namespace


using base::GetBool;
using base::GetInt;
using base::GetIntInto;
using base::GetString;
using base::GetStringList;
using base::ReadTable;
using base::TablesOf;
using base::TomlFile;
using base::TomlKeys;
// ---- One function per section: its keys (read into `c`), then its reader.
// The *Keys functions are also what AcceptedConfigKeys lists, so the keys the
// reader takes and the keys the documentation test checks are one list.

// [[backoff]]: one rule {class, action, period}.
TomlKeys BackoffRuleKeys(const TomlFile& file, BackoffRule* r) {
  return {
      {"class", [&file, r](auto& n, auto k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &r->klass));
         if (absl::Status bad = metrics::CheckClassName(r->klass); !bad.ok()) {
           return file.Error(n, k, base::StdSv(bad.message()));
         }
         return absl::OkStatus(); }},
      {"action", [&file, r](auto& n, auto k) -> absl::Status {
         std::string action;
         RETURN_IF_ERROR(GetString(file, n, k, &action));
         for (BackoffAction a : {BackoffAction::kBackoff, BackoffAction::kSuspend, BackoffAction::kBounce}) {
           if (action == BackoffActionName(a)) {
             r->action = a;
             return absl::OkStatus();
           }
         }
         return file.Error(n, k, "must be \"backoff\", \"suspend\" or \"bounce\""); }},
      {"period", [&file, r](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Hours(24), &r->period); }},
  };
}

absl::Status ReadBackoffRules(const TomlFile& file, const toml::node& node,
                              std::vector<BackoffRule>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(file, node, "backoff", "rule", kMaxBackoffRules));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string rule = absl::StrCat("backoff[", i + 1, "]");
    BackoffRule r;
    RETURN_IF_ERROR(ReadTable(file, t, rule, BackoffRuleKeys(file, &r),
                              "unknown key (a rule has class, action and period)"));
    if (r.klass.empty()) return file.Error(t, rule, "needs a class");
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

// [[source]]: one egress source {name, address, ehlo_name, weight}.
TomlKeys SourceKeys(const TomlFile& file, EgressSource* e) {
  return {
      {"name", [&file, e](auto& n, auto k) { return GetString(file, n, k, &e->name); }},
      {"address", [&file, e](auto& n, auto k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &e->address));
         in6_addr unused;
         if (::inet_pton(AF_INET, e->address.c_str(), &unused) != 1 &&
             ::inet_pton(AF_INET6, e->address.c_str(), &unused) != 1) {
           return file.Error(n, k, "must be an IPv4 or IPv6 address literal");
         }
         return absl::OkStatus(); }},
      {"ehlo_name", [&file, e](auto& n, auto k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &e->ehlo_name));
         // It goes into EHLO verbatim: CR/LF or spaces there would inject commands.
         if (absl::Status bad = smtp::ValidateEhloName(e->ehlo_name); !bad.ok()) {
           return file.Error(n, k, base::StdSv(bad.message()));
         }
         return absl::OkStatus(); }},
      {"weight", [&file, e](auto& n, auto k) { return GetIntInto(file, n, k, 1, 1000, &e->weight); }},
  };
}

absl::Status ReadSources(const TomlFile& file, const toml::node& node,
                         std::vector<EgressSource>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(file, node, "source", "source", kMaxSources));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("source[", i + 1, "]");
    EgressSource e;
    RETURN_IF_ERROR(ReadTable(file, t, where, SourceKeys(file, &e),
                              "unknown key (a source has name, address, ehlo_name and weight)"));
    if (e.name.empty()) return file.Error(t, where, "needs a name");
    if (e.address.empty()) return file.Error(t, where, "needs an address");
    for (const EgressSource& seen : *out) {
      if (seen.name == e.name) return file.Error(t, where, absl::StrCat("name \"", e.name, "\" used twice"));
    }
    out->push_back(std::move(e));
  }
  return absl::OkStatus();
}

// [[classify]]: one metrics::ClassifyRule {class, code, enhanced, text}; each
// value through its check, so that the error points at its line.
TomlKeys ClassifyRuleKeys(const TomlFile& file, metrics::ClassifyRule* r) {
  const auto text = [&file](std::string* v, absl::Status (*check)(std::string_view)) {
    return [&file, v, check](const toml::node& n, std::string_view k) -> absl::Status {
      RETURN_IF_ERROR(GetString(file, n, k, v));
      if (absl::Status st = check(*v); !st.ok()) return file.Error(n, k, base::StdSv(st.message()));
      return absl::OkStatus();
    };
  };
  return {
      {"class", text(&r->klass, metrics::CheckClassName)},
      {"code", [&file, r, text](const toml::node& n, std::string_view k) -> absl::Status {
         if (const auto* number = n.as_integer()) {
           // code = 550 reads as naturally as code = "550".
           r->code = absl::StrCat(number->get());
           if (absl::Status bad = metrics::CheckCodeMatcher(r->code); !bad.ok()) {
             return file.Error(n, k, base::StdSv(bad.message()));
           }
           return absl::OkStatus();
         }
         return text(&r->code, metrics::CheckCodeMatcher)(n, k); }},
      {"enhanced", text(&r->enhanced, metrics::CheckEnhancedMatcher)},
      {"text", text(&r->text, metrics::CheckTextMatcher)},
  };
}

absl::Status ReadClassifyRules(const TomlFile& file, const toml::node& node,
                               std::vector<metrics::ClassifyRule>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr,
                   TablesOf(file, node, "classify", "rule", metrics::kMaxClassifyRules));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string rule = absl::StrCat("classify[", i + 1, "]");
    metrics::ClassifyRule r;
    RETURN_IF_ERROR(ReadTable(file, t, rule, ClassifyRuleKeys(file, &r),
                              "unknown key (a rule has class, code, enhanced and text)"));
    if (r.klass.empty()) return file.Error(t, rule, "needs a class");
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

// [[dkim]]: one signing key {domain, selector, key_file, canonicalization,
// headers, over_sign, expire_after}. Only names are checked here; the keys are
// read when volleyd starts (engine/compose.h), so a config can be checked on a
// machine without them.
TomlKeys DkimKeyKeys(const TomlFile& file, DkimKeyConfig* k) {
  const auto field_names = [&file](const toml::node& value, std::string_view full,
                                   std::vector<std::string>* names) -> absl::Status {
    RETURN_IF_ERROR(GetStringList(file, value, full, names));
    for (const std::string& n : *names) {
      if (!queue::IsValidHeaderFieldName(n)) {
        return file.Error(value, full, absl::StrCat("\"", n, "\" is not a header field name"));
      }
    }
    return absl::OkStatus();
  };
  return {
      {"domain", [&file, k](auto& n, auto key) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, key, &k->domain));
         k->domain = absl::AsciiStrToLower(k->domain);
         if (!queue::IsValidDomainName(k->domain)) {
           return file.Error(n, key, "must be a domain name such as sender.test");
         }
         return absl::OkStatus(); }},
      {"selector", [&file, k](auto& n, auto key) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, key, &k->selector));
         // It becomes <selector>._domainkey.<domain>: one or more DNS labels.
         if (!queue::IsValidDomainName(absl::StrCat(k->selector, ".x.test")) ||
             k->selector.size() > 63) {
           return file.Error(n, key, "must be DNS labels (letters, digits, '-', '.')");
         }
         return absl::OkStatus(); }},
      {"key_file", [&file, k](auto& n, auto key) { return GetString(file, n, key, &k->key_file); }},
      {"canonicalization", [&file, k](auto& n, auto key) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, key, &k->canonicalization));
         dkim::Canon header = dkim::Canon::kRelaxed;
         dkim::Canon body = dkim::Canon::kRelaxed;
         if (absl::Status bad = dkim::ParseCanonicalization(k->canonicalization, &header, &body);
             !bad.ok()) {
           return file.Error(n, key, "must be simple or relaxed, or two of them as "
                                     "\"relaxed/simple\" (header/body)");
         }
         return absl::OkStatus(); }},
      {"headers", [&file, k, field_names](auto& n, auto key) -> absl::Status {
         RETURN_IF_ERROR(field_names(n, key, &k->headers));
         bool from = false;
         for (const std::string& name : k->headers) from = from || base::EqualsIgnoreCase(name, "From");
         if (!from) return file.Error(n, key, "must include From (RFC 6376 5.4)");
         return absl::OkStatus(); }},
      {"over_sign", [k, field_names](auto& n, auto key) -> absl::Status {
         std::vector<std::string> names;
         RETURN_IF_ERROR(field_names(n, key, &names));
         k->over_sign = std::move(names);
         return absl::OkStatus(); }},
      {"expire_after", [&file, k](auto& n, auto key) {
         return GetDurationIn(file, n, key, absl::Minutes(1), absl::Hours(24 * 365), &k->expire_after); }},
  };
}

absl::Status ReadDkimKeys(const TomlFile& file, const toml::node& node,
                          std::vector<DkimKeyConfig>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(file, node, "dkim", "key", kMaxDkimKeys));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("dkim[", i + 1, "]");
    DkimKeyConfig k;
    RETURN_IF_ERROR(ReadTable(file, t, where, DkimKeyKeys(file, &k),
                              "unknown key (a [[dkim]] key has domain, selector, key_file, "
                              "canonicalization, headers, over_sign and expire_after)"));
    if (k.domain.empty()) return file.Error(t, where, "needs a domain");
    if (k.selector.empty()) return file.Error(t, where, "needs a selector");
    if (k.key_file.empty()) return file.Error(t, where, "needs a key_file");
    for (const DkimKeyConfig& seen : *out) {
      if (seen.domain == k.domain && seen.selector == k.selector) {
        return file.Error(t, where, absl::StrCat("selector \"", k.selector, "\" of ", k.domain,
                                                 " is configured twice"));
      }
    }
    out->push_back(std::move(k));
  }
  return absl::OkStatus();
}

// [[token_key]]: one key {id, secret_file}.
TomlKeys TokenKeyKeys(const TomlFile& file, TokenKeyConfig* k) {
  return {
      {"id", [&file, k](auto& n, auto key) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, key, &k->id));
         if (!token::IsValidKeyId(k->id)) {
           return file.Error(n, key, absl::StrCat("must match [A-Za-z0-9]{1,", token::kMaxKeyId, "}"));
         }
         return absl::OkStatus(); }},
      {"secret_file", [&file, k](auto& n, auto key) { return GetString(file, n, key, &k->secret_file); }},
  };
}

absl::Status ReadTokenKeys(const TomlFile& file, const toml::node& node,
                           std::vector<TokenKeyConfig>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(file, node, "token_key", "key", kMaxTokenKeys));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("token_key[", i + 1, "]");
    TokenKeyConfig k;
    RETURN_IF_ERROR(ReadTable(file, t, where, TokenKeyKeys(file, &k),
                              "unknown key (a [[token_key]] has id and secret_file)"));
    if (k.id.empty()) return file.Error(t, where, "needs an id");
    if (k.secret_file.empty()) return file.Error(t, where, "needs a secret_file");
    for (const TokenKeyConfig& seen : *out) {
      if (seen.id == k.id) return file.Error(t, where, absl::StrCat("id \"", k.id, "\" used twice"));
    }
    out->push_back(std::move(k));
  }
  return absl::OkStatus();
}

// PolicyKeys - the keys of [smtp] that a [destination."NAME"] table may override.
// `sources`: the [[source]] tables, which the `sources` key names.
TomlKeys PolicyKeys(const TomlFile& file, DestinationPolicy* p,
                    const std::vector<EgressSource>& sources) {
  auto duration = [&file](absl::Duration* d) {
    return [&file, d](const toml::node& n, std::string_view k) { return GetDuration(file, n, k, d); };
  };
  return {
      {"connect_timeout", duration(&p->connect_timeout)},
      {"greeting_timeout", duration(&p->greeting_timeout)},
      {"ehlo_timeout", duration(&p->ehlo_timeout)},
      {"mail_timeout", duration(&p->mail_timeout)},
      {"rcpt_timeout", duration(&p->rcpt_timeout)},
      {"data_timeout", duration(&p->data_timeout)},
      {"data_block_timeout", duration(&p->data_block_timeout)},
      {"data_done_timeout", duration(&p->data_done_timeout)},
      {"quit_timeout", duration(&p->quit_timeout)},
      {"idle_timeout", duration(&p->idle_timeout)},
      {"max_connections_per_destination", [&file, p](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 10000, &p->max_connections); }},
      {"max_connections_opening", [&file, p](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 10000, &p->max_connections_opening); }},
      {"max_message_rate", [&file, p](auto& n, auto k) { return GetRate(file, n, k, &p->max_message_rate); }},
      {"max_connection_rate", [&file, p](auto& n, auto k) {
         return GetRate(file, n, k, &p->max_connection_rate); }},
      {"max_messages_per_connection", [&file, p](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000000, &p->max_messages_per_connection); }},
      {"max_recipients_per_transaction", [&file, p](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000, &p->max_recipients_per_transaction); }},
      {"pipelining", [&file, p](auto& n, auto k) { return GetBool(file, n, k, &p->pipelining); }},
      {"chunking", [&file, p](auto& n, auto k) { return GetBool(file, n, k, &p->chunking); }},
      {"max_transactions_in_flight", [&file, p](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 16, &p->max_transactions_in_flight); }},
      {"tls", [&file, p](auto& n, auto k) { return GetTlsMode(file, n, k, &p->tls); }},
      {"tls_match", [&file, p](auto& n, auto k) { return GetStringList(file, n, k, &p->tls_match); }},
      {"sources", [&file, p, &sources](auto& n, auto k) {
         std::vector<std::string> names;
         RETURN_IF_ERROR(GetStringList(file, n, k, &names));
         return ResolveSources(file, n, k, names, sources, &p->sources); }},
  };
}

TomlKeys PathsKeys(const TomlFile& file, Config* c) {
  return {
      {"spool", [&file, c](auto& n, auto k) { return GetString(file, n, k, &c->spool_dir); }},
      {"queue", [&file, c](auto& n, auto k) { return GetString(file, n, k, &c->queue_dir); }},
      {"log", [&file, c](auto& n, auto k) { return GetString(file, n, k, &c->log_dir); }},
  };
}

// [smtp]: the program's own keys and the defaults of every destination.
TomlKeys SmtpKeys(const TomlFile& file, Config* c) {
  auto& sm = c->smtp;
  TomlKeys keys = PolicyKeys(file, &sm.defaults, c->sources);
  keys.insert({
      {"port", [&file, &sm](auto& n, auto k) { return GetIntInto(file, n, k, 1, 65535, &sm.port); }},
      {"ehlo_name", [&file, &sm](auto& n, auto k) { return GetString(file, n, k, &sm.ehlo_name); }},
      {"max_reply_line", [&file, &sm](auto& n, auto k) {
         return GetIntInto(file, n, k, 512, 1 << 20, &sm.max_reply_line); }},
      {"tls_ca_file", [&file, &sm](auto& n, auto k) { return GetString(file, n, k, &sm.tls_ca_file); }},
      {"tls_session_cache", [&file, &sm](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 1 << 20, &sm.tls_session_cache); }},
      {"tls_fallback_time", [&file, &sm](auto& n, auto k) {
         return GetDuration(file, n, k, &sm.tls_fallback_time); }},
  });
  return keys;
}

// [destination."NAME"]: the policy keys and the destination's own [retry].
TomlKeys DestinationKeys(const TomlFile& file, DestinationPolicy* p,
                         const std::vector<EgressSource>& sources) {
  TomlKeys keys = PolicyKeys(file, p, sources);
  keys.insert({
      {"retry_initial", [&file, p](auto& n, auto k) { return GetDuration(file, n, k, &p->retry.initial); }},
      {"retry_max", [&file, p](auto& n, auto k) { return GetDuration(file, n, k, &p->retry.max); }},
      {"retry_max_age", [&file, p](auto& n, auto k) { return GetDuration(file, n, k, &p->retry.max_age); }},
      {"scope", [&file, p](const toml::node& n, std::string_view k) -> absl::Status {
         const auto* v = n.as_string();
         if (v != nullptr && v->get() == "cluster") {
           p->scope = DestinationPolicy::Scope::kCluster;
         } else if (v != nullptr && v->get() == "node") {
           p->scope = DestinationPolicy::Scope::kNode;
         } else {
           return file.Error(n, k, absl::StrCat("must be \"cluster\" or \"node\"",
                                                v != nullptr ? absl::StrCat(", not \"", v->get(), "\"")
                                                             : std::string()));
         }
         return absl::OkStatus(); }},
  });
  return keys;
}

TomlKeys DnsKeys(const TomlFile& file, Config* c) {
  auto& res = c->dns.resolver;
  auto& mx = c->dns.router.mx;
  auto& cache = c->dns.router.cache;
  return {
      {"servers", [&file, &res](const toml::node& n, std::string_view k) -> absl::Status {
         const auto* arr = n.as_array();
         if (arr == nullptr) return file.Error(n, k, "must be an array of \"HOST:PORT\"");
         res.servers.clear();
         for (const auto& e : *arr) {
           std::string s;
           RETURN_IF_ERROR(GetString(file, e, k, &s));
           if (auto where = dns::ParseHostPort(s); !where.ok()) {
             return file.Error(e, k, base::StdSv(where.status().message()));
           }
           res.servers.push_back(s);
         }
         return absl::OkStatus(); }},
      {"timeout", [&file, &res](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Milliseconds(10), absl::Minutes(1), &res.timeout); }},
      {"tries", [&file, &res](auto& n, auto k) { return GetIntInto(file, n, k, 1, 10, &res.tries); }},
      {"max_pending", [&file, &res](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000000, &res.max_pending); }},
      {"max_queued", [&file, &res](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000000, &res.max_queued); }},
      {"receive_buffer", [&file, &res](auto& n, auto k) { return GetSize(file, n, k, &res.receive_buffer); }},
      {"allow_loopback", [&file, &mx](auto& n, auto k) { return GetBool(file, n, k, &mx.allow_loopback); }},
      {"allow_private", [&file, &mx](auto& n, auto k) { return GetBool(file, n, k, &mx.allow_private); }},
      {"families", [&file, &mx](const toml::node& n, std::string_view k) -> absl::Status {
         std::string v;
         RETURN_IF_ERROR(GetString(file, n, k, &v));
         if (v == "ipv4_first") {
           mx.families = dns::AddressFamilies::kIpv4First;
         } else if (v == "ipv6_first") {
           mx.families = dns::AddressFamilies::kIpv6First;
         } else if (v == "ipv4_only") {
           mx.families = dns::AddressFamilies::kIpv4Only;
         } else {
           return file.Error(n, k, "must be \"ipv4_first\", \"ipv6_first\" or \"ipv4_only\"");
         }
         return absl::OkStatus(); }},
      {"max_mx_hosts", [&file, &mx](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, int64_t{dns::kMaxRouterMxHosts}, &mx.max_mx_hosts); }},
      {"max_addresses_per_host", [&file, &mx](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 64, &mx.max_addresses_per_host); }},
      {"cache_size", [&file, &cache](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 10000000, &cache.max_entries); }},
      {"min_ttl", [&file, &cache](auto& n, auto k) { return GetDuration(file, n, k, &cache.min_ttl); }},
      {"max_ttl", [&file, &cache](auto& n, auto k) { return GetDuration(file, n, k, &cache.max_ttl); }},
      {"negative_min_ttl", [&file, &cache](auto& n, auto k) {
         return GetDuration(file, n, k, &cache.negative_min_ttl); }},
      {"negative_max_ttl", [&file, &cache](auto& n, auto k) {
         return GetDuration(file, n, k, &cache.negative_max_ttl); }},
      {"servfail_ttl", [&file, &cache](auto& n, auto k) { return GetDuration(file, n, k, &cache.servfail_ttl); }},
  };
}

TomlKeys RetryKeys(const TomlFile& file, Config* c) {
  return {
      {"initial", [&file, c](auto& n, auto k) { return GetDuration(file, n, k, &c->retry.initial); }},
      {"max", [&file, c](auto& n, auto k) { return GetDuration(file, n, k, &c->retry.max); }},
      {"max_age", [&file, c](auto& n, auto k) { return GetDuration(file, n, k, &c->retry.max_age); }},
  };
}

TomlKeys DeliveryKeys(const TomlFile& file, Config* c) {
  auto& d = c->delivery;
  return {
      {"window", [&file, &d](auto& n, auto k) { return GetIntInto(file, n, k, 1, 10000000, &d.window); }},
      {"shards", [&file, &d](auto& n, auto k) { return GetIntInto(file, n, k, 0, 64, &d.shards); }},
      {"max_connections", [&file, &d](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 10000000, &d.max_connections); }},
      {"max_message_bytes_in_flight", [&file, &d](auto& n, auto k) {
         return GetSize(file, n, k, &d.max_message_bytes_in_flight); }},
      {"receive_buffers", [&file, &d](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 32768, &d.receive_buffers); }},
      {"forget_idle_destinations_after", [&file, &d](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Hours(24 * 7),
                              &d.forget_idle_destinations_after); }},
  };
}

TomlKeys QueueKeys(const TomlFile& file, Config* c) {
  return {
      {"sync_outcomes", [&file, c](auto& n, auto k) { return GetBool(file, n, k, &c->sync_outcomes); }},
      {"min_free_space", [&file, c](auto& n, auto k) { return GetSize(file, n, k, &c->min_free_space); }},
      {"max_open_files", [&file, c](auto& n, auto k) {
         return GetIntInto(file, n, k, 20, 1000000, &c->queue_max_open_files); }},
  };
}

TomlKeys IntakeKeys(const TomlFile& file, Config* c) {
  return {
      {"settle_time", [&file, c](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::ZeroDuration(), absl::Hours(1),
                              &c->intake.settle_time); }},
  };
}

TomlKeys AdminKeys(const TomlFile& file, Config* c) {
  return {
      {"listen", [&file, c](auto& n, auto k) { return GetListenAddress(file, n, k, &c->admin_listen); }},
      {"max_connections", [&file, c](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 100000, &c->admin_max_connections); }},
      {"request_timeout", [&file, c](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Minutes(5), &c->admin_request_timeout); }},
  };
}

TomlKeys LogKeys(const TomlFile& file, Config* c) {
  auto& lg = c->delivery_log;
  return {
      {"max_size", [&file, &lg](auto& n, auto k) { return GetSize(file, n, k, &lg.max_size); }},
      {"max_age", [&file, &lg](auto& n, auto k) { return GetDuration(file, n, k, &lg.max_age); }},
      {"keep", [&file, &lg](auto& n, auto k) { return GetIntInto(file, n, k, 1, 100000, &lg.keep); }},
  };
}

TomlKeys VerpKeys(const TomlFile& file, Config* c) {
  return {
      {"domain", [&file, c](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &c->verp_domain));
         c->verp_domain = absl::AsciiStrToLower(c->verp_domain);
         if (!queue::IsValidDomainName(c->verp_domain)) {
           return file.Error(n, k, "must be a domain name such as bounces.sender.test");
         }
         return absl::OkStatus(); }},
  };
}

TomlKeys UnsubscribeKeys(const TomlFile& file, Config* c) {
  auto& u = c->unsubscribe;
  return {
      {"listen", [&file, &u](auto& n, auto k) { return GetListenAddress(file, n, k, &u.listen); }},
      {"max_request_bytes", [&file, &u](const toml::node& n, std::string_view k) -> absl::Status {
         uint64_t bytes = 0;
         RETURN_IF_ERROR(GetSize(file, n, k, &bytes));
         if (bytes < 1024 || bytes > (uint64_t{1} << 20)) return file.Error(n, k, "must be 1KiB..1MiB");
         u.max_request_bytes = static_cast<size_t>(bytes);
         return absl::OkStatus(); }},
      {"rate_per_minute", [&file, &u](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 1000000, &u.rate_per_minute); }},
      {"max_clients", [&file, &u](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 10000000, &u.max_clients); }},
      {"threads", [&file, &u](auto& n, auto k) { return GetIntInto(file, n, k, 1, 64, &u.threads); }},
      {"request_timeout", [&file, &u](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Minutes(5), &u.request_timeout); }},
      {"trusted_proxies", [&file, &u](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetStringList(file, n, k, &u.trusted_proxies));
         if (u.trusted_proxies.size() > kMaxTrustedProxies) {
           return file.Error(n, k, absl::StrCat("at most ", kMaxTrustedProxies, " addresses"));
         }
         for (const std::string& p : u.trusted_proxies) {
           in6_addr unused;
           if (::inet_pton(AF_INET, p.c_str(), &unused) != 1 &&
               ::inet_pton(AF_INET6, p.c_str(), &unused) != 1) {
             return file.Error(n, k, absl::StrCat("\"", p, "\" is not an IP address literal"));
           }
         }
         return absl::OkStatus(); }},
  };
}

TomlKeys MetricsKeys(const TomlFile& file, Config* c) {
  return {
      {"listen", [&file, c](auto& n, auto k) { return GetListenAddress(file, n, k, &c->metrics_listen); }},
      {"top_destinations", [&file, c](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 1000, &c->metrics_top_destinations); }},
      {"max_jobs", [&file, c](auto& n, auto k) { return GetIntInto(file, n, k, 0, 10000, &c->metrics_max_jobs); }},
      {"max_connections", [&file, c](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 100000, &c->metrics_max_connections); }},
      {"request_timeout", [&file, c](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Minutes(5), &c->metrics_request_timeout); }},
      {"keepalive_timeout", [&file, c](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::ZeroDuration(), absl::Minutes(10),
                              &c->metrics_keepalive_timeout); }},
  };
}

TomlKeys InboundKeys(const TomlFile& file, Config* c) {
  InboundConfig* in = &c->inbound;
  return {
      {"listen", [&file, in](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetStringList(file, n, k, &in->listen));
         for (const std::string& address : in->listen) {
           auto where = base::ParseHostPort(address);
           sockaddr_storage addr;
           socklen_t addr_len = 0;
           if (!where.ok() || !base::IpLiteralAddress(*where, &addr, &addr_len)) {
             return file.Error(n, k, absl::StrCat("\"", address, "\": must be IP:PORT (an IP address literal)"));
           }
         }
         return absl::OkStatus(); }},
      {"domains", [&file, in](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetStringList(file, n, k, &in->domains));
         for (std::string& d : in->domains) {
           d = absl::AsciiStrToLower(d);
           if (!queue::IsValidDomainName(d)) {
             return file.Error(n, k, absl::StrCat("\"", d, "\" is not a domain name"));
           }
         }
         return absl::OkStatus(); }},
      {"max_message_size", [&file, in](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetSize(file, n, k, &in->max_message_size));
         if (in->max_message_size < 1024 || in->max_message_size > (uint64_t{1} << 30)) {
           return file.Error(n, k, "must be 1KiB..1GiB");
         }
         return absl::OkStatus(); }},
      {"max_connections", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 100000, &in->max_connections); }},
      {"max_connections_per_ip", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 100000, &in->max_connections_per_ip); }},
      {"max_recipients", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 10000, &in->max_recipients); }},
      {"timeout", [&file, in](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Hours(1), &in->timeout); }},
      {"tls_cert_file", [&file, in](auto& n, auto k) { return GetString(file, n, k, &in->tls_cert_file); }},
      {"tls_key_file", [&file, in](auto& n, auto k) { return GetString(file, n, k, &in->tls_key_file); }},
      {"max_pending", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 10000000, &in->max_pending); }},
      {"max_messages_per_minute", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, 1000000, &in->max_messages_per_minute); }},
      {"process", [&file, in](auto& n, auto k) { return GetBool(file, n, k, &in->process); }},
      {"pause_on_complaint_rate", [&file, in](const toml::node& n, std::string_view k) -> absl::Status {
         const auto* v = n.as_floating_point();
         const auto* i = n.as_integer();
         const double rate = v != nullptr ? v->get() : i != nullptr ? static_cast<double>(i->get()) : -1;
         if (rate < 0 || rate > 1) return file.Error(n, k, "must be a number in 0..1 (0.003 is 0.3%)");
         in->pause_on_complaint_rate = rate;
         return absl::OkStatus(); }},
      {"min_delivered_for_rate", [&file, in](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000000000, &in->min_delivered_for_rate); }},
  };
}

TomlKeys SuppressionKeys(const TomlFile& file, Config* c) {
  auto& sc = c->suppression;
  auto& o = sc.options;
  return {
      {"path", [&file, &sc](auto& n, auto k) { return GetString(file, n, k, &sc.path); }},
      {"block_cache", [&file, &o](const toml::node& n, std::string_view k) -> absl::Status {
         uint64_t bytes = 0;
         RETURN_IF_ERROR(GetSize(file, n, k, &bytes));
         if (bytes < (uint64_t{1} << 20) || bytes > (uint64_t{1} << 40)) {
           return file.Error(n, k, "must be 1MiB..1TiB");
         }
         o.block_cache_bytes = static_cast<size_t>(bytes);
         return absl::OkStatus(); }},
      {"soft_bounce_limit", [&file, &o](auto& n, auto k) {
         return GetIntInto(file, n, k, 1, 1000, &o.soft_bounce_limit); }},
      {"filter_bits_per_key", [&file, &o](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, queue::kMaxFilterBitsPerKey, &o.filter_bits_per_key); }},
      {"soft_bounce_window", [&file, &o](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Minutes(1), absl::Hours(24 * 3650),
                              &o.soft_bounce_window); }},
      {"soft_bounce_expiry", [&file, &o](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Minutes(1), absl::Hours(24 * 3650),
                              &o.soft_bounce_expiry); }},
      {"scope", [&file, &o](const toml::node& n, std::string_view k) -> absl::Status {
         const auto* v = n.as_string();
         for (queue::SuppressionScope mode : {queue::SuppressionScope::kGlobal,
                                            queue::SuppressionScope::kFromDomain}) {
           if (v != nullptr && v->get() == queue::SuppressionScopeName(mode)) {
             o.scope = mode;
             return absl::OkStatus();
           }
         }
         return file.Error(n, k, "must be \"global\" or \"from_domain\""); }},
  };
}

// [cluster]: how this volleyd shares its destinations' limits (cluster/options.h).
// The bounds: a batch shorter than 10ms would make Redis see a request per
// destination every few messages (what batching is for); longer than 1s, a
// burst granted at once. A Redis slower than 10s is down for any purpose.
TomlKeys ClusterKeys(const TomlFile& file, Config* c) {
  cluster::Options* o = &c->cluster;
  return {
      {"redis", [&file, o](const toml::node& n, std::string_view k) -> absl::Status {
         std::vector<std::string> servers;
         if (n.is_string()) {
           servers.emplace_back(n.as_string()->get());
         } else if (n.is_array()) {
           RETURN_IF_ERROR(GetStringList(file, n, k, &servers));
         } else {
           return file.Error(n, k, "must be \"HOST:PORT\" or an array of them");
         }
         if (servers.empty()) return file.Error(n, k, "must name at least one HOST:PORT");
         if (servers.size() > kMaxClusterRedisServers) {
           return file.Error(n, k, absl::StrCat("at most ", kMaxClusterRedisServers, " servers"));
         }
         for (const std::string& server : servers) {
           if (auto where = base::ParseHostPort(server); !where.ok()) {
             return file.Error(n, k, absl::StrCat("\"", server, "\": ", where.status().message()));
           }
         }
         o->redis = std::move(servers);
         return absl::OkStatus(); }},
      {"node", [&file, o](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &o->node));
         const bool valid =
             !o->node.empty() && o->node.size() <= kMaxClusterNodeName &&
             std::all_of(o->node.begin(), o->node.end(), [](char ch) {
               return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ||
                      ch == '.';
             });
         if (!valid) {
           return file.Error(n, k, absl::StrCat("\"", o->node, "\": a node name is 1..",
                                                kMaxClusterNodeName,
                                                " letters, digits, '-', '_' or '.'"));
         }
         return absl::OkStatus(); }},
      {"expected_nodes", [&file, o](auto& n, auto k) {
         return GetIntInto(file, n, k, 0, kMaxClusterNodes, &o->expected_nodes); }},
      {"timeout", [&file, o](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Milliseconds(10), absl::Seconds(10), &o->timeout); }},
      {"batch", [&file, o](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Milliseconds(10), absl::Seconds(1), &o->batch); }},
      {"lease_ttl", [&file, o](auto& n, auto k) {
         return GetDurationIn(file, n, k, absl::Seconds(1), absl::Hours(1), &o->lease_ttl); }},
      {"key_prefix", [&file, o](const toml::node& n, std::string_view k) -> absl::Status {
         RETURN_IF_ERROR(GetString(file, n, k, &o->key_prefix));
         const bool valid = !o->key_prefix.empty() && o->key_prefix.size() <= 64 &&
                            std::all_of(o->key_prefix.begin(), o->key_prefix.end(), [](char ch) {
                              return ch > ' ' && ch < 0x7f;
                            });
         if (!valid) {
           return file.Error(n, k, "must be 1..64 printable characters without spaces");
         }
         return absl::OkStatus(); }},
  };
}

absl::Status CheckCluster(const TomlFile& file, const toml::node& node, const Config& c) {
  const cluster::Options& o = c.cluster;
  const toml::node* at = node.as_table() != nullptr ? node.as_table()->get("lease_ttl") : nullptr;
  // A lease renewed once a batch must outlive a late renewal, or a node that is
  // merely slow loses its connections.
  if (o.lease_ttl < 2 * o.batch) {
    return file.Error(at != nullptr ? *at : node, "cluster.lease_ttl",
                      absl::StrCat("must be at least twice cluster.batch (",
                                   absl::FormatDuration(o.batch), ")"));
  }
  if (!o.enabled()) {
    // Keys without servers would be silently ignored: say so instead.
    for (std::string_view key : {"node", "expected_nodes", "timeout", "batch", "lease_ttl",
                                 "key_prefix"}) {
      if (const toml::node* n = node.as_table()->get(key)) {
        return file.Error(*n, absl::StrCat("cluster.", base::Sv(key)),
                          "has no effect without cluster.redis (set it, or drop [cluster])");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace volley::engine::config_sections
