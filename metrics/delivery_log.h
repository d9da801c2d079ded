// delivery_log.h - the delivery log: one JSON line per recipient outcome
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(auto log, DeliveryLog::Open("var/log", options));
//   log->Append(record);     // buffers in memory
//   RETURN_IF_ERROR(log->Flush());   // one write(2) of everything buffered
//
//   ASSIGN_OR_RETURN(OwnedDeliveryRecord r, ParseDeliveryRecord(line));  // a reader
//
// DESCRIPTION
//   Writes <dir>/deliveries.jsonl, opened O_APPEND, so an outside reader (or
//   volley-load) may tail it while volleyd runs. A record is only ever written
//   whole: the buffer is handed to the kernel in one write per flush, and the
//   caller flushes before it commits the same outcomes to the queue, so after a
//   kill -9 an outcome that the queue forgot is still in the log (and the
//   recipient is retried: a possible duplicate record, never a missing one).
//
//   Fields (docs/delivery-log.md): ts, job, line, rcpt, status, code, enhanced,
//   response, host, port, attempt; node (the volleyd that wrote it: volleyd
//   always sets it, so that the logs of a cluster's nodes can be merged); txn when a transaction was under way;
//   class for bounced, deferred and expired
//   records (metrics/classify.h); backoff when the destination was backed off;
//   mx when routed by DNS; source when bound to an egress source; tls_version
//   and tls_cipher after STARTTLS; via, matched_by, feedback_type,
//   reporting_mta and remote_mta on feedback events. status is a DeliveryStatus
//   (metrics/delivery_status.h), written by its name.
//
//   FormatDeliveryRecord writes a record and ParseDeliveryRecord reads one
//   back: the one writer and the one reader of the format, which every program
//   that reads the log uses (crash replay, volley-load), so that they cannot
//   disagree on it. A string round-trips exactly when it is valid UTF-8 (the
//   writer escapes an invalid byte as \u00XX, which reads back as U+00XX).
//
//   position() names the end of what was written ("dev:inode:offset"). The
//   shard stores it in the queue with the outcomes it just logged; after a crash
//   between the two writes, LinesAfter(the stored position) gives back exactly
//   the records the queue never saw, and the shard applies them instead of
//   sending those recipients again (engine/recovery.h, ReplayUnappliedOutcomes).
//
//   Open appends a newline when the file does not end in one (a record torn by
//   power loss), so that the next record starts a line of its own.
//
//   Rotation (docs/delivery-log.md): Flush renames deliveries.jsonl to
//   deliveries-YYYYMMDDTHHMMSSZ.jsonl (the UTC time of the rotation; "-N" added
//   when that name is taken or would sort before an older file) and starts a
//   new deliveries.jsonl, when the file has reached max_size (after the write)
//   or its first record is max_age old (before the write, so a file spans at
//   most max_age). Only at a record boundary: never after a partial write. Then
//   the oldest rotated files past `keep` are deleted. A rename keeps the inode,
//   so a position stays valid: LinesAfter finds its file among the rotated ones
//   and reads on through every newer file. A rotation that fails (say the
//   directory is read-only) is reported on stderr once and tried again a minute
//   later; records go on into the current file meanwhile.
//
//   A failed write (ENOSPC, EIO, EFBIG, ...) loses nothing and duplicates
//   nothing: write(2) may have taken the first part of the buffer before it
//   failed (a short write, then the error), so Flush drops from the buffer
//   exactly the bytes the kernel took, counts them in position(), and keeps the
//   rest, which the next Flush writes first. Retrying Flush is therefore the
//   way to retry a write; appending the same records again would log them
//   twice. The file may end part-way through a record meanwhile; rotation waits
//   until it is whole again, and position() is only stored by the caller after
//   a Flush that succeeded, which always ends at a record boundary.
//
// CONTRACT
//   DeliveryLog is not thread-safe: owned by one thread (the committer's);
//   write_errors() may be read from any. FormatDeliveryRecord and
//   ParseDeliveryRecord may be called from any thread (the parser keeps a
//   buffer per thread).
#ifndef VOLLEY_METRICS_DELIVERY_LOG_H_
#define VOLLEY_METRICS_DELIVERY_LOG_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/delivery_status.h"

