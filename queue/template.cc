#include "queue/template.h"

#include <cstring>
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
// ParsePlaceholder's reasons are literals; this one names its bound.
constexpr const char kDefaultTooLong[] = "default longer than 256 octets";
static_assert(kMaxPlaceholderDefault == 256, "kDefaultTooLong names the bound");

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Placeholder - one parsed "{{ name | default }}".
struct Placeholder {
  std::string_view name;
  // The default as written (escapes not yet undone); see AppendDefault.
  std::string_view raw_default;
  bool has_default = false;
  size_t length = 0;  // octets from "{{" through "}}"
};

// ParsePlaceholder - `text` starts with "{{". On success fills *p and returns
// nullptr; otherwise returns the reason. A placeholder must close on its own line:
// callers pass one line at a time. The name ends at the first '|' or "}}"; after a
// '|', a backslash takes the next octet literally, so "\}" and "\\" let a default
// hold what would otherwise close the placeholder. Without '|' this is the grammar
// as it always was: the first "}}" closes.
const char* ParsePlaceholder(std::string_view text, Placeholder* p) {
  size_t at = kOpen.size();
  while (at < text.size() && text[at] != '|' && text.substr(at, kClose.size()) != kClose) ++at;
  if (at >= text.size()) return "unclosed {{";
  const std::string_view name = TrimBlanks(text.substr(kOpen.size(), at - kOpen.size()));
  Placeholder parsed;
  if (text[at] == '|') {
    parsed.has_default = true;
    const size_t start = ++at;
    for (;;) {
      if (at >= text.size()) return "unclosed {{";
      if (text[at] == '\\') {
        if (at + 1 >= text.size()) return "unclosed {{";
        at += 2;
        continue;
      }
      if (text.substr(at, kClose.size()) == kClose) break;
      // A "{{" in a default reads as a second placeholder to anyone checking the
      // template; "\{" says it is meant.
      if (text.substr(at, kOpen.size()) == kOpen) return "\"{{\" inside a default (write \\{)";
      ++at;
    }
    parsed.raw_default = text.substr(start, at - start);
    if (parsed.raw_default.size() > kMaxPlaceholderDefault) return kDefaultTooLong;
  }
  if (name.empty()) return "empty placeholder";
  if (!IsPlaceholderName(name)) return "invalid placeholder name";
  parsed.name = name;
  parsed.length = at + kClose.size();
  *p = parsed;
  return nullptr;
}

// AppendDefault - a default as it renders: escapes undone, and blanks around it
// dropped as they are around the name (an escaped blank is kept).
void AppendDefault(std::string_view raw, std::string* out) {
  const size_t base = out->size();
  size_t keep = base;  // out's size up to the last octet that is not a plain blank
  bool leading = true;
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    bool escaped = false;
    if (c == '\\' && i + 1 < raw.size()) {
      c = raw[++i];
      escaped = true;
    }
    const bool blank = !escaped && (c == ' ' || c == '\t');
    if (blank && leading) continue;
    out->push_back(c);
    if (!blank) {
      leading = false;
      keep = out->size();
    }
  }
  out->resize(keep);
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
  if (base::FindCrLfNul(text) != std::string_view::npos) {
    return absl::InvalidArgumentError("contains CR, LF or NUL");
  }
  for (size_t pos = text.find(kOpen); pos != std::string_view::npos;
       pos = text.find(kOpen, pos)) {
    Placeholder p;
    if (const char* why = ParsePlaceholder(text.substr(pos), &p)) {
      return absl::InvalidArgumentError(why);
    }
    pos += p.length;
  }
  return absl::OkStatus();
}

bool InlineTemplateUses(std::string_view text, std::string_view name) {
  for (size_t pos = text.find(kOpen); pos != std::string_view::npos; pos = text.find(kOpen, pos)) {
    Placeholder p;
    if (ParsePlaceholder(text.substr(pos), &p) != nullptr) return false;
    if (p.name == name) return true;
    pos += p.length;
  }
  return false;
}

size_t PlaceholderLength(std::string_view text) {
  Placeholder p;
  if (text.substr(0, kOpen.size()) != kOpen || ParsePlaceholder(text, &p) != nullptr) return 0;
  return p.length;
}

