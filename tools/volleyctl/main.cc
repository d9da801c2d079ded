// volleyctl - job control for a running volleyd, and the operator's key tools
//
// SYNOPSIS
//   volleyctl [--admin HOST:PORT | --config FILE] [--json] COMMAND [ID]
//   volleyctl [--admin HOST:PORT] --config FILE [--json] verp decode ADDRESS
//   volleyctl [--json] dkim keygen --domain D --selector S --algorithm rsa|ed25519
//             [--bits N] --out FILE
//   volleyctl [--json] dkim record FILE [--domain D --selector S]
//   volleyctl [--config FILE] check JOBFILE
//   volleyctl [--config FILE] render JOBFILE LINE
//   volleyctl submit --from ADDR --template FILE.eml --recipients FILE.csv [--job ID]
//             [--send-after T] [--priority N] [--address-column NAME] [--strict]
//             [--spool DIR | --config FILE]
//   volleyctl submit ... --split N [--split-by recipient|domain]
//             (--spool DIR1,...,DIRN | --out DIR)
//
// DESCRIPTION
//   Talks to volleyd's admin API (engine/admin.h), by default at 127.0.0.1:9465;
//   --config reads [admin] listen from volleyd's config file instead, and
//   --admin names the address outright (it wins over --config). Commands:
//
//     jobs          every job: a table of state and counters
//     job ID        one job, as "key: value" lines
//     pause ID      stop sending the job (it stays queued); prints the job
//     resume ID     send it again; prints the job
//     cancel ID     take its remaining recipients out (logged "cancelled")
//     suspend DOMAIN [--for 2h] [--reason TEXT]
//                   send nothing to DOMAIN until then (default 1h, at most 7d)
//     unsuspend DOMAIN
//                   end it now: what it held goes at once
//     retry DOMAIN | retry --job ID
//                   deferred recipients become due now; prints how many
//
//   --json prints volleyd's JSON answer as it came (verp and dkim: an object of
//   their own).
//
//   verp decode checks a bounce address's signed token with the [[token_key]]
//   secrets of volleyd's config, offline, then asks volleyd for the job and reads
//   the recipient from the spool's accepted job file (what it cannot look up, it
//   says so). dkim keygen writes a new DKIM private key (mode 0600, never over an
//   existing file) and prints the TXT record to publish; dkim record prints it
//   again from the key. The dkim commands need no volleyd.
//
//   check and render need no volleyd either (tools/volleyctl/job_file.h): check
//   runs intake's checks on a job file and prints what intake would say; render
//   prints the message the recipient on LINE would receive, with the fields and
//   DKIM signatures volleyd adds (--config: volleyd's config, for its keys).
//
//   submit (tools/volleyctl/submit.h) turns a message template and a CSV list
//   into a job file, checked as intake would check it, and drops it into the
//   spool's incoming/ (--spool, else [paths] spool of --config). Bad rows are
//   named on stderr with their CSV line and left out; the job id is printed.
//   --split N makes N jobs "<id>-1".."<id>-N" of the list instead, one per node
//   of a cluster, into N spools or one folder (submit.h, "Split"); their ids
//   are printed, one a line.
//
// EXIT STATUS
//   check: 0 the job would be accepted, 1 refused (the reasons on stderr), 2
//   usage or an unreadable file or config. render: 0 printed, 1 the line or the
//   job would be refused, 2 usage or an unreadable file or config. submit: 0
//   submitted (bad rows, if any, left out), 1 refused (the job as intake would,
//   no good row, a bad row under --strict, a job id in use), 2 usage or an
//   unreadable file, config or spool. Otherwise:
//   0 done; 1 volleyd refused the request (its error is printed) or could not be
//   reached, a VERP address that does not verify, a key that cannot be written or
//   read; 2 usage error (unknown command or option, missing ID, unreadable
//   --config or key secret). docs/volleyctl.md has the details and the HTTP API.
//   Options are parsed by CLI11: --name VALUE or --name=VALUE, anywhere on the
//   line; "--" ends them; --help prints the usage above and exits 0.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "base/cli.h"
#include "engine/dkim/dkim.h"
#include "engine/token/token.h"
#include "absl/time/clock.h"
#include "engine/config.h"
#include "tools/volleyctl/ctl.h"
#include "tools/volleyctl/destinations.h"
#include "tools/volleyctl/job_file.h"
#include "tools/volleyctl/submit.h"
#include "tools/volleyctl/status.h"
#include "tools/volleyctl/suppress.h"

