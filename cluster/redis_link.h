// redis_link.h - the cluster agent's connection to Redis: one batch of
// commands, one round trip, within a deadline
//
// SYNOPSIS
//   RedisLink link({"127.0.0.1:6379", "127.0.0.1:6380"}, absl::Milliseconds(200));
//   const size_t take = link.AddScript(kGcraTakeScript);   // before the first Connect
//   RETURN_IF_ERROR(link.Connect());        // the first server that answers; scripts loaded
//   std::vector<RedisCommand> batch;
//   batch.push_back(link.Script(take, {"volley:{pool}:rate:msg"}, {"50", "5", "5"}));
//   ASSIGN_OR_RETURN(std::vector<RedisReply> replies, link.RoundTrip(batch));
//
// DESCRIPTION
//   A small owner of one hiredis context (Debian's libhiredis: Redis's own C
//   client, so the protocol is not ours to get wrong). Its synchronous API,
//   not the asynchronous one: the link is used by the cluster agent's thread
//   alone, which has nothing else to do while Redis answers, so an event loop
//   would add machinery and no concurrency; the shards, which must never
//   wait, never touch it. Commands are pipelined (appended, written at once,
//   then the replies read): one round trip per batch, not one per destination.
//
//   Servers are tried in order, from the one used last; a link that failed
//   stays down until the next Connect, which starts with the server after
//   the one that failed and which the agent calls at most once per batch
//   interval, so a dead Redis costs at most one connect timeout per server
//   per batch.
//
//   Scripts are loaded with SCRIPT LOAD when the link connects and called by
//   their SHA1 (EVALSHA). A reply NOSCRIPT (Redis restarted, or SCRIPT FLUSH)
//   loads them again and sends again only the commands refused so: a command
//   that ran is never sent twice (a script grants permits; twice would grant
//   twice).
//
// LIMITS
//   A round trip takes at most `timeout` (connect included in Connect's own
//   `timeout` per server), and reads at most kMaxReplyBytesPerCommand bytes
//   per command sent: a reply larger than that is refused and the link
//   closed, since no script of ours answers more than a few numbers.
//
// CONTRACT
//   One thread at a time.
#ifndef VOLLEY_CLUSTER_REDIS_LINK_H_
#define VOLLEY_CLUSTER_REDIS_LINK_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;

namespace volley::cluster {

// The bound on the bytes one command's reply may take (see LIMITS).
inline constexpr size_t kMaxReplyBytesPerCommand = 64 * 1024;

// RedisReply - one reply, copied out of hiredis's: integers, strings, errors
// and arrays of them.
struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string text;  // a string, a status or an error
  std::vector<RedisReply> elements;

  bool is_error() const { return type == Type::kError; }
  // The integer of an integer reply, or of an array's element i; `fallback`
  // for anything else.
  int64_t Int(int64_t fallback = 0) const { return type == Type::kInteger ? integer : fallback; }
  int64_t IntAt(size_t i, int64_t fallback = 0) const {
    return type == Type::kArray && i < elements.size() ? elements[i].Int(fallback) : fallback;
  }
};

// RedisCommand - one command's words; script_index names the script an
// EVALSHA calls (words[1] is filled with its SHA1 when sent), -1 for others.
struct RedisCommand {
  std::vector<std::string> words;
  int script_index = -1;
};

class RedisLink {
 public:
  RedisLink(std::vector<std::string> servers, absl::Duration timeout);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // AddScript - a Lua script to load on every connect; its index for Script.
  size_t AddScript(std::string body);
  // Script - an EVALSHA of script `index` with these keys and arguments.
  RedisCommand Script(size_t index, const std::vector<std::string>& keys,
                      const std::vector<std::string>& args) const;

  // Connect - when not connected: each server in turn, from the one used
  // last, until one connects and loads the scripts. The error names each
  // server tried and why it failed.
  absl::Status Connect();
  bool connected() const { return context_ != nullptr; }
  // The server connected to, or tried last.
  const std::string& address() const { return servers_.empty() ? empty_ : servers_[current_]; }
  void Close();

  // RoundTrip - the commands pipelined, their replies in order. An error
  // (timeout, closed, a reply too large or unreadable) closes the link: the
  // caller cannot know which commands ran.
  absl::StatusOr<std::vector<RedisReply>> RoundTrip(const std::vector<RedisCommand>& commands);

  // Round trips and commands sent since construction (a NOSCRIPT resend
  // and script loads included).
  uint64_t round_trips() const { return round_trips_; }
  uint64_t commands() const { return commands_; }

 private:
  absl::StatusOr<std::vector<RedisReply>> Exchange(const std::vector<RedisCommand>& commands);
  absl::Status LoadScripts();

  const std::vector<std::string> servers_;
  const absl::Duration timeout_;
  const std::string empty_;
  size_t current_ = 0;
  redisContext* context_ = nullptr;
  std::vector<std::string> scripts_;
  std::vector<std::string> shas_;  // of scripts_, once loaded
  uint64_t round_trips_ = 0;
  uint64_t commands_ = 0;
};

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_REDIS_LINK_H_
