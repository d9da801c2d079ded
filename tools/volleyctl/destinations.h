// NAME
//   destinations.h - volleyctl suspend, unsuspend, retry: requests and what they print
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(std::string body, SuspendBody("2h", "blocklisted"));
//   Call(admin, "POST", DestinationPath("example.test", "/suspend"), kCallTimeout, body);
//   ASSIGN_OR_RETURN(std::string text, FormatSuspended(answer.body));
//
// DESCRIPTION
//   volleyctl's side of volleyd's /destinations/D/{suspend,unsuspend,retry}
//   and /jobs/ID/retry (engine/admin.h, docs/volleyctl.md): pure, so the unit
//   tests reach it without a daemon.
//
//     suspend      "example.test suspended until 2026-12-07T02:10:00Z (by volleyctl): REASON"
//     unsuspend    "example.test unsuspended: 12 recipients released"
//     retry        "40 deferred recipients made due now"
//
// BOUNDS
//   The duration and reason go to volleyd as they are: volleyd checks them
//   (engine/destination_control.h: 1s..7d, a reason of 256 octets at most).
//
// DIAGNOSTICS
//   SuspendBody: InvalidArgument for an empty --for. The Format functions:
//   InvalidArgument "volleyd's answer: ..." when the answer is not the JSON
//   volleyd sends.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_DESTINATIONS_H_
#define VOLLEY_TOOLS_VOLLEYCTL_DESTINATIONS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace volley::ctl {

// DestinationPath - "/destinations/D" plus `suffix`, D percent-encoded where
// it is not safe in a request line (volleyd then refuses it, 400).
std::string DestinationPath(std::string_view domain, std::string_view suffix);
// SuspendBody - the JSON body of a suspend: {"for":..,"reason":..}, each only
// when given.
absl::StatusOr<std::string> SuspendBody(std::string_view for_duration, std::string_view reason,
                                        bool for_given);
absl::StatusOr<std::string> FormatSuspended(std::string_view body);
absl::StatusOr<std::string> FormatReleased(std::string_view body);
// FormatMadeDue - `what`: "example.test" or "job J".
absl::StatusOr<std::string> FormatMadeDue(std::string_view body);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_DESTINATIONS_H_
