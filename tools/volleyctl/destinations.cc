// destinations.cc - volleyctl suspend, unsuspend, retry (destinations.h)
#include "tools/volleyctl/destinations.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/json.h"
#include "base/strings.h"
#include "simdjson.h"

namespace volley::ctl {
namespace {

namespace dom = simdjson::dom;

absl::Status BadAnswer(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("volleyd's answer: ", base::Sv(why)));
}

std::string Field(dom::object& o, std::string_view name) {
  std::string_view s;
  if (o[name].get_string().get(s) != simdjson::SUCCESS) return "";
  return std::string(s);
}

uint64_t Number(dom::object& o, std::string_view name) {
  uint64_t n = 0;
  if (o[name].get_uint64().get(n) != simdjson::SUCCESS) return 0;
  return n;
}

bool Flag(dom::object& o, std::string_view name) {
  bool b = false;
  if (o[name].get_bool().get(b) != simdjson::SUCCESS) return false;
  return b;
}

// Printable - control characters shown as '?': the reason is an operator's
// text, but it is printed on a terminal.
std::string Printable(std::string s) {
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return s;
}

}  // namespace

std::string DestinationPath(std::string_view domain, std::string_view suffix) {
  std::string path = "/destinations/";
  for (char c : domain) {
    const auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u < 0x7f && c != '/' && c != '%' && c != '?' && c != '#') {
      path.push_back(c);
    } else {
      absl::StrAppend(&path, "%", absl::Hex(u, absl::kZeroPad2));
    }
  }
  path.append(suffix);
  return path;
}

absl::StatusOr<std::string> SuspendBody(std::string_view for_duration, std::string_view reason,
                                        bool for_given) {
  if (for_given && for_duration.empty()) {
    return absl::InvalidArgumentError("--for: empty (a duration such as 2h or 30m)");
  }
  std::string body = "{";
  if (for_given) {
    body += "\"for\":";
    base::AppendJsonString(&body, for_duration);
  }
  if (!reason.empty()) {
    if (body.size() > 1) body += ",";
    body += "\"reason\":";
    base::AppendJsonString(&body, reason);
  }
  body += "}";
  return body;
}

absl::StatusOr<std::string> FormatSuspended(std::string_view body) {
  dom::parser parser;
  dom::object o;
  if (parser.parse(body.data(), body.size()).get_object().get(o) != simdjson::SUCCESS) {
    return BadAnswer("not a JSON object");
  }
  const std::string name = Field(o, "name");
  if (name.empty()) return BadAnswer("no \"name\"");
  return absl::StrCat(Printable(name), " suspended until ", Printable(Field(o, "suspended_until")),
                      " (by ", Printable(Field(o, "suspended_by")), "): ",
                      Printable(Field(o, "suspension_reason")), "\n");
}

absl::StatusOr<std::string> FormatReleased(std::string_view body) {
  dom::parser parser;
  dom::object o;
  if (parser.parse(body.data(), body.size()).get_object().get(o) != simdjson::SUCCESS) {
    return BadAnswer("not a JSON object");
  }
  std::string out = absl::StrCat(Printable(Field(o, "name")), " unsuspended: ",
                                 Number(o, "released"), " recipients released");
  if (Number(o, "shards_answered") < Number(o, "shards")) {
    absl::StrAppend(&out, " (", Number(o, "shards_answered"), " of ", Number(o, "shards"),
                    " shards answered in time; the rest go when their suspension time ends)");
  }
  return out + "\n";
}

absl::StatusOr<std::string> FormatMadeDue(std::string_view body) {
  dom::parser parser;
  dom::object o;
  if (parser.parse(body.data(), body.size()).get_object().get(o) != simdjson::SUCCESS) {
    return BadAnswer("not a JSON object");
  }
  std::string out =
      absl::StrCat(Number(o, "made_due"), " deferred recipients made due now");
  if (Number(o, "shards_answered") < Number(o, "shards")) {
    absl::StrAppend(&out, " (", Number(o, "shards_answered"), " of ", Number(o, "shards"),
                    " shards answered in time)");
  }
  if (Flag(o, "more")) absl::StrAppend(&out, " (more are queued: run it again)");
  return out + "\n";
}

}  // namespace volley::ctl
