#include "queue/job.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "queue/template.h"
#include "simdjson.h"

namespace volley::queue {
namespace {

namespace od = simdjson::ondemand;

constexpr size_t kMaxShownName = 64;

// ShownName - a key from the input, safe to put in an error message: unprintable
// bytes become '?' (as Postfix does before logging peer text) and the result is
// cut to 64 octets on a UTF-8 boundary, so neither a log line nor a .error file
// can be split or flooded by a hostile key.
std::string ShownName(std::string_view name) {
  bool cut = false;
  if (name.size() > kMaxShownName) {
    size_t n = kMaxShownName;
    while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xc0) == 0x80) --n;
    name = name.substr(0, n);
    cut = true;
  }
  std::string out;
  out.reserve(name.size() + 3);
  for (char c : name) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(b < 0x20 || b == 0x7f ? '?' : c);
  }
  if (cut) out.append("...");
  return out;
}

absl::Status FieldError(std::string_view field, std::string_view reason) {
  std::string message(field);
  message.append(": ").append(reason);
  return absl::InvalidArgumentError(message);
}

absl::Status JsonError(simdjson::error_code error) {
  return FieldError("json", simdjson::error_message(error));
}

absl::Status InvalidJson(std::string_view field, simdjson::error_code error) {
  return FieldError(field, absl::StrCat("invalid JSON (", simdjson::error_message(error),
                                        ")"));
}

// Error for a value that failed to parse: a type mismatch is the user's most likely
// mistake, so name the expected type; anything else is malformed JSON in that value.
absl::Status ValueError(std::string_view field, simdjson::error_code error,
                        std::string_view expected) {
  if (error == simdjson::INCORRECT_TYPE) return FieldError(field, expected);
  return InvalidJson(field, error);
}

// Error for a line whose top level is not an object.
absl::Status RootError(simdjson::error_code error) {
  if (error == simdjson::INCORRECT_TYPE) {
    return FieldError("json", "line must be a JSON object");
  }
  return JsonError(error);
}

// CheckNoCrLfNul - CR and LF in a value would end a header line or an SMTP command
// early and let the rest of the value inject new ones; NUL truncates C strings on
// the receiving side. CrLfNulProblem is the check alone: what is wrong, or null.
const char* CrLfNulProblem(std::string_view value) {
  const size_t bad = base::FindCrLfNul(value);
  if (bad == std::string_view::npos) return nullptr;
  return value[bad] == '\0' ? "contains NUL" : "contains CR or LF";
}

absl::Status CheckNoCrLfNul(std::string_view field, std::string_view value) {
  const char* problem = CrLfNulProblem(value);
  return problem == nullptr ? absl::OkStatus() : FieldError(field, problem);
}

absl::Status GetString(od::value& value, std::string_view field, std::string_view* out) {
  od::json_type type;
  if (auto error = value.type().get(type)) return InvalidJson(field, error);
  if (type != od::json_type::string) return FieldError(field, "must be a string");
  if (auto error = value.get_string().get(*out)) {
    return ValueError(field, error, "must be a string");
  }
  return absl::OkStatus();
}

// CheckDocumentEnd - the ondemand parser stops at the closing brace; anything after
// it ("{...}}" or "{...} {...}") means the line is not one JSON object.
absl::Status CheckDocumentEnd(od::document& doc) {
  const char* location = nullptr;
  if (doc.current_location().get(location) == simdjson::SUCCESS) {
    return FieldError("json", "trailing data after the object");
  }
  return absl::OkStatus();
}



bool IsAtext(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != std::string_view::npos;
}

// RFC 5321 Dot-string, with RFC 6531's UTF-8 atext.
bool IsDotString(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t len = base::Utf8SequenceLength(s, i);
      if (len == 0) return false;
      i += len;
    } else if (c == '.') {
      if (s[i + 1] == '.') return false;  // safe: s.back() != '.'
      ++i;
    } else if (IsAtext(s[i])) {
      ++i;
    } else {
      return false;
    }
  }
  return true;
}

// RFC 5321 Quoted-string at the start of `s`; returns its length including both
// quotes, or 0. Only qtextSMTP and quoted-pairSMTP (%d32-126) are allowed, so no
// control character (CR, LF, NUL, TAB) can appear even escaped.
size_t QuotedStringLength(std::string_view s) {
  if (s.empty() || s[0] != '"') return 0;
  for (size_t i = 1; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') return i == 1 ? 0 : i + 1;  // "" is refused: see IsValidAddress
    if (c == '\\') {
      if (i + 1 >= s.size()) return 0;
      const auto next = static_cast<unsigned char>(s[i + 1]);
      if (next < 32 || next > 126) return 0;
      i += 2;
    } else if (c >= 0x80) {
      const size_t len = base::Utf8SequenceLength(s, i);
      if (len == 0) return 0;
      i += len;
    } else if (c < 32 || c == 127) {
      return 0;
    } else {
      ++i;
    }
  }
  return 0;
}

