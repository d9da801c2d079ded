// report.h - read what comes back: delivery status notifications, feedback reports,
// plain-text bounces and auto-replies, from one mail message
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(Report r, ParseReport(message));           // bytes as received
//   ASSIGN_OR_RETURN(Report r, ParseReport(message, ""));       // hint: null MAIL FROM
//   switch (r.kind) {
//     case ReportKind::kDeliveryStatus:                          // RFC 3464
//       for (const DsnRecipient& d : r.recipients)
//         if (d.action == DsnAction::kFailed) ... d.final_recipient, d.status ...
//     case ReportKind::kFeedback: ... r.feedback.feedback_type ...  // RFC 5965
//     case ReportKind::kBounceText: ... r.recipients, r.text ...     // no DSN part
//     case ReportKind::kAutoReply: case ReportKind::kOther: ...      // never a bounce
//   }
//   r.original.traces, r.original.message_id                     // to find the job
//
// DESCRIPTION
//   A pure function: bytes in, a Report out; no I/O, no clock, no global state but
//   GMime's one-time initialisation. MIME is parsed by GMime 3 (a well-kept, packaged
//   parser: this input comes from the internet), and so are the header blocks inside
//   a report (the delivery-status groups, the feedback-report fields, the returned
//   headers). What is left to this file is choosing the parts and reading the few
//   fields named below out of them.
//
//   kind, in this order:
//   - kDeliveryStatus: a message/delivery-status (or RFC 6533
//     message/global-delivery-status) part, normally inside multipart/report;
//     report-type=delivery-status. Its per-recipient groups give `recipients`.
//     An RFC 3464 DSN carries Auto-Submitted: auto-replied too: it stays a DSN.
//   - kFeedback: a message/feedback-report part (RFC 5965 ARF).
//   - kAutoReply: an auto-reply: X-Autoreply, X-Autorespond, Precedence:
//     auto_reply, or a subject such as "Out of Office", "Automatic reply", "Auto:"
//     (these win over every bounce sign); or, when no bounce sign is present, an
//     Auto-Submitted field other than "no" (RFC 3834), or a null envelope sender.
//   - kBounceText: no delivery-status part, but a bounce sign: a MAILER-DAEMON or
//     postmaster sender (From or the envelope hint), a "Mail Delivery System"
//     display name, a bounce subject ("Undelivered Mail Returned to Sender",
//     "Delivery Status Notification (Failure)", "Mail delivery failed", "failure
//     notice", "Undeliverable:", ...), qmail's "This is the qmail-send program",
//     Exim's X-Failed-Recipients (then the list of recipients), Exchange's
//     X-MS-Exchange-Message-Is-Ndr, a multipart/report that promised a
//     delivery-status part, or a null envelope sender with bounce wording in the
//     text. Recipients are read from the text:
//     addresses at the start of a line in the part before the returned copy
//     (qmail's "<addr>:", Postfix's "<addr>: host ... said:", Exim's indented
//     address, Sendmail's "<addr>", Exchange's "addr on <date>"), each with the
//     first enhanced code (5.1.1) or SMTP reply (550 ...) of its paragraph, else of
//     the whole text; action kDelayed when the subject or text says delayed, else
//     kFailed. Nothing found means no recipients: the VERP address and the
//     caller's classification rules over `text` decide.
//   - kOther: none of these, e.g. a person's reply.
//
//   original: from the first message/rfc822, message/global, text/rfc822-headers
//   or message/global-headers part (outside any returned message), or, for a
//   non-standard bounce, from header lines quoted in its text (qmail's "--- Below
//   this line is a copy of the message."). Failing both, message_id is taken from
//   the report's own In-Reply-To (RFC 3834 asks auto-replies to set it).
//
//   Every string is valid UTF-8 without control characters (text keeps "\n" and
//   "\t"); invalid octets become U+FFFD, control characters a space.
//
// CONTRACT
//   Thread-safe: GMime is initialised once (std::call_once) and each call uses only
//   its own objects. It never throws, never aborts on input, never reads a file.
//   Cost, measured here (Release, one core): 0.1 to 0.2 ms for a DSN of a few KiB;
//   under 0.1 s and about 3 times the message's size in memory at the peak for the
//   worst 10 MiB shapes of tests/unit/feedback/report_test.cc.
//
// BOUNDS (ParseLimits)
//   max_message_bytes is checked before anything else: a bigger message is refused
//   (InvalidArgument) before GMime sees it. Then one linear pre-scan cuts the message
//   at the first line that would pass one of these, so that GMime never builds more
//   than a bounded number of objects (measured with GMime 3.2.13: about 500 octets
//   per header field, 1.3 KiB per part, and 20 to 35 times its length for one long
//   folded field):
//     - lines starting with "--" (possible boundaries, so parts): 10 * max_parts;
//     - lines that look like the start of a header field ("Name:"):
//       max_header_fields;
//     - a field (its first line and its continuation lines): max_field_bytes * 16.
//   GMime itself stops nesting at 1024 multiparts and 512 messages, so its recursion
//   stays within a small stack; the walk over the parsed tree is iterative, stops at
//   max_depth and max_parts. At most max_recipients recipients and 16 trace values
//   are kept, and each string field at most max_field_bytes octets; non-standard
//   bounce text is searched only in its first max_scan_bytes. Hitting any bound sets
//   `truncated` and adds a note saying which; but Report::text is a sample for
//   classification rules, and cutting it to max_text_bytes is only noted.
//
// DIAGNOSTICS
//   InvalidArgument only when the input is not a message at all ("not a message: no
//   header field") or is over max_message_bytes ("report of 52428800 octets is over
//   the limit of 10485760"). Everything else, however malformed, gives a Report,
//   with what was odd in `notes` (at most kMaxNotes, each printable and short).
//
// SEE ALSO
//   RFC 3464 (DSN), RFC 6533 (internationalised DSN), RFC 5965 (ARF), RFC 6591
//   (auth-failure reports), RFC 3834 (auto-replies), RFC 3463 (enhanced codes);
//   docs/feedback.md ("What Volley reads in a report"); tests/unit/feedback/corpus/.
#ifndef VOLLEY_ENGINE_FEEDBACK_REPORT_H_
#define VOLLEY_ENGINE_FEEDBACK_REPORT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace volley::feedback {

