// config.h - volleyd's configuration: one TOML file, every key optional
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(Config c, LoadConfigFile("volley.toml"));
//   ASSIGN_OR_RETURN(Config c, ParseConfig(text, "volley.toml"));  // tests
//   Config c;                                                      // the defaults
//
// DESCRIPTION
//   Keys match docs/config.md one for one. A key the program does not know, a
//   value of the wrong type or out of range is an error naming the file, line
//   and key ("volley.toml:7: smtp.port: must be 1..65535"): a typo must never
//   silently fall back to a default on a machine that sends mail.
#ifndef VOLLEY_ENGINE_CONFIG_H_
#define VOLLEY_ENGINE_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/options.h"
#include "dns/router.h"
#include "engine/shaping.h"
#include "engine/smtp/client.h"
#include "engine/unsubscribe.h"
#include "metrics/classify.h"
#include "queue/suppression.h"

namespace volley::engine {

// How Volley uses STARTTLS with a destination (RFC 3207).
enum class TlsMode {
  kOff,            // never
  kOpportunistic,  // when offered; plaintext when not offered, refused or failing
  kRequired,       // always, without checking the certificate; else defer
  kVerify,         // required, and the certificate must chain to a trusted CA and
                   // name the host (tls_match, else the MX host name)
};

// TlsModeName - "off", "opportunistic", "required", "verify".
std::string_view TlsModeName(TlsMode mode);

// When a deferred recipient is tried again (engine/retry.h): after `initial`,
// doubling up to `max` (with jitter), until `max_age` after the job was queued.
// docs/config.md says why these differ from RFC 5321 4.5.4.1's suggestions.
struct RetryConfig {
  absl::Duration initial = absl::Minutes(5);
  absl::Duration max = absl::Hours(4);
  absl::Duration max_age = absl::Hours(72);
};

// What may differ between destinations: [smtp] sets the defaults for every one, and a
// [destination."NAME"] table overrides any of these keys for one. The names are the
// config keys. Timeouts default to RFC 5321 section 4.5.3.2.
struct DestinationPolicy {
  absl::Duration connect_timeout = absl::Seconds(30);
  absl::Duration greeting_timeout = absl::Minutes(5);
  absl::Duration ehlo_timeout = absl::Minutes(5);     // EHLO, HELO, STARTTLS, handshake
  absl::Duration mail_timeout = absl::Minutes(5);     // MAIL and RSET
  absl::Duration rcpt_timeout = absl::Minutes(5);
  absl::Duration data_timeout = absl::Minutes(2);     // the 354 reply to DATA
  // Longest wait for the server to take more of the message (each write of it).
  absl::Duration data_block_timeout = absl::Minutes(3);
  absl::Duration data_done_timeout = absl::Minutes(10);  // after the final dot or BDAT
  absl::Duration quit_timeout = absl::Seconds(5);
  // An idle connection with nothing to send is closed after this. Default: 5s.
  absl::Duration idle_timeout = absl::Seconds(5);
  // Connections open at once to the destination (key:
  // max_connections_per_destination). Default: 20.
  int max_connections = 20;
  // Connections being opened to the destination at once (connected, greeted,
  // EHLO and STARTTLS not yet done). More open as sessions get going and work is
  // still waiting: a destination with 20 messages waiting opens two, which
  // usually take all 20 before a third would be ready, instead of 20
  // connections of one message each (a TLS handshake apiece, on both sides).
  // Like Postfix's initial_destination_concurrency. Default: 2.
  int max_connections_opening = 2;
  // Messages (transactions) started per second, minute or hour ("3000/min"), and
  // new connections opened ("10/s"), each a token bucket (engine/shaping.h).
  // Default: "0", no limit.
  Rate max_message_rate;
  Rate max_connection_rate;
  // Messages sent over one connection before it is closed. Default: 1000.
  int max_messages_per_connection = 1000;
  // Recipients of one domain sent in one transaction when a job's message is the
  // same for every recipient (a personalised job sends one per transaction).
  // RFC 5321 4.5.3.1.8 requires servers to take 100. Default: 100.
  int max_recipients_per_transaction = 100;
  // Use PIPELINING (RFC 2920) and CHUNKING (RFC 3030) when the server offers them;
  // false for a server that breaks with one. Default: true.
  bool pipelining = true;
  bool chunking = true;
  // Transactions under way at once on one connection: above 1, the next
  // transaction's MAIL, RCPT and BDAT follow the last one's message without
  // waiting for its replies (with PIPELINING and CHUNKING only; smtp::ClientOptions).
  // A transaction pipelined behind a failed one is deferred, never bounced.
  // Default: 4 (docs/design-notes.md says why not more).
  int max_transactions_in_flight = 4;
  TlsMode tls = TlsMode::kOpportunistic;
  // With tls = "verify": names the server's certificate must carry (DNS names,
  // "*.example.test" wildcards as OpenSSL matches them). Empty: the MX host name;
  // a route to an address literal has none, so verify needs tls_match there.
  std::vector<std::string> tls_match;
  // Egress sources (Config::sources, by index) new connections bind to, taken
  // in weighted round robin (key: sources, by name). Empty: the system picks
  // the address and [smtp] ehlo_name is sent. Default: empty.
  std::vector<size_t> sources;
  // [retry]'s values, or the destination's retry_initial, retry_max and
  // retry_max_age (keys of [destination."NAME"] only).
  RetryConfig retry;
  // With [cluster] set, the destination's max_connections, max_message_rate
  // and max_connection_rate hold for the cluster's nodes together ("cluster"),
  // or for each node alone ("node"). Without [cluster], every limit is the
  // node's. Key: scope (of [destination."NAME"] only). Default: "cluster".
  enum class Scope { kCluster, kNode };
  Scope scope = Scope::kCluster;

