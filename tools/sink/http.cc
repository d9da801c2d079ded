// http.cc - volley-sink's live counters over HTTP; see http.h.
#include "tools/sink/http.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tools/sink/listen.h"

namespace volley::sink {
namespace {

std::string Response(std::string_view status, std::string_view type, std::string_view body) {
  return absl::StrCat("HTTP/1.1 ", absl::string_view(status.data(), status.size()),
                      "\r\nContent-Type: ", absl::string_view(type.data(), type.size()),
                      "\r\nContent-Length: ", body.size(),
                      "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                      absl::string_view(body.data(), body.size()));
}

// HeadEnd - where the blank line ending a request head starts, or npos.
size_t HeadEnd(std::string_view data) {
  const size_t crlf = data.find("\r\n\r\n");
  const size_t lf = data.find("\n\n");
  return crlf < lf ? crlf : lf;
}

}  // namespace

std::string HttpAnswer(std::string_view head, bool complete,
                       const std::function<std::string()>& stats_json) {
  if (!complete) {
    return Response("431 Request Header Fields Too Large", "text/plain",
                    "request head too large\n");
  }
  std::string_view line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // METHOD SP TARGET SP HTTP/1.x, nothing else (RFC 9112 3).
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      line.substr(sp2 + 1).substr(0, 7) != "HTTP/1." || sp1 == 0 || sp2 == sp1 + 1) {
    return Response("400 Bad Request", "text/plain", "not an HTTP/1.x request\n");
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (method != "GET" || target != "/stats") {
    return Response("404 Not Found", "text/plain", "only GET /stats is here\n");
  }
  return Response("200 OK", "application/json", stats_json() + "\n");
}

StatsEndpoint::StatsEndpoint(int listen_fd, int stop_fd, std::string bound,
                             std::function<std::string()> stats_json)
    : listen_fd_(listen_fd),
      stop_fd_(stop_fd),
      bound_(std::move(bound)),
      stats_json_(std::move(stats_json)) {}

absl::StatusOr<std::unique_ptr<StatsEndpoint>> StatsEndpoint::Create(
    std::string_view address, std::function<std::string()> stats_json) {
  const std::string where = absl::StrCat("--http '", absl::string_view(address.data(), address.size()), "'");
  sockaddr_storage ss;
  socklen_t len = 0;
  if (absl::Status st = ParseListenAddress(address, &ss, &len); !st.ok()) {
    // The parser names --listen; this is --http.
    std::string message(st.message());
    const size_t colon = message.find("': ");
    return absl::InvalidArgumentError(
        absl::StrCat(where, colon == std::string::npos ? message : message.substr(colon + 1)));
  }
  const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(where, ": socket: ", std::strerror(errno)));
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0 || listen(fd, 16) < 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(where, ": ", std::strerror(err)));
  }
  socklen_t got = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &got);
  const int stop_fd = eventfd(0, EFD_CLOEXEC);
  if (stop_fd < 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat(where, ": eventfd: ", std::strerror(err)));
  }
  return std::unique_ptr<StatsEndpoint>(
      new StatsEndpoint(fd, stop_fd, FormatAddress(ss), std::move(stats_json)));
}

StatsEndpoint::~StatsEndpoint() {
  Stop();
  close(listen_fd_);
  close(stop_fd_);
}

absl::Status StatsEndpoint::Start() {
  try {
    thread_ = std::thread([this] { Loop(); });
  } catch (const std::system_error& e) {
    return absl::InternalError(absl::StrCat("--http: thread: ", e.what()));
  }
  return absl::OkStatus();
}

void StatsEndpoint::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  while (write(stop_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  thread_.join();
}

void StatsEndpoint::Loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // EAGAIN: the client went away first. EMFILE and the like: the sink is
      // out of descriptors; wait instead of spinning on a ready listener.
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        poll(fds + 1, 1, 100);
      }
      continue;
    }
    Serve(fd);
    close(fd);
  }
}

void StatsEndpoint::Serve(int fd) {
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(kHttpTimeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string data;
  char buf[2048];
  size_t end = std::string::npos;
  while (data.size() < kMaxHttpRequest) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // gone, or too slow: no answer
    data.append(buf, static_cast<size_t>(n));
    end = HeadEnd(data);
    if (end != std::string::npos) break;
  }
  const bool complete = end != std::string::npos && end <= kMaxHttpRequest;
  const std::string answer =
      HttpAnswer(std::string_view(data).substr(0, complete ? end : kMaxHttpRequest), complete,
                 stats_json_);
  size_t sent = 0;
  while (sent < answer.size()) {
    const ssize_t n = send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
  // Say we are done writing before close, so that a request body the client
  // still sends does not turn the close into a reset that loses the answer.
  shutdown(fd, SHUT_WR);
}

}  // namespace volley::sink
