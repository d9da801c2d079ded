// suppression.cc - the suppression list on RocksDB (see suppression.h)
#include "queue/suppression.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "rocksdb/cache.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace volley::queue {
namespace {

constexpr char kSoftBouncesFamily[] = "soft_bounces";
// Entry value layout, version 1: version (1) | reason (1) | added µs (8, BE,
// two's complement) | expires µs (8; INT64_MAX: never) | source (the rest).
constexpr uint8_t kEntryVersion = 1;
constexpr size_t kEntryHeader = 1 + 1 + 8 + 8;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t ToMicros(absl::Time t) {
  if (t == absl::InfiniteFuture()) return kNever;
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  return absl::ToUnixMicros(t);
}

absl::Time FromMicros(int64_t us) {
  if (us == kNever) return absl::InfiniteFuture();
  return absl::FromUnixMicros(us);
}

void PutInt64(std::string* out, int64_t v) {
  const auto u = static_cast<uint64_t>(v);
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(u >> shift));
}

int64_t GetInt64(const char* p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u = (u << 8) | static_cast<unsigned char>(p[i]);
  return static_cast<int64_t>(u);
}

std::string EntryKey(std::string_view address, std::string_view scope) {
  std::string key;
  key.reserve(address.size() + 1 + scope.size());
  key.append(address);
  key.push_back('\0');
  key.append(scope);
  return key;
}

std::string EncodeEntry(const Suppression& e) {
  std::string v;
  v.reserve(kEntryHeader + e.source.size());
  v.push_back(static_cast<char>(kEntryVersion));
  v.push_back(static_cast<char>(e.reason));
  PutInt64(&v, ToMicros(e.added));
  PutInt64(&v, ToMicros(e.expires));
  v.append(e.source);
  return v;
}

bool IsKnownReason(uint8_t r) {
  return r >= static_cast<uint8_t>(SuppressionReason::kHardBounce) &&
         r <= static_cast<uint8_t>(SuppressionReason::kManual);
}

absl::StatusOr<Suppression> DecodeEntry(std::string_view key, std::string_view value) {
  const size_t nul = key.find('\0');
  if (nul == std::string_view::npos || value.size() < kEntryHeader ||
      static_cast<uint8_t>(value[0]) != kEntryVersion || !IsKnownReason(static_cast<uint8_t>(value[1]))) {
    return absl::DataLossError("suppression list: malformed entry");
  }
  Suppression e;
  e.address = std::string(key.substr(0, nul));
  e.scope = std::string(key.substr(nul + 1));
  e.reason = static_cast<SuppressionReason>(value[1]);
  e.added = FromMicros(GetInt64(value.data() + 2));
  e.expires = FromMicros(GetInt64(value.data() + 10));
  e.source = std::string(value.substr(kEntryHeader));
  return e;
}

// The expiry of an entry value, without decoding the rest (the compaction filter).
std::optional<int64_t> ExpiryOf(std::string_view value) {
  if (value.size() < kEntryHeader || static_cast<uint8_t>(value[0]) != kEntryVersion) {
    return std::nullopt;
  }
  return GetInt64(value.data() + 10);
}

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("suppression list: ", base::Sv(what), ": ", s.ToString());
  if (s.IsCorruption() || s.severity() >= rocksdb::Status::kUnrecoverableError) {
    return absl::DataLossError(msg);
  }
  if (s.IsNoSpace() || s.IsIncomplete() || s.IsBusy() || s.IsTryAgain()) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::UnavailableError(msg);
}

// HasControl - a byte that must not reach a log line, a CSV field or a header:
// C0 controls (CR, LF, NUL, TAB...) and DEL.
bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// ForgetStale - drops, at compaction, entries that have expired and soft-bounce
// counters whose newest bounce is older than the window: neither can count any
// more (Check skips an expired entry; RecordSoftBounce drops old times), so
// keeping them would only let both grow without bound. "Now" is the clock at
// compaction time: dropping late is harmless, and nothing is dropped early.
class ForgetStale : public rocksdb::CompactionFilter {
 public:
  ForgetStale(bool counters, absl::Duration window)
      : counters_(counters), window_micros_(absl::ToInt64Microseconds(window)) {}
  // SetWindow - a reloaded soft_bounce_window, for the next compaction.
  void SetWindow(absl::Duration window) {
    window_micros_.store(absl::ToInt64Microseconds(window), std::memory_order_relaxed);
  }
  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    const int64_t now = absl::ToUnixMicros(absl::Now());
    const std::string_view v(value.data(), value.size());
    if (counters_) {
      if (v.size() < 8 || v.size() % 8 != 0) return false;
      const int64_t newest = GetInt64(v.data() + v.size() - 8);
      return newest < now - window_micros_.load(std::memory_order_relaxed);
    }
    const std::optional<int64_t> expires = ExpiryOf(v);
    return expires.has_value() && *expires != kNever && *expires <= now;
  }
  const char* Name() const override {
    return counters_ ? "volley.SoftBounceWindow" : "volley.SuppressionExpiry";
  }

 private:
  bool counters_;
  // Read by RocksDB's compaction threads while a reload may set it.
  std::atomic<int64_t> window_micros_;
};


