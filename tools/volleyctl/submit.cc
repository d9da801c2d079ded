#include "tools/volleyctl/submit.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/compose.h"
#include "queue/job.h"
#include "queue/job_check.h"
#include "queue/template.h"
#include "tools/volleyctl/ctl.h"

namespace volley::ctl {
namespace {

absl::Status Refused(std::string_view why) {
  return absl::InvalidArgumentError(std::string(why));
}

// Fd - a descriptor closed on every path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  absl::Status Close(std::string_view path) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return base::ErrnoError(path, "close");
    return absl::OkStatus();
  }

 private:
  int fd_;
};

// ReadTemplate - the whole template file, refused past `max` octets.
absl::StatusOr<std::string> ReadTemplate(const std::string& path, size_t max) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return base::ErrnoError(path, "open");
  std::string text;
  char buf[kSubmitReadChunk];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(path, "read");
    }
    if (n == 0) break;
    if (text.size() + static_cast<size_t>(n) > max) {
      return Refused(absl::StrCat(path, ": longer than ", max,
                                  " octets (a job header holds at most that)"));
    }
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

// JobFileWriter - the job file in tmp/, buffered; removed unless Commit succeeds.
class JobFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<JobFileWriter>> Create(const std::string& spool,
                                                               const std::string& id) {
    auto w = std::unique_ptr<JobFileWriter>(new JobFileWriter);
    w->tmp_path_ = absl::StrCat(spool, "/tmp/", id, ".job.", ::getpid());
    const int fd = ::open(w->tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) return base::ErrnoError(w->tmp_path_, "create");
    w->fd_ = fd;
    return w;
  }
  ~JobFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_path_.c_str());
  }

  absl::Status Line(std::string_view line) {
    buffer_.append(line.data(), line.size());
    buffer_.push_back('\n');
    if (buffer_.size() >= kSubmitWriteBuffer) return Flush();
    return absl::OkStatus();
  }

  // Commit - fsync, then rename into incoming/ without replacing anything there.
  absl::Status Commit(const std::string& spool, const std::string& final_path) {
    RETURN_IF_ERROR(Flush());
    if (::fsync(fd_) != 0) return base::ErrnoError(tmp_path_, "fsync");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return base::ErrnoError(tmp_path_, "close");
    if (::renameat2(AT_FDCWD, tmp_path_.c_str(), AT_FDCWD, final_path.c_str(),
                    RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) {
        return absl::AlreadyExistsError(
            absl::StrCat(final_path, ": exists; not overwritten (choose another --job)"));
      }
      return base::ErrnoError(final_path, "rename into place");
    }
    committed_ = true;
    // The rename itself must survive a crash: sync the folder that holds it.
    const std::string incoming = spool + "/incoming";
    Fd dir(::open(incoming.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::fsync(dir.get()) != 0) return base::ErrnoError(incoming, "fsync");
    return absl::OkStatus();
  }

 private:
  JobFileWriter() = default;
  absl::Status Flush() {
    RETURN_IF_ERROR(base::WriteAll(fd_, buffer_, tmp_path_));
    buffer_.clear();
    return absl::OkStatus();
  }
  std::string tmp_path_;
  int fd_ = -1;
  std::string buffer_;
  bool committed_ = false;
};

// Columns - the header row's names and the address column's index.
struct Columns {
  std::vector<std::string> names;
  size_t address = 0;
};

