#include "queue/queue.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/cache.h"
#include "rocksdb/write_batch.h"

namespace volley::queue {
namespace {

constexpr char kJobPrefix = 'J';
constexpr std::string_view kNextJobNoKey = "N";
constexpr std::string_view kRecipientsFamily = "recipients";
constexpr size_t kRecipientKeySize = 4 + 8 + 4;

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

std::string JobPrefix(uint32_t job_no) {
  std::string s;
  PutBigEndian(&s, job_no, 4);
  return s;
}

std::string JobKey(std::string_view id) { return absl::StrCat(std::string(1, kJobPrefix), base::Sv(id)); }

// Job record value: version(1) state(1) job_no(4) queued_at_us(8) first_due_us(8)
// recipients(8) source_len(2) source header_json(rest).
constexpr uint8_t kJobRecordVersion = 1;
constexpr size_t kJobRecordFixed = 1 + 1 + 4 + 8 + 8 + 8 + 2;

std::string EncodeJob(const JobRecord& j) {
  std::string v;
  v.push_back(static_cast<char>(kJobRecordVersion));
  v.push_back(static_cast<char>(j.state));
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
  if (v.size() < kJobRecordFixed || static_cast<uint8_t>(v[0]) != kJobRecordVersion) {
    return absl::DataLossError(absl::StrCat("queue: job \"", base::Sv(id), "\": corrupt record"));
  }
  JobRecord j;
  j.id = std::string(id);
  const auto state = static_cast<uint8_t>(v[1]);
  if (state < 1 || state > 3) {
    return absl::DataLossError(absl::StrCat("queue: job \"", base::Sv(id), "\": bad state ", state));
  }
  j.state = static_cast<JobState>(state);
  j.job_no = static_cast<uint32_t>(GetBigEndian(v.substr(2), 4));
  j.queued_at = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(v.substr(6), 8)));
  j.first_due = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(v.substr(14), 8)));
  j.recipients = GetBigEndian(v.substr(22), 8);
  const size_t source_len = GetBigEndian(v.substr(30), 2);
  if (v.size() < kJobRecordFixed + source_len) {
    return absl::DataLossError(absl::StrCat("queue: job \"", base::Sv(id), "\": corrupt record"));
  }
  j.source = std::string(v.substr(kJobRecordFixed, source_len));
  j.header_json = std::string(v.substr(kJobRecordFixed + source_len));
  return j;
}

// Recipient value: attempts(4, BE) then the encoded recipient.
std::string EncodeRecipientValue(uint32_t attempts, std::string_view recipient) {
  std::string v;
  v.reserve(4 + recipient.size());
  PutBigEndian(&v, attempts, 4);
  v.append(recipient);
  return v;
}

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("queue: ", base::Sv(what), ": ", s.ToString());
  if (s.IsNoSpace() || s.IsIncomplete() || s.IsBusy() || s.IsTryAgain()) {
    return absl::ResourceExhaustedError(msg);
  }
  if (s.IsCorruption()) return absl::DataLossError(msg);
  return absl::UnavailableError(msg);
}

class RocksQueue;

class RocksIntakeWriter : public Queue::IntakeWriter {
 public:
  RocksIntakeWriter(RocksQueue* q, JobRecord job) : q_(q), job_(std::move(job)) {}
  absl::Status Add(uint32_t line, std::string_view recipient) override;
  absl::Status Commit(uint64_t recipients) override;

 private:
  absl::Status WriteBatch(bool sync);
  RocksQueue* q_;
  JobRecord job_;
  rocksdb::WriteBatch batch_;
  size_t in_batch_ = 0;
};

class RocksOutcomeBatch : public Queue::OutcomeBatch {
 public:
  explicit RocksOutcomeBatch(rocksdb::ColumnFamilyHandle* cf) : cf_(cf) {}
  void Remove(const QueuedRecipient& r) override {
    (void)batch_.Delete(cf_, r.key);
    ++size_;
  }
  void Reschedule(const QueuedRecipient& r, absl::Time due) override {
    (void)batch_.Delete(cf_, r.key);
    (void)batch_.Put(cf_, RecipientKey(r.job_no, due, r.line),
                     EncodeRecipientValue(r.attempts + 1, r.recipient));
    ++size_;
  }
  size_t size() const override { return size_; }
  rocksdb::WriteBatch& batch() { return batch_; }

 private:
  rocksdb::ColumnFamilyHandle* cf_;
  rocksdb::WriteBatch batch_;
  size_t size_ = 0;
};

class RocksQueue : public Queue {
 public:
  RocksQueue(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> cfs,
             QueueOptions options)
      : db_(std::move(db)), cfs_(std::move(cfs)), options_(options) {}

