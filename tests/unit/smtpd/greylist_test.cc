// greylist_test.cc - volley-sink's greylist shared by shard threads: each pair is
// first seen exactly once, however the threads interleave.
#include "engine/smtpd/greylist.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace volley::smtpd {
namespace {

TEST(Greylist, SharedByThreads) {
  constexpr int kThreads = 4;
  constexpr int kPairs = 2000;
  Greylist g(Greylist::kDefaultMaxEntries);
  const absl::Time now = absl::FromUnixSeconds(1000);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the pairs from a different start, so that first
      // sightings race.
      for (int i = 0; i < kPairs; ++i) {
        const int p = (i + t * kPairs / kThreads) % kPairs;
        // Delay 0: only the first sight of a pair is refused.
        if (!g.Pass(absl::StrCat("s", p, "@x.test"), "r@y.test", absl::ZeroDuration(), now)) {
          refused.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(refused.load(), kPairs);
  EXPECT_EQ(g.size(), static_cast<size_t>(kPairs));
}

}  // namespace
}  // namespace volley::smtpd
