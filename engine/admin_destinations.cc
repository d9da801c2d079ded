// admin_destinations.cc - the admin API's suspend, unsuspend and retry endpoints (admin.h)
//
// What they change lives in engine/destination_control.h; this file reads the
// request (hostile: bounded, every field checked) and writes the answer.
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/admin.h"
#include "engine/config.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

namespace dom = simdjson::dom;

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string ErrorJson(std::string_view message) {
  std::string body = "{\"error\":";
  base::AppendJsonString(&body, message);
  body += "}\n";
  return body;
}

std::string CountJson(std::string_view field, const RetryResult& r) {
  return absl::StrCat("{\"", base::Sv(field), "\":", r.made_due, ",\"shards\":", r.shards,
                      ",\"shards_answered\":", r.shards_answered,
                      ",\"more\":", r.more ? "true" : "false");
}

}  // namespace

absl::StatusOr<std::string> AdminDomain(std::string_view domain) {
  return NormalizeDomain(domain);
}

bool IsAdminSuspendTarget(std::string_view method, std::string_view target) {
  constexpr std::string_view kPrefix = "/destinations/";
  constexpr std::string_view kSuffix = "/suspend";
  return method == "POST" && target.size() > kPrefix.size() + kSuffix.size() &&
         target.starts_with(kPrefix) && target.ends_with(kSuffix);
}

absl::StatusOr<AdminSuspendBody> ParseAdminSuspendBody(std::string_view body) {
  AdminSuspendBody out;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return out;
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("body: not JSON");
  }
  dom::object object;
  if (doc.get_object().get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("body: must be a JSON object");
  }
  for (auto field : object) {
    const std::string_view key = field.key;
    std::string_view text;
    if (field.value.get_string().get(text) != simdjson::SUCCESS) {
      std::string shown;
      base::AppendJsonString(&shown, key.substr(0, 64));
      return absl::InvalidArgumentError(absl::StrCat(shown, ": must be a string"));
    }
    if (key == "for") {
      absl::StatusOr<absl::Duration> d = ParseDuration(text);
      if (!d.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("for: not a duration such as \"2h\" or \"30m\": ", d.status().message()));
      }
      out.duration = *d;
    } else if (key == "reason") {
      out.reason = std::string(text);
    } else {
      std::string shown;
      base::AppendJsonString(&shown, key.substr(0, 64));
      return absl::InvalidArgumentError(absl::StrCat("unknown field ", shown));
    }
  }
  return out;
}

std::string AdminSuspensionJson(const Suspension& s) {
  std::string out = "{\"name\":";
  base::AppendJsonString(&out, s.domain);
  out += ",\"state\":\"suspended\",\"suspended\":true,\"suspended_until\":";
  base::AppendJsonString(&out, Rfc3339(s.until));
  out += ",\"suspended_since\":";
  base::AppendJsonString(&out, Rfc3339(s.since));
  out += ",\"suspension_reason\":";
  base::AppendJsonString(&out, s.reason);
  out += ",\"suspended_by\":";
  base::AppendJsonString(&out, s.by);
  out += "}";
  return out;
}

http::Response AdminServer::HandleDestinationControl(const AdminRequest& req,
                                                     std::string_view body) {
  auto answer = [](int status, std::string text) {
    return http::Response{status, "application/json", std::move(text), {}};
  };
  auto error = [&](const absl::Status& st) {
    // DeadlineExceeded: the shards did not answer (stopping, or stuck).
    const int status = st.code() == absl::StatusCode::kDeadlineExceeded ? 503
                       : st.code() == absl::StatusCode::kResourceExhausted ? 503
                                                                            : AdminHttpStatus(st);
    if (status >= 500) base::LogInfo("admin API: %s", base::StdSv(st.message()));
    return answer(status, ErrorJson(base::StdSv(st.message())));
  };
  if (control_ == nullptr) return error(absl::InternalError("no destination control"));
  const absl::Time now = absl::Now();
  using Action = AdminRequest::Action;
  switch (req.action) {
    case Action::kSuspend: {
      absl::StatusOr<AdminSuspendBody> asked = ParseAdminSuspendBody(body);
      if (!asked.ok()) return error(asked.status());
      absl::StatusOr<Suspension> s =
          control_->Suspend(req.domain, asked->duration, asked->reason, "volleyctl", now);
      if (!s.ok()) return error(s.status());
      return answer(200, AdminSuspensionJson(*s) + "\n");
    }
    case Action::kUnsuspend: {
      absl::StatusOr<RetryResult> r = control_->Unsuspend(req.domain, "volleyctl", now);
      if (!r.ok()) return error(r.status());
      std::string out = "{\"name\":";
      base::AppendJsonString(&out, req.domain);
      out += ",\"suspended\":false,";
      out += CountJson("released", *r).substr(1);
      return answer(200, out + "}\n");
    }
    case Action::kRetryDomain:
    case Action::kRetryJob: {
      ShardCommand command;
      if (req.action == Action::kRetryDomain) {
        command.kind = ShardCommand::Kind::kRetryDomain;
        command.target = req.domain;
      } else {
        absl::StatusOr<std::optional<queue::JobRecord>> job = queue_->FindJob(req.job_id);
        if (!job.ok()) return error(job.status());
        if (!job->has_value()) {
          return error(absl::NotFoundError(absl::StrCat("no such job: ", base::Sv(req.job_id))));
        }
        command.kind = ShardCommand::Kind::kRetryJob;
        command.target = req.job_id;
      }
      absl::StatusOr<RetryResult> r = control_->Retry(std::move(command));
      if (!r.ok()) return error(r.status());
      if (req.action == Action::kRetryDomain) {
        base::LogInfo("destination %s: %d deferred recipients made due now (volleyctl retry)",
                      req.domain, r->made_due);
      } else {
        base::LogInfo("job \"%s\": %d deferred recipients made due now (volleyctl retry)",
                      req.job_id, r->made_due);
      }
      return answer(200, CountJson("made_due", *r) + "}\n");
    }
    default:
      return error(absl::InternalError("not a destination control request"));
  }
}

}  // namespace volley::engine
