// NAME
//   reload.h - SIGHUP: read the config file again, check it, hand it to the shards
//
// SYNOPSIS
//   BlockReloadSignal();                       // main, before any thread exists
//
//   ConfigReloader reloader(path, text, start_config, start_credentials, publish,
//                           &reload_metrics);
//   ReloadThread thread(&reloader);
//   RETURN_IF_ERROR(thread.Start());           // waits for SIGHUP on its own thread
//   ...
//   thread.Stop();
//
//   ASSIGN_OR_RETURN(std::vector<ConfigChange> changes, DiffConfigText(old_text, new_text, path));
//   Config running = MergeReloadable(running, next);
//
// DESCRIPTION
//   SIGHUP is blocked in every thread (BlockReloadSignal, before the first
//   thread starts, so that threads made by libraries inherit the mask and a
//   SIGHUP that arrives during start-up waits instead of killing volleyd). One
//   thread, ReloadThread, reads it from a signalfd and calls
//   ConfigReloader::Reload there: reading the file, parsing and every check
//   (routes, [[classify]] patterns, DKIM key files) happen off the delivery
//   threads.
//
//   A reload changes what MergeReloadable takes from the new file: [routes],
//   [destination."NAME"] tables, [smtp]'s per-destination defaults (limits,
//   rates, connections, timeouts, TLS policy...) and tls_fallback_time,
//   [retry], [[backoff]], [[classify]], [[dkim]], and the feedback loop's
//   policy: [suppression] soft_bounce_limit, soft_bounce_window,
//   soft_bounce_expiry and scope, [inbound] pause_on_complaint_rate and
//   min_delivered_for_rate (published to the suppression list and the
//   feedback processor, which take no lock for it: SuppressionList::SetPolicy,
//   FeedbackProcessor::SetPolicy). Every other key keeps its running
//   value and, when the file changes it, is logged "KEY changed: restart
//   volleyd to apply" (IsReloadable names which is which; docs/config.md
//   lists them).
//
//   Every reload reads the [[dkim]] key files again, on the reloader's thread
//   (a key rewritten in place is taken too), and publishes them as the
//   generation's Credentials, with the token keys volleyd started with
//   (Credentials::ForReload). Each shard signs with them from its next message
//   (Composer::SetCredentials); intake's job check follows them too (a job
//   with one-click unsubscribe needs a key for its From domain).
//
//   The result is one immutable LiveConfig per reload, handed to each shard
//   through its ConfigMailbox; a shard applies it at the start of a loop turn
//   (engine/shard.h, ApplyConfig), so the delivery path takes no lock and
//   shares nothing mutable. Connections and transactions under way are never
//   cut: see ApplyConfig.
//
// CONTRACT
//   ConfigReloader::Reload runs on one thread at a time (ReloadThread's).
//   A LiveConfig never changes after it is published. Generations are kept
//   alive (ConfigReloader::generations_, each shard's own list) for the life
//   of the process, because recipients and connections made under an older
//   one point into it.
//
// BOUNDS
//   kReloadMailboxCapacity generations wait per shard at most (a shard takes
//   them every loop turn; only the newest matters). Each reload keeps one
//   Config in memory until volleyd stops (XXX(memory): a few KiB to a few MiB
//   with big route tables; freeing it needs to know no recipient or
//   connection still points into it).
//
// DIAGNOSTICS
//   Refused: "config: FILE:LINE: KEY: REASON (reload refused; the running
//   config is kept)", the same text as a start-up config error. Applied:
//   "config reloaded from FILE (N changes: KEY, KEY, ...)", and before it
//   "KEY changed: restart volleyd to apply" per restart-only key. Without
//   --config: "SIGHUP: started without --config: nothing to reload".
#ifndef VOLLEY_ENGINE_RELOAD_H_
#define VOLLEY_ENGINE_RELOAD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dns/routes.h"
#include "engine/config.h"
#include "engine/reactor/mailbox.h"
#include "metrics/classify.h"
#include "metrics/metrics.h"

