// delivery_log.cc - the delivery log's records, writes, rotation and replay
#include "metrics/delivery_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <iterator>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/log.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/time_text.h"
#include "simdjson.h"

namespace volley::metrics {
namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view kCurrentName = "deliveries.jsonl";
constexpr std::string_view kRotatedPrefix = "deliveries-";
constexpr std::string_view kExtension = ".jsonl";
constexpr std::string_view kStampFormat = "%Y%m%dT%H%M%SZ";  // 20261128T134501Z
constexpr size_t kStampLength = 16;
// The first record's "ts" is within this many bytes of the start of a file.
constexpr size_t kFirstRecordPeek = 64;
// How "ts" is read back: RFC 3339 in UTC, with any number of fractional digits
// (FormatDeliveryRecord writes three).
constexpr char kTsParseFormat[] = "%Y-%m-%dT%H:%M:%E*SZ";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A rotated file: deliveries-<stamp>.jsonl, or deliveries-<stamp>-<n>.jsonl
// when more than one was rotated in that second. (stamp, n) orders them oldest
// first; a plain sort of the names would not (".jsonl" sorts after "-1.jsonl").
struct RotatedFile {
  std::string name;
  std::string stamp;
  uint64_t n = 0;
  bool operator<(const RotatedFile& o) const {
    return stamp != o.stamp ? stamp < o.stamp : n < o.n;
  }
};

std::string RotatedName(std::string_view stamp, uint64_t n) {
  return n == 0 ? absl::StrCat(base::Sv(kRotatedPrefix), base::Sv(stamp), base::Sv(kExtension))
                : absl::StrCat(base::Sv(kRotatedPrefix), base::Sv(stamp), "-", n,
                               base::Sv(kExtension));
}

std::optional<RotatedFile> ParseRotatedName(std::string_view name) {
  if (!name.starts_with(kRotatedPrefix) || !name.ends_with(kExtension)) return std::nullopt;
  std::string_view rest = name.substr(kRotatedPrefix.size());
  rest.remove_suffix(kExtension.size());
  if (rest.size() < kStampLength) return std::nullopt;
  const std::string_view stamp = rest.substr(0, kStampLength);
  for (size_t i = 0; i < kStampLength; ++i) {
    const char want = i == 8 ? 'T' : i == 15 ? 'Z' : '0';
    if (want == '0' ? !IsDigit(stamp[i]) : stamp[i] != want) return std::nullopt;
  }
  RotatedFile f{std::string(name), std::string(stamp), 0};
  rest.remove_prefix(kStampLength);
  if (rest.empty()) return f;
  // "-<n>", n from 1 without leading zeros: one spelling per file.
  if (rest.size() < 2 || rest.size() > 10 || rest[0] != '-' || rest[1] == '0') return std::nullopt;
  for (char c : rest.substr(1)) {
    if (!IsDigit(c)) return std::nullopt;
  }
  if (!absl::SimpleAtoi(base::Sv(rest.substr(1)), &f.n)) return std::nullopt;
  return f;
}

// ListRotated - the rotated files in dir, oldest first. Other names are not
// ours (an operator's compressed copy, say) and are left alone.
std::vector<RotatedFile> ListRotated(const std::string& dir) {
  std::vector<RotatedFile> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (auto f = ParseRotatedName(it->path().filename().string())) out.push_back(*std::move(f));
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct OpenedFile {
  int fd = -1;
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  absl::Time mtime;
};

absl::StatusOr<OpenedFile> OpenForAppend(const std::string& path) {
  // Read and write: LinesAfter reads back what a crash kept from the queue.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return base::ErrnoError(path, "open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const absl::Status err = base::ErrnoError(path, "fstat");
    ::close(fd);
    return err;
  }
  return OpenedFile{fd, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                    static_cast<uint64_t>(st.st_size), absl::TimeFromTimespec(st.st_mtim)};
}

// ReadRange - bytes [from, to) of fd.
absl::Status ReadRange(int fd, const std::string& path, uint64_t from, uint64_t to,
                       std::string* out) {
  std::string bytes(to - from, '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n =
        ::pread(fd, bytes.data() + got, bytes.size() - got, static_cast<off_t>(from + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat(path, ": read: ", n < 0 ? std::strerror(errno) : "file shrank"));
    }
    got += static_cast<size_t>(n);
  }
  *out = std::move(bytes);
  return absl::OkStatus();
}

// AppendWholeLines - the lines of bytes that end in '\n', without it; empty ones
// skipped. A last line without one is torn or cut off by the replay bound.
void AppendWholeLines(std::string_view bytes, std::vector<std::string>* lines) {
  for (std::string_view rest = bytes;;) {
    const size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) break;
    if (nl > 0) lines->emplace_back(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
}

// FirstRecordTime - the "ts" of the record a file starts with, which is where
// max_age counts from; the file's mtime when it does not start with one.
absl::Time FirstRecordTime(const OpenedFile& f) {
  char head[kFirstRecordPeek];
  const ssize_t n = ::pread(f.fd, head, sizeof head, 0);
  constexpr std::string_view kLead = "{\"ts\":\"";
  if (n > 0) {
    const std::string_view text(head, static_cast<size_t>(n));
    const size_t end = text.find('"', kLead.size());
    absl::Time t;
    std::string err;
    if (text.starts_with(kLead) && end != std::string_view::npos &&
        absl::ParseTime(kTsParseFormat,
                        base::Sv(text.substr(kLead.size(), end - kLead.size())),
                        absl::UTCTimeZone(), &t, &err)) {
      return t;
    }
  }
  return f.mtime;
}

}  // namespace

namespace {

using std::string_view_literals::operator""sv;

// AppendNumber - an integer in decimal, without a string of its own.
template <typename Int>
void AppendNumber(Int n, std::string* out) {
  char digits[24];
  const std::to_chars_result end = std::to_chars(digits, digits + sizeof digits, n);
  out->append(digits, static_cast<size_t>(end.ptr - digits));
}

// AppendStringField - ,"key":"value" (key given with its comma, quotes and colon).
void AppendStringField(std::string_view key, std::string_view value, std::string* out) {
  out->append(key);
  base::AppendJsonString(out, value);
}

}  // namespace

void FormatDeliveryRecord(const DeliveryRecord& r, std::string* out) {
  // Field by field into `out`: no string of its own for any part of a record.
  out->append("{\"ts\":\""sv);
  base::AppendUtcTime(r.ts, base::TimePrecision::kMillis, out);
  AppendStringField("\",\"job\":"sv, r.job, out);
  out->append(",\"line\":"sv);
  AppendNumber(r.line, out);
  AppendStringField(",\"rcpt\":"sv, r.rcpt, out);
  // A status name is plain ASCII (metrics/delivery_status.h): no escaping.
  out->append(",\"status\":\""sv);
  out->append(DeliveryStatusName(r.status));
  out->push_back('"');
  if (!r.klass.empty()) AppendStringField(",\"class\":"sv, r.klass, out);
  out->append(",\"code\":"sv);
  AppendNumber(r.code, out);
  AppendStringField(",\"enhanced\":"sv, r.enhanced, out);
  AppendStringField(",\"response\":"sv, r.response, out);
  AppendStringField(",\"host\":"sv, r.host, out);
  out->append(",\"port\":"sv);
  AppendNumber(r.port, out);
  out->append(",\"attempt\":"sv);
  AppendNumber(r.attempt, out);
  if (!r.node.empty()) AppendStringField(",\"node\":"sv, r.node, out);
  if (!r.txn.empty()) AppendStringField(",\"txn\":"sv, r.txn, out);
  if (r.backoff > 0) {
    out->append(",\"backoff\":"sv);
    AppendNumber(r.backoff, out);
  }
  if (!r.mx.empty()) AppendStringField(",\"mx\":"sv, r.mx, out);
  if (!r.source.empty()) AppendStringField(",\"source\":"sv, r.source, out);
  if (!r.tls_version.empty()) {
    AppendStringField(",\"tls_version\":"sv, r.tls_version, out);
    AppendStringField(",\"tls_cipher\":"sv, r.tls_cipher, out);
  }
  const std::pair<std::string_view, std::string_view> optional[] = {
      {",\"via\":"sv, r.via},
      {",\"matched_by\":"sv, r.matched_by},
      {",\"feedback_type\":"sv, r.feedback_type},
      {",\"reporting_mta\":"sv, r.reporting_mta},
      {",\"remote_mta\":"sv, r.remote_mta},
      {",\"last_reply\":"sv, r.last_reply},
      {",\"last_class\":"sv, r.last_class}};
  for (const auto& [key, value] : optional) {
    if (!value.empty()) AppendStringField(key, value, out);
  }
  out->append("}\n"sv);
}

DeliveryRecord ViewOf(const OwnedDeliveryRecord& r) {
  DeliveryRecord v;
  v.ts = r.ts;
  v.job = r.job;
  v.line = r.line;
  v.rcpt = r.rcpt;
  v.status = r.status;
  v.klass = r.klass;
  v.code = r.code;
  v.enhanced = r.enhanced;
  v.response = r.response;
  v.host = r.host;
  v.port = r.port;
  v.mx = r.mx;
  v.source = r.source;
  v.backoff = r.backoff;
  v.attempt = r.attempt;
  v.node = r.node;
  v.txn = r.txn;
  v.tls_version = r.tls_version;
  v.tls_cipher = r.tls_cipher;
  v.via = r.via;
  v.matched_by = r.matched_by;
  v.feedback_type = r.feedback_type;
  v.reporting_mta = r.reporting_mta;
  v.remote_mta = r.remote_mta;
  v.last_reply = r.last_reply;
  v.last_class = r.last_class;
  return v;
}

namespace {

// The keys of a record, as FormatDeliveryRecord writes them (docs/delivery-log.md).
enum RecordField : uint32_t {
  kTs, kJob, kLine, kRcpt, kStatus, kClass, kCode, kEnhanced, kResponse, kHost, kPort,
  kAttempt, kBackoff, kMx, kSource, kTlsVersion, kTlsCipher, kVia, kMatchedBy,
  kFeedbackType, kReportingMta, kRemoteMta, kLastReply, kLastClass, kTxn, kNode, kRecordFields
};
constexpr std::string_view kRecordFieldNames[kRecordFields] = {
    "ts",   "job",  "line",    "rcpt",    "status", "class",  "code",        "enhanced",
    "response", "host", "port", "attempt", "backoff", "mx", "source", "tls_version",
    "tls_cipher", "via", "matched_by", "feedback_type", "reporting_mta", "remote_mta",
    "last_reply", "last_class", "txn", "node"};
constexpr uint32_t Bit(RecordField f) { return uint32_t{1} << f; }
// Every record has these; the others are left out when empty or 0.
constexpr uint32_t kRequiredFields = Bit(kTs) | Bit(kJob) | Bit(kLine) | Bit(kRcpt) |
                                     Bit(kStatus) | Bit(kCode) | Bit(kEnhanced) |
                                     Bit(kResponse) | Bit(kHost) | Bit(kPort) | Bit(kAttempt);
// The highest reply code; 0 stands for "no reply".
constexpr uint64_t kMaxReplyCode = 999;

absl::Status RecordError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("delivery record: \"", base::Sv(field), "\": ", base::Sv(what)));
}

