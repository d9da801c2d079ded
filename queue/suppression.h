// NAME
//   suppression.h - the suppression list: addresses and domains Volley must not mail
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(auto list, SuppressionList::Open("var/suppression", SuppressionOptions{}));
//   RETURN_IF_ERROR(list->Add({.address = "Ann@Example.test", .scope = "",
//                              .reason = SuppressionReason::kComplaint,
//                              .source = "arf from mx.example.test", .added = now}));
//   ASSIGN_OR_RETURN(std::optional<Suppression> hit, list->Check(rcpt, from_domain, now));
//   ASSIGN_OR_RETURN(bool added, list->RecordSoftBounce(rcpt, from_domain, now, "dsn 4.2.2"));
//   RETURN_IF_ERROR(list->List(after_address, after_scope, 1000, &page));
//
// DESCRIPTION
//   One entry suppresses one address ("ann@example.test") or a whole domain
//   ("@example.test": every address at exactly that domain, not its
//   subdomains), either everywhere (scope "", global) or only for mail whose
//   From domain is the scope ("brand.test"). Each entry says why (the reason),
//   where it came from (the source: "job spring-sale line 3", "volleyctl",
//   "import list.csv line 12"), when it was added and when it expires (never,
//   by default). Adding an entry with the address and scope of another replaces
//   it.
//
//   Addresses are compared case-insensitively: the whole address, local part
//   included, is lower-cased (ASCII) before it is stored or looked up. RFC 5321
//   lets a server treat "Ann" and "ann" as two mailboxes, but practically none
//   does, and the two ways to be wrong are not equal: suppressing a mailbox
//   that differs only in case (a mailbox nobody has) costs nothing, while
//   mailing an address that complained, because the list wrote it in another
//   case, costs the sender's reputation. Over-suppressing is the safe side.
//
//   Check looks up, in this order, the address in the From domain's scope and
//   then globally, then "@domain" in the From domain's scope and then globally,
//   and answers the first entry found that has not expired: at most four point
//   lookups, never a scan, so its cost does not grow with the list.
//
//   Scope policy (SuppressionOptions::scope, [suppression] scope): the scope an
//   automatic entry (a bounce, a complaint, an unsubscribe) gets, from ScopeFor.
//   kGlobal (the default) stores them with scope "": a complaint against one
//   brand is a complaint against the IPs and the reputation every brand sends
//   from, and a mailbox that bounces does not exist for any sender.
//   kFromDomain stores them under the From domain of the message that caused
//   them, for a platform whose brands are unrelated senders (their own
//   domains and IPs). Manual entries carry whatever scope they are given, and
//   Check consults both scopes whatever the policy.
//
//   Soft bounces (mailbox full and the like) suppress only when they repeat:
//   RecordSoftBounce counts them per address and scope, keeping only those
//   within soft_bounce_window, and when soft_bounce_limit of them fall within
//   it, adds a kSoftBounce entry that expires soft_bounce_expiry later (a full
//   mailbox may be emptied; the address is tried again after that). A soft
//   bounce for an address already suppressed for another reason changes
//   nothing: a permanent entry is never replaced by one that expires.
//
// FILTER
//   Almost every recipient of a campaign is on no list, so Check first asks
//   an in-memory filter: a blocked Bloom filter (each address sets about 7
//   bits within one 64-byte block, so a probe is one cache line) over the
//   address of every entry, whatever its scope ("ann@example.test",
//   "@example.test"). "Not there" is certain and answered without RocksDB
//   (well under a microsecond, bench/RESULTS.md); "maybe" (every entry, and
//   about 1% of the rest at 10 bits per key) reads RocksDB as before. The
//   filter never forgets an address: Add, AddBatch and RecordSoftBounce put
//   theirs in after their write and before they return; Remove and expiry
//   leave it in (a false positive costs one RocksDB read, never a wrong
//   answer).
//   Open builds it by reading every entry once (4-6 s at 10 million entries on
//   two busy cores: volleyd starts that much later), sized for RocksDB's estimate of the count (at least
//   filter_min_keys). When it holds 1.5 times the count it was designed for, a
//   thread rebuilds it for what it holds, from a snapshot, while writers put
//   their addresses into both; the new one replaces the old at once, and the
//   old one is freed when the last Check reading it is done. Checks take no
//   lock.
//
// STORAGE
//   A RocksDB database of its own (not the queue's): its own options and
//   memory, backed up, exported or moved alone, and dropped without touching
//   the queue. Column family "default" holds the entries, keyed
//   address NUL scope; "soft_bounces" holds the soft-bounce counters under the
//   same keys. queue/README.md, "The suppression list", has the value layouts.
//   Expired entries and counters older than the window are dropped by a
//   compaction filter, so neither grows without bound.
//
// DURABILITY
//   Every write goes through the write-ahead log and, with sync_writes (the
//   default), is on disk (fdatasync) before the call returns: an unsubscribe
//   or a complaint that was answered is not forgotten by a power failure.
//   AddBatch writes its entries in one atomic write (one sync).
//
// BOUNDS
//   Memory: the filter, filter_bits_per_key / 8 bytes per address it was
//   designed for, which is the count at Open or at its last rebuild, at least
//   filter_min_keys (10 bits: 12.5 MB at 10 million entries, 1.25 MiB at
//   least; old and new together for the moment of a rebuild); the block cache (block_cache_bytes, 32 MiB), which holds the index
//   and bloom filter blocks as well as data blocks, and the memtables
//   (write_buffer_bytes, 8 MiB in all); the rest is the OS page cache. Index
//   and filters are partitioned, so a list of 10 million entries needs only
//   their top levels resident (bench/RESULTS.md, "Suppression list").
//   An address is at most kMaxSuppressionAddress octets, a scope
//   kMaxSuppressionScope, a source kMaxSuppressionSource; a soft-bounce counter
//   holds at most soft_bounce_limit times.
//
// CONTRACT
//   Thread-safe: Check, List, FilterStats and ApproximateCount from any thread
//   at once (the shards call Check before each attempt; Check takes no lock);
//   SetPolicy from any thread (it swaps one pointer; Check never reads it);
//   writers serialise the soft-bounce read-modify-write among themselves and
//   take the filter's mutex for the moment of putting their addresses in.
//
// DIAGNOSTICS
//   InvalidArgument naming the field and why: "address: empty", "address: CR,
//   LF or another control character not allowed", "address: longer than 320
//   octets", "address: not an address (no '@' with text on both sides)",
//   "scope: not a domain", "reason: unknown \"x\" (hard_bounce, soft_bounce,
//   complaint, unsubscribe or manual)". Open: Unavailable naming the path when
//   the database cannot be opened (in use by another process, unreadable).
//   RocksDB errors: DataLoss for corruption, ResourceExhausted for a full disk,
//   Unavailable otherwise, each naming the operation.
//
// SEE ALSO
//   docs/feedback.md ("The suppression list"), docs/config.md ([suppression]),
//   engine/admin.h (/suppressions), tools/volleyctl (suppress),
//   bench/suppression_bench.sh, bench/suppression_delivery_bench.sh,
//   queue/spool.h (the intake check)
#ifndef VOLLEY_QUEUE_SUPPRESSION_H_
#define VOLLEY_QUEUE_SUPPRESSION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::queue {

