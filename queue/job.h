// job.h - parse and check a job file (one campaign) and encode its recipients
//
// SYNOPSIS
//   #include "queue/job.h"
//
//   absl::StatusOr<JobHeader> ParseJobHeader(std::string_view line,
//                                            const JobLimits& limits);
//   absl::StatusOr<Recipient> ParseRecipientLine(std::string_view line,
//                                                const JobLimits& limits);
//   bool IsValidAddress(std::string_view address, const JobLimits& limits);

//
//   std::string EncodeRecipient(const Recipient& r);
//   absl::StatusOr<Recipient> DecodeRecipient(std::string_view bytes);
//
//   std::string RenderMessage(const JobHeader& h, const Template& t,
//                             const Recipient& r, const AddedFields& added);
//   void AppendAddedFields(const JobHeader& h, const Recipient& r,
//                          const AddedFields& added, std::string* out);
//   absl::Status CheckMessageHeaders(const JobHeader& h, const Template& t);
//   std::string RenderReturnPath(const JobHeader& h, const Recipient& r);
//
// DESCRIPTION
//   A job file is UTF-8 JSON Lines. Line 1 is the header:
//     {"job": id, "from": address, "message": template, "headers": {name: value},
//      "return_path": address-template, "send_after": RFC 3339, "expires": RFC 3339,
//      "priority": 0..9, "unsubscribe_url": https-template, "unsubscribe_mailto": address,
//      "list_id": text, "feedback_id": text, "add_message_id": bool, "add_date": bool,
//      "dkim": bool}
//   and every further line is one recipient: {"to": address, "vars": {name: value}}.
//   docs/jobs.md is the user-facing description; this file is the contract.
//
//   Job data comes from outside and ends up in SMTP commands and message headers, so
//   the parser distrusts it: unknown and duplicate keys are errors (a typo must not
//   silently drop an option), every string is bounded, and CR, LF and NUL are
//   refused in every value that reaches a message or command, which rules out
//   header and command injection before anything is queued.
//
//   ParseJobHeader also compiles the message template (queue/template.h) so that a
//   broken template fails the whole job before any recipient is queued; the caller
//   compiles it again with Template::Compile to render.
//
// CONTRACT
//   Pure functions: no I/O, no clock, no global state except a per-thread JSON
//   parser and buffer reused by ParseRecipientLine (safe from any thread).
//
// DIAGNOSTICS
//   Parse errors are absl::InvalidArgumentError with the message
//   "<field>: <reason>", e.g. "from: missing", "priority: must be an integer 0..9",
//   "colour: unknown field", "message: line 3: unclosed {{",
//   "vars.first_name: contains CR or LF". Malformed JSON is reported as
//   "json: <reason>". Field names taken from the input are shown with unprintable
//   bytes replaced by '?' and cut to 64 octets, so an error message can never carry
//   a line break into a log or an .error file. The caller prefixes
//   "<file>:<line>: ". DecodeRecipient returns absl::DataLossError.
//
// BOUNDS
//   JobLimits below; every limit is checked before the value is stored.
//
// SEE ALSO
//   queue/template.h, docs/jobs.md, RFC 5321 4.1.2 and 4.5.3.1, RFC 6531,
//   RFC 5322 3.6.8, RFC 3339.
#ifndef VOLLEY_QUEUE_JOB_H_
#define VOLLEY_QUEUE_JOB_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::queue {

class Template;

struct JobLimits {
  // Longest header line (line 1), in bytes. The message template lives there, so
  // this bounds the size of one message before rendering; the whole line is held
  // in memory while it is parsed.
  // Default: 16 MiB
  size_t max_header_line = 16 << 20;

  // Longest recipient line, in bytes, checked before the line is parsed.
  // Default: 64 KiB
  size_t max_recipient_line = 64 << 10;

  // Longest address (local@domain), in octets: RFC 5321 4.5.3.1.3 allows a path of
  // 256 octets including the angle brackets.
  // Default: 254
  size_t max_address = 254;

  // Longest local part of an address, in octets (RFC 5321 4.5.3.1.1).
  // Default: 64
  size_t max_local_part = 64;

  // Most variables one recipient may carry.
  // Default: 100
  size_t max_vars = 100;

