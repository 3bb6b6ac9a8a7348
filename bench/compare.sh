#!/usr/bin/env bash
# bench/compare.sh: maild next to smtp-sink (the ceiling: parses SMTP, stores nothing),
# bench/durable-sink.rs (smtp-sink plus one group-committed `fdatasync` a message: the
# ceiling for a server that keeps what it acknowledges) and Postfix 3.7 (real queue,
# fsync per message, local delivery), all under the same load from Postfix's
# smtp-source; then POP3, maild next to Dovecot, with one Python
# client (poplib, one round trip per RETR; a raw socket, one RETR at a time; then 64
# RETRs pipelined on the raw socket). For smtp-sink, durable-sink and maild in every SMTP
# cell it also reports where both cores' time went a message: busy and idle (/proc/stat),
# smtp-source's CPU and the server's, since the load generator shares the cores.
#
# Usage (as root, from anywhere; the script works from the repository root):
#   cargo build --release            # first; this script never builds
#   bench/compare.sh                 # the full run: 10,000 messages a cell, 2 runs each
#   QUICK=1 REPEAT=1 bench/compare.sh   # a short try (2,000 messages, one run)
#
# Environment (defaults in brackets):
#   MAILD [target/release/maild]  MAILTOOL [target/release/mailtool]  (relative to the repo)
#   MESSAGES [10000; QUICK=1: 2000]  messages per run in the 1 KiB cells (100 KiB: MESSAGES/5)
#   REPEAT [2]              runs per cell and server; the figure is their median
#                           (an even count: the mean of the middle two)
#   POP3_MESSAGES [10000; QUICK=1: 2000]   maildrop size for the POP3 runs
#   LATENCY_MESSAGES [5000; QUICK=1: 1000] for `mailtool bench smtp` (ack latency)
#   RUN_SMTP=0 / RUN_POP3=0 / RUN_LATENCY=0 skip a part
#   MAILD_SMTP_PORT [25250] MAILD_POP3_PORT [25251] SINK_PORT [25252]
#   POSTFIX_PORT [25253] DOVECOT_PORT [25254] DURABLE_SINK_PORT [25255] (all on 127.0.0.1)
#   BENCH_TMPDIR [/tmp]      where the stores, Postfix's queue and the Maildir go
#   RUN_TIMEOUT [900]        seconds one load run may take before it counts as failed
#   POSTFIX_CONF ['']        extra main.cf settings for Postfix, e.g. "in_flow_delay=0"
#                            (space-separated name=value, no spaces in a value; shown in
#                            the report's command)
#   KEEP_ON_FAILURE=1        keep the work dir (logs, stores) when the script fails
#
# Exit status: 0 when every run succeeded; 1 when a run failed (its cell shows "fail";
# the report is still printed) or on any error before the report.
#
# durable-sink is built with rustc (std only) into the work dir; without rustc its column
# says n/a.
#
# Installs postfix, dovecot-pop3d and python3 with apt-get when they are missing (without
# starting the system's own Postfix/Dovecot). Postfix and Dovecot run as private
# instances (own config, queue and spool under a temp dir, loopback ports only, nothing
# relayed: default_transport=error); the system's /etc/postfix and /etc/dovecot are not
# touched. A user `bench` is created if missing (Postfix delivers to it, Dovecot serves
# as it). Everything started here is stopped on exit, failure or Ctrl-C.
#
# The report (Markdown, for docs/BENCHMARKS.md) goes to stdout; progress to stderr.

set -euo pipefail
umask 022

cd "$(dirname "$(readlink -f "$0")")/.."
ROOT=$(pwd)

# The command line as given, with the settings that change what is measured.
COMMAND_LINE=""
for var in QUICK MESSAGES REPEAT POP3_MESSAGES LATENCY_MESSAGES RUN_SMTP RUN_POP3 RUN_LATENCY POSTFIX_CONF MAILD MAILTOOL; do
    if [[ -n ${!var+x} ]]; then COMMAND_LINE+="$var=$(printf '%q' "${!var}") "; fi
done
COMMAND_LINE+="bench/compare.sh${*:+ $*}"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ $# -gt 0 ]]; then
    echo "compare.sh: no arguments are taken (settings are environment variables; see --help)" >&2
    exit 2
fi

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then default_messages=2000; default_pop3=2000; default_latency=1000
else default_messages=10000; default_pop3=10000; default_latency=5000; fi
MESSAGES=${MESSAGES:-$default_messages}
REPEAT=${REPEAT:-2}
POP3_MESSAGES=${POP3_MESSAGES:-$default_pop3}
LATENCY_MESSAGES=${LATENCY_MESSAGES:-$default_latency}
RUN_SMTP=${RUN_SMTP:-1}
RUN_POP3=${RUN_POP3:-1}
RUN_LATENCY=${RUN_LATENCY:-1}
MAILD=${MAILD:-target/release/maild}
MAILTOOL=${MAILTOOL:-target/release/mailtool}
MAILD_SMTP_PORT=${MAILD_SMTP_PORT:-25250}
MAILD_POP3_PORT=${MAILD_POP3_PORT:-25251}
SINK_PORT=${SINK_PORT:-25252}
POSTFIX_PORT=${POSTFIX_PORT:-25253}
DOVECOT_PORT=${DOVECOT_PORT:-25254}
DURABLE_SINK_PORT=${DURABLE_SINK_PORT:-25255}
BENCH_TMPDIR=${BENCH_TMPDIR:-/tmp}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
SIZE=1024
BIG_SIZE=102400
USER_ADDRESS=bench@localhost
PASSWORD=bench
SENDER=sender@bench.test

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

