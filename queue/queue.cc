#include "queue/queue.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "rocksdb/db.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/options.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/sst_file_manager.h"
#include "rocksdb/listener.h"
#include "rocksdb/table.h"
#include "rocksdb/cache.h"
#include "rocksdb/write_batch.h"

namespace volley::queue {
namespace {

constexpr char kJobPrefix = 'J';
constexpr char kProgressPrefix = 'P';
constexpr std::string_view kLogPositionKey = "L";
constexpr std::string_view kNextJobNoKey = "N";
// The layout of the recipient keys (queue.h). Version 1 had no partition.
constexpr std::string_view kFormatKey = "V";
constexpr char kFormatVersion[] = "2";
constexpr std::string_view kRecipientsFamily = "recipients";
constexpr size_t kRecipientKeySize = kRecipientKeyBytes;
// job_no and partition: what one scan shares (PartitionPrefix).
constexpr size_t kPartitionPrefixSize = 4 + 2;

void PutBigEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetBigEndian(std::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

uint64_t ToMicros(absl::Time t) {
  const int64_t us = absl::ToUnixMicros(t);
  return us < 0 ? 0 : static_cast<uint64_t>(us);
}

// AppendRecipientKey - RecipientKey's bytes (queue.h), appended to *out.
void AppendRecipientKey(std::string* out, uint32_t job_no, uint16_t partition, absl::Time due,
                        uint32_t line) {
  PutBigEndian(out, job_no, 4);
  PutBigEndian(out, partition, 2);
  PutBigEndian(out, ToMicros(due), 8);
  PutBigEndian(out, line, 4);
}

std::string JobPrefix(uint32_t job_no) {
  std::string s;
  PutBigEndian(&s, job_no, 4);
  return s;
}

// The first key past every recipient of job `job_no` (the end of a range delete).
std::string JobEnd(uint32_t job_no) {
  if (job_no == UINT32_MAX) return std::string(5, '\xff');
  return JobPrefix(job_no + 1);
}

// Destination records (Queue::PutDestinationRecord): 'D', the kind, the name.
// 'D' is no other key's first byte.
std::string DestinationRecordKey(Queue::DestinationRecord kind, std::string_view name) {
  return absl::StrCat("D", std::string(1, static_cast<char>(kind)), base::Sv(name));
}
std::string JobKey(std::string_view id) { return absl::StrCat(std::string(1, kJobPrefix), base::Sv(id)); }

// The first key of job `job_no`'s recipients in `partition`.
std::string PartitionPrefix(uint32_t job_no, uint16_t partition) {
  std::string s = JobPrefix(job_no);
  PutBigEndian(&s, partition, 2);
  return s;
}

// The first key past job `job_no`'s recipients in `partition`.
std::string PartitionEnd(uint32_t job_no, uint16_t partition) {
  if (partition == UINT16_MAX) return JobEnd(job_no);
  return PartitionPrefix(job_no, static_cast<uint16_t>(partition + 1));
}

std::string ProgressKey(uint32_t job_no) {
  std::string k(1, kProgressPrefix);
  PutBigEndian(&k, job_no, 4);
  return k;
}

// Job record value, version 2: version(1) state(1) flags(1) job_no(4)
// queued_at_us(8) first_due_us(8) recipients(8) source_len(2) source
// header_json(rest). Version 1 had no flags byte; it is still read.
constexpr uint8_t kJobRecordVersion = 2;
constexpr uint8_t kJobFlagPaused = 0x01;

std::string EncodeJob(const JobRecord& j) {
  std::string v;
  v.push_back(static_cast<char>(kJobRecordVersion));
  v.push_back(static_cast<char>(j.state));
  v.push_back(static_cast<char>(j.paused ? kJobFlagPaused : 0));
  PutBigEndian(&v, j.job_no, 4);
  PutBigEndian(&v, ToMicros(j.queued_at), 8);
  PutBigEndian(&v, ToMicros(j.first_due), 8);
  PutBigEndian(&v, j.recipients, 8);
  const size_t source_len = std::min<size_t>(j.source.size(), UINT16_MAX);
  PutBigEndian(&v, source_len, 2);
  v.append(j.source, 0, source_len);
  v.append(j.header_json);
  return v;
}

absl::StatusOr<JobRecord> DecodeJob(std::string_view id, std::string_view v) {
  const auto corrupt = [&] {
    return absl::DataLossError(absl::StrCat("queue: job \"", base::Sv(id), "\": corrupt record"));
  };
  if (v.size() < 2) return corrupt();
  const auto version = static_cast<uint8_t>(v[0]);
  const auto state = static_cast<uint8_t>(v[1]);
  JobRecord j;
  j.id = std::string(id);
  if (version == 2) {
    if (v.size() < 3) return corrupt();
    j.paused = (static_cast<uint8_t>(v[2]) & kJobFlagPaused) != 0;
    v.remove_prefix(3);
  } else if (version == 1) {
    v.remove_prefix(2);
  } else {
    return corrupt();
  }
  // What follows is the same in both versions.
  constexpr size_t kFixed = 4 + 8 + 8 + 8 + 2;
  if (v.size() < kFixed) return corrupt();
  if (state < 1 || state > 4) {
    return absl::DataLossError(absl::StrCat("queue: job \"", base::Sv(id), "\": bad state ", state));
  }
  j.state = static_cast<JobState>(state);
  j.job_no = static_cast<uint32_t>(GetBigEndian(v, 4));
  j.queued_at = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(v.substr(4), 8)));
  j.first_due = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(v.substr(12), 8)));
  j.recipients = GetBigEndian(v.substr(20), 8);
  const size_t source_len = GetBigEndian(v.substr(28), 2);
  if (v.size() < kFixed + source_len) return corrupt();
  j.source = std::string(v.substr(kFixed, source_len));
  j.header_json = std::string(v.substr(kFixed + source_len));
  return j;
}

// Progress value: the JobProgress counters as signed 64-bit little-endian
// numbers, in this order. A counter is changed by a merge operand of the same
// shape holding deltas, so recording an outcome never reads the counters.
// Fields are only ever added at the end: a value written before a field
// existed is shorter, and reads as zero for it (kSuppressed and the feedback
// counters came with the feedback loop, issue 18).
enum ProgressField : size_t {
  kTotal, kDelivered, kBounced, kExpired, kCancelled, kDeferred, kDeferrals, kSuppressed,
  kBouncedAsync, kComplained, kUnsubscribed, kProgressFields
};
using ProgressDelta = std::array<int64_t, kProgressFields>;
constexpr size_t kProgressValueSize = kProgressFields * 8;
// The shortest value ever written: the seven fields before kSuppressed.
constexpr size_t kOldestProgressValueSize = 7 * 8;

