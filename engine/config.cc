#include "engine/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "base/strings.h"
#include "dns/routes.h"
#include "engine/dkim/dkim.h"
#include "engine/host_name.h"
#include "engine/smtp/client.h"
#include "engine/token/token.h"
#include "queue/job.h"
#include "toml++/toml.h"

namespace volley::engine {
namespace {

// Context for one file: where each error points.
struct Source {
  std::string_view file;
  absl::Status Error(const toml::node& node, std::string_view key, std::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrCat(base::Sv(file), ":", node.source().begin.line, ": ", base::Sv(key), ": ", base::Sv(why)));
  }
};

absl::Status GetString(const Source& src, const toml::node& node, std::string_view key,
                       std::string* out) {
  const auto* v = node.as_string();
  if (v == nullptr) return src.Error(node, key, "must be a string");
  *out = v->get();
  if (out->empty()) return src.Error(node, key, "must not be empty");
  return absl::OkStatus();
}

absl::Status GetInt(const Source& src, const toml::node& node, std::string_view key, int64_t lo,
                    int64_t hi, int64_t* out) {
  const auto* v = node.as_integer();
  if (v == nullptr) return src.Error(node, key, "must be an integer");
  if (v->get() < lo || v->get() > hi) {
    return src.Error(node, key, absl::StrCat("must be ", lo, "..", hi));
  }
  *out = v->get();
  return absl::OkStatus();
}

absl::Status GetBool(const Source& src, const toml::node& node, std::string_view key, bool* out) {
  const auto* v = node.as_boolean();
  if (v == nullptr) return src.Error(node, key, "must be true or false");
  *out = v->get();
  return absl::OkStatus();
}

absl::Status GetDuration(const Source& src, const toml::node& node, std::string_view key,
                         absl::Duration* out) {
  const auto* v = node.as_string();
  if (v == nullptr) return src.Error(node, key, "must be a duration string such as \"30s\"");
  auto d = ParseDuration(v->get());
  if (!d.ok()) return src.Error(node, key, base::StdSv(d.status().message()));
  *out = *d;
  return absl::OkStatus();
}

// GetDurationIn - GetDuration within [lo, hi].
absl::Status GetDurationIn(const Source& src, const toml::node& node, std::string_view key,
                           absl::Duration lo, absl::Duration hi, absl::Duration* out) {
  absl::Duration d;
  RETURN_IF_ERROR(GetDuration(src, node, key, &d));
  if (d < lo || d > hi) {
    return src.Error(node, key, absl::StrCat("must be ", absl::FormatDuration(lo), "..",
                                             absl::FormatDuration(hi)));
  }
  *out = d;
  return absl::OkStatus();
}

// GetSize - a byte count: an integer, or a string ParseSize reads.
absl::Status GetSize(const Source& src, const toml::node& node, std::string_view key,
                     uint64_t* out) {
  if (const auto* i = node.as_integer()) {
    if (i->get() < 0) return src.Error(node, key, "must not be negative");
    *out = static_cast<uint64_t>(i->get());
    return absl::OkStatus();
  }
  const auto* v = node.as_string();
  if (v == nullptr) return src.Error(node, key, "must be a size such as \"256MiB\" or bytes");
  auto size = ParseSize(v->get());
  if (!size.ok()) return src.Error(node, key, base::StdSv(size.status().message()));
  *out = *size;
  return absl::OkStatus();
}

template <typename T>
absl::Status GetIntInto(const Source& src, const toml::node& node, std::string_view key,
                        int64_t lo, int64_t hi, T* out) {
  int64_t v = 0;
  RETURN_IF_ERROR(GetInt(src, node, key, lo, hi, &v));
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

// TablesOf - `node` ([[name]] in the file) as an array of at most `max` tables;
// `what` names one in the error ("rule", "source").
absl::StatusOr<const toml::array*> TablesOf(const Source& src, const toml::node& node,
                                            std::string_view name, std::string_view what,
                                            size_t max) {
  const auto* arr = node.as_array();
  if (arr == nullptr || (!arr->empty() && !arr->is_array_of_tables())) {
    return src.Error(node, name, absl::StrCat("must be an array of tables: write each ",
                                              base::Sv(what), " as [[", base::Sv(name), "]]"));
  }
  if (arr->size() > max) {
    return src.Error(node, name, absl::StrCat(arr->size(), " ", base::Sv(what), "s; at most ", max));
  }
  return arr;
}

// GetBackoffRules - [[backoff]]: an array of tables {class, action, period}.
absl::Status GetBackoffRules(const Source& src, const toml::node& node,
                             std::vector<BackoffRule>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(src, node, "backoff", "rule", kMaxBackoffRules));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string rule = absl::StrCat("backoff[", i + 1, "]");
    BackoffRule r;
    for (const auto& [key, value] : t) {
      const std::string full = absl::StrCat(rule, ".", base::Sv(key.str()));
      if (key.str() == "class") {
        RETURN_IF_ERROR(GetString(src, value, full, &r.klass));
        if (absl::Status bad = metrics::CheckClassName(r.klass); !bad.ok()) {
          return src.Error(value, full, base::StdSv(bad.message()));
        }
      } else if (key.str() == "action") {
        std::string action;
        RETURN_IF_ERROR(GetString(src, value, full, &action));
        bool known = false;
        for (BackoffAction a : {BackoffAction::kBackoff, BackoffAction::kSuspend, BackoffAction::kBounce}) {
          if (action == BackoffActionName(a)) {
            r.action = a;
            known = true;
          }
        }
        if (!known) return src.Error(value, full, "must be \"backoff\", \"suspend\" or \"bounce\"");
      } else if (key.str() == "period") {
        RETURN_IF_ERROR(GetDurationIn(src, value, full, absl::Seconds(1), absl::Hours(24), &r.period));
      } else {
        return src.Error(value, full, "unknown key (a rule has class, action and period)");
      }
    }
    if (r.klass.empty()) return src.Error(t, rule, "needs a class");
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

// GetSources - [[source]]: an array of tables {name, address, ehlo_name, weight}.
absl::Status GetSources(const Source& src, const toml::node& node,
                        std::vector<EgressSource>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(src, node, "source", "source", kMaxSources));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("source[", i + 1, "]");
    EgressSource e;
    for (const auto& [key, value] : t) {
      const std::string full = absl::StrCat(where, ".", base::Sv(key.str()));
      if (key.str() == "name") {
        RETURN_IF_ERROR(GetString(src, value, full, &e.name));
      } else if (key.str() == "address") {
        RETURN_IF_ERROR(GetString(src, value, full, &e.address));
        in6_addr unused;
        if (::inet_pton(AF_INET, e.address.c_str(), &unused) != 1 &&
            ::inet_pton(AF_INET6, e.address.c_str(), &unused) != 1) {
          return src.Error(value, full, "must be an IPv4 or IPv6 address literal");
        }
      } else if (key.str() == "ehlo_name") {
        RETURN_IF_ERROR(GetString(src, value, full, &e.ehlo_name));
        // It goes into EHLO verbatim: CR/LF or spaces there would inject commands.
        if (absl::Status bad = smtp::ValidateEhloName(e.ehlo_name); !bad.ok()) {
          return src.Error(value, full, base::StdSv(bad.message()));
        }
      } else if (key.str() == "weight") {
        RETURN_IF_ERROR(GetIntInto(src, value, full, 1, 1000, &e.weight));
      } else {
        return src.Error(value, full, "unknown key (a source has name, address, ehlo_name and weight)");
      }
    }
    if (e.name.empty()) return src.Error(t, where, "needs a name");
    if (e.address.empty()) return src.Error(t, where, "needs an address");
    for (const EgressSource& seen : *out) {
      if (seen.name == e.name) return src.Error(t, where, absl::StrCat("name \"", e.name, "\" used twice"));
    }
    out->push_back(std::move(e));
  }
  return absl::OkStatus();
}