std::vector<InlineVariable> InlineTemplateVariables(std::string_view text) {
  std::vector<InlineVariable> found;
  for (size_t pos = text.find(kOpen); pos != std::string_view::npos; pos = text.find(kOpen, pos)) {
    Placeholder p;
    if (ParsePlaceholder(text.substr(pos), &p) != nullptr) return found;
    found.push_back(InlineVariable{std::string(p.name), p.has_default});
    pos += p.length;
  }
  return found;
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
    Placeholder p;
    if (ParsePlaceholder(text.substr(open), &p) != nullptr) return false;
    std::string_view value = LookUp(p.name, rcpt, builtins);
    std::string fallback;
    if (value.empty() && p.has_default) {
      AppendDefault(p.raw_default, &fallback);
      value = fallback;
    }
    if (encoding == InlineValues::kPercentEncoded) {
      AppendPercentEncoded(value, out);
    } else {
      out->append(value);
    }
    pos = open + p.length;
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
  auto add_var = [&t](const Placeholder& p, size_t line_no) {
    uint32_t index = 0;
    while (index < t.variables_.size() && t.variables_[index] != p.name) ++index;
    if (index == t.variables_.size()) {
      t.variables_.emplace_back(p.name);
      t.uses_.push_back(VariableUse{static_cast<uint32_t>(line_no), 0});
    }
    if (!p.has_default && t.uses_[index].line_without_default == 0) {
      t.uses_[index].line_without_default = static_cast<uint32_t>(line_no);
    }
    Segment s{0, 0, index, static_cast<uint32_t>(t.defaults_.size()), 0};
    if (p.has_default) {
      AppendDefault(p.raw_default, &t.defaults_);
      s.default_length = static_cast<uint32_t>(t.defaults_.size() - s.default_offset);
    }
    t.segments_.push_back(s);
    return index;
  };
  // Count one placeholder for variable `var` on the line that var_lines_.back()
  // describes, with `default_octets` of default text.
  auto count_var = [&t](uint32_t var, uint32_t default_octets) {
    VarLine& vl = t.var_lines_.back();
    for (uint32_t i = vl.first; i < vl.first + vl.count; ++i) {
      if (t.line_vars_[i].var == var) {
        ++t.line_vars_[i].times;
        t.line_vars_[i].default_octets += default_octets;
        return;
      }
    }
    t.line_vars_.push_back(LineVar{var, 1, default_octets});
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
      Placeholder p;
      if (const char* why = ParsePlaceholder(line.substr(open), &p)) {
        return LineError(line_no, why);
      }
      const size_t length = p.length;
      if (placeholder_octets == 0) {
        t.var_lines_.push_back(VarLine{static_cast<uint32_t>(line_no), 0,
                                       static_cast<uint32_t>(t.line_vars_.size()), 0});
      }
      const uint32_t var = add_var(p, line_no);
      count_var(var, t.segments_.back().default_length);
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
  t.defaults_.shrink_to_fit();
  t.SmtpFacts();
  return t;
}

void Template::SmtpFacts() {
  stuffed_.clear();
  stuffed_.reserve(text_.size() + 16);
  for (Segment& s : segments_) {
    const std::string_view text =
        s.var == kLiteral ? std::string_view(text_).substr(s.offset, s.length)
                          : std::string_view(defaults_).substr(s.default_offset, s.default_length);
    uint8_t flags = 0;
    if (base::HasEightBit(text)) flags |= kEightBit;
    if (!text.empty() && text.front() == '.') flags |= kStartsWithDot;
    if (s.var == kLiteral) {
      // Literals hold whole CRLFs (Compile adds "\r\n" as one piece).
      if (text.back() == '\n') flags |= kEndsLine;
      s.stuffed_offset = static_cast<uint32_t>(stuffed_.size());
      for (size_t i = 0; i < text.size(); ++i) {
        if (i > 0 && text[i] == '.' && text[i - 1] == '\n') stuffed_.push_back('.');
        stuffed_.push_back(text[i]);
      }
      s.stuffed_length = static_cast<uint32_t>(stuffed_.size() - s.stuffed_offset);
    }
    s.flags = flags;
  }
  // No line of the literals starts with '.' past a segment's start: the stuffed
  // form is text_ itself, at the same offsets, and need not be kept twice.
  if (stuffed_.size() == text_.size()) {
    std::string().swap(stuffed_);
  } else {
    stuffed_.shrink_to_fit();
  }
}

void Template::Render(const Recipient& rcpt, std::string* out) const {
  Render(rcpt, Builtins{}, out);
}

void Template::Render(const Recipient& rcpt, const Builtins& builtins, std::string* out) const {
  const ResolvedValues values(variables_, rcpt, builtins);

  // An empty value takes the placeholder's default (empty when it has none, which
  // renders as it always did).
  size_t total = text_.size();
  for (const Segment& s : segments_) {
    if (s.var != kLiteral) {
      const size_t n = values[s.var].size();
      total += n > 0 ? n : s.default_length;
    }
  }
  out->reserve(out->size() + total);
  const char* base = text_.data();
  for (const Segment& s : segments_) {
    if (s.var == kLiteral) {
      out->append(base + s.offset, s.length);
    } else if (const std::string_view value = values[s.var]; !value.empty()) {
      out->append(value);
    } else {
      out->append(defaults_.data() + s.default_offset, s.default_length);
    }
  }
}

void Template::Render(const Recipient& rcpt, const Builtins& builtins, LineStart dots,
                      std::string* out, RenderFacts* facts) const {
  const ResolvedValues values(variables_, rcpt, builtins);
  const bool stuff = dots == LineStart::kDotStuffed;
  const std::string& literal = stuff && !stuffed_.empty() ? stuffed_ : text_;

  size_t total = literal.size();
  for (const Segment& s : segments_) {
    if (s.var != kLiteral) {
      const size_t n = values[s.var].size();
      // +1: a value that starts a line with '.' gets its dot doubled.
      total += (n > 0 ? n : s.default_length) + (stuff ? 1 : 0);
    }
  }
  out->reserve(out->size() + total + (stuff ? 1 : 0));

  RenderFacts f;
  // The line so far is empty: a '.' appended now starts it. The template's first
  // line starts one (see the contract in template.h).
  bool line_start = true;
  const auto stuff_dot = [&](bool starts_with_dot) {
    if (stuff && line_start && starts_with_dot) {
      out->push_back('.');
      ++f.dots_added;
    }
  };
  for (const Segment& s : segments_) {
    if (s.var == kLiteral) {
      stuff_dot((s.flags & kStartsWithDot) != 0);
      if (stuff) {
        out->append(literal.data() + s.stuffed_offset, s.stuffed_length);
        f.dots_added += s.stuffed_length - s.length;
      } else {
        out->append(literal.data() + s.offset, s.length);
      }
      f.eight_bit = f.eight_bit || (s.flags & kEightBit) != 0;
      line_start = (s.flags & kEndsLine) != 0;
    } else if (const std::string_view value = values[s.var]; !value.empty()) {
      f.eight_bit = f.eight_bit || base::HasEightBit(value);
      if (std::memchr(value.data(), '\n', value.size()) != nullptr ||
          std::memchr(value.data(), '\r', value.size()) != nullptr) {
        f.line_break_in_value = true;
      }
      stuff_dot(value.front() == '.');
      out->append(value);
      line_start = false;
    } else if (s.default_length > 0) {
      stuff_dot((s.flags & kStartsWithDot) != 0);
      out->append(defaults_.data() + s.default_offset, s.default_length);
      f.eight_bit = f.eight_bit || (s.flags & kEightBit) != 0;
      line_start = false;
    }
    // An empty value with no default adds nothing: the line is where it was.
  }
  *facts = f;
}

const TemplateField* Template::FindHeader(std::string_view lower_name) const {
  for (const TemplateField& f : header_fields_) {
    if (f.name == lower_name) return &f;
  }
  return nullptr;
}

std::vector<Template::Use> Template::variable_uses() const {
  std::vector<Use> uses;
  uses.reserve(variables_.size());
  for (size_t i = 0; i < variables_.size(); ++i) {
    uses.push_back(Use{variables_[i], uses_[i].first_line, uses_[i].line_without_default});
  }
  return uses;
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
      const size_t value = values[lv.var].size();
      const size_t adds = value > 0 ? value * lv.times : lv.default_octets;
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
