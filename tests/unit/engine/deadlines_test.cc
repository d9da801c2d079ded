// deadlines_test.cc - the deadline heap against a plain map, under random moves
#include "engine/deadlines.h"

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace volley::engine {
namespace {

const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);

TEST(DeadlineHeap, EarliestAndDueFollowEverySetAndRemove) {
  DeadlineHeap heap;
  std::map<uint32_t, absl::Time> want;  // the truth: slot -> deadline
  std::mt19937 rng(7);
  for (int step = 0; step < 20000; ++step) {
    const uint32_t slot = rng() % 300;
    const int what = static_cast<int>(rng() % 10);
    if (what < 6) {
      const absl::Time at = t0 + absl::Milliseconds(rng() % 5000);
      heap.Set(slot, at);
      want[slot] = at;
    } else if (what < 8) {
      heap.Remove(slot);
      want.erase(slot);
    } else {
      heap.Set(slot, absl::InfiniteFuture());  // "no deadline" removes it too
      want.erase(slot);
    }
    ASSERT_EQ(heap.size(), want.size()) << "step " << step;
    if (want.empty()) {
      ASSERT_FALSE(heap.Earliest().has_value());
      continue;
    }
    absl::Time earliest = absl::InfiniteFuture();
    for (const auto& [s, at] : want) earliest = std::min(earliest, at);
    ASSERT_EQ(heap.Earliest(), earliest) << "step " << step;
    if (step % 50 == 0) {
      const absl::Time now = t0 + absl::Milliseconds(rng() % 5000);
      std::vector<uint32_t> due;
      heap.Due(now, &due);
      std::sort(due.begin(), due.end());
      std::vector<uint32_t> expected;
      for (const auto& [s, at] : want) {
        if (at <= now) expected.push_back(s);
      }
      ASSERT_EQ(due, expected) << "step " << step;
    }
  }
}

TEST(DeadlineHeap, MovingADeadlineLaterLetsTheNextOneLead) {
  DeadlineHeap heap;
  heap.Set(1, t0 + absl::Seconds(1));
  heap.Set(2, t0 + absl::Seconds(2));
  heap.Set(3, t0 + absl::Seconds(3));
  heap.Set(1, t0 + absl::Seconds(10));
  EXPECT_EQ(heap.Earliest(), t0 + absl::Seconds(2));
  std::vector<uint32_t> due;
  heap.Due(t0 + absl::Seconds(5), &due);
  std::sort(due.begin(), due.end());
  EXPECT_EQ(due, (std::vector<uint32_t>{2, 3}));
  heap.Remove(2);
  heap.Remove(2);  // twice: harmless
  heap.Remove(99);  // never set: harmless
  EXPECT_EQ(heap.Earliest(), t0 + absl::Seconds(3));
}

}  // namespace
}  // namespace volley::engine
