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
#include "queue/template.h"

namespace volley::queue {
namespace {

// LineReader - reads a file line by line through a fixed buffer. A line longer
// than the caller's bound is reported as too long and skipped, never stored.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd), buffer_(kChunk) {}

  enum class Result { kLine, kTooLong, kEnd, kError };

  // Next line (without its LF, and without a CR before the LF) in *line, valid
  // until the next call.
  Result Next(size_t max_line, std::string* line) {
    line->clear();
    bool too_long = false;
    for (;;) {
      const char* begin = buffer_.data() + start_;
      const char* nl = static_cast<const char*>(std::memchr(begin, '\n', end_ - start_));
      const size_t avail = nl ? static_cast<size_t>(nl - begin) : end_ - start_;
      if (!too_long) {
        if (line->size() + avail > max_line) {
          too_long = true;
          line->clear();
        } else {
          line->append(begin, avail);
        }
      }
      if (nl) {
        start_ += avail + 1;
        ++line_no_;
        if (too_long) return Result::kTooLong;
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return Result::kLine;
      }
      start_ = end_ = 0;
      const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return Result::kError;
      }
      if (n == 0) {
        if (eof_ || (line->empty() && !too_long)) return Result::kEnd;
        eof_ = true;  // a last line without LF still counts
        ++line_no_;
        if (too_long) return Result::kTooLong;
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return Result::kLine;
      }
      end_ = static_cast<size_t>(n);
    }
  }

  uint64_t line_no() const { return line_no_; }
  int error() const { return error_; }

 private:
  static constexpr size_t kChunk = 1 << 20;
  int fd_;
  std::vector<char> buffer_;
  size_t start_ = 0;
  size_t end_ = 0;
  uint64_t line_no_ = 0;
  bool eof_ = false;
  int error_ = 0;
};

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
      return refuse(1, absl::StrCat("header: longer than ", limits.max_header_line, " bytes"));
    case LineReader::Result::kEnd:
      return refuse(1, "header: empty file");
    case LineReader::Result::kError:
      errno = reader.error();
      return base::ErrnoError(path, "read");
  }
  auto header = ParseJobHeader(line, limits);
  if (!header.ok()) return refuse(1, base::StdSv(header.status().message()));
  // Compiled once per job to check how long each recipient's lines render.
  // ParseJobHeader has compiled it already, so this cannot fail.
  auto tpl = Template::Compile(header->message);
  if (!tpl.ok()) {
    return refuse(1, absl::StrCat("message: ", tpl.status().message()));
  }
  if (absl::Status bad = CheckMessageHeaders(*header, *tpl); !bad.ok()) {
    return refuse(1, base::StdSv(bad.message()));
  }
  if (job_check_) {
    if (absl::Status bad = job_check_(*header, *tpl); !bad.ok()) {
      return refuse(1, base::StdSv(bad.message()));
    }
  }
  // Without placeholders every recipient gets the same lines, which Compile() has
  // held to 998 octets: nothing is left to check per recipient.
  const bool check_rendered_lines = tpl->has_placeholders();
  // The token is made at send time: count the longest one a token can be.
  const std::string longest_token(kMaxUnsubscribeToken, 'x');
  Builtins longest_builtins;
  longest_builtins.unsubscribe_token = longest_token;
  const bool check_unsubscribe_url = header->unsubscribe_url.find("{{") != std::string::npos;
  std::string unsubscribe_url;

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
    if (line_no > UINT32_MAX) return refuse(line_no, "job: too many lines");
    if (rejects.size() >= kRejectsBuffer) RETURN_IF_ERROR(flush_rejects());
    if (r == LineReader::Result::kTooLong) {
      reject(line_no, absl::StrCat("line: longer than ", limits.max_recipient_line, " bytes"), "");
      continue;
    }
    if (line.empty()) continue;  // a blank line (often the last) carries nothing
    auto rcpt = ParseRecipientLine(line, limits);
    if (!rcpt.ok()) {
      reject(line_no, base::StdSv(rcpt.status().message()), line);
      continue;
    }
    // RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: no line over 998 octets leaves Volley.
    // Refused here, where the sender can be told, not at delivery.
    if (check_rendered_lines) {
      if (absl::Status too_long = tpl->CheckLineLength(*rcpt, longest_builtins);
          !too_long.ok()) {
        reject(line_no, base::StdSv(too_long.message()), line);
        continue;
      }
    }
    if (check_unsubscribe_url &&
        !RenderUnsubscribeUrl(*header, *rcpt, longest_token, &unsubscribe_url)) {
      reject(line_no,
             absl::StrCat("unsubscribe_url: renders longer than ", kMaxUnsubscribeUrl,
                          " octets for this recipient (values are percent-encoded)"),
             line);
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