bool IsIpv4(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (true) {
    size_t digits = 0;
    int value = 0;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i])) &&
           digits < 4) {
      value = value * 10 + (s[i] - '0');
      ++i, ++digits;
    }
    // "010" is refused: some resolvers read a leading zero as octal.
    if (digits == 0 || digits > 3 || value > 255 || (digits > 1 && s[i - digits] == '0')) {
      return false;
    }
    if (++parts == 4) return i == s.size();
    if (i >= s.size() || s[i] != '.') return false;
    ++i;
  }
}

bool IsAddressLiteral(std::string_view s) {
  if (s.size() < 3 || s.front() != '[' || s.back() != ']') return false;
  const std::string_view inner = s.substr(1, s.size() - 2);
  constexpr std::string_view kIpv6Tag = "IPv6:";
  if (inner.size() > kIpv6Tag.size() &&
      base::EqualsIgnoreCase(inner.substr(0, kIpv6Tag.size()), kIpv6Tag)) {
    const std::string_view ip = inner.substr(kIpv6Tag.size());
    if (ip.size() > 45) return false;  // longest textual IPv6 with embedded IPv4
    for (char c : ip) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') {
        return false;
      }
    }
    const std::string buf(ip);  // inet_pton needs a NUL-terminated string
    unsigned char addr[16];
    return inet_pton(AF_INET6, buf.c_str(), addr) == 1;
  }
  return IsIpv4(inner);
}

bool IsLdhDomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t labels = 0;
  std::string_view last;
  while (true) {
    const size_t dot = s.find('.');
    const std::string_view label = s.substr(0, dot);
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    ++labels;
    last = label;
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  if (labels < 2) return false;
  // An all-numeric last label means someone wrote an IP address without brackets;
  // no such top-level domain exists.
  return !std::all_of(last.begin(), last.end(),
                      [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); });
}

bool IsJobId(std::string_view id, size_t max_len) {
  if (id.empty() || id.size() > max_len) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

// IsRfc3339Shape - YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). absl::ParseTime
// alone also takes one-digit months and surrounding blanks, which RFC 3339 does not;
// it does check the ranges, so only the shape is checked here.
bool IsRfc3339Shape(std::string_view s) {
  auto digits = [&s](size_t at, size_t n) {
    if (s.size() < at + n) return false;
    for (size_t i = at; i < at + n; ++i) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) return false;
    }
    return true;
  };
  if (s.size() < 20 || !digits(0, 4) || s[4] != '-' || !digits(5, 2) || s[7] != '-' ||
      !digits(8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(11, 2) ||
      s[13] != ':' || !digits(14, 2) || s[16] != ':' || !digits(17, 2)) {
    return false;
  }
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    const size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) return false;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == s.size();
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    return s.size() == i + 6 && digits(i + 1, 2) && s[i + 3] == ':' && digits(i + 4, 2);
  }
  return false;
}

absl::Status ParseTimestamp(std::string_view field, od::value& value,
                            std::optional<absl::Time>* out) {
  constexpr std::string_view kWant =
      "must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z";
  std::string_view text;
  RETURN_IF_ERROR(GetString(value, field, &text));
  absl::Time time;
  std::string error;
  if (!IsRfc3339Shape(text) ||
      !absl::ParseTime(absl::RFC3339_full, absl::string_view(text.data(), text.size()),
                       &time, &error)) {
    return FieldError(field, kWant);
  }
  *out = time;
  return absl::OkStatus();
}

absl::Status ParseHeaderFields(od::value& value, const JobLimits& limits,
                               std::vector<std::pair<std::string, std::string>>* out) {
  od::object object;
  if (auto error = value.get_object().get(object)) {
    return ValueError("headers", error, "must be an object");
  }
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) return JsonError(error);
    std::string_view name;
    if (auto error = field.unescaped_key().get(name)) return JsonError(error);
    const std::string where = absl::StrCat("headers.", ShownName(name));
    if (out->size() == limits.max_header_fields) {
      return FieldError("headers", absl::StrCat("more than ", limits.max_header_fields,
                                                " fields"));
    }
    if (!IsValidHeaderFieldName(name)) {
      return FieldError(where,
                        "invalid field name (1..76 printable ASCII, no ':' or space)");
    }
    // Header names are case-insensitive (RFC 5322 1.2.2): "X-Tag" and "x-tag" are
    // one field given twice, which is almost certainly a mistake.
    for (const auto& [seen, unused] : *out) {
      if (base::EqualsIgnoreCase(seen, name)) return FieldError(where, "duplicate field");
    }
    od::value field_value = field.value();
    std::string_view text;
    RETURN_IF_ERROR(GetString(field_value, where, &text));
    RETURN_IF_ERROR(CheckNoCrLfNul(where, text));
    if (name.size() + 2 + text.size() > kMaxMessageLine) {
      return FieldError(where, absl::StrCat("longer than ", kMaxMessageLine,
                                            " octets as a header line"));
    }
    out->emplace_back(name, text);
  }
  return absl::OkStatus();
}

