#!/usr/bin/env bash
# bench/cpu.sh BIN_DIR CONNECTIONS MESSAGES [maild args...]: msgs/s of one `mailtool bench
# smtp` run (1 KiB, a fresh store) and the CPU maild spent on it (user + system, from
# /proc/PID/stat) per 1,000 messages: a figure that noise on a shared machine moves less
# than msgs/s. Alternate two builds' runs to compare them.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 BIN_DIR CONNECTIONS MESSAGES [maild args...]" >&2; exit 2; }
bin=$1; conns=$2; messages=$3; shift 3
port=${SMTP_PORT:-26550}
source "$(dirname "$0")/lib.sh"
new_store "$bin"; data=$DATA; trap 'rm -rf "$data"' EXIT
start_maild "$bin" "$data/log" --smtp "127.0.0.1:$port" --pop3 "127.0.0.1:$((port + 1))" --hostname bench.test "$@"
pid=$MAILD_PID
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
out=$("$bin/mailtool" bench smtp --smtp "127.0.0.1:$port" --connections "$conns" --messages "$messages" --size 1024 \
    2>&1 | grep -E "msgs/s" | tr "\n" " ")
sleep 1 # deliver and backup finish the last messages
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "$bin connections=$conns: $out cpu $(( (after - before) * 1000 * 1000 / hz / messages )) ms per 1,000 messages"
kill "$pid"; wait "$pid" 2>/dev/null || true
