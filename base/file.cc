#include "base/file.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::base {

absl::Status ErrnoError(std::string_view where, std::string_view what) {
  const int err = errno;
  std::string msg = absl::StrCat(Sv(where), ": ", Sv(what), ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::UnavailableError(msg);
}

absl::Status WriteAll(int fd, std::string_view data, std::string_view where, size_t* written) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (written != nullptr) *written = done;
      return ErrnoError(where, "write");
    }
    done += static_cast<size_t>(n);
  }
  if (written != nullptr) *written = done;
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(tmp, "open");
  absl::Status st = WriteAll(fd, data, tmp);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError(tmp, "close");
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError(path, "rename");
  return st;
}

void RaiseFileLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace volley::base