enum class ReportKind {
  kDeliveryStatus,  // RFC 3464 DSN (or RFC 6533)
  kFeedback,        // RFC 5965 ARF
  kBounceText,      // a bounce without a delivery-status part
  kAutoReply,       // RFC 3834 auto-reply, vacation: never a bounce
  kOther,           // none of these: e.g. a person's reply
};

enum class DsnAction { kFailed, kDelayed, kDelivered, kRelayed, kExpanded, kUnknown };

struct DsnRecipient {
  // Addresses only: the "rfc822;" type, angle brackets and comments stripped.
  std::string final_recipient;
  std::string original_recipient;
  DsnAction action = DsnAction::kUnknown;
  // RFC 3463 code "5.1.1". From a bounce's text without an enhanced code, the class
  // of its SMTP reply: "5.0.0" for 550.
  std::string status;
  // As given, unfolded: "smtp; 550 5.1.1 <a@b.test>: Recipient address rejected".
  std::string diagnostic_code;
  // Host name only, the "dns;" type stripped.
  std::string remote_mta;
};

struct FeedbackReport {
  // Lower-cased: abuse, fraud, virus, other, not-spam, auth-failure.
  std::string feedback_type;
  std::string user_agent;
  std::string original_mail_from;  // address only
  std::string arrival_date;        // as given (Arrival-Date, or the older Received-Date)
  std::string source_ip;
  std::string reported_domain;
  std::vector<std::string> original_rcpt_to;  // addresses only; may be redacted
};

// ReturnedMessage - what the report says of the message Volley sent.
struct ReturnedMessage {
  std::string message_id;           // without <>
  std::vector<std::string> traces;  // the value of every Volley-Trace field found
  std::string from;                 // addresses only, ", " between two
  std::string to;
  std::string subject;
};

struct Report {
  ReportKind kind = ReportKind::kOther;
  std::string reporting_mta;  // host name only
  std::vector<DsnRecipient> recipients;
  FeedbackReport feedback;
  ReturnedMessage original;
  // The human-readable part (the first text/plain part outside the returned
  // message; else the first text/* part), decoded to UTF-8, its first max_text_bytes:
  // for the caller's classification rules.
  std::string text;
  std::string subject;             // of the report itself
  std::string from;                // of the report itself, address only
  bool truncated = false;          // a bound was hit
  std::vector<std::string> notes;  // what was odd: "recipients after the 1000th dropped"
};

// At most this many notes; the last says that more were dropped.
inline constexpr size_t kMaxNotes = 16;
// At most this many Volley-Trace values are kept.
inline constexpr size_t kMaxTraces = 16;

struct ParseLimits {
  // Largest message read; a bigger one is refused before it is parsed. The inbound
  // listener's own size cap should not be above it. Default: 10 MiB.
  size_t max_message_bytes = 10 << 20;
  // Recipients kept from one report (DSN groups or addresses in a bounce's text); the
  // rest are dropped. Default: 1000.
  size_t max_recipients = 1000;
  // Deepest MIME nesting walked (the message itself is depth 0); deeper parts are not
  // looked at. Default: 8.
  int max_depth = 8;
  // MIME parts walked; also sets the pre-scan's bound on possible boundaries (10
  // times this). Default: 100.
  size_t max_parts = 100;
  // Octets of the human-readable part kept in Report::text. Default: 8192.
  size_t max_text_bytes = 8192;
  // Octets kept of any other string field (a Diagnostic-Code, a subject, an
  // address); 16 times this is the longest header field GMime is given. Default:
  // 2048.
  size_t max_field_bytes = 2048;
  // Lines that look like the start of a header field, in the whole message (a DSN
  // group's fields count: four or so per recipient). Default: 20000.
  size_t max_header_fields = 20000;
  // Octets of a non-standard bounce's text searched for recipients and quoted header
  // lines. Default: 1 MiB.
  size_t max_scan_bytes = 1 << 20;
};

// ParseReport - read one message as received (CRLF or LF line ends). See the
// header comment for what is recognised and the bounds.
absl::StatusOr<Report> ParseReport(std::string_view message, const ParseLimits& limits = {});

// ParseReport - the same, with the envelope's MAIL FROM as a hint: "" (a null
// sender, as bounces and RFC 3834 auto-replies are sent) or the address given, with
// or without angle brackets. A null or MAILER-DAEMON sender is a sign of a bounce
// or an auto-reply, never of a person's reply.
absl::StatusOr<Report> ParseReport(std::string_view message, std::string_view envelope_sender,
                                   const ParseLimits& limits = {});

// Names for logs and the delivery log: "delivery_status", "feedback", "bounce_text",
// "auto_reply", "other"; "failed", "delayed", "delivered", "relayed", "expanded",
// "unknown".
std::string_view ReportKindName(ReportKind kind);
std::string_view DsnActionName(DsnAction action);

// StatusInText - the first enhanced status code in `text` ("5.1.1"), else the
// class of its first 4xx/5xx reply ("5.0.0"), else "": what a recipient found in
// a bounce's words gets, for the caller of a bounce that names none.
std::string StatusInText(std::string_view text);

}  // namespace volley::feedback

#endif  // VOLLEY_ENGINE_FEEDBACK_REPORT_H_