// KeyHash - a 64-bit hash of a normalised address for the filter. Only in
// memory (the filter is rebuilt at Open), so it need not be stable across
// versions; it must spread short, similar strings ("user1@d1.test",
// "user2@d1.test") over all 64 bits.
uint64_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t KeyHash(std::string_view s) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  uint64_t h = kMul ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t chunk;
    std::memcpy(&chunk, s.data() + i, 8);
    h = (h ^ Mix(chunk)) * kMul;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ Mix(tail ^ (uint64_t{0xff} << 56))) * kMul;
  return Mix(h);
}

// AddressOfKey - the address part of an entry key (address NUL scope).
std::string_view AddressOfKey(std::string_view key) {
  return key.substr(0, key.find('\0'));
}

// KeyFilter - a blocked Bloom filter over addresses: each key sets its bits in
// one 64-byte block (one cache line), so a probe costs one memory access
// whatever the list's size. Bits are only ever set (relaxed atomic or), so a
// reader needs no lock and can never see a key half-removed: there is no
// removal. One allocation, sized at construction for design_keys.
class KeyFilter {
 public:
  KeyFilter(uint64_t design_keys, int bits_per_key)
      : design_keys_(design_keys),
        blocks_(std::max<uint64_t>(1, (design_keys * static_cast<uint64_t>(bits_per_key) + 511) / 512)),
        probes_(std::clamp(static_cast<int>(std::lround(bits_per_key * 0.69)), 1, 12)),
        bits_(AllocateBlocks(blocks_)) {}

  void Insert(uint64_t hash) {
    Block& b = bits_[BlockOf(hash)];
    uint64_t x = Mix(hash ^ kSecondSeed);
    for (int i = 0; i < probes_; ++i) {
      if (i == 7) x = Mix(x);  // 7 probes of 9 bits use 63 of the 64
      const unsigned bit = static_cast<unsigned>(x & 511);
      x >>= 9;
      b.words[bit >> 6].fetch_or(uint64_t{1} << (bit & 63), std::memory_order_relaxed);
    }
  }

  bool MayContain(uint64_t hash) const {
    const Block& b = bits_[BlockOf(hash)];
    uint64_t x = Mix(hash ^ kSecondSeed);
    for (int i = 0; i < probes_; ++i) {
      if (i == 7) x = Mix(x);
      const unsigned bit = static_cast<unsigned>(x & 511);
      x >>= 9;
      if ((b.words[bit >> 6].load(std::memory_order_relaxed) & (uint64_t{1} << (bit & 63))) == 0) {
        return false;
      }
    }
    return true;
  }

  uint64_t design_keys() const { return design_keys_; }
  uint64_t bytes() const { return blocks_ * sizeof(Block); }

 private:
  static constexpr uint64_t kSecondSeed = 0x5bd1e9955bd1e995ULL;
  struct alignas(64) Block {
    std::atomic<uint64_t> words[8];
  };
  static_assert(std::is_trivially_destructible_v<Block>);
  struct FreeBlocks {
    void operator()(Block* p) const { std::free(p); }
  };

  // AllocateBlocks - the zeroed blocks, in 2 MiB pages where the kernel gives
  // them (transparent huge pages, "madvise" mode): the probes land anywhere
  // in megabytes, and with 4 KiB pages each would also miss the TLB.
  static Block* AllocateBlocks(uint64_t blocks) {
    constexpr size_t kHugePage = size_t{2} << 20;
    const size_t bytes = static_cast<size_t>(blocks) * sizeof(Block);
    const size_t align = bytes >= kHugePage ? kHugePage : alignof(Block);
    const size_t rounded = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded);
    if (p == nullptr) throw std::bad_alloc();
    if (align == kHugePage) (void)::madvise(p, rounded, MADV_HUGEPAGE);
    Block* b = static_cast<Block*>(p);
    // Value-initialised: every bit clear, nothing in the filter yet.
    for (uint64_t i = 0; i < blocks; ++i) new (&b[i]) Block();
    return b;
  }
  size_t BlockOf(uint64_t hash) const {
    // Lemire's multiply-shift: the high 32 bits scaled to [0, blocks_).
    return static_cast<size_t>(((hash >> 32) * blocks_) >> 32);
  }

  uint64_t design_keys_;
  uint64_t blocks_;
  int probes_;
  std::unique_ptr<Block[], FreeBlocks> bits_;
};

