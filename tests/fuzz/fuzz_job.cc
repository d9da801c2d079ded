// fuzz_job - libFuzzer target for the job file parser and the recipient record
// (queue/job.h, with the message template of queue/template.h)
//
// INPUT
//   the whole input is a job file: lines ended by LF (a CR before it stays in the
//   line, as the spool's reader leaves it); line 1 is the header, every further line
//   a recipient. The same bytes are also given whole to DecodeRecipient, as a queue
//   record read back from disk.
//
// DESCRIPTION
//   Each line is parsed twice, with the default JobLimits and with small ones
//   (kSmall), so that every bound is reached by short inputs too. A broken rule aborts
//   with a message naming it and the line.
//
//   Errors. ParseJobHeader and ParseRecipientLine fail only with InvalidArgument, whose
//   message is "<field>: <reason>" without a control character (job.h: it goes into
//   logs and .error files with a "<file>:<line>: " prefix). DecodeRecipient fails
//   only with DataLoss, its message "recipient record: ..." likewise printable.
//
//   A header that parses: id 1..max_job_id of [A-Za-z0-9._-]; from a valid address
//   (IsValidAddress); priority 0..9; at most max_header_fields extra fields, each
//   with a valid name (IsValidHeaderFieldName) and a value without CR, LF or NUL; the
//   message compiles (Template::Compile); no CR, LF or NUL in return_path,
//   unsubscribe_url, unsubscribe_mailto, list_id or feedback_id.
//
//   A recipient that parses: `to` a valid address; at most max_vars variables with
//   unique names of 1..max_var_name octets, values at most max_var_value octets,
//   neither with CR, LF or NUL. EncodeRecipient then DecodeRecipient gives it back.
//   With the header's template it renders (RenderMessage, RenderReturnPath, which
//   must be a valid address, CheckLineLength, CheckMessageHeaders) without crashing.
//
//   A record DecodeRecipient accepts holds no CR, LF or NUL, and encodes back to a
//   record that decodes to the same recipient.
//
//   The rendered message has CR and LF only as CRLF pairs, defaults ({{name|x}})
//   included. The whole-job checks (queue/job_check.h, JobFileCheck) fail only
//   with a printable InvalidArgument, count no more recipients than parse, and
//   list no variable as lacking by more recipients than were accepted.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "queue/job.h"
#include "queue/job_check.h"
#include "queue/template.h"

