// job_lines.cc - see job_lines.h
#include "queue/job_lines.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status.h"
#include "base/strings.h"
#include "simdjson.h"

namespace volley::queue {
namespace {

constexpr size_t kReadChunk = 64 << 10;

int64_t MtimeNs(const struct stat& st) {
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

// FirstLine - the header line of a job file, without reading the rest.
absl::StatusOr<std::string> FirstLine(const std::string& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  std::string out;
  std::string buf(kReadChunk, '\0');
  absl::Status status = absl::OkStatus();
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = base::ErrnoError(path, "read");
      break;
    }
    if (n == 0) break;
    const std::string_view chunk(buf.data(), static_cast<size_t>(n));
    const size_t nl = chunk.find('\n');
    out.append(chunk.substr(0, nl));
    if (nl != std::string_view::npos) break;
    if (out.size() > max_bytes) {
      status = absl::InvalidArgumentError(absl::StrCat(path, ": line 1 is too long"));
      break;
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  if (!out.empty() && out.back() == '\r') out.pop_back();
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobFileLines>> JobFileLines::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  std::unique_ptr<JobFileLines> f(new JobFileLines(path, fd));
  f->checkpoints_.push_back(0);
  std::string buf(kReadChunk, '\0');
  uint64_t offset = 0;
  uint32_t line = 1;  // the line that starts at the current position
  bool line_has_bytes = false;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(path, "read");
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[static_cast<size_t>(i)] != '\n') {
        line_has_bytes = true;
        continue;
      }
      line_has_bytes = false;
      ++line;
      if ((line - 1) % kStride == 0) f->checkpoints_.push_back(offset + static_cast<uint64_t>(i) + 1);
    }
    offset += static_cast<uint64_t>(n);
  }
  // A last line without LF counts, as intake counts it.
  f->lines_ = line_has_bytes ? line : line - 1;
  return f;
}

JobFileLines::~JobFileLines() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::string> JobFileLines::Line(uint32_t number, size_t max_bytes) const {
  if (number == 0 || number > lines_) {
    return absl::NotFoundError(absl::StrCat(path_, ": has no line ", number));
  }
  const uint32_t k = (number - 1) / kStride;
  uint64_t offset = checkpoints_[k];
  uint32_t current = k * kStride + 1;
  std::string out;
  std::string buf(kReadChunk, '\0');
  for (;;) {
    const ssize_t n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(path_, "read");
    }
    if (n == 0) break;
    const std::string_view chunk(buf.data(), static_cast<size_t>(n));
    size_t pos = 0;
    while (pos < chunk.size()) {
      const size_t nl = chunk.find('\n', pos);
      const size_t stop = nl == std::string_view::npos ? chunk.size() : nl;
      if (current == number) {
        if (out.size() + (stop - pos) > max_bytes + 1) {  // + 1: a CR that is dropped
          return absl::InvalidArgumentError(
              absl::StrCat(path_, ": line ", number, " is longer than ", max_bytes, " octets"));
        }
        out.append(chunk.substr(pos, stop - pos));
        if (nl != std::string_view::npos) {
          if (!out.empty() && out.back() == '\r') out.pop_back();
          return out;
        }
      }
      if (nl == std::string_view::npos) break;
      ++current;
      pos = nl + 1;
    }
    offset += static_cast<uint64_t>(n);
  }
  if (current == number && !out.empty()) {
    if (out.back() == '\r') out.pop_back();
    return out;
  }
  return absl::NotFoundError(absl::StrCat(path_, ": has no line ", number));
}

AcceptedJobFiles::AcceptedJobFiles(std::string spool) : dir_(std::move(spool) + "/accepted") {}

absl::Status AcceptedJobFiles::Rescan() {
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) return base::ErrnoError(dir_, "stat");
  if (MtimeNs(st) == scanned_mtime_ns_) return absl::OkStatus();
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return base::ErrnoError(dir_, "open");
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::map<std::string, std::string, std::less<>> known;
  for (const auto& [id, path] : path_of_id_) known.emplace(path, id);
  simdjson::dom::parser parser;
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(dir_, "/", name);
    if (known.contains(path)) continue;
    absl::StatusOr<std::string> header = FirstLine(path, JobLimits{}.max_header_line);
    if (!header.ok()) continue;  // gone meanwhile, or unreadable: not one we can use
    simdjson::dom::element doc;
    std::string_view id;
    if (parser.parse(*header).get(doc) == simdjson::SUCCESS &&
        doc["job"].get_string().get(id) == simdjson::SUCCESS) {
      path_of_id_.emplace(std::string(id), path);
    }
  }
  scanned_mtime_ns_ = MtimeNs(st);
  return absl::OkStatus();
}

absl::StatusOr<std::string> AcceptedJobFiles::PathOf(std::string_view job_id) {
  auto it = path_of_id_.find(job_id);
  if (it == path_of_id_.end()) {
    RETURN_IF_ERROR(Rescan());
    it = path_of_id_.find(job_id);
  }
  if (it == path_of_id_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no job file in ", dir_, " is job \"", base::Sv(job_id), "\""));
  }
  return it->second;
}

absl::StatusOr<const JobFileLines*> AcceptedJobFiles::Indexed(const std::string& path) {
  for (auto it = indexed_.begin(); it != indexed_.end(); ++it) {
    if ((*it)->path() != path) continue;
    indexed_.splice(indexed_.begin(), indexed_, it);
    return indexed_.front().get();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<JobFileLines> f, JobFileLines::Open(path));
  indexed_.push_front(std::move(f));
  if (indexed_.size() > kMaxIndexedFiles) indexed_.pop_back();
  return indexed_.front().get();
}

absl::StatusOr<std::string> AcceptedJobFiles::RecipientAt(std::string_view job_id, uint32_t line,
                                                          const JobLimits& limits) {
  ASSIGN_OR_RETURN(const std::string path, PathOf(job_id));
  if (line < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": line ", line, " is the job header, not a recipient"));
  }
  ASSIGN_OR_RETURN(const JobFileLines* f, Indexed(path));
  ASSIGN_OR_RETURN(const std::string text, f->Line(line, limits.max_recipient_line));
  absl::StatusOr<Recipient> r = ParseRecipientLine(text, limits);
  if (!r.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": line ", line, ": ", r.status().message()));
  }
  return std::move(r->to);
}

}  // namespace volley::queue