// A filter is rebuilt larger once it holds this many times its design count
// (its false-positive rate has then risen from about 1% to about 4% at 10
// bits per key); the new one is designed for what it then holds.
constexpr double kFilterGrowth = 1.5;

}  // namespace

std::string_view SuppressionReasonName(SuppressionReason reason) {
  switch (reason) {
    case SuppressionReason::kHardBounce: return "hard_bounce";
    case SuppressionReason::kSoftBounce: return "soft_bounce";
    case SuppressionReason::kComplaint: return "complaint";
    case SuppressionReason::kUnsubscribe: return "unsubscribe";
    case SuppressionReason::kManual: return "manual";
  }
  return "unknown";
}

absl::StatusOr<SuppressionReason> ParseSuppressionReason(std::string_view name) {
  for (SuppressionReason r :
       {SuppressionReason::kHardBounce, SuppressionReason::kSoftBounce,
        SuppressionReason::kComplaint, SuppressionReason::kUnsubscribe,
        SuppressionReason::kManual}) {
    if (name == SuppressionReasonName(r)) return r;
  }
  std::string shown(name.substr(0, 64));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "reason: unknown \"", shown,
      "\" (hard_bounce, soft_bounce, complaint, unsubscribe or manual)"));
}

std::string_view SuppressionScopeName(SuppressionScope scope) {
  return scope == SuppressionScope::kFromDomain ? "from_domain" : "global";
}

namespace {

// ValidateAddress / ValidateScope - the rules an address and a scope must
// meet (suppression.h), without the lower-casing: NormalizeSuppression* and
// Check both start here, so that the rules are written once.
absl::Status ValidateAddress(std::string_view address) {
  if (address.empty()) return absl::InvalidArgumentError("address: empty");
  if (HasControl(address)) {
    return absl::InvalidArgumentError(
        "address: CR, LF or another control character not allowed");
  }
  if (address.size() > kMaxSuppressionAddress) {
    return absl::InvalidArgumentError(
        absl::StrCat("address: longer than ", kMaxSuppressionAddress, " octets"));
  }
  const size_t at = address.rfind('@');
  if (at == std::string_view::npos || at + 1 == address.size()) {
    return absl::InvalidArgumentError(
        "address: not an address (no '@' with text on both sides, nor \"@domain\")");
  }
  const std::string_view domain = address.substr(at + 1);
  if (domain.find(' ') != std::string_view::npos) {
    return absl::InvalidArgumentError("address: not an address (space in the domain)");
  }
  return absl::OkStatus();
}

absl::Status ValidateScope(std::string_view scope) {
  // A loop, not find_first_of("@ "), which calls memchr for each octet: this runs
  // twice a message.
  if (scope.size() > kMaxSuppressionScope || HasControl(scope) ||
      std::any_of(scope.begin(), scope.end(), [](char c) { return c == '@' || c == ' '; })) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scope: not a domain (\"\" for global, else a From domain of at most ",
        kMaxSuppressionScope, " octets)"));
  }
  return absl::OkStatus();
}

bool HasUpper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// Lowered - `s` lower-cased: as it is when it has no upper-case letter (no
// copy), else copied into *copy.
std::string_view Lowered(std::string_view s, std::string* copy) {
  if (!HasUpper(s)) return s;
  *copy = absl::AsciiStrToLower(base::Sv(s));
  return *copy;
}

}  // namespace

absl::StatusOr<std::string> NormalizeSuppressionAddress(std::string_view address) {
  RETURN_IF_ERROR(ValidateAddress(address));
  return absl::AsciiStrToLower(base::Sv(address));
}

absl::StatusOr<std::string> NormalizeSuppressionScope(std::string_view scope) {
  RETURN_IF_ERROR(ValidateScope(scope));
  return absl::AsciiStrToLower(base::Sv(scope));
}

absl::Status NormalizeSuppression(Suppression* entry) {
  ASSIGN_OR_RETURN(entry->address, NormalizeSuppressionAddress(entry->address));
  ASSIGN_OR_RETURN(entry->scope, NormalizeSuppressionScope(entry->scope));
  if (HasControl(entry->source)) {
    return absl::InvalidArgumentError("source: CR, LF or another control character not allowed");
  }
  if (entry->source.size() > kMaxSuppressionSource) {
    return absl::InvalidArgumentError(
        absl::StrCat("source: longer than ", kMaxSuppressionSource, " octets"));
  }
  if (!IsKnownReason(static_cast<uint8_t>(entry->reason))) {
    return absl::InvalidArgumentError("reason: not a known reason");
  }
  return absl::OkStatus();
}