absl::Status NotOneObject(std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("delivery record: not one JSON object: ", base::Sv(what)));
}

absl::Status ReadString(od::value& value, std::string_view field, std::string* out) {
  od::json_type type;
  if (auto error = value.type().get(type)) return NotOneObject(simdjson::error_message(error));
  if (type != od::json_type::string) return RecordError(field, "not a string");
  std::string_view s;
  if (auto error = value.get_string().get(s)) {
    return RecordError(field, simdjson::error_message(error));
  }
  out->assign(s);
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadUnsigned(od::value& value, std::string_view field, uint64_t max, T* out) {
  uint64_t n = 0;
  if (auto error = value.get_uint64().get(n)) {
    return error == simdjson::INCORRECT_TYPE || error == simdjson::NUMBER_ERROR
               ? RecordError(field, "not an unsigned integer")
               : NotOneObject(simdjson::error_message(error));
  }
  if (n > max) return RecordError(field, absl::StrCat(n, " is over ", max));
  *out = static_cast<T>(n);
  return absl::OkStatus();
}

absl::Status ReadField(RecordField f, od::value& value, OwnedDeliveryRecord* r) {
  const std::string_view name = kRecordFieldNames[f];
  switch (f) {
    case kTs: {
      std::string text;
      RETURN_IF_ERROR(ReadString(value, name, &text));
      std::string err;
      if (!absl::ParseTime(kTsParseFormat, text, absl::UTCTimeZone(), &r->ts, &err)) {
        return RecordError(name, absl::StrCat("\"", text, "\" is not an RFC 3339 UTC time (",
                                              err, ")"));
      }
      return absl::OkStatus();
    }
    case kStatus: {
      std::string text;
      RETURN_IF_ERROR(ReadString(value, name, &text));
      absl::StatusOr<DeliveryStatus> status = ParseDeliveryStatus(text);
      if (!status.ok()) return RecordError(name, base::StdSv(status.status().message()));
      r->status = *status;
      return absl::OkStatus();
    }
    case kJob: return ReadString(value, name, &r->job);
    case kRcpt: return ReadString(value, name, &r->rcpt);
    case kClass: return ReadString(value, name, &r->klass);
    case kEnhanced: return ReadString(value, name, &r->enhanced);
    case kResponse: return ReadString(value, name, &r->response);
    case kHost: return ReadString(value, name, &r->host);
    case kMx: return ReadString(value, name, &r->mx);
    case kSource: return ReadString(value, name, &r->source);
    case kTlsVersion: return ReadString(value, name, &r->tls_version);
    case kTlsCipher: return ReadString(value, name, &r->tls_cipher);
    case kVia: return ReadString(value, name, &r->via);
    case kMatchedBy: return ReadString(value, name, &r->matched_by);
    case kFeedbackType: return ReadString(value, name, &r->feedback_type);
    case kReportingMta: return ReadString(value, name, &r->reporting_mta);
    case kRemoteMta: return ReadString(value, name, &r->remote_mta);
    case kLastReply: return ReadString(value, name, &r->last_reply);
    case kLastClass: return ReadString(value, name, &r->last_class);
    case kTxn: return ReadString(value, name, &r->txn);
    case kNode: return ReadString(value, name, &r->node);
    case kLine: return ReadUnsigned(value, name, UINT32_MAX, &r->line);
    case kAttempt: return ReadUnsigned(value, name, UINT32_MAX, &r->attempt);
    case kPort: return ReadUnsigned(value, name, UINT16_MAX, &r->port);
    case kCode: return ReadUnsigned(value, name, kMaxReplyCode, &r->code);
    case kBackoff: return ReadUnsigned(value, name, INT32_MAX, &r->backoff);
    case kRecordFields: break;
  }
  return absl::InternalError("delivery record: a field without a reader");
}

}  // namespace