  ~RocksQueue() override {
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
    RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "begin job"));
    return job;
  }

  std::unique_ptr<IntakeWriter> NewIntakeWriter(const JobRecord& job) override {
    return std::make_unique<RocksIntakeWriter>(this, job);
  }

  absl::Status TakeDue(uint32_t job_no, std::string_view after_key, absl::Time now, size_t max,
                       std::vector<QueuedRecipient>* out) override {
    const std::string prefix = JobPrefix(job_no);
    const std::string limit = RecipientKey(job_no, now, UINT32_MAX);
    rocksdb::ReadOptions ro;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, recipients()));
    if (after_key.empty()) {
      it->Seek(prefix);
    } else {
      it->Seek(rocksdb::Slice(after_key.data(), after_key.size()));
      if (it->Valid() && it->key() == rocksdb::Slice(after_key.data(), after_key.size())) it->Next();
    }
    size_t taken = 0;
    for (; it->Valid() && taken < max; it->Next()) {
      const auto key = it->key().ToStringView();
      if (!it->key().starts_with(prefix) || key.compare(limit) > 0) break;
      const auto value = it->value().ToStringView();
      if (key.size() != kRecipientKeySize || value.size() < 4) {
        return absl::DataLossError(absl::StrCat("queue: job ", job_no, ": corrupt recipient"));
      }
      QueuedRecipient r;
      r.key = std::string(key);
      r.job_no = job_no;
      r.due = absl::FromUnixMicros(static_cast<int64_t>(GetBigEndian(key.substr(4), 8)));
      r.line = static_cast<uint32_t>(GetBigEndian(key.substr(12), 4));
      r.attempts = static_cast<uint32_t>(GetBigEndian(value, 4));
      r.recipient = std::string(value.substr(4));
      out->push_back(std::move(r));
      ++taken;
    }
    return FromRocks(it->status(), "scan");
  }

  absl::StatusOr<std::optional<absl::Time>> NextDue(uint32_t job_no) override {
    const std::string prefix = JobPrefix(job_no);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), recipients()));
    it->Seek(prefix);
    if (!it->Valid() || !it->key().starts_with(prefix)) {
      RETURN_IF_ERROR(FromRocks(it->status(), "scan"));
      return std::optional<absl::Time>();
    }
    return std::optional<absl::Time>(absl::FromUnixMicros(
        static_cast<int64_t>(GetBigEndian(it->key().ToStringView().substr(4), 8))));
  }

  std::unique_ptr<OutcomeBatch> NewOutcomeBatch() override {
    return std::make_unique<RocksOutcomeBatch>(recipients());
  }

  absl::Status Apply(OutcomeBatch& batch) override {
    auto& rb = static_cast<RocksOutcomeBatch&>(batch);
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync_outcomes;
    return FromRocks(db_->Write(wo, &rb.batch()), "record outcomes");
  }

  absl::Status MarkJobDone(const JobRecord& job) override {
    JobRecord done = job;
    done.state = JobState::kDone;
    return FromRocks(db_->Put(rocksdb::WriteOptions(), meta(), JobKey(job.id), EncodeJob(done)),
                     "mark job done");
  }

  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() { return cfs_[0]; }
  rocksdb::ColumnFamilyHandle* recipients() { return cfs_[1]; }
  const QueueOptions& options() const { return options_; }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  QueueOptions options_;
};

absl::Status RocksIntakeWriter::Add(uint32_t line, std::string_view recipient) {
  (void)batch_.Put(q_->recipients(), RecipientKey(job_.job_no, job_.first_due, line),
                   EncodeRecipientValue(0, recipient));
  if (++in_batch_ >= q_->options().intake_batch) return WriteBatch(/*sync=*/false);
  return absl::OkStatus();
}

absl::Status RocksIntakeWriter::WriteBatch(bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  RETURN_IF_ERROR(FromRocks(q_->db()->Write(wo, &batch_), "intake"));
  batch_.Clear();
  in_batch_ = 0;
  return absl::OkStatus();
}

absl::Status RocksIntakeWriter::Commit(uint64_t recipients) {
  job_.state = JobState::kReady;
  job_.recipients = recipients;
  // The state change rides in the same batch as the last recipients, so a job
  // is never kReady with recipients missing.
  (void)batch_.Put(q_->meta(), JobKey(job_.id), EncodeJob(job_));
  return WriteBatch(q_->options().sync_intake_commit);
}

}  // namespace

std::string RecipientKey(uint32_t job_no, absl::Time due, uint32_t line) {
  std::string k;
  k.reserve(kRecipientKeySize);
  PutBigEndian(&k, job_no, 4);
  PutBigEndian(&k, ToMicros(due), 8);
  PutBigEndian(&k, line, 4);
  return k;
}

absl::StatusOr<std::unique_ptr<Queue>> Queue::Open(const std::string& path,
                                                    const QueueOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.db_write_buffer_size = options.write_buffer_bytes;
  db_options.max_total_wal_size = options.max_wal_bytes;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  rocksdb::ColumnFamilyOptions cf_options;
  // Memtables small enough that two per family fit the write_buffer_bytes budget.
  cf_options.write_buffer_size = std::max<size_t>(options.write_buffer_bytes / 4, 1u << 20);
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {std::string(kRecipientsFamily), cf_options},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const auto s = rocksdb::DB::Open(db_options, path, families, &handles, &raw);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot open queue: ", s.ToString()));
  }
  return std::unique_ptr<Queue>(
      new RocksQueue(std::unique_ptr<rocksdb::DB>(raw), std::move(handles), options));
}

}  // namespace volley::queue