std::string EncodeProgress(const ProgressDelta& d) {
  std::string v(kProgressValueSize, '\0');
  for (size_t i = 0; i < kProgressFields; ++i) {
    const auto u = static_cast<uint64_t>(d[i]);
    for (size_t b = 0; b < 8; ++b) v[i * 8 + b] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return v;
}

bool DecodeProgress(std::string_view v, ProgressDelta* d) {
  if (v.size() % 8 != 0 || v.size() < kOldestProgressValueSize || v.size() > kProgressValueSize) {
    return false;
  }
  d->fill(0);
  for (size_t i = 0; i < v.size() / 8; ++i) {
    uint64_t u = 0;
    for (size_t b = 0; b < 8; ++b) {
      u |= static_cast<uint64_t>(static_cast<unsigned char>(v[i * 8 + b])) << (8 * b);
    }
    (*d)[i] = static_cast<int64_t>(u);
  }
  return true;
}

// Adds progress deltas. Only progress keys are ever merged; a malformed
// operand fails the merge (RocksDB reports it as corruption) rather than
// being taken as zero.
class ProgressMergeOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    ProgressDelta sum{};
    if (existing != nullptr && !DecodeProgress(existing->ToStringView(), &sum)) return false;
    ProgressDelta add{};
    if (!DecodeProgress(value.ToStringView(), &add)) return false;
    for (size_t i = 0; i < kProgressFields; ++i) sum[i] += add[i];
    *new_value = EncodeProgress(sum);
    return true;
  }
  const char* Name() const override { return "VolleyProgressAdd"; }
};

// Recipient value: attempts(4, BE) then the encoded recipient. With the top
// bit of the attempts word set (kHasLastReply), the last reply comes between
// them: reply length(2, BE), reply, class length(1), class. A value without
// the bit (every value written before there was a last reply) reads as before.
constexpr uint32_t kHasLastReply = uint32_t{1} << 31;

// CutUtf8 - at most `max` bytes of `s`, not cut inside a UTF-8 sequence.
std::string_view CutUtf8(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

void AppendRecipientValue(std::string* v, uint32_t attempts, std::string_view recipient,
                          std::string_view last_reply = {}, std::string_view last_class = {}) {
  last_reply = CutUtf8(last_reply, kMaxLastReplyBytes);
  last_class = CutUtf8(last_class, kMaxLastClassBytes);
  const bool has_last = !last_reply.empty() || !last_class.empty();
  PutBigEndian(v, has_last ? (attempts | kHasLastReply) : attempts, 4);
  if (has_last) {
    PutBigEndian(v, last_reply.size(), 2);
    v->append(last_reply);
    PutBigEndian(v, last_class.size(), 1);
    v->append(last_class);
  }
  v->append(recipient);
}

std::string EncodeRecipientValue(uint32_t attempts, std::string_view recipient,
                                 std::string_view last_reply = {},
                                 std::string_view last_class = {}) {
  std::string v;
  v.reserve(4 + 3 + std::min(last_reply.size(), kMaxLastReplyBytes) +
            std::min(last_class.size(), kMaxLastClassBytes) + recipient.size());
  AppendRecipientValue(&v, attempts, recipient, last_reply, last_class);
  return v;
}

// SeekAfter - to the first key after `after_key`, or to `prefix` when it is empty.
void SeekAfter(rocksdb::Iterator* it, std::string_view prefix, std::string_view after_key) {
  if (after_key.empty()) {
    it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
    return;
  }
  const rocksdb::Slice after(after_key.data(), after_key.size());
  it->Seek(after);
  if (it->Valid() && it->key() == after) it->Next();
}

// DecodeEntry - one key and value of the recipients family, of job `job_no`.
absl::StatusOr<QueuedRecipient> DecodeEntry(uint32_t job_no, std::string_view key,
                                            std::string_view value) {
  if (key.size() != kRecipientKeySize || value.size() < 4) {
    return absl::DataLossError(absl::StrCat("queue: job ", job_no, ": corrupt recipient"));
  }
  QueuedRecipient r;
  r.key = std::string(key);
  r.job_no = job_no;
  r.partition = static_cast<uint16_t>(GetBigEndian(key.substr(4), 2));
  r.due = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(key.substr(6), 8)));
  r.line = static_cast<uint32_t>(GetBigEndian(key.substr(14), 4));
  const auto word = static_cast<uint32_t>(GetBigEndian(value, 4));
  r.attempts = word & ~kHasLastReply;
  value.remove_prefix(4);
  if ((word & kHasLastReply) != 0) {
    // A last reply that does not fit its bounds leaves the rest of the value
    // as the recipient, which then does not decode either: the entry is
    // bounced as unreadable (queue/README.md), not a fatal error of the scan.
    std::string_view rest = value;
    const size_t reply_size = rest.size() >= 2 ? GetBigEndian(rest, 2) : SIZE_MAX;
    if (reply_size <= kMaxLastReplyBytes && rest.size() >= 2 + reply_size + 1) {
      std::string_view reply = rest.substr(2, reply_size);
      rest.remove_prefix(2 + reply_size);
      const size_t class_size = GetBigEndian(rest, 1);
      if (class_size <= kMaxLastClassBytes && rest.size() >= 1 + class_size) {
        r.last_reply = std::string(reply);
        r.last_class = std::string(rest.substr(1, class_size));
        value = rest.substr(1 + class_size);
      }
    }
  }
  r.recipient = std::string(value);
  return r;
}

// FromRocks - RocksDB's status as ours (queue.h, ERRORS). Only corruption, or
// an error RocksDB itself calls unrecoverable, is DataLoss: everything else is
// worth retrying, and callers do.
absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("queue: ", base::Sv(what), ": ", s.ToString());
  if (s.IsCorruption() || s.severity() >= rocksdb::Status::kUnrecoverableError) {
    return absl::DataLossError(msg);
  }
  if (s.IsNoSpace() || s.IsIncomplete() || s.IsBusy() || s.IsTryAgain()) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::UnavailableError(msg);
}