// ResolveSources - a `sources` list of names into indices of `sources`.
absl::Status ResolveSources(const Source& src, const toml::node& node, std::string_view key,
                            const std::vector<std::string>& names,
                            const std::vector<EgressSource>& sources, std::vector<size_t>* out) {
  out->clear();
  for (const std::string& name : names) {
    size_t i = 0;
    while (i < sources.size() && sources[i].name != name) ++i;
    if (i == sources.size()) {
      return src.Error(node, key, absl::StrCat("no [[source]] is named \"", name, "\""));
    }
    if (std::find(out->begin(), out->end(), i) != out->end()) {
      return src.Error(node, key, absl::StrCat("\"", name, "\" is listed twice"));
    }
    out->push_back(i);
  }
  return absl::OkStatus();
}

// GetClassifyRules - [[classify]]: an array of tables, each a metrics::ClassifyRule.
absl::Status GetClassifyRules(const Source& src, const toml::node& node,
                              std::vector<metrics::ClassifyRule>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr,
                   TablesOf(src, node, "classify", "rule", metrics::kMaxClassifyRules));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string rule = absl::StrCat("classify[", i + 1, "]");
    metrics::ClassifyRule r;
    // Each value through its check, so that the error points at its line.
    const auto text = [&](const toml::node& n, std::string_view k, std::string* v,
                          absl::Status (*check)(std::string_view)) -> absl::Status {
      RETURN_IF_ERROR(GetString(src, n, k, v));
      if (absl::Status st = check(*v); !st.ok()) return src.Error(n, k, base::StdSv(st.message()));
      return absl::OkStatus();
    };
    for (const auto& [key, value] : t) {
      const std::string full = absl::StrCat(rule, ".", base::Sv(key.str()));
      absl::Status st;
      if (key.str() == "class") {
        st = text(value, full, &r.klass, metrics::CheckClassName);
      } else if (key.str() == "code") {
        if (const auto* number = value.as_integer()) {
          // code = 550 reads as naturally as code = "550".
          r.code = absl::StrCat(number->get());
          if (absl::Status bad = metrics::CheckCodeMatcher(r.code); !bad.ok()) {
            st = src.Error(value, full, base::StdSv(bad.message()));
          }
        } else {
          st = text(value, full, &r.code, metrics::CheckCodeMatcher);
        }
      } else if (key.str() == "enhanced") {
        st = text(value, full, &r.enhanced, metrics::CheckEnhancedMatcher);
      } else if (key.str() == "text") {
        st = text(value, full, &r.text, metrics::CheckTextMatcher);
      } else {
        st = src.Error(value, full, "unknown key (a rule has class, code, enhanced and text)");
      }
      RETURN_IF_ERROR(st);
    }
    if (r.klass.empty()) return src.Error(t, rule, "needs a class");
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

