// NAME
//   feedback_spool.h - messages the inbound listener took in (bounces, feedback
//   reports), each a file under <spool>/feedback/, and the reader for them
//
// SYNOPSIS
//   #include "engine/feedback_spool.h"
//
//   ASSIGN_OR_RETURN(FeedbackSpool spool, FeedbackSpool::Open(spool_dir, 10000));
//   if (spool.OverPending()) ...;                      // 452 4.3.1
//   absl::StatusOr<std::string> name = spool.Write(envelope, content, absl::Now());
//
//   ASSIGN_OR_RETURN(std::vector<std::string> waiting, ListFeedback(spool_dir));
//   for (const std::string& path : waiting) {          // oldest first
//     absl::StatusOr<FeedbackMessage> m = ReadFeedback(path, max_message_size);
//     ... m->envelope.rcpt_to, m->content ...; unlink(path)
//   }
//
// DESCRIPTION
//   Write() stores one message durably before the SMTP server answers 250: it
//   writes <spool>/feedback/tmp/<name>, fsyncs it, renames it to
//   <spool>/feedback/new/<name> and fsyncs new/, so that a file in new/ is
//   always whole and a crash leaves at most a stray file in tmp/ (Open()
//   removes those). A file is one JSON line, the envelope
//     {"received_at":<ms since the epoch>,"peer":"ip:port","helo":"...",
//      "mail_from":"...","rcpt_to":["..."],"tls":true|false}
//   then "\n", then the message's octets exactly as received (CRLF line ends,
//   dot-unstuffed). Names are "<received_at, 13 digits>-<sequence, 10
//   digits>-<pid>", so that their order is their arrival order within a
//   process's life and across restarts to the millisecond. Octets of the
//   envelope's strings that are not UTF-8 are written as \u00XX (base/json.h):
//   the envelope is for reading, the content keeps every octet.
//
//   ListFeedback() lists new/ oldest first (by name); ReadFeedback() reads one
//   file back. Whoever processes the files (parses DSNs and ARF reports)
//   deletes each when done; until then it counts against max_pending.
//
// CONTRACT
//   Write() may be called from several threads at once (the inbound listener's
//   shards): the sequence number is atomic, every file has its own name.
//   ListFeedback() and ReadFeedback() are plain functions, safe anywhere.
//
// DIAGNOSTICS
//   Open(): the error naming the directory that could not be made. Write():
//   the error of the step that failed (open, write, fsync, rename), naming the
//   file, with nothing left behind in new/ (the listener answers 451 4.3.0).
//   OverPending() true: more than max_pending files wait in new/ (the listener
//   answers 452 4.3.1 without writing). ReadFeedback(): InvalidArgument
//   naming the file for a file without an envelope line, a line that is not
//   the JSON object above, or content over max_message_size; the errno's error
//   when it can't be read. ListFeedback(): the error of opendir/readdir.
//
// BOUNDS
//   OverPending() reads at most max_pending + 1 names of new/.
//   ReadFeedback() reads at most max_message_size octets of content and
//   kMaxEnvelopeLine of envelope.
#ifndef VOLLEY_ENGINE_FEEDBACK_SPOOL_H_
#define VOLLEY_ENGINE_FEEDBACK_SPOOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/smtpd/session.h"

namespace volley::engine {

// The longest envelope line ReadFeedback() accepts: recipients (at most
// [inbound] max_recipients of at most a command line each) and the rest.
inline constexpr size_t kMaxEnvelopeLine = 1 << 20;

// A stored message's envelope, as written.
struct FeedbackEnvelope {
  int64_t received_at_ms = 0;        // when the end of data was answered
  std::string peer;                  // "ip:port" of the client
  std::string helo;
  std::string mail_from;             // "" for the null sender (bounces)
  std::vector<std::string> rcpt_to;
  bool tls = false;
};

struct FeedbackMessage {
  FeedbackEnvelope envelope;
  std::string content;  // the raw message, CRLF line ends
};

class FeedbackSpool {
 public:
  // Open - <spool_dir>/feedback/{tmp,new}, made when missing; stray files in
  // tmp/ (a crash between write and rename) are removed.
  static absl::StatusOr<FeedbackSpool> Open(const std::string& spool_dir, size_t max_pending);

  // Write - store one message (see DESCRIPTION); the name of its file in new/.
  absl::StatusOr<std::string> Write(const smtpd::Envelope& envelope, std::string_view content,
                                    absl::Time received_at) const;

  // OverPending - whether more than max_pending files wait in new/ (a
  // directory that can't be read counts as not over: Write() will say).
  bool OverPending() const;

  const std::string& new_dir() const { return new_dir_; }

 private:
  FeedbackSpool() = default;

  std::string tmp_dir_;
  std::string new_dir_;
  size_t max_pending_ = 0;
  // Shared by copies of this spool (one per listener shard's handler).
  std::shared_ptr<std::atomic<uint64_t>> sequence_;
};

// PeerAddress - the client's address of an envelope's peer ("192.0.2.7:4711"
// -> "192.0.2.7", "[2001:db8::1]:25" -> "2001:db8::1"); the peer as it is when
// it is not HOST:PORT. What a rate is kept per, and a record's host.
std::string PeerAddress(std::string_view peer);

// EnvelopeJson - the envelope line of a stored message, without its "\n".
std::string EnvelopeJson(const smtpd::Envelope& envelope, absl::Time received_at);

// ListFeedback - the files waiting in <spool_dir>/feedback/new/, full paths,
// oldest first. A missing directory is an empty list.
absl::StatusOr<std::vector<std::string>> ListFeedback(const std::string& spool_dir);

// ReadFeedback - one stored message back (see DIAGNOSTICS).
absl::StatusOr<FeedbackMessage> ReadFeedback(const std::string& path, uint64_t max_message_size);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_FEEDBACK_SPOOL_H_
