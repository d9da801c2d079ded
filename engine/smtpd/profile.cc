// profile.cc - volley-sink's fault profiles from TOML; see profile.h.
#include "engine/smtpd/profile.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/toml_reader.h"

namespace volley::smtpd {
namespace {

using base::Sv;

struct CommandEntry {
  std::string_view name;
  Command command;
};

constexpr CommandEntry kCommands[] = {
    {"CONNECT", Command::kConnect}, {"EHLO", Command::kEhlo},
    {"HELO", Command::kHelo},       {"MAIL", Command::kMail},
    {"RCPT", Command::kRcpt},       {"DATA", Command::kData},
    {"DOT", Command::kDot},         {"BDAT", Command::kBdat},
    {"RSET", Command::kRset},       {"NOOP", Command::kNoop},
    {"QUIT", Command::kQuit},       {"STARTTLS", Command::kStartTls},
};

using base::GetBool;
using base::GetInt;
using base::GetString;
using base::ReadTable;
using base::StringLimits;
using base::TomlFile;  // where each error points: "FILE:LINE: KEY: REASON"

absl::Status GetRate(const TomlFile& src, const toml::node& node, std::string_view key,
                     double* out) {
  double v = 0;
  if (const auto* f = node.as_floating_point()) {
    v = f->get();
  } else if (const auto* i = node.as_integer()) {
    v = static_cast<double>(i->get());
  } else {
    return src.Error(node, key, "must be a number 0..1");
  }
  if (!(v >= 0.0 && v <= 1.0)) return src.Error(node, key, "must be 0..1");
  *out = v;
  return absl::OkStatus();
}

absl::Status GetDelay(const TomlFile& src, const toml::node& node, std::string_view key,
                      absl::Duration* out) {
  return base::GetParsed(src, node, key, &ParseDelay, "a duration string such as \"250ms\"", out);
}

absl::Status GetReply(const TomlFile& src, const toml::node& node, std::string_view key,
                      bool raw, Reply* out) {
  std::string text;
  RETURN_IF_ERROR(GetString(src, node, key, &text, StringLimits{kMaxReplyLength - 2, false}));
  if (raw) {
    out->bytes = text;
    out->code = 0;
    int code = 0;
    if (text.size() >= 3 && std::all_of(text.begin(), text.begin() + 3, absl::ascii_isdigit) &&
        absl::SimpleAtoi(Sv(std::string_view(text).substr(0, 3)), &code) && code >= 200 &&
        code <= 599) {
      out->code = code;
    }
    return absl::OkStatus();
  }
  std::string why;
  std::optional<Reply> r = NormalizeReply(text, &why);
  if (!r) return src.Error(node, key, why);
  *out = *std::move(r);
  return absl::OkStatus();
}

absl::Status GetCommand(const TomlFile& src, const toml::node& node, std::string_view key,
                        bool allow_connect, Command* out) {
  std::string text;
  RETURN_IF_ERROR(GetString(src, node, key, &text, StringLimits{16, false}));
  for (const CommandEntry& e : kCommands) {
    if (base::EqualsIgnoreCase(text, e.name)) {
      if (e.command == Command::kConnect && !allow_connect) break;
      *out = e.command;
      return absl::OkStatus();
    }
  }
  return src.Error(node, key,
                   allow_connect ? "must be one of CONNECT EHLO HELO MAIL RCPT DATA DOT BDAT "
                                   "RSET NOOP QUIT STARTTLS"
                                 : "must be one of EHLO HELO MAIL RCPT DATA DOT BDAT RSET NOOP "
                                   "QUIT STARTTLS");
}

absl::Status GetMatch(const TomlFile& src, const toml::node& node, std::string_view key,
                      std::string* out) {
  RETURN_IF_ERROR(GetString(src, node, key, out, StringLimits{kMaxMatchLength, false}));
  absl::AsciiStrToLower(out);
  return absl::OkStatus();
}

// A command that carries no argument a match could look at.
bool TakesNoMatch(Command c) {
  return c == Command::kConnect || c == Command::kDot || c == Command::kData;
}

absl::Status ParseReplyRule(const TomlFile& src, const toml::node& node, std::string_view name,
                            ReplyRule* rule) {
  bool have_command = false;
  bool raw = false;
  const toml::node* reply_node = nullptr;
  const toml::node* match_node = nullptr;
  const absl::Status parsed = ReadTable(src, node, name, {
      {"command", [&](auto& n, auto k) {
         have_command = true;
         return GetCommand(src, n, k, /*allow_connect=*/false, &rule->command); }},
      {"match", [&](auto& n, auto k) {
         match_node = &n;
         return GetMatch(src, n, k, &rule->match); }},
      {"nth", [&](auto& n, auto k) -> absl::Status {
         int64_t v = 0;
         RETURN_IF_ERROR(GetInt(src, n, k, 1, 1000000000, &v));
         rule->nth = static_cast<uint32_t>(v);
         return absl::OkStatus(); }},
      {"rate", [&](auto& n, auto k) { return GetRate(src, n, k, &rule->rate); }},
      {"reply", [&](auto& n, auto) { reply_node = &n; return absl::OkStatus(); }},
      {"raw", [&](auto& n, auto k) { return GetBool(src, n, k, &raw); }},
      {"delay", [&](auto& n, auto k) { return GetDelay(src, n, k, &rule->delay); }},
  });
  if (!parsed.ok()) return parsed;
  if (!have_command) return src.Error(node, name, "needs command = \"...\"");
  if (match_node != nullptr && TakesNoMatch(rule->command)) {
    return src.Error(*match_node, absl::StrCat(Sv(name), ".match"),
                     absl::StrCat("does not apply to ", Sv(CommandName(rule->command))));
  }
  if (reply_node != nullptr) {
    RETURN_IF_ERROR(GetReply(src, *reply_node, absl::StrCat(Sv(name), ".reply"), raw,
                             &rule->reply));
  } else if (raw) {
    return src.Error(node, name, "raw = true needs a reply");
  }
  if (rule->reply.bytes.empty() && rule->delay == absl::ZeroDuration()) {
    return src.Error(node, name, "needs a reply or a delay");
  }
  return absl::OkStatus();
}

absl::Status ParseDisconnectRule(const TomlFile& src, const toml::node& node,
                                 std::string_view name, DisconnectRule* rule) {
  bool have_after = false;
  const toml::node* match_node = nullptr;
  const absl::Status parsed = ReadTable(src, node, name, {
      {"after", [&](auto& n, auto k) {
         have_after = true;
         return GetCommand(src, n, k, /*allow_connect=*/true, &rule->after); }},
      {"match", [&](auto& n, auto k) {
         match_node = &n;
         return GetMatch(src, n, k, &rule->match); }},
      {"nth", [&](auto& n, auto k) -> absl::Status {
         int64_t v = 0;
         RETURN_IF_ERROR(GetInt(src, n, k, 1, 1000000000, &v));
         rule->nth = static_cast<uint32_t>(v);
         return absl::OkStatus(); }},
      {"rate", [&](auto& n, auto k) { return GetRate(src, n, k, &rule->rate); }},
  });
  if (!parsed.ok()) return parsed;
  if (!have_after) return src.Error(node, name, "needs after = \"...\"");
  if (match_node != nullptr && TakesNoMatch(rule->after)) {
    return src.Error(*match_node, absl::StrCat(Sv(name), ".match"),
                     absl::StrCat("does not apply to ", Sv(CommandName(rule->after))));
  }
  return absl::OkStatus();
}

// ForEachTable - call f(table node, "name[i]") for each table of an array of tables.
absl::Status ForEachTable(const TomlFile& src, const toml::node& node, std::string_view name,
                          const std::function<absl::Status(const toml::node&,
                                                           const std::string&)>& f) {
  ASSIGN_OR_RETURN(const toml::array* arr, base::TablesOf(src, node, name, "rule", kMaxRules));
  for (size_t i = 0; i < arr->size(); ++i) {
    RETURN_IF_ERROR(f((*arr)[i], absl::StrCat(Sv(name), "[", i + 1, "]")));
  }
  return absl::OkStatus();
}

absl::Status ParseProfile(const TomlFile& src, const toml::node& node, std::string_view name,
                          Profile* p) {
  const toml::node* inject_node = nullptr;
  const absl::Status parsed = ReadTable(src, node, name, {
      {"ehlo", [&](const toml::node& n, std::string_view k) -> absl::Status {
         std::string v;
         RETURN_IF_ERROR(GetString(src, n, k, &v, StringLimits{16, false}));
         if (v == "esmtp") {
           p->esmtp = true;
         } else if (v == "no-esmtp") {
           p->esmtp = false;
         } else {
           return src.Error(n, k, "must be \"esmtp\" or \"no-esmtp\"");
         }
         return absl::OkStatus(); }},
      {"pipelining", [&](auto& n, auto k) { return GetBool(src, n, k, &p->pipelining); }},
      {"chunking", [&](auto& n, auto k) { return GetBool(src, n, k, &p->chunking); }},
      {"starttls", [&](auto& n, auto k) { return GetBool(src, n, k, &p->starttls); }},
      {"smtputf8", [&](auto& n, auto k) { return GetBool(src, n, k, &p->smtputf8); }},
      {"eight_bit_mime", [&](auto& n, auto k) { return GetBool(src, n, k, &p->eight_bit_mime); }},
      {"size_limit", [&](auto& n, auto k) -> absl::Status {
         int64_t v = 0;
         RETURN_IF_ERROR(GetInt(src, n, k, 0, int64_t{1} << 50, &v));
         p->size_limit = static_cast<uint64_t>(v);
         return absl::OkStatus(); }},
      {"greeting", [&](auto& n, auto k) -> absl::Status {
         RETURN_IF_ERROR(GetReply(src, n, k, /*raw=*/false, &p->greeting));
         if (p->greeting.code >= 300 && p->greeting.code < 400) {
           return src.Error(n, k, "a greeting is 2xx, 4xx or 5xx");
         }
         return absl::OkStatus(); }},
      {"greeting_delay", [&](auto& n, auto k) { return GetDelay(src, n, k, &p->greeting_delay); }},
      {"tarpit", [&](auto& n, auto k) { return GetDelay(src, n, k, &p->tarpit); }},
      {"greylist", [&](auto& n, auto k) { return GetDelay(src, n, k, &p->greylist); }},
      {"max_connections", [&](auto& n, auto k) -> absl::Status {
         int64_t v = 0;
         RETURN_IF_ERROR(GetInt(src, n, k, 0, 1000000, &v));
         p->max_connections = static_cast<uint32_t>(v);
         return absl::OkStatus(); }},
      {"inject_after_starttls", [&](auto& n, auto k) {
         inject_node = &n;
         return GetString(src, n, k, &p->inject_after_starttls,
                          StringLimits{kMaxInjectLength, /*allow_empty=*/true}); }},
      {"reply", [&](const toml::node& n, std::string_view k) {
         return ForEachTable(src, n, k, [&](const toml::node& t, const std::string& key) {
           ReplyRule& r = p->replies.emplace_back();
           return ParseReplyRule(src, t, key, &r);
         }); }},
      {"disconnect", [&](const toml::node& n, std::string_view k) {
         return ForEachTable(src, n, k, [&](const toml::node& t, const std::string& key) {
           DisconnectRule& r = p->disconnects.emplace_back();
           return ParseDisconnectRule(src, t, key, &r);
         }); }},
  });
  if (!parsed.ok()) return parsed;
  if (inject_node != nullptr && !p->inject_after_starttls.empty() && !p->starttls) {
    return src.Error(*inject_node, absl::StrCat(Sv(name), ".inject_after_starttls"),
                     "needs starttls = true");
  }
  return absl::OkStatus();
}

bool ValidProfileName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// A table {profile = "NAME"} for [listener."ADDR"] or [domain."NAME"]; the index.
absl::Status ParseMapping(const TomlFile& src, const toml::node& node, std::string_view key,
                          const std::map<std::string, uint32_t, std::less<>>& by_name,
                          uint32_t* index) {
  std::string name;
  const toml::node* name_node = nullptr;
  const absl::Status parsed = ReadTable(src, node, key, {
      {"profile", [&](auto& n, auto k) {
         name_node = &n;
         return GetString(src, n, k, &name, StringLimits{kMaxNameLength, false}); }},
  });
  if (!parsed.ok()) return parsed;
  if (name_node == nullptr) return src.Error(node, key, "needs profile = \"NAME\"");
  auto it = by_name.find(name);
  if (it == by_name.end()) {
    return src.Error(*name_node, absl::StrCat(Sv(key), ".profile"),
                     absl::StrCat("no [profile.", name, "]"));
  }
  *index = it->second;
  return absl::OkStatus();
}

}  // namespace

std::string_view CommandName(Command c) {
  for (const CommandEntry& e : kCommands) {
    if (e.command == c) return e.name;
  }
  return "OTHER";
}

absl::StatusOr<absl::Duration> ParseDelay(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  int64_t n = 0;
  const std::string_view unit = text.substr(digits);
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", Sv(text), "\" is not a duration (a number and ms, s, m or h)"));
  };
  if (digits == 0 || digits > 9 || !absl::SimpleAtoi(Sv(text.substr(0, digits)), &n)) {
    return bad();
  }
  absl::Duration d;
  if (unit == "ms") {
    d = absl::Milliseconds(n);
  } else if (unit == "s") {
    d = absl::Seconds(n);
  } else if (unit == "m") {
    d = absl::Minutes(n);
  } else if (unit == "h") {
    d = absl::Hours(n);
  } else if (unit.empty() && n == 0) {
    d = absl::ZeroDuration();
  } else {
    return bad();
  }
  if (d > kMaxDelay) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Sv(text), "\" is longer than ", absl::FormatDuration(kMaxDelay)));
  }
  return d;
}

