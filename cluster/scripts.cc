#include "cluster/scripts.h"

#include <string>

namespace volley::cluster {

std::string PoolKey(std::string_view prefix, std::string_view pool, std::string_view what) {
  std::string key;
  key.reserve(prefix.size() + pool.size() + what.size() + 3);
  key.append(prefix).append("{").append(pool).append("}:").append(what);
  return key;
}

std::string NodesKey(std::string_view prefix) { return std::string(prefix) + "nodes"; }

// The askers' hash of the fairness rule, one function for both scripts that
// share it (GCRA and leases), so that their bookkeeping cannot drift apart:
// records this node's want (with when, on the script's clock), forgets askers
// older than `window` (same clock), keeps the hash `expire_ms` and returns the
// wants of the askers left, this one's included.
constexpr std::string_view kRecordWantFunction = R"lua(
local function record_want(key, node, want, now, window, expire_ms)
  redis.call('HSET', key, node, string.format('%d:%d', want, now))
  local sum = 0
  local askers = redis.call('HGETALL', key)
  for i = 1, #askers, 2 do
    local w, at = string.match(askers[i + 1], '^(%d+):(%d+)$')
    if w == nil or now - tonumber(at) > window then
      redis.call('HDEL', key, askers[i])
    else
      sum = sum + tonumber(w)
    end
  end
  redis.call('PEXPIRE', key, expire_ms)
  return sum
end
)lua";

// GCRA take-N. Keeps one number per limited rate: the theoretical arrival
// time (TAT, microseconds of Redis's clock) of the next permit were the rate
// used to the full. Granting k permits moves the TAT k intervals on; the
// limit is that the TAT stays within `burst` intervals of now, so over any
// time T at most rate x T + burst permits are granted, whoever asks. Partial
// grants: a node asking for n gets what fits.
//
// Fairness between nodes: every asker's last want is kept (with when) in a
// small hash; when the wants of the nodes that asked within the window add up
// to more than a `share` (what one round of asks should bring: a node's ask
// at most), each gets at most its proportional part of a share, so two hungry
// nodes asking a tenth of a second apart split the rate instead of the first
// one taking all that accumulated. Room beyond one share (built up while the
// asks came late) goes to whoever asks, on top of its part: capped at its
// part alone, late rounds would leave that room unused until it overflowed
// the burst, and the rate would be lost. The cap shapes who gets what; the
// TAT alone bounds the total.
//
// Atomic: the TAT read, the check and the TAT written are one script, so two
// nodes can never both take the same room.
constexpr std::string_view kGcraTakeBody = R"lua(
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = math.floor(tonumber(ARGV[3]))
local node = ARGV[4]
local window = tonumber(ARGV[5])
if rate == nil or rate <= 0 or burst == nil or burst < 1 or n == nil or n < 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / rate

local share = math.min(burst, tonumber(ARGV[6]) or burst)
if share < 1 then share = burst end

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local room = math.floor(burst - (tat - now) / interval + 1e-6)

local cap = n
local sum = record_want(KEYS[2], node, n, now, window, math.ceil(window / 1000) + 1000)
if sum > share then cap = math.ceil(share * n / sum) + math.max(0, room - share) end
local k = math.min(n, cap, room)
if k < 1 then return 0 end
tat = tat + k * interval
redis.call('SET', KEYS[1], string.format('%d', math.ceil(tat)),
           'PX', math.ceil((tat - now) / 1000) + 1000)
return k
)lua";

// Connection leases. Keeps a sorted set per destination whose members are
// leases "NODE#i", scored by their expiry (milliseconds of Redis's clock).
// Each call drops the expired (a node that died stopped renewing: its leases
// go back after the lease ttl), gives back this node's beyond what it keeps
// (never one its connections still use: `open`), renews the rest, and takes
// free ones while the set holds fewer than `max`. Fairness as in the GCRA
// script: when the nodes' wants add up to more than `max`, each may use at
// most its proportional part (at least one), and the node closes connections
// above it as their transactions end, which frees leases for the others.
//
// Returns {held, usable, in the set}: the third tells a holder the set is full,
// so that it asks as often as the waiting nodes do (a node holding every
// lease would otherwise hear of a newcomer's want only at its next renewal).
//
// Atomic: counting the set and adding to it are one script, so the set never
// holds more than `max` leases, however many nodes ask at once.
constexpr std::string_view kLeaseBody = R"lua(
local node = ARGV[1]
local want = math.max(0, math.floor(tonumber(ARGV[2]) or 0))
local open = math.max(0, math.floor(tonumber(ARGV[3]) or 0))
local max = math.max(0, math.floor(tonumber(ARGV[4]) or 0))
local ttl = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
local release_all = ARGV[7] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)