// Retryable - `s`, marked retryable when it is a plain I/O error: EMFILE,
// ENFILE, EIO, EROFS... (RocksDB's POSIX layer gives those no subcode). Not a
// full disk (subcode kNoSpace: RocksDB's SstFileManager handles it, see Open),
// not a missing file (kPathNotFound: RocksDB probes for files that need not
// exist and tests for exactly that), nor anything already marked as data loss.
// Marked, RocksDB 7.8 makes a failed write a hard error and resumes by itself
// (ErrorHandler::SetBGError, "retryable IO error"); unmarked, the same EMFILE on
// a new write-ahead log is a fatal error no DB::Resume clears (issue 16).
rocksdb::IOStatus Retryable(rocksdb::IOStatus s) {
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNone && !s.GetDataLoss()) {
    s.SetRetryable(true);
  }
  return s;
}

// RetryableWritableFile - a file RocksDB writes (log, table, MANIFEST), its
// write and sync errors marked by Retryable.
class RetryableWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  using FSWritableFileOwnerWrapper::FSWritableFileOwnerWrapper;
  using IOOptions = rocksdb::IOOptions;
  using IODebugContext = rocksdb::IODebugContext;
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const IOOptions& o,
                           IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Append(data, o, dbg));
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const IOOptions& o,
                           const rocksdb::DataVerificationInfo& info,
                           IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Append(data, o, info, dbg));
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, dbg));
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const IOOptions& o,
                                     const rocksdb::DataVerificationInfo& info,
                                     IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, info, dbg));
  }
  rocksdb::IOStatus Truncate(uint64_t size, const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Truncate(size, o, dbg));
  }
  rocksdb::IOStatus Close(const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Close(o, dbg));
  }
  rocksdb::IOStatus Flush(const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Flush(o, dbg));
  }
  rocksdb::IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Sync(o, dbg));
  }
  rocksdb::IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::Fsync(o, dbg));
  }
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& o,
                              IODebugContext* dbg) override {
    return Retryable(FSWritableFileOwnerWrapper::RangeSync(offset, nbytes, o, dbg));
  }
};

// RetryableDirectory - the queue's folder, synced after a file is created or
// renamed in it.
class RetryableDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  using FSDirectoryWrapper::FSDirectoryWrapper;
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Retryable(FSDirectoryWrapper::Fsync(o, dbg));
  }
  rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg,
                                        const rocksdb::DirFsyncOptions& d) override {
    return Retryable(FSDirectoryWrapper::FsyncWithDirOptions(o, dbg, d));
  }
  rocksdb::IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Retryable(FSDirectoryWrapper::Close(o, dbg));
  }
};

// RetryableFileSystem - the POSIX file system, with the errors of opening,
// writing and syncing files marked by Retryable. Reads of open files are left
// as they are: a read error in a scan is the caller's to retry, and one in a
// compaction is a soft error that stops no write.
class RetryableFileSystem : public rocksdb::FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  using FileOptions = rocksdb::FileOptions;
  using IODebugContext = rocksdb::IODebugContext;
  const char* Name() const override { return "VolleyRetryableFileSystem"; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    IODebugContext* dbg) override {
    return Wrap(target()->NewWritableFile(f, o, r, dbg), r);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       IODebugContext* dbg) override {
    return Wrap(target()->ReopenWritableFile(f, o, r, dbg), r);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      IODebugContext* dbg) override {
    return Wrap(target()->ReuseWritableFile(f, old, o, r, dbg), r);
  }
  rocksdb::IOStatus NewSequentialFile(const std::string& f, const FileOptions& o,
                                      std::unique_ptr<rocksdb::FSSequentialFile>* r,
                                      IODebugContext* dbg) override {
    return Retryable(target()->NewSequentialFile(f, o, r, dbg));
  }
  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        IODebugContext* dbg) override {
    return Retryable(target()->NewRandomAccessFile(f, o, r, dbg));
  }
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    IODebugContext* dbg) override {
    return Retryable(target()->NewRandomRWFile(f, o, r, dbg));
  }
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io,
                                 std::unique_ptr<rocksdb::FSDirectory>* r,
                                 IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewDirectory(name, io, r, dbg);
    if (s.ok() && *r != nullptr) *r = std::make_unique<RetryableDirectory>(std::move(*r));
    return Retryable(std::move(s));
  }
  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& io, IODebugContext* dbg) override {
    return Retryable(target()->RenameFile(from, to, io, dbg));
  }
  rocksdb::IOStatus GetChildren(const std::string& dir, const rocksdb::IOOptions& io,
                                std::vector<std::string>* r, IODebugContext* dbg) override {
    return Retryable(target()->GetChildren(dir, io, r, dbg));
  }

 private:
  static rocksdb::IOStatus Wrap(rocksdb::IOStatus s, std::unique_ptr<rocksdb::FSWritableFile>* r) {
    if (s.ok() && *r != nullptr) *r = std::make_unique<RetryableWritableFile>(std::move(*r));
    return Retryable(std::move(s));
  }
};

// DiskErrorLog - puts in volleyd's log (stderr) what makes RocksDB stop writes
// and when they go again: intake pauses on these (engine/intake.h), the
// committer stalls (engine/committer.h), and the operator must be able to see
// why. Once per episode: while RocksDB retries by itself (every
// kResumeRetryInterval) each failed try is a background error of its own, and
// a line a second for an hour says nothing the first did not. Slowdowns
// (WriteStallCondition::kDelayed) are routine under a heavy intake and are not
// logged; stops are.
class DiskErrorLog : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    if (failing_.exchange(true, std::memory_order_relaxed)) {
      repeats_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    base::LogError("queue: writes stopped after a %s error: %s", ReasonName(reason),
                  error->ToString());
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    // RocksDB 7.8 reports the end of an automatic recovery twice, the second
    // time with no error on either side: nothing happened then.
    if (info.old_bg_error.ok() && info.new_bg_error.ok()) return;
    if (info.new_bg_error.ok()) {
      failing_.store(false, std::memory_order_relaxed);
      const uint64_t repeats = repeats_.exchange(0, std::memory_order_relaxed);
      base::LogInfo("queue: writes resumed after: %s%s", info.old_bg_error.ToString(),
                    repeats == 0 ? "" : absl::StrCat(" (", repeats, " more failed tries)"));
    } else {
      base::LogError("queue: recovery failed: %s", info.new_bg_error.ToString());
    }
  }
  void OnStallConditionsChanged(const rocksdb::WriteStallInfo& info) override {
    using C = rocksdb::WriteStallCondition;
    if (info.condition.prev == C::kNormal && info.condition.cur != C::kNormal) {
      stalls_.fetch_add(1, std::memory_order_relaxed);
    }
    if (info.condition.cur == C::kStopped) {
      base::LogWarning("queue: %s: writes stalled (flushes or compactions behind)", info.cf_name);
    } else if (info.condition.prev == C::kStopped) {
      base::LogInfo("queue: %s: writes no longer stalled", info.cf_name);
    }
  }

 private:
  static const char* ReasonName(rocksdb::BackgroundErrorReason reason) {
    switch (reason) {
      case rocksdb::BackgroundErrorReason::kFlush:
      case rocksdb::BackgroundErrorReason::kFlushNoWAL: return "flush";
      case rocksdb::BackgroundErrorReason::kCompaction: return "compaction";
      case rocksdb::BackgroundErrorReason::kWriteCallback: return "write";
      case rocksdb::BackgroundErrorReason::kMemTable: return "memtable";
      case rocksdb::BackgroundErrorReason::kManifestWrite:
      case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL: return "manifest write";
    }
    return "background";
  }

 public:
  uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }

 private:
  // Written by RocksDB's background threads, read by the metrics exporter.
  std::atomic<uint64_t> stalls_{0};
  // Between a background error and the recovery that clears it; the failed
  // tries meanwhile, logged as one number when it clears.
  std::atomic<bool> failing_{false};
  std::atomic<uint64_t> repeats_{0};
};