std::optional<Reply> NormalizeReply(std::string_view text, std::string* why) {
  // Lines separated by LF or CRLF; one trailing line end is allowed.
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const size_t lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (lf == std::string_view::npos) break;
    text.remove_prefix(lf + 1);
  }
  if (lines.empty()) {
    *why = "must not be empty";
    return std::nullopt;
  }
  Reply r;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const bool last = i + 1 == lines.size();
    const std::string where = lines.size() > 1 ? absl::StrCat("line ", i + 1, ": ") : "";
    int code = 0;
    if (line.size() < 3 || !std::all_of(line.begin(), line.begin() + 3, absl::ascii_isdigit) ||
        !absl::SimpleAtoi(Sv(line.substr(0, 3)), &code) || code < 200 || code > 599 ||
        line[1] > '5') {
      *why = absl::StrCat(where, "must start with a reply code 2xx..5xx, such as \"450 4.2.1 busy\"");
      return std::nullopt;
    }
    if (r.code != 0 && code != r.code) {
      *why = absl::StrCat(where, "every line of a reply has the same code");
      return std::nullopt;
    }
    r.code = code;
    if (!last && (line.size() < 4 || line[3] != '-')) {
      *why = absl::StrCat(where, "all lines but the last have \"-\" after the code");
      return std::nullopt;
    }
    if (last && line.size() > 3 && line[3] != ' ') {
      *why = absl::StrCat(where, "the last line has a space after the code");
      return std::nullopt;
    }
    for (char c : line) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) {
        *why = absl::StrCat(where, "control characters are not allowed (use raw = true)");
        return std::nullopt;
      }
    }
    r.bytes.append(line);
    r.bytes.append("\r\n");
  }
  return r;
}

