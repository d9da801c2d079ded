// reload.cc - SIGHUP: the diff of two config files, the merge, the reloader and its thread.
#include "engine/reload.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/toml_reader.h"
#include "engine/compose.h"
#include "toml++/toml.h"

namespace volley::engine {
namespace {

// Render - a node as TOML text: two nodes are equal when their texts are.
std::string Render(const toml::node& node) {
  std::ostringstream out;
  node.visit([&out](const auto& n) { out << n; });
  return out.str();
}

std::string Quoted(std::string_view name) { return absl::StrCat("\"", base::Sv(name), "\""); }

// DiffTables - the keys of `a` and `b` (tables named `prefix`) whose values
// differ; `depth` more levels of tables are walked into key by key.
void DiffTables(const toml::table* a, const toml::table* b, const std::string& prefix, int depth,
                std::vector<std::string>* out) {
  static const toml::table kEmpty;
  if (a == nullptr) a = &kEmpty;
  if (b == nullptr) b = &kEmpty;
  const auto key_of = [&](std::string_view k) {
    // Sections' own keys are bare words; [routes] and [destination] keys are
    // names, quoted as the file would quote them.
    const bool named = prefix == "routes" || prefix == "destination";
    return absl::StrCat(base::Sv(prefix), ".", named ? Quoted(k) : std::string(k));
  };
  const auto one = [&](std::string_view k, const toml::node* x, const toml::node* y) {
    if (x != nullptr && y != nullptr && depth > 0 && x->is_table() && y->is_table()) {
      DiffTables(x->as_table(), y->as_table(), key_of(k), depth - 1, out);
      return;
    }
    if (x == nullptr || y == nullptr || x->type() != y->type() || Render(*x) != Render(*y)) {
      out->push_back(key_of(k));
    }
  };
  for (const auto& [k, x] : *a) one(k.str(), &x, b->get(k.str()));
  for (const auto& [k, y] : *b) {
    if (a->get(k.str()) == nullptr) one(k.str(), nullptr, &y);
  }
}

// PolicyKey - [smtp] key that is a destination's default (a key every
// [destination."NAME"] table may set too).
bool IsPolicyKey(std::string_view key) {
  static const std::vector<std::string>* const kDestinationKeys = [] {
    auto* keys = new std::vector<std::string>;
    for (const std::string& k : AcceptedConfigKeys()) {
      if (absl::StartsWith(k, "destination.")) keys->push_back(k.substr(12));
    }
    return keys;
  }();
  return std::find(kDestinationKeys->begin(), kDestinationKeys->end(), key) !=
         kDestinationKeys->end();
}

}  // namespace

absl::StatusOr<std::string> ReadConfigText(const std::string& path) {
  std::ifstream in(path);
  // LoadConfigFile's wording, so that both say the same of one file.
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsReloadable(std::string_view key) {
  for (std::string_view section :
       {"routes", "destination", "retry", "backoff", "classify", "dkim"}) {
    if (key == section || (key.size() > section.size() &&
                           key.substr(0, section.size()) == section &&
                           key[section.size()] == '.')) {
      return true;
    }
  }
  // The feedback loop's policy (engine/feedback.h); the list's storage keys
  // (path, block_cache, filter_bits_per_key) and the listener's stay restart-only.
  for (std::string_view k :
       {"suppression.soft_bounce_limit", "suppression.soft_bounce_window",
        "suppression.soft_bounce_expiry", "suppression.scope", "inbound.pause_on_complaint_rate",
        "inbound.min_delivered_for_rate"}) {
    if (key == k) return true;
  }
  if (key.substr(0, 5) == "smtp.") {
    const std::string_view k = key.substr(5);
    return k == "tls_fallback_time" || IsPolicyKey(k);
  }
  return false;
}

absl::StatusOr<std::vector<ConfigChange>> DiffConfigText(std::string_view running,
                                                        std::string_view next,
                                                        std::string_view file_name) {
  ASSIGN_OR_RETURN(const toml::table a, base::ParseToml(running, file_name));
  ASSIGN_OR_RETURN(const toml::table b, base::ParseToml(next, file_name));
  std::vector<std::string> keys;
  const auto section = [&](std::string_view name, const toml::node* x, const toml::node* y) {
    const bool tables = (x == nullptr || x->is_table()) && (y == nullptr || y->is_table());
    if (!tables) {  // [[backoff]] and the like: one key for the whole array
      if (x == nullptr || y == nullptr || Render(*x) != Render(*y)) keys.emplace_back(name);
      return;
    }
    // [destination."NAME"] tables one level further, key by key.
    DiffTables(x != nullptr ? x->as_table() : nullptr, y != nullptr ? y->as_table() : nullptr,
               std::string(name), name == "destination" ? 1 : 0, &keys);
  };
  for (const auto& [k, x] : a) section(k.str(), &x, b.get(k.str()));
  for (const auto& [k, y] : b) {
    if (a.get(k.str()) == nullptr) section(k.str(), nullptr, &y);
  }
  std::vector<ConfigChange> out;
  for (std::string& key : keys) {
    const bool restart = !IsReloadable(key);
    out.push_back(ConfigChange{std::move(key), restart});
  }
  return out;
}

Config MergeReloadable(const Config& running, const Config& next) {
  Config merged = running;
  merged.routes = next.routes;
  merged.destinations = next.destinations;
  merged.smtp.defaults = next.smtp.defaults;
  merged.smtp.tls_fallback_time = next.smtp.tls_fallback_time;
  merged.retry = next.retry;
  merged.backoff = next.backoff;
  merged.classify = next.classify;
  merged.dkim = next.dkim;
  queue::SuppressionOptions& suppression = merged.suppression.options;
  suppression.soft_bounce_limit = next.suppression.options.soft_bounce_limit;
  suppression.soft_bounce_window = next.suppression.options.soft_bounce_window;
  suppression.soft_bounce_expiry = next.suppression.options.soft_bounce_expiry;
  suppression.scope = next.suppression.options.scope;
  merged.inbound.pause_on_complaint_rate = next.inbound.pause_on_complaint_rate;
  merged.inbound.min_delivered_for_rate = next.inbound.min_delivered_for_rate;
  return merged;
}

absl::StatusOr<std::shared_ptr<const LiveConfig>> MakeLiveConfig(
    Config config, uint64_t generation, bool routes_changed,
    std::shared_ptr<const Credentials> credentials) {
  auto live = std::make_shared<LiveConfig>();
  ASSIGN_OR_RETURN(auto routes, dns::StaticRoutes::Create(config.routes));
  ASSIGN_OR_RETURN(metrics::Classifier classifier, metrics::Classifier::Create(config.classify));
  live->routes = std::move(routes);
  live->classifier = std::make_unique<const metrics::Classifier>(std::move(classifier));
  live->config = std::move(config);
  live->generation = generation;
  live->routes_changed = routes_changed;
  live->credentials = std::move(credentials);
  return std::shared_ptr<const LiveConfig>(std::move(live));
}

void BlockReloadSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

ConfigReloader::ConfigReloader(std::string path, std::string text, const Config& running,
                               const Credentials& running_credentials, Publish publish,
                               metrics::ReloadMetrics* metrics)
    : path_(std::move(path)),
      start_text_(text),
      applied_text_(std::move(text)),
      start_(running),
      start_credentials_(std::make_unique<const Credentials>(running_credentials)),
      publish_(std::move(publish)),
      metrics_(metrics) {}

ConfigReloader::~ConfigReloader() = default;

absl::Status ConfigReloader::Reload() {
  if (path_.empty()) {
    base::LogInfo("SIGHUP: started without --config: nothing to reload");
    return absl::FailedPreconditionError("no config file");
  }
  const auto refuse = [this](const absl::Status& st) {
    // The start-up error's text ("config: FILE:LINE: KEY: REASON"), then what
    // happens instead.
    base::LogError("config: %s (reload refused; the running config is kept)",
                   base::StdSv(st.message()));
    if (metrics_ != nullptr) metrics_->failed.Add();
    return st;
  };
  absl::StatusOr<std::string> text = ReadConfigText(path_);
  if (!text.ok()) return refuse(text.status());
  absl::StatusOr<Config> next = ParseConfig(*text, path_);
  if (!next.ok()) return refuse(next.status());
  // DKIM keys and token secrets are read as start-up reads them: a key that
  // would stop volleyd at its next start refuses the reload now. The DKIM keys
  // read here are the ones the shards sign with next; the token keys stay
  // start-up's (Credentials::ForReload).
  std::vector<std::string> key_warnings;
  absl::StatusOr<Credentials> keys = Credentials::Load(*next, &key_warnings);
  if (!keys.ok()) return refuse(keys.status());
  auto credentials = std::make_shared<const Credentials>(
      Credentials::ForReload(*std::move(keys), *start_credentials_));
  absl::StatusOr<std::vector<ConfigChange>> since_start = DiffConfigText(start_text_, *text, path_);
  if (!since_start.ok()) return refuse(since_start.status());
  absl::StatusOr<std::vector<ConfigChange>> since_applied =
      DiffConfigText(applied_text_, *text, path_);
  if (!since_applied.ok()) return refuse(since_applied.status());
  for (const ConfigChange& c : *since_start) {
    if (c.key == "source") {
      // [destination] and [smtp] name sources by their place in [[source]]:
      // with the running sources those would name other addresses.
      return refuse(absl::InvalidArgumentError(
          absl::StrCat(path_, ": source: [[source]] tables changed: restart volleyd to apply")));
    }
  }
  // The routes differ from start-up's: partitions no longer follow them.
  const bool routes_changed = start_.routes != next->routes;
  absl::StatusOr<std::shared_ptr<const LiveConfig>> live =
      MakeLiveConfig(MergeReloadable(start_, *next), generations_.size() + 1, routes_changed,
                     credentials);
  if (!live.ok()) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat(path_, ": ", live.status().message())));
  }
  for (const ConfigChange& c : *since_start) {
    if (c.needs_restart) base::LogWarning("%s changed: restart volleyd to apply", c.key);
  }
  std::vector<std::string> applied;
  for (const ConfigChange& c : *since_applied) {
    if (!c.needs_restart) applied.push_back(c.key);
  }
  generations_.push_back(*live);
  publish_(*live);
  applied_text_ = *std::move(text);
  if (metrics_ != nullptr) {
    metrics_->ok.Add();
    metrics_->last_success_seconds.Set(absl::ToUnixSeconds(absl::Now()));
  }
  if (applied.empty()) {
    base::LogInfo("config reloaded from %s (no changes applied)", path_);
  } else {
    base::LogInfo("config reloaded from %s (%zu change%s: %s)", path_, applied.size(),
                  applied.size() == 1 ? "" : "s", absl::StrJoin(applied, ", "));
  }
  if (std::find(applied.begin(), applied.end(), "dkim") != applied.end()) {
    const std::vector<std::string> selectors = credentials->DkimSelectors();
    base::LogInfo("dkim: signing with %s from each shard's next message",
                  selectors.empty() ? std::string("no key") : absl::StrJoin(selectors, ", "));
  }
  for (const std::string& w : key_warnings) base::LogWarning("%s", w);
  return absl::OkStatus();
}

absl::Status ReloadThread::Start() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) {
    return absl::InternalError(absl::StrCat("signalfd(SIGHUP): ", std::strerror(errno)));
  }
  ASSIGN_OR_RETURN(reactor::EventFd stop, reactor::EventFd::Create());
  stop_ = std::make_unique<reactor::EventFd>(std::move(stop));
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "volley-reload");
    Loop();
  });
  return absl::OkStatus();
}

void ReloadThread::Stop() {
  if (thread_.joinable()) {
    stop_->Notify();
    thread_.join();
  }
  if (signal_fd_ >= 0) {
    ::close(signal_fd_);
    signal_fd_ = -1;
  }
}

void ReloadThread::Loop() {
  for (;;) {
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {stop_->fd(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      base::LogError("SIGHUP: poll: %s; reloads are off until restart", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    // Several SIGHUPs before this read are one reload: the file is read once.
    signalfd_siginfo info;
    bool hup = false;
    while (::read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) hup = true;
    if (hup) reloader_->Reload().IgnoreError();  // logged there
  }
}

}  // namespace volley::engine
