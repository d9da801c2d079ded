// template.h - message templates with {{name}} placeholders
//
// SYNOPSIS
//   #include "queue/template.h"
//
//   absl::StatusOr<Template> Template::Compile(std::string_view text);
//   void Template::Render(const Recipient& rcpt, std::string* out) const;
//   void Template::Render(const Recipient& rcpt, const Builtins& builtins,
//                         LineStart dots, std::string* out, RenderFacts* facts) const;
//   RenderedLine Template::LongestLine(const Recipient& rcpt) const;
//   absl::Status Template::CheckLineLength(const Recipient& rcpt) const;
//   const std::vector<std::string>& Template::variables() const;
//   std::vector<Template::Use> Template::variable_uses() const;
//
//   bool AppendRenderedInline(std::string_view text, const Recipient& rcpt,
//                             std::string* out);
//
// DESCRIPTION
//   A job's "message" is an RFC 5322 message (header section, empty line, body) in
//   which {{ name }} stands for the recipient's variable `name`. Compile() checks the
//   text once per job and splits it into literal and variable segments, so Render()
//   for each of a campaign's recipients is a single pass of appends into the caller's
//   buffer, with no per-segment allocation.
//
//   Placeholder syntax: "{{", optional spaces or tabs, a name of 1..64 characters
//   from [A-Za-z0-9_.-], optional spaces or tabs, optionally "|" and a default,
//   "}}". A placeholder never spans lines. Outside a default there is no escape:
//   every "{{" starts a placeholder, and a lone "}}" is literal text.
//
//   Defaults: {{name|there}} renders "there" for a recipient whose `name` is
//   missing or empty. The default runs from the first '|' to the first "}}" not
//   escaped; inside it a backslash takes the next octet as it is ("\}\}" is a
//   literal "}}", "\\" a backslash; a second '|' needs no escape), a "{{" must be
//   written "\{{", and blanks around it are dropped as they are around
//   the name ("\ " keeps one). It is at most kMaxPlaceholderDefault octets as
//   written, lives on one line of the template (so it holds no CR, LF or NUL, and
//   Compile's 998-octet line check counts it), and like a value it is inserted
//   verbatim, never expanded. {{name|}} is an explicit empty default. Templates
//   without '|' in a placeholder parse and render exactly as before defaults.
//
//   Rendering: a variable the recipient does not define renders as its default, or
//   as empty text when the placeholder has none. The
//   builtin {{to}} is the recipient address unless the recipient's vars define "to".
//   The builtin {{unsubscribe_token}} is Builtins::unsubscribe_token, whatever the
//   recipient's vars say: the token identifies the recipient to the unsubscribe
//   endpoint, so recipient data must not choose it.
//   Values are inserted verbatim and never expanded again, so a value holding "{{x}}"
//   renders as those five characters.
//
//   Line endings: LF and CRLF in the template are both accepted and rendered as CRLF,
//   the only line ending SMTP allows; the rendered message always ends with CRLF.
//   Dot-stuffing is the SMTP client's job, unless the caller asks for it.
//
//   Rendering in SMTP form: Compile() also keeps the literal segments in the form
//   SMTP's DATA sends them (a '.' that starts a line doubled, RFC 5321 4.5.2), and
//   notes which segments hold 8-bit octets and which start with a '.'. Render() with
//   RenderFacts then appends the message already dot-stuffed when asked
//   (LineStart::kDotStuffed), and says whether it holds an 8-bit octet and how many
//   dots it added, so that the sender need not pass over the message again: only
//   the values are looked at per recipient (each scanned once for 8-bit octets and
//   line breaks), the literal text never. A value that lands at the start of a line
//   and starts with '.' is stuffed too; so is a literal that starts a line because
//   the value before it was empty.
//
//   Rendered line length: LongestLine() says, without rendering, how long the
//   longest line Render() would produce for a recipient is: per template line, its
//   literal octets plus the size of every value substituted into it. Compile()
//   records, for each line holding placeholders, its literal octets and how many
//   times each variable appears on it, so the check costs one addition per distinct
//   variable per such line. Values never hold CR or LF (ParseRecipientLine and
//   DecodeRecipient refuse them: header injection), so a value never splits a line;
//   should a hand-built Recipient carry one anyway, it is counted whole, and the
//   result can only overestimate. An empty value counts its placeholders' defaults.
//
// CONTRACT
//   A compiled Template is immutable; Render() is const and safe to call from any
//   number of threads at once.
//
// DIAGNOSTICS
//   Compile() returns absl::InvalidArgumentError whose message starts with the
//   template line, 1-based: "line 3: unclosed {{", "line 3: empty placeholder",
//   "line 3: invalid placeholder name", "line 2: bare CR", "line 1: contains NUL",
//   "line 7 is 1203 octets, over 998", "line 3: default longer than 256 octets",
//   "line 3: \"{{\" inside a default (write \{)", "line 1: header section must start with a
//   'Name: value' field", "line 2: placeholder in header field name".
//
//   CheckLineLength() returns absl::InvalidArgumentError "<field>: renders message
//   line 4 at 1203 octets, over 998", where the line is the template line (as in
//   Compile's errors) and <field> is the variable adding the most octets to it:
//   "vars.<name>", or "to" for the builtin recipient address.
//
// BOUNDS
//   No rendered line exceeds 998 octets without its CRLF (RFC 5322 2.1.1, RFC 5321
//   4.5.3.1.6). Compile() holds the template's own lines to that, so a template
//   without placeholders is checked once per job; a value longer than its
//   placeholder can still push a line past it, which CheckLineLength() catches for
//   each recipient at intake (queue/spool.cc rejects that recipient line). The
//   renderer itself neither folds nor checks lines.
//
// SEE ALSO
//   queue/job.h (JobHeader, Recipient, RenderMessage), docs/jobs.md,
//   RFC 5322 2.1.1 and 2.2.
#ifndef VOLLEY_QUEUE_TEMPLATE_H_
#define VOLLEY_QUEUE_TEMPLATE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "queue/job.h"

