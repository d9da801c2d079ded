// feedback_spool.cc - the inbound listener's message files; see feedback_spool.h.
#include "engine/feedback_spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/host_port.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0750) == 0 || errno == EEXIST) return absl::OkStatus();
  return base::ErrnoError(path, "mkdir");
}

absl::Status FsyncPath(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) {
    errno = err;
    return base::ErrnoError(path, "fsync");
  }
  return absl::OkStatus();
}

// Names - the plain files of dir, at most `limit` of them (0: all).
absl::StatusOr<std::vector<std::string>> Names(const std::string& dir, size_t limit) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return base::ErrnoError(dir, "opendir");
  }
  for (;;) {
    errno = 0;
    const dirent* e = readdir(d);
    if (e == nullptr) break;
    if (e->d_name[0] == '.') continue;
    names.emplace_back(e->d_name);
    if (limit > 0 && names.size() >= limit) break;
  }
  const int err = errno;
  closedir(d);
  if (err != 0) {
    errno = err;
    return base::ErrnoError(dir, "readdir");
  }
  return names;
}

absl::Status Malformed(const std::string& path, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": not a feedback file: ", base::Sv(why)));
}

}  // namespace

std::string EnvelopeJson(const smtpd::Envelope& envelope, absl::Time received_at) {
  std::string out = absl::StrCat("{\"received_at\":", absl::ToUnixMillis(received_at),
                                 ",\"peer\":");
  base::AppendJsonString(&out, envelope.peer);
  out.append(",\"helo\":");
  base::AppendJsonString(&out, envelope.helo);
  out.append(",\"mail_from\":");
  base::AppendJsonString(&out, envelope.mail_from);
  out.append(",\"rcpt_to\":[");
  for (size_t i = 0; i < envelope.rcpt_to.size(); ++i) {
    if (i > 0) out.push_back(',');
    base::AppendJsonString(&out, envelope.rcpt_to[i]);
  }
  absl::StrAppend(&out, "],\"tls\":", envelope.tls ? "true" : "false", "}");
  return out;
}

absl::StatusOr<FeedbackSpool> FeedbackSpool::Open(const std::string& spool_dir,
                                                  size_t max_pending) {
  FeedbackSpool spool;
  const std::string root = absl::StrCat(spool_dir, "/feedback");
  spool.tmp_dir_ = root + "/tmp";
  spool.new_dir_ = root + "/new";
  spool.max_pending_ = max_pending;
  spool.sequence_ = std::make_shared<std::atomic<uint64_t>>(0);
  for (const std::string& dir : {root, spool.tmp_dir_, spool.new_dir_}) {
    RETURN_IF_ERROR(MakeDir(dir));
  }
  // A file left in tmp/ was never answered 250: the client will send it again.
  ASSIGN_OR_RETURN(std::vector<std::string> stray, Names(spool.tmp_dir_, 0));
  for (const std::string& name : stray) {
    const std::string path = absl::StrCat(spool.tmp_dir_, "/", name);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return base::ErrnoError(path, "unlink");
  }
  return spool;
}

bool FeedbackSpool::OverPending() const {
  absl::StatusOr<std::vector<std::string>> names = Names(new_dir_, max_pending_ + 1);
  return names.ok() && names->size() > max_pending_;
}

absl::StatusOr<std::string> FeedbackSpool::Write(const smtpd::Envelope& envelope,
                                                 std::string_view content,
                                                 absl::Time received_at) const {
  const uint64_t sequence = sequence_->fetch_add(1, std::memory_order_relaxed);
  const std::string name = absl::StrFormat("%013d-%010d-%d", absl::ToUnixMillis(received_at),
                                           sequence, static_cast<int>(getpid()));
  const std::string tmp = absl::StrCat(tmp_dir_, "/", name);
  const std::string final_path = absl::StrCat(new_dir_, "/", name);
  std::string head = EnvelopeJson(envelope, received_at);
  head.push_back('\n');

  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return base::ErrnoError(tmp, "open");
  absl::Status st = base::WriteAll(fd, head, tmp);
  if (st.ok()) st = base::WriteAll(fd, content, tmp);
  if (st.ok() && fsync(fd) != 0) st = base::ErrnoError(tmp, "fsync");
  if (close(fd) != 0 && st.ok()) st = base::ErrnoError(tmp, "close");
  if (st.ok() && rename(tmp.c_str(), final_path.c_str()) != 0) {
    st = base::ErrnoError(final_path, "rename");
  }
  if (!st.ok()) {
    unlink(tmp.c_str());
    return st;
  }
  // The rename is durable only once the directory is: until then a crash may
  // lose a message already answered 250.
  if (absl::Status synced = FsyncPath(new_dir_); !synced.ok()) {
    unlink(final_path.c_str());
    return synced;
  }
  return name;
}