namespace {
// ScopeUnder - the scope of an automatic entry for mail from `from_domain`
// under `policy` (SuppressionList::ScopeFor).
std::string ScopeUnder(SuppressionScope policy, std::string_view from_domain) {
  if (policy == SuppressionScope::kGlobal) return "";
  return absl::AsciiStrToLower(base::Sv(from_domain));
}
}  // namespace

class SuppressionList::Impl {
 public:
  Impl(std::string path, SuppressionOptions options, std::unique_ptr<rocksdb::DB> db,
       std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : path_(std::move(path)), options_(std::move(options)),
        policy_(std::make_shared<const SuppressionOptions>(options_)), db_(std::move(db)),
        handles_(std::move(handles)) {
    write_options_.sync = options_.sync_writes;
  }
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(filter_mu_);
      stopping_ = true;
      stopping_flag_ = true;
    }
    if (rebuild_thread_.joinable()) rebuild_thread_.join();
    delete filter_.load();
    for (rocksdb::ColumnFamilyHandle* h : handles_) (void)db_->DestroyColumnFamilyHandle(h);
    (void)db_->Close();
  }

  // The filter (FILTER in suppression.h). Readers (Check) take no lock: they
  // count themselves in one of two epoch slots, and a rebuild frees the filter
  // it replaced once the slot of the epoch it ends has drained. The count is
  // not kept in the filter itself: a reader would have to touch the filter to
  // count itself, and the filter may be freed between its load and the count.
  // A reader that loaded the replaced filter checked the epoch before the
  // swap, so it counted in the ended slot; readers arriving after the swap
  // count in the other one, so the wait never starves behind new Checks.
  // Writers insert under filter_mu_, after their RocksDB write: a Check
  // running meanwhile may miss an entry whose Add has not returned, which is
  // the same as a Check that ran just before it; once Add returns, every
  // Check finds it.
  struct FilterRead {
    KeyFilter* filter;
    unsigned slot;
  };
  FilterRead AcquireFilter() const {
    for (;;) {
      const unsigned slot = epoch_.load(std::memory_order_seq_cst) & 1U;
      readers_[slot].fetch_add(1, std::memory_order_seq_cst);
      if ((epoch_.load(std::memory_order_seq_cst) & 1U) == slot) {
        return {filter_.load(std::memory_order_seq_cst), slot};
      }
      readers_[slot].fetch_sub(1, std::memory_order_seq_cst);  // a swap meanwhile: again
    }
  }
  void ReleaseFilter(const FilterRead& read) const {
    readers_[read.slot].fetch_sub(1, std::memory_order_seq_cst);
  }

  // Remember - put the addresses just written into the filter (and into the
  // one a rebuild is filling), and start a rebuild when the filter holds
  // kFilterGrowth times its design count.
  void Remember(const std::vector<std::string_view>& addresses) {
    std::lock_guard<std::mutex> lock(filter_mu_);
    KeyFilter* f = filter_.load();
    if (f == nullptr) return;
    for (std::string_view a : addresses) {
      const uint64_t h = KeyHash(a);
      f->Insert(h);
      if (pending_ != nullptr) pending_->Insert(h);
    }
    filter_keys_ += addresses.size();
    if (pending_ != nullptr) pending_keys_ += addresses.size();
    if (!rebuilding_ && !stopping_ &&
        static_cast<double>(filter_keys_) > kFilterGrowth * static_cast<double>(f->design_keys())) {
      rebuilding_ = true;
      if (rebuild_thread_.joinable()) rebuild_thread_.join();  // the last one, finished
      rebuild_thread_ = std::thread([this] { Rebuild(); });
    }
  }

  // Fill - every address stored into `f`, from a consistent view (an
  // iterator's implicit snapshot); the count, or nullopt when stopping.
  std::optional<uint64_t> Fill(KeyFilter* f) const {
    rocksdb::ReadOptions read;
    read.fill_cache = false;  // one pass over everything: keep Check's blocks
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, entries()));
    uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      f->Insert(KeyHash(AddressOfKey(std::string_view(it->key().data(), it->key().size()))));
      ++n;
      if ((n & 0xffff) == 0 && stopping_flag_.load(std::memory_order_relaxed)) return std::nullopt;
    }
    if (!it->status().ok()) return std::nullopt;
    return n;
  }

  // BuildFirstFilter - at Open, before any Check: sized from RocksDB's estimate
  // of the count, built again at once if the estimate was far too low.
  void BuildFirstFilter() {
    const int bits = options_.filter_bits_per_key;
    if (bits <= 0) return;
    uint64_t estimate = 0;
    (void)db_->GetIntProperty(entries(), "rocksdb.estimate-num-keys", &estimate);
    uint64_t design = std::max<uint64_t>(estimate, options_.filter_min_keys);
    for (;;) {
      auto f = std::make_unique<KeyFilter>(design, bits);
      const std::optional<uint64_t> n = Fill(f.get());
      if (!n.has_value()) {
        // The scan failed (a read error): no filter rather than a partial one,
        // which could answer "not on the list" for an entry it never saw.
        base::LogWarning("suppression list: cannot read the list to build its filter; "
                         "every lookup goes to RocksDB");
        return;
      }
      if (static_cast<double>(*n) <= kFilterGrowth * static_cast<double>(design)) {
        filter_keys_ = *n;
        filter_.store(f.release());
        return;
      }
      design = *n;
    }
  }

  // Rebuild - on rebuild_thread_: a filter designed for what the current one
  // holds, filled from a scan while writers insert into both, then swapped in.
  // An entry written before the scan's snapshot is in the scan; one written
  // after it is Remembered after pending_ was published, so into both.
  void Rebuild() {
    KeyFilter* pending = nullptr;
    {
      std::lock_guard<std::mutex> lock(filter_mu_);
      pending_ = new KeyFilter(std::max<uint64_t>(filter_keys_, options_.filter_min_keys),
                               options_.filter_bits_per_key);
      pending_keys_ = 0;
      pending = pending_;
    }
    const std::optional<uint64_t> n = Fill(pending);
    KeyFilter* old = nullptr;
    {
      std::lock_guard<std::mutex> lock(filter_mu_);
      if (n.has_value() && !stopping_) {
        old = filter_.exchange(pending, std::memory_order_seq_cst);
        filter_keys_ = *n + pending_keys_;
        rebuilds_.fetch_add(1, std::memory_order_relaxed);
      } else {
        delete pending;  // stopping, or the scan failed: keep the current filter
      }
      pending_ = nullptr;
      rebuilding_ = false;
    }
    if (old == nullptr) return;
    const unsigned ended = epoch_.fetch_add(1, std::memory_order_seq_cst) & 1U;
    while (readers_[ended].load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    delete old;
  }

  rocksdb::ColumnFamilyHandle* entries() const { return handles_[0]; }
  rocksdb::ColumnFamilyHandle* counters() const { return handles_[1]; }

  // Find - the entry at (address, scope) if any, expired or not.
  absl::StatusOr<std::optional<Suppression>> Find(std::string_view address,
                                                  std::string_view scope) const {
    const std::string key = EntryKey(address, scope);
    rocksdb::PinnableSlice value;
    store_reads_.fetch_add(1, std::memory_order_relaxed);
    const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), entries(), key, &value);
    if (s.IsNotFound()) return std::optional<Suppression>();
    RETURN_IF_ERROR(FromRocks(s, "read"));
    ASSIGN_OR_RETURN(Suppression e, DecodeEntry(key, std::string_view(value.data(), value.size())));
    return std::optional<Suppression>(std::move(e));
  }

  absl::Status Write(rocksdb::WriteBatch& batch, std::string_view what) {
    return FromRocks(db_->Write(write_options_, &batch), what);
  }

  std::string path_;
  SuppressionOptions options_;  // Open's
  // Open's options with SetPolicy's soft-bounce and scope fields; replaced
  // whole, never changed in place, so a reader's snapshot stays consistent.
  std::atomic<std::shared_ptr<const SuppressionOptions>> policy_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::WriteOptions write_options_;
  // Serialises RecordSoftBounce's read-modify-write of a counter (and its
  // look at the entry it may replace).
  std::mutex soft_bounce_mu_;
  // The counters' compaction filter (RocksDB keeps a raw pointer to it).
  std::unique_ptr<ForgetStale> counters_filter_;

  // The filter (null when filter_bits_per_key is 0 or it could not be built).
  // Replaced only under filter_mu_; read by Check without it.
  std::atomic<KeyFilter*> filter_{nullptr};
  // AcquireFilter's epoch (its low bit names the current slot) and the Checks
  // counted in each slot.
  std::atomic<unsigned> epoch_{0};
  mutable std::atomic<int64_t> readers_[2] = {0, 0};
  mutable std::atomic<uint64_t> store_reads_{0};
  std::atomic<uint64_t> rebuilds_{0};
  std::mutex filter_mu_;
  // Guarded by filter_mu_: addresses put into filter_ (the scan's plus those
  // Remembered; replaced entries count twice, which only rebuilds sooner),
  // the filter a rebuild is filling and what was Remembered into it.
  uint64_t filter_keys_ = 0;
  KeyFilter* pending_ = nullptr;
  uint64_t pending_keys_ = 0;
  bool rebuilding_ = false;
  bool stopping_ = false;
  // stopping_ for the scan, which reads it without the lock.
  std::atomic<bool> stopping_flag_{false};
  std::thread rebuild_thread_;
};

