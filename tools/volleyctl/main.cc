// volleyctl - job control for a running volleyd
//
// SYNOPSIS
//   volleyctl [--admin HOST:PORT | --config FILE] [--json] COMMAND [ID]
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
//
//   --json prints volleyd's JSON answer as it came.
//
// EXIT STATUS
//   0 done; 1 volleyd refused the request (its error is printed) or could not be
//   reached; 2 usage error (unknown command or option, missing ID, unreadable
//   --config). docs/volleyctl.md has the details and the HTTP API.
#include <cstdio>
#include <string>
#include <vector>

#include "tools/volleyctl/ctl.h"

namespace {

int Usage(FILE* out) {
  std::fprintf(out,
               "usage: volleyctl [--admin HOST:PORT | --config FILE] [--json] COMMAND\n"
               "commands:\n"
               "  jobs          list every job with its counters\n"
               "  job ID        show one job\n"
               "  pause ID      pause a job (it stays queued)\n"
               "  resume ID     resume a paused job\n"
               "  cancel ID     cancel a job: its remaining recipients are logged as cancelled\n"
               "default admin address: %s ([admin] listen in volleyd's config)\n",
               volley::ctl::kDefaultAdmin);
  return 2;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "volleyctl: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string admin;
  std::string config;
  bool json = false;
  std::vector<std::string> args;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name, std::string* out) {
      if (arg == name && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      if (arg.rfind(name + "=", 0) == 0) {
        *out = arg.substr(name.size() + 1);
        return true;
      }
      return false;
    };
    if (options_done || arg.empty() || arg[0] != '-') {
      args.push_back(arg);
    } else if (arg == "--") {
      options_done = true;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else if (value("--admin", &admin) || value("--config", &config)) {
    } else {
      std::fprintf(stderr, "volleyctl: unknown option \"%s\"\n", arg.c_str());
      return Usage(stderr);
    }
  }
  if (args.empty()) return Usage(stderr);
  const std::string& command = args[0];
  const bool needs_id = command == "job" || command == "pause" || command == "resume" ||
                        command == "cancel";
  if (command != "jobs" && !needs_id) {
    std::fprintf(stderr, "volleyctl: unknown command \"%s\"\n", command.c_str());
    return Usage(stderr);
  }
  if (args.size() != (needs_id ? 2u : 1u)) {
    std::fprintf(stderr, "volleyctl: %s takes %s\n", command.c_str(),
                 needs_id ? "one job ID" : "no argument");
    return Usage(stderr);
  }
  if (admin.empty() && !config.empty()) {
    auto from_config = volley::ctl::AdminFromConfig(config);
    if (!from_config.ok()) {
      std::fprintf(stderr, "volleyctl: config: %s\n",
                   std::string(from_config.status().message()).c_str());
      return 2;
    }
    admin = *from_config;
  }
  if (admin.empty()) admin = volley::ctl::kDefaultAdmin;

  std::string method = "GET";
  std::string path = "/jobs";
  if (needs_id) {
    method = command == "job" ? "GET" : "POST";
    path = volley::ctl::JobPath(args[1], command == "job" ? "" : "/" + command);
  }
  auto response = volley::ctl::Call(admin, method, path, volley::ctl::kCallTimeout);
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kInvalidArgument) {
      std::fprintf(stderr, "volleyctl: %s\n", std::string(response.status().message()).c_str());
      return 2;
    }
    return Fail(std::string(response.status().message()));
  }
  if (response->status != 200) {
    return Fail("volleyd: " + volley::ctl::ErrorText(response->body));
  }
  if (json) {
    std::fwrite(response->body.data(), 1, response->body.size(), stdout);
    if (!response->body.empty() && response->body.back() != '\n') std::fputc('\n', stdout);
    return 0;
  }
  auto text = command == "jobs" ? volley::ctl::FormatJobsTable(response->body)
                                : volley::ctl::FormatJob(response->body);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}
