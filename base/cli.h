// cli.h - the programs' command lines: CLI11, with Volley's exit statuses and messages
//
// SYNOPSIS
//   CLI::App app{"the Volley daemon", "volleyd"};
//   app.add_option("--config", config_path, "TOML config file (docs/config.md)");
//   if (std::optional<int> done = base::ParseCommandLine(app, argc, argv, kUsage)) {
//     return *done;   // --help (0) or a usage error (2), already reported
//   }
//
// DESCRIPTION
//   volleyd, volley-sink, volley-load and volleyctl declare their flags and
//   subcommands with CLI11 (header-only, Debian's libcli11-dev): "--flag VALUE"
//   and "--flag=VALUE", "--" ending the options, --help from the declarations,
//   and one wording for a misspelt flag or a missing value. ParseCommandLine
//   keeps the programs' contract on top of it (docs/*.md): --help or -h prints
//   the help to stdout and exits 0; any usage error prints
//   "PROGRAM: WHAT" (CLI11 names the flag and the value) and the usage line to
//   stderr and exits 2; --version prints "PROGRAM VERSION" (VersionLine) to
//   stdout and exits 0. Checks of a value's meaning (ranges, addresses) stay in
//   each program, with their own wording.
//
//   Header-only, like CLI11 itself: the volley_cli target only adds the include
//   path, so base/'s libraries do not depend on it.
//
// BOUNDS
//   None of its own: argv is as long as the kernel allowed; a program that takes
//   a list (volley-sink's --listen) bounds it where the list is used.
#ifndef VOLLEY_BASE_CLI_H_
#define VOLLEY_BASE_CLI_H_

#include <cstdio>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"

// The project's version (CMakeLists.txt's project()), set on volley_cli.
#ifndef VOLLEY_VERSION
#error "VOLLEY_VERSION is defined by the volley_cli target"
#endif

namespace volley::base {

// VersionLine - what --version prints: "volleyd 0.1.0".
inline std::string VersionLine(const std::string& program) {
  return program + " " VOLLEY_VERSION;
}

// AddVersionFlag - --version on `app`; a program that parses with app.parse
// itself catches CLI::CallForVersion and prints e.what().
inline void AddVersionFlag(CLI::App& app) {
  app.set_version_flag("--version", VersionLine(app.get_name()), "print the version and exit");
}

// ParseCommandLine - parse argv into `app`; nullopt to go on, else the exit
// status after --help (0) or a usage error (2), reported as above. `usage` is
// the short usage text printed after an error (ends with a newline).
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, const char* const* argv,
                                           const std::string& usage) {
  AddVersionFlag(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n%s", app.get_name().c_str(), e.what(), usage.c_str());
    return 2;
  }
  return std::nullopt;
}

}  // namespace volley::base

#endif  // VOLLEY_BASE_CLI_H_