namespace {

int Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: volleyctl [--admin HOST:PORT | --config FILE] [--json] COMMAND\n"
      "commands:\n"
      "  jobs          list every job with its counters\n"
      "  job ID        show one job\n"
      "  pause ID      pause a job (it stays queued)\n"
      "  resume ID     resume a paused job\n"
      "  cancel ID     cancel a job: its remaining recipients are logged as cancelled\n"
      "  suspend DOMAIN [--for 2h] [--reason TEXT]\n"
      "                send nothing to DOMAIN for that long (default 1h, at most 7d)\n"
      "  unsuspend DOMAIN\n"
      "                end a suspension: what it held is sent at once\n"
      "  retry DOMAIN | retry --job ID\n"
      "                make deferred recipients due now; prints how many\n"
      "  status [--watch]\n"
      "                every job with progress, rate and ETA; the busiest destinations;\n"
      "                the queue's totals (--watch: again every 2 s; --json for scripts)\n"
      "  destinations [--all]\n"
      "                destinations with their counts, rate, backoff and last reply\n"
      "                (without --all: the busy and the troubled ones)\n"
      "  queue [--domain D] [--job J]\n"
      "                queued recipients by state and age (like qshape), oldest, next due\n"
      "  trace RCPT [--job J]\n"
      "                every delivery log record of one recipient, in order\n"
      "                ([paths] log from --config, else var/log)\n"
      "  verp decode ADDRESS\n"
      "                check a VERP bounce address (needs --config: [[token_key]]);\n"
      "                print its job, line, recipient and key\n"
      "  dkim keygen --domain D --selector S --algorithm rsa|ed25519 [--bits N] --out FILE\n"
      "                write a new DKIM private key (mode 0600) and print its DNS record\n"
      "  dkim record FILE [--domain D --selector S]\n"
      "                print the DNS record of a DKIM private key\n"
      "  suppress add ADDR [--reason R] [--scope DOMAIN] [--expires 30d] [--source TEXT]\n"
      "  suppress remove ADDR [--scope DOMAIN]\n"
      "  suppress check ADDR [--from-domain DOMAIN]   exit 0 suppressed, 1 not, >1 error\n"
      "  suppress list | suppress export               a table | CSV on stdout\n"
      "  suppress import FILE [--reason R] [--scope D] [--expires 30d]\n"
      "                CSV (as export writes) or one address a line; \"-\" is stdin\n"
      "  check JOBFILE  check a job file as intake would, without submitting it\n"
      "                (with --config: volleyd's key checks too); exit 0 if accepted\n"
      "  render JOBFILE LINE\n"
      "                print the message the recipient on LINE would receive, with the\n"
      "                fields and DKIM signatures volleyd adds (--config: its keys)\n"
      "  submit --from ADDR --template FILE.eml --recipients FILE.csv [--job ID]\n"
      "         [--send-after T] [--priority N] [--address-column NAME] [--strict]\n"
      "         [--spool DIR | --config FILE]\n"
      "                make a job of a template and a CSV list (header row: the\n"
      "                variables; an email or address column) and drop it into the\n"
      "                spool's incoming/; bad rows are named and left out (--strict:\n"
      "                refuse the file); prints the job id\n"
      "  submit ... --split N [--split-by recipient|domain] (--spool DIR1,...,DIRN | --out DIR)\n"
      "                the same as N jobs ID-1..ID-N, one per cluster node: recipients\n"
      "                dealt round robin (or each domain's to one part), part k into\n"
      "                the k-th spool (or all into DIR); prints the job ids\n"
      "default admin address: %s ([admin] listen in volleyd's config)\n",
      volley::ctl::kDefaultAdmin);
  return 2;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "volleyctl: %s\n", message.c_str());
  return 1;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "volleyctl: %s\n", message.c_str());
  return Usage(stderr);
}

void Print(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

struct Options {
  std::string admin;
  std::string config;
  bool json = false;
  // dkim's own options; refused with any other command.
  std::string domain;
  std::string selector;
  std::string algorithm;
  std::string bits;
  std::string out;
  // suppress's own options; refused with any other command.
  std::string reason;
  std::string scope;
  std::string expires;
  std::string source;
  std::string from_domain;
  // submit's own options; refused with any other command.
  std::string from;
  std::string template_path;
  std::string recipients;
  std::string job;  // submit's job id; retry's job
  std::string send_after;
  std::string priority;
  std::string address_column;
  std::string spool;
  bool strict = false;
  std::string split;
  std::string split_by;
  // suspend's and retry's own options.
  std::string for_duration;
  bool for_given = false;
  // The read side's options (status, destinations, queue, trace).
  bool all = false;
  bool watch = false;
  std::vector<std::string> args;
};

// AdminAddress - --admin, else [admin] listen from --config, else the
// default; nullopt (the error printed) when --config cannot be read.
std::optional<std::string> AdminAddress(const Options& o) {
  if (!o.admin.empty()) return o.admin;
  if (o.config.empty()) return std::string(volley::ctl::kDefaultAdmin);
  auto from_config = volley::ctl::AdminFromConfig(o.config);
  if (!from_config.ok()) {
    std::fprintf(stderr, "volleyctl: config: %s\n",
                 std::string(from_config.status().message()).c_str());
    return std::nullopt;
  }
  return *from_config;
}

// ShowAnswer - volleyd's answer to one call: the failure (exit 2 for a
// request volleyctl could not even form, such as a bad job id; else 1), its
// JSON as it came with --json, or `format`'s text of it.
int ShowAnswer(const Options& o, const absl::StatusOr<volley::ctl::HttpResponse>& response,
               absl::StatusOr<std::string> (*format)(std::string_view body)) {
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kInvalidArgument) {
      std::fprintf(stderr, "volleyctl: %s\n", std::string(response.status().message()).c_str());
      return 2;
    }
    return Fail(std::string(response.status().message()));
  }
  if (response->status != 200) return Fail("volleyd: " + volley::ctl::ErrorText(response->body));
  if (o.json) {
    Print(response->body);
    if (!response->body.empty() && response->body.back() != '\n') std::fputc('\n', stdout);
    return 0;
  }
  auto text = format(response->body);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  Print(*text);
  return 0;
}

// JobCommand - jobs, job, pause, resume, cancel: one call to the admin API.
int JobCommand(const Options& o) {
  const std::string& command = o.args[0];
  const bool needs_id = command != "jobs";
  if (o.args.size() != (needs_id ? 2u : 1u)) {
    return UsageError(command + (needs_id ? " takes one job ID" : " takes no argument"));
  }
  const std::optional<std::string> admin = AdminAddress(o);
  if (!admin) return 2;
  std::string method = "GET";
  std::string path = "/jobs";
  if (needs_id) {
    method = command == "job" ? "GET" : "POST";
    path = volley::ctl::JobPath(o.args[1], command == "job" ? "" : "/" + command);
  }
  return ShowAnswer(o, volley::ctl::Call(*admin, method, path, volley::ctl::kCallTimeout),
                    command == "jobs" ? &volley::ctl::FormatJobsTable : &volley::ctl::FormatJob);
}