namespace {
// CheckPolicy - the soft-bounce fields Open and SetPolicy refuse.
absl::Status CheckPolicy(const SuppressionOptions& options) {
  if (options.soft_bounce_limit < 1) {
    return absl::InvalidArgumentError("suppression list: soft_bounce_limit must be at least 1");
  }
  if (options.soft_bounce_window <= absl::ZeroDuration() ||
      options.soft_bounce_expiry <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "suppression list: soft_bounce_window and soft_bounce_expiry must be positive");
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::unique_ptr<SuppressionList>> SuppressionList::Open(
    const std::string& path, const SuppressionOptions& options) {
  RETURN_IF_ERROR(CheckPolicy(options));
  if (options.max_open_files <= 0) {
    return absl::InvalidArgumentError("suppression list: max_open_files must be at least 1");
  }
  if (options.filter_bits_per_key < 0 || options.filter_bits_per_key > kMaxFilterBitsPerKey) {
    return absl::InvalidArgumentError(absl::StrCat(
        "suppression list: filter_bits_per_key must be 0..", kMaxFilterBitsPerKey));
  }
  // RocksDB creates the last folder only; a fresh install has no var/ yet.
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot open the suppression list: cannot create: ", ec.message()));
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.max_open_files = options.max_open_files;
  db_options.db_write_buffer_size = options.write_buffer_bytes;
  db_options.max_total_wal_size = 4 * options.write_buffer_bytes;
  db_options.keep_log_file_num = 4;

  rocksdb::BlockBasedTableOptions table;
  // Half the cache kept for index and filter blocks (high priority), so that a
  // scan of data blocks (an export) cannot push them out.
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes, /*num_shard_bits=*/-1,
                                           /*strict_capacity_limit=*/false,
                                           /*high_pri_pool_ratio=*/0.5);
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // Partitioned index and filters: only their top levels must stay resident,
  // the partitions come and go through the cache like data blocks, so memory
  // stays bounded by block_cache_bytes at any list size.
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = 4096;
  // Whole-key bloom filters: most lookups are misses (a recipient not on the
  // list), which the filter answers without reading a data block.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  table.optimize_filters_for_memory = true;
  table.format_version = 5;

  auto family = [&]() {
    rocksdb::ColumnFamilyOptions cf;
    cf.write_buffer_size = std::max<size_t>(options.write_buffer_bytes / 4, 1u << 20);
    cf.max_write_buffer_number = 2;
    cf.level_compaction_dynamic_level_bytes = true;
    cf.memtable_whole_key_filtering = true;
    cf.memtable_prefix_bloom_size_ratio = 0.02;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    return cf;
  };
  rocksdb::ColumnFamilyOptions entries_cf = family();
  rocksdb::ColumnFamilyOptions counters_cf = family();
  // Stateless and thread-safe: one of each serves every compaction. They live
  // as long as the process (RocksDB keeps a raw pointer in the options).
  static const ForgetStale* const kExpiry = new ForgetStale(false, absl::ZeroDuration());
  entries_cf.compaction_filter = kExpiry;
  auto counters_filter = std::make_unique<ForgetStale>(true, options.soft_bounce_window);
  counters_cf.compaction_filter = counters_filter.get();

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, entries_cf},
      {kSoftBouncesFamily, counters_cf},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(db_options, path, families, &handles, &raw);
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot open the suppression list: ", s.ToString()));
  }
  auto impl = std::make_unique<Impl>(path, options, std::unique_ptr<rocksdb::DB>(raw),
                                     std::move(handles));
  impl->counters_filter_ = std::move(counters_filter);
  impl->BuildFirstFilter();
  return std::unique_ptr<SuppressionList>(new SuppressionList(std::move(impl)));
}

