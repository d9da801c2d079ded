#include "cluster/redis_link.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/host_port.h"

namespace volley::cluster {
namespace {

timeval AtLeastOneMs(absl::Duration d) {
  const int64_t us = std::max<int64_t>(1000, absl::ToInt64Microseconds(d));
  return timeval{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
}

// Copy - hiredis's reply as ours (hiredis's is freed by the caller).
RedisReply Copy(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Copy(r->element[i]));
      break;
    default:
      break;
  }
  return out;
}

bool IsNoScript(const RedisReply& r) {
  return r.is_error() && r.text.compare(0, 8, "NOSCRIPT") == 0;
}

}  // namespace

RedisLink::RedisLink(std::vector<std::string> servers, absl::Duration timeout)
    : servers_(std::move(servers)), timeout_(timeout) {}

RedisLink::~RedisLink() { Close(); }

size_t RedisLink::AddScript(std::string body) {
  scripts_.push_back(std::move(body));
  shas_.clear();
  return scripts_.size() - 1;
}

RedisCommand RedisLink::Script(size_t index, const std::vector<std::string>& keys,
                               const std::vector<std::string>& args) const {
  RedisCommand c;
  c.script_index = static_cast<int>(index);
  c.words.reserve(3 + keys.size() + args.size());
  c.words.push_back("EVALSHA");
  c.words.push_back("");  // the SHA1, known once loaded
  c.words.push_back(absl::StrCat(keys.size()));
  c.words.insert(c.words.end(), keys.begin(), keys.end());
  c.words.insert(c.words.end(), args.begin(), args.end());
  return c;
}

void RedisLink::Close() {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
}

absl::Status RedisLink::Connect() {
  if (context_ != nullptr) return absl::OkStatus();
  if (servers_.empty()) return absl::FailedPreconditionError("no Redis server configured");
  std::vector<std::string> failures;
  const size_t first = current_;
  for (size_t tried = 0; tried < servers_.size(); ++tried) {
    const size_t i = (first + tried) % servers_.size();
    current_ = i;
    absl::StatusOr<base::HostPort> hp = base::ParseHostPort(servers_[i]);
    if (!hp.ok()) {
      failures.push_back(absl::StrCat(servers_[i], ": ", hp.status().message()));
      continue;
    }
    redisContext* c = redisConnectWithTimeout(hp->host.c_str(), hp->port, AtLeastOneMs(timeout_));
    if (c == nullptr || c->err != 0) {
      failures.push_back(
          absl::StrCat(servers_[i], ": ", c == nullptr ? "out of memory" : c->errstr));
      if (c != nullptr) redisFree(c);
      continue;
    }
    // Bounds each send and receive; RoundTrip bounds the whole exchange.
    redisSetTimeout(c, AtLeastOneMs(timeout_));
    context_ = c;
    const absl::Status loaded = LoadScripts();
    if (loaded.ok()) return absl::OkStatus();
    failures.push_back(absl::StrCat(servers_[i], ": ", loaded.message()));
    Close();
  }
  return absl::UnavailableError(absl::StrJoin(failures, "; "));
}

absl::Status RedisLink::LoadScripts() {
  if (scripts_.empty()) return absl::OkStatus();
  std::vector<RedisCommand> loads;
  for (const std::string& body : scripts_) loads.push_back({{"SCRIPT", "LOAD", body}, -1});
  absl::StatusOr<std::vector<RedisReply>> replies = Exchange(loads);
  if (!replies.ok()) return replies.status();
  std::vector<std::string> shas;
  for (const RedisReply& r : *replies) {
    if (r.type != RedisReply::Type::kString) {
      return absl::InternalError(absl::StrCat("SCRIPT LOAD refused: ", r.text));
    }
    shas.push_back(r.text);
  }
  shas_ = std::move(shas);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RedisReply>> RedisLink::RoundTrip(
    const std::vector<RedisCommand>& commands) {
  if (context_ == nullptr) return absl::UnavailableError("not connected");
  absl::StatusOr<std::vector<RedisReply>> replies = Exchange(commands);
  if (!replies.ok()) return replies;
  std::vector<size_t> refused;
  for (size_t i = 0; i < replies->size(); ++i) {
    if (IsNoScript((*replies)[i])) refused.push_back(i);
  }
  if (refused.empty()) return replies;
  // Redis lost the scripts (restarted, or SCRIPT FLUSH): load them again and
  // send only what was refused, once; a command that ran is not sent again.
  if (absl::Status s = LoadScripts(); !s.ok()) {
    Close();
    return s;
  }
  std::vector<RedisCommand> again;
  again.reserve(refused.size());
  for (size_t i : refused) again.push_back(commands[i]);
  absl::StatusOr<std::vector<RedisReply>> second = Exchange(again);
  if (!second.ok()) return second.status();
  for (size_t j = 0; j < refused.size(); ++j) (*replies)[refused[j]] = std::move((*second)[j]);
  return replies;
}

absl::StatusOr<std::vector<RedisReply>> RedisLink::Exchange(
    const std::vector<RedisCommand>& commands) {
  if (context_ == nullptr) return absl::UnavailableError("not connected");
  const absl::Time deadline = absl::Now() + timeout_;
  const auto fail = [this](std::string why) {
    Close();
    // The next Connect starts with the next server: the one that failed is
    // the least likely to answer now.
    if (!servers_.empty()) current_ = (current_ + 1) % servers_.size();
    return absl::UnavailableError(std::move(why));
  };
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
  for (const RedisCommand& c : commands) {
    argv.clear();
    argvlen.clear();
    for (size_t w = 0; w < c.words.size(); ++w) {
      const std::string* word = &c.words[w];
      if (w == 1 && c.script_index >= 0) {
        if (static_cast<size_t>(c.script_index) >= shas_.size()) {
          return fail("script not loaded");
        }
        word = &shas_[static_cast<size_t>(c.script_index)];
      }
      argv.push_back(word->data());
      argvlen.push_back(word->size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(),
                               argvlen.data()) != REDIS_OK) {
      return fail(absl::StrCat("cannot queue a command: ", context_->errstr));
    }
  }
  ++round_trips_;
  commands_ += commands.size();

  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) {
      return fail(absl::StrCat("write: ", context_->errstr));
    }
    if (absl::Now() > deadline) return fail("no answer in time (write)");
  }

  const size_t max_bytes = kMaxReplyBytesPerCommand * std::max<size_t>(1, commands.size());
  size_t received = 0;
  std::vector<RedisReply> replies;
  replies.reserve(commands.size());
  while (replies.size() < commands.size()) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(context_, &raw) != REDIS_OK) {
      return fail(absl::StrCat("unreadable reply: ", context_->errstr));
    }
    if (raw != nullptr) {
      replies.push_back(Copy(static_cast<redisReply*>(raw)));
      freeReplyObject(raw);
      continue;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return fail("no answer in time");
    pollfd p{context_->fd, POLLIN, 0};
    const int ready =
        ::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return fail(absl::StrCat("poll: ", std::strerror(errno)));
    if (ready == 0) return fail("no answer in time");
    // The reader's unparsed length grows by exactly what this read took.
    const size_t before = context_->reader->len;
    if (redisBufferRead(context_) != REDIS_OK) {
      return fail(absl::StrCat("read: ", context_->errstr));
    }
    received += context_->reader->len - before;
    if (received > max_bytes) {
      return fail(absl::StrCat("replies larger than ", max_bytes, " bytes: refused"));
    }
  }
  return replies;
}

}  // namespace volley::cluster