// CheckReturnPath - return_path is an address in which placeholders may stand for
// parts (VERP). Each placeholder is replaced by "x", so the literal parts must form
// a valid address around any non-empty value; RenderReturnPath checks the real
// result per recipient.
absl::Status CheckReturnPath(std::string_view text, const JobLimits& limits) {
  RETURN_IF_ERROR(CheckNoCrLfNul("return_path", text));
  if (absl::Status s = CheckInlineTemplate(text); !s.ok()) {
    return FieldError("return_path", std::string(s.message()));
  }
  std::string probe;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find("{{", pos);
    if (open == std::string_view::npos) break;
    probe.append(text.substr(pos, open - pos));
    probe.push_back('x');
    pos = open + PlaceholderLength(text.substr(open));  // CheckInlineTemplate proved it valid
  }
  if (pos < text.size()) probe.append(text.substr(pos));
  if (!IsValidAddress(probe, limits)) return FieldError("return_path", "invalid address");
  return absl::OkStatus();
}

// CheckUnsubscribeUrl - an https URL template. The scheme and host are literal text,
// so no recipient value can send the link elsewhere; values are percent-encoded
// when rendered (RenderUnsubscribeUrl), and the literal text holds nothing that
// would end the <...> of List-Unsubscribe early.
absl::Status CheckUnsubscribeUrl(std::string_view text) {
  constexpr std::string_view kField = "unsubscribe_url";
  RETURN_IF_ERROR(CheckNoCrLfNul(kField, text));
  if (absl::Status s = CheckInlineTemplate(text); !s.ok()) {
    return FieldError(kField, std::string(s.message()));
  }
  if (text.size() > kMaxUnsubscribeUrl) {
    return FieldError(kField, absl::StrCat("longer than ", kMaxUnsubscribeUrl, " octets"));
  }
  constexpr std::string_view kScheme = "https://";
  if (text.size() <= kScheme.size() ||
      !base::EqualsIgnoreCase(text.substr(0, kScheme.size()), kScheme)) {
    return FieldError(kField, "must start with https:// (RFC 8058 one-click unsubscribe "
                              "is an HTTPS POST)");
  }
  const std::string_view rest = text.substr(kScheme.size());
  const size_t host_end = rest.find_first_of("/?#");
  const std::string_view host = rest.substr(0, host_end);
  if (host.empty() || host.find("{{") != std::string_view::npos ||
      host.find('@') != std::string_view::npos) {
    return FieldError(kField, "the host must be written out (no placeholder, no user@)");
  }
  // The literal text only: a placeholder may have blanks inside its braces.
  std::string literal;
  for (size_t pos = 0; pos < text.size();) {
    const size_t open = text.find("{{", pos);
    literal.append(text.substr(pos, open == std::string_view::npos ? open : open - pos));
    if (open == std::string_view::npos) break;
    pos = open + PlaceholderLength(text.substr(open));  // CheckInlineTemplate proved it valid
  }
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '<' || c == '>' || c == '"' || c == '\\') {
      return FieldError(kField, "holds a space, a non-ASCII octet or one of < > \" \\ "
                                "(percent-encode it)");
    }
  }
  return absl::OkStatus();
}

// IsListLabel - the dot-atom of a List-Id (RFC 2919 2): atoms of atext joined by
// single dots, at least one dot.
bool IsListLabel(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' ||
      s.find("..") != std::string_view::npos || s.find('.') == std::string_view::npos) {
    return false;
  }
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
          std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) != std::string_view::npos)) {
      return false;
    }
  }
  return true;
}

absl::Status CheckListId(std::string_view text) {
  constexpr std::string_view kField = "list_id";
  RETURN_IF_ERROR(CheckNoCrLfNul(kField, text));
  if (text.size() > kMaxListId) {
    return FieldError(kField, absl::StrCat("longer than ", kMaxListId, " octets"));
  }
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return FieldError(kField, "must be printable ASCII");
  }
  const size_t open = text.find('<');
  std::string_view label = text;
  if (open != std::string_view::npos) {
    const size_t close = text.find('>', open);
    if (close == std::string_view::npos || close + 1 != text.size()) {
      return FieldError(kField, "must be \"label.domain\" or \"Name <label.domain>\"");
    }
    label = text.substr(open + 1, close - open - 1);
    if (text.substr(0, open).find_first_of("<>") != std::string_view::npos) {
      return FieldError(kField, "must be \"label.domain\" or \"Name <label.domain>\"");
    }
  }
  if (!IsListLabel(label)) {
    return FieldError(kField, "the list label must be a dot-atom such as news.sender.test "
                              "(RFC 2919)");
  }
  return absl::OkStatus();
}

