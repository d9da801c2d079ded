// KeepFreedMemory: a freed message-sized block's pages stay in the process,
// so the next message of the same size does not fault them in again.
#include "base/memory.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace volley::base {
namespace {

constexpr size_t kMessageBytes = 100 << 10;  // scenario 2's message
constexpr int kRounds = 200;

#if defined(__SANITIZE_ADDRESS__)
TEST(KeepFreedMemoryTest, AFreedMessageIsNotFaultedInAgain) {
  GTEST_SKIP() << "ASan's allocator ignores mallopt; the Release build runs this test";
}
#else
volatile char g_sent;  // the rendered bytes are used: not optimised away

// Minor page faults of kRounds of render, send, free of one message on a
// thread of its own (a shard's: its own arena), measured in a child process
// so that each case starts from glibc's defaults.
long FaultsInChild(bool keep) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (keep && !KeepFreedMemory(uint64_t{64} << 20)) _exit(3);
    long faults = -1;
    std::thread shard([&faults] {
      // As a message is rendered: appended to a string a line at a time
      // (its capacity doubles past 128 KiB, glibc's first mmap threshold),
      // then sent and freed.
      const auto round = [] {
        const std::string line(1000, 'x');
        std::string message;
        while (message.size() < kMessageBytes) message += line;
        g_sent = message[kMessageBytes / 2];
      };
      round();  // the arena's first block: faults either way
      rusage before{}, after{};
      getrusage(RUSAGE_THREAD, &before);
      for (int i = 0; i < kRounds; ++i) round();
      getrusage(RUSAGE_THREAD, &after);
      faults = after.ru_minflt - before.ru_minflt;
    });
    shard.join();
    const ssize_t n = write(fds[1], &faults, sizeof faults);
    _exit(n == sizeof faults ? 0 : 4);
  }
  close(fds[1]);
  long faults = -1;
  const ssize_t n = read(fds[0], &faults, sizeof faults);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n != sizeof faults || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return faults;
}

TEST(KeepFreedMemoryTest, AFreedMessageIsNotFaultedInAgain) {
  const long defaults = FaultsInChild(false);
  const long kept = FaultsInChild(true);
  // With glibc's defaults every free returns the block's pages (a 100 KiB
  // block is 25 pages), so each round faults most of them back in.
  EXPECT_GE(defaults, kRounds * 10L) << "glibc's default no longer trims at each free?";
  // Kept: the block's pages stay; a round faults none (a few at most).
  EXPECT_GE(kept, 0);
  EXPECT_LT(kept, kRounds / 10) << "defaults " << defaults;
}
#endif

}  // namespace
}  // namespace volley::base
