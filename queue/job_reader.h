// job_reader.h - read a job file line by line through a fixed buffer
//
// SYNOPSIS
//   #include "queue/job_reader.h"
//
//   LineReader reader(fd);
//   std::string line;
//   while (reader.Next(limits.max_recipient_line, &line) == LineReader::Result::kLine) ...
//
// DESCRIPTION
//   Intake (queue/spool.cc) and the offline check (queue/job_check.h, volleyctl
//   check) read job files with this one reader, so that they count lines the same
//   way: physical lines from 1, split at LF, a CR before the LF dropped, a last
//   line without LF still a line.
//
// CONTRACT
//   Reads `fd` from where it is; never closes it. One thread.
//
// DIAGNOSTICS
//   kError with error() the errno of the failed read(2).
//
// BOUNDS
//   A line longer than the caller's bound is reported as kTooLong and skipped,
//   never stored; the buffer is kChunk octets.
#ifndef VOLLEY_QUEUE_JOB_READER_H_
#define VOLLEY_QUEUE_JOB_READER_H_

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace volley::queue {

// LineReader - reads a file line by line through a fixed buffer. A line longer
// than the caller's bound is reported as too long and skipped, never stored.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd), buffer_(kChunk) {}

  enum class Result { kLine, kTooLong, kEnd, kError };

  // Next line (without its LF, and without a CR before the LF) in *line, valid
  // until the next call.
  Result Next(size_t max_line, std::string* line) {
    line->clear();
    bool too_long = false;
    for (;;) {
      const char* begin = buffer_.data() + start_;
      const char* nl = static_cast<const char*>(std::memchr(begin, '\n', end_ - start_));
      const size_t avail = nl ? static_cast<size_t>(nl - begin) : end_ - start_;
      if (!too_long) {
        if (line->size() + avail > max_line) {
          too_long = true;
          line->clear();
        } else {
          line->append(begin, avail);
        }
      }
      if (nl) {
        start_ += avail + 1;
        ++line_no_;
        if (too_long) return Result::kTooLong;
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return Result::kLine;
      }
      start_ = end_ = 0;
      const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return Result::kError;
      }
      if (n == 0) {
        if (eof_ || (line->empty() && !too_long)) return Result::kEnd;
        eof_ = true;  // a last line without LF still counts
        ++line_no_;
        if (too_long) return Result::kTooLong;
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return Result::kLine;
      }
      end_ = static_cast<size_t>(n);
      bytes_read_ += static_cast<uint64_t>(n);
    }
  }

  uint64_t line_no() const { return line_no_; }
  // Bytes read from the file so far (more than it held when stat'd: it grew).
  uint64_t bytes_read() const { return bytes_read_; }
  int error() const { return error_; }

 private:
  static constexpr size_t kChunk = 1 << 20;
  int fd_;
  std::vector<char> buffer_;
  size_t start_ = 0;
  size_t end_ = 0;
  uint64_t line_no_ = 0;
  uint64_t bytes_read_ = 0;
  bool eof_ = false;
  int error_ = 0;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_JOB_READER_H_