absl::StatusOr<OwnedDeliveryRecord> ParseDeliveryRecord(std::string_view line) {
  // One parser per thread: it keeps its buffers from one line to the next.
  thread_local od::parser parser;
  const simdjson::padded_string padded(line);
  od::document doc;
  if (auto error = parser.iterate(padded).get(doc)) {
    return NotOneObject(simdjson::error_message(error));
  }
  od::object object;
  if (auto error = doc.get_object().get(object)) {
    return NotOneObject(simdjson::error_message(error));
  }
  OwnedDeliveryRecord r;
  uint32_t seen = 0;
  for (auto field_result : object) {
    od::field field;
    if (auto error = std::move(field_result).get(field)) {
      return NotOneObject(simdjson::error_message(error));
    }
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) {
      return NotOneObject(simdjson::error_message(error));
    }
    const auto* known = std::find(std::begin(kRecordFieldNames), std::end(kRecordFieldNames), key);
    if (known == std::end(kRecordFieldNames)) continue;  // a field of a later volleyd
    const auto f = static_cast<RecordField>(known - std::begin(kRecordFieldNames));
    if (seen & Bit(f)) return RecordError(key, "appears twice");
    seen |= Bit(f);
    od::value value = field.value();
    RETURN_IF_ERROR(ReadField(f, value, &r));
  }
  // The parser stops at the closing brace: anything after it ("{...}}", or a
  // record torn by a crash with the next one glued on) is not one record.
  const char* rest = nullptr;
  if (doc.current_location().get(rest) == simdjson::SUCCESS) {
    return NotOneObject("more after the closing brace");
  }
  if (const uint32_t missing = kRequiredFields & ~seen; missing != 0) {
    return RecordError(kRecordFieldNames[std::countr_zero(missing)], "missing");
  }
  return r;
}

