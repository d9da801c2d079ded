// NAME
//   volley-sink - an SMTP server that accepts and discards mail
//
// SYNOPSIS
//   volley-sink [--listen HOST:PORT ...] [--stats FILE] [--hostname NAME]
//               [--record FILE] [--max-recipients N]
//
// DESCRIPTION
//   volley-sink answers SMTP (with PIPELINING and CHUNKING) on each --listen
//   address and throws every message away, counting it. It is for tests, demos and
//   benchmarks. Once listening it prints "volley-sink: listening on ADDR" to stderr
//   for each address (with the real port when PORT is 0). On SIGTERM or SIGINT it
//   writes its counters as JSON to stdout (and to --stats) and exits 0.
//
// OPTIONS
//   --listen HOST:PORT (127.0.0.1:2525)
//       Address to listen on; repeat for more. HOST is an IPv4 literal, localhost or
//       a bracketed IPv6 literal.
//   --stats FILE (none)
//       Rewrite FILE with the counters every second and at exit, through FILE.tmp
//       and rename: {"sessions","messages","recipients","bytes","connections",
//       "peak_connections","listeners":[{"listen","sessions","peak_connections"}]}.
//   --hostname NAME (the machine's host name)
//       Name in the 220 greeting and the EHLO reply.
//   --record FILE (none)
//       Append one JSON line per accepted message: {"from","rcpts":[...],"bytes"}.
//       Written at least every second and at exit.
//   --max-recipients N (1000)
//       Recipients per transaction; RCPT past N gets 452 4.5.3 (too many
//       recipients), as real servers answer. 1..100000.
//
// DIAGNOSTICS
//   Exit status 0 after a signal, 1 on a runtime failure, 2 on bad usage.
//
// SEE ALSO
//   tools/sink/sink.h, tools/sink/session.h
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "tools/sink/sink.h"

namespace {

constexpr char kUsage[] =
    "usage: volley-sink [--listen HOST:PORT ...] [--stats FILE] [--hostname NAME] "
    "[--record FILE] [--max-recipients N]\n";

// RaiseFileLimit - allow as many descriptors as the hard limit: thousands of
// connections need more than the usual soft limit of 1024.
void RaiseFileLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  volley::sink::ServerOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::string_view name = arg;
    std::string value;
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) == "--" && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "volley-sink: %s needs a value\n%s", argv[i], kUsage);
      return 2;
    }
    if (name == "--listen") {
      options.listen.push_back(value);
    } else if (name == "--stats") {
      options.stats_path = value;
    } else if (name == "--hostname") {
      options.session.hostname = value;
    } else if (name == "--record") {
      options.record_path = value;
    } else if (name == "--max-recipients") {
      char* end = nullptr;
      const unsigned long n = std::strtoul(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 1 || n > 100000) {
        std::fprintf(stderr, "volley-sink: --max-recipients must be 1..100000, not \"%s\"\n",
                     value.c_str());
        return 2;
      }
      options.session.max_recipients = n;
    } else {
      std::fprintf(stderr, "volley-sink: unknown option %.*s\n%s",
                   static_cast<int>(name.size()), name.data(), kUsage);
      return 2;
    }
  }

  signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();

  auto server = volley::sink::Server::Create(std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "volley-sink: %s\n", server.status().ToString().c_str());
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  for (const std::string& address : (*server)->listening()) {
    std::fprintf(stderr, "volley-sink: listening on %s\n", address.c_str());
  }
  std::fflush(stderr);

  const absl::Status status = (*server)->Run();
  std::printf("%s\n", volley::sink::StatsJson((*server)->stats()).c_str());
  std::fflush(stdout);
  if (!status.ok()) {
    std::fprintf(stderr, "volley-sink: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