using KeyHandler = std::function<absl::Status(const toml::node&, std::string_view key)>;
using KeyMap = std::map<std::string, KeyHandler, std::less<>>;

absl::Status GetTlsMode(const Source& src, const toml::node& node, std::string_view key,
                        TlsMode* out) {
  const auto* v = node.as_string();
  for (TlsMode m : {TlsMode::kOff, TlsMode::kOpportunistic, TlsMode::kRequired, TlsMode::kVerify}) {
    if (v != nullptr && v->get() == TlsModeName(m)) {
      *out = m;
      return absl::OkStatus();
    }
  }
  return src.Error(node, key, "must be \"off\", \"opportunistic\", \"required\" or \"verify\"");
}

absl::Status GetStringList(const Source& src, const toml::node& node, std::string_view key,
                           std::vector<std::string>* out) {
  const auto* arr = node.as_array();
  if (arr == nullptr) return src.Error(node, key, "must be an array of strings");
  out->clear();
  for (const auto& e : *arr) {
    std::string s;
    RETURN_IF_ERROR(GetString(src, e, key, &s));
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

// GetRate - "3000/min", "10/s", "0" (engine/shaping.h).
absl::Status GetRate(const Source& src, const toml::node& node, std::string_view key, Rate* out) {
  std::string text;
  RETURN_IF_ERROR(GetString(src, node, key, &text));
  absl::StatusOr<Rate> rate = ParseRate(text);
  if (!rate.ok()) return src.Error(node, key, base::StdSv(rate.status().message()));
  *out = *std::move(rate);
  return absl::OkStatus();
}

// PolicyKeys - the keys of [smtp] that a [destination."NAME"] table may override.
// `sources`: the [[source]] tables, which the `sources` key names.
KeyMap PolicyKeys(const Source& src, DestinationPolicy* p, const std::vector<EgressSource>& sources) {
  auto duration = [&src](absl::Duration* d) {
    return [&src, d](const toml::node& n, std::string_view k) { return GetDuration(src, n, k, d); };
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
      {"max_connections_per_destination", [&src, p](auto& n, auto k) {
         return GetIntInto(src, n, k, 1, 10000, &p->max_connections); }},
      {"max_connections_opening", [&src, p](auto& n, auto k) {
         return GetIntInto(src, n, k, 1, 10000, &p->max_connections_opening); }},
      {"max_message_rate", [&src, p](auto& n, auto k) { return GetRate(src, n, k, &p->max_message_rate); }},
      {"max_connection_rate", [&src, p](auto& n, auto k) {
         return GetRate(src, n, k, &p->max_connection_rate); }},
      {"max_messages_per_connection", [&src, p](auto& n, auto k) {
         return GetIntInto(src, n, k, 1, 1000000, &p->max_messages_per_connection); }},
      {"max_recipients_per_transaction", [&src, p](auto& n, auto k) {
         return GetIntInto(src, n, k, 1, 1000, &p->max_recipients_per_transaction); }},
      {"pipelining", [&src, p](auto& n, auto k) { return GetBool(src, n, k, &p->pipelining); }},
      {"chunking", [&src, p](auto& n, auto k) { return GetBool(src, n, k, &p->chunking); }},
      {"tls", [&src, p](auto& n, auto k) { return GetTlsMode(src, n, k, &p->tls); }},
      {"tls_match", [&src, p](auto& n, auto k) { return GetStringList(src, n, k, &p->tls_match); }},
      {"sources", [&src, p, &sources](auto& n, auto k) {
         std::vector<std::string> names;
         RETURN_IF_ERROR(GetStringList(src, n, k, &names));
         return ResolveSources(src, n, k, names, sources, &p->sources); }},
  };
}

// Section - apply a handler per known key; any other key is an error.
absl::Status Section(const Source& src, const toml::node& node, std::string_view name,
                     const KeyMap& keys) {
  const auto* table = node.as_table();
  if (table == nullptr) return src.Error(node, name, "must be a table");
  for (const auto& [k, v] : *table) {
    const std::string full = absl::StrCat(base::Sv(name), ".", base::Sv(k.str()));
    auto it = keys.find(k.str());
    if (it == keys.end()) return src.Error(v, full, "unknown key");
    RETURN_IF_ERROR(it->second(v, full));
  }
  return absl::OkStatus();
}

// GetDkimKeys - [[dkim]]: an array of tables {domain, selector, key_file,
// canonicalization, headers, over_sign, expire_after}. Only names are checked here;
// the keys are read when volleyd starts (engine/compose.h), so a config can be
// checked on a machine without them.
absl::Status GetDkimKeys(const Source& src, const toml::node& node,
                         std::vector<DkimKeyConfig>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr, TablesOf(src, node, "dkim", "key", kMaxDkimKeys));
  out->clear();
  const auto field_names = [&src](const toml::node& value, std::string_view full,
                                  std::vector<std::string>* names) -> absl::Status {
    RETURN_IF_ERROR(GetStringList(src, value, full, names));
    for (const std::string& n : *names) {
      if (!queue::IsValidHeaderFieldName(n)) {
        return src.Error(value, full, absl::StrCat("\"", n, "\" is not a header field name"));
      }
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("dkim[", i + 1, "]");
    DkimKeyConfig k;
    for (const auto& [key, value] : t) {
      const std::string full = absl::StrCat(where, ".", base::Sv(key.str()));
      if (key.str() == "domain") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.domain));
        k.domain = absl::AsciiStrToLower(k.domain);
        if (!queue::IsValidDomainName(k.domain)) {
          return src.Error(value, full, "must be a domain name such as sender.test");
        }
      } else if (key.str() == "selector") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.selector));
        // It becomes <selector>._domainkey.<domain>: one or more DNS labels.
        if (!queue::IsValidDomainName(absl::StrCat(k.selector, ".x.test")) ||
            k.selector.size() > 63) {
          return src.Error(value, full, "must be DNS labels (letters, digits, '-', '.')");
        }
      } else if (key.str() == "key_file") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.key_file));
      } else if (key.str() == "canonicalization") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.canonicalization));
        dkim::Canon header = dkim::Canon::kRelaxed;
        dkim::Canon body = dkim::Canon::kRelaxed;
        if (absl::Status bad = dkim::ParseCanonicalization(k.canonicalization, &header, &body);
            !bad.ok()) {
          return src.Error(value, full, "must be simple or relaxed, or two of them as "
                                        "\"relaxed/simple\" (header/body)");
        }
      } else if (key.str() == "headers") {
        RETURN_IF_ERROR(field_names(value, full, &k.headers));
        bool from = false;
        for (const std::string& n : k.headers) from = from || base::EqualsIgnoreCase(n, "From");
        if (!from) return src.Error(value, full, "must include From (RFC 6376 5.4)");
      } else if (key.str() == "over_sign") {
        std::vector<std::string> names;
        RETURN_IF_ERROR(field_names(value, full, &names));
        k.over_sign = std::move(names);
      } else if (key.str() == "expire_after") {
        RETURN_IF_ERROR(GetDurationIn(src, value, full, absl::Minutes(1), absl::Hours(24 * 365),
                                      &k.expire_after));
      } else {
        return src.Error(value, full,
                         "unknown key (a [[dkim]] key has domain, selector, key_file, "
                         "canonicalization, headers, over_sign and expire_after)");
      }
    }
    if (k.domain.empty()) return src.Error(t, where, "needs a domain");
    if (k.selector.empty()) return src.Error(t, where, "needs a selector");
    if (k.key_file.empty()) return src.Error(t, where, "needs a key_file");
    for (const DkimKeyConfig& seen : *out) {
      if (seen.domain == k.domain && seen.selector == k.selector) {
        return src.Error(t, where, absl::StrCat("selector \"", k.selector, "\" of ", k.domain,
                                                " is configured twice"));
      }
    }
    out->push_back(std::move(k));
  }
  return absl::OkStatus();
}

