// fuzz_report - libFuzzer target for the report parser (engine/feedback/report.h)
//
// INPUT
//   the whole input is one message as received (a DSN, an ARF report, a bounce, an
//   auto-reply, anything).
//
// DESCRIPTION
//   The message is parsed three times: with the default ParseLimits, with the
//   envelope hint of a null sender, and with small limits that short inputs can
//   reach (2 recipients, 3 parts, depth 2, 40 octets of text, 24 per field, 30 header
//   fields, 64 scanned). Each time, report.h's contract must hold:
//   - an error is InvalidArgument, and only for an input that is not a message
//     (then every call says so) or is over max_message_bytes;
//   - every string is valid UTF-8 without control characters (text may hold "\n"
//     and "\t"), a field at most max_field_bytes octets, text at most
//     max_text_bytes;
//   - at most max_recipients recipients and as many Original-Rcpt-To, at most
//     kMaxTraces traces, kMaxNotes notes;
//   - recipients only in a DSN or a text bounce, feedback fields only in a feedback
//     report; a status is "" or c.s.d with c 2, 4 or 5; the feedback type lower
//     case;
//   - a result with the small limits that is not truncated equals the default
//     one in kind and recipients (the bounds change nothing when not hit);
//   - the same input parsed again gives the same report.
//   A broken rule aborts with a message naming it and the line.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/strings.h"
#include "engine/feedback/report.h"

namespace {

using volley::feedback::DsnRecipient;
using volley::feedback::ParseLimits;
using volley::feedback::ParseReport;
using volley::feedback::Report;
using volley::feedback::ReportKind;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_report: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

// CleanUtf8 - valid UTF-8, no control character (but "\n" and "\t" when text).
bool CleanUtf8(std::string_view s, bool text) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && !(text && (c == '\n' || c == '\t'))) || c == 0x7f) return false;
      ++i;
      continue;
    }
    size_t n = volley::base::Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool IsStatus(std::string_view s) {
  if (s.empty()) return true;
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  int dots = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (s[i - 1] == '.') return false;
      ++dots;
    } else if (s[i] < '0' || s[i] > '9') {
      return false;
    }
  }
  return dots == 2 && s.back() != '.';
}

bool Field(std::string_view s, const ParseLimits& l) {
  return s.size() <= l.max_field_bytes && CleanUtf8(s, false);
}

void Check(const Report& r, const ParseLimits& l) {
  EXPECT(r.text.size() <= l.max_text_bytes);
  EXPECT(CleanUtf8(r.text, true));
  EXPECT(Field(r.reporting_mta, l));
  EXPECT(Field(r.subject, l));
  EXPECT(Field(r.from, l));
  EXPECT(r.recipients.size() <= l.max_recipients);
  for (const DsnRecipient& d : r.recipients) {
    EXPECT(Field(d.final_recipient, l));
    EXPECT(Field(d.original_recipient, l));
    EXPECT(Field(d.status, l));
    EXPECT(IsStatus(d.status));
    EXPECT(Field(d.diagnostic_code, l));
    EXPECT(Field(d.remote_mta, l));
  }
  if (r.kind != ReportKind::kDeliveryStatus && r.kind != ReportKind::kBounceText) {
    EXPECT(r.recipients.empty());
  }
  const auto& f = r.feedback;
  if (r.kind != ReportKind::kFeedback) {
    EXPECT(f.feedback_type.empty() && f.user_agent.empty() && f.original_rcpt_to.empty());
  }
  EXPECT(Field(f.feedback_type, l));
  for (char c : f.feedback_type) EXPECT(!(c >= 'A' && c <= 'Z'));
  EXPECT(Field(f.user_agent, l));
  EXPECT(Field(f.original_mail_from, l));
  EXPECT(Field(f.arrival_date, l));
  EXPECT(Field(f.source_ip, l));
  EXPECT(Field(f.reported_domain, l));
  EXPECT(f.original_rcpt_to.size() <= l.max_recipients);
  for (const std::string& a : f.original_rcpt_to) EXPECT(Field(a, l));
  EXPECT(Field(r.original.message_id, l));
  EXPECT(Field(r.original.from, l));
  EXPECT(Field(r.original.to, l));
  EXPECT(Field(r.original.subject, l));
  EXPECT(r.original.traces.size() <= volley::feedback::kMaxTraces);
  for (const std::string& t : r.original.traces) EXPECT(Field(t, l) && !t.empty());
  EXPECT(r.notes.size() <= volley::feedback::kMaxNotes);
  for (const std::string& n : r.notes) EXPECT(CleanUtf8(n, false) && n.size() <= 200);
}

bool SameRecipients(const Report& a, const Report& b) {
  if (a.recipients.size() != b.recipients.size()) return false;
  for (size_t i = 0; i < a.recipients.size(); ++i) {
    const DsnRecipient& x = a.recipients[i];
    const DsnRecipient& y = b.recipients[i];
    if (x.final_recipient != y.final_recipient || x.action != y.action || x.status != y.status ||
        x.diagnostic_code != y.diagnostic_code) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view message(reinterpret_cast<const char*>(data), size);
  const ParseLimits defaults;
  ParseLimits small;
  small.max_recipients = 2;
  small.max_parts = 3;
  small.max_depth = 2;
  small.max_text_bytes = 40;
  small.max_field_bytes = 24;
  small.max_header_fields = 30;
  small.max_scan_bytes = 64;

  absl::StatusOr<Report> a = ParseReport(message, defaults);
  absl::StatusOr<Report> hinted = ParseReport(message, "", defaults);
  absl::StatusOr<Report> b = ParseReport(message, small);
  EXPECT(a.ok() == hinted.ok());
  if (!a.ok()) {
    EXPECT(a.status().code() == absl::StatusCode::kInvalidArgument);
    EXPECT(hinted.status() == a.status());
    return 0;
  }
  Check(*a, defaults);
  Check(*hinted, defaults);
  if (b.ok()) {
    Check(*b, small);
    if (!b->truncated && !a->truncated) {
      EXPECT(b->kind == a->kind);
      EXPECT(SameRecipients(*a, *b));
    }
  } else {
    EXPECT(b.status().code() == absl::StatusCode::kInvalidArgument);
  }
  absl::StatusOr<Report> again = ParseReport(message, defaults);
  EXPECT(again.ok());
  EXPECT(again->kind == a->kind && SameRecipients(*a, *again) && again->text == a->text &&
         again->original.traces == a->original.traces && again->notes == a->notes);
  return 0;
}