namespace volley::metrics {

// DeliveryRecordOf - one record's fields, over a string type: DeliveryRecord
// (views, what the shard formats from data it holds anyway) and
// OwnedDeliveryRecord (strings, what ParseDeliveryRecord gives back). One list
// of fields for both, so the writer and the reader cannot drift apart.
template <typename String>
struct DeliveryRecordOf {
  absl::Time ts;
  String job;
  uint32_t line = 0;        // the recipient's line in the job file
  String rcpt;
  DeliveryStatus status = DeliveryStatus::kDelivered;
  // Why it failed (metrics/classify.h): "invalid_recipient", ...; empty (and left
  // out of the record) for records that are not failures.
  String klass;
  int code = 0;             // SMTP reply code; 0 when no reply was received
  String enhanced;
  String response;
  String host;              // remote address; empty when no connection was made
  uint16_t port = 0;
  String mx;                // the MX host name when routed by DNS; else empty (omitted)
  String source;            // the egress source's name ([[source]]); else empty (omitted)
  int backoff = 0;          // the destination's backoff level; 0 omitted
  uint32_t attempt = 0;     // 1 for the first attempt
  // The node that recorded it (engine/host_name.h NodeName). volleyd sets it in
  // every record; empty (left out) only from a writer outside volleyd, or read
  // from a log written before the field.
  String node;
  // The SMTP transaction the outcome came from ("mq3k1x2a.0.4127"): the same in
  // the record of every recipient sent in it, and no other transaction's in the
  // log, so that distinct values count messages (a message shared by 100
  // recipients of a domain is one). Empty (left out) when no transaction was
  // under way: a DNS verdict, a failed connection, expired untried, cancelled.
  String txn;
  // The session's TLS protocol and cipher ("TLSv1.3", "TLS_AES_256_GCM_SHA384");
  // empty (and left out of the record) when the session was in plaintext.
  String tls_version;
  String tls_cipher;
  // Feedback events only (IsFeedbackEvent; docs/feedback.md), each left out when
  // empty. via: what brought it ("dsn", "arf", "bounce_text", "one_click");
  // matched_by: what tied it to the job and line ("verp", "trace",
  // "message_id"); feedback_type: an ARF report's Feedback-Type ("abuse");
  // reporting_mta and remote_mta: a DSN's Reporting-MTA and Remote-MTA.
  String via;
  String matched_by;
  String feedback_type;
  String reporting_mta;
  String remote_mta;
  // `expired` records only, each left out when empty: the reply of the
  // recipient's last attempt ("451 4.7.1 Greylisted, please try again later")
  // and its class, so that an expiry says why it never got through.
  String last_reply;
  String last_class;

  bool operator==(const DeliveryRecordOf&) const = default;
};
using DeliveryRecord = DeliveryRecordOf<std::string_view>;
using OwnedDeliveryRecord = DeliveryRecordOf<std::string>;

// FormatDeliveryRecord - append one JSON line (with its '\n') to out.
void FormatDeliveryRecord(const DeliveryRecord& r, std::string* out);

// ViewOf - the DeliveryRecord of `r`, valid while `r` lives and is not changed.
DeliveryRecord ViewOf(const OwnedDeliveryRecord& r);

// ParseDeliveryRecord - one line of the log (with or without its '\n'), the
// inverse of FormatDeliveryRecord: Format then Parse gives the same record
// (ts to the millisecond, which is what the log keeps). Keys may come in any
// order; keys it does not know are skipped, so that a reader keeps working on
// a log with a field added later. InvalidArgument naming the field and what
// is wrong ("delivery record: \"line\": not an unsigned integer", "... no
// \"status\"", "... \"status\": unknown delivery status \"lost\" ..."),
// or saying that the line is not one JSON object (a record torn by a crash,
// or two glued together). The optional fields (node, class, backoff, mx, source, txn,
// tls_version, tls_cipher, last_reply, last_class and the feedback fields) are empty or 0 when absent; all others must be
// there.
absl::StatusOr<OwnedDeliveryRecord> ParseDeliveryRecord(std::string_view line);

struct DeliveryLogOptions {
  // Rotate once the file holds this many bytes; 0: never by size.
  uint64_t max_size = uint64_t{1} << 30;
  // Rotate before writing into a file whose first record is this old; zero or
  // less: never by time.
  absl::Duration max_age = absl::Hours(24);
  // Rotated files kept; the oldest past this are deleted. At least 1: the newest
  // rotated file may hold the position a crash replay starts from.
  int keep = 14;
  // The time rotation goes by; empty: absl::Now. Tests set it.
  std::function<absl::Time()> clock;
};

class DeliveryLog {
 public:
  static absl::StatusOr<std::unique_ptr<DeliveryLog>> Open(const std::string& dir,
                                                           DeliveryLogOptions options = {});
  ~DeliveryLog();
  DeliveryLog(const DeliveryLog&) = delete;
  DeliveryLog& operator=(const DeliveryLog&) = delete;

