// delivery_log.h - the delivery log: one JSON line per recipient outcome
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(auto log, DeliveryLog::Open("var/log"));
//   log->Append(record);     // buffers in memory
//   RETURN_IF_ERROR(log->Flush());   // one write(2) of everything buffered
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
//   response, host, port, attempt; mx when routed by DNS; tls_version and
//   tls_cipher after STARTTLS.
//
//   position() names the end of what was written ("dev:inode:offset"). The
//   shard stores it in the queue with the outcomes it just logged; after a crash
//   between the two writes, LinesAfter(the stored position) gives back exactly
//   the records the queue never saw, and the shard applies them instead of
//   sending those recipients again (engine.cc, ReplayUnappliedOutcomes).
//
//   Open appends a newline when the file does not end in one (a record torn by
//   power loss), so that the next record starts a line of its own.
//
// CONTRACT
//   Not thread-safe: owned by one shard.
#ifndef VOLLEY_METRICS_DELIVERY_LOG_H_
#define VOLLEY_METRICS_DELIVERY_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::metrics {

struct DeliveryRecord {
  absl::Time ts;
  std::string_view job;
  uint32_t line = 0;        // the recipient's line in the job file
  std::string_view rcpt;
  std::string_view status;  // delivered, deferred, bounced, expired, cancelled, suppressed
  int code = 0;             // SMTP reply code; 0 when no reply was received
  std::string_view enhanced;
  std::string_view response;
  std::string_view host;    // remote address; empty when no connection was made
  uint16_t port = 0;
  std::string_view mx;      // the MX host name when routed by DNS; else empty (omitted)
  uint32_t attempt = 0;     // 1 for the first attempt
  // The session's TLS protocol and cipher ("TLSv1.3", "TLS_AES_256_GCM_SHA384");
  // empty (and left out of the record) when the session was in plaintext.
  std::string_view tls_version;
  std::string_view tls_cipher;
};

// FormatDeliveryRecord - append one JSON line (with its '\n') to out.
void FormatDeliveryRecord(const DeliveryRecord& r, std::string* out);

class DeliveryLog {
 public:
  static absl::StatusOr<std::unique_ptr<DeliveryLog>> Open(const std::string& dir);
  ~DeliveryLog();
  DeliveryLog(const DeliveryLog&) = delete;
  DeliveryLog& operator=(const DeliveryLog&) = delete;

  void Append(const DeliveryRecord& r) { FormatDeliveryRecord(r, &buffer_); }
  absl::Status Flush();
  const std::string& path() const { return path_; }

  // The end of what Flush wrote, as "dev:inode:offset".
  std::string position() const;

  // LinesAfter - the whole lines written after `position` (without their '\n'),
  // at most kMaxReplayBytes of them. NotFound when `position` is not in this file
  // (the log was rotated or removed since) or lies past its end.
  absl::StatusOr<std::vector<std::string>> LinesAfter(std::string_view position) const;

  // Bytes LinesAfter reads at most: far more than one loop turn's records.
  static constexpr uint64_t kMaxReplayBytes = 64u << 20;

 private:
  DeliveryLog(int fd, std::string path, uint64_t dev, uint64_t ino, uint64_t size)
      : fd_(fd), path_(std::move(path)), dev_(dev), ino_(ino), size_(size) {}
  int fd_;
  std::string path_;
  uint64_t dev_;
  uint64_t ino_;
  uint64_t size_;  // bytes in the file: what was there at Open plus what Flush wrote
  std::string buffer_;
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_DELIVERY_LOG_H_