for n in MESSAGES REPEAT POP3_MESSAGES LATENCY_MESSAGES RUN_TIMEOUT MAILD_SMTP_PORT MAILD_POP3_PORT SINK_PORT POSTFIX_PORT DOVECOT_PORT DURABLE_SINK_PORT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n=${!n}: want a positive whole number"
done
(( MESSAGES >= 5 )) || die "MESSAGES=$MESSAGES: want at least 5 (the 100 KiB cells send MESSAGES/5)"

# Is anything listening on 127.0.0.1:PORT?
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Waits (at most $2 seconds) until $1 accepts connections, or (with "closed") refuses them.
wait_port() {
    local port=$1 limit=$2 want=${3:-open} i
    for ((i = 0; i < limit * 10; i++)); do
        if listening "$port"; then
            if [[ $want == open ]]; then return 0; fi
        elif [[ $want == closed ]]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# --- state and cleanup -------------------------------------------------------------

WORK=""
PF=""
DV=""
MAILD_PID=""
SINK_PID=""
DURABLE_SINK_PID=""
CHILD_PID=""
POSTFIX_STARTED=0
DOVECOT_STARTED=0
POLICY_ADDED="" # a policy-rc.d this script put in place while installing

stop_maild() {
    [[ -n $MAILD_PID ]] || return 0
    local pid=$MAILD_PID i
    MAILD_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "maild (pid $pid) still running 60 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops the process whose pid is in the variable named $1 (if any) and clears it.
stop_pid_in() {
    local -n pid_var=$1
    [[ -n $pid_var ]] || return 0
    kill -TERM "$pid_var" 2>/dev/null || true
    wait "$pid_var" 2>/dev/null || true
    pid_var=""
}
stop_sink() { stop_pid_in SINK_PID; }
stop_durable_sink() { stop_pid_in DURABLE_SINK_PID; }

stop_postfix() {
    [[ $POSTFIX_STARTED == 1 ]] || return 0
    POSTFIX_STARTED=0
    timeout 60 postfix -c "$PF/etc" stop </dev/null >/dev/null 2>&1 || log "postfix stop failed (see $PF/postfix.log)"
    wait_port "$POSTFIX_PORT" 30 closed || log "Postfix still listens on $POSTFIX_PORT after stop"
}

stop_dovecot() {
    [[ $DOVECOT_STARTED == 1 ]] || return 0
    DOVECOT_STARTED=0
    if ! timeout 30 doveadm -c "$DV/dovecot.conf" stop >/dev/null 2>&1; then
        local pid
        pid=$(cat "$DV/run/master.pid" 2>/dev/null || true)
        if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
    fi
    wait_port "$DOVECOT_PORT" 30 closed || log "Dovecot still listens on $DOVECOT_PORT after stop"
}

# Runs a command in the background and waits for it, so that a signal to this script is
# handled at once (bash runs traps only between foreground commands); cleanup kills it.
run_child() { # command... (stdin from /dev/null; redirect at the call)
    "$@" </dev/null &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $CHILD_PID ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    stop_maild
    stop_sink
    stop_durable_sink
    stop_postfix
    stop_dovecot
    if [[ -n $POLICY_ADDED ]]; then rm -f "$POLICY_ADDED"; fi
    if [[ -z $WORK ]]; then
        :
    elif [[ $rc != 0 && -n ${KEEP_ON_FAILURE:-} ]]; then
        log "kept $WORK for inspection"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preconditions -----------------------------------------------------------------

[[ $(id -u) == 0 ]] || die "run as root (Postfix, Dovecot and package installs need it)"
[[ -x $MAILD && -x $MAILTOOL ]] || {
    echo "compare.sh: $MAILD or $MAILTOOL is missing: build first: cargo build --release" >&2
    exit 1
}
MAILD=$(readlink -f "$MAILD")
MAILTOOL=$(readlink -f "$MAILTOOL")

have_tools() {
    command -v smtp-source && command -v smtp-sink && command -v postfix && command -v postsuper &&
        command -v postconf && command -v dovecot && command -v doveadm &&
        [[ -x /usr/lib/dovecot/pop3 ]] && command -v python3 && command -v timeout
} >/dev/null 2>&1

install_tools() {
    command -v apt-get >/dev/null || die "smtp-source/postfix/dovecot/python3 missing and no apt-get to install them"
    log "installing postfix, dovecot-pop3d, python3 (apt-get)"
    # Install without starting the system's own Postfix and Dovecot (Dovecot would listen
    # on every interface): a policy-rc.d that denies starts, only while installing, and
    # only if the machine has none of its own.
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        POLICY_ADDED=$policy
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    local ok=1
    apt-get update -qq || ok=0
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections || ok=0
    if [[ $ok == 1 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postfix dovecot-core dovecot-pop3d python3 >/dev/null || ok=0
    fi
    if [[ -n $POLICY_ADDED ]]; then rm -f "$POLICY_ADDED"; POLICY_ADDED=""; fi
    [[ $ok == 1 ]] || die "apt-get install postfix dovecot-pop3d python3 failed"
}
have_tools || install_tools
have_tools || die "smtp-source, smtp-sink, postfix, dovecot (pop3) or python3 still missing after installing"

if ! id bench >/dev/null 2>&1; then
    log "creating user bench (Postfix delivers to it, Dovecot serves as it)"
    useradd --system --no-create-home --shell /usr/sbin/nologin bench || die "useradd bench failed"
fi
BENCH_UID=$(id -u bench)
BENCH_GID=$(id -g bench)
SINK_USER=nobody
id "$SINK_USER" >/dev/null 2>&1 || SINK_USER=bench

for p in MAILD_SMTP_PORT MAILD_POP3_PORT SINK_PORT POSTFIX_PORT DOVECOT_PORT DURABLE_SINK_PORT; do
    if listening "${!p}"; then die "port 127.0.0.1:${!p} is in use (choose another with $p=...)"; fi
done

mkdir -p "$BENCH_TMPDIR"
WORK=$(mktemp -d "$BENCH_TMPDIR/maild-compare.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons and the bench user walk through it
PF="$WORK/postfix"
DV="$WORK/dovecot"


# --- maild -----------------------------------------------------------------------

MAILD_RUNS=0
# Starts maild on a fresh, empty store with the one user.
start_maild() {
    MAILD_RUNS=$((MAILD_RUNS + 1))
    MAILD_DATA="$WORK/stores/$MAILD_RUNS"
    MAILD_LOG="$WORK/logs/maild-$MAILD_RUNS.log"
    rm -rf "$WORK/stores" # the previous run's store (its log is kept until exit)
    mkdir -p "$WORK/stores" "$WORK/logs"
    printf '%s\n' "$PASSWORD" | "$MAILTOOL" --data "$MAILD_DATA" user add "$USER_ADDRESS" --password-stdin \
        >"$WORK/mailtool-user.log" 2>&1 || { cat "$WORK/mailtool-user.log" >&2; die "mailtool user add failed"; }
    "$MAILD" --data "$MAILD_DATA" --domain localhost --smtp "127.0.0.1:$MAILD_SMTP_PORT" \
        --pop3 "127.0.0.1:$MAILD_POP3_PORT" --hostname bench.test </dev/null >"$MAILD_LOG.out" 2>"$MAILD_LOG" &
    MAILD_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q "maild ready" "$MAILD_LOG" 2>/dev/null && return 0
        if ! kill -0 "$MAILD_PID" 2>/dev/null; then
            MAILD_PID=""
            tail -20 "$MAILD_LOG" >&2
            die "maild exited before it was ready (log above)"
        fi
        sleep 0.1
    done
    tail -20 "$MAILD_LOG" >&2
    die "maild not ready after 30 s (no 'maild ready' line; log above)"
}

maild_rss() { # "RSS / peak" of the running maild, from /proc
    local rss hwm
    rss=$(awk '/^VmRSS:/ {printf "%.1f MiB", $2/1024}' "/proc/$MAILD_PID/status" 2>/dev/null || true)
    hwm=$(awk '/^VmHWM:/ {printf "%.1f MiB", $2/1024}' "/proc/$MAILD_PID/status" 2>/dev/null || true)
    echo "${rss:-?} (peak ${hwm:-?})"
}

# --- smtp-sink ---------------------------------------------------------------------

start_sink() {
    # -u: smtp-sink refuses to run as root without dropping privileges; 256: listen backlog.
    # Its default -m 256 concurrent connections is plenty for 32 sessions.
    smtp-sink -u "$SINK_USER" "127.0.0.1:$SINK_PORT" 256 </dev/null >"$WORK/smtp-sink.log" 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT" 30 || { cat "$WORK/smtp-sink.log" >&2; die "smtp-sink did not listen on $SINK_PORT within 30 s"; }
}

# --- durable-sink (bench/durable-sink.rs) -------------------------------------------------

DURABLE_SINK=""
build_durable_sink() {
    if ! command -v rustc >/dev/null; then log "no rustc: the durable-sink column says n/a"; return 0; fi
    rustc -O --edition 2021 "$ROOT/bench/durable-sink.rs" -o "$WORK/durable-sink" 2>"$WORK/durable-sink-build.log" ||
        die "building bench/durable-sink.rs failed: $(tail -5 "$WORK/durable-sink-build.log")"
    DURABLE_SINK="$WORK/durable-sink"
}

# On the stores' file system, in a file made once (its writes then cost no metadata).
start_durable_sink() {
    [[ -n $DURABLE_SINK ]] || return 0
    "$DURABLE_SINK" "127.0.0.1:$DURABLE_SINK_PORT" "$WORK/durable-sink.data" </dev/null >"$WORK/durable-sink.log" 2>&1 &
    DURABLE_SINK_PID=$!
    wait_port "$DURABLE_SINK_PORT" 60 || { cat "$WORK/durable-sink.log" >&2; die "durable-sink did not listen on $DURABLE_SINK_PORT within 60 s"; }
}

# --- Postfix: a private instance -------------------------------------------------------

start_postfix() {
    mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$PF/spool"
    chown postfix "$PF/data"
    chmod 1777 "$PF/spool" # local(8) creates bench's mbox (and its .lock) here as bench
    cp /etc/postfix/master.cf "$PF/etc/master.cf" 2>/dev/null ||
        cp /usr/share/postfix/master.cf.dist "$PF/etc/master.cf" ||
        die "no master.cf to start from (/etc/postfix/master.cf)"
    cat >"$PF/etc/main.cf" <<EOF
# maild-compare: a private Postfix on 127.0.0.1:$POSTFIX_PORT; it relays nothing.
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
maillog_file = $PF/postfix.log
maillog_file_prefixes = $PF
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination = localhost, bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
default_transport = error
relay_transport = error
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
append_dot_mydomain = no
alias_maps =
alias_database =
biff = no
mail_spool_directory = $PF/spool
mailbox_size_limit = 0
message_size_limit = 52428800
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 100
local_destination_concurrency_limit = 20
smtpd_tls_security_level = none
smtp_tls_security_level = none
EOF
    # No chroot (the queue is in a temp dir), no port 25: only our loopback listener.
    if [[ -n ${POSTFIX_CONF:-} ]]; then
        local setting settings
        read -r -a settings <<<"$POSTFIX_CONF"
        for setting in "${settings[@]}"; do
            postconf -c "$PF/etc" -e "$setting" || die "POSTFIX_CONF: postconf -e '$setting' failed"
        done
    fi
    postconf -c "$PF/etc" -F '*/*/chroot = n'
    postconf -c "$PF/etc" -M# smtp/inet 2>/dev/null || true
    postconf -c "$PF/etc" -M "127.0.0.1:$POSTFIX_PORT/inet=127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd"
    timeout 60 postfix -c "$PF/etc" start </dev/null >/dev/null 2>&1 || {
        tail -20 "$PF/postfix.log" >&2 2>/dev/null
        die "postfix start failed (log above, or run: postfix -c $PF/etc check)"
    }
    POSTFIX_STARTED=1
    wait_port "$POSTFIX_PORT" 30 || { tail -20 "$PF/postfix.log" >&2; die "Postfix did not listen on $POSTFIX_PORT within 30 s"; }
}

postfix_queue_count() {
    find "$PF/queue/maildrop" "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" \
        "$PF/queue/hold" -type f 2>/dev/null | wc -l
}

# Empties Postfix's queue and bench's mailbox, so each run starts alike.
reset_postfix() {
    postsuper -c "$PF/etc" -d ALL </dev/null >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 600; i++)); do
        [[ $(postfix_queue_count) == 0 ]] && break
        sleep 0.1
        if ((i % 50 == 49)); then postsuper -c "$PF/etc" -d ALL </dev/null >/dev/null 2>&1 || true; fi
    done
    [[ $(postfix_queue_count) == 0 ]] || log "Postfix queue still not empty after 60 s: $(postfix_queue_count) files"
    if [[ -e $PF/spool/bench ]]; then : >"$PF/spool/bench"; fi
    return 0
}

# --- load --------------------------------------------------------------------------

# smtp-source flags for a cell. smtp-source's -d is "don't disconnect after each message"
# (so multi = -d; single = one message per connection, smtp-source's default);
# -s parallel sessions; -m messages in all; -l payload bytes (headers not counted).
source_args() { # mode sessions messages size
    local args=()
    if [[ $1 == multi ]]; then args+=(-d); fi
    args+=(-s "$2" -m "$3" -l "$4" -M bench.test -f "$SENDER" -t "$USER_ADDRESS")
    printf '%s\n' "${args[@]}"
}

# CPU in clock ticks: the machine's busy and idle time from /proc/stat ("busy" counts
# interrupts and steal), and one process's user + system time (all its threads).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat; }
process_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'; }
# The CPU seconds of this script's children that have ended (smtp-source among them), into
# the variable named $1 (`times` in a subshell would see only the subshell's children).
children_seconds() {
    times >"$WORK/times"
    printf -v "$1" '%s' "$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } print s }' "$WORK/times")"
}

# Runs smtp-source against a port; sets RESULT to msgs/s, or "fail". Given the server's
# pid, it also adds where the two cores went to $WORK/cpu.rows.
run_load() { # port mode sessions messages size cell server [server_pid]
    local port=$1 mode=$2 sessions=$3 messages=$4 size=$5 cell=$6 server=$7 server_pid=${8:-} args start end
    local busy0 idle0 busy1 idle1 child0 child1 server0 server1
    mapfile -t args < <(source_args "$mode" "$sessions" "$messages" "$size")
    sync
    read -r busy0 idle0 < <(machine_ticks)
    children_seconds child0
    if [[ -n $server_pid ]]; then server0=$(process_ticks "$server_pid"); fi
    start=$(date +%s.%N)
    if ! run_child timeout "$RUN_TIMEOUT" smtp-source "${args[@]}" "127.0.0.1:$port" >"$WORK/source.out" 2>"$WORK/source.err"; then
        log "[$cell] $server: smtp-source failed: $(tail -3 "$WORK/source.err" | tr '\n' ' ')"
        RESULT=fail
        FAILED=$((FAILED + 1))
        return 0
    fi
    end=$(date +%s.%N)
    RESULT=$(awk -v n="$messages" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f\n", n / (e - s) }')
    [[ -n $server_pid ]] || return 0
    read -r busy1 idle1 < <(machine_ticks)
    children_seconds child1
    server1=$(process_ticks "$server_pid")
    awk -v n="$messages" -v hz="$(getconf CLK_TCK)" -v busy=$((busy1 - busy0)) -v idle=$((idle1 - idle0)) \
        -v source="$child0 $child1" -v srv=$((server1 - server0)) -v row="$cell|$server" 'BEGIN {
        split(source, c, " "); us = 1e6 / hz / n
        printf "%s|%.0f|%.0f|%.0f|%.0f\n", row, busy * us, idle * us, (c[2] - c[1]) * 1e6 / n, srv * us }' >>"$WORK/cpu.rows"
}

per_second() { if [[ $1 == fail ]]; then echo failed; else echo "$1 msgs/s"; fi; }

# The median of the numbers given (an even count: the mean of the middle two); "fail" if any failed.
median() {
    local v
    for v in "$@"; do [[ $v == fail ]] && { echo fail; return; }; done
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR % 2) printf "%.0f\n", a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

commas() { # 12345 -> 12,345
    [[ $1 =~ ^[0-9]+$ ]] || { echo "$1"; return; }
    echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'
}
ratio() { # a / b to two places, or n/a
    [[ $1 =~ ^[0-9]+$ && $2 =~ ^[1-9][0-9]*$ ]] || { echo "n/a"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'
}

# One column (3 busy, 4 idle, 5 smtp-source, 6 the server) of a cell's and server's rows in
# $WORK/cpu.rows, a value a line.
cpu_column() { # cell server field
    awk -F'|' -v cell="$1" -v server="$2" -v field="$3" '$1 == cell && $2 == server { print $field }' "$WORK/cpu.rows"
}

# Where the two cores went, from $WORK/cpu.rows: the median of each server's runs in a cell.
cpu_report() {
    [[ -s $WORK/cpu.rows ]] || return 0
    echo "| cell | server | machine busy | machine idle | smtp-source | the server | the rest |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    local cell server busy idle load own
    while IFS='|' read -r cell server; do
        busy=$(median $(cpu_column "$cell" "$server" 3))
        idle=$(median $(cpu_column "$cell" "$server" 4))
        load=$(median $(cpu_column "$cell" "$server" 5))
        own=$(median $(cpu_column "$cell" "$server" 6))
        echo "| $cell | $server | $busy | $idle | $load | $own | $((busy - load - own)) |"
    done < <(cut -d'|' -f1,2 "$WORK/cpu.rows" | awk '!seen[$0]++')
}

# --- header ------------------------------------------------------------------------

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then COMMIT+=" (work tree modified)"; fi
POSTFIX_VERSION=$(postconf -d -h mail_version 2>/dev/null || echo "?")
DOVECOT_VERSION=$(dovecot --version 2>/dev/null | awk '{print $1}' || echo "?")
PYTHON_VERSION=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo "?")
FS_TYPE=$(df -T "$WORK" 2>/dev/null | awk 'NR == 2 {print $2}')
BIG_MESSAGES=$((MESSAGES / 5))

HEADER="## maild next to smtp-sink, Postfix and Dovecot

- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel $(uname -r); $(nproc) cores; stores on ${FS_TYPE:-?} ($BENCH_TMPDIR)
- maild: commit $COMMIT, \`${MAILD#"$ROOT"/}\`
- Postfix $POSTFIX_VERSION (smtp-source, smtp-sink and postfix from Debian's package), Dovecot $DOVECOT_VERSION, Python $PYTHON_VERSION
- command: \`$COMMAND_LINE\`
- each figure is the median of $REPEAT run(s) per server (an even count: the mean of the middle two)"

FAILED=0
REPORT_SMTP=""
REPORT_RUNS=""
REPORT_LATENCY=""
REPORT_POP3=""
RSS_NOTE=""

# --- SMTP intake -------------------------------------------------------------------

if [[ $RUN_SMTP == 1 ]]; then
    log "SMTP: $MESSAGES messages a run ($BIG_MESSAGES at 100 KiB), $REPEAT run(s) per cell and server; work dir $WORK"
    start_sink
    build_durable_sink
    start_durable_sink
    start_postfix
    reset_postfix

    # name | mode | sessions | size | messages
    CELLS=(
        "multi, 1 conn, 1 KiB|multi|1|$SIZE|$MESSAGES"
        "multi, 8 conns, 1 KiB|multi|8|$SIZE|$MESSAGES"
        "multi, 32 conns, 1 KiB|multi|32|$SIZE|$MESSAGES"
        "single, 1 conn, 1 KiB|single|1|$SIZE|$MESSAGES"
        "single, 32 conns, 1 KiB|single|32|$SIZE|$MESSAGES"
        "multi, 8 conns, 100 KiB|multi|8|$BIG_SIZE|$BIG_MESSAGES"
    )
    REPORT_SMTP="| cell | smtp-sink | durable-sink | maild | Postfix | maild / sink | durable / sink | maild / durable | maild / Postfix |
|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    COMMANDS=""
    for cell in "${CELLS[@]}"; do
        IFS='|' read -r name mode sessions size messages <<<"$cell"
        sink_runs=() durable_runs=() maild_runs=() postfix_runs=()
        for ((r = 1; r <= REPEAT; r++)); do
            run_load "$SINK_PORT" "$mode" "$sessions" "$messages" "$size" "$name" smtp-sink "$SINK_PID"; v=$RESULT
            sink_runs+=("$v"); log "[$name] run $r/$REPEAT smtp-sink: $(per_second "$v")"

            if [[ -n $DURABLE_SINK ]]; then
                run_load "$DURABLE_SINK_PORT" "$mode" "$sessions" "$messages" "$size" "$name" durable-sink "$DURABLE_SINK_PID"; v=$RESULT
                durable_runs+=("$v"); log "[$name] run $r/$REPEAT durable-sink: $(per_second "$v")"
            fi

            start_maild
            run_load "$MAILD_SMTP_PORT" "$mode" "$sessions" "$messages" "$size" "$name" maild "$MAILD_PID"; v=$RESULT
            if [[ $mode == multi && $sessions == 32 && $size == "$SIZE" ]]; then
                RSS_NOTE="maild's RSS at the end of the multi, 32 conns cell (run $r, $messages messages stored): $(maild_rss)"
            fi
            if [[ $v == fail ]]; then tail -5 "$MAILD_LOG" >&2; fi
            stop_maild
            maild_runs+=("$v"); log "[$name] run $r/$REPEAT maild: $(per_second "$v")"

            run_load "$POSTFIX_PORT" "$mode" "$sessions" "$messages" "$size" "$name" Postfix; v=$RESULT
            if [[ $v == fail ]]; then tail -5 "$PF/postfix.log" >&2; fi
            reset_postfix
            postfix_runs+=("$v"); log "[$name] run $r/$REPEAT Postfix: $(per_second "$v")"
        done
        s=$(median "${sink_runs[@]}"); m=$(median "${maild_runs[@]}"); p=$(median "${postfix_runs[@]}")
        d=n/a
        if [[ -n $DURABLE_SINK ]]; then d=$(median "${durable_runs[@]}"); fi
        REPORT_SMTP+="
| $name | $(commas "$s") | $(commas "$d") | $(commas "$m") | $(commas "$p") | $(ratio "$m" "$s") | $(ratio "$d" "$s") | $(ratio "$m" "$d") | $(ratio "$m" "$p") |"
        REPORT_RUNS+="
- $name: smtp-sink ${sink_runs[*]}; durable-sink ${durable_runs[*]:-n/a}; maild ${maild_runs[*]}; Postfix ${postfix_runs[*]}"
        mapfile -t args < <(source_args "$mode" "$sessions" "$messages" "$size")
        COMMANDS+="
smtp-source ${args[*]} 127.0.0.1:PORT   # $name"
    done
    stop_sink
    stop_durable_sink
    stop_postfix
    REPORT_SMTP+="

msgs/s from \`smtp-source\`'s start to its exit (the last 250 after the data), the load
generator on the same cores as the server. \"multi\": every session sends its share over
one connection (\`-d\`); \"single\": one message per connection (smtp-source's default).
smtp-source speaks HELO and does not pipeline. durable-sink (bench/durable-sink.rs,
built with \`rustc -O\`) answers like smtp-sink but writes each message into one
preallocated file and \`fdatasync\`s it (group commit) before the 250: what any server
that keeps what it acknowledges must at least do, so \"durable / sink\" is the most such
a server can reach on this machine and \"maild / durable\" is what maild's own work
costs. Each maild run starts on an empty store;
Postfix's queue and mailbox are emptied between runs (it delivers with local(8) to an
mbox while it accepts; main.cf as written by bench/compare.sh${POSTFIX_CONF:+, plus $POSTFIX_CONF}). The cells:

\`\`\`sh${COMMANDS}
smtp-sink -u $SINK_USER 127.0.0.1:PORT 256
\`\`\`

Each run, msgs/s:
${REPORT_RUNS}

#### Where the two cores went, µs a message

$(cpu_report)

The same runs (medians). \"machine busy\" and \"machine idle\" are both cores' time
from \`/proc/stat\` over the run, so together they are twice the wall time a message;
smtp-source's CPU is the script's children's (\`times\`), the server's its process's
(\`/proc/PID/stat\`, all threads); \"the rest\" is the busy time neither was charged with:
kernel threads (the disk's, ext4's), interrupts outside them, anything else running."
fi

# --- ack latency -------------------------------------------------------------------

if [[ $RUN_LATENCY == 1 ]]; then
    log "ack latency: mailtool bench smtp, 32 connections, $LATENCY_MESSAGES messages"
    start_maild
    sync
    if run_child timeout "$RUN_TIMEOUT" "$MAILTOOL" bench smtp --smtp "127.0.0.1:$MAILD_SMTP_PORT" --connections 32 \
        --messages "$LATENCY_MESSAGES" --size "$SIZE" >"$WORK/latency.out" 2>"$WORK/latency.err"; then
        REPORT_LATENCY="### Ack latency: \`mailtool bench smtp\` against maild

\`\`\`
\$ mailtool bench smtp --smtp 127.0.0.1:PORT --connections 32 --messages $LATENCY_MESSAGES --size $SIZE
$(cat "$WORK/latency.out")
\`\`\`"
    else
        cat "$WORK/latency.err" >&2
        FAILED=$((FAILED + 1))
        REPORT_LATENCY="### Ack latency: \`mailtool bench smtp\` failed: $(tail -1 "$WORK/latency.err")"
    fi
    stop_maild
fi

# --- POP3 --------------------------------------------------------------------------

cat >"$WORK/pop3client.py" <<'PYTHON'
"""One POP3 client for both servers.

fetch HOST PORT USER PASS FILE       RETR 1 into FILE (LF line ends, dot-unstuffed)
poplib HOST PORT USER PASS EXPECTED  poplib: RETR every message, one round trip each
pipe HOST PORT USER PASS EXPECTED W  raw socket: W RETR lines written at once, W replies read
                                     (W = 1: one round trip per RETR, without poplib)
The bench modes print: msgs/s N seconds S login_ms L octets O
"""
import poplib
import socket
import sys
import time

LOGIN_DEADLINE = 15.0  # seconds to retry a login the server refuses for now ([IN-USE], [SYS/TEMP])


def temporary(reply):
    return b"[IN-USE]" in reply or b"[SYS/TEMP]" in reply


def poplib_login(host, port, user, password):
    end = time.monotonic() + LOGIN_DEADLINE
    while True:
        client = poplib.POP3(host, port, timeout=120)
        try:
            client.user(user)
            client.pass_(password)
            return client
        except poplib.error_proto as error:
            reply = error.args[0] if isinstance(error.args[0], bytes) else str(error.args[0]).encode()
            client.close()
            if not temporary(reply) or time.monotonic() > end:
                sys.exit(f"login refused: {reply.decode(errors='replace')}")
            time.sleep(0.05)


class Raw:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            sys.exit("server closed the connection")
        self.buf += chunk

    def compact(self):
        """Drops what was read; only between replies, so offsets within one stay valid."""
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0

    def line(self):
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def multiline(self):
        """One reply: its status line, and for +OK the octets up to the terminating '.'."""
        self.compact()
        status = self.line()
        if not status.startswith(b"+OK"):
            return status, 0
        start = self.pos - 2  # the CRLF of the status line, so an empty body is found too
        while True:
            end = self.buf.find(b"\r\n.\r\n", start)
            if end >= 0:
                octets = end - (self.pos - 2)
                self.pos = end + 5
                return status, octets
            start = max(start, len(self.buf) - 4)
            self._fill()

    def command(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()


def raw_login(host, port, user, password):
    end = time.monotonic() + LOGIN_DEADLINE
    while True:
        raw = Raw(host, port)
        greeting = raw.line()
        if not greeting.startswith(b"+OK"):
            sys.exit(f"greeting: {greeting!r}")
        reply = raw.command(f"USER {user}")
        if reply.startswith(b"+OK"):
            reply = raw.command(f"PASS {password}")
            if reply.startswith(b"+OK"):
                return raw
        raw.sock.close()
        if not temporary(reply) or time.monotonic() > end:
            sys.exit(f"login refused: {reply.decode(errors='replace')}")
        time.sleep(0.05)


def check_count(count, expected):
    if count != expected:
        sys.exit(f"the maildrop holds {count} messages, expected {expected}")


def main():
    mode, host, port, user, password = sys.argv[1:6]
    port = int(port)
    if mode == "fetch":
        client = poplib_login(host, port, user, password)
        _, lines, _ = client.retr(1)
        client.quit()
        with open(sys.argv[6], "wb") as out:
            out.write(b"".join(line + b"\n" for line in lines))
    elif mode == "poplib":
        expected = int(sys.argv[6])
        started = time.perf_counter()
        client = poplib_login(host, port, user, password)
        count, _ = client.stat()
        logged_in = time.perf_counter()
        check_count(count, expected)
        octets = 0
        for number in range(1, count + 1):
            _, _, size = client.retr(number)
            octets += size
        done = time.perf_counter()
        client.quit()
        report(count, done - logged_in, logged_in - started, octets)
    elif mode == "pipe":
        expected, window = int(sys.argv[6]), int(sys.argv[7])
        started = time.perf_counter()
        raw = raw_login(host, port, user, password)
        stat = raw.command("STAT")
        if not stat.startswith(b"+OK"):
            sys.exit(f"STAT: {stat!r}")
        count = int(stat.split()[1])
        logged_in = time.perf_counter()
        check_count(count, expected)
        octets = 0
        for first in range(1, count + 1, window):
            last = min(first + window - 1, count)
            raw.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in range(first, last + 1)))
            for n in range(first, last + 1):
                status, size = raw.multiline()
                if not status.startswith(b"+OK"):
                    sys.exit(f"RETR {n}: {status!r}")
                octets += size
        done = time.perf_counter()
        raw.command("QUIT")
        report(count, done - logged_in, logged_in - started, octets)
    else:
        sys.exit(f"unknown mode {mode}")


def report(count, seconds, login, octets):
    print(f"msgs/s {count / seconds:.0f} seconds {seconds:.3f} login_ms {login * 1e3:.1f} octets {octets}")


main()
PYTHON

start_dovecot() {
    mkdir -p "$DV/run" "$DV/state" "$DV/home/Maildir/new" "$DV/home/Maildir/cur" "$DV/home/Maildir/tmp"
    echo "bench:{PLAIN}$PASSWORD:$BENCH_UID:$BENCH_GID::$DV/home" >"$DV/passwd"
    chmod 644 "$DV/passwd"
    cat >"$DV/dovecot.conf" <<EOF
# maild-compare: a private Dovecot, POP3 on 127.0.0.1:$DOVECOT_PORT only.
base_dir = $DV/run
state_dir = $DV/state
instance_name = maild-compare
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = $DV/dovecot.log
mail_location = maildir:$DV/home/Maildir
first_valid_uid = $BENCH_UID
last_valid_uid = $BENCH_UID
pop3_uidl_format = %08Xu%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $DV/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%n $DV/passwd
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DOVECOT_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
EOF
    timeout 60 dovecot -c "$DV/dovecot.conf" </dev/null >"$DV/start.log" 2>&1 || {
        cat "$DV/start.log" "$DV/dovecot.log" >&2 2>/dev/null
        die "dovecot failed to start (output above)"
    }
    DOVECOT_STARTED=1
    wait_port "$DOVECOT_PORT" 30 || { tail -20 "$DV/dovecot.log" >&2; die "Dovecot did not listen on $DOVECOT_PORT within 30 s"; }
}

# Runs the client REPEAT times; sets POP3_MEDIAN and POP3_LOGIN (of the last run).
pop3_runs() { # port mode label [window]
    local port=$1 mode=$2 label=$3 window=${4:-} r out runs=()
    for ((r = 1; r <= REPEAT; r++)); do
        if run_child timeout "$RUN_TIMEOUT" python3 "$WORK/pop3client.py" "$mode" 127.0.0.1 "$port" "$USER_ADDRESS" \
            "$PASSWORD" "$POP3_MESSAGES" ${window:+"$window"} >"$WORK/pop3.out" 2>"$WORK/pop3.err"; then
            out=$(cat "$WORK/pop3.out")
            runs+=("$(awk '{print $2}' <<<"$out")")
            POP3_LOGIN=$(awk '{print $6}' <<<"$out")
            log "[$label] run $r/$REPEAT: $out"
        else
            log "[$label] run $r/$REPEAT failed: $(tail -2 "$WORK/pop3.err" | tr '\n' ' ')"
            runs+=(fail)
            FAILED=$((FAILED + 1))
        fi
    done
    POP3_MEDIAN=$(median "${runs[@]}")
    POP3_RUNS="${runs[*]}"
}

if [[ $RUN_POP3 == 1 ]]; then
    log "POP3: filling maild with $POP3_MESSAGES messages of $SIZE bytes (smtp-source, 8 sessions)"
    start_maild
    run_load "$MAILD_SMTP_PORT" multi 8 "$POP3_MESSAGES" "$SIZE" "POP3 fill" maild; v=$RESULT
    if [[ $v == fail ]]; then die "filling maild for POP3 failed"; fi
    # One login first (not timed): maild settles delivery, and the message Dovecot gets.
    run_child timeout 120 python3 "$WORK/pop3client.py" fetch 127.0.0.1 "$MAILD_POP3_PORT" "$USER_ADDRESS" "$PASSWORD" \
        "$WORK/message.eml" || die "POP3 login or RETR 1 against maild failed"
    pop3_runs "$MAILD_POP3_PORT" poplib "POP3 poplib maild"; m1=$POP3_MEDIAN; m1runs=$POP3_RUNS; m1login=$POP3_LOGIN
    pop3_runs "$MAILD_POP3_PORT" pipe "POP3 raw maild" 1; mraw=$POP3_MEDIAN; mrawruns=$POP3_RUNS
    pop3_runs "$MAILD_POP3_PORT" pipe "POP3 pipelined maild" 64; m64=$POP3_MEDIAN; m64runs=$POP3_RUNS
    stop_maild

    log "POP3: Dovecot, a Maildir of $POP3_MESSAGES copies of the message maild served ($(wc -c <"$WORK/message.eml") bytes)"
    start_dovecot
    python3 - "$WORK/message.eml" "$DV/home/Maildir/new" "$POP3_MESSAGES" <<'PYTHON'
import os, sys
source, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(source, "rb").read()
for n in range(count):
    with open(os.path.join(directory, f"{1700000000 + n}.M{n}P1.bench.test"), "wb") as out:
        out.write(data)
PYTHON
    chown -R bench:bench "$DV/home"
    # One login first (not timed): Dovecot moves new/ to cur/ and builds its index.
    run_child timeout 120 python3 "$WORK/pop3client.py" fetch 127.0.0.1 "$DOVECOT_PORT" "$USER_ADDRESS" "$PASSWORD" \
        "$WORK/dovecot-message.eml" || { tail -5 "$DV/dovecot.log" >&2; die "POP3 login or RETR 1 against Dovecot failed"; }
    pop3_runs "$DOVECOT_PORT" poplib "POP3 poplib Dovecot"; d1=$POP3_MEDIAN; d1runs=$POP3_RUNS; d1login=$POP3_LOGIN
    pop3_runs "$DOVECOT_PORT" pipe "POP3 raw Dovecot" 1; draw=$POP3_MEDIAN; drawruns=$POP3_RUNS
    pop3_runs "$DOVECOT_PORT" pipe "POP3 pipelined Dovecot" 64; d64=$POP3_MEDIAN; d64runs=$POP3_RUNS
    stop_dovecot

    REPORT_POP3="### POP3 retrieval: $POP3_MESSAGES messages of $(wc -c <"$WORK/message.eml") bytes, one login, RETR each

| client | Dovecot | maild | maild / Dovecot |
|---|---:|---:|---:|
| Python poplib, one round trip per RETR | $(commas "$d1") | $(commas "$m1") | $(ratio "$m1" "$d1") |
| raw socket, one round trip per RETR | $(commas "$draw") | $(commas "$mraw") | $(ratio "$mraw" "$draw") |
| raw socket, 64 RETRs written at once | $(commas "$d64") | $(commas "$m64") | $(ratio "$m64" "$d64") |

RETR/s over the RETR loop only (login and STAT excluded: maild ${m1login} ms, Dovecot
${d1login} ms, each after an untimed first login). maild's maildrop was filled over SMTP
(\`smtp-source -d -s 8 -m $POP3_MESSAGES -l $SIZE\`); Dovecot $DOVECOT_VERSION serves a Maildir
(passwd-file user, no TLS, default index settings) holding that many copies of the
message maild served. The client is Python $PYTHON_VERSION, inline in bench/compare.sh.
poplib handles each reply line by line in Python; the raw socket's rows are the same
script reading whole replies itself (one RETR written at a time, then 64), so less of
each round trip is the client's.
Each run, RETR/s: poplib Dovecot $d1runs, maild $m1runs; raw, one at a time, Dovecot
$drawruns, maild $mrawruns; 64 pipelined Dovecot $d64runs, maild $m64runs."
fi

# --- report ------------------------------------------------------------------------

{
    echo "$HEADER"
    if [[ -n $REPORT_SMTP ]]; then echo; echo "### SMTP intake: msgs/s under smtp-source"; echo; echo "$REPORT_SMTP"; fi
    if [[ -n $RSS_NOTE ]]; then echo; echo "$RSS_NOTE"; fi
    if [[ -n $REPORT_LATENCY ]]; then echo; echo "$REPORT_LATENCY"; fi
    if [[ -n $REPORT_POP3 ]]; then echo; echo "$REPORT_POP3"; fi
}
if ((FAILED > 0)); then
    log "done, but $FAILED run(s) failed (\"fail\" in the report; their errors are above)"
    exit 1
fi
log "done"