SuppressionList::SuppressionList(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SuppressionList::~SuppressionList() = default;

const SuppressionOptions& SuppressionList::options() const { return impl_->options_; }

std::shared_ptr<const SuppressionOptions> SuppressionList::Policy() const {
  return impl_->policy_.load(std::memory_order_acquire);
}

absl::Status SuppressionList::SetPolicy(const SuppressionOptions& options) {
  RETURN_IF_ERROR(CheckPolicy(options));
  auto next = std::make_shared<SuppressionOptions>(impl_->options_);
  next->soft_bounce_limit = options.soft_bounce_limit;
  next->soft_bounce_window = options.soft_bounce_window;
  next->soft_bounce_expiry = options.soft_bounce_expiry;
  next->scope = options.scope;
  impl_->counters_filter_->SetWindow(next->soft_bounce_window);
  impl_->policy_.store(std::move(next), std::memory_order_release);
  return absl::OkStatus();
}
const std::string& SuppressionList::path() const { return impl_->path_; }

absl::Status SuppressionList::Add(const Suppression& entry) {
  return AddBatch(std::vector<Suppression>{entry});
}

absl::Status SuppressionList::AddBatch(const std::vector<Suppression>& entries) {
  rocksdb::WriteBatch batch;
  std::vector<std::string> addresses;
  addresses.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    Suppression e = entries[i];
    if (absl::Status st = NormalizeSuppression(&e); !st.ok()) {
      if (entries.size() == 1) return st;
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": ", st.message()));
    }
    RETURN_IF_ERROR(FromRocks(batch.Put(impl_->entries(), EntryKey(e.address, e.scope),
                                        EncodeEntry(e)),
                              "batch"));
    addresses.push_back(std::move(e.address));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  RETURN_IF_ERROR(impl_->Write(batch, "add"));
  impl_->Remember(std::vector<std::string_view>(addresses.begin(), addresses.end()));
  return absl::OkStatus();
}