namespace volley::engine {

class Credentials;  // engine/compose.h

// LiveConfig - one generation of the running config, immutable once made.
struct LiveConfig {
  Config config;  // restart-only keys as volleyd started with them
  std::unique_ptr<const dns::StaticRoutes> routes;
  std::unique_ptr<const metrics::Classifier> classifier;
  // The [[dkim]] keys read by this reload, with the start-up token keys
  // (Credentials::ForReload). Null: keep signing with the keys in hand.
  std::shared_ptr<const Credentials> credentials;
  // [routes] differs from start-up's: a route's domains may now sit in
  // several shards' partitions (queued under the old routes), so its limits
  // are shared between shards as a DNS site's are (engine/boards.h).
  bool routes_changed = false;
  uint64_t generation = 0;  // 1 for the first reload
};
using ConfigMailbox = reactor::Mailbox<std::shared_ptr<const LiveConfig>>;
inline constexpr size_t kReloadMailboxCapacity = 8;

// ReadConfigText - the file's text; NotFound "PATH: cannot read config file"
// (LoadConfigFile's words) when it cannot be read.
absl::StatusOr<std::string> ReadConfigText(const std::string& path);

// MakeLiveConfig - compile `config`'s routes and [[classify]] rules; errors
// name the route or rule. `credentials` goes into the generation as it is.
absl::StatusOr<std::shared_ptr<const LiveConfig>> MakeLiveConfig(
    Config config, uint64_t generation, bool routes_changed,
    std::shared_ptr<const Credentials> credentials = nullptr);

// ConfigChange - one key whose value differs between two config files:
// "smtp.max_message_rate", "destination.\"b.test\".max_connections_per_destination",
// "routes.\"*\"", "classify" (an array of tables counts as one key).
struct ConfigChange {
  std::string key;
  bool needs_restart = false;
};

// IsReloadable - a reload applies `key` (a ConfigChange key) while running.
bool IsReloadable(std::string_view key);

// DiffConfigText - the keys whose values differ between two config files:
// sections and keys in toml++'s (sorted) order, the running file's first,
// then those only the new one has. Both must parse (ParseConfig); a key set to its default in one file and
// left out of the other counts as changed. An error only when one does not parse.
absl::StatusOr<std::vector<ConfigChange>> DiffConfigText(std::string_view running,
                                                        std::string_view next,
                                                        std::string_view file_name);

// MergeReloadable - `running` with the reloadable keys taken from `next`.
Config MergeReloadable(const Config& running, const Config& next);

// BlockReloadSignal - block SIGHUP in the calling thread and so in every thread
// it starts later. main calls it first, before any library starts a thread.
void BlockReloadSignal();

class ConfigReloader {
 public:
  // publish: hands a checked generation to the shards (and intake's
  // partitioner); called on the reloader's thread.
  using Publish = std::function<void(const std::shared_ptr<const LiveConfig>&)>;

  // path empty: volleyd runs on its defaults, nothing to reload. text: the
  // file as volleyd started with it; running: the config it started with;
  // running_credentials: the keys it started with (their token keys go into
  // every generation's Credentials).
  ConfigReloader(std::string path, std::string text, const Config& running,
                 const Credentials& running_credentials, Publish publish,
                 metrics::ReloadMetrics* metrics);
  ~ConfigReloader();

  // Reload - read the file again and apply it, or refuse it; each logged.
  // The status is what was logged (tests); volleyd runs on either way.
  absl::Status Reload();

 private:
  const std::string path_;
  const std::string start_text_;  // restart-only keys are compared with it
  std::string applied_text_;      // reloadable keys are compared with it
  const Config start_;
  std::unique_ptr<const Credentials> start_credentials_;
  Publish publish_;
  metrics::ReloadMetrics* metrics_;
  std::vector<std::shared_ptr<const LiveConfig>> generations_;  // see CONTRACT
};

// ReloadThread - waits for SIGHUP (a signalfd) and runs the reloader. Start
// fails only when the signalfd or eventfd cannot be made.
class ReloadThread {
 public:
  explicit ReloadThread(ConfigReloader* reloader) : reloader_(reloader) {}
  ~ReloadThread() { Stop(); }
  ReloadThread(const ReloadThread&) = delete;
  ReloadThread& operator=(const ReloadThread&) = delete;

  absl::Status Start();
  void Stop();

 private:
  void Loop();
  ConfigReloader* reloader_;
  int signal_fd_ = -1;
  std::unique_ptr<reactor::EventFd> stop_;
  std::thread thread_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_RELOAD_H_
