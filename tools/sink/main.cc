// NAME
//   volley-sink - an SMTP server that accepts and discards mail
//
// SYNOPSIS
//   volley-sink [--listen HOST:PORT ...] [--threads N] [--http HOST:PORT]
//               [--stats FILE] [--hostname NAME] [--record FILE]
//               [--max-recipients N] [--profiles FILE] [--seed N]
//               [--tls-cert-out FILE] [--buffer-ring on|off]
//
// DESCRIPTION
//   volley-sink answers SMTP (with PIPELINING and CHUNKING) on each --listen
//   address and throws every message away, counting it. It is for tests, demos and
//   benchmarks. With --profiles it misbehaves on purpose, per listener or per
//   recipient domain, so that an SMTP client can be shown correct against broken
//   servers (see FAULT PROFILES). Once listening it prints "volley-sink: listening
//   on ADDR" to stderr for each address (with the real port when PORT is 0), and
//   "volley-sink: stats on http://ADDR/stats" for --http. On SIGTERM or SIGINT
//   it writes its counters as JSON to stdout (and to --stats) and exits 0.
//
// OPTIONS
//   --listen HOST:PORT (127.0.0.1:2525)
//       Address to listen on; repeat for more. HOST is an IPv4 literal, localhost or
//       a bracketed IPv6 literal, or a range of IPv4 addresses on one port:
//       127.0.1.1-127.0.1.250:2525 or 127.0.1.1-250:2525 (at most 65536; on
//       Linux all of 127.0.0.0/8 is local). PORT 0 picks a free port, one for
//       all the addresses of a range.
//   --threads N (1)
//       Shards: N threads, each with its own io_uring and its own copy of every
//       listening socket (SO_REUSEPORT: the kernel spreads connections over
//       them). 0: one per CPU. At most 256.
//   --http HOST:PORT (none)
//       Serve GET /stats there: the --stats JSON, live. HOST is explicit (use a
//       loopback address: there is no authentication); PORT 0 picks one.
//   --stats FILE (none)
//       Rewrite FILE with the counters every second and at exit, through FILE.tmp
//       and rename: {"sessions","messages","recipients","bytes","connections",
//       "peak_connections","rejects","tls_sessions","tls_resumed","sessions_without_quit",
//       "listeners":[{"listen","sessions","peak_connections","connections",
//       "messages","recipients"}]}.
//       rejects counts 4xx and 5xx replies to MAIL, RCPT, DATA, BDAT and the end
//       of data; tls_sessions, completed TLS handshakes (tls_resumed of them
//       resumed from a ticket the sink issued); sessions_without_quit,
//       connections closed before the client sent QUIT; a listener's messages
//       and recipients, those accepted on connections to that address.
//   --hostname NAME (the machine's host name)
//       Name in the 220 greeting and the EHLO reply, and of the STARTTLS
//       certificate.
//   --record FILE (none)
//       Append one JSON line per accepted message: {"from","rcpts":[...],"bytes"}.
//       Written at least every second and at exit.
//   --max-recipients N (1000)
//       Recipients per transaction; RCPT past N gets 452 4.5.3 (too many
//       recipients), as real servers answer. 1..100000.
//   --profiles FILE (none: no faults)
//       Fault profiles (TOML); see FAULT PROFILES and docs/sink.md.
//   --seed N (1)
//       Seed for the profiles' rates; each session's decisions derive from it
//       and the session's number (in accept order), so a run is reproducible.
//   --tls-cert-out FILE (none)
//       Write the STARTTLS certificate (PEM, self-signed, generated at start-up
//       for --hostname; also a CA, so a client can trust it) to FILE.
//   --buffer-ring on|off (on)
//       Receive into the buffers of each shard's io_uring buffer ring; off gives
//       each connection a receive buffer of its own, as on kernels without
//       buffer rings (before 5.19), so that tests can cover that fallback.
//
// FAULT PROFILES
//   A TOML file of [profile.NAME] tables, [listener."HOST:PORT"] and
//   [domain."NAME"] tables that pick one by profile = "NAME", e.g.:
//
//     [profile.default]                # every listener not named below
//     [profile.flaky]
//     ehlo = "esmtp"                   # or "no-esmtp": EHLO gets 502, HELO works
//     pipelining = true                # extensions advertised (starttls: false)
//     chunking = true
//     starttls = false
//     smtputf8 = true
//     eight_bit_mime = true
//     size_limit = 10485760            # SIZE advertised and enforced; 0: neither
//     greeting = "421 4.3.2 busy"      # a whole reply; 421 closes, 4xx/5xx refuse
//     greeting_delay = "0ms"
//     tarpit = "0ms"                   # before every other reply
//     greylist = "2s"                  # first RCPT of (sender, rcpt): 451 4.7.1
//     max_connections = 0              # more open on the listener: 421 and close
//     inject_after_starttls = ""       # sent right behind the STARTTLS 220
//     [[profile.flaky.reply]]          # first matching rule that fires wins
//     command = "RCPT"                 # EHLO HELO MAIL RCPT DATA DOT BDAT RSET
//                                      # NOOP QUIT STARTTLS
//     match = "busy"                   # argument contains it (any case)
//     nth = 3                          # only the 3rd matching one in a session
//     rate = 0.2                       # share of matching ones
//     reply = "450 4.2.1 mailbox busy" # 4xx/5xx refuse, 421 also closes
//     delay = "0ms"                    # before this reply
//     [[profile.flaky.disconnect]]     # close, no reply
//     after = "DOT"                    # or CONNECT, or a command as above
//     rate = 0.1
//     [listener."127.0.0.2:2525"]      # as given to --listen, or as bound
//     profile = "flaky"
//     [domain."reject.test"]           # RCPT to it, and its transactions
//     profile = "flaky"
//
//   Errors name the file, line and key: "f.toml:9: profile.flaky.reply[1].rate:
//   must be 0..1"; an unknown key is an error.
//
// DIAGNOSTICS
//   Exit status 0 after a signal, 1 on a runtime failure (an address that can't
//   be bound, too low a descriptor limit for every listening socket), 2 on bad
//   usage (a bad option, address, range or profiles file). Options are parsed by
//   CLI11 (base/cli.h): --name VALUE or --name=VALUE, --help lists them (exit 0);
//   a malformed option is named on stderr with the usage line. Log lines go
//   through base/log.h ("volley-sink: listening on ...", "volley-sink: fatal: ...").
//
// SEE ALSO
//   docs/sink.md, tools/sink/sink.h, engine/smtpd/session.h, engine/smtpd/profile.h
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "base/cli.h"
#include "base/file.h"
#include "base/log.h"
#include "tools/sink/sink.h"

