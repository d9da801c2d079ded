// volleyd - the Volley daemon
//
// SYNOPSIS
//   volleyd [--config FILE]
//
// DESCRIPTION
//   Runs in the foreground. Without --config every key has its default
//   (docs/config.md): spool, queue and log under ./var, and every domain routed
//   to the local sink at 127.0.0.1:2525. SIGTERM or SIGINT stops it cleanly:
//   transactions under way get up to 10 s to finish. A second SIGTERM or SIGINT
//   stops it at once, after recording what was decided (engine/engine.h).
//   SIGHUP reads the --config file again and applies what can change while
//   running (engine/reload.h, docs/config.md "Reload"); a broken file is
//   refused with the error a start would give, and volleyd runs on. SIGHUP is
//   blocked before anything else, so one that comes during start-up waits for
//   the reload thread instead of killing volleyd.
//
// OPTIONS
//   --config FILE   the TOML config (docs/config.md); --config=FILE too
//   --help, -h      print the options and exit 0
//   --version       print "volleyd VERSION" and exit 0
//
// DIAGNOSTICS
//   On stderr, as base/log.h writes a daemon's lines (a time and a severity on
//   each). A usage error (exit 2) names the bad argument. A config error stops
//   it at once (exit 2): "volleyd: fatal: config: FILE:LINE: KEY: REASON". A
//   warning at start-up when the EHLO name is not fully qualified
//   (engine/host_name.h); it runs on. A spool or log folder that another
//   volleyd holds stops it before it touches any file (exit 1): "volleyd:
//   fatal: spool var/spool is in use by volleyd pid 1234 on host X (lock
//   var/spool/volleyd.lock, ...)" (base/dir_lock.h, docs/jobs.md).
#include <csignal>
#include <optional>
#include <string>

#include "base/cli.h"
#include "base/file.h"
#include "base/log.h"
#include "base/memory.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "engine/host_name.h"
#include "engine/reload.h"

namespace {

volley::engine::Engine* g_engine = nullptr;

void OnSignal(int) {
  if (g_engine != nullptr) g_engine->RequestStop();
}

constexpr char kUsage[] = "usage: volleyd [--config FILE]\n";

}  // namespace

int main(int argc, char** argv) {
  // First: every thread made from here on (ours, libmicrohttpd's, RocksDB's)
  // inherits the mask, so none can take SIGHUP and die of it.
  volley::engine::BlockReloadSignal();
  volley::base::SetLogProgram("volleyd", volley::base::LogStyle::kDaemon);
  std::string config_path;
  CLI::App app{"volleyd: the Volley daemon; runs in the foreground until SIGTERM or SIGINT",
               "volleyd"};
  app.add_option("--config", config_path,
                 "TOML config file (docs/config.md); without it every key has its default")
      ->type_name("FILE")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  if (std::optional<int> done = volley::base::ParseCommandLine(app, argc, argv, kUsage)) {
    return *done;
  }
  // Read once, parsed from the text: a reload diffs the file against this text.
  absl::StatusOr<std::string> text = std::string();
  if (!config_path.empty()) text = volley::engine::ReadConfigText(config_path);
  auto config = !text.ok()             ? absl::StatusOr<volley::engine::Config>(text.status())
                : config_path.empty() ? volley::engine::ParseConfig("", "(defaults)")
                                      : volley::engine::ParseConfig(*text, config_path);
  if (!config.ok()) {
    // The text docs/config.md shows: "volleyd: fatal: config: FILE:LINE: KEY: REASON".
    volley::base::LogFatal("config: %s", config.status().message());
    return 2;
  }
  // RFC 5321 4.1.1.1 wants a fully qualified name in EHLO. A bare one is legal and
  // works with many receivers, so volleyd runs on, but says so where it is seen.
  if (!volley::engine::IsQualifiedEhloName(config->smtp.ehlo_name)) {
    volley::base::LogWarning("%s", volley::engine::EhloNameWarning(config->smtp.ehlo_name));
  }
  volley::base::RaiseFileLimit();
  // A freed message's pages stay for the next one instead of going back to
  // the kernel at each free (base/memory.h); what is kept is bounded by what
  // may be in flight.
  const uint64_t in_flight = config->delivery.max_message_bytes_in_flight;
  volley::base::KeepFreedMemory(
      in_flight > 0 ? in_flight : volley::engine::DeliveryConfig{}.max_message_bytes_in_flight);
  volley::engine::Engine engine(*std::move(config));
  if (!config_path.empty()) engine.SetConfigSource(config_path, *std::move(text));
  g_engine = &engine;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  const absl::Status st = engine.Run();
  g_engine = nullptr;
  if (!st.ok()) {
    volley::base::LogFatal("%s", st.message());
    return 1;
  }
  return 0;
}
