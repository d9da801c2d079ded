#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <iterator>

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

absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(dir, "open");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return base::ErrnoError(dir, "fsync");
  return absl::OkStatus();
}

// MoveInto - rename `from` into folder `dir`, under a new name if its own is taken.
absl::StatusOr<std::string> MoveInto(const std::string& from, const std::string& dir,
                                     const std::string& name) {
  std::string to = absl::StrCat(dir, "/", name);
  for (int n = 1; ::access(to.c_str(), F_OK) == 0; ++n) {
    to = absl::StrCat(dir, "/", name, ".", n);
  }
  if (::rename(from.c_str(), to.c_str()) != 0) return base::ErrnoError(from, "rename");
  RETURN_IF_ERROR(SyncDir(dir));
  return to;
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

std::vector<std::string> Spool::ListIncoming() const {
  std::vector<std::string> names;
  const std::string dir = incoming();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<IntakeResult> Spool::Intake(const std::string& name, Queue& queue,
                                           const JobLimits& limits, absl::Time now) const {
  const std::string path = absl::StrCat(incoming(), "/", name);
  const std::string where = absl::StrCat("incoming/", name);
  // Before anything is written, even a refused job's .error.
  RETURN_IF_ERROR(CheckFreeSpace());

  // Refuse the whole job: the file goes to failed/ with the reason beside it.
  auto refuse = [&](uint64_t line, std::string_view why) -> absl::Status {
    const std::string reason = absl::StrCat(where, ":", line, ": ", base::Sv(why));
    RETURN_IF_ERROR(base::WriteFileAtomically(absl::StrCat(failed(), "/", name, ".error"),
                                   absl::StrCat(reason, "\n")));
    auto moved = MoveInto(path, failed(), name);
    if (!moved.ok()) return moved.status();
    return absl::InvalidArgumentError(reason);
  };

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError(path, "stat");
  const std::string source = SourceOf(st);
  LineReader reader(fd);
  std::string line;

  switch (reader.Next(limits.max_header_line, &line)) {
    case LineReader::Result::kLine:
      break;
    case LineReader::Result::kTooLong:
      return refuse(1, HeaderTooLongReason(limits));
    case LineReader::Result::kEnd:
      return refuse(1, kEmptyJobFileReason);
    case LineReader::Result::kError:
      errno = reader.error();
      return base::ErrnoError(path, "read");
  }
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
  result.job = header->id;
  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, queue.FindJob(header->id));
  JobRecord job;
  if (existing.has_value()) {
    // The job's own file (same inode and the same header line) is back: a crash
    // came between the commit and the move, or during the intake itself.
    const bool same_file = existing->source == source && existing->header_json == line;
    if (existing->state != JobState::kLoading && same_file) {
      auto moved = MoveInto(path, accepted(), name);
      if (!moved.ok()) return moved.status();
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
  if (auto moved = MoveInto(path, accepted(), name); !moved.ok()) {
    result.warning = std::string(moved.status().message());
  }
  return result;
}

}  // namespace volley::queue
