#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "queue/job_check.h"
#include "queue/job_reader.h"
#include "queue/template.h"

namespace volley::queue {
namespace {

// What a name in a folder may be (NAME_MAX): room is left for the ".N" a taken
// name gets and for ".error".
constexpr size_t kMaxFileName = NAME_MAX;
constexpr std::string_view kErrorSuffix = ".error";
constexpr std::string_view kRejectsSuffix = ".rejects.jsonl";
// ".4294967295": the longest counter suffix.
constexpr size_t kMaxCounterSuffix = 11;

// CutName - `name` cut to at most `max` bytes, not inside a UTF-8 sequence.
std::string CutName(std::string_view name, size_t max) {
  if (name.size() <= max) return std::string(name);
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xC0) == 0x80) --n;
  return std::string(name.substr(0, n));
}

// UniqueName - base, base.1, base.2, ...: the first that `free` takes.
std::string UniqueName(const std::string& base, const std::function<bool(const std::string&)>& free) {
  if (free(base)) return base;
  for (uint64_t n = 1;; ++n) {
    std::string candidate = absl::StrCat(base, ".", n);
    if (free(candidate)) return candidate;
  }
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(dir, "open");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return base::ErrnoError(dir, "fsync");
  return absl::OkStatus();
}

// TakenIn - a NameTaken for a real folder: anything there, or a name it cannot
// tell about, is taken.
NameTaken TakenIn(const std::string& dir) {
  return [dir](const std::string& name) {
    struct stat st {};
    return ::lstat(absl::StrCat(dir, "/", name).c_str(), &st) == 0 || errno != ENOENT;
  };
}

// MoveTo - rename `from` to dir/name and make the rename durable.
absl::Status MoveTo(const std::string& from, const std::string& dir, const std::string& name) {
  if (::rename(from.c_str(), absl::StrCat(dir, "/", name).c_str()) != 0) {
    return base::ErrnoError(from, "rename");
  }
  return SyncDir(dir);
}

// EnsureSigioIgnored - a read lease held by this process is broken when another
// opens the file for writing, and the kernel then signals the holder with
// SIGIO, whose default action ends the process. Intake holds its lease for a
// moment only, but a writer can open the file in that moment: SIGIO is set to
// ignored if nothing handles it already.
void EnsureSigioIgnored() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGIO, nullptr, &current) == 0 && current.sa_handler == SIG_DFL &&
        (current.sa_flags & SA_SIGINFO) == 0) {
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;
      sigemptyset(&ignore.sa_mask);
      ::sigaction(SIGIO, &ignore, nullptr);
    }
  });
}

// OpenForWriting - whether another process has fd's file open for writing:
// true, false, or nullopt with *why set when no lease can be taken here.
std::optional<bool> OpenForWriting(int fd, std::string* why) {
  EnsureSigioIgnored();
  if (::fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    ::fcntl(fd, F_SETLEASE, F_UNLCK);
    return false;
  }
  if (errno == EAGAIN) return true;
  *why = absl::StrCat("fcntl F_SETLEASE: ", std::strerror(errno));
  return std::nullopt;
}

// SameFile - nothing that a writer changes differs between the two stats (WRITERS).
bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

absl::Time MtimeOf(const struct stat& st) {
  return absl::TimeFromTimespec(st.st_mtim);
}

std::string Seconds(absl::Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", absl::ToDoubleSeconds(d));
  return buf;
}

// The first bytes of a rejected line, for the rejects file: enough to find it.
constexpr size_t kRejectExcerpt = 200;
constexpr size_t kRejectsBuffer = 64 << 10;

// HumanBytes - "24.0 MiB": the byte count is printed too, this is for reading.
std::string HumanBytes(uint64_t n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
  return buf;
}

// KeepInIncoming - a failure of the suppression list or of its caller's hooks
// as Intake reports it: never InvalidArgument, which would say the job itself
// was refused (and the file moved to failed/), but a failure that leaves the
// file in incoming/ to be taken in again.
absl::Status KeepInIncoming(absl::Status st) {
  if (st.ok() || !absl::IsInvalidArgument(st)) return st;
  return absl::UnavailableError(absl::StrCat("suppression: ", st.message()));
}

}  // namespace

std::string_view WaitReasonText(WaitReason reason) {
  switch (reason) {
    case WaitReason::kEmpty:
      return "empty file";
    case WaitReason::kNoFinalLf:
      return "no LF at end";
    case WaitReason::kRecentlyModified:
    case WaitReason::kOpenForWriting:
      return "still being written";
    case WaitReason::kChangedWhileRead:
      return "changed while it was read";
    case WaitReason::kGone:
      return "gone";
  }
  return "?";
}

