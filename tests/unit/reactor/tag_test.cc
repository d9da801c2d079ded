// tag_test.cc - the one tag codec: fields round-trip, and SlotTable uses it
#include "engine/reactor/tag.h"

#include <cstdint>

#include "engine/reactor/slot_table.h"
#include "gtest/gtest.h"

namespace volley::reactor {
namespace {

TEST(Tag, FieldsRoundTrip) {
  struct Case {
    uint32_t slot;
    uint16_t generation;
    uint8_t op;
    uint64_t want;
  };
  const Case cases[] = {
      {0, 0, 0, 0},
      {0, 0, 1, 0x1},
      {0, 1, 0, 0x100},
      {1, 0, 0, uint64_t{1} << 32},
      {0xffffffff, 0xffff, 0xff, 0xffffffff00ffffffull},  // bits 31..24 stay zero
      {42, 7, 3, (uint64_t{42} << 32) | (7 << 8) | 3},
  };
  for (const Case& c : cases) {
    const uint64_t got = MakeTag(c.slot, c.generation, c.op);
    EXPECT_EQ(got, c.want) << "MakeTag(" << c.slot << ", " << c.generation << ", " << int{c.op}
                           << ")";
    EXPECT_EQ(SlotOf(got), c.slot);
    EXPECT_EQ(GenerationOf(got), c.generation);
    EXPECT_EQ(OpOf(got), c.op);
  }
}

TEST(Tag, SlotTableSpeaksTheSameCodec) {
  SlotTable<int> table;
  const uint32_t slot = table.Acquire(5);
  table.Release(slot);
  const uint32_t again = table.Acquire(6);  // the same slot, one generation on
  ASSERT_EQ(again, slot);
  const uint64_t tag = table.Tag(again, 9);
  EXPECT_EQ(tag, MakeTag(again, 1, 9));
  EXPECT_EQ(SlotTable<int>::MakeTag(3, 4, 5), MakeTag(3, 4, 5));
  EXPECT_EQ(SlotTable<int>::OpOf(tag), OpOf(tag));
  EXPECT_EQ(SlotTable<int>::SlotOf(tag), SlotOf(tag));
  EXPECT_EQ(SlotTable<int>::GenerationOf(tag), GenerationOf(tag));
  EXPECT_EQ(table.Find(MakeTag(again, 0, 9)), nullptr);  // the old generation: stale
}

}  // namespace
}  // namespace volley::reactor