absl::Status CheckFeedbackId(std::string_view text) {
  constexpr std::string_view kField = "feedback_id";
  if (text.size() > kMaxFeedbackId) {
    return FieldError(kField, absl::StrCat("longer than ", kMaxFeedbackId, " octets"));
  }
  RETURN_IF_ERROR(CheckNoCrLfNul(kField, text));
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return FieldError(kField, "must be printable ASCII without spaces (a:b:c:SenderId)");
    }
  }
  return absl::OkStatus();
}

absl::Status GetBool(od::value& value, std::string_view field, bool* out) {
  if (value.get_bool().get(*out) != simdjson::SUCCESS) {
    return FieldError(field, "must be true or false");
  }
  return absl::OkStatus();
}

// Known header fields, as bits so a repeated key is caught without a set.
enum HeaderField : uint32_t {
  kJob = 1 << 0,
  kFrom = 1 << 1,
  kMessage = 1 << 2,
  kHeaders = 1 << 3,
  kReturnPath = 1 << 4,
  kSendAfter = 1 << 5,
  kExpires = 1 << 6,
  kPriority = 1 << 7,
  kUnsubscribeUrl = 1 << 8,
  kUnsubscribeMailto = 1 << 9,
  kListId = 1 << 10,
  kFeedbackId = 1 << 11,
  kAddMessageId = 1 << 12,
  kAddDate = 1 << 13,
  kDkim = 1 << 14,
};

uint32_t HeaderFieldBit(std::string_view key) {
  if (key == "job") return kJob;
  if (key == "from") return kFrom;
  if (key == "message") return kMessage;
  if (key == "headers") return kHeaders;
  if (key == "return_path") return kReturnPath;
  if (key == "send_after") return kSendAfter;
  if (key == "expires") return kExpires;
  if (key == "priority") return kPriority;
  if (key == "unsubscribe_url") return kUnsubscribeUrl;
  if (key == "unsubscribe_mailto") return kUnsubscribeMailto;
  if (key == "list_id") return kListId;
  if (key == "feedback_id") return kFeedbackId;
  if (key == "add_message_id") return kAddMessageId;
  if (key == "add_date") return kAddDate;
  if (key == "dkim") return kDkim;
  return 0;
}

// ParseHeaderValue - one member of the header into *h; the message template, once
// compiled to check it, is kept in *tpl for the checks that look at its fields.
absl::Status ParseHeaderValue(uint32_t bit, od::value& value, const JobLimits& limits,
                              JobHeader* h, std::optional<Template>* tpl) {
  std::string_view text;
  switch (bit) {
    case kJob:
      RETURN_IF_ERROR(GetString(value, "job", &text));
      RETURN_IF_ERROR(CheckJobId(text, limits));
      h->id = std::string(text);
      return absl::OkStatus();
    case kFrom:
      RETURN_IF_ERROR(GetString(value, "from", &text));
      RETURN_IF_ERROR(CheckNoCrLfNul("from", text));
      if (!IsValidAddress(text, limits)) return FieldError("from", "invalid address");
      h->from = std::string(text);
      return absl::OkStatus();
    case kMessage: {
      RETURN_IF_ERROR(GetString(value, "message", &text));
      absl::StatusOr<Template> t = Template::Compile(text);
      if (!t.ok()) return FieldError("message", std::string(t.status().message()));
      tpl->emplace(*std::move(t));
      h->message = std::string(text);
      return absl::OkStatus();
    }
    case kHeaders:
      return ParseHeaderFields(value, limits, &h->headers);
    case kReturnPath:
      RETURN_IF_ERROR(GetString(value, "return_path", &text));
      if (!text.empty()) RETURN_IF_ERROR(CheckReturnPath(text, limits));
      h->return_path = std::string(text);
      return absl::OkStatus();
    case kUnsubscribeUrl:
      RETURN_IF_ERROR(GetString(value, "unsubscribe_url", &text));
      RETURN_IF_ERROR(CheckUnsubscribeUrl(text));
      h->unsubscribe_url = std::string(text);
      return absl::OkStatus();
    case kUnsubscribeMailto:
      RETURN_IF_ERROR(GetString(value, "unsubscribe_mailto", &text));
      RETURN_IF_ERROR(CheckNoCrLfNul("unsubscribe_mailto", text));
      // Written inside <mailto:...>: a plain address, nothing that needs quoting.
      if (!IsValidAddress(text, limits) || text.front() == '"' ||
          text.find_first_of("?&%") != std::string_view::npos) {
        return FieldError("unsubscribe_mailto", "invalid address");
      }
      h->unsubscribe_mailto = std::string(text);
      return absl::OkStatus();
    case kListId:
      RETURN_IF_ERROR(GetString(value, "list_id", &text));
      RETURN_IF_ERROR(CheckListId(text));
      h->list_id = std::string(text);
      return absl::OkStatus();
    case kFeedbackId:
      RETURN_IF_ERROR(GetString(value, "feedback_id", &text));
      RETURN_IF_ERROR(CheckFeedbackId(text));
      h->feedback_id = std::string(text);
      return absl::OkStatus();
    case kAddMessageId:
      return GetBool(value, "add_message_id", &h->add_message_id);
    case kAddDate:
      return GetBool(value, "add_date", &h->add_date);
    case kDkim:
      return GetBool(value, "dkim", &h->dkim);
    case kSendAfter:
      return ParseTimestamp("send_after", value, &h->send_after);
    case kExpires:
      return ParseTimestamp("expires", value, &h->expires);
    case kPriority: {
      int64_t priority = 0;
      if (value.get_int64().get(priority) != simdjson::SUCCESS || priority < 0 ||
          priority > 9) {
        return FieldError("priority", "must be an integer 0..9");
      }
      h->priority = static_cast<int>(priority);
      return absl::OkStatus();
    }
  }
  VOLLEY_CHECK(false, "ParseHeaderValue: unhandled field bit");
  return absl::InternalError("unreachable");
}

