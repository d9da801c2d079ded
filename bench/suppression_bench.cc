// suppression-bench - the suppression list at scale: load, memory, Check latency
//
// SYNOPSIS
//   suppression-bench load   --dir DIR [--entries 10000000] [--batch 5000]
//   suppression-bench lookup --dir DIR [--entries 10000000] [--lookups 1000000] [--threads 2]
//                            [--filter-bits 10]
//   suppression-bench add    --dir DIR --file FILE
//   suppression-bench compact --dir DIR
//
// DESCRIPTION
//   load adds --entries entries to a new list at DIR ("user<i>@d<i % 1000>.test",
//   global, reason hard_bounce, source "bench") in AddBatch batches of --batch, each
//   one synced write, as an import through the admin API writes them. It prints
//   entries/s and the process's VmRSS and VmHWM.
//
//   lookup opens DIR (default options: 32 MiB block cache) in a fresh process and
//   runs --lookups Checks of addresses on the list (hits) and as many of addresses
//   not on it (misses: the same domains, indices past --entries), each with a From
//   domain (so every miss is the full four lookups), in random order, timing each
//   Check; then the same mix from --threads threads at once for the rate. It prints
//   the median, p99 and p99.9 latency of hits and misses, single-thread and
//   multi-thread lookups per second, and VmRSS and VmHWM at the end.
//
//   --filter-bits sets SuppressionOptions::filter_bits_per_key (0: no filter, every
//   Check from RocksDB, as before the filter). lookup also prints the time Open
//   took (it builds the filter from the whole list), the filter's size and the
//   RocksDB reads per miss.
//
//   add adds the addresses of FILE (one a line, global, manual) in one batch: the
//   few recipients of a benchmark job that must come out suppressed.
//   compact compacts the list's RocksDB fully, so that a process that opens it
//   next (a benchmark's volleyd) does no compaction of the load's files meanwhile.
//
//   Output is "key value" lines on stdout, for bench/suppression_bench.sh.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "queue/suppression.h"
#include "rocksdb/db.h"

namespace {

using volley::queue::Suppression;
using volley::queue::SuppressionList;
using volley::queue::SuppressionOptions;
using volley::queue::SuppressionReason;

std::string Address(uint64_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "user%llu@d%04llu.test", static_cast<unsigned long long>(i),
                static_cast<unsigned long long>(i % 1000));
  return buf;
}

long StatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string want = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(want, 0) == 0) return std::atol(line.c_str() + want.size());
  }
  return -1;
}

void PrintMemory(const char* when) {
  std::printf("%s_vmrss_kib %ld\n%s_vmhwm_kib %ld\n", when, StatusKb("VmRSS"), when,
              StatusKb("VmHWM"));
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Args {
  std::string mode, dir;
  uint64_t entries = 10'000'000;
  uint64_t batch = 5000;
  uint64_t lookups = 1'000'000;
  int threads = 2;
  int filter_bits = 10;
  std::string file;
};

int Load(const Args& a) {
  auto list = SuppressionList::Open(a.dir, SuppressionOptions{});
  if (!list.ok()) {
    std::fprintf(stderr, "%s\n", std::string(list.status().message()).c_str());
    return 1;
  }
  const absl::Time now = absl::Now();
  std::vector<Suppression> batch;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < a.entries; ++i) {
    Suppression e;
    e.address = Address(i);
    e.reason = SuppressionReason::kHardBounce;
    e.source = "bench";
    e.added = now;
    batch.push_back(std::move(e));
    if (batch.size() == a.batch || i + 1 == a.entries) {
      if (absl::Status st = (*list)->AddBatch(batch); !st.ok()) {
        std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
        return 1;
      }
      batch.clear();
    }
    if ((i + 1) % 1'000'000 == 0) {
      std::fprintf(stderr, "suppression-bench: %llu loaded, %.1f s\n",
                   static_cast<unsigned long long>(i + 1),
                   Seconds(std::chrono::steady_clock::now() - start));
    }
  }
  const double load_s = Seconds(std::chrono::steady_clock::now() - start);
  std::printf("entries %llu\nload_s %.2f\nload_entries_per_s %.0f\n",
              static_cast<unsigned long long>(a.entries), load_s,
              static_cast<double>(a.entries) / load_s);
  PrintMemory("load");
  std::printf("approximate_count %llu\n",
              static_cast<unsigned long long>((*list)->ApproximateCount()));
  return 0;
}

struct Percentiles {
  double p50, p99, p999;
};

Percentiles Of(std::vector<double>& ns) {
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) { return ns[static_cast<size_t>(q * static_cast<double>(ns.size() - 1))]; };
  return {at(0.5), at(0.99), at(0.999)};
}

