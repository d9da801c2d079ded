// volley-load - make a campaign of N recipients over M domains and time it through volleyd
//
// SYNOPSIS
//   volley-load generate --out FILE --job ID --recipients N --domains M
//                        [--size BYTES] [--personalised] [--from ADDR] [--seed S]
//   volley-load run --spool DIR --log DIR --recipients N --domains M [--job ID]
//                   [--size BYTES] [--personalised] [--from ADDR] [--seed S]
//                   [--timeout SECONDS] [--json] [--volleyd-pid PID] [--no-progress]
//   volley-load routes --domains M --sink-addresses RANGE [--port PORT] --out FILE
//   volley-load zone --domains M --sink-addresses RANGE [--ttl SECONDS] [--serial N]
//                    --out FILE
//   volley-load addresses --sink-addresses RANGE [--port PORT]
//
// DESCRIPTION
//   generate writes a job file (see docs/jobs.md) as it goes, so it handles millions
//   of recipients in constant memory.
//
//   run writes the job into <spool>/tmp/, renames it into <spool>/incoming/ (the drop),
//   then follows <log>/deliveries.jsonl from the size it had before the drop until every
//   recipient line of the job has at least one outcome record. On a terminal it shows a
//   progress bar on stderr; at the end it prints a report (or, with --json, one JSON
//   object): outcome counts, recipients/s and messages (transactions)/s apart, MB/s,
//   delivery latency p50/p99 and, with --volleyd-pid, volleyd's CPU seconds per
//   10,000 recipients and peak RSS.
//
//   routes and zone route the generated domains to volley-sink listeners on loopback:
//   a [routes] table for volleyd's config, or an nsd zone file for "test.". addresses
//   lists the range one HOST:PORT a line, for volley-sink's --listen.
//   docs/volley-load.md has every flag, the report's fields and an example.
//
// EXIT STATUS
//   0 every recipient has an outcome (run) or the file was written; 1 timeout, the job
//   was refused, or an I/O error; 2 usage error (a bad flag or address range).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/cli.h"
#include "base/file.h"
#include "base/status.h"
#include "base/strings.h"
#include "bench/load.h"

