// ctl.h - volleyctl's logic: talk to volleyd's admin API, format its answers
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(HttpResponse r, Call("127.0.0.1:9465", "GET", "/jobs", kCallTimeout));
//   ASSIGN_OR_RETURN(std::string table, FormatJobsTable(r.body));
//   ASSIGN_OR_RETURN(std::string lines, FormatJob(r.body));
//
//   ASSIGN_OR_RETURN(CtlConfig c, ReadCtlConfig("/etc/volley/volley.toml"));
//   ASSIGN_OR_RETURN(token::Keyring keys, token::Keyring::Load(c.token_keys, &warnings));
//   VerpReport v = DecodeVerp(keys, c.verp_domain, "b-cjvtc...@bounces.sender.test");
//   if (v.verified) LookUpVerp(admin, c.spool, &v);    // job id and recipient
//   std::string out = FormatVerpReport(v, /*json=*/false);
//
//   ASSIGN_OR_RETURN(dkim::PrivateKey key,
//                    dkim::PrivateKey::Generate(dkim::Algorithm::kEd25519Sha256));
//   RETURN_IF_ERROR(WriteNewKeyFile("s1.pem", key.ToPem()));   // mode 0600, never over a file
//   std::string zone = FormatDkimKey(DescribeDkimKey(key, "s1.pem", "s1", "sender.test"), false);
//
// DESCRIPTION
//   volleyctl is a thin client of the HTTP/1.1 admin API that volleyd serves on
//   loopback (engine/admin.h, docs/volleyctl.md); the HTTP is libcurl's, never
//   through a proxy, never following a redirect. Everything here but Call,
//   LookUpVerp and the file readers and writer is pure, so tests reach it
//   without a daemon. This library does not link the engine: the few config
//   keys it needs are read with toml++ directly (AdminFromConfig, ReadCtlConfig);
//   only check and render (job_file.h, a library of their own) do, since they
//   must check and compose with volleyd's own code. It
//   links engine/token and engine/dkim, the two small libraries that do what
//   verp decode and dkim need (and so OpenSSL, which their headers hide).
//
//   verp decode checks a bounce address with the [[token_key]] secrets read from
//   volleyd's config (ReadCtlConfig; engine/token does the checking), then turns
//   the token's job number into the job id with GET /jobs (each job carries
//   "job_no"), and the line into the recipient by reading that line of the job
//   file that intake moved to <spool>/accepted/. The queue forgets a recipient
//   once it is delivered, and a bounce usually comes after delivery, so the
//   accepted file is the one place that still names every recipient. Each
//   lookup that fails leaves its field unknown with the reason, and the rest of
//   the report stands.
//
//   dkim keygen and dkim record need no daemon: engine/dkim makes and reads the
//   keys, and this file writes the key file and formats the record to publish.
//
// BOUNDS
//   kMaxResponse (16 MiB) of answer, kCallTimeout (10 s) for the whole exchange.
//   Job files: a header line of at most kMaxJobHeaderLine and a recipient line of
//   at most kMaxJobRecipientLine (queue/job.h's JobLimits defaults); the search
//   of accepted/ reads line 1 of each file until one is the job's, trying first
//   the files whose name starts with the job id.
//
// ERRORS
//   Call: InvalidArgument for a bad address, Unavailable "cannot connect to
//   volleyd's admin API at ADDR: REASON (is volleyd running?)" and "volleyd's
//   admin API at ADDR: REASON" (the connection broke), DeadlineExceeded,
//   ResourceExhausted (answer over kMaxResponse), DataLoss (not an HTTP answer). Format*: DataLoss naming what is missing from the answer.
//   ReadCtlConfig: InvalidArgument "FILE:LINE: key: why". JobIdOfNumber:
//   NotFound when no job has the number, FailedPrecondition when volleyd's
//   answer has no job numbers (a volleyd older than this volleyctl).
//   FindAcceptedJobFile, ReadJobLine: NotFound or Unavailable naming the file.
//   CheckDkimName, ParseDkimAlgorithm: InvalidArgument naming the option.
//   WriteNewKeyFile: AlreadyExists when the file exists, else the errno's
//   Status (base::ErrnoError) naming the file; nothing is left behind on error.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_CTL_H_
#define VOLLEY_TOOLS_VOLLEYCTL_CTL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/dkim/dkim.h"
#include "engine/token/token.h"