DeliveryLog::DeliveryLog(std::string dir, DeliveryLogOptions options)
    : dir_(std::move(dir)),
      path_(absl::StrCat(dir_, "/", base::Sv(kCurrentName))),
      options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<DeliveryLog>> DeliveryLog::Open(const std::string& dir,
                                                               DeliveryLogOptions options) {
  if (options.keep < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": delivery log keep = ", options.keep,
        ": must be at least 1 (a crash replay may start in the newest rotated file)"));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  auto log = std::unique_ptr<DeliveryLog>(new DeliveryLog(dir, std::move(options)));
  ASSIGN_OR_RETURN(const OpenedFile f, OpenForAppend(log->path_));
  log->fd_ = f.fd;
  log->dev_ = f.dev;
  log->ino_ = f.ino;
  log->size_ = f.size;
  if (f.size > 0) log->started_ = FirstRecordTime(f);
  char last = '\n';
  if (f.size > 0 && ::pread(f.fd, &last, 1, static_cast<off_t>(f.size - 1)) == 1 &&
      last != '\n') {
    // End the torn record's line before anything follows it; no rotation before
    // that is written.
    log->at_boundary_ = false;
    log->buffer_ = "\n";
    RETURN_IF_ERROR(log->Flush());
  }
  return log;
}