class RocksQueue;

// Recipients are staged and written in key order, one partition after another.
// The file's order interleaves the partitions (a partition is a hash of the
// domain), and the memtable's skip list inserts a key that follows the last
// one of its partition for about a third fewer instructions than one that lands
// among other partitions' keys (bench/memtable_bench.sh): intake is the
// queue's largest writer. A batch is atomic whatever its order, and its keys
// are all distinct, so the order changes nothing that can be read.
class RocksIntakeWriter : public Queue::IntakeWriter {
 public:
  RocksIntakeWriter(RocksQueue* q, JobRecord job) : q_(q), job_(std::move(job)) {}
  absl::Status Add(uint32_t line, uint16_t partition, std::string_view recipient) override;
  absl::Status Commit(uint64_t recipients, uint64_t suppressed) override;

 private:
  struct Staged {
    uint16_t partition;
    uint32_t line;
    size_t value_at;  // in values_
    size_t value_size;
  };
  void MoveStagedIntoBatch();
  absl::Status WriteBatch(bool sync);
  RocksQueue* q_;
  JobRecord job_;
  rocksdb::WriteBatch batch_;
  std::vector<Staged> staged_;  // at most QueueOptions::intake_batch
  std::string values_;          // the staged recipients' values, end to end
  std::string key_;             // scratch
};

class RocksOutcomeBatch : public Queue::OutcomeBatch {
 public:
  RocksOutcomeBatch(rocksdb::ColumnFamilyHandle* meta, rocksdb::ColumnFamilyHandle* recipients)
      : meta_(meta), recipients_(recipients) {}
  void Remove(const QueuedRecipient& r, Final how) override {
    (void)batch_.Delete(recipients_, r.key);
    ProgressDelta& d = progress_[r.job_no];
    switch (how) {
      case Final::kDelivered: ++d[kDelivered]; break;
      case Final::kBounced: ++d[kBounced]; break;
      case Final::kExpired: ++d[kExpired]; break;
      case Final::kCancelled: ++d[kCancelled]; break;
      case Final::kSuppressed: ++d[kSuppressed]; break;
    }
    if (r.attempts > 0) --d[kDeferred];
    ++size_;
  }
  void Reschedule(const QueuedRecipient& r, absl::Time due) override {
    NoteRequeued(r.partition, due);
    (void)batch_.Delete(recipients_, r.key);
    (void)batch_.Put(recipients_, RecipientKey(r.job_no, r.partition, due, r.line),
                     EncodeRecipientValue(r.attempts + 1, r.recipient, r.last_reply,
                                          r.last_class));
    ProgressDelta& d = progress_[r.job_no];
    if (r.attempts == 0) ++d[kDeferred];
    ++d[kDeferrals];
    ++size_;
  }
  void Postpone(const QueuedRecipient& r, absl::Time due) override {
    NoteRequeued(r.partition, due);
    (void)batch_.Delete(recipients_, r.key);
    (void)batch_.Put(recipients_, RecipientKey(r.job_no, r.partition, due, r.line),
                     EncodeRecipientValue(r.attempts, r.recipient, r.last_reply,
                                          r.last_class));
    ++size_;
  }
  void Count(uint32_t job_no, Counted what, uint64_t n) override {
    ProgressDelta& d = progress_[job_no];
    const auto add = static_cast<int64_t>(n);
    switch (what) {
      case Counted::kBouncedAsync: d[kBouncedAsync] += add; break;
      case Counted::kComplained: d[kComplained] += add; break;
      case Counted::kUnsubscribed: d[kUnsubscribed] += add; break;
    }
    ++size_;
  }
  void SetLogPosition(std::string_view position) override {
    (void)batch_.Put(meta_, kLogPositionKey, rocksdb::Slice(position.data(), position.size()));
  }
  size_t size() const override { return size_; }
  // The write: the recipients' changes and one counter merge per job, together.
  rocksdb::WriteBatch& Finish() {
    for (const auto& [job_no, delta] : progress_) {
      (void)batch_.Merge(meta_, ProgressKey(job_no), EncodeProgress(delta));
    }
    progress_.clear();
    return batch_;
  }
  // Each partition a recipient was moved into (Reschedule, Postpone), once,
  // with the earliest due time moved into it: for Queue::TakeRequeued.
  const std::vector<std::pair<uint16_t, int64_t>>& requeued() const { return requeued_; }

 private:
  void NoteRequeued(uint16_t partition, absl::Time due) {
    const auto micros = static_cast<int64_t>(ToMicros(due));
    for (auto& [p, earliest] : requeued_) {
      if (p == partition) {
        earliest = std::min(earliest, micros);
        return;
      }
    }
    requeued_.emplace_back(partition, micros);
  }

  rocksdb::ColumnFamilyHandle* meta_;
  rocksdb::ColumnFamilyHandle* recipients_;
  rocksdb::WriteBatch batch_;
  // Few jobs are active at once: a small ordered map is cheap here.
  std::map<uint32_t, ProgressDelta> progress_;
  // Deferrals are the exception: a short list, searched linearly.
  std::vector<std::pair<uint16_t, int64_t>> requeued_;
  size_t size_ = 0;
};

class RocksQueue : public Queue {
 public:
  RocksQueue(std::unique_ptr<rocksdb::Env> env, std::unique_ptr<rocksdb::DB> db,
             std::vector<rocksdb::ColumnFamilyHandle*> cfs, QueueOptions options,
             std::shared_ptr<DiskErrorLog> disk_errors)
      : env_(std::move(env)),
        db_(std::move(db)),
        cfs_(std::move(cfs)),
        options_(options),
        disk_errors_(std::move(disk_errors)) {
    for (auto& earliest : requeued_micros_) earliest.store(kNoneRequeued, std::memory_order_relaxed);
  }