namespace {

using volley::queue::JobHeader;
using volley::queue::JobLimits;
using volley::queue::Recipient;
using volley::queue::Template;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_job: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

// kSmall - bounds a short input can reach (and pass).
JobLimits Small() {
  JobLimits l;
  l.max_header_line = 512;
  l.max_recipient_line = 128;
  l.max_address = 24;
  l.max_local_part = 8;
  l.max_vars = 3;
  l.max_var_name = 4;
  l.max_var_value = 8;
  l.max_job_id = 4;
  l.max_header_fields = 2;
  return l;
}
const JobLimits kDefault;
const JobLimits kSmall = Small();

bool HasCrLfNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool Printable(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

std::string_view Message(const absl::Status& s) {
  return std::string_view(s.message().data(), s.message().size());
}

void CheckParseError(const absl::Status& s) {
  EXPECT(s.code() == absl::StatusCode::kInvalidArgument);
  EXPECT(Printable(Message(s)));
  EXPECT(Message(s).find(": ") != std::string_view::npos);
}

bool IdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

void CheckHeader(const JobHeader& h, const JobLimits& limits) {
  EXPECT(!h.id.empty() && h.id.size() <= limits.max_job_id);
  for (char c : h.id) EXPECT(IdChar(c));
  EXPECT(volley::queue::IsValidAddress(h.from, limits));
  EXPECT(h.priority >= 0 && h.priority <= 9);
  EXPECT(h.headers.size() <= limits.max_header_fields);
  for (const auto& [name, value] : h.headers) {
    EXPECT(volley::queue::IsValidHeaderFieldName(name));
    EXPECT(!HasCrLfNul(value));
  }
  EXPECT(!HasCrLfNul(h.return_path));
  EXPECT(!HasCrLfNul(h.unsubscribe_url));
  EXPECT(!HasCrLfNul(h.unsubscribe_mailto));
  EXPECT(!HasCrLfNul(h.list_id));
  EXPECT(!HasCrLfNul(h.feedback_id));
}

void CheckRecipient(const Recipient& r, const JobLimits& limits) {
  EXPECT(volley::queue::IsValidAddress(r.to, limits));
  EXPECT(r.vars.size() <= limits.max_vars);
  std::set<std::string> names;
  for (const auto& [name, value] : r.vars) {
    EXPECT(!name.empty() && name.size() <= limits.max_var_name);
    EXPECT(value.size() <= limits.max_var_value);
    EXPECT(!HasCrLfNul(name) && !HasCrLfNul(value));
    EXPECT(names.insert(name).second);
  }
}

bool SameRecipient(const Recipient& a, const Recipient& b) {
  return a.to == b.to && a.vars == b.vars;
}

void RoundTrip(const Recipient& r) {
  const std::string record = volley::queue::EncodeRecipient(r);
  absl::StatusOr<Recipient> back = volley::queue::DecodeRecipient(record);
  EXPECT(back.ok());
  EXPECT(SameRecipient(*back, r));
}

// Render - use a header and a recipient the way intake and delivery do.
void Render(const JobHeader& h, const Template& t, const Recipient& r) {
  (void)t.CheckLineLength(r);
  (void)volley::queue::CheckMessageHeaders(h, t);
  const std::string message = volley::queue::RenderMessage(h, t, r);
  for (size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '\r') EXPECT(i + 1 < message.size() && message[i + 1] == '\n');
    if (message[i] == '\n') EXPECT(i > 0 && message[i - 1] == '\r');
  }
  const std::string return_path = volley::queue::RenderReturnPath(h, r);
  EXPECT(volley::queue::IsValidAddress(return_path, JobLimits()));
  std::string url;
  (void)volley::queue::RenderUnsubscribeUrl(h, r, "token", &url);
}

void DecodeRaw(std::string_view bytes) {
  absl::StatusOr<Recipient> r = volley::queue::DecodeRecipient(bytes);
  if (!r.ok()) {
    EXPECT(r.status().code() == absl::StatusCode::kDataLoss);
    EXPECT(Printable(Message(r.status())));
    return;
  }
  EXPECT(!HasCrLfNul(r->to));
  for (const auto& [name, value] : r->vars) EXPECT(!HasCrLfNul(name) && !HasCrLfNul(value));
  RoundTrip(*r);
}

void ParseFile(std::string_view file, const JobLimits& limits) {
  std::optional<JobHeader> header;
  std::optional<Template> tmpl;
  bool first = true;
  while (!file.empty()) {
    const size_t lf = file.find('\n');
    const std::string_view line = file.substr(0, lf);
    file = lf == std::string_view::npos ? std::string_view() : file.substr(lf + 1);
    if (first) {
      first = false;
      absl::StatusOr<JobHeader> h = volley::queue::ParseJobHeader(line, limits);
      if (!h.ok()) {
        CheckParseError(h.status());
        continue;
      }
      CheckHeader(*h, limits);
      // ParseJobHeader compiled it already: job.h says this cannot fail.
      absl::StatusOr<Template> t = Template::Compile(h->message);
      EXPECT(t.ok());
      header = std::move(*h);
      tmpl = std::move(*t);
      continue;
    }
    absl::StatusOr<Recipient> r = volley::queue::ParseRecipientLine(line, limits);
    if (!r.ok()) {
      CheckParseError(r.status());
      continue;
    }
    CheckRecipient(*r, limits);
    RoundTrip(*r);
    if (header) Render(*header, *tmpl, *r);
  }
}

// CheckWholeFile - the checks intake makes before anything is queued.
void CheckWholeFile(std::string_view file, const JobLimits& limits) {
  const size_t lf = file.find('\n');
  absl::StatusOr<volley::queue::JobFileCheck> check =
      volley::queue::JobFileCheck::Start(file.substr(0, lf), limits);
  if (!check.ok()) {
    CheckParseError(check.status());
    return;
  }
  uint64_t parsed = 0;
  file = lf == std::string_view::npos ? std::string_view() : file.substr(lf + 1);
  while (!file.empty()) {
    const size_t end = file.find('\n');
    const std::string_view line = file.substr(0, end);
    file = end == std::string_view::npos ? std::string_view() : file.substr(end + 1);
    if (line.empty()) continue;
    absl::StatusOr<Recipient> r = check->CheckRecipient(line);
    if (r.ok()) {
      ++parsed;
    } else {
      EXPECT(r.status().code() == absl::StatusCode::kInvalidArgument);
      EXPECT(Printable(Message(r.status())));
    }
  }
  EXPECT(check->accepted() == parsed);
  const absl::Status verdict = check->Finish();
  if (!verdict.ok()) CheckParseError(verdict);
  for (const volley::queue::LackingVariable& v : check->Lacking()) {
    EXPECT(v.recipients > 0 && v.recipients <= parsed);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  ParseFile(input, kDefault);
  ParseFile(input, kSmall);
  CheckWholeFile(input, kDefault);
  CheckWholeFile(input, kSmall);
  DecodeRaw(input);
  return 0;
}
