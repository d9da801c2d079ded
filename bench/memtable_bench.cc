// memtable-bench - what one memtable insert of the queue's recipient keys costs in
// the RocksDB this build links (bench/memtable_bench.sh runs it under callgrind).
//
//   memtable-bench DIR HINT PREFIXES PUTS
//
// Opens a fresh RocksDB in DIR (removed first), then puts PUTS keys of the queue's
// recipient layout (job 4 bytes, partition 2, due 8, line 4; queue/README.md) with
// lines increasing and the partition drawn from PREFIXES at random (1: strictly
// increasing keys), in batches of 1,000 without a write-ahead log. HINT 1 sets
// memtable_insert_with_hint_prefix_extractor to the first 6 bytes, as queue.cc does.
// Only the memtable's work is of interest: the caller counts MemTable::Add.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "rocksdb/db.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/write_batch.h"

namespace {

void AppendBigEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string RecipientKey(uint32_t partition, uint32_t line) {
  std::string key;
  AppendBigEndian(&key, 1, 4);          // job
  AppendBigEndian(&key, partition, 2);  // partition
  AppendBigEndian(&key, 1000, 8);       // due
  AppendBigEndian(&key, line, 4);       // line
  return key;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: memtable-bench DIR HINT(0|1) PREFIXES PUTS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const bool hint = std::atoi(argv[2]) != 0;
  const int prefixes = std::max(1, std::atoi(argv[3]));
  const int puts = std::max(1, std::atoi(argv[4]));
  std::filesystem::remove_all(dir);
  rocksdb::Options options;
  options.create_if_missing = true;
  options.write_buffer_size = 64 << 20;  // every put stays in the one memtable
  if (hint) options.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(6));
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    std::fprintf(stderr, "memtable-bench: %s: %s\n", dir.c_str(), s.ToString().c_str());
    return 1;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::mt19937 rng(1);
  rocksdb::WriteOptions write;
  write.disableWAL = true;
  rocksdb::WriteBatch batch;
  const std::string value(40, 'v');
  for (int line = 0; line < puts; ++line) {
    (void)batch.Put(RecipientKey(static_cast<uint32_t>(rng() % static_cast<unsigned>(prefixes)),
                                 static_cast<uint32_t>(line)),
                    value);
    if (batch.Count() == 1000 || line + 1 == puts) {
      if (!db->Write(write, &batch).ok()) return 1;
      batch.Clear();
    }
  }
  std::printf("puts %d prefixes %d hint %d\n", puts, prefixes, hint ? 1 : 0);
  return 0;
}