// VarField - "vars.<name>", the field an error about a variable names; made
// only for an error, since every recipient line has variables.
std::string VarField(std::string_view name) { return absl::StrCat("vars.", ShownName(name)); }

// A variable value: strings as they are; numbers and booleans as their JSON text, so
// "price": 1.50 renders as 1.50, not 1.5; null, objects and arrays have no obvious
// text and are refused.
absl::Status ParseVarValue(std::string_view name, od::value& value,
                           const JobLimits& limits, std::string* out) {
  od::json_type type;
  if (auto error = value.type().get(type)) return InvalidJson(VarField(name), error);
  std::string_view text;
  switch (type) {
    case od::json_type::string:
      if (auto error = value.get_string().get(text)) return InvalidJson(VarField(name), error);
      if (const char* problem = CrLfNulProblem(text)) return FieldError(VarField(name), problem);
      break;
    case od::json_type::number: {
      // Parse it to reject what JSON does not allow (01, 1.) and what does not fit
      // a double; keep the text as written.
      od::number number;
      if (value.get_number().get(number) != simdjson::SUCCESS) {
        return FieldError(VarField(name), "invalid or out-of-range number (quote it as a string)");
      }
      text = value.raw_json_token();
      while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
        text.remove_suffix(1);
      }
      break;
    }
    case od::json_type::boolean: {
      bool b = false;
      if (auto error = value.get_bool().get(b)) return InvalidJson(VarField(name), error);
      text = b ? "true" : "false";
      break;
    }
    default:
      return FieldError(VarField(name), "must be a string, number or boolean");
  }
  if (text.size() > limits.max_var_value) {
    return FieldError(VarField(name), absl::StrCat("longer than ", limits.max_var_value, " octets"));
  }
  *out = std::string(text);
  return absl::OkStatus();
}

absl::Status ParseVars(od::value& value, const JobLimits& limits,
                       std::vector<std::pair<std::string, std::string>>* out) {
  od::object object;
  if (auto error = value.get_object().get(object)) {
    return ValueError("vars", error, "must be an object");
  }
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) return JsonError(error);
    std::string_view name;
    if (auto error = field.unescaped_key().get(name)) return JsonError(error);
    if (out->size() == limits.max_vars) {
      return FieldError("vars", absl::StrCat("more than ", limits.max_vars, " variables"));
    }
    if (!IsPlaceholderName(name, limits.max_var_name)) {
      return FieldError(VarField(name),
                        absl::StrCat("invalid name (must match [A-Za-z0-9_.-]{1,",
                                     limits.max_var_name, "})"));
    }
    // Linear: max_vars is small and this avoids a set allocation per line.
    for (const auto& [seen, unused] : *out) {
      if (seen == name) return FieldError(VarField(name), "duplicate field");
    }
    od::value field_value = field.value();
    std::string text;
    RETURN_IF_ERROR(ParseVarValue(name, field_value, limits, &text));
    out->emplace_back(std::string(name), std::move(text));
  }
  return absl::OkStatus();
}

