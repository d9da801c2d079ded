#include "engine/config.h"

#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "dns/routes.h"
#include "engine/smtp/client.h"
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

template <typename T>
absl::Status GetIntInto(const Source& src, const toml::node& node, std::string_view key,
                        int64_t lo, int64_t hi, T* out) {
  int64_t v = 0;
  RETURN_IF_ERROR(GetInt(src, node, key, lo, hi, &v));
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

using KeyHandler = std::function<absl::Status(const toml::node&, std::string_view key)>;

// Section - apply a handler per known key; any other key is an error.
absl::Status Section(const Source& src, const toml::node& node, std::string_view name,
                     const std::map<std::string, KeyHandler, std::less<>>& keys) {
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

absl::Status Apply(const Source& src, const toml::table& root, Config* c) {
  for (const auto& [section, node] : root) {
    const std::string_view name = section.str();
    absl::Status st;
    if (name == "paths") {
      st = Section(src, node, name, {
          {"spool", [&](auto& n, auto k) { return GetString(src, n, k, &c->spool_dir); }},
          {"queue", [&](auto& n, auto k) { return GetString(src, n, k, &c->queue_dir); }},
          {"log", [&](auto& n, auto k) { return GetString(src, n, k, &c->log_dir); }},
      });
    } else if (name == "smtp") {
      auto& s = c->smtp;
      st = Section(src, node, name, {
          {"port", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 65535, &s.port); }},
          {"ehlo_name", [&](auto& n, auto k) { return GetString(src, n, k, &s.ehlo_name); }},
          {"connect_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.connect_timeout); }},
          {"greeting_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.greeting_timeout); }},
          {"command_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.command_timeout); }},
          {"data_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.data_timeout); }},
          {"data_done_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.data_done_timeout); }},
          {"quit_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.quit_timeout); }},
          {"idle_timeout", [&](auto& n, auto k) { return GetDuration(src, n, k, &s.idle_timeout); }},
          {"max_connections_per_destination", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 10000, &s.max_connections_per_destination); }},
          {"max_messages_per_connection", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 1000000, &s.max_messages_per_connection); }},
          {"max_recipients_per_transaction", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 1, 1000, &s.max_recipients_per_transaction); }},
          {"max_reply_line", [&](auto& n, auto k) {
             return GetIntInto(src, n, k, 512, 1 << 20, &s.max_reply_line); }},
      });
    } else if (name == "routes") {
      const auto* table = node.as_table();
      if (table == nullptr) return src.Error(node, name, "must be a table");
      c->routes.clear();
      for (const auto& [domain, target] : *table) {
        std::string value;
        const std::string key = absl::StrCat("routes.\"", base::Sv(domain.str()), "\"");
        RETURN_IF_ERROR(GetString(src, target, key, &value));
        c->routes.emplace_back(std::string(domain.str()), value);
      }
    } else if (name == "dns") {
      st = Section(src, node, name, {
          {"servers", [&](const toml::node& n, std::string_view k) -> absl::Status {
             const auto* arr = n.as_array();
             if (arr == nullptr) return src.Error(n, k, "must be an array of \"HOST:PORT\"");
             c->dns.servers.clear();
             for (const auto& e : *arr) {
               std::string s;
               RETURN_IF_ERROR(GetString(src, e, k, &s));
               if (auto where = dns::ParseHostPort(s); !where.ok()) {
                 return src.Error(e, k, base::StdSv(where.status().message()));
               }
               c->dns.servers.push_back(s);
             }
             return absl::OkStatus();
           }},
          {"allow_loopback", [&](auto& n, auto k) { return GetBool(src, n, k, &c->dns.allow_loopback); }},
      });
    } else if (name == "retry") {
      st = Section(src, node, name, {
          {"initial", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.initial); }},
          {"max", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.max); }},
          {"max_age", [&](auto& n, auto k) { return GetDuration(src, n, k, &c->retry.max_age); }},
      });
    } else if (name == "delivery") {
      st = Section(src, node, name, {
          {"window", [&](auto& n, auto k) { return GetIntInto(src, n, k, 1, 10000000, &c->delivery.window); }},
      });
    } else if (name == "queue") {
      st = Section(src, node, name, {
          {"sync_outcomes", [&](auto& n, auto k) { return GetBool(src, n, k, &c->sync_outcomes); }},
      });
    } else if (name == "metrics") {
      st = Section(src, node, name, {
          {"listen", [&](auto& n, auto k) { return GetString(src, n, k, &c->metrics_listen); }},
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
  return absl::OkStatus();
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

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

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name) {
  Config c;
  c.smtp.ehlo_name = HostName();
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