  // CheckFormat - refuse a queue whose recipient keys have another layout than
  // this build's; a new (or drained) queue is stamped with this one.
  absl::Status CheckFormat(const std::string& path) {
    std::string version;
    const auto s = db_->Get(rocksdb::ReadOptions(), meta(), kFormatKey, &version);
    if (s.ok()) {
      if (version == kFormatVersion) return absl::OkStatus();
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": queue format ", version, " is not this volleyd's (",
                       kFormatVersion, "): run the volleyd that wrote it until it drains"));
    }
    if (!s.IsNotFound()) return FromRocks(s, "read queue format");
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), recipients()));
    it->SeekToFirst();
    RETURN_IF_ERROR(FromRocks(it->status(), "scan"));
    if (it->Valid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": queue format 1 (recipient keys without a partition) holds recipients: "
                "run the volleyd that wrote it until it drains, or move the folder away"));
    }
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), kFormatKey, kFormatVersion);
    return Write(SyncedWrite(), &batch, "write queue format");
  }

  ~RocksQueue() override {
    // A clean stop leaves nothing in the write-ahead log: the next start (or a
    // tool such as ldb, which knows nothing of the progress merge operator) has
    // nothing to replay. A failure here is harmless: the log is still there.
    rocksdb::FlushOptions flush;
    flush.allow_write_stall = true;
    (void)db_->Flush(flush, cfs_);
    for (auto* cf : cfs_) (void)db_->DestroyColumnFamilyHandle(cf);
    (void)db_->Close();
  }

  absl::StatusOr<std::optional<JobRecord>> FindJob(std::string_view id) override {
    std::string value;
    const auto s = db_->Get(rocksdb::ReadOptions(), meta(), JobKey(id), &value);
    if (s.IsNotFound()) return std::optional<JobRecord>();
    RETURN_IF_ERROR(FromRocks(s, "read job"));
    ASSIGN_OR_RETURN(JobRecord job, DecodeJob(id, value));
    return std::optional<JobRecord>(std::move(job));
  }

  absl::StatusOr<std::vector<JobRecord>> ListJobs() override {
    std::vector<JobRecord> jobs;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta()));
    const std::string prefix(1, kJobPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const auto key = it->key().ToStringView();
      ASSIGN_OR_RETURN(JobRecord job, DecodeJob(key.substr(1), it->value().ToStringView()));
      jobs.push_back(std::move(job));
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "list jobs"));
    return jobs;
  }

  absl::StatusOr<JobRecord> BeginJob(std::string_view id, std::string_view header_json,
                                     std::string_view source, absl::Time queued_at,
                                     absl::Time first_due) override {
    std::string next;
    uint32_t job_no = 1;
    const auto s = db_->Get(rocksdb::ReadOptions(), meta(), kNextJobNoKey, &next);
    if (s.ok() && next.size() == 4) {
      job_no = static_cast<uint32_t>(GetBigEndian(next, 4));
    } else if (!s.IsNotFound()) {
      RETURN_IF_ERROR(FromRocks(s.ok() ? rocksdb::Status::Corruption("job counter") : s,
                                "read job counter"));
    }
    JobRecord job;
    job.id = std::string(id);
    job.job_no = job_no;
    job.state = JobState::kLoading;
    job.queued_at = queued_at;
    job.first_due = first_due;
    job.header_json = std::string(header_json);
    job.source = std::string(source);
    std::string next_value;
    PutBigEndian(&next_value, job_no + 1, 4);
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), kNextJobNoKey, next_value);
    (void)batch.Put(meta(), JobKey(id), EncodeJob(job));
    RETURN_IF_ERROR(Write(rocksdb::WriteOptions(), &batch, "begin job"));
    return job;
  }

  std::unique_ptr<IntakeWriter> NewIntakeWriter(const JobRecord& job) override {
    return std::make_unique<RocksIntakeWriter>(this, job);
  }

  absl::Status TakeDue(uint32_t job_no, uint16_t partition, std::string_view after_key,
                       absl::Time now, size_t max, std::vector<QueuedRecipient>* out) override {
    return TakeDueAndNext(job_no, partition, after_key, now, max, out, nullptr);
  }

  absl::Status TakeDueAndNext(uint32_t job_no, uint16_t partition, std::string_view after_key,
                              absl::Time now, size_t max, std::vector<QueuedRecipient>* out,
                              absl::Time* next_due) override {
    const std::string prefix = PartitionPrefix(job_no, partition);
    const std::string limit = RecipientKey(job_no, partition, now, UINT32_MAX);
    // Without next_due the scan stops at the key just after `limit` (keys are
    // all the same size); with it, at the partition's end, so that the first
    // key not yet due names the next due time: see Bounded. Past `limit` the
    // keys are ones not yet due, which nothing has deleted yet (a deferral
    // deletes a key it took, and so one that was due), so the one step past it
    // does not walk over tombstones.
    const std::string end = next_due != nullptr ? PartitionEnd(job_no, partition) : limit + '\0';
    const rocksdb::Slice bound(end);
    auto it = Bounded(&bound);
    SeekAfter(it.get(), prefix, after_key);
    size_t taken = 0;
    if (next_due != nullptr) *next_due = absl::InfiniteFuture();
    for (; it->Valid() && taken < max; it->Next()) {
      const auto key = it->key().ToStringView();
      if (!it->key().starts_with(prefix)) break;
      if (key.compare(limit) > 0) {
        if (next_due != nullptr) {
          *next_due =
              absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(key.substr(6), 8)));
        }
        break;
      }
      ASSIGN_OR_RETURN(QueuedRecipient r, DecodeEntry(job_no, key, it->value().ToStringView()));
      out->push_back(std::move(r));
      ++taken;
    }
    if (next_due != nullptr && taken == max) *next_due = absl::InfinitePast();
    return FromRocks(it->status(), "scan");
  }

  absl::StatusOr<std::optional<absl::Time>> NextDue(uint32_t job_no, uint16_t partition,
                                                    std::string_view after_key) override {
    const std::string prefix = PartitionPrefix(job_no, partition);
    const std::string end = PartitionEnd(job_no, partition);
    const rocksdb::Slice bound(end);
    auto it = Bounded(&bound);
    SeekAfter(it.get(), prefix, after_key);
    if (!it->Valid() || !it->key().starts_with(prefix)) {
      RETURN_IF_ERROR(FromRocks(it->status(), "scan"));
      return std::optional<absl::Time>();
    }
    return std::optional<absl::Time>(absl::FromUnixMicros(
        static_cast<int64_t>(GetBigEndian(it->key().ToStringView().substr(6), 8))));
  }

  std::unique_ptr<OutcomeBatch> NewOutcomeBatch() override {
    return std::make_unique<RocksOutcomeBatch>(meta(), recipients());
  }

  absl::Status Apply(OutcomeBatch& batch) override {
    auto& rb = static_cast<RocksOutcomeBatch&>(batch);
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync_outcomes;
    // Finish adds the counters' merges once: a batch refused and applied again
    // (engine/committer.h) counts its outcomes once.
    RETURN_IF_ERROR(Write(wo, &rb.Finish(), "record outcomes"));
    // Only once the keys are written: a scan woken by this finds them.
    for (const auto& [partition, micros] : rb.requeued()) {
      std::atomic<int64_t>& earliest = requeued_micros_[partition];
      int64_t seen = earliest.load(std::memory_order_relaxed);
      while (micros < seen &&
             !earliest.compare_exchange_weak(seen, micros, std::memory_order_release,
                                             std::memory_order_relaxed)) {
      }
    }
    return absl::OkStatus();
  }

  absl::Time TakeRequeued(uint16_t partition) override {
    std::atomic<int64_t>& earliest = requeued_micros_[partition % kPartitions];
    // Asked for every partition at every refill, and mostly nothing moved: a
    // plain load first, the locked exchange only when there is something.
    if (earliest.load(std::memory_order_relaxed) == kNoneRequeued) return absl::InfiniteFuture();
    const int64_t micros = earliest.exchange(kNoneRequeued, std::memory_order_acquire);
    return micros == kNoneRequeued ? absl::InfiniteFuture() : absl::FromUnixMicros(micros);
  }

  absl::Status MarkJobDone(const JobRecord& job) override {
    std::lock_guard<std::mutex> lock(record_mu_);
    // Re-read: the record may have changed since the caller loaded it (paused).
    ASSIGN_OR_RETURN(std::optional<JobRecord> current, FindJob(job.id));
    JobRecord done = current.value_or(job);
    if (done.state != JobState::kCancelled) done.state = JobState::kDone;
    done.paused = false;
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), JobKey(job.id), EncodeJob(done));
    // One range tombstone over the job's keys: compaction then drops the point
    // tombstones its recipients left (and anything under them) wholesale.
    (void)batch.DeleteRange(recipients(), JobPrefix(job.job_no), JobEnd(job.job_no));
    return Write(rocksdb::WriteOptions(), &batch, "mark job done");
  }

  absl::StatusOr<std::string> ReadLogPosition() override {
    std::string value;
    const auto s = db_->Get(rocksdb::ReadOptions(), meta(), kLogPositionKey, &value);
    if (s.IsNotFound()) return std::string();
    RETURN_IF_ERROR(FromRocks(s, "read delivery log position"));
    return value;
  }

  absl::Status FindLines(uint32_t job_no, const std::vector<uint32_t>& lines,
                         std::vector<QueuedRecipient>* out) override {
    const std::string prefix = JobPrefix(job_no);
    const std::string end = JobEnd(job_no);
    const rocksdb::Slice bound(end);
    auto it = Bounded(&bound);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      ASSIGN_OR_RETURN(QueuedRecipient r,
                       DecodeEntry(job_no, it->key().ToStringView(), it->value().ToStringView()));
      if (std::binary_search(lines.begin(), lines.end(), r.line)) out->push_back(std::move(r));
    }
    return FromRocks(it->status(), "scan");
  }

  absl::StatusOr<JobProgress> ReadProgress(uint32_t job_no) override {
    std::string value;
    const auto s = db_->Get(rocksdb::ReadOptions(), meta(), ProgressKey(job_no), &value);
    JobProgress p;
    if (s.IsNotFound()) return p;
    RETURN_IF_ERROR(FromRocks(s, "read job progress"));
    ProgressDelta d{};
    if (!DecodeProgress(value, &d)) {
      return absl::DataLossError(absl::StrCat("queue: job ", job_no, ": corrupt progress counters"));
    }
    // A counter below zero cannot come from the outcomes recorded; show zero
    // rather than wrapping to 18 quintillion.
    const auto count = [&](ProgressField f) {
      return d[f] < 0 ? uint64_t{0} : static_cast<uint64_t>(d[f]);
    };
    p.total = count(kTotal);
    p.delivered = count(kDelivered);
    p.bounced = count(kBounced);
    p.expired = count(kExpired);
    p.cancelled = count(kCancelled);
    p.deferred = count(kDeferred);
    p.deferrals = count(kDeferrals);
    p.suppressed = count(kSuppressed);
    p.bounced_async = count(kBouncedAsync);
    p.complained = count(kComplained);
    p.unsubscribed = count(kUnsubscribed);
    return p;
  }

  absl::StatusOr<JobRecord> SetPaused(std::string_view id, bool paused) override {
    std::lock_guard<std::mutex> lock(record_mu_);
    ASSIGN_OR_RETURN(JobRecord job, FindLiveJob(id, paused ? "paused" : "resumed"));
    if (job.paused == paused) return job;
    job.paused = paused;
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), JobKey(id), EncodeJob(job));
    RETURN_IF_ERROR(Write(SyncedWrite(), &batch, paused ? "pause job" : "resume job"));
    return job;
  }

  absl::StatusOr<JobRecord> CancelJob(std::string_view id) override {
    std::lock_guard<std::mutex> lock(record_mu_);
    ASSIGN_OR_RETURN(JobRecord job, FindLiveJob(id, "cancelled"));
    if (job.state == JobState::kCancelled) return job;
    job.state = JobState::kCancelled;
    job.paused = false;
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), JobKey(id), EncodeJob(job));
    RETURN_IF_ERROR(Write(SyncedWrite(), &batch, "cancel job"));
    return job;
  }

  absl::Status ForgetJob(const JobRecord& job) override {
    std::lock_guard<std::mutex> lock(record_mu_);
    rocksdb::WriteBatch batch;
    (void)batch.DeleteRange(recipients(), JobPrefix(job.job_no), JobEnd(job.job_no));
    (void)batch.Delete(meta(), ProgressKey(job.job_no));
    (void)batch.Delete(meta(), JobKey(job.id));
    return Write(SyncedWrite(), &batch, "forget job");
  }

  // Write - every write of the queue: RocksDB's status as ours, and a refused
  // one counted (StoreStats::write_errors).
  absl::Status Write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                     std::string_view what) {
    const rocksdb::Status s = db_->Write(wo, batch);
    if (!s.ok()) write_errors_.fetch_add(1, std::memory_order_relaxed);
    return FromRocks(s, what);
  }

  // Intake's commit changes the record too (kLoading to kReady) while control
  // calls come from the admin thread: read-modify-writes of a record hold this.
  std::mutex& record_mu() { return record_mu_; }

  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() { return cfs_[0]; }
  rocksdb::ColumnFamilyHandle* recipients() { return cfs_[1]; }
  const QueueOptions& options() const { return options_; }

  // Write errors (queue.h, ERRORS; queue/README.md, "Write errors"). Resume()
  // returns OK at once when no background error holds writes, and Busy while
  // RocksDB's own recovery is under way: its SstFileManager polling for room
  // after a full disk, or its retries after a retryable error. Otherwise it
  // tries itself (it flushes the memtables to a new log) and returns what that
  // did: the error again while its cause lasts, or, for a fatal or an
  // unrecoverable error (severity above kHardError), that error at once: 7.8
  // resumes from neither.
  absl::Status Recover() override {
    const rocksdb::Status s = db_->Resume();
    if (s.ok()) return absl::OkStatus();
    if (s.IsBusy()) {
      return absl::ResourceExhaustedError(
          "queue: writes stopped by a write error; RocksDB is retrying by itself");
    }
    if (!s.IsCorruption() && s.severity() == rocksdb::Status::kFatalError) {
      return absl::UnavailableError(absl::StrCat(
          "queue: RocksDB cannot resume writes after a fatal error (", s.ToString(),
          "): only a restart of volleyd clears it"));
    }
    return FromRocks(s, "resume writes after a write error");
  }

  absl::Status PutDestinationRecord(DestinationRecord kind, std::string_view name,
                                    std::string_view value) override {
    rocksdb::WriteBatch batch;
    (void)batch.Put(meta(), DestinationRecordKey(kind, name),
                    rocksdb::Slice(value.data(), value.size()));
    return Write(SyncedWrite(), &batch, "write destination record");
  }

  absl::Status DeleteDestinationRecord(DestinationRecord kind, std::string_view name) override {
    rocksdb::WriteBatch batch;
    (void)batch.Delete(meta(), DestinationRecordKey(kind, name));
    return Write(SyncedWrite(), &batch, "delete destination record");
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListDestinationRecords(
      DestinationRecord kind) override {
    std::vector<std::pair<std::string, std::string>> records;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta()));
    const std::string prefix = DestinationRecordKey(kind, "");
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      records.emplace_back(std::string(it->key().ToStringView().substr(prefix.size())),
                           std::string(it->value().ToStringView()));
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "list destination records"));
    return records;
  }

  StoreStats Stats() override {
    StoreStats s;
    for (rocksdb::ColumnFamilyHandle* cf : cfs_) {
      uint64_t v = 0;
      if (db_->GetIntProperty(cf, "rocksdb.total-sst-files-size", &v)) s.sst_bytes += v;
      if (db_->GetIntProperty(cf, "rocksdb.estimate-pending-compaction-bytes", &v)) {
        s.pending_compaction_bytes += v;
      }
    }
    uint64_t stopped = 0;
    s.write_stopped = db_->GetIntProperty("rocksdb.is-write-stopped", &stopped) && stopped != 0;
    s.write_stalls = disk_errors_->stalls();
    s.write_errors = write_errors_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  // Bounded - an iterator over the recipients family that stops before `*end`.
  // Without the bound, a scan that runs out of live keys in its range goes on
  // into the next ones and steps over every tombstone there before it finds
  // a key to stop at: at the end of a job, the whole next job's delivered
  // recipients, tens of milliseconds on every refill (bench/RESULTS.md,
  // "Steady state"). `*end` (and what it points into) must outlive the iterator.
  std::unique_ptr<rocksdb::Iterator> Bounded(const rocksdb::Slice* end) {
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = end;
    return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(ro, recipients()));
  }

  static rocksdb::WriteOptions SyncedWrite() {
    // An operator's pause or cancel must hold after power loss: a cancelled
    // campaign that starts sending again is the worse failure.
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return wo;
  }

  // The job, when it exists and can still be paused, resumed or cancelled.
  absl::StatusOr<JobRecord> FindLiveJob(std::string_view id, std::string_view verb) {
    ASSIGN_OR_RETURN(std::optional<JobRecord> job, FindJob(id));
    if (!job.has_value()) {
      return absl::NotFoundError(absl::StrCat("no job \"", base::Sv(id), "\""));
    }
    if (job->state == JobState::kLoading) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job \"", base::Sv(id), "\" is still being taken in; it can be ", base::Sv(verb),
          " once it is accepted"));
    }
    if (job->state == JobState::kDone) {
      return absl::FailedPreconditionError(
          absl::StrCat("job \"", base::Sv(id), "\" is finished"));
    }
    if (job->state == JobState::kCancelled && verb != "cancelled") {
      return absl::FailedPreconditionError(
          absl::StrCat("job \"", base::Sv(id), "\" is cancelled"));
    }
    return *std::move(job);
  }

  // The file system RocksDB works through (RetryableFileSystem): declared
  // first, so that it outlives the database.
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  QueueOptions options_;
  std::shared_ptr<DiskErrorLog> disk_errors_;  // also counts write stalls
  std::atomic<uint64_t> write_errors_{0};
  // TakeRequeued: per partition, the earliest due time (µs) of a recipient an
  // applied batch moved there since the partition's owner last asked.
  static constexpr int64_t kNoneRequeued = INT64_MAX;
  std::array<std::atomic<int64_t>, kPartitions> requeued_micros_;
  std::mutex record_mu_;
};

