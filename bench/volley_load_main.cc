// volley-load - make a campaign of N recipients over M domains and time it through volleyd
//
// SYNOPSIS
//   volley-load generate --out FILE --job ID --recipients N --domains M
//                        [--size BYTES] [--personalised] [--from ADDR] [--seed S]
//   volley-load run --spool DIR --log DIR --recipients N --domains M [--job ID]
//                   [--size BYTES] [--personalised] [--from ADDR] [--seed S]
//                   [--timeout SECONDS] [--json]
//
// DESCRIPTION
//   generate writes a job file (see docs/jobs.md) as it goes, so it handles millions
//   of recipients in constant memory.
//
//   run writes the job into <spool>/tmp/, renames it into <spool>/incoming/ (the drop),
//   then follows <log>/deliveries.jsonl from the size it had before the drop until every
//   recipient line of the job has at least one outcome record. It shows progress when
//   stdout is a terminal and prints a summary: recipients by latest status, the seconds
//   from the drop to the last outcome, and messages delivered per second.
//
// EXIT STATUS
//   0 every recipient has an outcome; 1 timeout or the job was refused; 2 usage error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
#include "base/json.h"
#include "base/status.h"
#include "bench/load.h"

namespace volley::load {
namespace {

constexpr char kUsage[] =
    "usage: volley-load generate --out FILE --job ID --recipients N --domains M\n"
    "                            [--size BYTES] [--personalised] [--from ADDR] [--seed S]\n"
    "       volley-load run --spool DIR --log DIR --recipients N --domains M [--job ID]\n"
    "                       [--size BYTES] [--personalised] [--from ADDR] [--seed S]\n"
    "                       [--timeout SECONDS] [--json]\n";

[[noreturn]] void Usage(std::string_view why) {
  std::fprintf(stderr, "volley-load: %.*s\n%s", static_cast<int>(why.size()), why.data(),
               kUsage);
  std::exit(2);
}

// Flags - --name VALUE, --name=VALUE and bare boolean --name.
class Flags {
 public:
  Flags(int argc, char** argv, const std::vector<std::string_view>& valued,
        const std::vector<std::string_view>& booleans) {
    for (int i = 0; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg.substr(0, 2) != "--") Usage(absl::StrCat("unexpected argument: ", std::string(arg)));
      arg.remove_prefix(2);
      std::optional<std::string> value;
      if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
        value = std::string(arg.substr(eq + 1));
        arg = arg.substr(0, eq);
      }
      const bool is_valued = std::find(valued.begin(), valued.end(), arg) != valued.end();
      const bool is_bool = std::find(booleans.begin(), booleans.end(), arg) != booleans.end();
      if (is_bool && !value) {
        values_.insert_or_assign(std::string(arg), std::string(1, '1'));
      } else if (is_valued) {
        if (!value) {
          if (i + 1 >= argc) Usage(absl::StrCat("--", std::string(arg), " needs a value"));
          value = argv[++i];
        }
        values_.insert_or_assign(std::string(arg), *std::move(value));
      } else {
        Usage(absl::StrCat("unknown option --", std::string(arg)));
      }
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
  if (domains == 0 || domains > 1'000'000) Usage("--domains must be 1 to 1000000");
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
  valued.insert(valued.end(), {"spool", "log", "timeout"});
  Flags flags(argc, argv, valued, {"personalised", "json"});
  const std::string spool = flags.Required("spool");
  const std::string log_dir = flags.Required("log");
  const std::string job_id = flags.String(
      "job", absl::StrFormat("load-%d-%d", absl::ToUnixSeconds(absl::Now()), ::getpid()));
  GenerateOptions o = JobOptions(flags, job_id);
  const uint64_t timeout_s = flags.Number("timeout", 600);
  const bool json = flags.Has("json");
  const bool tty = ::isatty(STDOUT_FILENO) == 1;

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