absl::StatusOr<bool> SuppressionList::Remove(std::string_view address, std::string_view scope) {
  ASSIGN_OR_RETURN(const std::string a, NormalizeSuppressionAddress(address));
  ASSIGN_OR_RETURN(const std::string s, NormalizeSuppressionScope(scope));
  ASSIGN_OR_RETURN(std::optional<Suppression> found, impl_->Find(a, s));
  if (!found) return false;
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocks(batch.Delete(impl_->entries(), EntryKey(a, s)), "batch"));
  // The count starts again: removed by hand means "try this address again".
  RETURN_IF_ERROR(FromRocks(batch.Delete(impl_->counters(), EntryKey(a, s)), "batch"));
  RETURN_IF_ERROR(impl_->Write(batch, "remove"));
  return true;
}

absl::StatusOr<std::optional<Suppression>> SuppressionList::Check(std::string_view rcpt,
                                                                  std::string_view from_domain,
                                                                  absl::Time now) const {
  // Every recipient of a campaign is checked, twice: input already lower-case
  // (as intake and the queue hand it over) is used without a copy.
  RETURN_IF_ERROR(ValidateAddress(rcpt));
  RETURN_IF_ERROR(ValidateScope(from_domain));
  std::string address_copy, scope_copy;
  const std::string_view address = Lowered(rcpt, &address_copy);
  const std::string_view scope = Lowered(from_domain, &scope_copy);
  const std::string_view domain = address.substr(address.rfind('@'));  // "@example.test"
  // Most specific first: the address, then its domain; each in the From
  // domain's scope, then globally.
  std::pair<std::string_view, std::string_view> keys[4];
  size_t n = 0;
  for (std::string_view a : {std::string_view(address), std::string_view(domain)}) {
    if (n > 0 && a == keys[0].first) break;  // rcpt was "@domain" itself
    if (!scope.empty()) keys[n++] = {a, scope};
    keys[n++] = {a, ""};
  }
  // The filter first: almost every recipient of a campaign is on no list, and
  // the filter says so without RocksDB. It holds addresses whatever their
  // scope, so one probe covers both scopes of a key.
  bool address_maybe = true, domain_maybe = true;
  const Impl::FilterRead read = impl_->AcquireFilter();
  if (read.filter != nullptr) {
    address_maybe = read.filter->MayContain(KeyHash(address));
    domain_maybe = read.filter->MayContain(KeyHash(domain));
  }
  impl_->ReleaseFilter(read);
  for (size_t i = 0; i < n; ++i) {
    if (!(keys[i].first == domain ? domain_maybe : address_maybe)) continue;
    ASSIGN_OR_RETURN(std::optional<Suppression> e, impl_->Find(keys[i].first, keys[i].second));
    if (e && e->expires > now) return e;
  }
  return std::optional<Suppression>();
}

