#include "queue/template.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "queue/job.h"

namespace volley::queue {
namespace {

constexpr std::string_view kOpen = "{{";
constexpr std::string_view kClose = "}}";

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// ParsePlaceholder - `text` starts with "{{". On success sets *name and *length (the
// octets from "{{" through "}}") and returns nullptr; otherwise returns the reason.
// A placeholder must close on its own line: callers pass one line at a time.
const char* ParsePlaceholder(std::string_view text, std::string_view* name,
                             size_t* length) {
  const size_t close = text.find(kClose, kOpen.size());
  if (close == std::string_view::npos) return "unclosed {{";
  const std::string_view inner =
      TrimBlanks(text.substr(kOpen.size(), close - kOpen.size()));
  if (inner.empty()) return "empty placeholder";
  if (!IsPlaceholderName(inner)) return "invalid placeholder name";
  *name = inner;
  *length = close + kClose.size();
  return nullptr;
}

// LookUp - the value `name` renders to for `rcpt`; vars take precedence over the
// builtin "to", but not over {{unsubscribe_token}}: a recipient line must not be able
// to choose the token that identifies it. Names in vars are unique (the parser
// refuses duplicates); should a hand-built Recipient repeat one, the first wins.
std::string_view LookUp(std::string_view name, const Recipient& rcpt, const Builtins& builtins) {
  if (name == kUnsubscribeTokenName) return builtins.unsubscribe_token;
  for (const auto& [var, value] : rcpt.vars) {
    if (var == name) return value;
  }
  if (name == "to") return rcpt.to;
  return {};
}

// ResolvedValues - the value of each of a template's variables for one recipient,
// looked up once per recipient rather than once per placeholder. Campaign templates
// use a handful of variables, so the values usually live on the stack.
class ResolvedValues {
 public:
  ResolvedValues(const std::vector<std::string>& names, const Recipient& rcpt,
                 const Builtins& builtins) {
    if (names.size() > kInline) {
      heap_.resize(names.size());
      values_ = heap_.data();
    }
    for (size_t i = 0; i < names.size(); ++i) values_[i] = LookUp(names[i], rcpt, builtins);
  }
  ResolvedValues(const ResolvedValues&) = delete;
  ResolvedValues& operator=(const ResolvedValues&) = delete;

  std::string_view operator[](size_t i) const { return values_[i]; }

 private:
  static constexpr size_t kInline = 32;
  std::string_view inline_[kInline];
  std::vector<std::string_view> heap_;
  std::string_view* values_ = inline_;
};

absl::Status LineError(size_t line_no, std::string_view reason) {
  std::string message = absl::StrCat("line ", line_no, ": ");
  message.append(reason);
  return absl::InvalidArgumentError(message);
}

}  // namespace

bool IsPlaceholderName(std::string_view name, size_t max_len) {
  if (name.empty() || name.size() > max_len) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

absl::Status CheckInlineTemplate(std::string_view text) {
  if (text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return absl::InvalidArgumentError("contains CR, LF or NUL");
  }
  for (size_t pos = text.find(kOpen); pos != std::string_view::npos;
       pos = text.find(kOpen, pos)) {
    std::string_view name;
    size_t length = 0;
    if (const char* why = ParsePlaceholder(text.substr(pos), &name, &length)) {
      return absl::InvalidArgumentError(why);
    }
    pos += length;
  }
  return absl::OkStatus();
}

bool InlineTemplateUses(std::string_view text, std::string_view name) {
  for (size_t pos = text.find(kOpen); pos != std::string_view::npos; pos = text.find(kOpen, pos)) {
    std::string_view found;
    size_t length = 0;
    if (ParsePlaceholder(text.substr(pos), &found, &length) != nullptr) return false;
    if (found == name) return true;
    pos += length;
  }
  return false;
}

// AppendPercentEncoded - `value` with every octet outside RFC 3986's unreserved set
// written as %XX, so that a value cannot end a URL early or add to its query.
void AppendPercentEncoded(std::string_view value, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out->push_back(c);
    } else {
      out->push_back('%');
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 15]);
    }
  }
}

bool AppendRenderedInline(std::string_view text, const Recipient& rcpt, std::string* out) {
  return AppendRenderedInline(text, rcpt, Builtins{}, InlineValues::kVerbatim, out);
}