  DeliveryTally tally(job_id, o.recipients);
  LogFollower follower(log_path, *start_offset);
  const absl::Time deadline = drop + absl::Seconds(static_cast<int64_t>(timeout_s));
  absl::Time last_progress = absl::InfinitePast();
  absl::Time last_seen_change = drop;  // fallback when records carry no usable ts
  uint64_t last_with_outcome = 0;
  std::string refused;
  bool timed_out = false;
  for (;;) {
    if (absl::Status s = follower.Poll(&tally); !s.ok()) {
      std::fprintf(stderr, "volley-load: %s\n", s.ToString().c_str());
      return 1;
    }
    const absl::Time now = absl::Now();
    if (tally.with_outcome() != last_with_outcome) {
      last_with_outcome = tally.with_outcome();
      last_seen_change = now;
    }
    if (tty && !json && (now - last_progress >= absl::Milliseconds(250) || tally.complete())) {
      const OutcomeCounts c = tally.counts();
      std::printf("\r  %llu/%llu with an outcome (delivered %llu, deferred %llu, bounced %llu, "
                  "expired %llu)  %.1f s ",
                  static_cast<unsigned long long>(tally.with_outcome()),
                  static_cast<unsigned long long>(tally.recipients()),
                  static_cast<unsigned long long>(c.delivered),
                  static_cast<unsigned long long>(c.deferred),
                  static_cast<unsigned long long>(c.bounced),
                  static_cast<unsigned long long>(c.expired), absl::ToDoubleSeconds(now - drop));
      std::fflush(stdout);
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
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (tty && !json) std::printf("\n");

  const OutcomeCounts c = tally.counts();
  absl::Time last = tally.last_outcome().value_or(last_seen_change);
  if (last < drop) last = last_seen_change;  // clocks disagree: use what we saw
  const double elapsed = tally.with_outcome() == 0 ? 0 : absl::ToDoubleSeconds(last - drop);
  const double rate = elapsed > 0 ? static_cast<double>(c.delivered) / elapsed : 0;

  if (json) {
    std::string out = "{\"job\":";
    base::AppendJsonString(&out, job_id);
    absl::StrAppendFormat(
        &out,
        ",\"recipients\":%d,\"domains\":%d,\"size\":%d,\"with_outcome\":%d,\"missing\":%d,"
        "\"delivered\":%d,\"deferred\":%d,\"bounced\":%d,\"expired\":%d,\"other\":%d,"
        "\"records\":%d,\"malformed_log_lines\":%d,\"elapsed_seconds\":%.3f,"
        "\"messages_per_second\":%.1f,\"timed_out\":%s",
        o.recipients, o.domains, o.size, tally.with_outcome(), tally.missing(), c.delivered,
        c.deferred, c.bounced, c.expired, c.other, tally.records(), tally.malformed(), elapsed,
        rate, timed_out ? "true" : "false");
    if (!refused.empty()) {
      out += ",\"refused\":";
      base::AppendJsonString(&out, refused);
    }
    out += "}\n";
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("delivered %llu  deferred %llu  bounced %llu  expired %llu",
                static_cast<unsigned long long>(c.delivered),
                static_cast<unsigned long long>(c.deferred),
                static_cast<unsigned long long>(c.bounced),
                static_cast<unsigned long long>(c.expired));
    if (c.other != 0) std::printf("  other %llu", static_cast<unsigned long long>(c.other));
    std::printf("  (of %llu recipients)\n", static_cast<unsigned long long>(o.recipients));
    std::printf("elapsed %.3f s (drop to last outcome), %.1f messages/s\n", elapsed, rate);
    if (tally.malformed() != 0) {
      std::printf("warning: %llu delivery-log lines did not parse\n",
                  static_cast<unsigned long long>(tally.malformed()));
    }
  }
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

}  // namespace
}  // namespace volley::load

int main(int argc, char** argv) {
  if (argc < 2) volley::load::Usage("no command");
  const std::string_view command = argv[1];
  if (command == "generate") return volley::load::Generate(argc - 2, argv + 2);
  if (command == "run") return volley::load::Run(argc - 2, argv + 2);
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(volley::load::kUsage, stdout);
    return 0;
  }
  volley::load::Usage(absl::StrCat("unknown command: ", std::string(command)));
}