  // Longest variable name; names match [A-Za-z0-9_.-] so they can be written as
  // placeholders. Longer than 64 cannot be referenced by a template.
  // Default: 64
  size_t max_var_name = 64;

  // Longest variable value, in octets. A value may be longer than a message line;
  // a recipient whose values would render a line over 998 octets is rejected at
  // intake (Template::CheckLineLength).
  // Default: 4096
  size_t max_var_value = 4096;

  // Longest job id. Ids match [A-Za-z0-9._-] and are used in file names
  // (CheckJobId).
  // Default: 128
  size_t max_job_id = 128;

  // Most extra header fields in the job's "headers" object.
  // Default: 50
  size_t max_header_fields = 50;
};

// Longest unsubscribe_url, as written and as rendered for a recipient (values are
// percent-encoded, so a rendering can be longer than the template): it must fit one
// List-Unsubscribe line with room for the field name and the brackets.
inline constexpr size_t kMaxUnsubscribeUrl = 900;
// Longest list_id and feedback_id values.
inline constexpr size_t kMaxListId = 250;
inline constexpr size_t kMaxFeedbackId = 250;

struct JobHeader {
  std::string id;
  std::string from;     // envelope sender, a valid address
  std::string message;  // the template text as given; compile with Template::Compile
  // Extra header fields, in file order, prepended to every message.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string return_path;  // MAIL FROM template; empty means use `from`
  std::optional<absl::Time> send_after;
  std::optional<absl::Time> expires;
  int priority = 5;  // 0..9
  // RFC 8058 one-click unsubscribe: an https URL template (placeholders are the
  // recipient's vars, {{to}} and {{unsubscribe_token}}, percent-encoded when
  // rendered); empty = no List-Unsubscribe fields. unsubscribe_mailto adds a
  // mailto: alternative for clients that do not POST.
  std::string unsubscribe_url;
  std::string unsubscribe_mailto;
  std::string list_id;      // List-Id: "label.domain" or "Name <label.domain>"; empty = none
  // Feedback-ID (Gmail's a:b:c:SenderId). Default "<job>:<domain of from>"; an
  // explicit "" leaves the field out.
  std::string feedback_id;
  bool add_message_id = true;  // a unique Message-ID when the message has none
  bool add_date = true;        // Date: the send time, when the message has none
  bool dkim = true;            // sign with the [[dkim]] keys of the From domain
};

struct Recipient {
  std::string to;
  // Variables in file order; names are unique. Numbers and booleans were stored as
  // their JSON text ("1.50", "true").
  std::vector<std::pair<std::string, std::string>> vars;
};

// ParseJobHeader - parse and check line 1 of a job file.
absl::StatusOr<JobHeader> ParseJobHeader(std::string_view line, const JobLimits& limits);

// ParseRecipientLine - parse and check one recipient line.
absl::StatusOr<Recipient> ParseRecipientLine(std::string_view line,
                                             const JobLimits& limits);

// IsValidAddress - local@domain as accepted in MAIL FROM and RCPT TO. The local part
// is a dot-atom or a quoted string (RFC 5321 4.1.2), UTF-8 allowed (RFC 6531); the
// domain is two or more LDH labels of 1..63 characters, without a leading or
// trailing hyphen and with a non-numeric last label, or an address literal
// ([192.0.2.1] or [IPv6:2001:db8::1]). Internationalised domains must be given
// as A-labels (xn--...). No space, CR, LF, '<' or '>' outside quotes; no CR, LF or
// NUL anywhere; an empty quoted local part ("") is refused.
bool IsValidAddress(std::string_view address, const JobLimits& limits);

// IsValidDomainName - two or more LDH labels as IsValidAddress wants them after '@'
// (no address literal).
bool IsValidDomainName(std::string_view domain);