SuppressionFilterStats SuppressionList::FilterStats() const {
  SuppressionFilterStats stats;
  stats.store_reads = impl_->store_reads_.load(std::memory_order_relaxed);
  stats.rebuilds = impl_->rebuilds_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(impl_->filter_mu_);
  if (const KeyFilter* f = impl_->filter_.load(); f != nullptr) {
    stats.bytes = f->bytes();
    stats.design_keys = f->design_keys();
    stats.keys = impl_->filter_keys_;
  }
  return stats;
}

absl::StatusOr<bool> SuppressionList::RecordSoftBounce(std::string_view rcpt,
                                                       std::string_view from_domain,
                                                       absl::Time now, std::string_view source) {
  ASSIGN_OR_RETURN(const std::string address, NormalizeSuppressionAddress(rcpt));
  // One snapshot for the whole call: a reload in between must not count under
  // one policy's scope and judge by another's limit.
  const std::shared_ptr<const SuppressionOptions> policy = Policy();
  const SuppressionOptions& o = *policy;
  ASSIGN_OR_RETURN(const std::string scope,
                   NormalizeSuppressionScope(ScopeUnder(o.scope, from_domain)));
  const std::string key = EntryKey(address, scope);
  std::lock_guard<std::mutex> lock(impl_->soft_bounce_mu_);
  ASSIGN_OR_RETURN(std::optional<Suppression> existing, impl_->Find(address, scope));
  if (existing && existing->expires > now) return false;  // suppressed already

  std::string value;
  const rocksdb::Status s = impl_->db_->Get(rocksdb::ReadOptions(), impl_->counters(), key, &value);
  if (!s.IsNotFound()) RETURN_IF_ERROR(FromRocks(s, "read soft bounces"));
  // The times within the window, oldest first; a time after `now` (a clock set
  // back) is kept: it is recent.
  const int64_t since = ToMicros(now - o.soft_bounce_window);
  std::vector<int64_t> times;
  for (size_t off = 0; off + 8 <= value.size(); off += 8) {
    const int64_t t = GetInt64(value.data() + off);
    if (t > since) times.push_back(t);
  }
  times.push_back(ToMicros(now));
  rocksdb::WriteBatch batch;
  if (times.size() >= static_cast<size_t>(o.soft_bounce_limit)) {
    Suppression e;
    e.address = address;
    e.scope = scope;
    e.reason = SuppressionReason::kSoftBounce;
    e.source = std::string(source.substr(0, kMaxSuppressionSource));
    for (char& c : e.source) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    e.added = now;
    e.expires = now + o.soft_bounce_expiry;
    RETURN_IF_ERROR(FromRocks(batch.Put(impl_->entries(), key, EncodeEntry(e)), "batch"));
    RETURN_IF_ERROR(FromRocks(batch.Delete(impl_->counters(), key), "batch"));
    RETURN_IF_ERROR(impl_->Write(batch, "record soft bounce"));
    impl_->Remember({std::string_view(address)});
    return true;
  }
  std::string encoded;
  for (int64_t t : times) PutInt64(&encoded, t);
  RETURN_IF_ERROR(FromRocks(batch.Put(impl_->counters(), key, encoded), "batch"));
  RETURN_IF_ERROR(impl_->Write(batch, "record soft bounce"));
  return false;
}

absl::Status SuppressionList::List(std::string_view after_address, std::string_view after_scope,
                                   size_t limit, std::vector<Suppression>* out) const {
  std::string start;
  if (!after_address.empty()) {
    ASSIGN_OR_RETURN(const std::string a, NormalizeSuppressionAddress(after_address));
    ASSIGN_OR_RETURN(const std::string s, NormalizeSuppressionScope(after_scope));
    start = EntryKey(a, s);
  }
  rocksdb::ReadOptions read;
  // An export reads every entry once: keep its blocks out of the cache that
  // Check's lookups depend on.
  read.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db_->NewIterator(read, impl_->entries()));
  it->Seek(start);
  if (!start.empty() && it->Valid() && it->key() == rocksdb::Slice(start)) it->Next();
  for (size_t n = 0; n < limit && it->Valid(); ++n, it->Next()) {
    ASSIGN_OR_RETURN(Suppression e, DecodeEntry(std::string_view(it->key().data(), it->key().size()),
                                                std::string_view(it->value().data(), it->value().size())));
    out->push_back(std::move(e));
  }
  return FromRocks(it->status(), "list");
}

uint64_t SuppressionList::ApproximateCount() const {
  uint64_t n = 0;
  if (!impl_->db_->GetIntProperty(impl_->entries(), "rocksdb.estimate-num-keys", &n)) return 0;
  return n;
}

std::string SuppressionList::ScopeFor(std::string_view from_domain) const {
  return ScopeUnder(Policy()->scope, from_domain);
}

}  // namespace volley::queue