absl::Status RocksIntakeWriter::Add(uint32_t line, uint16_t partition,
                                    std::string_view recipient) {
  const size_t at = values_.size();
  AppendRecipientValue(&values_, 0, recipient);
  staged_.push_back({partition, line, at, values_.size() - at});
  if (staged_.size() >= q_->options().intake_batch) return WriteBatch(/*sync=*/false);
  return absl::OkStatus();
}

void RocksIntakeWriter::MoveStagedIntoBatch() {
  // Within a partition the keys differ only by line (one due time for the whole
  // intake), so (partition, line) order is key order.
  std::sort(staged_.begin(), staged_.end(), [](const Staged& a, const Staged& b) {
    return a.partition != b.partition ? a.partition < b.partition : a.line < b.line;
  });
  for (const Staged& r : staged_) {
    key_.clear();
    AppendRecipientKey(&key_, job_.job_no, r.partition, job_.first_due, r.line);
    (void)batch_.Put(q_->recipients(), key_,
                     rocksdb::Slice(values_.data() + r.value_at, r.value_size));
  }
  staged_.clear();
  values_.clear();
}

absl::Status RocksIntakeWriter::WriteBatch(bool sync) {
  MoveStagedIntoBatch();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  RETURN_IF_ERROR(q_->Write(wo, &batch_, "intake"));
  batch_.Clear();
  return absl::OkStatus();
}