// DomainOf - the part of `address` after its last '@' ("" when it has none).
inline std::string_view DomainOf(std::string_view address) {
  const size_t at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

// IsValidHeaderFieldName - 1..76 printable ASCII characters other than ':' and space
// (RFC 5322 3.6.8, with the length kept to fit a 78-octet line).
bool IsValidHeaderFieldName(std::string_view name);

// EncodeRecipient - compact binary form for the queue's value:
//   version (1 byte, 0x01) | varint len | to | varint nvars | (varint len | name |
//   varint len | value)*
// where varint is unsigned LEB128 of at most 5 bytes.
std::string EncodeRecipient(const Recipient& r);

// DecodeRecipient - inverse of EncodeRecipient. Unknown version, truncation,
// overlong varints, trailing bytes, and CR, LF or NUL in any decoded string are
// absl::DataLossError: a record never holds those, so they mean corruption, and
// letting them through could inject headers at render time.
absl::StatusOr<Recipient> DecodeRecipient(std::string_view bytes);

// AddedFields - what the sender adds to each message at send time.
struct AddedFields {
  std::string_view message_id;  // without the angle brackets; empty = no Message-ID field
  std::string_view date;        // an RFC 5322 date-time; empty = no Date field
  std::string_view unsubscribe_token;  // the builtin {{unsubscribe_token}}
  // A signed token naming the job and the recipient (engine/token, Purpose::kTrace),
  // written as a kTraceField field; empty = none.
  std::string_view trace;
};

// The field that carries AddedFields::trace. A feedback report (RFC 5965) returns
// the message or its headers, often with the recipient's address removed; this
// field still names the recipient, and only the keyholder can make one.
inline constexpr std::string_view kTraceField = "Volley-Trace";

// RenderMessage - the message for one recipient: the added fields (Message-ID,
// Date, Volley-Trace, List-Unsubscribe and List-Unsubscribe-Post when h.unsubscribe_url is set,
// List-Id, Feedback-ID), each of h.headers as "Name: value\r\n", then t rendered for r.
std::string RenderMessage(const JobHeader& h, const Template& t, const Recipient& r,
                          const AddedFields& added);
std::string RenderMessage(const JobHeader& h, const Template& t, const Recipient& r);

// AppendAddedFields - RenderMessage's first part, the fields before the template's
// (each line ended with CRLF), appended to *out; for a sender that renders the
// template itself (engine/compose.cc, in SMTP form). RenderedSizeHint - octets to
// reserve for a whole rendering, before the values.
void AppendAddedFields(const JobHeader& h, const Recipient& r, const AddedFields& added,
                       std::string* out);
size_t RenderedSizeHint(const JobHeader& h, const Template& t);

// RenderUnsubscribeUrl - h.unsubscribe_url for r into *out; false when it does not
// render or renders longer than kMaxUnsubscribeUrl (intake refuses that recipient).
bool RenderUnsubscribeUrl(const JobHeader& h, const Recipient& r, std::string_view token,
                          std::string* out);

// CheckJobId - a job id must match [A-Za-z0-9._-]{1,limits.max_job_id} and, since
// it names files (failed/<job>.rejects.jsonl), must not start with '.' ("." and
// ".." are folders, ".x" a hidden file) or '-' (read as an option by rm, ls and
// the rest). InvalidArgument "job: <reason>" otherwise.
absl::Status CheckJobId(std::string_view id, const JobLimits& limits);

// CheckMessageHeaders - what intake refuses in a job that parses: a Message-ID that
// would be the same in every message (no placeholder, or in h.headers), and a field
// Volley writes itself (List-Unsubscribe, List-Id, Feedback-ID) given twice.
// InvalidArgument "<field>: <reason>".
absl::Status CheckMessageHeaders(const JobHeader& h, const Template& t);

// HasHeaderField - the message has a field `lower_name` (lower case), in the
// template or in h.headers.
bool HasHeaderField(const JobHeader& h, const Template& t, std::string_view lower_name);

// UsesUnsubscribeToken - the message or the unsubscribe URL has {{unsubscribe_token}}.
bool UsesUnsubscribeToken(const JobHeader& h, const Template& t);

// RenderReturnPath - the MAIL FROM address for one recipient: h.return_path rendered
// for r, or h.from when return_path is empty. When rendering yields something that
// is not a valid address (a variable holding '@', a space or '>', or making it too
// long), the result is h.from instead: a VERP tag is worth less than a MAIL FROM
// that cannot be misparsed. Uses default JobLimits for the check.
std::string RenderReturnPath(const JobHeader& h, const Recipient& r);

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_JOB_H_