bool AppendRenderedInline(std::string_view text, const Recipient& rcpt, const Builtins& builtins,
                          InlineValues encoding, std::string* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) break;
    out->append(text.substr(pos, open - pos));
    std::string_view name;
    size_t length = 0;
    if (ParsePlaceholder(text.substr(open), &name, &length) != nullptr) return false;
    const std::string_view value = LookUp(name, rcpt, builtins);
    if (encoding == InlineValues::kPercentEncoded) {
      AppendPercentEncoded(value, out);
    } else {
      out->append(value);
    }
    pos = open + length;
  }
  if (pos < text.size()) out->append(text.substr(pos));
  return true;
}

absl::StatusOr<Template> Template::Compile(std::string_view text) {
  // Offsets are uint32_t; job lines are far smaller (JobLimits::max_header_line).
  if (text.size() > (UINT32_MAX >> 1)) {
    return absl::InvalidArgumentError("template too large");
  }
  Template t;
  t.text_.reserve(text.size() + text.size() / 32 + 2);

  auto add_literal = [&t](std::string_view s) {
    if (s.empty()) return;
    // Merge with a preceding literal so that a line without placeholders, and the
    // CRLF after it, cost one append at render time.
    if (!t.segments_.empty() && t.segments_.back().var == kLiteral) {
      t.segments_.back().length += static_cast<uint32_t>(s.size());
    } else {
      t.segments_.push_back(Segment{static_cast<uint32_t>(t.text_.size()),
                                    static_cast<uint32_t>(s.size()), kLiteral});
    }
    t.text_.append(s);
  };
  auto add_var = [&t](std::string_view name) {
    uint32_t index = 0;
    while (index < t.variables_.size() && t.variables_[index] != name) ++index;
    if (index == t.variables_.size()) t.variables_.emplace_back(name);
    t.segments_.push_back(Segment{0, 0, index});
    return index;
  };
  // Count one placeholder for variable `var` on the line that var_lines_.back()
  // describes.
  auto count_var = [&t](uint32_t var) {
    VarLine& vl = t.var_lines_.back();
    for (uint32_t i = vl.first; i < vl.first + vl.count; ++i) {
      if (t.line_vars_[i].var == var) {
        ++t.line_vars_[i].times;
        return;
      }
    }
    t.line_vars_.push_back(LineVar{var, 1});
    ++vl.count;
  };

  bool in_header = true;
  bool saw_field = false;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;  // past the LF; past the end for an unterminated last line
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    // SMTP carries lines ending in CRLF only; a bare CR is rendered ambiguously by
    // receivers and has been used to smuggle SMTP commands.
    if (line.find('\r') != std::string_view::npos) return LineError(line_no, "bare CR");
    if (line.find('\0') != std::string_view::npos) {
      return LineError(line_no, "contains NUL");
    }
    if (line.size() > kMaxMessageLine) {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line_no, " is ", line.size(), " octets, over ", kMaxMessageLine));
    }

    if (in_header) {
      if (line.empty()) {
        if (!saw_field) {
          return LineError(line_no,
                           "header section must start with a 'Name: value' field");
        }
        in_header = false;
      } else if (line.front() == ' ' || line.front() == '\t') {
        if (!saw_field) {
          return LineError(line_no,
                           "header section must start with a 'Name: value' field");
        }
      } else {
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
          return LineError(line_no, saw_field ? "not a header field (no ':')"
                                              : "header section must start with a "
                                                "'Name: value' field");
        }
        const std::string_view name = line.substr(0, colon);
        // A variable cannot choose which header it writes: that would let
        // recipient data add Bcc: or replace From:.
        if (name.find(kOpen) != std::string_view::npos) {
          return LineError(line_no, "placeholder in header field name");
        }
        if (!IsValidHeaderFieldName(name)) {
          return LineError(line_no, "invalid header field name");
        }
        saw_field = true;
        t.header_fields_.push_back(TemplateField{absl::AsciiStrToLower(base::Sv(name)), false});
      }
    }

    size_t at = 0;
    size_t placeholder_octets = 0;  // of "{{ name }}" text on this line
    while (at < line.size()) {
      const size_t open = line.find(kOpen, at);
      if (open == std::string_view::npos) break;
      add_literal(line.substr(at, open - at));
      std::string_view name;
      size_t length = 0;
      if (const char* why = ParsePlaceholder(line.substr(open), &name, &length)) {
        return LineError(line_no, why);
      }
      if (placeholder_octets == 0) {
        t.var_lines_.push_back(VarLine{static_cast<uint32_t>(line_no), 0,
                                       static_cast<uint32_t>(t.line_vars_.size()), 0});
      }
      count_var(add_var(name));
      if (in_header) {
        t.header_fields_.back().has_placeholders = true;
      } else {
        t.body_has_placeholders_ = true;
      }
      placeholder_octets += length;
      at = open + length;
    }
    if (at < line.size()) add_literal(line.substr(at));
    add_literal("\r\n");
    if (placeholder_octets > 0) {
      t.var_lines_.back().literal = static_cast<uint32_t>(line.size() - placeholder_octets);
    } else if (t.fixed_line_ == 0 || line.size() > t.fixed_length_) {
      t.fixed_line_ = static_cast<uint32_t>(line_no);
      t.fixed_length_ = static_cast<uint32_t>(line.size());
    }
  }
  if (line_no == 0) {
    return LineError(1, "header section must start with a 'Name: value' field");
  }
  t.text_.shrink_to_fit();
  return t;
}