namespace volley::ctl {

// volleyd's default admin address: engine/config.h's [admin] listen default.
inline constexpr char kDefaultAdmin[] = "127.0.0.1:9465";
// Longest answer read from volleyd (a job is about 300 bytes of JSON).
inline constexpr size_t kMaxResponse = size_t{16} << 20;
// Connect, send and read, all together.
inline constexpr absl::Duration kCallTimeout = absl::Seconds(10);

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Call - one request to the admin API at `admin` ("HOST:PORT"), with libcurl;
// `body` (JSON) only with POST. Any status is an answer: the caller shows a
// non-2xx's ErrorText.
absl::StatusOr<HttpResponse> Call(std::string_view admin, std::string_view method,
                                  std::string_view path, absl::Duration timeout,
                                  std::string_view body = {});

// JobPath - "/jobs/ID" plus `suffix` ("/pause"), with every byte of ID that is
// not safe in a request line percent-encoded (volleyd then refuses it, 400).
std::string JobPath(std::string_view id, std::string_view suffix);

// ErrorText - the "error" member of an error answer, else the body itself.
std::string ErrorText(std::string_view body);

// FormatTable - rows as columns padded to their widths, two spaces apart;
// the columns marked in `numeric` to the right, the others to the left.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& numeric);

// FormatJobsTable - {"jobs":[...]} as a table: a header line, then one line per job.
absl::StatusOr<std::string> FormatJobsTable(std::string_view body);

// Printable - a string from volleyd as it may be shown on a terminal: control
// bytes become '?', so that no answer can send escape sequences to it.
std::string Printable(std::string_view s);

// FormatJob - one job object as "key: value" lines (a refused job: id,
// state, file and error).
absl::StatusOr<std::string> FormatJob(std::string_view body);

// FormatRate - recipients per second as "12.5/s" ("-" for a negative or NaN).
std::string FormatRate(double per_second);
// FormatSeconds - a duration as "45s", "12m30s", "1h35m", "3d4h".
std::string FormatSeconds(int64_t seconds);

// AdminFromConfig - volleyd's [admin] listen from its config file, or the default
// when the file does not set it.
absl::StatusOr<std::string> AdminFromConfig(const std::string& path);

// volleyd's [paths] spool and log defaults: engine/config.h's.
inline constexpr char kDefaultSpool[] = "var/spool";
inline constexpr char kDefaultLog[] = "var/log";
// Longest job file lines read: queue::JobLimits' defaults.
inline constexpr size_t kMaxJobHeaderLine = size_t{16} << 20;
inline constexpr size_t kMaxJobRecipientLine = size_t{64} << 10;

// CtlConfig - the keys of volleyd's config file that volleyctl uses. Only their
// types are checked here; volleyd checks the rest at start.
struct CtlConfig {
  std::string admin = kDefaultAdmin;     // [admin] listen
  std::string spool = kDefaultSpool;     // [paths] spool (relative: to the current folder)
  std::string log = kDefaultLog;         // [paths] log: the delivery log's folder
  std::vector<token::KeySpec> token_keys;  // [[token_key]] id, secret_file
  std::string verp_domain;               // [verp] domain; "" when unset
};

// ReadCtlConfig - CtlConfig from volleyd's config file.
absl::StatusOr<CtlConfig> ReadCtlConfig(const std::string& path);

// VerpReport - what verp decode found out about one address.
struct VerpReport {
  std::string address;       // as given
  std::string domain;        // after the '@', as given ("" when there is none)
  // [verp] domain when configured, and whether the address's domain is it
  // (either case): a mismatch is reported, not refused.
  std::string verp_domain;
  bool domain_matches = true;
  bool verified = false;
  std::string failure;       // when not verified: what Check said
  token::Claim claim;        // when verified
  // Filled by LookUpVerp; nullopt with the reason when it could not be found.
  std::optional<std::string> job_id;
  std::string job_id_error;
  std::optional<std::string> recipient;
  std::string recipient_error;
  std::string job_file;      // where the recipient was read
};

// DecodeVerp - check `address` (token::CheckVerpAddress). Pure.
VerpReport DecodeVerp(const token::Keyring& keys, std::string_view verp_domain,
                      std::string_view address);

// LookUpVerp - for a verified report: the job id from volleyd at `admin`, then
// the recipient from the accepted job file under `spool`.
void LookUpVerp(std::string_view admin, const std::string& spool, VerpReport* report);

// JobIdOfNumber - the id of the job numbered `job_no` in a GET /jobs answer.
absl::StatusOr<std::string> JobIdOfNumber(std::string_view jobs_body, uint32_t job_no);

// FindAcceptedJobFile - the file in <spool>/accepted/ whose header names job `id`.
absl::StatusOr<std::string> FindAcceptedJobFile(const std::string& spool, std::string_view id);

// ReadJobLine - line `line` (1 is the header) of a job file, counted as intake
// counts them (LF ends a line, a CR before it is dropped), at most `max` octets.
absl::StatusOr<std::string> ReadJobLine(const std::string& path, uint64_t line, size_t max);

// RecipientOfLine - the "to" of a recipient line.
absl::StatusOr<std::string> RecipientOfLine(std::string_view line);

// FormatVerpReport - "key: value" lines, or one JSON object (docs/volleyctl.md).
std::string FormatVerpReport(const VerpReport& report, bool json);

// ParseDkimAlgorithm - "rsa" or "ed25519" (or the a= names, "rsa-sha256",
// "ed25519-sha256").
absl::StatusOr<dkim::Algorithm> ParseDkimAlgorithm(std::string_view name);

// CheckDkimName - a --domain or --selector value (`option` names it in errors):
// dot-separated labels of 1..63 letters, digits, '-' and '_', at most 253 octets.
// Returns it without a final dot.
absl::StatusOr<std::string> CheckDkimName(std::string_view option, std::string_view name);

// WriteNewKeyFile - `pem` into a new file at `path`, mode 0600 whatever the umask,
// synced. Never replaces a file: a key in use, once overwritten, is lost.
absl::Status WriteNewKeyFile(const std::string& path, std::string_view pem);

// DkimKeyInfo - what dkim keygen and dkim record print.
struct DkimKeyInfo {
  std::string file;
  dkim::Algorithm algorithm = dkim::Algorithm::kRsaSha256;
  int bits = 0;
  std::string name;    // "s1._domainkey.sender.test." or "" without domain and selector
  std::string record;  // "v=DKIM1; k=rsa; p=..."
};

// DescribeDkimKey - the record of `key`, published under selector and domain
// (both checked already, or both empty).
DkimKeyInfo DescribeDkimKey(const dkim::PrivateKey& key, std::string_view file,
                            std::string_view selector, std::string_view domain);

// FormatDkimKey - a zone file line, "NAME IN TXT \"...\" \"...\"" (the strings
// alone without a name), or one JSON object.
std::string FormatDkimKey(const DkimKeyInfo& info, bool json);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_CTL_H_