absl::Status RocksIntakeWriter::Commit(uint64_t recipients, uint64_t suppressed) {
  std::lock_guard<std::mutex> lock(q_->record_mu());
  job_.state = JobState::kReady;
  job_.recipients = recipients;
  // The state change rides in the same batch as the last recipients, so a job
  // is never kReady with recipients missing, and its total is counted once:
  // an intake resumed after a crash commits only if this never happened.
  (void)batch_.Put(q_->meta(), JobKey(job_.id), EncodeJob(job_));
  ProgressDelta total{};
  // Suppressed at intake: accepted lines, never queued, each with its
  // terminal record already (counted here, once, like the total).
  total[kTotal] = static_cast<int64_t>(recipients + suppressed);
  total[kSuppressed] = static_cast<int64_t>(suppressed);
  (void)batch_.Merge(q_->meta(), ProgressKey(job_.job_no), EncodeProgress(total));
  return WriteBatch(q_->options().sync_intake_commit);
}

}  // namespace

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kLoading: return "loading";
    case JobState::kReady: return "ready";
    case JobState::kDone: return "done";
    case JobState::kCancelled: return "cancelled";
  }
  return "unknown";
}

absl::Status Queue::TakeDueAndNext(uint32_t job_no, uint16_t partition,
                                   std::string_view after_key, absl::Time now, size_t max,
                                   std::vector<QueuedRecipient>* out, absl::Time* next_due) {
  const size_t before = out->size();
  RETURN_IF_ERROR(TakeDue(job_no, partition, after_key, now, max, out));
  if (next_due == nullptr) return absl::OkStatus();
  if (out->size() - before == max) {
    *next_due = absl::InfinitePast();
    return absl::OkStatus();
  }
  const std::string after = out->size() > before ? out->back().key : std::string(after_key);
  ASSIGN_OR_RETURN(std::optional<absl::Time> next, NextDue(job_no, partition, after));
  *next_due = next.value_or(absl::InfiniteFuture());
  return absl::OkStatus();
}