absl::StatusOr<Columns> ReadColumns(const std::string& path, const CsvRecord& row,
                                    const std::string& wanted) {
  auto at = [&](std::string_view why) {
    return Refused(absl::StrCat(path, ":", row.line, ": header row: ", base::Sv(why)));
  };
  if (!row.error.empty()) return at(row.error);
  Columns c;
  bool found = false;
  for (size_t i = 0; i < row.fields.size(); ++i) {
    const std::string& name = row.fields[i];
    if (!queue::IsPlaceholderName(name)) {
      return at(absl::StrCat("column ", i + 1, " \"", base::Sv(Printable(name)),
                             "\" is not a variable name ([A-Za-z0-9_.-], 1..64 characters, "
                             "as in {{name}})"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (row.fields[j] == name) {
        return at(absl::StrCat("column ", i + 1, " \"", name, "\" repeats column ", j + 1));
      }
    }
    if (!found && (wanted.empty() ? (name == "email" || name == "address") : name == wanted)) {
      c.address = i;
      found = true;
    }
  }
  if (!found) {
    return at(wanted.empty()
                  ? std::string("no \"email\" or \"address\" column (--address-column names another)")
                  : absl::StrCat("no \"", base::Sv(Printable(wanted)), "\" column (--address-column)"));
  }
  c.names = row.fields;
  return c;
}

// RowReason - intake's reject reason with its "to" named as the CSV column.
std::string RowReason(std::string_view reason, std::string_view address_column) {
  if (reason.substr(0, 4) == "to: ") {
    return absl::StrCat(base::Sv(address_column), " (to): ", base::Sv(reason.substr(4)));
  }
  return std::string(reason);
}

}  // namespace

std::string NewJobId(std::string_view recipients_path, absl::Time now, uint32_t random) {
  std::string_view stem = recipients_path;
  if (const size_t slash = stem.rfind('/'); slash != std::string_view::npos) {
    stem.remove_prefix(slash + 1);
  }
  if (const size_t dot = stem.rfind('.'); dot != std::string_view::npos && dot > 0) {
    stem = stem.substr(0, dot);
  }
  // Only the characters a job id allows, and few enough to leave the id short.
  std::string clean;
  for (const char c : stem) {
    if (clean.size() == 40) break;
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    clean.push_back(ok ? c : '_');
  }
  std::string id = absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone());
  if (!clean.empty()) absl::StrAppend(&id, "-", clean);
  absl::StrAppend(&id, "-", absl::Hex(random, absl::kZeroPad8));
  return id;
}

std::string JobHeaderLine(const SubmitRequest& request, std::string_view job_id,
                          std::string_view message) {
  std::string line = "{\"job\":";
  base::AppendJsonString(&line, job_id);
  line += ",\"from\":";
  base::AppendJsonString(&line, request.from);
  if (!request.send_after.empty()) {
    line += ",\"send_after\":";
    base::AppendJsonString(&line, request.send_after);
  }
  if (request.priority) absl::StrAppend(&line, ",\"priority\":", *request.priority);
  line += ",\"message\":";
  base::AppendJsonString(&line, message);
  line += "}";
  return line;
}

std::string RecipientLine(const std::vector<std::string>& columns, size_t address,
                          const std::vector<std::string>& fields) {
  std::string line = "{\"to\":";
  base::AppendJsonString(&line, fields[address]);
  line += ",\"vars\":{";
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i > 0) line += ",";
    base::AppendJsonString(&line, columns[i]);
    line += ":";
    base::AppendJsonString(&line, fields[i]);
  }
  line += "}}";
  return line;
}