// DestinationCommand - suspend, unsuspend, retry (tools/volleyctl/destinations.h).
int DestinationCommand(const Options& o) {
  const std::string& command = o.args[0];
  const bool by_job = command == "retry" && !o.job.empty();
  if (by_job ? o.args.size() != 1 : o.args.size() != 2) {
    return UsageError(command == "retry" ? "retry takes one DOMAIN, or --job ID"
                                         : command + " takes one DOMAIN");
  }
  std::optional<std::string> admin = AdminAddress(o);
  if (!admin) return 2;
  std::string path;
  std::string body;
  if (command == "suspend") {
    auto made = volley::ctl::SuspendBody(o.for_duration, o.reason, o.for_given);
    if (!made.ok()) return UsageError(std::string(made.status().message()));
    body = *made;
    path = volley::ctl::DestinationPath(o.args[1], "/suspend");
  } else if (by_job) {
    path = volley::ctl::JobPath(o.job, "/retry");
  } else {
    path = volley::ctl::DestinationPath(o.args[1], "/" + command);
  }
  return ShowAnswer(o, volley::ctl::Call(*admin, "POST", path, volley::ctl::kCallTimeout, body),
                    command == "suspend"     ? &volley::ctl::FormatSuspended
                    : command == "unsuspend" ? &volley::ctl::FormatReleased
                                             : &volley::ctl::FormatMadeDue);
}

// ReadCommand - status, destinations, queue: calls to the admin API, shown as
// text or (--json) as volleyd's JSON; status --watch redraws every 2 s.
int ReadCommand(const Options& o) {
  const std::string& command = o.args[0];
  if (o.args.size() != 1) return UsageError(command + " takes no argument (options only)");
  if (command != "destinations" && o.all) return UsageError("--all is an option of destinations");
  if (command != "status" && o.watch) return UsageError("--watch is an option of status");
  if (command != "queue" && !o.domain.empty()) {
    return UsageError("--domain is an option of queue and the dkim commands");
  }
  if (command != "queue" && command != "trace" && !o.job.empty()) {
    return UsageError("--job is an option of queue and trace");
  }
  const std::optional<std::string> admin = AdminAddress(o);
  if (!admin) return 2;
  if (command == "status") {
    const bool terminal = isatty(STDOUT_FILENO) == 1;
    for (;;) {
      const volley::ctl::StatusAnswers answers = volley::ctl::FetchStatus(*admin);
      std::string screen = o.json ? volley::ctl::StatusJson(answers)
                                  : volley::ctl::FormatStatus(answers,
                                                              volley::ctl::kStatusDestinations);
      if (o.watch && terminal && !o.json) {
        // Home and clear, then the screen: redrawn in place.
        screen = "\033[H\033[2J" +
                 absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::Now(), absl::UTCTimeZone()) +
                 "\n\n" + screen;
      } else if (o.watch && !o.json) {
        screen += "\n";  // piped: one screen after the other, plain text
      }
      Print(screen);
      std::fflush(stdout);
      if (!o.watch) return answers.errors.empty() ? 0 : 1;
      absl::SleepFor(absl::Seconds(2));
    }
  }
  const std::string path = command == "destinations"
                               ? volley::ctl::DestinationsPath(o.all, volley::ctl::kDestinationsShown)
                               : volley::ctl::QueuePath(o.domain, o.job);
  return ShowAnswer(o, volley::ctl::Call(*admin, "GET", path, volley::ctl::kCallTimeout),
                    command == "destinations" ? &volley::ctl::FormatDestinationsTable
                                              : &volley::ctl::FormatQueueSummary);
}