namespace volley::queue {

// Longest message line, without CRLF (RFC 5322 2.1.1).
inline constexpr size_t kMaxMessageLine = 998;
// Longest placeholder name; matches JobLimits::max_var_name's default.
inline constexpr size_t kMaxPlaceholderName = 64;
// Longest default of one placeholder ({{name|default}}), in octets as written:
// a greeting or a fallback word, not a second template.
inline constexpr size_t kMaxPlaceholderDefault = 256;

// The builtin placeholder an unsubscribe link carries (engine/token: a signed token
// naming the job and the recipient line).
inline constexpr std::string_view kUnsubscribeTokenName = "unsubscribe_token";
// Longest text a token renders to; intake counts a token this long when it checks
// line lengths, since the real token is made only at send time.
inline constexpr size_t kMaxUnsubscribeToken = 64;

// Builtins - values Volley supplies at send time rather than the job file.
struct Builtins {
  std::string_view unsubscribe_token;
};

// LineStart - what Render does to a line that starts with '.': kAsIs leaves it
// (the message, as BDAT sends it), kDotStuffed doubles the '.' (as DATA sends it).
enum class LineStart { kAsIs, kDotStuffed };

// RenderFacts - what Render learnt about the text it appended, so that no one has
// to scan it again.
struct RenderFacts {
  bool eight_bit = false;   // some octet is 0x80 or above
  // A value held CR or LF (a hand-built Recipient: parsed ones cannot), so the
  // text's line endings are not all CRLF and its dot-stuffing may be incomplete:
  // the caller must prepare the text the long way (engine/smtp PrepareData).
  bool line_break_in_value = false;
  size_t dots_added = 0;    // octets kDotStuffed added: the rendering's size without them
};

// TemplateField - a header field of the template's header section.
struct TemplateField {
  std::string name;  // lower case
  bool has_placeholders = false;  // on any of its lines
};

// RenderedLine - one line of a rendered message, as Template::LongestLine sees it.
struct RenderedLine {
  size_t line = 0;    // the template line it comes from, from 1
  size_t length = 0;  // octets, without CRLF
  // The variable adding the most octets to the line (all its placeholders on the
  // line counted; the first on the line wins a tie), pointing into the Template's
  // variables(); empty for a line without placeholders.
  std::string_view var;
};

class Template {
 public:
  // Compile - check `text` and split it into segments. See DIAGNOSTICS above.
  static absl::StatusOr<Template> Compile(std::string_view text);