// Why an entry exists. The numbers are stored: never renumber, only add.
enum class SuppressionReason : uint8_t {
  kHardBounce = 1,
  kSoftBounce = 2,
  kComplaint = 3,
  kUnsubscribe = 4,
  kManual = 5,
};

// SuppressionReasonName - "hard_bounce", "soft_bounce", "complaint",
// "unsubscribe", "manual".
std::string_view SuppressionReasonName(SuppressionReason reason);

// ParseSuppressionReason - the reverse of SuppressionReasonName (exact,
// lower case); InvalidArgument naming the text and the accepted names.
absl::StatusOr<SuppressionReason> ParseSuppressionReason(std::string_view name);

// Longest address (RFC 5321 4.5.3.1: a 64-octet local part, '@', a 255-octet
// domain), scope (a domain name) and source.
inline constexpr size_t kMaxSuppressionAddress = 320;
inline constexpr size_t kMaxSuppressionScope = 255;
inline constexpr size_t kMaxSuppressionSource = 512;

// Which scope automatic entries get (DESCRIPTION, "Scope policy").
enum class SuppressionScope : uint8_t { kGlobal, kFromDomain };

// SuppressionScopeName - "global", "from_domain".
std::string_view SuppressionScopeName(SuppressionScope scope);

struct SuppressionOptions {
  // RocksDB block cache: data blocks and the index and bloom filter blocks.
  // With the memtables, what bounds the list's memory however many entries it
  // holds. Default: 32 MiB ([suppression] block_cache).
  size_t block_cache_bytes = size_t{32} << 20;

  // Memtables, both column families together. Default: 8 MiB.
  size_t write_buffer_bytes = size_t{8} << 20;

  // Table files kept open at once, each a file descriptor (see
  // QueueOptions::max_open_files). Default: 64.
  int max_open_files = 64;

  // fdatasync every write (DURABILITY). Off only for a bulk load that can be
  // repeated (the benchmark). Default: true.
  bool sync_writes = true;

  // Soft bounces within soft_bounce_window that make an entry, which expires
  // soft_bounce_expiry after it is added. Defaults: 3, 7 days, 30 days
  // ([suppression] soft_bounce_limit, soft_bounce_window, soft_bounce_expiry).
  int soft_bounce_limit = 3;
  absl::Duration soft_bounce_window = absl::Hours(24 * 7);
  absl::Duration soft_bounce_expiry = absl::Hours(24 * 30);

  // Scope of automatic entries. Default: kGlobal ([suppression] scope).
  SuppressionScope scope = SuppressionScope::kGlobal;

  // Bits of the in-memory filter per address on the list (FILTER): 10 gives
  // about 1% false positives and 12.5 MB at 10 million entries; 0 turns the
  // filter off (every Check goes to RocksDB). 0..kMaxFilterBitsPerKey.
  // Default: 10 ([suppression] filter_bits_per_key).
  int filter_bits_per_key = 10;