absl::StatusOr<std::vector<std::string>> ListFeedback(const std::string& spool_dir) {
  const std::string dir = absl::StrCat(spool_dir, "/feedback/new");
  ASSIGN_OR_RETURN(std::vector<std::string> names, Names(dir, 0));
  // Fixed-width time and sequence first: name order is arrival order.
  std::sort(names.begin(), names.end());
  for (std::string& n : names) n = absl::StrCat(dir, "/", n);
  return names;
}

absl::StatusOr<FeedbackMessage> ReadFeedback(const std::string& path, uint64_t max_message_size) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  std::string data;
  const uint64_t limit = max_message_size + kMaxEnvelopeLine + 1;
  char buf[65536];
  absl::Status st;
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = base::ErrnoError(path, "read");
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > limit) {
      st = Malformed(path, absl::StrCat("larger than ", limit, " octets"));
      break;
    }
  }
  close(fd);
  RETURN_IF_ERROR(st);

  const size_t newline = data.find('\n');
  if (newline == std::string::npos) return Malformed(path, "no envelope line");
  if (newline > kMaxEnvelopeLine) return Malformed(path, "envelope line too long");
  if (data.size() - newline - 1 > max_message_size) {
    return Malformed(path, absl::StrCat("content over ", max_message_size, " octets"));
  }
  FeedbackMessage m;
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto error = parser.parse(data.data(), newline).get(root); error != simdjson::SUCCESS) {
    return Malformed(path, absl::StrCat("envelope: ", simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (root.get(object) != simdjson::SUCCESS) return Malformed(path, "envelope: not an object");
  const auto field_error = [&](std::string_view field, std::string_view expected) {
    return Malformed(path, absl::StrCat("envelope: \"", base::Sv(field), "\" must be ",
                                        base::Sv(expected)));
  };
  const auto get_string = [&](const char* field, std::string* out) -> absl::Status {
    std::string_view v;
    if (object[field].get(v) != simdjson::SUCCESS) return field_error(field, "a string");
    out->assign(v);
    return absl::OkStatus();
  };
  FeedbackEnvelope& e = m.envelope;
  if (object["received_at"].get(e.received_at_ms) != simdjson::SUCCESS) {
    return field_error("received_at", "an integer (ms since the epoch)");
  }
  RETURN_IF_ERROR(get_string("peer", &e.peer));
  RETURN_IF_ERROR(get_string("helo", &e.helo));
  RETURN_IF_ERROR(get_string("mail_from", &e.mail_from));
  simdjson::dom::array rcpts;
  if (object["rcpt_to"].get(rcpts) != simdjson::SUCCESS) {
    return field_error("rcpt_to", "an array of strings");
  }
  for (simdjson::dom::element r : rcpts) {
    std::string_view v;
    if (r.get(v) != simdjson::SUCCESS) return field_error("rcpt_to", "an array of strings");
    e.rcpt_to.emplace_back(v);
  }
  if (object["tls"].get(e.tls) != simdjson::SUCCESS) return field_error("tls", "true or false");
  m.content = data.substr(newline + 1);
  return m;
}

std::string PeerAddress(std::string_view peer) {
  absl::StatusOr<base::HostPort> hp = base::ParseHostPort(peer);
  return hp.ok() ? hp->host : std::string(peer);
}

}  // namespace volley::engine
