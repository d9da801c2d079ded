// ready_jobs_test.cc - job ids reach every shard's mailbox, and wake its eventfd
#include <poll.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/intake.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(ReadyJobs, EveryShardGetsEveryJobInOrder) {
  ReadyJobs ready(3);
  for (size_t shard = 0; shard < 3; ++shard) EXPECT_FALSE(Readable(ready.event_fd(shard)));
  ready.Push("job-a");
  ready.Push("job-b");
  for (size_t shard = 0; shard < 3; ++shard) {
    EXPECT_TRUE(Readable(ready.event_fd(shard))) << "shard " << shard;
    uint64_t counter = 0;
    ASSERT_EQ(::read(ready.event_fd(shard), &counter, sizeof counter),
              static_cast<ssize_t>(sizeof counter));
    EXPECT_EQ(ready.TakeAll(shard), (std::vector<std::string>{"job-a", "job-b"}))
        << "shard " << shard;
    EXPECT_TRUE(ready.TakeAll(shard).empty());
    EXPECT_FALSE(Readable(ready.event_fd(shard)));
  }
  EXPECT_NE(ready.event_fd(0), ready.event_fd(1));
}

TEST(ReadyJobs, AFullShardDoesNotHoldTheOthersBack) {
  ReadyJobs ready(2);
  // Shard 0 takes its ids; shard 1 has stopped taking them.
  for (size_t i = 0; i < ReadyJobs::kMaxWaitingJobs; ++i) {
    ready.Push("job-" + std::to_string(i));
    if (i % 1024 == 0) ready.TakeAll(0);
  }
  ready.TakeAll(0);
  ready.Push("one-too-many");  // shard 1 is full: dropped there, with an error line
  EXPECT_EQ(ready.TakeAll(0), std::vector<std::string>{"one-too-many"});
  const std::vector<std::string> waiting = ready.TakeAll(1);
  ASSERT_EQ(waiting.size(), ReadyJobs::kMaxWaitingJobs);
  EXPECT_EQ(waiting.back(), "job-" + std::to_string(ReadyJobs::kMaxWaitingJobs - 1));
}

}  // namespace
}  // namespace volley::engine