int Lookup(const Args& a) {
  PrintMemory("before_open");
  SuppressionOptions options;
  options.filter_bits_per_key = a.filter_bits;
  const auto open_start = std::chrono::steady_clock::now();
  auto opened = SuppressionList::Open(a.dir, options);
  std::printf("open_s %.2f\n", Seconds(std::chrono::steady_clock::now() - open_start));
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", std::string(opened.status().message()).c_str());
    return 1;
  }
  const SuppressionList& list = **opened;
  PrintMemory("open");
  const volley::queue::SuppressionFilterStats filter = list.FilterStats();
  std::printf("filter_bits_per_key %d\nfilter_bytes %llu\nfilter_design_keys %llu\n",
              a.filter_bits, static_cast<unsigned long long>(filter.bytes),
              static_cast<unsigned long long>(filter.design_keys));
  std::mt19937_64 rng(42);
  // The probes: entry indices, half on the list (hits), half past its end
  // (misses), shuffled. Indices, not strings, and freed before the last memory
  // reading: the process's RSS is then the list's, not the benchmark's.
  std::vector<uint64_t> probes;
  probes.reserve(2 * a.lookups);
  for (uint64_t i = 0; i < a.lookups; ++i) {
    probes.push_back(rng() % a.entries);
    probes.push_back(a.entries + rng() % a.entries);
  }
  std::shuffle(probes.begin(), probes.end(), rng);
  std::vector<double> hit_ns, miss_ns;
  hit_ns.reserve(a.lookups);
  miss_ns.reserve(a.lookups);
  const absl::Time now = absl::Now();
  uint64_t wrong = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const uint64_t probe : probes) {
    const bool hit = probe < a.entries;
    const std::string address = Address(probe);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = list.Check(address, "brand.test", now);
    const auto t1 = std::chrono::steady_clock::now();
    if (!r.ok() || r->has_value() != hit) ++wrong;
    (hit ? hit_ns : miss_ns).push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  const double single_s = Seconds(std::chrono::steady_clock::now() - start);
  const uint64_t reads = list.FilterStats().store_reads - filter.store_reads;
  if (wrong > 0) {
    std::fprintf(stderr, "suppression-bench: %llu lookups answered wrong\n",
                 static_cast<unsigned long long>(wrong));
    return 1;
  }
  const Percentiles hit = Of(hit_ns), miss = Of(miss_ns);
  std::vector<double>().swap(hit_ns);
  std::vector<double>().swap(miss_ns);
  std::printf("lookups %zu\n", probes.size());
  std::printf("hit_p50_us %.2f\nhit_p99_us %.2f\nhit_p999_us %.2f\n", hit.p50 / 1000,
              hit.p99 / 1000, hit.p999 / 1000);
  std::printf("miss_p50_us %.2f\nmiss_p99_us %.2f\nmiss_p999_us %.2f\n", miss.p50 / 1000,
              miss.p99 / 1000, miss.p999 / 1000);
  // A hit reads 1-2 entries (the scoped key first, then the global one);
  // the rest of the reads are the misses'.
  std::printf("store_reads_per_lookup %.3f\n",
              static_cast<double>(reads) / static_cast<double>(probes.size()));
  std::printf("single_thread_lookups_per_s %.0f\n", static_cast<double>(probes.size()) / single_s);

  std::atomic<uint64_t> done{0};
  const auto mt_start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < a.threads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < probes.size(); i += static_cast<size_t>(a.threads)) {
        auto r = list.Check(Address(probes[i]), "brand.test", now);
        if (r.ok()) done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double mt_s = Seconds(std::chrono::steady_clock::now() - mt_start);
  std::printf("threads %d\nmulti_thread_lookups_per_s %.0f\n", a.threads,
              static_cast<double>(done.load()) / mt_s);
  const size_t probe_count = probes.size();
  std::vector<uint64_t>().swap(probes);
  (void)probe_count;
  PrintMemory("end");
  return 0;
}

int AddFile(const Args& a) {
  auto list = SuppressionList::Open(a.dir, SuppressionOptions{});
  if (!list.ok()) {
    std::fprintf(stderr, "%s\n", std::string(list.status().message()).c_str());
    return 1;
  }
  std::ifstream in(a.file);
  if (!in) {
    std::fprintf(stderr, "suppression-bench: cannot read %s\n", a.file.c_str());
    return 1;
  }
  std::vector<Suppression> batch;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    Suppression e;
    e.address = line;
    e.reason = SuppressionReason::kManual;
    e.source = "bench";
    e.added = absl::Now();
    batch.push_back(std::move(e));
  }
  if (absl::Status st = (*list)->AddBatch(batch); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::printf("added %zu\n", batch.size());
  return 0;
}

int Compact(const Args& a) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {"soft_bounces", rocksdb::ColumnFamilyOptions()},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(), a.dir, families, &handles, &db);
  if (!s.ok()) {
    std::fprintf(stderr, "suppression-bench: %s\n", s.ToString().c_str());
    return 1;
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    if (s.ok()) s = db->CompactRange(rocksdb::CompactRangeOptions(), h, nullptr, nullptr);
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  (void)db->Close();
  delete db;
  if (!s.ok()) {
    std::fprintf(stderr, "suppression-bench: compact: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::fprintf(stderr, "usage: suppression-bench load|lookup|add|compact --dir DIR [--entries N] "
                         "[--batch N] [--lookups N] [--threads N]\n");
    return 2;
  }
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--dir") {
      a.dir = v;
    } else if (k == "--entries") {
      a.entries = std::strtoull(v, nullptr, 10);
    } else if (k == "--batch") {
      a.batch = std::strtoull(v, nullptr, 10);
    } else if (k == "--lookups") {
      a.lookups = std::strtoull(v, nullptr, 10);
    } else if (k == "--threads") {
      a.threads = std::atoi(v);
    } else if (k == "--filter-bits") {
      a.filter_bits = std::atoi(v);
    } else if (k == "--file") {
      a.file = v;
    } else {
      std::fprintf(stderr, "suppression-bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (a.dir.empty() || a.entries == 0 || a.batch == 0 || a.threads < 1) {
    std::fprintf(stderr, "suppression-bench: --dir is required; counts must be positive\n");
    return 2;
  }
  if (a.mode == "load") return Load(a);
  if (a.mode == "lookup") return Lookup(a);
  if (a.mode == "add") return AddFile(a);
  if (a.mode == "compact") return Compact(a);
  std::fprintf(stderr, "suppression-bench: mode must be load or lookup\n");
  return 2;
}