// GetTokenKeys - [[token_key]]: an array of tables {id, secret_file}.
absl::Status GetTokenKeys(const Source& src, const toml::node& node,
                          std::vector<TokenKeyConfig>* out) {
  ASSIGN_OR_RETURN(const toml::array* arr,
                   TablesOf(src, node, "token_key", "key", kMaxTokenKeys));
  out->clear();
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string where = absl::StrCat("token_key[", i + 1, "]");
    TokenKeyConfig k;
    for (const auto& [key, value] : t) {
      const std::string full = absl::StrCat(where, ".", base::Sv(key.str()));
      if (key.str() == "id") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.id));
        if (!token::IsValidKeyId(k.id)) {
          return src.Error(value, full, absl::StrCat("must match [A-Za-z0-9]{1,",
                                                     token::kMaxKeyId, "}"));
        }
      } else if (key.str() == "secret_file") {
        RETURN_IF_ERROR(GetString(src, value, full, &k.secret_file));
      } else {
        return src.Error(value, full, "unknown key (a [[token_key]] has id and secret_file)");
      }
    }
    if (k.id.empty()) return src.Error(t, where, "needs an id");
    if (k.secret_file.empty()) return src.Error(t, where, "needs a secret_file");
    for (const TokenKeyConfig& seen : *out) {
      if (seen.id == k.id) return src.Error(t, where, absl::StrCat("id \"", k.id, "\" used twice"));
    }
    out->push_back(std::move(k));
  }
  return absl::OkStatus();
}