std::string_view IgnoredText(Ignored kind) {
  switch (kind) {
    case Ignored::kDotFile:
      return "a dot file (still being written, by convention: rename it without the dot)";
    case Ignored::kDirectory:
      return "a directory";
    case Ignored::kSymlink:
      return "a symlink (never followed: rename the file itself in)";
    case Ignored::kFifo:
      return "a FIFO";
    case Ignored::kSocket:
      return "a socket";
    case Ignored::kDevice:
      return "a device file";
    case Ignored::kOther:
      return "not a regular file";
  }
  return "?";
}

std::string FailedFileName(std::string_view name, const NameTaken& taken) {
  const std::string base =
      CutName(name, kMaxFileName - kErrorSuffix.size() - kMaxCounterSuffix);
  return UniqueName(base, [&taken](const std::string& candidate) {
    return !EndsWith(candidate, kRejectsSuffix) && !taken(candidate) &&
           !taken(absl::StrCat(candidate, base::Sv(kErrorSuffix)));
  });
}

std::string AcceptedFileName(std::string_view name, const NameTaken& taken) {
  const std::string base = CutName(name, kMaxFileName - kMaxCounterSuffix);
  return UniqueName(base, [&taken](const std::string& candidate) { return !taken(candidate); });
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return base::ErrnoError(path, "statvfs");
  return static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
}

absl::Status Spool::CheckFreeSpace() const {
  if (floor_.min_free == 0) return absl::OkStatus();
  std::vector<std::string> paths = {dir_};
  paths.insert(paths.end(), floor_.paths.begin(), floor_.paths.end());
  for (const std::string& path : paths) {
    ASSIGN_OR_RETURN(const uint64_t free,
                     floor_.free_bytes ? floor_.free_bytes(path) : FreeBytes(path));
    if (free < floor_.min_free) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "free space: ", path, ": ", free, " bytes free (", HumanBytes(free),
          "), below min_free_space ", floor_.min_free, " (", HumanBytes(floor_.min_free),
          ")"));
    }
  }
  return absl::OkStatus();
}

namespace {

// SourceOf - a job file's identity in JobRecord::source: "dev:inode".
std::string SourceOf(const struct stat& st) { return absl::StrCat(st.st_dev, ":", st.st_ino); }

}  // namespace

absl::StatusOr<Spool> Spool::Open(const std::string& dir) {
  for (const char* sub : {"incoming", "accepted", "failed", "tmp"}) {
    std::error_code ec;
    std::filesystem::create_directories(absl::StrCat(dir, "/", sub), ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat(dir, "/", sub, ": cannot create: ", ec.message()));
    }
  }
  return Spool(dir);
}

absl::StatusOr<std::vector<std::string>> Spool::ForgetAbandonedIntakes(Queue& queue) const {
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, queue.ListJobs());
  std::vector<std::string> sources;
  for (const std::string& name : ListIncoming()) {
    struct stat st {};
    const std::string path = absl::StrCat(incoming(), "/", name);
    if (::stat(path.c_str(), &st) == 0) sources.push_back(SourceOf(st));
  }
  std::vector<std::string> forgotten;
  for (const JobRecord& job : jobs) {
    if (job.state != JobState::kLoading) continue;
    if (std::find(sources.begin(), sources.end(), job.source) != sources.end()) continue;
    RETURN_IF_ERROR(queue.ForgetJob(job));
    forgotten.push_back(job.id);
  }
  return forgotten;
}

std::vector<std::string> Spool::ListIncoming() const { return ScanIncoming().files; }

