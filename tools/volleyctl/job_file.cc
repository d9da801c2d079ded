#include "tools/volleyctl/job_file.h"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/compose.h"
#include "engine/smtp/client.h"
#include "queue/job_lines.h"

namespace volley::ctl {
namespace {

// Keys - the config's credentials, with the key files' warnings dropped: volleyd
// prints them at start; a check is no place to repeat them.
absl::StatusOr<engine::Credentials> Keys(const engine::Config& config) {
  std::vector<std::string> warnings;
  return engine::Credentials::Load(config, &warnings);
}

}  // namespace

absl::StatusOr<CheckReport> CheckFile(const std::string& path, const engine::Config* config,
                                      absl::Time now,
                                      const std::function<void(const std::string&)>& on_rejected) {
  std::optional<engine::Credentials> keys;
  queue::HeaderCheck header_check;
  if (config != nullptr) {
    ASSIGN_OR_RETURN(keys, Keys(*config));
    header_check = [&keys](const queue::JobHeader& h, const queue::Template& t) {
      return keys->CheckJob(h, t);
    };
  }
  CheckReport report;
  ASSIGN_OR_RETURN(report.file,
                   queue::CheckJobFile(
                       path, path, queue::JobLimits{}, now,
                       [&](const queue::RejectedLine& r) {
                         if (on_rejected) {
                           on_rejected(
                               absl::StrCat(path, ":", r.line, ": rejected: ", base::Sv(r.reason)));
                         }
                       },
                       header_check));
  return report;
}

std::string FormatCheckReport(const std::string& path, const CheckReport& report) {
  const queue::JobFileReport& f = report.file;
  std::string out = absl::StrCat(path, ": job \"", f.job, "\" would be accepted: ", f.accepted,
                                 " recipients, ", f.rejected, " rejected");
  if (!f.lacking.empty()) {
    // Every variable: an operator checking a file wants the whole list.
    absl::StrAppend(&out, "; lacking variables: ", queue::FormatLacking(f.lacking, f.lacking.size()));
  }
  out.push_back('\n');
  return out;
}

absl::StatusOr<RenderedRecipient> RenderLine(const std::string& path, uint64_t line,
                                             const engine::Config& config, absl::Time now) {
  const queue::JobLimits limits;
  auto at = [&](uint64_t n, std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", base::Sv(why)));
  };
  if (line < 2) return at(1, "line 1 is the job header, not a recipient");
  if (line > UINT32_MAX) return absl::NotFoundError(absl::StrCat(path, ": has no line ", line));
  ASSIGN_OR_RETURN(std::unique_ptr<queue::JobFileLines> lines, queue::JobFileLines::Open(path));
  ASSIGN_OR_RETURN(const std::string header_line, lines->Line(1, limits.max_header_line));
  absl::StatusOr<queue::JobFileCheck> check = queue::JobFileCheck::Start(header_line, limits);
  if (!check.ok()) return at(1, base::StdSv(check.status().message()));
  ASSIGN_OR_RETURN(engine::Credentials keys, Keys(config));
  if (absl::Status bad = keys.CheckJob(check->header(), check->tpl()); !bad.ok()) {
    return at(1, base::StdSv(bad.message()));
  }
  ASSIGN_OR_RETURN(const std::string text,
                   lines->Line(static_cast<uint32_t>(line), limits.max_recipient_line));
  if (text.empty()) return at(line, "a blank line: intake skips it");
  absl::StatusOr<queue::Recipient> rcpt = check->CheckRecipient(text);
  if (!rcpt.ok()) return at(line, base::StdSv(rcpt.status().message()));

  engine::Composer composer(keys);
  // The job number is intake's to give; 0 stands for it here (see DESCRIPTION).
  std::unique_ptr<engine::JobPlan> plan = composer.Plan(check->header(), check->tpl(), 0);
  smtp::Capabilities caps;
  caps.esmtp = true;
  caps.eight_bit_mime = true;
  caps.smtputf8 = true;
  smtp::Envelope env;
  env.rcpts = {rcpt->to};
  composer.Compose(*plan, check->header(), check->tpl(), *rcpt, static_cast<uint32_t>(line), now,
                   caps, &env);
  RenderedRecipient out;
  out.mail_from = std::move(env.mail_from);
  out.rcpt = rcpt->to;
  out.message = std::move(env.content);
  return out;
}

}  // namespace volley::ctl
