#!/usr/bin/env bash
# postfix_relay.sh - a private Postfix 3.7 relay on loopback for the comparison benchmark
#
# SYNOPSIS
#   bench/postfix_relay.sh start DIR SMTPD_PORT RELAY_HOST:RELAY_PORT
#   bench/postfix_relay.sh stop DIR
#
# DESCRIPTION
#   start writes a Postfix instance of its own into DIR (etc/main.cf, etc/master.cf,
#   queue/, data/, log/maillog), starts it with `postfix -c DIR/etc start`, waits until
#   its smtpd answers 220 on 127.0.0.1:SMTPD_PORT and prints the master's pid on stdout.
#   The system's /etc/postfix is neither read nor written and no system service is
#   touched, so there is nothing to restore afterwards: stop (`postfix -c DIR/etc stop`,
#   then SIGKILL to the master if it is still there after 30 s) leaves the machine as
#   it was, apart from DIR, which the caller removes. Every folder above DIR must be
#   searchable by others (Postfix's daemons run as user postfix).
#
#   What the instance does:
#     - smtpd listens on 127.0.0.1:SMTPD_PORT only (master.cf; inet_interfaces =
#       loopback-only, inet_protocols = ipv4) and accepts clients in 127.0.0.0/8 only
#       (smtpd_client_restrictions = permit_mynetworks, reject);
#     - it takes recipients under .test only (relay_domains = test, which covers
#       every subdomain, and reject_unauth_destination; mydestination is empty, nothing is delivered
#       locally) and relays every message, bounces included, to RELAY_HOST:RELAY_PORT
#       through the smtp(8) transport (relay_transport, default_transport and
#       relayhost all name [RELAY_HOST]:RELAY_PORT). RELAY_HOST must be an IPv4
#       address in 127.0.0.0/8: nothing leaves the machine;
#     - no DNS: smtp_dns_support_level = disabled (what disable_dns_lookups = yes
#       was), smtp_host_lookup = native, smtpd_peername_lookup = no; the next hop is
#       an address literal anyway;
#     - its queue is DIR/queue, on DIR's (local) file system, with Postfix's usual
#       fsync of every queue file: a durable queue, as volleyd's is;
#     - limits: default_process_limit = POSTFIX_PROCESS_LIMIT (smtpd processes for
#       the client's sessions, smtp processes for the relay; cleanup is unlimited,
#       as in Debian's master.cf), and
#       smtp_destination_concurrency_limit = POSTFIX_CONCURRENCY connections to the
#       next hop (all mail goes to one next hop, so this is Postfix's connection
#       count to the sink). Everything else is Postfix's default (in_flow_delay 1s,
#       connection caching on demand, qmgr limits).
#   No STARTTLS either way, no bounces or delay notices to the postmaster
#   (notify_classes is empty, delay_warning_time 0).
#
# ENVIRONMENT
#   POSTFIX_PROCESS_LIMIT=200   default_process_limit
#   POSTFIX_CONCURRENCY=20      smtp_destination_concurrency_limit
#
# EXIT STATUS
#   0 started (or stopped); 1 Postfix failed to start or to answer; 2 usage.
set -euo pipefail

postfix=/usr/sbin/postfix
process_limit=${POSTFIX_PROCESS_LIMIT:-200}
concurrency=${POSTFIX_CONCURRENCY:-20}
# How long start waits for smtpd's 220 and stop for the master to go, in 0.1 s steps.
readonly kStartSteps=300
readonly kStopSteps=300