  // TimeoutFor - how long a connection may wait for what the SMTP client awaits
  // (Postfix's xfer_timeouts[]): greeting_timeout for kGreeting, ehlo_timeout for
  // kEhlo (EHLO, HELO, STARTTLS) and kTlsHandshake, mail_timeout for kMail and kRset,
  // rcpt_timeout, data_timeout for kDataInit (the 354), data_done_timeout for
  // kDataDone (after the final dot or BDAT), quit_timeout, and idle_timeout for
  // kNone. The caller decides whether a kNone connection is idle at all (one with
  // work in hand waits on something else), and data_block_timeout, which bounds
  // writes rather than replies, is not a Wait.
  absl::Duration TimeoutFor(smtp::Wait wait) const;
};

// What a deferral of a given class (metrics/classify.h: rate_limited, policy, ...)
// does to its destination (docs/config.md, "Adaptive backoff").
enum class BackoffAction : uint8_t {
  kBackoff,  // halve the destination's connections (and message rate) for `period`,
             // once more for each further such reply, then back a step per period
  kSuspend,  // no transaction at the destination for `period`; what waits is deferred
  kBounce,   // the recipient is bounced, not deferred
};
std::string_view BackoffActionName(BackoffAction a);  // "backoff", "suspend", "bounce"

struct BackoffRule {
  std::string klass;  // a class of the [[classify]] rules
  BackoffAction action = BackoffAction::kBackoff;
  absl::Duration period = absl::Minutes(5);
};
inline constexpr size_t kMaxBackoffRules = 64;
// The rules without a [[backoff]] table: rate_limited replies (421 4.7.0 "try again
// later", 4.7.28, ...) back the destination off for 5 minutes.
std::vector<BackoffRule> DefaultBackoffRules();

struct SmtpConfig {
  // Remote port when routing by DNS. Default: 25.
  uint16_t port = 25;
  // Name sent in EHLO. Default: the machine's fully qualified name
  // (engine/host_name.h: gethostname(), then its canonical name).
  std::string ehlo_name;
  // Longest reply line accepted (RFC 5321 allows 512). Default: 4096.
  int max_reply_line = 4096;
  // Trusted CAs for tls = "verify" (a PEM file). Default: OpenSSL's system store.
  std::string tls_ca_file;
  // TLS sessions each shard keeps for resumption, one per server address and name
  // (engine/tls/tls.h); 0 = every handshake in full. Default: 1024.
  int tls_session_cache = 1024;
  // After a failed TLS handshake under "opportunistic", the destination is sent to
  // in plaintext for this long before STARTTLS is tried again. Default: 1h.
  absl::Duration tls_fallback_time = absl::Hours(1);
  DestinationPolicy defaults;
};

// [[source]]: an address connections leave from, with the name it says in EHLO
// (what receivers check against its reverse DNS) and its share of the
// connections among the sources of one destination.
struct EgressSource {
  std::string name;
  std::string address;    // an IPv4 or IPv6 literal, bound with port 0
  std::string ehlo_name;  // default: [smtp] ehlo_name
  int weight = 1;         // 1..1000
};
inline constexpr size_t kMaxSources = 256;

// DkimKeyConfig - one [[dkim]] table: one DKIM-Signature on every message whose
// From domain is `domain` or a subdomain of it (docs/dkim.md). Several tables for
// one domain give several signatures (RSA and Ed25519 side by side).
struct DkimKeyConfig {
  std::string domain;    // d=, lower case
  std::string selector;  // s=
  std::string key_file;  // PEM; the algorithm is the key's (RSA or Ed25519)
  std::string canonicalization = "relaxed/relaxed";  // header/body, c=
  // Fields signed when present; empty: dkim::DefaultSignedHeaders().
  std::vector<std::string> headers;
  // Fields given one extra h= entry so that no copy can be added after signing;
  // unset: dkim::DefaultOverSignedHeaders().
  std::optional<std::vector<std::string>> over_sign;
  absl::Duration expire_after = absl::ZeroDuration();  // x= after t=; 0 = no x=
};
inline constexpr size_t kMaxDkimKeys = 64;

// TokenKeyConfig - one [[token_key]]: a secret that signs (the first) or checks
// (all) the tokens in VERP addresses and unsubscribe links (engine/token).
struct TokenKeyConfig {
  std::string id;           // [A-Za-z0-9]{1,8}; written into every token
  std::string secret_file;  // at least 32 octets of secret
};
inline constexpr size_t kMaxTokenKeys = 16;
// [cluster] bounds: Redis servers listed (tried in order), a node's name, the
// node count expected_nodes may name.
inline constexpr size_t kMaxClusterRedisServers = 16;
inline constexpr size_t kMaxClusterNodeName = 64;
inline constexpr int kMaxClusterNodes = 1000;

struct DeliveryConfig {
  // Recipients taken from the queue and not yet finished, at most. Bounds memory.
  // Default: 20000.
  int window = 20000;
  // Delivery shards: threads, each with its own io_uring, connections and share
  // of the queue's partitions (queue.h). 0: one per CPU. At most
  // queue::kPartitions. Default: 0.
  int shards = 0;
  // SMTP connections open at once, all shards together, at most; 0: as many as
  // the file descriptor limit allows after volleyd's reserve (engine/fd_budget.h).
  // Default: 0.
  int max_connections = 0;
  // Bytes of rendered messages that transactions under way may hold, all
  // shards together (split evenly between them); at the bound a transaction
  // waits for bytes to be given back, nothing fails. A single larger message
  // still goes, alone. 0: no bound (engine/message_bytes.h). Default: 64 MiB.
  uint64_t max_message_bytes_in_flight = uint64_t{64} << 20;
  // Receive buffers (engine::kRecvBufferSize, 4 KiB each) in each shard's
  // provided buffer ring (engine/reactor/ring.h), shared by its connections:
  // only a connection whose reply is arriving holds one. A receive that finds
  // them all held falls back to a buffer of the connection's own, counted by
  // volley_receive_buffers_exhausted_total. Rounded up to a power of two;
  // 1..32768 (the kernel's bound). Default: 1024.
  int receive_buffers = 1024;
  // A destination (a route or site and its policy) with nothing queued, no
  // connection and no backoff, suspension, TLS fallback or down host to
  // remember is let go after this long, and made afresh if work comes for it
  // again: a shard holds what recent work needs, not every destination it has
  // seen since it started (with a long tail of domains, an ever-growing table
  // walked once a second). 1s..7d. Default: 10 minutes.
  absl::Duration forget_idle_destinations_after = absl::Minutes(10);
};

// [dns]: the resolver (servers, timeout, tries), the planner's address policy and
// limits, and the cache's bounds; each key documented where its option is
// (dns/resolver.h, dns/mx.h, dns/cache.h) and in docs/config.md.
struct DnsConfig {
  dns::ResolverOptions resolver;
  dns::RouterOptions router;
};

// [log]: when the delivery log is rotated and how many rotated files are kept
// (metrics/delivery_log.h, docs/delivery-log.md "Rotation").
struct DeliveryLogConfig {
  // Rotate once the file holds this many bytes; 0: never by size. Default: 1 GiB.
  uint64_t max_size = uint64_t{1} << 30;
  // Rotate before writing into a file whose first record is this old; "0s":
  // never by time. Default: 1d.
  absl::Duration max_age = absl::Hours(24);
  // Rotated files kept, at least 1; older ones are deleted. Default: 14.
  int keep = 14;
};

// [intake] (docs/jobs.md, "What volleyd waits for"): the spool's intake.
struct IntakeConfig {
  // A file in incoming/ modified more recently than this is not taken in yet:
  // it may still be being written (queue/spool.h, WRITERS). 0 turns this check
  // off (files must then be renamed in). Default: 1s (queue::kDefaultSettleTime).
  absl::Duration settle_time = absl::Seconds(1);
};

// [inbound] (docs/feedback.md): the SMTP listener for bounces and feedback
// reports (engine/inbound.h). Off while listen is empty.
struct InboundConfig {
  // Addresses to listen on, "IP:PORT" each. Default: none (off).
  std::vector<std::string> listen;
  // Recipient domains taken (any case); required with listen.
  std::vector<std::string> domains;
  uint64_t max_message_size = uint64_t{10} << 20;  // 10 MiB; SIZE advertises it
  int max_connections = 100;
  int max_connections_per_ip = 10;
  int max_recipients = 100;                         // per message
  absl::Duration timeout = absl::Minutes(5);        // idle client (RFC 5321 4.5.3.2)
  // STARTTLS certificate chain and key (PEM); offered when both are set.
  std::string tls_cert_file;
  std::string tls_key_file;
  int max_pending = 10000;                          // files waiting in feedback/new/
  // Messages one client address may send a minute; past it 450 4.7.1. 0: no limit.
  int max_messages_per_minute = 120;
  // Read, match and record what is stored (engine/feedback.h); false: only
  // store it, for a processor of the operator's own that reads feedback/new/.
  bool process = true;
  // Pause a job when its complaints reach this share of its delivered
  // recipients (0.003 = 0.3%), once min_delivered_for_rate were delivered;
  // 0 = never (engine/feedback.h).
  double pause_on_complaint_rate = 0;
  int min_delivered_for_rate = 1000;
};

// [suppression]: the suppression list (queue/suppression.h, docs/feedback.md).
struct SuppressionConfig {
  // Its own RocksDB folder, apart from the queue's. Default: "var/suppression".
  std::string path = "var/suppression";
  // block_cache, soft_bounce_limit, soft_bounce_window, soft_bounce_expiry,
  // scope; the defaults are SuppressionOptions'.
  queue::SuppressionOptions options;
};

struct Config {
  std::string spool_dir = "var/spool";
  std::string queue_dir = "var/queue";
  std::string log_dir = "var/log";
  SmtpConfig smtp;
  // [routes]: domain (or "*") -> "HOST:PORT". Until DNS routing lands, the
  // default sends everything to the local sink, so a default set-up can never
  // reach a real mail server.
  std::vector<std::pair<std::string, std::string>> routes = {{"*", "127.0.0.1:2525"}};
  // [destination."NAME"]: NAME is a recipient domain (exact, case-insensitive) or a
  // route's "HOST:PORT"; the policy is [smtp]'s with the table's keys applied.
  std::vector<std::pair<std::string, DestinationPolicy>> destinations;
  DnsConfig dns;
  RetryConfig retry;
  DeliveryConfig delivery;
  // [[source]]: egress sources; a destination uses those its `sources` names.
  std::vector<EgressSource> sources;
  // [metrics] (docs/metrics.md): listen, an IP literal and port, no
  // authentication: keep it on loopback. Default: "127.0.0.1:9464".
  std::string metrics_listen = "127.0.0.1:9464";
  // Destinations with per-destination series besides the configured ones. Default: 20.
  int metrics_top_destinations = 20;
  // Unfinished jobs with per-job series (the newest). Default: 100.
  int metrics_max_jobs = 100;
  // [admin] listen: the admin API (engine/admin.h, docs/volleyctl.md), an IP
  // literal and port. It has no authentication: keep it on loopback.
  // Default: "127.0.0.1:9465".
  std::string admin_listen = "127.0.0.1:9465";
  // [admin] max_connections: connections held at once; one more closes the
  // oldest that has not sent its request head (engine/http/server.h).
  // Default: 256.
  int admin_max_connections = 256;
  // [admin] request_timeout: to send the request head, again the body.
  // Default: 5s.
  absl::Duration admin_request_timeout = absl::Seconds(5);
  // [metrics] max_connections and request_timeout, as [admin]'s.
  // Defaults: 256, 5s.
  int metrics_max_connections = 256;
  absl::Duration metrics_request_timeout = absl::Seconds(5);
  // [metrics] keepalive_timeout: a scraper's connection kept idle for its
  // next scrape. Default: 75s.
  absl::Duration metrics_keepalive_timeout = absl::Seconds(75);
  // [queue]
  bool sync_outcomes = false;
  // [queue] min_free_space: intake takes no job in while the queue's or the
  // spool's filesystem has less free (queue/README.md, "Backpressure and disk
  // errors"). Default 256 MiB: room for the write-ahead log up to
  // QueueOptions::max_wal_bytes (128 MiB), a flush of every memtable (32 MiB)
  // and delivery's outcomes meanwhile. 0 turns the check off.
  uint64_t min_free_space = uint64_t{256} << 20;
  // [queue] max_open_files: RocksDB's table files kept open at once (its default
  // keeps all, which no descriptor budget can count). Reserved from the
  // descriptor limit before connections get theirs. Default: 256.
  int queue_max_open_files = 256;
  DeliveryLogConfig delivery_log;
  // [[classify]]: the rules that name why a recipient bounced or was deferred,
  // first match wins (metrics/classify.h). A config with any [[classify]] table
  // replaces the whole default table.
  std::vector<metrics::ClassifyRule> classify = metrics::DefaultClassifyRules();
  // [[backoff]]: class -> action (above); a config with any replaces the default.
  std::vector<BackoffRule> backoff = DefaultBackoffRules();
  std::vector<DkimKeyConfig> dkim;
  std::vector<TokenKeyConfig> token_keys;
  // [verp] domain: MAIL FROM is b-<token>@verp_domain (a job's return_path wins);
  // empty = off.
  std::string verp_domain;
  // [unsubscribe]: the one-click unsubscribe endpoint (engine/unsubscribe.h,
  // docs/feedback.md); listen empty = off. Needs a [[token_key]].
  UnsubscribeOptions unsubscribe;
  InboundConfig inbound;
  SuppressionConfig suppression;
  IntakeConfig intake;
  // [cluster]: limits shared with other volleyd nodes through Redis
  // (cluster/options.h, docs/cluster.md); off when redis is empty.
  cluster::Options cluster;
};

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name);
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// AcceptedConfigKeys - every key ParseConfig takes, as "SECTION.KEY", sorted:
// "smtp.port", "dkim.domain" for a key of [[dkim]] tables, "destination.tls" for
// a key of every [destination."NAME"] table. [routes] is left out: its keys are
// domains. tests/unit/engine/config_keys_test.cc checks docs/config.md against it.
std::vector<std::string> AcceptedConfigKeys();

// ParseDuration - "500ms", "30s", "5m", "4h", "3d" (a number and a unit).
absl::StatusOr<absl::Duration> ParseDuration(std::string_view text);

// ParseSize - a byte count: "1048576", "512KiB", "256MiB", "1GiB", "2TiB" (binary
// units only: "MB" would leave the reader guessing).
absl::StatusOr<uint64_t> ParseSize(std::string_view text);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_CONFIG_H_
