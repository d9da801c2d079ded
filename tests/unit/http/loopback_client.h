// loopback_client.h - raw HTTP over loopback TCP for tests of engine/http
// servers (the admin API's, volley-sink's): a request sent as written, bytes
// and all, and everything the server answered until it closed.
#ifndef VOLLEY_TESTS_UNIT_HTTP_LOOPBACK_CLIENT_H_
#define VOLLEY_TESTS_UNIT_HTTP_LOOPBACK_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace volley::testing {

// ConnectLoopback - a connected socket to 127.0.0.1:port (the test fails if not).
inline int ConnectLoopback(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Exchange - send `request`, read until the server closes.
inline std::string Exchange(uint16_t port, std::string_view request) {
  const int fd = ConnectLoopback(port);
  for (size_t off = 0; off < request.size();) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace volley::testing

#endif  // VOLLEY_TESTS_UNIT_HTTP_LOOPBACK_CLIENT_H_