namespace volley::load {
namespace {

constexpr char kUsage[] =
    "usage: volley-load generate --out FILE --job ID --recipients N --domains M\n"
    "                            [--size BYTES] [--personalised] [--from ADDR] [--seed S]\n"
    "       volley-load run --spool DIR --log DIR --recipients N --domains M [--job ID]\n"
    "                       [--size BYTES] [--personalised] [--from ADDR] [--seed S]\n"
    "                       [--timeout SECONDS] [--json] [--volleyd-pid PID] [--no-progress]\n"
    "       volley-load routes --domains M --sink-addresses RANGE [--port PORT] --out FILE\n"
    "       volley-load zone --domains M --sink-addresses RANGE [--ttl SECONDS] [--serial N]\n"
    "                        --out FILE\n"
    "       volley-load addresses --sink-addresses RANGE [--port PORT]\n"
    "       volley-load --version\n"
    "RANGE is A.B.C.D-E.F.G.H or one address, in 127.0.0.0/8. See docs/volley-load.md.\n";

// How often the progress bar is redrawn, and how often the log is polled.
constexpr absl::Duration kProgressEvery = absl::Milliseconds(250);
constexpr auto kPollEvery = std::chrono::milliseconds(50);

[[noreturn]] void Usage(std::string_view why) {
  std::fprintf(stderr, "volley-load: %.*s\n%s", static_cast<int>(why.size()), why.data(),
               kUsage);
  std::exit(2);
}

// Flags - one command's flags, parsed by CLI11: --name VALUE, --name=VALUE and
// bare boolean --name; the last of a repeated flag wins. A usage error exits 2
// naming the flag; --help prints the usage and exits 0.
class Flags {
 public:
  Flags(int argc, char** argv, const std::vector<std::string_view>& valued,
        const std::vector<std::string_view>& booleans) {
    CLI::App app{"", "volley-load"};
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    for (std::string_view name : valued) {
      app.add_option(absl::StrCat("--", base::Sv(name)), values_[std::string(name)]);
    }
    for (std::string_view name : booleans) app.add_flag(absl::StrCat("--", base::Sv(name)));
    // argv - 1 is the command, which CLI11 takes for the program's name.
    try {
      app.parse(argc + 1, argv - 1);
    } catch (const CLI::CallForHelp&) {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } catch (const CLI::ParseError& e) {
      Usage(e.what());
    }
    for (std::string_view name : valued) {
      if (app.count(absl::StrCat("--", base::Sv(name))) == 0) values_.erase(std::string(name));
    }
    for (std::string_view name : booleans) {
      if (app.count(absl::StrCat("--", base::Sv(name))) > 0) values_[std::string(name)] = "1";
    }
  }
  bool Has(const std::string& name) const { return values_.contains(name); }
  std::string String(const std::string& name, std::string fallback = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  std::string Required(const std::string& name) const {
    if (!Has(name)) Usage(absl::StrCat("--", name, " is required"));
    return values_.at(name);
  }
  uint64_t Number(const std::string& name, std::optional<uint64_t> fallback) const {
    if (!Has(name)) {
      if (!fallback) Usage(absl::StrCat("--", name, " is required"));
      return *fallback;
    }
    uint64_t n = 0;
    if (!absl::SimpleAtoi(values_.at(name), &n)) {
      Usage(absl::StrCat("--", name, " wants a whole number, not ", values_.at(name)));
    }
    return n;
  }

 private:
  std::map<std::string, std::string> values_;
};

const std::vector<std::string_view> kJobFlags = {"job", "recipients", "domains", "size",
                                                 "from", "seed"};

GenerateOptions JobOptions(const Flags& flags, std::string job_id) {
  GenerateOptions o;
  o.job_id = std::move(job_id);
  o.recipients = flags.Number("recipients", std::nullopt);
  const uint64_t domains = flags.Number("domains", std::nullopt);
  if (domains == 0 || domains > kMaxDomains) {
    Usage(absl::StrCat("--domains must be 1 to ", kMaxDomains));
  }
  o.domains = static_cast<uint32_t>(domains);
  o.size = flags.Number("size", 1024);
  o.personalised = flags.Has("personalised");
  o.from = flags.String("from", o.from);
  o.seed = flags.Number("seed", 1);
  return o;
}

int Generate(int argc, char** argv) {
  std::vector<std::string_view> valued = kJobFlags;
  valued.push_back("out");
  Flags flags(argc, argv, valued, {"personalised"});
  const std::string out = flags.Required("out");
  GenerateOptions o = JobOptions(flags, flags.Required("job"));
  // Write next to the target and rename, so a reader never sees half a file.
  const std::string tmp = absl::StrCat(out, ".tmp.", ::getpid());
  auto stats = GenerateJobFile(o, tmp);
  if (!stats.ok()) {
    std::fprintf(stderr, "volley-load: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  if (::rename(tmp.c_str(), out.c_str()) != 0) {
    std::fprintf(stderr, "volley-load: cannot rename %s to %s: %s\n", tmp.c_str(),
                 out.c_str(), std::strerror(errno));
    ::unlink(tmp.c_str());
    return 1;
  }
  std::fprintf(stderr, "volley-load: wrote %s: job %s, %llu recipients over %u domains, %llu bytes\n",
               out.c_str(), o.job_id.c_str(), static_cast<unsigned long long>(stats->recipients),
               o.domains, static_cast<unsigned long long>(stats->bytes));
  return 0;
}

// MakeDirs - mkdir -p.
absl::Status MakeDirs(const std::string& path) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && ::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", prefix));
    }
    if (slash == std::string::npos) return absl::OkStatus();
  }
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string ReadSmallFile(const std::string& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < 65536) text.append(buf, n);
    std::fclose(f);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

int Run(int argc, char** argv) {
  std::vector<std::string_view> valued = kJobFlags;
  valued.insert(valued.end(), {"spool", "log", "timeout", "volleyd-pid"});
  Flags flags(argc, argv, valued, {"personalised", "json", "no-progress"});
  const std::string spool = flags.Required("spool");
  const std::string log_dir = flags.Required("log");
  const std::string job_id = flags.String(
      "job", absl::StrFormat("load-%d-%d", absl::ToUnixSeconds(absl::Now()), ::getpid()));
  GenerateOptions o = JobOptions(flags, job_id);
  const uint64_t timeout_s = flags.Number("timeout", 600);
  const bool json = flags.Has("json");
  // The bar goes to stderr, so it shows with --json too and never mixes with the report.
  const bool progress = !flags.Has("no-progress") && ::isatty(STDERR_FILENO) == 1;
  std::optional<pid_t> volleyd_pid;
  if (flags.Has("volleyd-pid")) {
    const uint64_t pid = flags.Number("volleyd-pid", std::nullopt);
    if (pid == 0 || pid > static_cast<uint64_t>(std::numeric_limits<pid_t>::max())) {
      Usage(absl::StrCat("--volleyd-pid ", pid, " is not a process id"));
    }
    volleyd_pid = static_cast<pid_t>(pid);
    // Find out now, not after writing a million recipients, that the pid is wrong.
    if (auto cpu = ReadCpuSeconds(*volleyd_pid); !cpu.ok()) {
      std::fprintf(stderr, "volley-load: --volleyd-pid %d: %s\n", *volleyd_pid,
                   cpu.status().ToString().c_str());
      return 2;
    }
  }

  const std::string log_path = absl::StrCat(log_dir, "/deliveries.jsonl");
  auto start_offset = FileSize(log_path);
  if (!start_offset.ok()) {
    std::fprintf(stderr, "volley-load: %s\n", start_offset.status().ToString().c_str());
    return 1;
  }
  for (const std::string& dir : {absl::StrCat(spool, "/tmp"), absl::StrCat(spool, "/incoming")}) {
    if (absl::Status s = MakeDirs(dir); !s.ok()) {
      std::fprintf(stderr, "volley-load: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  const std::string name = absl::StrCat(job_id, ".job");
  const std::string tmp = absl::StrCat(spool, "/tmp/", name);
  const std::string incoming = absl::StrCat(spool, "/incoming/", name);
  const std::string error_file = absl::StrCat(spool, "/failed/", name, ".error");

  const absl::Time gen_start = absl::Now();
  auto stats = GenerateJobFile(o, tmp);
  if (!stats.ok()) {
    std::fprintf(stderr, "volley-load: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  std::optional<double> cpu_at_drop;
  if (volleyd_pid) {
    auto cpu = ReadCpuSeconds(*volleyd_pid);
    if (!cpu.ok()) {
      std::fprintf(stderr, "volley-load: volleyd (pid %d) is gone before the drop: %s\n",
                   *volleyd_pid, cpu.status().ToString().c_str());
      ::unlink(tmp.c_str());
      return 1;
    }
    cpu_at_drop = *cpu;
  }
  const absl::Time drop = absl::Now();
  if (::rename(tmp.c_str(), incoming.c_str()) != 0) {
    std::fprintf(stderr, "volley-load: cannot rename %s to %s: %s\n", tmp.c_str(),
                 incoming.c_str(), std::strerror(errno));
    return 1;
  }
  if (!json) {
    std::printf("volley-load: job %s: %llu recipients over %u domains, %llu-byte messages, "
                "generated in %.2f s, dropped into %s\n",
                job_id.c_str(), static_cast<unsigned long long>(o.recipients), o.domains,
                static_cast<unsigned long long>(o.size),
                absl::ToDoubleSeconds(drop - gen_start), incoming.c_str());
    std::fflush(stdout);
  }

  DeliveryTally tally(job_id, o.recipients, drop);
  LogFollower follower(log_path, *start_offset);
  const absl::Time deadline = drop + absl::Seconds(static_cast<int64_t>(timeout_s));
  absl::Time last_progress = absl::InfinitePast();
  absl::Time last_seen_change = drop;  // fallback when records carry no usable ts
  uint64_t last_with_outcome = 0;
  std::string refused;
  bool timed_out = false;
  for (;;) {
    if (absl::Status s = follower.Poll(&tally); !s.ok()) {
      if (progress) std::fputs("\n", stderr);
      std::fprintf(stderr, "volley-load: %s\n", s.ToString().c_str());
      return 1;
    }
    const absl::Time now = absl::Now();
    if (tally.with_outcome() != last_with_outcome) {
      last_with_outcome = tally.with_outcome();
      last_seen_change = now;
    }
    if (progress && (now - last_progress >= kProgressEvery || tally.complete())) {
      const std::string line = ProgressLine(tally.with_outcome(), tally.recipients(),
                                            tally.counts().delivered, now - drop);
      // \r to the start, the line, then erase what a longer previous line left.
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
      std::fflush(stderr);
      last_progress = now;
    }
    if (tally.complete()) break;
    if (tally.with_outcome() == 0 && Exists(error_file)) {
      refused = ReadSmallFile(error_file);
      break;
    }
    if (now >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(kPollEvery);
  }
  if (progress) std::fputs("\n", stderr);

  const OutcomeCounts c = tally.counts();
  absl::Time last = tally.last_outcome().value_or(last_seen_change);
  if (last < drop) last = last_seen_change;  // clocks disagree: use what we saw

  Report r;
  r.job = job_id;
  r.recipients = o.recipients;
  r.domains = o.domains;
  r.size = o.size;
  r.message_bytes = MessageTemplate(o).size();
  r.with_outcome = tally.with_outcome();
  r.missing = tally.missing();
  r.counts = c;
  r.messages = tally.messages();
  r.records = tally.records();
  r.malformed_log_lines = tally.malformed();
  r.generate_seconds = absl::ToDoubleSeconds(drop - gen_start);
  r.elapsed_seconds = tally.with_outcome() == 0 ? 0 : absl::ToDoubleSeconds(last - drop);
  r.timed_out = timed_out;
  r.refused = refused;
  FillLatency(tally.latency(), &r);
  if (volleyd_pid) {
    r.volleyd_pid = *volleyd_pid;
    if (auto cpu = ReadCpuSeconds(*volleyd_pid); cpu.ok()) {
      r.volleyd_cpu_seconds = *cpu - *cpu_at_drop;
    } else {
      std::fprintf(stderr, "volley-load: volleyd CPU time unknown: %s\n",
                   cpu.status().ToString().c_str());
    }
    if (auto hwm = ReadPeakRssKb(*volleyd_pid); hwm.ok()) {
      r.volleyd_peak_rss_kb = *hwm;
    } else {
      std::fprintf(stderr, "volley-load: volleyd peak RSS unknown: %s\n",
                   hwm.status().ToString().c_str());
    }
  }
  const std::string report = json ? ReportJson(r) : ReportText(r);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);
  if (!refused.empty()) {
    std::fprintf(stderr, "volley-load: job %s was refused: %s\n", job_id.c_str(), refused.c_str());
    return 1;
  }
  if (timed_out) {
    std::fprintf(stderr, "volley-load: timed out after %llu s: %llu of %llu recipients have no "
                 "outcome yet\n",
                 static_cast<unsigned long long>(timeout_s),
                 static_cast<unsigned long long>(tally.missing()),
                 static_cast<unsigned long long>(tally.recipients()));
    return 1;
  }
  return 0;
}

// ---- routes, zone, addresses

AddressRange SinkAddresses(const Flags& flags) {
  auto range = ParseAddressRange(flags.Required("sink-addresses"));
  if (!range.ok()) Usage(base::StdSv(range.status().message()));
  return *range;
}

uint32_t Port(const Flags& flags) {
  const uint64_t port = flags.Number("port", 2525);
  if (port == 0 || port > 65535) Usage(absl::StrCat("--port must be 1 to 65535, not ", port));
  return static_cast<uint32_t>(port);
}

uint32_t Domains(const Flags& flags) {
  const uint64_t domains = flags.Number("domains", std::nullopt);
  if (domains == 0 || domains > kMaxDomains) {
    Usage(absl::StrCat("--domains must be 1 to ", kMaxDomains));
  }
  return static_cast<uint32_t>(domains);
}

// WriteOut - what `write` produces into `out`, through a temporary file beside it and a
// rename, so volleyd or nsd never read half a file.
int WriteOut(const std::string& out,
             absl::FunctionRef<absl::Status(absl::FunctionRef<absl::Status(std::string_view)>)>
                 write) {
  const std::string tmp = absl::StrCat(out, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "volley-load: cannot create %s: %s\n", tmp.c_str(), std::strerror(errno));
    return 1;
  }
  absl::Status status = write([&](std::string_view bytes) -> absl::Status {
    return base::WriteAll(fd, bytes, tmp);
  });
  if (::close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot close ", tmp));
  }
  if (status.ok() && ::rename(tmp.c_str(), out.c_str()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", out));
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    std::fprintf(stderr, "volley-load: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

std::string RangeText(const AddressRange& r) {
  return absl::StrCat(FormatAddress(r.first), "-", FormatAddress(r.last));
}

int Routes(int argc, char** argv) {
  Flags flags(argc, argv, {"domains", "sink-addresses", "port", "out"}, {});
  RoutingOptions o;
  o.domains = Domains(flags);
  o.addresses = SinkAddresses(flags);
  o.port = Port(flags);
  const std::string out = flags.Required("out");
  using Sink = absl::FunctionRef<absl::Status(std::string_view)>;
  if (int rc = WriteOut(out, [&](Sink sink) { return WriteRoutes(o, sink); }); rc != 0) return rc;
  std::fprintf(stderr, "volley-load: wrote %s: [routes] for %u domains over %llu addresses %s, "
               "port %u\n",
               out.c_str(), o.domains, static_cast<unsigned long long>(o.addresses.size()),
               RangeText(o.addresses).c_str(), o.port);
  return 0;
}

int Zone(int argc, char** argv) {
  Flags flags(argc, argv, {"domains", "sink-addresses", "ttl", "serial", "out"}, {});
  RoutingOptions o;
  o.domains = Domains(flags);
  o.addresses = SinkAddresses(flags);
  const uint64_t ttl = flags.Number("ttl", 3600);
  if (ttl == 0 || ttl > kMaxZoneTtl) {
    Usage(absl::StrCat("--ttl must be 1 to ", kMaxZoneTtl, " seconds, not ", ttl));
  }
  o.ttl = static_cast<uint32_t>(ttl);
  const uint64_t serial = flags.Number("serial", 1);
  if (serial > std::numeric_limits<uint32_t>::max()) Usage("--serial must fit in 32 bits");
  o.serial = static_cast<uint32_t>(serial);
  const std::string out = flags.Required("out");
  using Sink = absl::FunctionRef<absl::Status(std::string_view)>;
  if (int rc = WriteOut(out, [&](Sink sink) { return WriteZone(o, sink); }); rc != 0) return rc;
  std::fprintf(stderr, "volley-load: wrote %s: zone test. with %u domains, MX hosts over %llu "
               "addresses %s\n",
               out.c_str(), o.domains, static_cast<unsigned long long>(o.addresses.size()),
               RangeText(o.addresses).c_str());
  return 0;
}

int Addresses(int argc, char** argv) {
  Flags flags(argc, argv, {"sink-addresses", "port"}, {});
  const AddressRange range = SinkAddresses(flags);
  const uint32_t port = Port(flags);
  for (uint64_t i = 0; i < range.size(); ++i) {
    std::printf("%s:%u\n", FormatAddress(range.At(i)).c_str(), port);
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace
}  // namespace volley::load

int main(int argc, char** argv) {
  if (argc < 2) volley::load::Usage("no command");
  const std::string_view command = argv[1];
  if (command == "generate") return volley::load::Generate(argc - 2, argv + 2);
  if (command == "run") return volley::load::Run(argc - 2, argv + 2);
  if (command == "routes") return volley::load::Routes(argc - 2, argv + 2);
  if (command == "zone") return volley::load::Zone(argc - 2, argv + 2);
  if (command == "addresses") return volley::load::Addresses(argc - 2, argv + 2);
  if (command == "--version") {
    std::printf("%s\n", volley::base::VersionLine("volley-load").c_str());
    return 0;
  }
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(volley::load::kUsage, stdout);
    return 0;
  }
  volley::load::Usage(absl::StrCat("unknown command: ", std::string(command)));
}