// TraceCommand - trace RCPT [--job J]: the delivery log, read here (status.h).
int TraceCommand(const Options& o) {
  if (o.args.size() != 2) return UsageError("trace takes one recipient address");
  std::string log_dir = volley::ctl::kDefaultLog;
  if (!o.config.empty()) {
    auto c = volley::ctl::ReadCtlConfig(o.config);
    if (!c.ok()) {
      std::fprintf(stderr, "volleyctl: config: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
    log_dir = c->log;
  }
  auto files = volley::ctl::DeliveryLogFiles(log_dir);
  if (!files.ok()) return Fail(std::string(files.status().message()));
  size_t found = 0;
  const absl::Status st = volley::ctl::TraceRecipient(
      *files, o.args[1], o.job, [&](std::string_view record) {
        ++found;
        if (o.json) {
          Print(std::string(record) + "\n");
        } else {
          Print(volley::ctl::FormatTraceRecord(record));
        }
      });
  if (!st.ok()) return Fail(std::string(st.message()));
  if (found == 0) {
    std::fprintf(stderr, "volleyctl: no record of %s in the delivery log (%s)\n",
                 volley::ctl::Printable(o.args[1]).c_str(), log_dir.c_str());
    return 1;
  }
  return 0;
}

// VerpCommand - verp decode ADDRESS.
int VerpCommand(const Options& o) {
  if (o.args.size() != 3 || o.args[1] != "decode") return UsageError("verp takes: decode ADDRESS");
  if (o.config.empty()) {
    return UsageError(
        "verp decode needs --config FILE: the [[token_key]] secrets are in volleyd's config");
  }
  auto config = volley::ctl::ReadCtlConfig(o.config);
  if (!config.ok()) {
    std::fprintf(stderr, "volleyctl: config: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (config->token_keys.empty()) {
    std::fprintf(stderr, "volleyctl: config: %s has no [[token_key]]: nothing to check with\n",
                 o.config.c_str());
    return 2;
  }
  std::vector<std::string> warnings;
  auto keys = volley::token::Keyring::Load(config->token_keys, &warnings);
  for (const std::string& w : warnings) std::fprintf(stderr, "volleyctl: warning: %s\n", w.c_str());
  if (!keys.ok()) {
    std::fprintf(stderr, "volleyctl: config: %s\n", std::string(keys.status().message()).c_str());
    return 2;
  }
  volley::ctl::VerpReport report = volley::ctl::DecodeVerp(*keys, config->verp_domain, o.args[2]);
  volley::ctl::LookUpVerp(o.admin.empty() ? config->admin : o.admin, config->spool, &report);
  Print(volley::ctl::FormatVerpReport(report, o.json));
  if (!report.verified) return Fail("the address does not verify: " + report.failure);
  return 0;
}

// SuppressCommand - suppress add|remove|check|list|export|import, over the
// admin API's /suppressions. check exits 0 suppressed, 1 not, 2 usage, 3 any
// other error; the others 0 done, 1 failed (import: a line was skipped), 2 usage.
int SuppressCommand(const Options& o) {
  namespace ctl = volley::ctl;
  const std::string sub = o.args.size() > 1 ? o.args[1] : "";
  const bool takes_arg = sub == "add" || sub == "remove" || sub == "check" || sub == "import";
  if (!takes_arg && sub != "list" && sub != "export") {
    return UsageError("suppress takes: add ADDR, remove ADDR, check ADDR, list, export, import FILE");
  }
  if (o.args.size() != (takes_arg ? 3u : 2u)) {
    return UsageError("suppress " + sub + (takes_arg ? " takes one argument" : " takes none"));
  }
  // Each subcommand's options; any other given is a usage error.
  const std::vector<std::pair<const char*, bool>> allowed = {
      {"--reason", sub == "add" || sub == "import"},
      {"--scope", sub == "add" || sub == "remove" || sub == "import"},
      {"--expires", sub == "add" || sub == "import"},
      {"--source", sub == "add"},
      {"--from-domain", sub == "check"},
  };
  for (const auto& [name, ok] : allowed) {
    const bool given = (std::string_view(name) == "--reason" && !o.reason.empty()) ||
                       (std::string_view(name) == "--scope" && !o.scope.empty()) ||
                       (std::string_view(name) == "--expires" && !o.expires.empty()) ||
                       (std::string_view(name) == "--source" && !o.source.empty()) ||
                       (std::string_view(name) == "--from-domain" && !o.from_domain.empty());
    if (given && !ok) return UsageError(std::string(name) + " is not an option of suppress " + sub);
  }
  const int kError = sub == "check" ? 3 : 1;
  std::optional<std::string> admin = AdminAddress(o);
  if (!admin) return 2;
  // call - one request; nullopt (the error printed) unless volleyd answered.
  auto call = [&](const std::string& method, const std::string& path,
                  std::string_view body = {}) -> std::optional<ctl::HttpResponse> {
    auto r = ctl::Call(*admin, method, path, ctl::kCallTimeout, body);
    if (!r.ok()) {
      std::fprintf(stderr, "volleyctl: %s\n", std::string(r.status().message()).c_str());
      return std::nullopt;
    }
    return *std::move(r);
  };
  auto refused = [&](const ctl::HttpResponse& r) {
    std::fprintf(stderr, "volleyctl: volleyd: %s\n", ctl::ErrorText(r.body).c_str());
    return kError;
  };
  auto print_json = [](const std::string& body) {
    Print(body);
    if (!body.empty() && body.back() != '\n') std::fputc('\n', stdout);
  };

  if (sub == "add") {
    ctl::SuppressionRow row;
    row.address = o.args[2];
    row.scope = o.scope;
    row.reason = o.reason;
    row.source = o.source.empty() ? "volleyctl" : o.source;
    row.expires = o.expires;
    auto r = call("POST", "/suppressions", ctl::SuppressionEntryJson(row));
    if (!r) return kError;
    if (r->status != 200) return refused(*r);
    if (o.json) {
      print_json(r->body);
    } else {
      Print("added " + o.args[2] + (o.scope.empty() ? "" : " (scope " + o.scope + ")") + "\n");
    }
    return 0;
  }
  if (sub == "remove") {
    auto r = call("DELETE", "/suppressions?address=" + ctl::QueryEscape(o.args[2]) +
                                "&scope=" + ctl::QueryEscape(o.scope));
    if (!r) return kError;
    if (r->status != 200) return refused(*r);
    if (o.json) {
      print_json(r->body);
    } else {
      Print("removed " + o.args[2] + (o.scope.empty() ? "" : " (scope " + o.scope + ")") + "\n");
    }
    return 0;
  }
  if (sub == "check") {
    auto r = call("GET", "/suppressions/check?address=" + ctl::QueryEscape(o.args[2]) +
                             "&from_domain=" + ctl::QueryEscape(o.from_domain));
    if (!r) return kError;
    if (r->status != 200) return refused(*r);
    auto row = ctl::ParseCheckAnswer(r->body);
    if (!row.ok()) {
      std::fprintf(stderr, "volleyctl: %s\n", std::string(row.status().message()).c_str());
      return kError;
    }
    if (o.json) {
      print_json(r->body);
      return row->has_value() ? 0 : 1;
    }
    if (!row->has_value()) {
      Print(o.args[2] + ": not suppressed\n");
      return 1;
    }
    Print(ctl::FormatSuppression(**row));
    return 0;
  }
  if (sub == "list" || sub == "export") {
    if (sub == "export") Print(ctl::SuppressionCsvHeader());
    std::string after, after_scope;
    bool first = true;
    for (bool more = true; more;) {
      std::string path = "/suppressions?limit=" + std::to_string(ctl::kExportPage);
      if (!first) {
        path += "&after=" + ctl::QueryEscape(after) + "&after_scope=" + ctl::QueryEscape(after_scope);
      }
      auto r = call("GET", path);
      if (!r) return kError;
      if (r->status != 200) return refused(*r);
      auto page = ctl::ParseSuppressionPage(r->body);
      if (!page.ok()) {
        std::fprintf(stderr, "volleyctl: %s\n", std::string(page.status().message()).c_str());
        return kError;
      }
      if (sub == "export") {
        for (const auto& row : page->rows) Print(ctl::SuppressionCsvRow(row));
      } else if (o.json) {
        print_json(r->body);
      } else {
        Print(ctl::FormatSuppressionTable(page->rows, first));
      }
      first = false;
      more = page->more;
      after = page->after;
      after_scope = page->after_scope;
    }
    return 0;
  }

  // import FILE
  const std::string& file = o.args[2];
  FILE* in = file == "-" ? stdin : std::fopen(file.c_str(), "re");
  if (in == nullptr) {
    std::fprintf(stderr, "volleyctl: %s: %s\n", file.c_str(), std::strerror(errno));
    return 1;
  }
  ctl::ImportDefaults defaults;
  defaults.scope = o.scope;
  if (!o.reason.empty()) defaults.reason = o.reason;
  defaults.expires = o.expires;
  ctl::ImportReader reader(file == "-" ? "stdin" : file, defaults);
  uint64_t added = 0, skipped = 0;
  std::vector<uint64_t> lines;  // the file's line of each entry in the batch
  std::string batch;
  bool failed = false;
  auto send = [&]() {
    if (lines.empty()) return true;
    batch += "]}";
    auto r = call("POST", "/suppressions", batch);
    if (!r) return false;
    if (r->status != 200) {
      refused(*r);
      return false;
    }
    auto answer = ctl::ParseImportAnswer(r->body);
    if (!answer.ok()) {
      std::fprintf(stderr, "volleyctl: %s\n", std::string(answer.status().message()).c_str());
      return false;
    }
    added += answer->added;
    for (const auto& [index, why] : answer->errors) {
      const uint64_t line = index < lines.size() ? lines[index] : 0;
      std::fprintf(stderr, "%s:%llu: %s\n", file.c_str(), static_cast<unsigned long long>(line),
                   why.c_str());
      ++skipped;
    }
    lines.clear();
    batch.clear();
    return true;
  };
  char buf[ctl::kMaxImportLine + 2];
  while (!failed && std::fgets(buf, sizeof buf, in) != nullptr) {
    size_t n = std::strlen(buf);
    const bool whole = n > 0 && buf[n - 1] == '\n';
    if (!whole && !std::feof(in)) {
      // Over the bound: the rest of the line is read and dropped, never kept.
      int c;
      while ((c = std::fgetc(in)) != EOF && c != '\n') {
      }
      std::fprintf(stderr, "%s\n", std::string(reader.SkipTooLong().message()).c_str());
      ++skipped;
      continue;
    }
    if (whole) --n;
    auto line = reader.Next(std::string_view(buf, n));
    if (!line.ok()) {
      std::fprintf(stderr, "%s\n", std::string(line.status().message()).c_str());
      ++skipped;
      continue;
    }
    if (line->skip) continue;
    batch += lines.empty() ? "{\"entries\":[" : ",";
    batch += ctl::SuppressionEntryJson(line->entry);
    lines.push_back(line->number);
    if (lines.size() == ctl::kImportBatch && !send()) failed = true;
  }
  const bool read_error = std::ferror(in) != 0;
  if (in != stdin) std::fclose(in);
  if (!failed && !send()) failed = true;
  if (read_error) std::fprintf(stderr, "volleyctl: %s: read error\n", file.c_str());
  std::printf("%s: %llu added, %llu skipped%s\n", file.c_str(),
              static_cast<unsigned long long>(added), static_cast<unsigned long long>(skipped),
              failed || read_error ? " (stopped early: the rest was not read)" : "");
  return failed || read_error || skipped > 0 ? 1 : 0;
}

// JobConfig - volleyd's config from --config, or its defaults (no keys); nullopt
// (the error printed) when the file cannot be read or parsed.
std::optional<volley::engine::Config> JobConfig(const Options& o) {
  absl::StatusOr<volley::engine::Config> config =
      o.config.empty() ? volley::engine::ParseConfig("", "(defaults)")
                       : volley::engine::LoadConfigFile(o.config);
  if (!config.ok()) {
    std::fprintf(stderr, "volleyctl: config: %s\n", std::string(config.status().message()).c_str());
    return std::nullopt;
  }
  return *std::move(config);
}

// CheckCommand - check JOBFILE: 0 accepted, 1 refused, 2 usage or unreadable.
int CheckCommand(const Options& o) {
  if (o.args.size() != 2) return UsageError("check takes one JOBFILE");
  const std::string& path = o.args[1];
  std::optional<volley::engine::Config> config;
  if (!o.config.empty()) {
    config = JobConfig(o);
    if (!config) return 2;
  }
  auto report = volley::ctl::CheckFile(path, config ? &*config : nullptr, absl::Now(),
                                       [](const std::string& line) {
                                         Print(line + "\n");
                                       });
  if (!report.ok()) {
    std::fprintf(stderr, "%s\n", std::string(report.status().message()).c_str());
    return absl::IsInvalidArgument(report.status()) ? 1 : 2;
  }
  Print(volley::ctl::FormatCheckReport(path, *report));
  return 0;
}

// RenderCommand - render JOBFILE LINE.
int RenderCommand(const Options& o) {
  if (o.args.size() != 3) return UsageError("render takes JOBFILE LINE");
  uint64_t line = 0;
  if (!absl::SimpleAtoi(o.args[2], &line) || line == 0) {
    return UsageError("render: LINE \"" + o.args[2] + "\" is not a line number (from 1)");
  }
  std::optional<volley::engine::Config> config = JobConfig(o);
  if (!config) return 2;
  auto rendered = volley::ctl::RenderLine(o.args[1], line, *config, absl::Now());
  if (!rendered.ok()) {
    std::fprintf(stderr, "volleyctl: %s\n", std::string(rendered.status().message()).c_str());
    return absl::IsInvalidArgument(rendered.status()) ? 1 : 2;
  }
  std::fprintf(stderr, "volleyctl: envelope: MAIL FROM:<%s> RCPT TO:<%s>\n",
               rendered->mail_from.c_str(), rendered->rcpt.c_str());
  Print(rendered->message);
  return 0;
}

// SubmitCommand - submit: 0 submitted, 1 refused, 2 usage or unreadable.
int SubmitCommand(const Options& o) {
  if (o.args.size() != 1) return UsageError("submit takes options only (--recipients names the CSV)");
  if (o.from.empty() || o.template_path.empty() || o.recipients.empty()) {
    return UsageError("submit needs --from, --template and --recipients");
  }
  if (o.split.empty() && !o.spool.empty() && !o.config.empty()) {
    return UsageError("submit takes --spool or --config, not both");
  }
  volley::ctl::SubmitRequest req;
  req.from = o.from;
  req.template_path = o.template_path;
  req.recipients_path = o.recipients;
  req.job_id = o.job;
  req.send_after = o.send_after;
  req.address_column = o.address_column;
  req.strict = o.strict;
  if (!o.priority.empty()) {
    int priority = 0;
    if (!absl::SimpleAtoi(o.priority, &priority) || priority < 0 || priority > 9) {
      return UsageError("--priority: \"" + o.priority + "\" is not an integer 0..9");
    }
    req.priority = priority;
  }
  const bool split = !o.split.empty();
  if (split) {
    if (!absl::SimpleAtoi(o.split, &req.split) || req.split < 1 ||
        req.split > volley::ctl::kMaxSplit) {
      return UsageError("--split: \"" + o.split + "\" is not a number of parts 1.." +
                        std::to_string(volley::ctl::kMaxSplit));
    }
    if (!o.split_by.empty()) {
      auto by = volley::ctl::ParseSplitBy(o.split_by);
      if (!by.ok()) return UsageError(std::string(by.status().message()));
      req.split_by = *by;
    }
    if (o.out.empty() == o.spool.empty()) {
      return UsageError("--split needs the nodes' spools (--spool DIR1,DIR2,...) or --out DIR, "
                        "one of them");
    }
    req.out_dir = o.out;
    if (!o.spool.empty()) {
      req.spools = std::vector<std::string>(absl::StrSplit(o.spool, ','));
      if (req.spools.size() != static_cast<size_t>(req.split)) {
        return UsageError("--split " + o.split + " needs " + o.split + " spools in --spool, " +
                          std::to_string(req.spools.size()) + " given");
      }
    }
  } else if (!o.split_by.empty() || !o.out.empty()) {
    return UsageError("--split-by and --out are options of submit --split");
  }
  std::optional<volley::engine::Config> config;
  if (!o.config.empty()) {
    config = JobConfig(o);
    if (!config) return 2;
    req.spool = config->spool_dir;
  } else {
    req.spool = o.spool.empty() ? std::string(volley::ctl::kDefaultSpool) : o.spool;
  }
  auto result = volley::ctl::Submit(req, config ? &*config : nullptr, absl::Now(),
                                    [](const std::string& bad) {
                                      std::fprintf(stderr, "%s\n", bad.c_str());
                                    });
  if (!result.ok()) {
    const bool refused =
        absl::IsInvalidArgument(result.status()) || absl::IsAlreadyExists(result.status());
    std::fprintf(stderr, "volleyctl: submit: %s%s\n", refused ? "refused: " : "",
                 std::string(result.status().message()).c_str());
    return refused ? 1 : 2;
  }
  if (!split) {
    std::fprintf(stderr,
                 "volleyctl: submit: job \"%s\": %llu recipients, %llu bad rows left out; %s\n",
                 result->job_id.c_str(), static_cast<unsigned long long>(result->recipients),
                 static_cast<unsigned long long>(result->bad_rows), result->path.c_str());
    std::printf("%s\n", result->job_id.c_str());
    return 0;
  }
  std::fprintf(stderr, "volleyctl: submit: %llu recipients in %d parts by %s, %llu bad rows left out\n",
               static_cast<unsigned long long>(result->recipients), req.split,
               std::string(volley::ctl::SplitByName(req.split_by)).c_str(),
               static_cast<unsigned long long>(result->bad_rows));
  for (const volley::ctl::SubmitPart& p : result->parts) {
    std::fprintf(stderr, "volleyctl: submit: job \"%s\": %llu recipients; %s\n", p.job_id.c_str(),
                 static_cast<unsigned long long>(p.recipients),
                 p.path.empty() ? "none: not written" : p.path.c_str());
    if (!p.path.empty()) std::printf("%s\n", p.job_id.c_str());
  }
  return 0;
}

}  // namespace

// DkimCommand - dkim keygen, dkim record FILE.
int DkimCommand(const Options& o) {
  using volley::ctl::CheckDkimName;
  const std::string sub = o.args.size() > 1 ? o.args[1] : "";
  if (sub != "keygen" && sub != "record") return UsageError("dkim takes: keygen, or record FILE");
  if (sub == "keygen" ? o.args.size() != 2 : o.args.size() != 3) {
    return UsageError(sub == "keygen" ? "dkim keygen takes options only (--out names the file)"
                                      : "dkim record takes one FILE");
  }
  std::string domain, selector;
  if (!o.domain.empty() || !o.selector.empty() || sub == "keygen") {
    if (o.domain.empty() || o.selector.empty()) {
      return UsageError(sub == "keygen" ? "dkim keygen needs --domain and --selector"
                                        : "dkim record takes --domain and --selector together");
    }
    auto d = CheckDkimName("--domain", o.domain);
    auto s = CheckDkimName("--selector", o.selector);
    if (!d.ok() || !s.ok()) {
      return UsageError(std::string((d.ok() ? s.status() : d.status()).message()));
    }
    domain = *d;
    selector = *s;
    if (selector.size() + domain.size() + std::string_view("._domainkey.").size() > 253) {
      return UsageError("--selector and --domain make a name longer than 253 octets");
    }
  }

  if (sub == "record") {
    if (!o.algorithm.empty() || !o.bits.empty() || !o.out.empty()) {
      return UsageError("dkim record takes only --domain and --selector");
    }
    std::vector<std::string> warnings;
    auto key = volley::dkim::PrivateKey::LoadFile(o.args[2], &warnings);
    for (const std::string& w : warnings)
      std::fprintf(stderr, "volleyctl: warning: %s\n", w.c_str());
    if (!key.ok()) return Fail(std::string(key.status().message()));
    Print(volley::ctl::FormatDkimKey(
        volley::ctl::DescribeDkimKey(*key, o.args[2], selector, domain), o.json));
    return 0;
  }

  if (o.algorithm.empty()) return UsageError("dkim keygen needs --algorithm rsa or ed25519");
  if (o.out.empty()) return UsageError("dkim keygen needs --out FILE");
  auto algorithm = volley::ctl::ParseDkimAlgorithm(o.algorithm);
  if (!algorithm.ok()) return UsageError(std::string(algorithm.status().message()));
  int bits = 2048;
  if (!o.bits.empty()) {
    if (*algorithm != volley::dkim::Algorithm::kRsaSha256) {
      return UsageError("--bits is for rsa keys only (an Ed25519 key has no size to choose)");
    }
    if (!absl::SimpleAtoi(o.bits, &bits) || bits < 1024 || bits > 8192) {
      return UsageError("--bits: \"" + o.bits + "\" is not a number from 1024 to 8192");
    }
  }
  // Before the (slow, for RSA) generation; WriteNewKeyFile checks again, safely.
  if (::access(o.out.c_str(), F_OK) == 0) {
    return Fail(o.out + ": exists; not overwritten (a key in use would be lost)");
  }
  auto key = volley::dkim::PrivateKey::Generate(*algorithm, bits);
  if (!key.ok()) return Fail(std::string(key.status().message()));
  if (absl::Status st = volley::ctl::WriteNewKeyFile(o.out, key->ToPem()); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  if (*algorithm == volley::dkim::Algorithm::kRsaSha256 && bits < 2048) {
    std::fprintf(stderr, "volleyctl: warning: a %d-bit RSA key: RFC 8301 asks for 2048 or more\n",
                 bits);
  }
  Print(volley::ctl::FormatDkimKey(volley::ctl::DescribeDkimKey(*key, o.out, selector, domain),
                                   o.json));
  return 0;
}

int main(int argc, char** argv) {
  Options o;
  // Options and arguments in any order, as before: the command and its
  // arguments are positional, and every option belongs to the whole program
  // (the dkim ones are refused below for other commands).
  CLI::App app{"volleyctl: job control for a running volleyd, and the operator's key tools "
               "(docs/volleyctl.md)",
               "volleyctl"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--admin", o.admin, "volleyd's admin API (wins over --config)")
      ->type_name("HOST:PORT");
  app.add_option("--config", o.config, "volleyd's config: [admin] listen, [[token_key]], paths")
      ->type_name("FILE");
  app.add_flag("--json", o.json, "print JSON as it came (verp, dkim: an object of their own)");
  // dkim's own options, given with a dkim command only.
  // --out is also submit's (--split's folder).
  const char* const kDkimOptions[] = {"--domain", "--selector", "--algorithm", "--bits", "--out"};
  app.add_option("--domain", o.domain, "dkim: d=, the signing domain")->type_name("D");
  app.add_option("--selector", o.selector, "dkim: s=, the selector")->type_name("S");
  app.add_option("--algorithm", o.algorithm, "dkim keygen: rsa or ed25519")->type_name("ALG");
  app.add_option("--bits", o.bits, "dkim keygen: RSA key size, 1024..8192 (2048)")->type_name("N");
  app.add_option("--out", o.out, "dkim keygen: the new key's file; submit --split: the folder")
      ->type_name("FILE");
  // suppress's own options, given with a suppress command only.
  const char* const kSuppressOptions[] = {"--reason", "--scope", "--expires", "--source",
                                          "--from-domain"};
  app.add_option("--reason", o.reason,
                 "suppress add/import: hard_bounce, soft_bounce, complaint, unsubscribe, manual; "
                 "suspend: free text")
      ->type_name("R");
  app.add_option("--scope", o.scope, "suppress: the From domain an entry is for (global if none)")
      ->type_name("DOMAIN");
  app.add_option("--expires", o.expires, "suppress add/import: \"30d\" or an RFC 3339 time")
      ->type_name("WHEN");
  app.add_option("--source", o.source, "suppress add: where the entry comes from (volleyctl)")
      ->type_name("TEXT");
  app.add_option("--from-domain", o.from_domain, "suppress check: the From domain of the mail")
      ->type_name("DOMAIN");
  // submit's own options, given with submit only.
  const char* const kSubmitOptions[] = {"--from",       "--template", "--recipients",
                                        "--job",        "--send-after", "--priority",
                                        "--address-column", "--spool", "--strict",
                                        "--split", "--split-by"};
  app.add_option("--from", o.from, "submit: the envelope sender (the job's from)")
      ->type_name("ADDR");
  app.add_option("--template", o.template_path, "submit: the message, with {{var}} placeholders")
      ->type_name("FILE");
  app.add_option("--recipients", o.recipients, "submit: the CSV list (header row: variables)")
      ->type_name("FILE");
  app.add_option("--job", o.job,
                 "submit: the job id (default: time, list name, random); retry, queue, trace: the job")
      ->type_name("ID");
  app.add_option("--send-after", o.send_after, "submit: not before this RFC 3339 time")
      ->type_name("T");
  app.add_option("--priority", o.priority, "submit: 0..9 (5); 9 goes first")->type_name("N");
  app.add_option("--address-column", o.address_column,
                 "submit: the CSV column of addresses (email or address)")
      ->type_name("NAME");
  app.add_option("--spool", o.spool, "submit: volleyd's spool (or [paths] spool of --config)")
      ->type_name("DIR");
  app.add_flag("--strict", o.strict, "submit: any bad row refuses the whole file");
  app.add_option("--split", o.split, "submit: N jobs, one per cluster node")->type_name("N");
  app.add_option("--split-by", o.split_by, "submit --split: recipient (round robin) or domain")
      ->type_name("HOW");
  // suspend's and retry's own options.
  app.add_option("--for", o.for_duration, "suspend: how long, \"2h\" (1h; at most 7d)")
      ->type_name("DURATION");
  app.add_flag("--all", o.all, "destinations: every destination, not only the busy and troubled");
  app.add_flag("--watch", o.watch, "status: redraw every 2 s");
  app.add_option("command", o.args, "jobs | job ID | pause ID | resume ID | cancel ID | "
                                    "verp decode ADDRESS | dkim keygen | dkim record FILE | "
                                    "suppress add|remove|check|list|export|import | "
                                    "suspend DOMAIN | unsuspend DOMAIN | retry DOMAIN | "
                                    "check JOBFILE | render JOBFILE LINE | submit")
      ->type_name("COMMAND [ARG...]");
  volley::base::AddVersionFlag(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::CallForHelp&) {
    Usage(stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    return UsageError(e.what());
  }
  if (o.args.empty()) return Usage(stderr);
  const std::string& command = o.args[0];
  if (command != "dkim") {
    for (const char* name : kDkimOptions) {
      if (command == "submit" && std::string_view(name) == "--out") continue;
      // queue takes --domain too (status.h).
      if (command == "queue" && std::string_view(name) == "--domain") continue;
      if (app.count(name) > 0) {
        return UsageError(std::string(name) + " is an option of the dkim commands only");
      }
    }
  }
  o.for_given = app.count("--for") > 0;
  if (command != "suspend" && o.for_given) {
    return UsageError("--for is an option of suspend only");
  }
  const bool takes_job =
      command == "retry" || command == "submit" || command == "queue" || command == "trace";
  if (!takes_job && app.count("--job") > 0) {
    return UsageError("--job is an option of retry, submit, queue and trace only");
  }
  if (command != "suppress") {
    for (const char* name : kSuppressOptions) {
      // suspend takes a --reason too: free text, kept with the suspension.
      if (command == "suspend" && std::string_view(name) == "--reason") continue;
      if (app.count(name) > 0) {
        return UsageError(std::string(name) + " is an option of the suppress commands only");
      }
    }
  }
  if (command != "submit") {
    for (const char* name : kSubmitOptions) {
      if (takes_job && std::string_view(name) == "--job") continue;
      if (app.count(name) > 0) {
        return UsageError(std::string(name) + " is an option of submit only");
      }
    }
  }
  if (command == "jobs" || command == "job" || command == "pause" || command == "resume" ||
      command == "cancel") {
    return JobCommand(o);
  }
  if (command == "suspend" || command == "unsuspend" || command == "retry") {
    return DestinationCommand(o);
  }
  const bool read_side = command == "status" || command == "destinations" ||
                         command == "queue" || command == "trace";
  if (!read_side && (o.all || o.watch)) {
    return UsageError("--all and --watch are options of status and destinations");
  }
  if (command == "status" || command == "destinations" || command == "queue") {
    return ReadCommand(o);
  }
  if (command == "trace") return TraceCommand(o);
  if (command == "verp") return VerpCommand(o);
  if (command == "dkim") return DkimCommand(o);
  if (command == "suppress") return SuppressCommand(o);
  if (command == "check") return CheckCommand(o);
  if (command == "render") return RenderCommand(o);
  if (command == "submit") return SubmitCommand(o);
  std::fprintf(stderr, "volleyctl: unknown command \"%s\"\n", command.c_str());
  return Usage(stderr);
}