absl::StatusOr<SubmitResult> Submit(const SubmitRequest& request, const engine::Config* config,
                                    absl::Time now,
                                    const std::function<void(const std::string&)>& on_bad_row) {
  const queue::JobLimits limits;
  const std::string incoming = request.spool + "/incoming";
  struct stat st;
  for (const std::string& dir : {incoming, request.spool + "/tmp"}) {
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::NotFoundError(absl::StrCat(
          dir, ": no such folder (is ", request.spool,
          " volleyd's spool? --spool, or [paths] spool of --config, names it)"));
    }
  }

  SubmitResult result;
  result.job_id = request.job_id;
  if (result.job_id.empty()) {
    uint32_t random = 0;
    if (::getrandom(&random, sizeof random, 0) != sizeof random) {
      return base::ErrnoError("getrandom", "job id");
    }
    result.job_id = NewJobId(request.recipients_path, now, random);
  }
  result.path = absl::StrCat(incoming, "/", result.job_id, ".job");

  ASSIGN_OR_RETURN(const std::string message,
                   ReadTemplate(request.template_path, limits.max_header_line));
  const std::string header_line = JobHeaderLine(request, result.job_id, message);
  if (header_line.size() > limits.max_header_line) {
    return Refused(queue::HeaderTooLongReason(limits));
  }
  // The header first: a bad --job is named as such before it names a file.
  absl::StatusOr<queue::JobFileCheck> check = queue::JobFileCheck::Start(header_line, limits);
  if (!check.ok()) return Refused(base::StdSv(check.status().message()));
  if (config != nullptr) {
    std::vector<std::string> warnings;  // volleyd prints them at start
    ASSIGN_OR_RETURN(engine::Credentials keys, engine::Credentials::Load(*config, &warnings));
    if (absl::Status bad = keys.CheckJob(check->header(), check->tpl()); !bad.ok()) {
      return Refused(base::StdSv(bad.message()));
    }
  }
  if (absl::Status bad = check->CheckTimes(now); !bad.ok()) {
    return Refused(base::StdSv(bad.message()));
  }

  if (::access(result.path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(result.path, ": exists; not overwritten (choose another --job)"));
  }
  if (!request.job_id.empty()) {
    // A generated id is new by construction; a chosen one may have been used.
    absl::StatusOr<std::string> accepted = FindAcceptedJobFile(request.spool, result.job_id);
    if (accepted.ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "job \"", result.job_id, "\" was already accepted (", *accepted,
          "); a job id is accepted once: choose another --job"));
    }
  }

  Fd csv(::open(request.recipients_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (csv.get() < 0) return base::ErrnoError(request.recipients_path, "open");
  ASSIGN_OR_RETURN(std::unique_ptr<JobFileWriter> out,
                   JobFileWriter::Create(request.spool, result.job_id));
  RETURN_IF_ERROR(out->Line(header_line));

  std::optional<Columns> columns;
  absl::Status stop = absl::OkStatus();  // the first error that ends the whole submit
  auto bad_row = [&](uint64_t line, std::string_view why) {
    ++result.bad_rows;
    if (on_bad_row) {
      on_bad_row(absl::StrCat(request.recipients_path, ":", line, ": ", base::Sv(why)));
    }
  };
  CsvReader reader(request.csv_limits, [&](CsvRecord&& row) {
    if (!stop.ok()) return;
    if (!columns) {
      absl::StatusOr<Columns> c = ReadColumns(request.recipients_path, row, request.address_column);
      if (!c.ok()) {
        stop = c.status();
      } else {
        columns = *std::move(c);
      }
      return;
    }
    if (!row.error.empty()) return bad_row(row.line, row.error);
    if (row.fields.size() != columns->names.size()) {
      return bad_row(row.line, absl::StrCat("has ", row.fields.size(), " field",
                                            row.fields.size() == 1 ? "" : "s",
                                            "; the header row has ", columns->names.size()));
    }
    const std::string& column = columns->names[columns->address];
    if (row.fields[columns->address].empty()) {
      return bad_row(row.line, absl::StrCat(column, ": empty address"));
    }
    const std::string line = RecipientLine(columns->names, columns->address, row.fields);
    if (line.size() > limits.max_recipient_line) return bad_row(row.line, check->TooLongReason());
    absl::StatusOr<queue::Recipient> rcpt = check->CheckRecipient(line);
    if (!rcpt.ok()) {
      return bad_row(row.line, RowReason(base::StdSv(rcpt.status().message()), column));
    }
    ++result.recipients;
    if (absl::Status written = out->Line(line); !written.ok()) stop = written;
  });

  char buf[kSubmitReadChunk];
  for (;;) {
    const ssize_t n = ::read(csv.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(request.recipients_path, "read");
    }
    if (n == 0) break;
    if (absl::Status s = reader.Feed(std::string_view(buf, static_cast<size_t>(n))); !s.ok()) {
      return Refused(absl::StrCat(request.recipients_path, ": ", s.message()));
    }
    if (!stop.ok()) return stop;
  }
  if (absl::Status s = reader.Finish(); !s.ok()) {
    return Refused(absl::StrCat(request.recipients_path, ": ", s.message()));
  }
  if (!stop.ok()) return stop;
  if (!columns) return Refused(absl::StrCat(request.recipients_path, ": no header row"));

  if (absl::Status verdict = check->Finish(); !verdict.ok()) {
    return Refused(base::StdSv(verdict.message()));
  }
  if (result.recipients == 0) {
    return Refused(absl::StrCat(request.recipients_path, ": no good rows: nothing submitted"));
  }
  if (request.strict && result.bad_rows > 0) {
    return Refused(absl::StrCat(request.recipients_path, ": ", result.bad_rows, " bad row",
                                result.bad_rows == 1 ? "" : "s",
                                " and --strict: nothing submitted"));
  }
  RETURN_IF_ERROR(out->Commit(request.spool, result.path));
  return result;
}

}  // namespace volley::ctl