// Unsigned LEB128, at most 5 bytes (32 bits): every length here is far below 4 GiB.
void PutVarint(uint32_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint32_t* v) {
  uint32_t result = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    if (in->empty()) return false;
    const auto b = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    if (shift == 28 && b > 0x0f) return false;  // would overflow 32 bits
    result |= static_cast<uint32_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

void PutString(std::string_view s, std::string* out) {
  VOLLEY_CHECK(s.size() <= UINT32_MAX, "EncodeRecipient: string over 4 GiB");
  PutVarint(static_cast<uint32_t>(s.size()), out);
  out->append(s);
}

bool ReadString(std::string_view* in, std::string* out) {
  uint32_t len = 0;
  if (!GetVarint(in, &len) || len > in->size()) return false;
  out->assign(in->data(), len);
  in->remove_prefix(len);
  return base::FindCrLfNul(*out) == std::string::npos;
}

constexpr char kRecipientVersion = 0x01;

}  // namespace

absl::Status CheckJobId(std::string_view id, const JobLimits& limits) {
  if (!IsJobId(id, limits.max_job_id)) {
    return FieldError("job", absl::StrCat("must match [A-Za-z0-9._-]{1,", limits.max_job_id, "}"));
  }
  // The grammar lets these through, but the id becomes part of file names.
  if (id.front() == '.') {
    return FieldError("job", "must not start with '.': the id names files in the spool (\".\" "
                             "and \"..\" are folders, \".x\" a hidden file)");
  }
  if (id.front() == '-') {
    return FieldError("job", "must not start with '-': the id names files in the spool, and a "
                             "leading '-' reads as an option to rm, ls and the rest");
  }
  return absl::OkStatus();
}

bool IsValidHeaderFieldName(std::string_view name) {
  if (name.empty() || name.size() > 76) return false;
  for (char c : name) {
    const auto b = static_cast<unsigned char>(c);
    if (b <= 32 || b >= 127 || c == ':') return false;
  }
  return true;
}

bool IsValidDomainName(std::string_view domain) { return IsLdhDomain(domain); }

bool IsValidAddress(std::string_view address, const JobLimits& limits) {
  if (address.empty() || address.size() > limits.max_address) return false;
  size_t local_len;
  if (address.front() == '"') {
    local_len = QuotedStringLength(address);
    if (local_len == 0) return false;
  } else {
    // A Dot-string holds no '@', so the first one ends the local part.
    local_len = address.find('@');
    if (local_len == std::string_view::npos || !IsDotString(address.substr(0, local_len))) {
      return false;
    }
  }
  if (local_len > limits.max_local_part) return false;
  if (local_len >= address.size() || address[local_len] != '@') return false;
  const std::string_view domain = address.substr(local_len + 1);
  if (!domain.empty() && domain.front() == '[') return IsAddressLiteral(domain);
  return IsLdhDomain(domain);
}

absl::StatusOr<JobHeader> ParseJobHeader(std::string_view line, const JobLimits& limits) {
  if (line.size() > limits.max_header_line) {
    return FieldError("line", absl::StrCat(line.size(), " bytes, over ",
                                           limits.max_header_line));
  }
  // A parser of its own rather than the per-thread one ParseRecipientLine uses: a
  // header can be 16 MiB and the parser would keep buffers of that size for good.
  od::parser parser;
  const simdjson::padded_string padded(line);
  od::document doc;
  if (auto error = parser.iterate(padded).get(doc)) return JsonError(error);
  od::object object;
  if (auto error = doc.get_object().get(object)) {
    return RootError(error);
  }
  JobHeader h;
  std::optional<Template> tpl;  // set with "message", which is required
  uint32_t seen = 0;
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) return JsonError(error);
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) return JsonError(error);
    const uint32_t bit = HeaderFieldBit(key);
    if (bit == 0) return FieldError(ShownName(key), "unknown field");
    if (seen & bit) return FieldError(key, "duplicate field");
    seen |= bit;
    od::value value = field.value();
    RETURN_IF_ERROR(ParseHeaderValue(bit, value, limits, &h, &tpl));
  }
  RETURN_IF_ERROR(CheckDocumentEnd(doc));
  if (!(seen & kJob)) return FieldError("job", "missing");
  if (!(seen & kFrom)) return FieldError("from", "missing");
  if (!(seen & kMessage)) return FieldError("message", "missing");
  if (h.send_after && h.expires && *h.expires <= *h.send_after) {
    return FieldError("expires", "must be later than send_after");
  }
  if (!h.unsubscribe_mailto.empty() && h.unsubscribe_url.empty()) {
    return FieldError("unsubscribe_mailto",
                      "needs unsubscribe_url too (one-click unsubscribe is by HTTPS)");
  }
  if (!(seen & kFeedbackId)) {
    // Gmail's a:b:c:SenderId: the campaign, then the sender (the envelope domain);
    // not when the message or `headers` has a Feedback-ID of its own.
    if (!HasHeaderField(h, *tpl, "feedback-id")) h.feedback_id = absl::StrCat(h.id, ":", base::Sv(DomainOf(h.from)));
    if (h.feedback_id.size() > kMaxFeedbackId) h.feedback_id.clear();
  }
  return h;
}

