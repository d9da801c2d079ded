#include "engine/reactor/slot_table.h"

#include <string>

#include "gtest/gtest.h"

namespace volley::reactor {
namespace {

TEST(SlotTable, ReusedSlotMakesOldTagsStale) {
  SlotTable<std::string> t;
  const uint32_t a = t.Acquire("first");
  const uint64_t old_tag = t.Tag(a, 3);
  ASSERT_NE(t.Find(old_tag), nullptr);
  EXPECT_EQ(*t.Find(old_tag), "first");
  EXPECT_EQ(SlotTable<std::string>::OpOf(old_tag), 3);
  t.Release(a);
  EXPECT_EQ(t.Find(old_tag), nullptr);  // gone
  const uint32_t b = t.Acquire("second");
  EXPECT_EQ(b, a);                       // the slot is reused...
  EXPECT_EQ(t.Find(old_tag), nullptr);   // ...but the old tag does not reach the new one
  ASSERT_NE(t.Find(t.Tag(b, 3)), nullptr);
  EXPECT_EQ(*t.Find(t.Tag(b, 3)), "second");
}

TEST(SlotTable, TagsOutOfRangeAndCounts) {
  SlotTable<int> t;
  EXPECT_EQ(t.Find(SlotTable<int>::MakeTag(7, 0, 1)), nullptr);
  const uint32_t x = t.Acquire(1);
  const uint32_t y = t.Acquire(2);
  EXPECT_NE(x, y);
  EXPECT_EQ(t.live(), 2u);
  int sum = 0;
  t.ForEach([&](uint32_t, int& v) { sum += v; });
  EXPECT_EQ(sum, 3);
  t.Release(x);
  EXPECT_EQ(t.live(), 1u);
  EXPECT_EQ(t.Get(x), nullptr);
  ASSERT_NE(t.Get(y), nullptr);
  EXPECT_EQ(t.at(y), 2);
  EXPECT_EQ(SlotTable<int>::SlotOf(t.Tag(y, 9)), y);
}

}  // namespace
}  // namespace volley::reactor