IncomingScan Spool::ScanIncoming() const {
  IncomingScan scan;
  const std::string dir = incoming();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return scan;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {  // some filesystems leave it to lstat
      struct stat st {};
      if (::lstat(absl::StrCat(dir, "/", base::Sv(name)).c_str(), &st) != 0) continue;
      type = S_ISREG(st.st_mode)    ? DT_REG
             : S_ISDIR(st.st_mode)  ? DT_DIR
             : S_ISLNK(st.st_mode)  ? DT_LNK
             : S_ISFIFO(st.st_mode) ? DT_FIFO
             : S_ISSOCK(st.st_mode) ? DT_SOCK
             : S_ISCHR(st.st_mode)  ? DT_CHR
             : S_ISBLK(st.st_mode)  ? DT_BLK
                                    : DT_UNKNOWN;
    }
    if (name.front() == '.') {
      scan.ignored.emplace_back(name, Ignored::kDotFile);
      continue;
    }
    switch (type) {
      case DT_REG:
        scan.files.emplace_back(name);
        break;
      case DT_DIR:
        scan.ignored.emplace_back(name, Ignored::kDirectory);
        break;
      case DT_LNK:
        scan.ignored.emplace_back(name, Ignored::kSymlink);
        break;
      case DT_FIFO:
        scan.ignored.emplace_back(name, Ignored::kFifo);
        break;
      case DT_SOCK:
        scan.ignored.emplace_back(name, Ignored::kSocket);
        break;
      case DT_CHR:
      case DT_BLK:
        scan.ignored.emplace_back(name, Ignored::kDevice);
        break;
      default:
        scan.ignored.emplace_back(name, Ignored::kOther);
        break;
    }
  }
  ::closedir(d);
  std::sort(scan.files.begin(), scan.files.end());
  std::sort(scan.ignored.begin(), scan.ignored.end());
  return scan;
}