absl::Time Queue::TakeRequeued(uint16_t) { return absl::InfinitePast(); }

absl::Status Queue::PutDestinationRecord(DestinationRecord, std::string_view, std::string_view) {
  return absl::UnimplementedError("this queue keeps no destination records");
}
absl::Status Queue::DeleteDestinationRecord(DestinationRecord, std::string_view) {
  return absl::UnimplementedError("this queue keeps no destination records");
}
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Queue::ListDestinationRecords(
    DestinationRecord) {
  return absl::UnimplementedError("this queue keeps no destination records");
}

uint16_t PartitionOf(std::string_view name) {
  uint32_t h = 2166136261u;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return static_cast<uint16_t>(h % kPartitions);
}

std::string RecipientKey(uint32_t job_no, uint16_t partition, absl::Time due, uint32_t line) {
  std::string k;
  k.reserve(kRecipientKeySize);
  AppendRecipientKey(&k, job_no, partition, due, line);
  return k;
}


absl::StatusOr<std::unique_ptr<Queue>> Queue::Open(const std::string& path,
                                                    const QueueOptions& options) {
  if (options.max_open_files <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": queue max_open_files = ", options.max_open_files,
        ": must be at least 1 (RocksDB's -1, every table file open, cannot be budgeted)"));
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.db_write_buffer_size = options.write_buffer_bytes;
  db_options.max_total_wal_size = options.max_wal_bytes;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.merge_operator = std::make_shared<ProgressMergeOperator>();
  // Memtables small enough that two per family fit the write_buffer_bytes budget.
  cf_options.write_buffer_size = std::max<size_t>(options.write_buffer_bytes / 4, 1u << 20);
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Recipient keys arrive nearly in order within a job's partition: intake
  // writes a partition's keys in line order, and outcomes delete them about in
  // the order they were taken. RocksDB keeps the last insert position of each
  // job|partition prefix (6 bytes, about 250 bytes of memtable each) and
  // starts the next skip-list insert of that prefix from there instead of
  // from the top (bench/RESULTS.md, "take"). Only for writes that are not
  // merged with other threads' into one concurrent memtable insert; reads and
  // the stored format are untouched.
  rocksdb::ColumnFamilyOptions recipient_options = cf_options;
  recipient_options.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(kPartitionPrefixSize));
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {std::string(kRecipientsFamily), recipient_options},
  };
  // Disk errors: after ENOSPC the SstFileManager polls for free space and
  // resumes writes by itself (RocksDB makes a default one when none is given;
  // recovery depends on it, so it is made here, on purpose). Recover() asks
  // for the same sooner.
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(rocksdb::Env::Default()));
  // Every other write error is marked retryable (see Retryable): RocksDB then
  // resumes by itself once the cause is gone, trying every
  // kResumeRetryInterval (and as many times as it takes: the default count is
  // INT_MAX), and Recover() works for it too.
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(
      std::make_shared<RetryableFileSystem>(rocksdb::FileSystem::Default()));
  db_options.env = env.get();
  db_options.bgerror_resume_retry_interval =
      static_cast<uint64_t>(absl::ToInt64Microseconds(kResumeRetryInterval));
  // Bounded, so that volleyd's descriptors can be counted (QueueOptions).
  db_options.max_open_files = options.max_open_files;
  auto disk_errors = std::make_shared<DiskErrorLog>();
  db_options.listeners.push_back(disk_errors);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const auto s = rocksdb::DB::Open(db_options, path, families, &handles, &raw);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot open queue: ", s.ToString()));
  }
  auto queue = std::make_unique<RocksQueue>(std::move(env), std::unique_ptr<rocksdb::DB>(raw),
                                            std::move(handles), options, std::move(disk_errors));
  RETURN_IF_ERROR(queue->CheckFormat(path));
  return std::unique_ptr<Queue>(std::move(queue));
}

}  // namespace volley::queue
