// template.h - message templates with {{name}} placeholders
//
// SYNOPSIS
//   #include "queue/template.h"
//
//   absl::StatusOr<Template> Template::Compile(std::string_view text);
//   void Template::Render(const Recipient& rcpt, std::string* out) const;
//   const std::vector<std::string>& Template::variables() const;
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
//   from [A-Za-z0-9_.-], optional spaces or tabs, "}}". A placeholder never spans
//   lines. There is no escape: every "{{" starts a placeholder. A lone "}}" is
//   literal text.
//
//   Rendering: a variable the recipient does not define renders as empty text. The
//   builtin {{to}} is the recipient address unless the recipient's vars define "to".
//   Values are inserted verbatim and never expanded again, so a value holding "{{x}}"
//   renders as those five characters.
//
//   Line endings: LF and CRLF in the template are both accepted and rendered as CRLF,
//   the only line ending SMTP allows; the rendered message always ends with CRLF.
//   Dot-stuffing is the SMTP client's job, not the template's.
//
// CONTRACT
//   A compiled Template is immutable; Render() is const and safe to call from any
//   number of threads at once.
//
// DIAGNOSTICS
//   Compile() returns absl::InvalidArgumentError whose message starts with the
//   template line, 1-based: "line 3: unclosed {{", "line 3: empty placeholder",
//   "line 3: invalid placeholder name", "line 2: bare CR", "line 1: contains NUL",
//   "line 7 is 1203 octets, over 998", "line 1: header section must start with a
//   'Name: value' field", "line 2: placeholder in header field name".
//
// BOUNDS
//   A template line may not exceed 998 octets without its CRLF (RFC 5322 2.1.1),
//   counted on the template text itself. A value longer than its placeholder can
//   make a rendered line longer than that: XXX(render-time length) the renderer does
//   not fold or check lines; var values are capped at JobLimits::max_var_value.
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

#include "absl/status/statusor.h"
#include "queue/job.h"

namespace volley::queue {

// Longest message line, without CRLF (RFC 5322 2.1.1).
inline constexpr size_t kMaxMessageLine = 998;
// Longest placeholder name; matches JobLimits::max_var_name's default.
inline constexpr size_t kMaxPlaceholderName = 64;

class Template {
 public:
  // Compile - check `text` and split it into segments. See DIAGNOSTICS above.
  static absl::StatusOr<Template> Compile(std::string_view text);

  // Render - append the message for `rcpt` to *out (never clears it).
  void Render(const Recipient& rcpt, std::string* out) const;

  // variables - the distinct placeholder names, in order of first use.
  const std::vector<std::string>& variables() const { return variables_; }

  // literal_size - octets of literal text one rendering always produces.
  size_t literal_size() const { return text_.size(); }

 private:
  // A segment is either literal text_[offset, offset+length) or, when var is not
  // kLiteral, the value of variables_[var]. Offsets (not string_views) keep the
  // Template safely copyable and movable.
  static constexpr uint32_t kLiteral = UINT32_MAX;
  struct Segment {
    uint32_t offset = 0;
    uint32_t length = 0;
    uint32_t var = kLiteral;
  };

  Template() = default;

  std::string text_;  // the literal parts, CRLF-normalised, concatenated
  std::vector<Segment> segments_;
  std::vector<std::string> variables_;
};

// IsPlaceholderName - true when `name` matches [A-Za-z0-9_.-]{1,max_len}.
bool IsPlaceholderName(std::string_view name, size_t max_len = kMaxPlaceholderName);

// CheckInlineTemplate - validate a one-line template such as a job's return_path:
// placeholders well formed, no CR, LF or NUL. Errors as for Compile() without the
// line number ("unclosed {{", "empty placeholder", "invalid placeholder name").
absl::Status CheckInlineTemplate(std::string_view text);

// AppendRenderedInline - render a one-line template for `rcpt` onto *out, scanning
// `text` on the fly (meant for short texts such as return_path, where compiling per
// job buys nothing). Returns false, leaving *out unspecified past its old size, when
// `text` is not a valid inline template.
bool AppendRenderedInline(std::string_view text, const Recipient& rcpt, std::string* out);

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_TEMPLATE_H_