std::string DeliveryLog::position() const { return absl::StrCat(dev_, ":", ino_, ":", size_); }

absl::StatusOr<std::vector<std::string>> DeliveryLog::LinesAfter(std::string_view position) const {
  const std::vector<absl::string_view> parts = absl::StrSplit(base::Sv(position), ':');
  uint64_t dev = 0, ino = 0, offset = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &dev) ||
      !absl::SimpleAtoi(parts[1], &ino) || !absl::SimpleAtoi(parts[2], &offset)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delivery log position \"", base::Sv(position), "\" is malformed"));
  }
  // The files in the order they were written: rotated ones oldest first, then
  // the current one. The position's file is found by its inode, which a rename
  // keeps.
  std::vector<std::string> paths;
  bool found = false;
  if (dev != dev_ || ino != ino_) {
    for (const RotatedFile& r : ListRotated(dir_)) {
      std::string p = absl::StrCat(dir_, "/", r.name);
      struct stat st {};
      if (!found && ::stat(p.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == dev &&
          static_cast<uint64_t>(st.st_ino) == ino) {
        found = true;
      }
      if (found) paths.push_back(std::move(p));
    }
  } else {
    found = true;
  }
  if (!found) {
    return absl::NotFoundError(absl::StrCat("no file in ", dir_,
                                            " is the delivery log file the queue last saw (",
                                            base::Sv(position), ")"));
  }
  paths.push_back(path_);
  std::vector<std::string> lines;
  uint64_t budget = kMaxReplayBytes;
  for (size_t i = 0; i < paths.size() && budget > 0; ++i) {
    const bool current = i + 1 == paths.size();
    int fd = fd_;
    uint64_t size = size_;
    if (!current) {
      fd = ::open(paths[i].c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st {};
      if (fd < 0 || ::fstat(fd, &st) != 0) {
        const absl::Status err = base::ErrnoError(paths[i], fd < 0 ? "open" : "fstat");
        if (fd >= 0) ::close(fd);
        return err;
      }
      size = static_cast<uint64_t>(st.st_size);
    }
    const uint64_t from = i == 0 ? offset : 0;
    if (from > size) {
      if (!current) ::close(fd);
      return absl::NotFoundError(absl::StrCat(paths[i], " is shorter than the position the queue ",
                                              "last saw (", base::Sv(position), ")"));
    }
    const uint64_t to = from + std::min(size - from, budget);
    std::string bytes;
    const absl::Status st = ReadRange(fd, paths[i], from, to, &bytes);
    if (!current) ::close(fd);
    RETURN_IF_ERROR(st);
    budget -= to - from;
    AppendWholeLines(bytes, &lines);
  }
  return lines;
}

DeliveryLog::~DeliveryLog() {
  if (fd_ < 0) return;
  if (const absl::Status st = Flush(); !st.ok()) {
    // Their outcomes were not applied to the queue either (the committer
    // applies only after a flush that succeeded): those recipients are sent
    // again after the restart, a possible duplicate, never a loss.
    base::LogInfo("delivery log: %zu bytes of records not written at exit: %s", buffer_.size(),
                  std::string(st.message()));
  }
  ::close(fd_);
}

bool DeliveryLog::RotationDue(absl::Time now) const {
  if (!at_boundary_ || size_ == 0 || now < retry_rotation_at_) return false;
  if (options_.max_size > 0 && size_ >= options_.max_size) return true;
  return options_.max_age > absl::ZeroDuration() && now - started_ >= options_.max_age;
}

absl::Status DeliveryLog::Flush() {
  const absl::Time now = Now();
  // By time before the write: what is written now belongs in a new file.
  if (RotationDue(now)) Rotate(now);
  if (!buffer_.empty()) {
    if (size_ == 0) started_ = now;
    size_t written = 0;
    const absl::Status st = base::WriteAll(fd_, buffer_, path_, &written);
    // What reached the file, also when the write then failed part-way (a short
    // write, then the error): counted in the position, and dropped from the
    // buffer so that it is never written twice. The rest stays for the next
    // flush, which writes it first: nothing is lost either.
    size_ += written;
    if (written > 0) at_boundary_ = written == buffer_.size();
    buffer_.erase(0, written);
    if (!st.ok()) {
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      return st;
    }
  }
  // By size after the write, so that a file ends at max_size or just past it.
  if (RotationDue(now)) Rotate(now);
  return absl::OkStatus();
}

void DeliveryLog::Rotate(absl::Time now) {
  std::string rotated;
  const absl::Status st = RenameAndReopen(now, &rotated);
  if (!st.ok()) {
    if (!rotation_failing_) {
      base::LogInfo("delivery log: cannot rotate %s: %s; records go on into it (tried again every "
                    "%s)", path_, std::string(st.message()),
                    absl::FormatDuration(kRotateRetryInterval));
    }
    rotation_failing_ = true;
    retry_rotation_at_ = now + kRotateRetryInterval;
    return;
  }
  if (rotation_failing_) {
    base::LogInfo("delivery log: rotated again, to %s", rotated);
  }
  rotation_failing_ = false;
  retry_rotation_at_ = absl::InfinitePast();
  DeleteOldRotated();
}

absl::Status DeliveryLog::RenameAndReopen(absl::Time now, std::string* rotated) {
  // A name that sorts after every rotated file already there, also when the
  // clock stepped back: LinesAfter reads them in name order.
  std::string stamp = absl::FormatTime(std::string(kStampFormat), now, absl::UTCTimeZone());
  uint64_t n = 0;
  if (const std::vector<RotatedFile> old = ListRotated(dir_);
      !old.empty() && old.back().stamp >= stamp) {
    stamp = old.back().stamp;
    n = old.back().n + 1;
  }
  std::string target = absl::StrCat(dir_, "/", RotatedName(stamp, n));
  if (::rename(path_.c_str(), target.c_str()) != 0) return base::ErrnoError(path_, "rename");
  absl::StatusOr<OpenedFile> f = OpenForAppend(path_);
  if (!f.ok()) {
    // Put it back, and write on into it.
    if (::rename(target.c_str(), path_.c_str()) != 0) {
      return absl::UnavailableError(absl::StrCat(
          f.status().message(), "; and renaming it back failed too: ", std::strerror(errno),
          ": records go on into ", target));
    }
    return f.status();
  }
  ::close(fd_);
  fd_ = f->fd;
  dev_ = f->dev;
  ino_ = f->ino;
  size_ = f->size;  // 0, unless someone else wrote there since the rename
  started_ = size_ > 0 ? FirstRecordTime(*f) : absl::InfiniteFuture();
  at_boundary_ = true;
  *rotated = std::move(target);
  return absl::OkStatus();
}

void DeliveryLog::DeleteOldRotated() const {
  const std::vector<RotatedFile> rotated = ListRotated(dir_);
  const size_t keep = static_cast<size_t>(options_.keep);
  for (size_t i = 0; i + keep < rotated.size(); ++i) {
    const std::string p = absl::StrCat(dir_, "/", rotated[i].name);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
      base::LogInfo("delivery log: cannot delete %s (past keep = %d): %s", p, options_.keep,
                    std::strerror(errno));
    }
  }
}

}  // namespace volley::metrics