  void Append(const DeliveryRecord& r) { FormatDeliveryRecord(r, &buffer_); }
  // AppendFormatted - whole records already formatted (FormatDeliveryRecord), as
  // the shard hands them to the thread that writes them (engine/committer.h).
  void AppendFormatted(std::string_view records) { buffer_.append(records); }
  // Flush - write what Append buffered (one write(2)), rotating first or after
  // when it is due. An error is the write's (ResourceExhausted for a full disk,
  // Unavailable otherwise); what was not written stays buffered and goes out
  // with the next Flush.
  absl::Status Flush();
  const std::string& path() const { return path_; }
  // buffered - bytes appended and not yet written (all of them once Flush
  // succeeds).
  size_t buffered() const { return buffer_.size(); }
  // write_errors - Flushes that failed, since Open. Any thread (the metrics).
  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }

  // The end of what Flush wrote, as "dev:inode:offset".
  std::string position() const;

  // LinesAfter - the whole lines written after `position` (without their '\n'):
  // the rest of the file it names, found by dev:inode among deliveries.jsonl and
  // the rotated files, then every line of each newer file in order, at most
  // kMaxReplayBytes in all. NotFound when no file there is the one `position`
  // names (removed, or a log from elsewhere) or it lies past that file's end.
  absl::StatusOr<std::vector<std::string>> LinesAfter(std::string_view position) const;

  // Bytes LinesAfter reads at most: far more than one loop turn's records.
  static constexpr uint64_t kMaxReplayBytes = 64u << 20;
  // After a failed rotation, the next try waits this long: not a failing
  // rename per loop turn.
  static constexpr absl::Duration kRotateRetryInterval = absl::Minutes(1);

 private:
  DeliveryLog(std::string dir, DeliveryLogOptions options);
  absl::Time Now() const { return options_.clock ? options_.clock() : absl::Now(); }
  bool RotationDue(absl::Time now) const;
  void Rotate(absl::Time now);
  absl::Status RenameAndReopen(absl::Time now, std::string* rotated);
  void DeleteOldRotated() const;

  std::string dir_;
  std::string path_;
  DeliveryLogOptions options_;
  int fd_ = -1;
  uint64_t dev_ = 0;
  uint64_t ino_ = 0;
  uint64_t size_ = 0;  // bytes in the file: what was there at Open plus what Flush wrote
  // When the current file's first record was written; InfiniteFuture while empty.
  absl::Time started_ = absl::InfiniteFuture();
  // The file ends at the end of a record: false after a write that stopped part
  // way, until the rest is written. Rotation waits for it.
  bool at_boundary_ = true;
  // After a failed rotation: no new try before this, and no new complaint until
  // one succeeds.
  absl::Time retry_rotation_at_ = absl::InfinitePast();
  bool rotation_failing_ = false;
  std::string buffer_;
  std::atomic<uint64_t> write_errors_{0};
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_DELIVERY_LOG_H_