absl::Status Apply(const Source& src, const toml::table& root, Config* c) {
  // [[source]] first: [smtp] and [destination] tables name sources.
  if (const toml::node* sources = root.get("source")) {
    RETURN_IF_ERROR(GetSources(src, *sources, &c->sources));
  }
  for (const auto& [section, node] : root) {
    const std::string_view name = section.str();
    absl::Status st;
    if (name == "source") {
      continue;  // read above
    } else if (name == "paths") {
      st = Section(src, node, name, {
          {"spool", [&](auto& n, auto k) { return GetString(src, n, k, &c->spool_dir); }},
          {"queue", [&](auto& n, auto k) { return GetString(src, n, k, &c->queue_dir); }},
          {"log", [&](auto& n, auto k) { return GetString(src, n, k, &c->log_dir); }},
      });
    } else if (name == "smtp") {
      auto& sm = c->smtp;
      KeyMap keys = PolicyKeys(src, &sm.defaults, c->sources);
      keys.insert({
          {"port", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 65535, &sm.port); }},
          {"ehlo_name", [&](auto& n, auto k) { return GetString(src, n, k, &sm.ehlo_name); }},
          {"max_reply_line", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 512, 1 << 20, &sm.max_reply_line); }},
          {"tls_ca_file", [&](auto& n, auto k) { return GetString(src, n, k, &sm.tls_ca_file); }},
          {"tls_fallback_time", [&](auto& n, auto k) {
             return GetDuration(src, n, k, &sm.tls_fallback_time); }},
      });
      st = Section(src, node, name, keys);
    } else if (name == "destination") {
      continue;  // after [smtp], whatever the order in the file: see below
    } else if (name == "routes") {
      const auto* table = node.as_table();
      if (table == nullptr) return src.Error(node, name, "must be a table");
      c->routes.clear();
      for (const auto& [domain, target] : *table) {
        std::string value;
        const std::string key = absl::StrCat("routes.\"", base::Sv(domain.str()), "\"");
        if (target.is_array()) {
          // Several hosts, most preferred first: kept as the comma-separated form
          // that dns::ParseRoute reads.
          std::vector<std::string> hosts;
          RETURN_IF_ERROR(GetStringList(src, target, key, &hosts));
          if (hosts.empty()) return src.Error(target, key, "must name at least one HOST:PORT");
          value = absl::StrJoin(hosts, ",");
        } else {
          RETURN_IF_ERROR(GetString(src, target, key, &value));
        }
        if (auto route = dns::ParseRoute(value); !route.ok()) {
          return src.Error(target, key, base::StdSv(route.status().message()));
        }
        c->routes.emplace_back(std::string(domain.str()), value);
      }
    } else if (name == "dns") {
      auto& res = c->dns.resolver;
      auto& mx = c->dns.router.mx;
      auto& cache = c->dns.router.cache;
      st = Section(src, node, name, {
          {"servers", [&](const toml::node& n, std::string_view k) -> absl::Status {
             const auto* arr = n.as_array();
             if (arr == nullptr) return src.Error(n, k, "must be an array of \"HOST:PORT\"");
             res.servers.clear();
             for (const auto& e : *arr) {
               std::string s;
               RETURN_IF_ERROR(GetString(src, e, k, &s));
               if (auto where = dns::ParseHostPort(s); !where.ok()) {
                 return src.Error(e, k, base::StdSv(where.status().message()));
               }
               res.servers.push_back(s);
             }
             return absl::OkStatus();
           }},
          {"timeout", [&](auto& n, auto k) {
             return GetDurationIn(src, n, k, absl::Milliseconds(10), absl::Minutes(1), &res.timeout); }},
          {"tries", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 10, &res.tries); }},
          {"max_pending", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 1000000, &res.max_pending); }},
          {"max_queued", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 1000000, &res.max_queued); }},
          {"receive_buffer", [&](auto& n, auto k) { return GetSize(src, n, k, &res.receive_buffer); }},
          {"allow_loopback", [&](auto& n, auto k) { return GetBool(src, n, k, &mx.allow_loopback); }},
          {"allow_private", [&](auto& n, auto k) { return GetBool(src, n, k, &mx.allow_private); }},
          {"families", [&](const toml::node& n, std::string_view k) -> absl::Status {
             std::string v;
             RETURN_IF_ERROR(GetString(src, n, k, &v));
             if (v == "ipv4_first") {
               mx.families = dns::AddressFamilies::kIpv4First;
             } else if (v == "ipv6_first") {
               mx.families = dns::AddressFamilies::kIpv6First;
             } else if (v == "ipv4_only") {
               mx.families = dns::AddressFamilies::kIpv4Only;
             } else {
               return src.Error(n, k, "must be \"ipv4_first\", \"ipv6_first\" or \"ipv4_only\"");
             }
             return absl::OkStatus();
           }},
          {"max_mx_hosts", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, int64_t{dns::kMaxRouterMxHosts}, &mx.max_mx_hosts); }},
          {"max_addresses_per_host", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 64, &mx.max_addresses_per_host); }},
          {"cache_size", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 0, 10000000, &cache.max_entries); }},
          {"min_ttl", [&](auto& n, auto k) { return GetDuration(src, n, k, &cache.min_ttl); }},
          {"max_ttl", [&](auto& n, auto k) { return GetDuration(src, n, k, &cache.max_ttl); }},
          {"negative_min_ttl", [&](auto& n, auto k) {
             return GetDuration(src, n, k, &cache.negative_min_ttl); }},
          {"negative_max_ttl", [&](auto& n, auto k) {
             return GetDuration(src, n, k, &cache.negative_max_ttl); }},
          {"servfail_ttl", [&](auto& n, auto k) { return GetDuration(src, n, k, &cache.servfail_ttl); }},
      });
      if (st.ok() && (cache.min_ttl > cache.max_ttl || cache.negative_min_ttl > cache.negative_max_ttl)) {
        return src.Error(node, name, "min_ttl must not exceed max_ttl (nor negative_min_ttl negative_max_ttl)");
      }
    } else if (name == "retry") {
      st = Section(src, node, name, {
          {"initial", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.initial); }},
          {"max", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.max); }},
          {"max_age", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.max_age); }},
      });
    } else if (name == "delivery") {
      st = Section(src, node, name, {
          {"window", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 10000000, &c->delivery.window); }},
          {"shards", [&](auto& n, auto k) { return GetIntInto(src, n, k, 0, 64, &c->delivery.shards); }},
          {"max_connections", [&](auto& n, auto k) { return GetIntInto(src, n, k, 0, 10000000, &c->delivery.max_connections); }},
      });
    } else if (name == "queue") {
      st = Section(src, node, name, {
          {"sync_outcomes", [&](auto& n, auto k) { return GetBool(src, n, k, &c->sync_outcomes); }},
          {"min_free_space", [&](auto& n, auto k) { return GetSize(src, n, k, &c->min_free_space); }},
          {"max_open_files", [&](auto& n, auto k) { return GetIntInto(src, n, k, 20, 1000000, &c->queue_max_open_files); }},
      });
    } else if (name == "admin") {
      st = Section(src, node, name, {
          {"listen", [&](const toml::node& n, std::string_view k) -> absl::Status {
             RETURN_IF_ERROR(GetString(src, n, k, &c->admin_listen));
             if (auto where = dns::ParseHostPort(c->admin_listen); !where.ok()) {
               return src.Error(n, k, base::StdSv(where.status().message()));
             }
             return absl::OkStatus();
           }},
      });
    } else if (name == "log") {
      auto& lg = c->delivery_log;
      st = Section(src, node, name, {
          {"max_size", [&](auto& n, auto k) { return GetSize(src, n, k, &lg.max_size); }},
          {"max_age", [&](auto& n, auto k) { return GetDuration(src, n, k, &lg.max_age); }},
          {"keep", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 100000, &lg.keep); }},
      });
    } else if (name == "backoff") {
      st = GetBackoffRules(src, node, &c->backoff);
    } else if (name == "dkim") {
      st = GetDkimKeys(src, node, &c->dkim);
    } else if (name == "token_key") {
      st = GetTokenKeys(src, node, &c->token_keys);
    } else if (name == "verp") {
      st = Section(src, node, name, {
          {"domain", [&](const toml::node& n, std::string_view k) -> absl::Status {
             RETURN_IF_ERROR(GetString(src, n, k, &c->verp_domain));
             c->verp_domain = absl::AsciiStrToLower(c->verp_domain);
             if (!queue::IsValidDomainName(c->verp_domain)) {
               return src.Error(n, k, "must be a domain name such as bounces.sender.test");
             }
             return absl::OkStatus();
           }},
      });
    } else if (name == "classify") {
      st = GetClassifyRules(src, node, &c->classify);
    } else if (name == "metrics") {
      st = Section(src, node, name, {
          {"listen", [&](const toml::node& n, std::string_view k) -> absl::Status {
             RETURN_IF_ERROR(GetString(src, n, k, &c->metrics_listen));
             if (auto where = dns::ParseHostPort(c->metrics_listen); !where.ok()) {
               return src.Error(n, k, base::StdSv(where.status().message()));
             }
             return absl::OkStatus();
           }},
          {"top_destinations", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 0, 1000, &c->metrics_top_destinations); }},
          {"max_jobs", [&](auto& n, auto k) { return GetIntInto(src, n, k, 0, 10000, &c->metrics_max_jobs); }},
      });
    } else {
      return src.Error(node, name, "unknown section");
    }
    RETURN_IF_ERROR(st);
  }
  if (c->retry.initial <= absl::ZeroDuration() || c->retry.max < c->retry.initial) {
    return absl::InvalidArgumentError(
        absl::StrCat(base::Sv(src.file), ": retry: need 0 < initial <= max"));
  }
  if (!c->verp_domain.empty() && c->token_keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        base::Sv(src.file), ": verp.domain: signed VERP needs a [[token_key]] to sign with"));
  }
  c->smtp.defaults.retry = c->retry;
  // [destination."NAME"] tables start from [smtp]'s and [retry]'s values, so
  // they are read last.
  if (const toml::node* dests = root.get("destination")) {
    const auto* table = dests->as_table();
    if (table == nullptr) return src.Error(*dests, "destination", "must be a table of tables");
    for (const auto& [dest_name, body] : *table) {
      const std::string key = absl::StrCat("destination.\"", base::Sv(dest_name.str()), "\"");
      if (dest_name.str().empty()) return src.Error(body, key, "name must not be empty");
      DestinationPolicy p = c->smtp.defaults;
      KeyMap keys = PolicyKeys(src, &p, c->sources);
      keys.insert({
          {"retry_initial", [&](auto& n, auto k) { return GetDuration(src, n, k, &p.retry.initial); }},
          {"retry_max", [&](auto& n, auto k) { return GetDuration(src, n, k, &p.retry.max); }},
          {"retry_max_age", [&](auto& n, auto k) { return GetDuration(src, n, k, &p.retry.max_age); }},
      });
      RETURN_IF_ERROR(Section(src, body, key, keys));
      if (p.retry.initial <= absl::ZeroDuration() || p.retry.max < p.retry.initial) {
        return src.Error(body, key, "retry: need 0 < retry_initial <= retry_max");
      }
      std::string lower(dest_name.str());
      for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      for (const auto& [seen, unused] : c->destinations) {
        if (seen == lower) {
          return src.Error(body, key, "named twice (names are compared case-insensitively)");
        }
      }
      c->destinations.emplace_back(std::move(lower), std::move(p));
    }
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
  toml::table root;
  try {
    root = toml::parse(text, file_name);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(base::Sv(file_name), ":", e.source().begin.line, ": ",
                                                   base::Sv(e.description())));
  }
  RETURN_IF_ERROR(Apply(Source{file_name}, root, &c));
  if (const auto* name = root["smtp"]["ehlo_name"].node()) {
    // It goes into EHLO verbatim: CR/LF or spaces there would inject commands.
    if (absl::Status st = smtp::ValidateEhloName(c.smtp.ehlo_name); !st.ok()) {
      return Source{file_name}.Error(*name, "smtp.ehlo_name", base::StdSv(st.message()));
    }
  } else {
    // Looked up only when needed: a configured name spares the resolver.
    c.smtp.ehlo_name = DefaultEhloName().name;
  }
  return c;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

}  // namespace volley::engine