local cap = want
if release_all then
  redis.call('HDEL', KEYS[2], node)
else
  local sum = record_want(KEYS[2], node, want, now, window, window + 1000)
  if sum > max and want > 0 then cap = math.max(1, math.floor(max * want / sum)) end
end
local target = math.min(want, cap, max)
local keep = math.max(target, open)
if release_all then keep = 0 end

local prefix = node .. '#'
local mine = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, #prefix) == prefix then
    local i = string.match(string.sub(m, #prefix + 1), '^(%d+)$')
    if i ~= nil then table.insert(mine, tonumber(i)) end
  end
end
table.sort(mine)
while #mine > keep do
  redis.call('ZREM', KEYS[1], prefix .. mine[#mine])
  table.remove(mine)
end
local expiry = now + ttl
local held = {}
for _, i in ipairs(mine) do
  redis.call('ZADD', KEYS[1], expiry, prefix .. i)
  held[i] = true
end
local total = redis.call('ZCARD', KEYS[1])
local i = 0
while #mine < target and total < max do
  if not held[i] then
    redis.call('ZADD', KEYS[1], expiry, prefix .. i)
    held[i] = true
    table.insert(mine, i)
    total = total + 1
  end
  i = i + 1
end
if total > 0 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
return {#mine, math.min(#mine, target), total}
)lua";

const std::string kGcraTakeText = std::string(kRecordWantFunction).append(kGcraTakeBody);
const std::string kLeaseText = std::string(kRecordWantFunction).append(kLeaseBody);
const std::string_view kGcraTakeScript = kGcraTakeText;
const std::string_view kLeaseScript = kLeaseText;

// Node heartbeat. Keeps a sorted set of node names scored by their last
// heartbeat (milliseconds of Redis's clock); the live nodes are those seen
// within the ttl. The fallback share divides by the count last returned.
// Atomic so that the count returned includes this node's own beat.
const std::string_view kHeartbeatScript = R"lua(
local node = ARGV[1]
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], node)
else
  redis.call('ZADD', KEYS[1], now, node)
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
)lua";

// Shared backoff. Keeps per destination {level, step_at, period, reason}
// (step_at: microseconds of Redis's clock when the level steps down one).
// The level decays by one every period past step_at; a node reporting a
// level above the decayed one raises it (with its reason). The hash expires
// when the level would have decayed to 0. Atomic so that two nodes raising
// at once keep the higher level, not the last writer's.
const std::string_view kBackoffScript = R"lua(
local reported = tonumber(ARGV[1]) or -1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = redis.call('HMGET', KEYS[1], 'level', 'step_at', 'period', 'reason')
local level = tonumber(cur[1]) or 0
local step_at = tonumber(cur[2]) or now
local period = tonumber(cur[3]) or 0
local reason = cur[4] or ''
if level > 0 and now >= step_at then
  if period > 0 then
    local steps = math.floor((now - step_at) / period) + 1
    level = math.max(0, level - steps)
    step_at = step_at + steps * period
  else
    level = 0
  end
end
if reported > level then
  level = reported
  step_at = now + math.max(0, tonumber(ARGV[2]) or 0)
  period = math.max(0, tonumber(ARGV[3]) or 0)
  reason = ARGV[4] or ''
  redis.call('HSET', KEYS[1], 'level', level, 'step_at', string.format('%d', step_at),
             'period', string.format('%d', period), 'reason', reason)
  local ends = step_at + math.max(0, level - 1) * period
  redis.call('PEXPIRE', KEYS[1], math.ceil((ends - now) / 1000) + 1000)
end
if level <= 0 then return {0, 0, 0, ''} end
return {level, string.format('%d', step_at - now), string.format('%d', period), reason}
)lua";

}  // namespace volley::cluster