  // Render - append the message for `rcpt` to *out (never clears it).
  void Render(const Recipient& rcpt, std::string* out) const;
  void Render(const Recipient& rcpt, const Builtins& builtins, std::string* out) const;
  // The same with the lines' leading dots as `dots` says and *facts filled in (see
  // "Rendering in SMTP form"). The text before it in *out must end a line (or be
  // empty): the template's first line starts a line of the message.
  void Render(const Recipient& rcpt, const Builtins& builtins, LineStart dots,
              std::string* out, RenderFacts* facts) const;

  // LongestLine - the longest line Render(rcpt, builtins) would produce, found
  // without rendering (see "Rendered line length" above); the earliest wins a tie.
  RenderedLine LongestLine(const Recipient& rcpt, const Builtins& builtins = {}) const;

  // CheckLineLength - OK when no line Render(rcpt, builtins) would produce is longer
  // than kMaxMessageLine octets; otherwise the error under DIAGNOSTICS.
  absl::Status CheckLineLength(const Recipient& rcpt, const Builtins& builtins = {}) const;

  // Use - where the template uses one variable, for the checks a job gets before
  // anything is queued (queue/job_check.h).
  struct Use {
    std::string_view name;          // points into variables()
    size_t first_line = 0;          // template line of its first placeholder
    size_t line_without_default = 0;  // first line with a placeholder for it that has
                                      // no default; 0 when each one has a default
  };
  // variable_uses - one Use per variables() entry, in the same order.
  std::vector<Use> variable_uses() const;

  // uses - true when a placeholder names `name` (a variable or a builtin).
  bool uses(std::string_view name) const;

  // header_fields - the template's header fields in order; FindHeader the first
  // one named `lower_name` (lower case), or null.
  const std::vector<TemplateField>& header_fields() const { return header_fields_; }
  const TemplateField* FindHeader(std::string_view lower_name) const;

  // body_has_placeholders - false when the body (after the first empty line) is
  // the same for every recipient, so that its DKIM body hash is computed once.
  bool body_has_placeholders() const { return body_has_placeholders_; }

  // has_placeholders - false when every recipient gets the same message, so that
  // Compile() has already checked every line and CheckLineLength() cannot fail.
  bool has_placeholders() const { return !variables_.empty(); }

  // variables - the distinct placeholder names, in order of first use.
  const std::vector<std::string>& variables() const { return variables_; }

  // literal_size - octets of literal text one rendering always produces.
  size_t literal_size() const { return text_.size(); }

 private:
  // A segment is either literal text_[offset, offset+length) or, when var is not
  // kLiteral, the value of variables_[var], or when that is empty the default
  // defaults_[default_offset, +default_length). Offsets (not string_views) keep
  // the Template safely copyable and movable.
  static constexpr uint32_t kLiteral = UINT32_MAX;
  // What Compile() knows of a segment's text (a literal's, or a variable's default)
  // for rendering in SMTP form.
  enum : uint8_t {
    kEightBit = 1,         // holds an octet >= 0x80
    kStartsWithDot = 2,    // its first octet is '.'
    kEndsLine = 4,         // a literal ending in CRLF: what follows starts a line
  };
  struct Segment {
    uint32_t offset = 0;
    uint32_t length = 0;
    uint32_t var = kLiteral;
    uint32_t default_offset = 0;
    uint32_t default_length = 0;
    // A literal as DATA sends it: stuffed_[stuffed_offset, +stuffed_length), every
    // '.' starting a line after its first octet doubled (the first depends on what
    // comes before, which Render knows).
    uint32_t stuffed_offset = 0;
    uint32_t stuffed_length = 0;
    uint8_t flags = 0;
  };
  // SmtpFacts - fill in the segments' flags and stuffed_ once they are all known.
  void SmtpFacts();