  // The fewest addresses a filter is designed for (a new or small list then
  // grows a while before its first rebuild): 1,048,576, 1.25 MiB at 10 bits.
  uint64_t filter_min_keys = uint64_t{1} << 20;
};

inline constexpr int kMaxFilterBitsPerKey = 32;

// What the filter holds and costs (SuppressionList::FilterStats).
struct SuppressionFilterStats {
  uint64_t bytes = 0;        // the filter's one allocation; 0 when off
  uint64_t design_keys = 0;  // addresses it was sized for
  uint64_t keys = 0;         // addresses put in since (replaced entries count again)
  uint64_t rebuilds = 0;     // times it was replaced by a larger one since Open
  uint64_t store_reads = 0;  // RocksDB point reads of entries since Open (Check, Remove,
                             // RecordSoftBounce): what the filter saves
};

struct Suppression {
  std::string address;  // "ann@example.test", or "@example.test" for the domain
  std::string scope;    // "" = global, else the From domain it applies to
  SuppressionReason reason = SuppressionReason::kManual;
  std::string source;   // free text, where it came from
  absl::Time added;
  absl::Time expires = absl::InfiniteFuture();
};

// NormalizeSuppressionAddress - `address` lower-cased, after the checks named
// in DIAGNOSTICS: "local@domain" (the last '@' splits; both sides non-empty)
// or "@domain"; no control characters; at most kMaxSuppressionAddress octets.
absl::StatusOr<std::string> NormalizeSuppressionAddress(std::string_view address);

// NormalizeSuppressionScope - "" or a domain (no '@', no space or control
// character, at most kMaxSuppressionScope octets), lower-cased.
absl::StatusOr<std::string> NormalizeSuppressionScope(std::string_view scope);

// NormalizeSuppression - the entry's address and scope normalised and its
// source checked (no control characters, at most kMaxSuppressionSource).
absl::Status NormalizeSuppression(Suppression* entry);

class SuppressionList {
 public:
  static absl::StatusOr<std::unique_ptr<SuppressionList>> Open(const std::string& path,
                                                               const SuppressionOptions& options);
  ~SuppressionList();
  SuppressionList(const SuppressionList&) = delete;
  SuppressionList& operator=(const SuppressionList&) = delete;

  // Add - store `entry` (normalised), replacing one with the same address and
  // scope.
  absl::Status Add(const Suppression& entry);

  // AddBatch - Add for each, in one atomic write; nothing is written when one
  // entry is refused (the error names its index: "entry 12: address: empty").
  absl::Status AddBatch(const std::vector<Suppression>& entries);

  // Remove - delete the entry of `address` in `scope`; false when there was none.
  absl::StatusOr<bool> Remove(std::string_view address, std::string_view scope);

  // Check - the entry that suppresses `rcpt` for mail from `from_domain` ("" for
  // none: global entries only) at `now`, or nullopt (DESCRIPTION).
  absl::StatusOr<std::optional<Suppression>> Check(std::string_view rcpt,
                                                   std::string_view from_domain,
                                                   absl::Time now) const;

  // RecordSoftBounce - count a soft bounce of `rcpt` (in ScopeFor(from_domain));
  // true when it reached the limit and added a kSoftBounce entry.
  absl::StatusOr<bool> RecordSoftBounce(std::string_view rcpt, std::string_view from_domain,
                                        absl::Time now, std::string_view source);

  // List - up to `limit` entries after (address, scope) in key order (by
  // address, then scope; "" and "" start at the first), appended to *out.
  // Expired entries that compaction has not yet dropped are listed too.
  absl::Status List(std::string_view after_address, std::string_view after_scope, size_t limit,
                    std::vector<Suppression>* out) const;

  // FilterStats - the filter's size and load, and the RocksDB reads made.
  SuppressionFilterStats FilterStats() const;

  // ApproximateCount - entries stored, as RocksDB estimates them (exact after
  // a flush and compaction; counts replaced and deleted entries until then).
  uint64_t ApproximateCount() const;

  // ScopeFor - the scope an automatic entry for mail from `from_domain` gets
  // under the options' scope policy: "" (global) or the lower-cased domain.
  std::string ScopeFor(std::string_view from_domain) const;

  // SetPolicy - from the next RecordSoftBounce and ScopeFor on (and the next
  // compaction of the counters), use `options`' soft_bounce_limit,
  // soft_bounce_window, soft_bounce_expiry and scope: a SIGHUP reload
  // (engine/reload.h). Its other fields stay Open's (they need a restart).
  // InvalidArgument, and the policy unchanged, when Open would refuse them.
  // Counters already stored keep their times: a lower limit suppresses at the
  // address's next soft bounce when the times within the window reach it.
  absl::Status SetPolicy(const SuppressionOptions& options);

  // Policy - the options in force: Open's, with SetPolicy's fields. Never
  // changed in place; a caller may hold it across a reload.
  std::shared_ptr<const SuppressionOptions> Policy() const;

  // options - Open's, as volleyd started (Policy for the soft-bounce fields).
  const SuppressionOptions& options() const;
  const std::string& path() const;

 private:
  class Impl;
  explicit SuppressionList(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_SUPPRESSION_H_