say() { printf 'postfix_relay: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
usage() {
  say "usage: postfix_relay.sh start DIR SMTPD_PORT RELAY_HOST:RELAY_PORT | stop DIR"
  exit 2
}

port_ok() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

# master_alive PID - true while PID runs and is not a zombie (PID 1 here may not reap).
master_alive() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

master_pid() {
  local f="$1/queue/pid/master.pid"
  [ -s "$f" ] && tr -d ' \n' <"$f"
}

# greets PORT - true when 127.0.0.1:PORT answers with a 220 line.
greets() {
  local line=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  read -r -t 5 line <&3 || true
  printf 'QUIT\r\n' >&3 2>/dev/null || true
  exec 3<&- 3>&-
  [[ $line == 220* ]]
}

write_config() {
  local dir=$1 smtpd_port=$2 relay=$3
  # Postfix's daemons run as user postfix and chdir into the queue: every folder above
  # DIR must let others pass (a mktemp folder is 0700: chmod 711 it first).
  local up=$dir
  while up=$(dirname "$up") && [ "$up" != / ]; do
    [ "$(( 0$(stat -c %a "$up") & 1 ))" = 1 ] ||
      fail "$up is not searchable by others (mode $(stat -c %a "$up")): Postfix's daemons could not reach $dir"
  done
  mkdir -p "$dir/etc" "$dir/queue" "$dir/log" "$dir/data"
  chmod 755 "$dir" "$dir/etc" "$dir/queue" "$dir/log"
  chown postfix:postfix "$dir/data"
  chmod 700 "$dir/data"
  cat >"$dir/etc/main.cf" <<EOF
# Written by bench/postfix_relay.sh: a private relay for the comparison benchmark.
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop

myhostname = relay.postfix.test
mydomain = postfix.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no

inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = permit_mynetworks, reject
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject
# Only recipients under .test are taken (parent_domain_matches_subdomains has
# relay_domains: "test" covers every subdomain), whoever the client is.
relay_domains = test
smtpd_recipient_restrictions = reject_unauth_destination
smtpd_peername_lookup = no
smtputf8_enable = no
smtpd_tls_security_level = none
smtp_tls_security_level = none

# Everything goes to the one loopback next hop, without DNS.
relayhost = $relay
relay_transport = smtp:$relay
default_transport = smtp:$relay
transport_maps =
smtp_dns_support_level = disabled
smtp_host_lookup = native

default_process_limit = $process_limit
smtp_destination_concurrency_limit = $concurrency
notify_classes =
delay_warning_time = 0

maillog_file = $dir/log/maillog
maillog_file_prefixes = /var, $dir
EOF
  cat >"$dir/etc/master.cf" <<EOF
# Written by bench/postfix_relay.sh. Nothing is chrooted (the chroot would be empty).
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$smtpd_port inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# pf ARGS - postfix -c DIR/etc ARGS, without the caller's MAIL_* variables (they would
# reconfigure it).
pf() {
  env $(env | sed -n 's/^\(MAIL_[A-Za-z_]*\)=.*/-u \1/p') "$postfix" -c "$dir/etc" "$@"
}

cmd_start() {
  [ $# = 3 ] || usage
  dir=$1
  local smtpd_port=$2 relay=$3 host rport i pid
  port_ok "$smtpd_port" || fail "SMTPD_PORT \"$smtpd_port\" is not a port"
  host=${relay%:*}
  rport=${relay##*:}
  [[ $host =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] &&
    [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] && [ "${BASH_REMATCH[3]}" -le 255 ] ||
    fail "relay host \"$host\" is not an IPv4 address in 127.0.0.0/8: this relay only sends to loopback"
  port_ok "$rport" || fail "relay port \"$rport\" is not a port"
  [ -x "$postfix" ] || fail "$postfix is missing: run scripts/install-deps (package postfix)"
  [[ $dir == /* ]] || dir="$PWD/$dir"
  write_config "$dir" "$smtpd_port" "[$host]:$rport"
  local out
  out=$(pf start 2>&1) || fail "postfix -c $dir/etc start: $out; maillog: $(tail -5 "$dir/log/maillog" 2>/dev/null)"
  for i in $(seq "$kStartSteps"); do
    greets "$smtpd_port" && break
    sleep 0.1
  done
  greets "$smtpd_port" || {
    say "smtpd did not answer 220 on 127.0.0.1:$smtpd_port; stopping it"
    cmd_stop "$dir" || true
    fail "maillog: $(tail -5 "$dir/log/maillog" 2>/dev/null)"
  }
  pid=$(master_pid "$dir") || fail "no $dir/queue/pid/master.pid"
  echo "$pid"
}

cmd_stop() {
  [ $# = 1 ] || usage
  dir=$1
  [[ $dir == /* ]] || dir="$PWD/$dir"
  local pid i
  pid=$(master_pid "$dir") || return 0   # never started, or already gone
  master_alive "$pid" || return 0
  pf stop >/dev/null 2>&1 || true
  for i in $(seq "$kStopSteps"); do
    master_alive "$pid" || return 0
    sleep 0.1
  done
  say "master (pid $pid) still there 30 s after postfix stop: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

dir=""
case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