ProfileSet::ProfileSet() : profiles_(1) {}

const Profile& ProfileSet::ForListener(std::string_view given, std::string_view bound) const {
  if (!listeners_.empty()) {
    auto it = listeners_.find(Sv(given));
    if (it == listeners_.end()) it = listeners_.find(Sv(bound));
    if (it != listeners_.end()) return profiles_[it->second];
  }
  return profiles_[0];
}

const Profile* ProfileSet::ForDomain(std::string_view domain) const {
  if (domains_.empty()) return nullptr;
  auto it = domains_.find(absl::AsciiStrToLower(Sv(domain)));
  return it == domains_.end() ? nullptr : &profiles_[it->second];
}

std::vector<std::string> ProfileSet::listener_keys() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : listeners_) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

bool ProfileSet::uses_starttls() const {
  return std::any_of(profiles_.begin(), profiles_.end(),
                     [](const Profile& p) { return p.starttls; });
}

absl::StatusOr<ProfileSet> ParseProfiles(std::string_view text, std::string_view file_name) {
  const TomlFile src{file_name};
  ASSIGN_OR_RETURN(toml::table root, base::ParseToml(text, file_name));
  ProfileSet set;
  // Profile name to index; a std::map, as GCC 12 -O3 sees null dereferences in
  // an inlined flat_hash_map here. At most kMaxProfiles entries.
  std::map<std::string, uint32_t, std::less<>> by_name = {{"default", 0}};

  // Profiles first, so that listeners and domains can name them.
  if (const toml::node* node = root.get("profile")) {
    const auto* table = node->as_table();
    if (table == nullptr) return src.Error(*node, "profile", "must be a table of [profile.NAME]");
    if (table->size() > kMaxProfiles) {
      return src.Error(*node, "profile", absl::StrCat("more than ", kMaxProfiles, " profiles"));
    }
    for (const auto& [k, v] : *table) {
      const std::string name(k.str());
      const std::string key = absl::StrCat("profile.", name);
      if (!ValidProfileName(name)) {
        return src.Error(v, key, "a profile name is letters, digits, - and _");
      }
      if (name != "default") {
        by_name[name] = static_cast<uint32_t>(set.profiles_.size());
        set.profiles_.emplace_back();
      }
      Profile& p = name == "default" ? set.profiles_.front() : set.profiles_.back();
      p.name = name;
      RETURN_IF_ERROR(ParseProfile(src, v, key, &p));
    }
  }
  size_t mappings = 0;
  for (const auto& [section, node] : root) {
    const std::string_view name = section.str();
    if (name == "profile") continue;
    const bool listener = name == "listener";
    if (!listener && name != "domain") {
      return src.Error(node, name, "unknown section (want profile, listener or domain)");
    }
    const auto* table = node.as_table();
    if (table == nullptr) return src.Error(node, name, "must be a table");
    for (const auto& [k, v] : *table) {
      const std::string key_text(k.str());
      const std::string key = absl::StrCat(Sv(name), ".\"", key_text, "\"");
      if (key_text.empty() || key_text.size() > kMaxNameLength) {
        return src.Error(v, key, absl::StrCat("must be 1..", kMaxNameLength, " octets"));
      }
      if (++mappings > kMaxMappings) {
        return src.Error(v, key, absl::StrCat("more than ", kMaxMappings,
                                              " listener and domain entries"));
      }
      uint32_t index = 0;
      RETURN_IF_ERROR(ParseMapping(src, v, key, by_name, &index));
      if (listener) {
        set.listeners_[key_text] = index;
      } else {
        const std::string domain = absl::AsciiStrToLower(key_text);
        if (domain.find_first_of("@ \t") != std::string::npos) {
          return src.Error(v, key, "must be a domain name");
        }
        if (!set.domains_.emplace(domain, index).second) {
          return src.Error(v, key, "named twice (domains are matched in any case)");
        }
      }
    }
  }
  uint32_t id = 0;
  for (Profile& p : set.profiles_) {
    for (ReplyRule& r : p.replies) r.id = id++;
    for (DisconnectRule& r : p.disconnects) r.id = id++;
  }
  set.rule_count_ = id;
  return set;
}

absl::StatusOr<ProfileSet> LoadProfiles(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read profiles file"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (text.size() > kMaxFileSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": larger than ", kMaxFileSize, " octets"));
  }
  return ParseProfiles(text, path);
}

}  // namespace volley::smtpd
