// ring_test.cc - the reactor on a real io_uring: socketpairs, listeners, eventfds
#include "engine/reactor/ring.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/reactor/slot_table.h"
#include "gtest/gtest.h"

namespace volley::reactor {
namespace {

enum Op : uint8_t { kOpSend = 1, kOpRecv, kOpRecvOwn, kOpAccept, kOpTimeout, kOpPoll, kOpNobodysOp };

// SocketPair - two connected stream sockets, closed at the end of the test.
struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0) << strerror(errno);
    a = fds[0];
    b = fds[1];
  }
  ~SocketPair() {
    close(a);
    close(b);
  }
  void Write(const std::string& bytes) const {
    ASSERT_EQ(write(b, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  int a = -1;  // the ring's end
  int b = -1;  // the test's end
};

// Turns - SubmitAndDispatch until `done` or `turns` turns have passed; the
// bound keeps a broken ring from hanging the test (it then fails on `done`).
template <typename Done>
void Turns(Ring& ring, Done done, int turns = 200) {
  for (int i = 0; i < turns && !done(); ++i) {
    ASSERT_TRUE(ring.SubmitAndDispatch(absl::Milliseconds(50)).ok());
  }
}

RingOptions WithBuffers(unsigned count, size_t size) {
  RingOptions o;
  o.sq_entries = 64;
  o.cq_entries = 256;
  o.recv_buffers = count;
  o.recv_buffer_size = size;
  return o;
}

TEST(Ring, SendAndReceiveThroughHandlers) {
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  SocketPair p;
  int sent = 0;
  std::string got;
  char buf[64];
  ring.Handle(kOpSend, [&](const Completion& c) { sent = c.result; });
  ring.Handle(kOpRecv, [&](const Completion& c) {
    ASSERT_GT(c.result, 0);
    EXPECT_FALSE(c.has_buffer());
    got.append(buf, static_cast<size_t>(c.result));
  });
  const std::string hello = "EHLO volley\r\n";
  ring.PrepSend(p.a, hello.data(), hello.size(), MakeTag(0, 0, kOpSend));
  ring.PrepRecv(p.a, buf, sizeof buf, MakeTag(0, 0, kOpRecv));
  p.Write("250 ok\r\n");
  Turns(ring, [&] { return sent != 0 && !got.empty(); });
  EXPECT_EQ(sent, static_cast<int>(hello.size()));
  EXPECT_EQ(got, "250 ok\r\n");
  char peer[64] = {};
  ASSERT_EQ(read(p.b, peer, sizeof peer), static_cast<ssize_t>(hello.size()));
  EXPECT_EQ(std::string(peer), hello);
  EXPECT_EQ(ring.unknown_completions(), 0u);
}

TEST(Ring, OldEntryPointsStillWork) {
  // volleyd's shard calls Init(entries) and SubmitAndWait(timeout, fn(tag, result)).
  Ring ring;
  ASSERT_TRUE(ring.Init(4096).ok());
  SocketPair p;
  char buf[16];
  ring.PrepRecv(p.a, buf, sizeof buf, MakeTag(7, 3, kOpRecv));
  p.Write("x");
  uint64_t tag = 0;
  int result = 0;
  for (int i = 0; i < 100 && tag == 0; ++i) {
    ASSERT_TRUE(ring.SubmitAndWait(absl::Milliseconds(50), [&](uint64_t t, int r) {
                      tag = t;
                      result = r;
                    }).ok());
  }
  EXPECT_EQ(tag, MakeTag(7, 3, kOpRecv));
  EXPECT_EQ(result, 1);
}

TEST(Ring, UnknownOperationIsReportedNotApplied) {
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  SocketPair p;
  int handled = 0;
  ring.Handle(kOpRecv, [&](const Completion&) { ++handled; });
  char buf[16];
  // A receive whose operation nobody registered.
  ring.PrepRecv(p.a, buf, sizeof buf, MakeTag(1, 0, kOpNobodysOp));
  p.Write("stray");
  Turns(ring, [&] { return ring.unknown_completions() > 0; });
  EXPECT_EQ(ring.unknown_completions(), 1u);
  EXPECT_EQ(handled, 0);
}

TEST(Ring, UnknownCompletionGivesItsBufferBack) {
  Ring ring;
  ASSERT_TRUE(ring.Init(WithBuffers(4, 64)).ok());
  ASSERT_TRUE(ring.has_buffer_ring());
  SocketPair p;
  ring.PrepRecvFromRing(p.a, MakeTag(0, 0, kOpNobodysOp));
  p.Write("lost");
  Turns(ring, [&] { return ring.unknown_completions() > 0; });
  EXPECT_EQ(ring.unknown_completions(), 1u);
  EXPECT_EQ(ring.buffers_held(), 0u);
}

TEST(Ring, ReceiveThroughTheBufferRing) {
  Ring ring;
  ASSERT_TRUE(ring.Init(WithBuffers(2, 64)).ok());
  ASSERT_TRUE(ring.has_buffer_ring());
  EXPECT_EQ(ring.recv_buffer_size(), 64u);
  SocketPair p;
  std::vector<std::string> got;
  ring.Handle(kOpRecv, [&](const Completion& c) {
    EXPECT_TRUE(c.has_buffer());
    EXPECT_EQ(ring.buffers_held(), 1u);
    got.emplace_back(ring.Received(c));
    ring.ReturnBuffer(c);
  });
  // More receives than buffers, one after the other: each buffer is given
  // back and picked again.
  for (int i = 0; i < 10; ++i) {
    const std::string line = "line " + std::to_string(i);
    ring.PrepRecvFromRing(p.a, MakeTag(0, 0, kOpRecv));
    p.Write(line);
    const size_t before = got.size();
    Turns(ring, [&] { return got.size() > before; });
    ASSERT_EQ(got.size(), before + 1);
    EXPECT_EQ(got.back(), line);
  }
  EXPECT_EQ(ring.buffers_held(), 0u);
}

TEST(Ring, EmptyBufferRingSaysEnobufsAndOwnBufferTakesOver) {
  Ring ring;
  ASSERT_TRUE(ring.Init(WithBuffers(2, 64)).ok());
  ASSERT_TRUE(ring.has_buffer_ring());
  EXPECT_EQ(ring.out_of_buffers(), 0u);
  SocketPair p[3];
  std::vector<Completion> held;  // completions whose buffers are not given back yet
  int enobufs = 0;
  std::string fallback;
  char own[64];
  ring.Handle(kOpRecv, [&](const Completion& c) {
    if (c.result == -ENOBUFS) {
      ++enobufs;
      // Every buffer is taken: this connection reads into its own.
      ring.PrepRecv(p[SlotOf(c.tag)].a, own, sizeof own, MakeTag(SlotOf(c.tag), 0, kOpRecvOwn));
      return;
    }
    ASSERT_TRUE(c.has_buffer()) << c.result;
    held.push_back(c);
  });
  ring.Handle(kOpRecvOwn, [&](const Completion& c) {
    ASSERT_GT(c.result, 0);
    fallback.assign(own, static_cast<size_t>(c.result));
  });
  for (uint32_t i = 0; i < 3; ++i) p[i].Write("data " + std::to_string(i));
  for (uint32_t i = 0; i < 3; ++i) ring.PrepRecvFromRing(p[i].a, MakeTag(i, 0, kOpRecv));
  Turns(ring, [&] { return held.size() + static_cast<size_t>(enobufs) == 3 && !fallback.empty(); });
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(enobufs, 1);
  EXPECT_EQ(ring.out_of_buffers(), 1u) << "the fallback is counted for the metrics";
  EXPECT_EQ(ring.buffers_held(), 2u);
  EXPECT_EQ(fallback.substr(0, 5), "data ");
  std::set<std::string> seen{fallback};
  for (const Completion& c : held) seen.emplace(ring.Received(c));
  EXPECT_EQ(seen, (std::set<std::string>{"data 0", "data 1", "data 2"}));
  for (const Completion& c : held) ring.ReturnBuffer(c);
  EXPECT_EQ(ring.buffers_held(), 0u);
}

TEST(Ring, BufferRingTurnedOffLeavesOwnBuffers) {
  RingOptions o = WithBuffers(4, 64);
  o.buffer_ring = false;  // as if the kernel refused it
  Ring ring;
  ASSERT_TRUE(ring.Init(o).ok());
  EXPECT_FALSE(ring.has_buffer_ring());
  SocketPair p;
  char own[64];
  std::string got;
  ring.Handle(kOpRecv, [&](const Completion& c) {
    EXPECT_FALSE(c.has_buffer());
    EXPECT_TRUE(ring.Received(c).empty());
    got.assign(own, static_cast<size_t>(c.result));
    ring.ReturnBuffer(c);  // a no-op without a buffer
  });
  ring.PrepRecv(p.a, own, sizeof own, MakeTag(0, 0, kOpRecv));
  p.Write("own");
  Turns(ring, [&] { return !got.empty(); });
  EXPECT_EQ(got, "own");
}

TEST(Ring, StaleCompletionIsRecognisedBySlotGeneration) {
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  SlotTable<std::string> conns;
  SocketPair p;
  char buf[16];
  const uint32_t slot = conns.Acquire("first");
  ring.PrepRecv(p.a, buf, sizeof buf, conns.Tag(slot, kOpRecv));
  conns.Release(slot);
  ASSERT_EQ(conns.Acquire("second"), slot);  // reused while the receive is in flight
  int stale = 0;
  int applied = 0;
  ring.Handle(kOpRecv, [&](const Completion& c) {
    if (conns.Find(c.tag) == nullptr) {
      ++stale;
    } else {
      ++applied;
    }
  });
  p.Write("late");
  Turns(ring, [&] { return stale + applied > 0; });
  EXPECT_EQ(stale, 1);
  EXPECT_EQ(applied, 0);
}

TEST(Ring, BatchDrainTakesMoreThanOneBatch) {
  RingOptions o;
  o.sq_entries = 1024;
  o.cq_entries = 2048;  // explicit: all of them may complete at once
  Ring ring;
  ASSERT_TRUE(ring.Init(o).ok());
  SocketPair p;
  // Polls for a writable socket all complete at once: more than one batch.
  constexpr uint32_t kPolls = 3 * kCompletionBatch + 7;
  std::vector<int> seen(kPolls, 0);
  ring.Handle(kOpPoll, [&](const Completion& c) {
    EXPECT_GT(c.result, 0);
    ++seen[SlotOf(c.tag)];
  });
  for (uint32_t i = 0; i < kPolls; ++i) ring.PrepPollAdd(p.a, POLLOUT, MakeTag(i, 0, kOpPoll));
  uint32_t total = 0;
  Turns(ring, [&] {
    total = 0;
    for (int n : seen) total += static_cast<uint32_t>(n);
    return total == kPolls;
  });
  EXPECT_EQ(total, kPolls);
  for (uint32_t i = 0; i < kPolls; ++i) EXPECT_EQ(seen[i], 1) << "poll " << i;
}

// Listener - a TCP socket listening on 127.0.0.1 at a port the kernel picks.
struct Listener {
  Listener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  }
  ~Listener() { close(fd); }
  int Connect() const {
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    return c;
  }
  int fd = -1;
  sockaddr_in addr{};
};

// AcceptThree - three clients connect; returns how many accepts said more().
int AcceptThree(Ring& ring, const Listener& l) {
  std::vector<int> accepted;
  int more = 0;
  ring.Handle(kOpAccept, [&](const Completion& c) {
    EXPECT_GE(c.result, 0) << strerror(-c.result);
    if (c.result >= 0) accepted.push_back(c.result);
    if (c.more()) {
      ++more;
    } else {
      ring.PrepAccept(l.fd, c.tag);  // one-shot: arm again
    }
  });
  ring.PrepAccept(l.fd, MakeTag(0, 0, kOpAccept));
  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(l.Connect());
  Turns(ring, [&] { return accepted.size() == 3; });
  EXPECT_EQ(accepted.size(), 3u);
  for (int fd : accepted) close(fd);
  for (int fd : clients) close(fd);
  return more;
}

TEST(Ring, MultishotAcceptStaysArmed) {
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  ASSERT_TRUE(ring.multishot_accept());
  Listener l;
  EXPECT_EQ(AcceptThree(ring, l), 3);
}

TEST(Ring, OneShotAcceptFallback) {
  RingOptions o;
  o.multishot_accept = false;  // as after FallBackToOneShotAccept
  Ring ring;
  ASSERT_TRUE(ring.Init(o).ok());
  EXPECT_FALSE(ring.multishot_accept());
  Listener l;
  EXPECT_EQ(AcceptThree(ring, l), 0);
}

TEST(Ring, TimeoutCompletesWithEtime) {
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  Timespec storage;
  int result = 0;
  ring.Handle(kOpTimeout, [&](const Completion& c) { result = c.result; });
  ring.PrepTimeout(&storage, absl::Milliseconds(1), MakeTag(0, 0, kOpTimeout));
  Turns(ring, [&] { return result != 0; });
  EXPECT_EQ(result, -ETIME);
}

TEST(Ring, EnabledByTheThreadThatRunsIt) {
  RingOptions o;
  o.enable_later = true;
  Ring ring;
  ASSERT_TRUE(ring.Init(o).ok());  // this thread sets it up...
  SocketPair p;
  std::string got;
  std::thread runner([&] {  // ...another one runs it
    ASSERT_TRUE(ring.Enable().ok());
    char buf[16];
    ring.Handle(kOpRecv, [&](const Completion& c) {
      if (c.result > 0) got.assign(buf, static_cast<size_t>(c.result));
    });
    ring.PrepRecv(p.a, buf, sizeof buf, MakeTag(0, 0, kOpRecv));
    p.Write("hi");
    Turns(ring, [&] { return !got.empty(); });
  });
  runner.join();
  EXPECT_EQ(got, "hi");
}

TEST(Ring, BadOptionsNameTheOption) {
  struct Case {
    RingOptions options;
    const char* want;
  };
  RingOptions not_power_of_two = WithBuffers(3, 64);
  RingOptions no_size = WithBuffers(4, 0);
  RingOptions small_cq;
  small_cq.sq_entries = 64;
  small_cq.cq_entries = 32;
  RingOptions no_sq;
  no_sq.sq_entries = 0;
  const Case cases[] = {{not_power_of_two, "recv_buffers 3"},
                        {no_size, "recv_buffer_size 0"},
                        {small_cq, "cq_entries 32"},
                        {no_sq, "sq_entries 0"}};
  for (const Case& c : cases) {
    Ring ring;
    const absl::Status got = ring.Init(c.options);
    EXPECT_EQ(got.code(), absl::StatusCode::kInvalidArgument) << got;
    EXPECT_NE(got.message().find(c.want), std::string_view::npos)
        << "got " << got << ", want it to name " << c.want;
  }
}

}  // namespace
}  // namespace volley::reactor
