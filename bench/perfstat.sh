#!/usr/bin/env bash
# bench/perfstat.sh BIN_DIR MODE SESSIONS MESSAGES [SIZE]: one smtp-source run against a
# fresh maild (MODE multi = many messages per connection, single = one each) under
# `perf stat -p`, printing msgs/s and maild's CPU time, context switches and system calls
# (in all and the ones a message's path makes), and the bytes it wrote and made the disk
# write. Divide by MESSAGES for per-message figures; alternate two builds' runs to compare
# them. PERF_STAT_ARGS (e.g. "--per-thread") go to perf stat. Needs perf (linux-perf) and
# smtp-source (postfix).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 BIN_DIR multi|single SESSIONS MESSAGES [SIZE]" >&2; exit 2; }
bin=$1; mode=$2; sessions=$3; messages=$4; size=${5:-1024}
port=${SMTP_PORT:-26650}
source "$(dirname "$0")/lib.sh"
new_store "$bin"; data=$DATA; trap 'rm -rf "$data"' EXIT
start_maild "$bin" "$data/log" --smtp "127.0.0.1:$port" --pop3 "127.0.0.1:$((port + 1))" --hostname bench.test
pid=$MAILD_PID
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
args=(-s "$sessions" -m "$messages" -l "$size" -M bench.test -f sender@bench.test -t bench@localhost)
[ "$mode" = multi ] && args=(-d "${args[@]}")
events=task-clock,context-switches,raw_syscalls:sys_enter
for call in sched_yield futex recvfrom sendto write setsockopt fcntl close fdatasync fsync pwrite64 statfs; do
    events+=",syscalls:sys_enter_$call"
done
# shellcheck disable=SC2086
perf stat ${PERF_STAT_ARGS:-} -e "$events" -p "$pid" -o "$data/stat" &
perf_pid=$!
sleep 0.3
start=$(date +%s.%N)
smtp-source "${args[@]}" "127.0.0.1:$port"
end=$(date +%s.%N)
sleep 0.5 # deliver and backup finish the last messages
kill -INT "$perf_pid"; wait "$perf_pid" || true
awk -v n="$messages" -v s="$start" -v e="$end" -v m="$mode" -v c="$sessions" \
    'BEGIN { printf "%s, %s sessions: %.0f msgs/s\n", m, c, n / (e - s) }'
grep -vE '^#|^$' "$data/stat"
# What maild handed to write() and what it made the kernel write to the disk (whole pages
# or folios, whatever a write dirtied), since it started.
awk '/^wchar/ {w = $2} /^write_bytes/ {b = $2} END {printf "maild wrote %.0f KiB (write calls), %.0f KiB to the disk\n", w / 1024, b / 1024}' "/proc/$pid/io"
