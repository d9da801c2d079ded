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
//
// DIAGNOSTICS
//   On stderr. A config error stops it at once (exit 2). A warning at start-up when
//   the EHLO name is not fully qualified (engine/host_name.h); it runs on.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/file.h"
#include "base/log.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "engine/host_name.h"

namespace {

volley::engine::Engine* g_engine = nullptr;

void OnSignal(int) {
  if (g_engine != nullptr) g_engine->RequestStop();
}

int Usage() {
  std::fprintf(stderr, "usage: volleyd [--config FILE]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  volley::base::SetLogProgram("volleyd");
  std::string config_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(9);
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else {
      std::fprintf(stderr, "volleyd: unknown argument \"%s\"\n", arg.c_str());
      return Usage();
    }
  }
  auto config = config_path.empty() ? volley::engine::ParseConfig("", "(defaults)")
                                    : volley::engine::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "volleyd: config: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  // RFC 5321 4.1.1.1 wants a fully qualified name in EHLO. A bare one is legal and
  // works with many receivers, so volleyd runs on, but says so where it is seen.
  if (!volley::engine::IsQualifiedEhloName(config->smtp.ehlo_name)) {
    std::fprintf(stderr, "volleyd: warning: %s\n",
                 volley::engine::EhloNameWarning(config->smtp.ehlo_name).c_str());
  }
  volley::base::RaiseFileLimit();
  volley::engine::Engine engine(*std::move(config));
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
    std::fprintf(stderr, "volleyd: fatal: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
