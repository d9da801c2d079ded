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
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::engine {

struct SmtpConfig {
  // Remote port when routing by DNS. Default: 25.
  uint16_t port = 25;
  // Name sent in EHLO. Default: the machine's host name.
  std::string ehlo_name;
  // RFC 5321 section 4.5.3.2 timeouts. Defaults: 30s, 5m, 5m, 2m, 10m; QUIT 5s.
  absl::Duration connect_timeout = absl::Seconds(30);
  absl::Duration greeting_timeout = absl::Minutes(5);
  absl::Duration command_timeout = absl::Minutes(5);   // EHLO, MAIL, RCPT, RSET
  absl::Duration data_timeout = absl::Minutes(2);      // the reply to DATA
  absl::Duration data_done_timeout = absl::Minutes(10);  // the reply after the final dot
  absl::Duration quit_timeout = absl::Seconds(5);
  // An idle connection with nothing to send is closed after this. Default: 5s.
  absl::Duration idle_timeout = absl::Seconds(5);
  // Connections open at once to one destination. Default: 20.
  int max_connections_per_destination = 20;
  // Messages sent over one connection before it is closed. Default: 1000.
  int max_messages_per_connection = 1000;
  // Recipients of one domain sent in one transaction when a job's message is
  // the same for every recipient (a personalised job sends one per
  // transaction). RFC 5321 4.5.3.1.8 requires servers to take 100. Default: 100.
  int max_recipients_per_transaction = 100;
  // Longest reply line accepted (RFC 5321 allows 512). Default: 4096.
  int max_reply_line = 4096;
};

struct RetryConfig {
  absl::Duration initial = absl::Minutes(5);
  absl::Duration max = absl::Hours(4);
  absl::Duration max_age = absl::Hours(72);
};

struct DeliveryConfig {
  // Recipients taken from the queue and not yet finished, at most. Bounds memory.
  // Default: 20000.
  int window = 20000;
};

struct DnsConfig {
  std::vector<std::string> servers;  // empty: the system's resolv.conf
  bool allow_loopback = false;
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
  DnsConfig dns;
  RetryConfig retry;
  DeliveryConfig delivery;
  std::string metrics_listen = "127.0.0.1:9464";
  // [queue]
  bool sync_outcomes = false;
};

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name);
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// ParseDuration - "500ms", "30s", "5m", "4h", "3d" (a number and a unit).
absl::StatusOr<absl::Duration> ParseDuration(std::string_view text);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_CONFIG_H_