absl::StatusOr<Recipient> ParseRecipientLine(std::string_view line,
                                             const JobLimits& limits) {
  if (line.size() > limits.max_recipient_line) {
    return FieldError("line", absl::StrCat(line.size(), " bytes, over ",
                                           limits.max_recipient_line));
  }
  // One parser and padded buffer per thread: a campaign has millions of recipient
  // lines, and both are bounded by max_recipient_line.
  thread_local od::parser parser;
  thread_local std::string buffer;
  buffer.assign(line);
  buffer.resize(line.size() + simdjson::SIMDJSON_PADDING);
  const simdjson::padded_string_view padded(buffer.data(), line.size(), buffer.size());
  od::document doc;
  if (auto error = parser.iterate(padded).get(doc)) return JsonError(error);
  od::object object;
  if (auto error = doc.get_object().get(object)) {
    return RootError(error);
  }
  Recipient r;
  bool seen_to = false;
  bool seen_vars = false;
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) return JsonError(error);
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) return JsonError(error);
    od::value value = field.value();
    if (key == "to") {
      if (seen_to) return FieldError("to", "duplicate field");
      seen_to = true;
      std::string_view to;
      RETURN_IF_ERROR(GetString(value, "to", &to));
      RETURN_IF_ERROR(CheckNoCrLfNul("to", to));
      if (!IsValidAddress(to, limits)) return FieldError("to", "invalid address");
      r.to = std::string(to);
    } else if (key == "vars") {
      if (seen_vars) return FieldError("vars", "duplicate field");
      seen_vars = true;
      RETURN_IF_ERROR(ParseVars(value, limits, &r.vars));
    } else {
      return FieldError(ShownName(key), "unknown field");
    }
  }
  RETURN_IF_ERROR(CheckDocumentEnd(doc));
  if (!seen_to) return FieldError("to", "missing");
  return r;
}

std::string EncodeRecipient(const Recipient& r) {
  size_t size = 1 + 5 + r.to.size() + 5;
  for (const auto& [name, value] : r.vars) size += 10 + name.size() + value.size();
  std::string out;
  out.reserve(size);
  out.push_back(kRecipientVersion);
  PutString(r.to, &out);
  VOLLEY_CHECK(r.vars.size() <= UINT32_MAX, "EncodeRecipient: too many vars");
  PutVarint(static_cast<uint32_t>(r.vars.size()), &out);
  for (const auto& [name, value] : r.vars) {
    PutString(name, &out);
    PutString(value, &out);
  }
  return out;
}

absl::StatusOr<Recipient> DecodeRecipient(std::string_view bytes) {
  auto corrupt = [](const std::string& why) {
    return absl::DataLossError(absl::StrCat("recipient record: ", why));
  };
  if (bytes.empty()) return corrupt("empty");
  if (bytes.front() != kRecipientVersion) {
    return corrupt(absl::StrCat("unknown version ",
                                static_cast<int>(static_cast<unsigned char>(bytes.front()))));
  }
  bytes.remove_prefix(1);
  Recipient r;
  if (!ReadString(&bytes, &r.to)) return corrupt("bad address");
  uint32_t count = 0;
  // Each var takes at least two bytes, which bounds the count before reserving.
  if (!GetVarint(&bytes, &count) || count > bytes.size() / 2) {
    return corrupt("bad variable count");
  }
  r.vars.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    std::string name;
    std::string value;
    if (!ReadString(&bytes, &name) || !ReadString(&bytes, &value)) {
      return corrupt(absl::StrCat("bad variable ", i));
    }
    r.vars.emplace_back(std::move(name), std::move(value));
  }
  if (!bytes.empty()) return corrupt(absl::StrCat(bytes.size(), " trailing bytes"));
  return r;
}

std::string RenderMessage(const JobHeader& h, const Template& t, const Recipient& r) {
  return RenderMessage(h, t, r, AddedFields{});
}

bool RenderUnsubscribeUrl(const JobHeader& h, const Recipient& r, std::string_view token,
                          std::string* out) {
  out->clear();
  Builtins builtins;
  builtins.unsubscribe_token = token;
  if (!AppendRenderedInline(h.unsubscribe_url, r, builtins, InlineValues::kPercentEncoded, out)) {
    return false;
  }
  return out->size() <= kMaxUnsubscribeUrl;
}

