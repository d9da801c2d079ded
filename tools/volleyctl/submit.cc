#include "tools/volleyctl/submit.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/ascii.h"
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

// JobFileWriter - one job file, written under a temporary name and buffered;
// removed unless Commit succeeds.
class JobFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<JobFileWriter>> Create(std::string tmp_path) {
    auto w = std::unique_ptr<JobFileWriter>(new JobFileWriter);
    w->tmp_path_ = std::move(tmp_path);
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

  // Commit - fsync, then rename to final_path (in `folder`) without replacing
  // anything there.
  absl::Status Commit(const std::string& folder, const std::string& final_path) {
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
    Fd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::fsync(dir.get()) != 0) return base::ErrnoError(folder, "fsync");
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

// Part - one job file being written: the whole job, or one of --split's.
struct Part {
  std::string job_id;
  std::string spool;   // "" with --out
  std::string folder;  // where it goes: <spool>/incoming, or --out
  std::string path;    // <folder>/<job_id>.job
  std::string header_line;
  std::unique_ptr<JobFileWriter> out;
  uint64_t recipients = 0;
};

absl::Status NeedFolder(const std::string& dir, std::string_view what) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such folder (", base::Sv(what), ")"));
  }
  return absl::OkStatus();
}

absl::Status NeedSpool(const std::string& spool) {
  for (const std::string& dir : {spool + "/incoming", spool + "/tmp"}) {
    RETURN_IF_ERROR(NeedFolder(
        dir, absl::StrCat("is ", spool,
                          " volleyd's spool? --spool, or [paths] spool of --config, names it")));
  }
  return absl::OkStatus();
}

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

std::string_view SplitByName(SplitBy by) {
  return by == SplitBy::kDomain ? "domain" : "recipient";
}

absl::StatusOr<SplitBy> ParseSplitBy(std::string_view name) {
  if (name == "recipient") return SplitBy::kRecipient;
  if (name == "domain") return SplitBy::kDomain;
  return absl::InvalidArgumentError(absl::StrCat(
      "--split-by: \"", base::Sv(Printable(name)), "\" is neither recipient nor domain"));
}

uint32_t PartOfDomain(std::string_view domain, uint32_t parts) {
  // FNV-1a, 64 bits, of the lower-cased domain: a fixed function, so that a
  // domain goes to the same node in every job split over the same nodes.
  uint64_t h = 14695981039346656037ull;
  for (const char c : domain) {
    h ^= static_cast<unsigned char>(absl::ascii_tolower(static_cast<unsigned char>(c)));
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % parts);
}

absl::StatusOr<SubmitResult> Submit(const SubmitRequest& request, const engine::Config* config,
                                    absl::Time now,
                                    const std::function<void(const std::string&)>& on_bad_row) {
  const queue::JobLimits limits;
  const bool split = request.split > 1 || !request.spools.empty() || !request.out_dir.empty();
  if (request.split < 1 || request.split > kMaxSplit) {
    return Refused(absl::StrCat("--split: ", request.split, " is not a number of parts 1..",
                                kMaxSplit));
  }
  if (split && request.out_dir.empty() &&
      request.spools.size() != static_cast<size_t>(request.split)) {
    return Refused(absl::StrCat("--split ", request.split, " needs ", request.split,
                                " spools (--spool DIR1,DIR2,...), one per node, or --out DIR; ",
                                request.spools.size(), " given"));
  }
  if (!request.out_dir.empty()) {
    RETURN_IF_ERROR(NeedFolder(request.out_dir, "--out names a folder that exists"));
  } else if (split) {
    for (const std::string& spool : request.spools) RETURN_IF_ERROR(NeedSpool(spool));
  } else {
    RETURN_IF_ERROR(NeedSpool(request.spool));
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
  std::vector<Part> parts(static_cast<size_t>(request.split));
  for (size_t k = 0; k < parts.size(); ++k) {
    Part& p = parts[k];
    p.job_id = split ? absl::StrCat(result.job_id, "-", k + 1) : result.job_id;
    if (!request.out_dir.empty()) {
      p.folder = request.out_dir;
    } else {
      p.spool = split ? request.spools[k] : request.spool;
      p.folder = p.spool + "/incoming";
    }
    p.path = absl::StrCat(p.folder, "/", p.job_id, ".job");
  }

  ASSIGN_OR_RETURN(const std::string message,
                   ReadTemplate(request.template_path, limits.max_header_line));
  // Every part's header is checked (a suffix may make an id too long); the
  // first part's check judges the recipients, as the parts differ only in id.
  std::optional<queue::JobFileCheck> check;
  for (Part& p : parts) {
    p.header_line = JobHeaderLine(request, p.job_id, message);
    if (p.header_line.size() > limits.max_header_line) {
      return Refused(queue::HeaderTooLongReason(limits));
    }
    // The header first: a bad --job is named as such before it names a file.
    absl::StatusOr<queue::JobFileCheck> c = queue::JobFileCheck::Start(p.header_line, limits);
    if (!c.ok()) return Refused(base::StdSv(c.status().message()));
    if (!check) check = *std::move(c);
  }
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

  for (const Part& p : parts) {
    if (::access(p.path.c_str(), F_OK) == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat(p.path, ": exists; not overwritten (choose another --job)"));
    }
    if (!request.job_id.empty() && !p.spool.empty()) {
      // A generated id is new by construction; a chosen one may have been used.
      absl::StatusOr<std::string> accepted = FindAcceptedJobFile(p.spool, p.job_id);
      if (accepted.ok()) {
        return absl::AlreadyExistsError(absl::StrCat(
            "job \"", p.job_id, "\" was already accepted (", *accepted,
            "); a job id is accepted once: choose another --job"));
      }
    }
  }

  Fd csv(::open(request.recipients_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (csv.get() < 0) return base::ErrnoError(request.recipients_path, "open");
  for (Part& p : parts) {
    // In --out the temporary name starts with a dot: a glob for *.job, or a
    // copy to a node's incoming/, does not take a file half written.
    const std::string tmp =
        p.spool.empty() ? absl::StrCat(p.folder, "/.", p.job_id, ".job.", ::getpid())
                        : absl::StrCat(p.spool, "/tmp/", p.job_id, ".job.", ::getpid());
    ASSIGN_OR_RETURN(p.out, JobFileWriter::Create(tmp));
    RETURN_IF_ERROR(p.out->Line(p.header_line));
  }

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
    const uint32_t n = static_cast<uint32_t>(parts.size());
    Part& part = parts[request.split_by == SplitBy::kDomain
                           ? PartOfDomain(queue::DomainOf(rcpt->to), n)
                           : static_cast<uint32_t>(result.recipients % n)];
    ++result.recipients;
    ++part.recipients;
    if (absl::Status written = part.out->Line(line); !written.ok()) stop = written;
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
  for (Part& p : parts) {
    SubmitPart done{p.job_id, "", p.recipients};
    // A part without recipients is no job (a node with nothing to send): not
    // written, listed with an empty path.
    if (p.recipients > 0) {
      if (absl::Status st = p.out->Commit(p.folder, p.path); !st.ok()) {
        if (result.parts.empty()) return st;
        std::string written;
        for (const SubmitPart& w : result.parts) {
          if (!w.path.empty()) absl::StrAppend(&written, " ", w.path);
        }
        return absl::Status(st.code(), absl::StrCat(st.message(), " (already written:", written,
                                                    ")"));
      }
      done.path = p.path;
    }
    result.parts.push_back(std::move(done));
  }
  result.path = result.parts.front().path;
  if (split) result.path.clear();
  return result;
}

}  // namespace volley::ctl
