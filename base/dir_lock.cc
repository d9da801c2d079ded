// dir_lock.cc - see dir_lock.h.
#include "base/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/file.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::base {
namespace {

// What a holder writes is short; more than this is not a holder's text.
constexpr size_t kMaxHolderText = 512;

// HolderText - what the lock file says about its holder ("pid 1234 on host
// mail1"), or nullopt when it says nothing usable yet (the holder is between
// its lock and its write, or something else wrote it).
std::optional<std::string> HolderText(int fd) {
  char buf[kMaxHolderText];
  const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  std::string text(buf, n > 0 ? static_cast<size_t>(n) : 0);
  const std::string_view line = base::StdSv(absl::StripAsciiWhitespace(base::Sv(text)));
  if (line.empty() || line.substr(0, 4) != "pid ") return std::nullopt;
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return std::nullopt;
  }
  return std::string(line);
}

std::string HostName() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "(unknown)";
  return host;
}

}  // namespace

absl::StatusOr<DirLock> DirLock::Acquire(const std::string& dir, std::string_view what,
                                         std::string_view program) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  std::string path = absl::StrCat(dir, "/", base::Sv(program), ".lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(path, "open");
  DirLock lock(fd, path);  // closes fd on every return below
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return ErrnoError(path, "flock");
    const std::optional<std::string> holder = HolderText(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        base::Sv(what), " ", dir, " is in use by ",
        holder ? absl::StrCat(base::Sv(program), " ", *holder) : "another process", " (lock ",
        path, ", released when that process exits)"));
  }
  // Written after the lock, then cut to length: a reader never sees an empty
  // file between a truncate and the write, only the old holder's text or ours.
  const std::string text = absl::StrCat("pid ", ::getpid(), " on host ", HostName(), "\n");
  if (::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::ftruncate(fd, static_cast<off_t>(text.size())) != 0) {
    return ErrnoError(path, "write");
  }
  return lock;
}

DirLock& DirLock::operator=(DirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace volley::base