std::string RenderMessage(const JobHeader& h, const Template& t, const Recipient& r,
                          const AddedFields& added) {
  std::string out;
  out.reserve(RenderedSizeHint(h, t));
  AppendAddedFields(h, r, added, &out);
  Builtins builtins;
  builtins.unsubscribe_token = added.unsubscribe_token;
  t.Render(r, builtins, &out);
  return out;
}

size_t RenderedSizeHint(const JobHeader& h, const Template& t) {
  size_t size = t.literal_size() + 256 + h.unsubscribe_url.size();
  for (const auto& [name, value] : h.headers) size += name.size() + value.size() + 4;
  return size;
}

void AppendAddedFields(const JobHeader& h, const Recipient& r, const AddedFields& added,
                       std::string* out_ptr) {
  std::string& out = *out_ptr;
  const auto field = [&out](std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  };
  if (!added.message_id.empty()) {
    out.append("Message-ID: <");
    out.append(added.message_id);
    out.append(">\r\n");
  }
  if (!added.date.empty()) field("Date", added.date);
  if (!added.trace.empty()) field(kTraceField, added.trace);
  if (!h.unsubscribe_url.empty()) {
    std::string url;
    // A URL that does not render (too long after encoding) is left out rather than
    // cut: intake has refused such recipients already (CheckUnsubscribeLength).
    if (RenderUnsubscribeUrl(h, r, added.unsubscribe_token, &url)) {
      out.append("List-Unsubscribe: <");
      out.append(url);
      out.append(">");
      if (!h.unsubscribe_mailto.empty()) {
        // Folded: the URL may take most of a line.
        out.append(",\r\n <mailto:");
        out.append(h.unsubscribe_mailto);
        out.append("?subject=unsubscribe>");
      }
      out.append("\r\n");
      field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
    }
  }
  if (!h.list_id.empty()) {
    if (h.list_id.find('<') == std::string::npos) {
      out.append("List-Id: <");
      out.append(h.list_id);
      out.append(">\r\n");
    } else {
      field("List-Id", h.list_id);
    }
  }
  if (!h.feedback_id.empty()) field("Feedback-ID", h.feedback_id);
  for (const auto& [name, value] : h.headers) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
}

bool HasHeaderField(const JobHeader& h, const Template& t, std::string_view lower_name) {
  if (t.FindHeader(lower_name) != nullptr) return true;
  for (const auto& [field, unused] : h.headers) {
    if (base::EqualsIgnoreCase(field, lower_name)) return true;
  }
  return false;
}

absl::Status CheckMessageHeaders(const JobHeader& h, const Template& t) {
  for (const auto& [field, unused] : h.headers) {
    if (base::EqualsIgnoreCase(field, "message-id")) {
      return FieldError("headers.Message-ID",
                        "would be the same in every message; remove it: Volley gives each "
                        "message a unique Message-ID");
    }
  }
  if (const TemplateField* mid = t.FindHeader("message-id");
      mid != nullptr && !mid->has_placeholders) {
    return FieldError("message",
                      "its Message-ID field has no placeholder, so every message would carry "
                      "the same one; remove it: Volley gives each message a unique Message-ID");
  }
  if (!h.unsubscribe_url.empty()) {
    for (std::string_view name : {"list-unsubscribe", "list-unsubscribe-post"}) {
      if (HasHeaderField(h, t, name)) {
        return FieldError("unsubscribe_url",
                          absl::StrCat("the message has a ", base::Sv(name),
                                       " field of its own; with unsubscribe_url Volley "
                                       "writes both List-Unsubscribe fields: remove it"));
      }
    }
  }
  if (!h.list_id.empty() && HasHeaderField(h, t, "list-id")) {
    return FieldError("list_id", "the message has a List-Id field of its own: remove one");
  }
  if (!h.feedback_id.empty() && HasHeaderField(h, t, "feedback-id")) {
    return FieldError("feedback_id", "the message has a Feedback-ID field of its own: remove one");
  }
  return absl::OkStatus();
}

bool UsesUnsubscribeToken(const JobHeader& h, const Template& t) {
  return t.uses(kUnsubscribeTokenName) ||
         InlineTemplateUses(h.unsubscribe_url, kUnsubscribeTokenName);
}

std::string RenderReturnPath(const JobHeader& h, const Recipient& r) {
  if (h.return_path.empty()) return h.from;
  std::string out;
  out.reserve(h.return_path.size() + 32);
  if (!AppendRenderedInline(h.return_path, r, &out) || !IsValidAddress(out, JobLimits{})) {
    return h.from;
  }
  return out;
}

}  // namespace volley::queue
