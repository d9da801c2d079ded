// mailbox_test.cc - hand-over across threads, woken through a ring's eventfd read
#include "engine/reactor/mailbox.h"

#include <unistd.h>

#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/reactor/ring.h"
#include "gtest/gtest.h"

namespace volley::reactor {
namespace {

constexpr uint8_t kOpWake = 1;

TEST(Mailbox, RefusesPastItsCapacity) {
  auto box = Mailbox<std::string>::Create(2);
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_EQ((*box)->capacity(), 2u);
  EXPECT_TRUE((*box)->Push("a"));
  EXPECT_TRUE((*box)->Push("b"));
  std::string third = "c";
  EXPECT_FALSE((*box)->Push(std::move(third)));
  EXPECT_EQ(third, "c");  // refused: still the caller's
  EXPECT_EQ((*box)->TakeAll(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE((*box)->TakeAll().empty());
  EXPECT_TRUE((*box)->Push(std::move(third)));
}

TEST(Mailbox, ReadOfAnEmptyBoxWaitsForAPush) {
  auto box = Mailbox<int>::Create(8);
  ASSERT_TRUE(box.ok());
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());
  uint64_t counter = 0;
  int wakes = 0;
  int result = 0;
  ring.Handle(kOpWake, [&](const Completion& c) {
    ++wakes;
    result = c.result;
  });
  ring.PrepRead((*box)->event_fd(), &counter, sizeof counter, MakeTag(0, 0, kOpWake));
  // The ring's read waits for a push instead of coming back with -EAGAIN
  // (which would make a shard spin on it).
  ASSERT_TRUE(ring.SubmitAndDispatch(absl::Milliseconds(20)).ok());
  EXPECT_EQ(wakes, 0);
  ASSERT_TRUE((*box)->Push(7));
  for (int i = 0; i < 100 && wakes == 0; ++i) {
    ASSERT_TRUE(ring.SubmitAndDispatch(absl::Milliseconds(50)).ok());
  }
  EXPECT_EQ(wakes, 1);
  EXPECT_EQ(result, static_cast<int>(sizeof counter));
  EXPECT_EQ((*box)->TakeAll(), std::vector<int>{7});
}

TEST(Mailbox, EveryItemArrivesOnceInOrderPerProducer) {
  constexpr int kProducers = 4;
  constexpr int kItems = 2000;
  auto made = Mailbox<std::pair<int, int>>::Create(64);  // small: producers meet a full box
  ASSERT_TRUE(made.ok());
  Mailbox<std::pair<int, int>>& box = **made;
  Ring ring;
  ASSERT_TRUE(ring.Init(RingOptions{}).ok());

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&box, p] {
      for (int i = 0; i < kItems; ++i) {
        while (!box.Push({p, i})) std::this_thread::yield();  // full: try again
      }
    });
  }

  std::vector<int> next(kProducers, 0);  // the item each producer should send next
  int received = 0;
  bool in_order = true;
  uint64_t counter = 0;
  ring.Handle(kOpWake, [&](const Completion& c) {
    ASSERT_EQ(c.result, static_cast<int>(sizeof counter));
    for (const auto& [p, i] : box.TakeAll()) {
      in_order = in_order && i == next[p];
      next[p] = i + 1;
      ++received;
    }
    ring.PrepRead(box.event_fd(), &counter, sizeof counter, c.tag);
  });
  ring.PrepRead(box.event_fd(), &counter, sizeof counter, MakeTag(0, 0, kOpWake));
  // Bounded, so that a lost wake-up fails the test instead of hanging it.
  for (int turn = 0; turn < 100000 && received < kProducers * kItems; ++turn) {
    ASSERT_TRUE(ring.SubmitAndDispatch(absl::Milliseconds(100)).ok());
  }
  for (std::thread& t : producers) t.join();
  EXPECT_EQ(received, kProducers * kItems);
  EXPECT_TRUE(in_order);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kItems) << "producer " << p;
}

}  // namespace
}  // namespace volley::reactor