void Template::Render(const Recipient& rcpt, std::string* out) const {
  Render(rcpt, Builtins{}, out);
}

void Template::Render(const Recipient& rcpt, const Builtins& builtins, std::string* out) const {
  const ResolvedValues values(variables_, rcpt, builtins);

  size_t total = text_.size();
  for (const Segment& s : segments_) {
    if (s.var != kLiteral) total += values[s.var].size();
  }
  out->reserve(out->size() + total);
  const char* base = text_.data();
  for (const Segment& s : segments_) {
    if (s.var == kLiteral) {
      out->append(base + s.offset, s.length);
    } else {
      out->append(values[s.var]);
    }
  }
}

const TemplateField* Template::FindHeader(std::string_view lower_name) const {
  for (const TemplateField& f : header_fields_) {
    if (f.name == lower_name) return &f;
  }
  return nullptr;
}

bool Template::uses(std::string_view name) const {
  for (const std::string& v : variables_) {
    if (v == name) return true;
  }
  return false;
}

RenderedLine Template::LongestLine(const Recipient& rcpt, const Builtins& builtins) const {
  RenderedLine best{fixed_line_, fixed_length_, {}};
  if (var_lines_.empty()) return best;
  const ResolvedValues values(variables_, rcpt, builtins);
  for (const VarLine& vl : var_lines_) {
    size_t length = vl.literal;
    size_t most = 0;
    std::string_view most_var;
    for (uint32_t i = vl.first; i < vl.first + vl.count; ++i) {
      const LineVar& lv = line_vars_[i];
      const size_t adds = values[lv.var].size() * lv.times;
      length += adds;
      if (most_var.empty() || adds > most) {
        most = adds;
        most_var = variables_[lv.var];
      }
    }
    // var_lines_ is in line order, but the fixed line may come before or after.
    if (best.line == 0 || length > best.length ||
        (length == best.length && vl.line < best.line)) {
      best = RenderedLine{vl.line, length, most_var};
    }
  }
  return best;
}

absl::Status Template::CheckLineLength(const Recipient& rcpt, const Builtins& builtins) const {
  const RenderedLine longest = LongestLine(rcpt, builtins);
  if (longest.length <= kMaxMessageLine) return absl::OkStatus();
  // Only a placeholder can take a line past the bound: Compile() holds literal
  // lines to it, so longest.var is set here.
  bool from_vars = false;
  for (const auto& [name, unused] : rcpt.vars) {
    if (name == longest.var) {
      from_vars = true;
      break;
    }
  }
  // Names are [A-Za-z0-9_.-] (IsPlaceholderName), safe to show as they are.
  std::string field = "to";
  if (from_vars || longest.var != "to") field.assign("vars.").append(longest.var);
  return absl::InvalidArgumentError(absl::StrCat(field, ": renders message line ",
                                                 longest.line, " at ", longest.length,
                                                 " octets, over ", kMaxMessageLine));
}

}  // namespace volley::queue