namespace {

constexpr char kUsage[] =
    "usage: volley-sink [--listen HOST:PORT ...] [--threads N] [--http HOST:PORT] "
    "[--stats FILE] [--hostname NAME] [--record FILE] [--max-recipients N] "
    "[--profiles FILE] [--seed N] [--tls-cert-out FILE] [--buffer-ring on|off]\n";

}  // namespace

int main(int argc, char** argv) {
  volley::base::SetLogProgram("volley-sink");
  volley::sink::ServerOptions options;
  // Numbers are taken as text and checked below, so that a bad one gets the
  // same message whatever CLI11 would say about it.
  std::string threads, max_recipients, profiles, seed, buffer_ring;
  CLI::App app{"volley-sink: an SMTP server that accepts and discards mail (docs/sink.md)",
               "volley-sink"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--listen", options.listen,
                 "address to listen on, repeat for more; an IPv4 range A-B:PORT too "
                 "(default 127.0.0.1:2525)")
      ->type_name("HOST:PORT")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--threads", threads, "shards, each with its own io_uring; 0: one per CPU (1)")
      ->type_name("N");
  app.add_option("--http", options.http, "serve GET /stats there")->type_name("HOST:PORT");
  app.add_option("--stats", options.stats_path, "rewrite FILE with the counters every second")
      ->type_name("FILE");
  app.add_option("--hostname", options.session.hostname, "name in the greeting and EHLO reply")
      ->type_name("NAME");
  app.add_option("--record", options.record_path, "append a JSON line per accepted message")
      ->type_name("FILE");
  app.add_option("--max-recipients", max_recipients, "recipients per transaction, 1..100000 (1000)")
      ->type_name("N");
  app.add_option("--profiles", profiles, "fault profiles (TOML, docs/sink.md)")->type_name("FILE");
  app.add_option("--seed", seed, "seed for the profiles' rates (1)")->type_name("N");
  app.add_option("--tls-cert-out", options.tls_cert_out, "write the STARTTLS certificate (PEM)")
      ->type_name("FILE");
  app.add_option("--buffer-ring", buffer_ring,
                 "receive through the io_uring buffer ring (on) or per-connection buffers")
      ->type_name("on|off");
  if (std::optional<int> done = volley::base::ParseCommandLine(app, argc, argv, kUsage)) {
    return *done;
  }
  if (app.count("--buffer-ring") > 0) {
    if (buffer_ring != "on" && buffer_ring != "off") {
      std::fprintf(stderr, "volley-sink: --buffer-ring must be on or off, not \"%s\"\n",
                   buffer_ring.c_str());
      return 2;
    }
    options.buffer_ring = buffer_ring == "on";
  }
  if (app.count("--threads") > 0) {
    char* end = nullptr;
    const unsigned long n = std::strtoul(threads.c_str(), &end, 10);
    if (threads.empty() || *end != '\0' || threads[0] == '-' || n > volley::sink::kMaxThreads) {
      std::fprintf(stderr, "volley-sink: --threads must be 0..%zu (0: one per CPU), not \"%s\"\n",
                   volley::sink::kMaxThreads, threads.c_str());
      return 2;
    }
    options.threads = n;
  }
  if (app.count("--max-recipients") > 0) {
    char* end = nullptr;
    const unsigned long n = std::strtoul(max_recipients.c_str(), &end, 10);
    if (max_recipients.empty() || *end != '\0' || n < 1 || n > 100000) {
      std::fprintf(stderr, "volley-sink: --max-recipients must be 1..100000, not \"%s\"\n",
                   max_recipients.c_str());
      return 2;
    }
    options.session.max_recipients = n;
  }
  if (app.count("--seed") > 0) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(seed.c_str(), &end, 10);
    if (seed.empty() || *end != '\0' || errno != 0 || seed[0] == '-') {
      std::fprintf(stderr, "volley-sink: --seed must be a number, not \"%s\"\n", seed.c_str());
      return 2;
    }
    options.seed = n;
  }
  if (app.count("--profiles") > 0) {
    auto loaded = volley::sink::LoadProfiles(profiles);
    if (!loaded.ok()) {
      std::fprintf(stderr, "volley-sink: --profiles: %s\n",
                   std::string(loaded.status().message()).c_str());
      return 2;
    }
    options.profiles = *std::move(loaded);
  }

  signal(SIGPIPE, SIG_IGN);
  // The server checks the result against the sockets it binds.
  volley::base::RaiseFileLimit();

  auto server = volley::sink::Server::Create(std::move(options));
  if (!server.ok()) {
    volley::base::LogFatal("%s", server.status().ToString());
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  for (const std::string& address : (*server)->listening()) {
    volley::base::LogInfo("listening on %s", address);
  }
  if (const std::string http = (*server)->http_address(); !http.empty()) {
    volley::base::LogInfo("stats on http://%s/stats", http);
  }

  const absl::Status status = (*server)->Run();
  std::printf("%s\n", volley::sink::StatsJson((*server)->stats()).c_str());
  std::fflush(stdout);
  if (!status.ok()) {
    volley::base::LogFatal("%s", status.ToString());
    return 1;
  }
  return 0;
}