absl::StatusOr<IntakeResult> Spool::Intake(const std::string& name, Queue& queue,
                                           const JobLimits& limits, absl::Time now,
                                           Arrival arrival) const {
  const std::string path = absl::StrCat(incoming(), "/", name);
  const std::string where = absl::StrCat("incoming/", name);
  // Before anything is written, even a refused job's .error.
  RETURN_IF_ERROR(CheckFreeSpace());

  // Refuse the whole job: the file goes to failed/ with the reason beside it,
  // both under a name of their own (a file refused before keeps its .error).
  auto refuse = [&](uint64_t line, std::string_view why) -> absl::Status {
    const std::string reason = absl::StrCat(where, ":", line, ": ", base::Sv(why));
    const std::string failed_name = FailedFileName(name, TakenIn(failed()));
    RETURN_IF_ERROR(base::WriteFileAtomically(absl::StrCat(failed(), "/", failed_name, ".error"),
                                              absl::StrCat(reason, "\n")));
    RETURN_IF_ERROR(MoveTo(path, failed(), failed_name));
    return absl::InvalidArgumentError(reason);
  };
  std::string lease_unavailable;
  // Leave the file alone for now (WRITERS).
  auto wait = [&lease_unavailable](WaitReason reason, std::string detail,
                                   absl::Time settles_at = absl::InfinitePast()) {
    IntakeResult waiting;
    waiting.waiting = IntakeWait{reason, std::move(detail), settles_at};
    waiting.lease_unavailable = lease_unavailable;
    return waiting;
  };

  // O_NONBLOCK: a FIFO put here after the scan must not block the open.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    // Removed since the scan, or a symlink put in its place: the next scan
    // says what it is.
    if (errno == ENOENT || errno == ELOOP) return wait(WaitReason::kGone, "");
    return base::ErrnoError(path, "open");
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError(path, "stat");
  if (!S_ISREG(st.st_mode)) return wait(WaitReason::kGone, "not a regular file");
  if (st.st_size == 0) return wait(WaitReason::kEmpty, "nothing written yet");
  const absl::Duration age = now - MtimeOf(st);
  if (arrival != Arrival::kRenamedIn && age < settle_time_) {
    return wait(WaitReason::kRecentlyModified,
                age < absl::ZeroDuration()
                    ? absl::StrCat("modified ", Seconds(-age),
                                   " in the future (clock skew?), settle_time ",
                                   Seconds(settle_time_))
                    : absl::StrCat("modified ", Seconds(age), " ago, settle_time ",
                                   Seconds(settle_time_)),
                MtimeOf(st) + settle_time_);
  }
  if (OpenForWriting(fd, &lease_unavailable).value_or(false)) {
    return wait(WaitReason::kOpenForWriting, "open for writing by another process");
  }
  char last = 0;
  if (::pread(fd, &last, 1, st.st_size - 1) != 1) return base::ErrnoError(path, "read");
  if (last != '\n') {
    return wait(WaitReason::kNoFinalLf, "its last line does not end in LF yet");
  }
  const std::string source = SourceOf(st);
  LineReader reader(fd);
  ASSIGN_OR_RETURN(HeaderLine header_line, ReadHeaderLine(reader, limits, path));
  if (!header_line.refusal.empty()) return refuse(1, header_line.refusal);
  std::string line = std::move(header_line.line);
  // The checks `volleyctl check` makes too (queue/job_check.h): the same code, so
  // the same messages.
  auto check = JobFileCheck::Start(line, limits);
  if (!check.ok()) return refuse(1, base::StdSv(check.status().message()));
  const JobHeader* header = &check->header();
  const Template* tpl = &check->tpl();
  if (job_check_) {
    if (absl::Status bad = job_check_(*header, *tpl); !bad.ok()) {
      return refuse(1, base::StdSv(bad.message()));
    }
  }

  IntakeResult result;
  result.lease_unavailable = lease_unavailable;
  result.job = header->id;
  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, queue.FindJob(header->id));
  JobRecord job;
  if (existing.has_value()) {
    // The job's own file (same inode and the same header line) is back: a crash
    // came between the commit and the move, or during the intake itself.
    const bool same_file = existing->source == source && existing->header_json == line;
    if (existing->state != JobState::kLoading && same_file) {
      RETURN_IF_ERROR(MoveTo(path, accepted(), AcceptedFileName(name, TakenIn(accepted()))));
      result.job_no = existing->job_no;
      result.accepted = existing->recipients;
      result.resumed = true;
      return result;
    }
    if (existing->state != JobState::kLoading) {
      return refuse(1, absl::StrCat("job: \"", header->id,
                                    "\" was already accepted; a job id is accepted once"));
    }
    if (!same_file) {
      // Another file with the id of a job whose intake a crash interrupted:
      // taking it in would mix two recipient lists under one job.
      return refuse(1, absl::StrCat("job: \"", header->id,
                                    "\" is being taken in from another file; a job id is "
                                    "accepted once"));
    }
    job = *std::move(existing);  // resume an intake a crash interrupted
    result.resumed = true;
  } else {
    // A new job only: one whose intake a crash interrupted was checked when it
    // began, and is finished whatever the clock says now.
    if (absl::Status bad = check->CheckTimes(now); !bad.ok()) {
      return refuse(1, base::StdSv(bad.message()));
    }
    const absl::Time first_due = header->send_after ? std::max(*header->send_after, now) : now;
    ASSIGN_OR_RETURN(job, queue.BeginJob(header->id, line, source, now, first_due));
  }
  result.job_no = job.job_no;

  // Rejected lines are rewritten from scratch on every intake of the file, so a
  // resumed intake does not list them twice.
  const std::string rejects_path = absl::StrCat(failed(), "/", header->id, ".rejects.jsonl");
  std::string rejects;
  int rejects_fd = -1;
  struct RejectsCloser {
    int* fd;
    ~RejectsCloser() { if (*fd >= 0) ::close(*fd); }
  } rejects_closer{&rejects_fd};
  // Written in pieces as they fill, so a job of bad lines costs bounded memory.
  auto flush_rejects = [&]() -> absl::Status {
    if (rejects.empty()) return absl::OkStatus();
    if (rejects_fd < 0) {
      rejects_fd = ::open(rejects_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
      if (rejects_fd < 0) return base::ErrnoError(rejects_path, "open");
    }
    RETURN_IF_ERROR(base::WriteAll(rejects_fd, rejects, rejects_path));
    rejects.clear();
    return absl::OkStatus();
  };
  auto reject = [&](uint64_t line_no, std::string_view reason, std::string_view text) {
    absl::StrAppend(&rejects, "{\"file\":");
    base::AppendJsonString(&rejects, where);
    absl::StrAppend(&rejects, ",\"line\":", line_no, ",\"reason\":");
    base::AppendJsonString(&rejects, reason);
    rejects.append(",\"text\":");
    base::AppendJsonString(&rejects, text.substr(0, kRejectExcerpt));
    rejects.append("}\n");
    ++result.rejected;
  };

  // The scope suppression entries are looked up in: the From domain.
  const std::string from_domain = absl::AsciiStrToLower(base::Sv(DomainOf(header->from)));
  auto writer = queue.NewIntakeWriter(job);
  for (;;) {
    const auto r = reader.Next(limits.max_recipient_line, &line);
    if (r == LineReader::Result::kEnd) break;
    if (r == LineReader::Result::kError) {
      errno = reader.error();
      return base::ErrnoError(path, "read");
    }
    const uint64_t line_no = reader.line_no();
    if (line_no > UINT32_MAX) return refuse(line_no, kTooManyLinesReason);
    if (rejects.size() >= kRejectsBuffer) RETURN_IF_ERROR(flush_rejects());
    if (r == LineReader::Result::kTooLong) {
      reject(line_no, check->TooLongReason(), "");
      continue;
    }
    if (line.empty()) continue;  // a blank line (often the last) carries nothing
    auto rcpt = check->CheckRecipient(line);
    if (!rcpt.ok()) {
      reject(line_no, base::StdSv(rcpt.status().message()), line);
      continue;
    }
    if (suppression_.list != nullptr) {
      absl::StatusOr<std::optional<Suppression>> entry =
          suppression_.list->Check(rcpt->to, from_domain, now);
      // An address the list cannot hold (job.h accepts some it refuses, such
      // as one over kMaxSuppressionAddress) cannot be on it: not suppressed.
      if (!entry.ok() && !absl::IsInvalidArgument(entry.status())) {
        return KeepInIncoming(entry.status());
      }
      if (entry.ok() && entry->has_value()) {
        if (suppression_.on_suppressed) {
          RETURN_IF_ERROR(KeepInIncoming(suppression_.on_suppressed(
              job, static_cast<uint32_t>(line_no), rcpt->to, **entry)));
        }
        ++result.suppressed;
        continue;
      }
    }
    const std::string domain = absl::AsciiStrToLower(base::Sv(DomainOf(rcpt->to)));
    const uint16_t partition = partitioner_ ? partitioner_(domain) : PartitionOf(domain);
    RETURN_IF_ERROR(writer->Add(static_cast<uint32_t>(line_no), partition, EncodeRecipient(*rcpt)));
    // A long job stops where the floor is reached, not after the whole file:
    // the job stays kLoading and the next Intake of the file carries on.
    if (++result.accepted % kFreeSpaceCheckEvery == 0) RETURN_IF_ERROR(CheckFreeSpace());
  }
  // WRITERS: the file must be the one stat'd before reading, byte for byte.
  std::string changed;
  struct stat end {};
  if (::fstat(fd, &end) != 0) return base::ErrnoError(path, "stat");
  if (reader.bytes_read() != static_cast<uint64_t>(st.st_size)) {
    changed = absl::StrCat("read ", reader.bytes_read(), " bytes of a file of ", st.st_size);
  } else if (!SameFile(st, end)) {
    changed = absl::StrCat("size ", st.st_size, " -> ", end.st_size, ", modified during the intake");
  } else if (OpenForWriting(fd, &lease_unavailable).value_or(false)) {
    changed = "opened for writing during the intake";
  }
  if (!changed.empty()) {
    // Dropped, not left to resume: a file rewritten shorter would otherwise
    // keep recipients whose lines are gone.
    if (rejects_fd >= 0) {
      ::close(std::exchange(rejects_fd, -1));
      ::unlink(rejects_path.c_str());
    }
    writer.reset();
    RETURN_IF_ERROR(queue.ForgetJob(job));
    return wait(WaitReason::kChangedWhileRead,
                absl::StrCat(changed, "; what was queued of it is dropped until it settles"));
  }
  if (result.rejected > 0) {
    RETURN_IF_ERROR(flush_rejects());
  } else {
    ::unlink(rejects_path.c_str());
  }
  // Known only now that every line was read: a placeholder no recipient defines.
  // The job is still kLoading (never ready, nothing of it sent): drop what was
  // written of it, then refuse it like any other. before_commit is not called,
  // so the suppressed recipients handed over are never recorded: the job they
  // were left out of does not exist. XXX(two passes would cost every job a second
  // parse): on_suppressed has run for them, so a counter it keeps counts them.
  if (absl::Status bad = check->Finish(); !bad.ok()) {
    writer.reset();
    RETURN_IF_ERROR(queue.ForgetJob(job));
    return refuse(1, base::StdSv(bad.message()));
  }
  result.lacking = check->Lacking();
  if (result.suppressed > 0 && suppression_.before_commit) {
    RETURN_IF_ERROR(KeepInIncoming(suppression_.before_commit(job, result.suppressed)));
  }
  RETURN_IF_ERROR(writer->Commit(result.accepted, result.suppressed));
  // From the commit on the job is queued, whatever happens to the file: a
  // failed move is reported, not returned as a failed intake (the file, if it
  // is still in incoming/, is recognised as this job's next time).
  if (absl::Status moved = MoveTo(path, accepted(), AcceptedFileName(name, TakenIn(accepted())));
      !moved.ok()) {
    result.warning = std::string(moved.message());
  }
  return result;
}

}  // namespace volley::queue