  // A template line holding placeholders: its number, its literal octets (without
  // CRLF) and its distinct variables, line_vars_[first, first + count).
  struct LineVar {
    uint32_t var = 0;    // index into variables_
    uint32_t times = 0;  // placeholders for it on the line
    uint32_t default_octets = 0;  // what they render to when the value is empty
  };
  struct VarLine {
    uint32_t line = 0;
    uint32_t literal = 0;
    uint32_t first = 0;
    uint32_t count = 0;
  };

  Template() = default;

  std::string text_;  // the literal parts, CRLF-normalised, concatenated
  std::string stuffed_;  // the literal parts again, dot-stuffed (Segment::stuffed_offset)
  std::vector<Segment> segments_;
  std::vector<std::string> variables_;
  // Per variables_ entry: its first line, and its first line without a default.
  struct VariableUse {
    uint32_t first_line = 0;
    uint32_t line_without_default = 0;
  };
  std::vector<VariableUse> uses_;
  std::string defaults_;  // every placeholder's default, escapes undone, concatenated
  std::vector<VarLine> var_lines_;
  std::vector<LineVar> line_vars_;
  std::vector<TemplateField> header_fields_;
  bool body_has_placeholders_ = false;
  // The longest line without placeholders: the same for every recipient.
  uint32_t fixed_line_ = 0;
  uint32_t fixed_length_ = 0;
};

// IsPlaceholderName - true when `name` matches [A-Za-z0-9_.-]{1,max_len}.
bool IsPlaceholderName(std::string_view name, size_t max_len = kMaxPlaceholderName);

// CheckInlineTemplate - validate a one-line template such as a job's return_path:
// placeholders well formed (defaults as in a message), no CR, LF or NUL. Errors as
// for Compile() without the line number ("unclosed {{", "empty placeholder",
// "invalid placeholder name").
absl::Status CheckInlineTemplate(std::string_view text);

// AppendRenderedInline - render a one-line template for `rcpt` onto *out, scanning
// `text` on the fly (meant for short texts such as return_path, where compiling per
// job buys nothing). Returns false, leaving *out unspecified past its old size, when
// `text` is not a valid inline template.
bool AppendRenderedInline(std::string_view text, const Recipient& rcpt, std::string* out);

// PlaceholderLength - the octets of the placeholder `text` starts with, from "{{"
// through the "}}" that closes it (a default's escaped braces skipped); 0 when
// `text` does not start with a valid placeholder.
size_t PlaceholderLength(std::string_view text);

// InlineTemplateUses - true when a valid one-line template has a placeholder `name`.
bool InlineTemplateUses(std::string_view text, std::string_view name);

// InlineTemplateVariables - the placeholders of a valid one-line template, in order
// (a name once per placeholder), each with whether it has a default.
struct InlineVariable {
  std::string name;
  bool has_default = false;
};
std::vector<InlineVariable> InlineTemplateVariables(std::string_view text);

// InlineValues - how an inline template writes a value: as it is, or percent-encoded
// (RFC 3986 2.1; every octet but the unreserved ones) for a value placed in a URL,
// where a '>' or '&' from recipient data would otherwise change the link.
enum class InlineValues { kVerbatim, kPercentEncoded };
bool AppendRenderedInline(std::string_view text, const Recipient& rcpt, const Builtins& builtins,
                          InlineValues encoding, std::string* out);

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_TEMPLATE_H_
