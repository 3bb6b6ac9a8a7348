#!/usr/bin/env bash
# bench/million.sh BIN_DIR [CHUNKS] [-- maild args...]: the performance issue's memory,
# restart and steady-rate figures. A fresh store is filled in CHUNKS (default 10) of
# 100,000 × 1 KiB messages over 32 connections (`mailtool bench smtp`), printing msgs/s,
# ack p99 and maild's RSS after each; then 1,000 idle connections (500 SMTP, 500 POP3)
# are held and RSS read again; then the store's size; then maild is killed with -9 and
# the time from exec to "maild ready" is printed. The data directory is removed at the end;
# with KEEP=DIR the killed store is first copied to DIR (for bench/restart.sh). With
# PERF_CHUNKS="1 4" (say), `perf record -g` follows maild through those chunks, into
# chunkN.perf in PERF_DIR (default: the current directory); a profiling build
# (`cargo build --profile profiling -p maild`, BIN_DIR target/profiling) names its symbols.
# With FRESH_FS=1 (root only) the store lives on a new ext4 file system made for the run
# (mkfs.ext4's defaults, journal included, in a sparse 16 GiB image on a loop device), so
# that no earlier run's deleted files are in the way of its first creates. With
# REFERENCE=N, each chunk is sent in slices of N messages, and after each slice N go to a
# second maild on a new store (one per chunk, on the same file system, kept to the end:
# a deletion would slow the next one's creates); the chunk's rate is then printed as a
# ratio to the new store's over the same seconds (N should divide 100,000; no p99 is
# printed then, and PERF_CHUNKS is not used). The machine's speed drifts by more than
# 10 % over a run, and by much within a minute; the interleaved ratio cancels most of it.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN_DIR [CHUNKS] [-- maild args...]" >&2; exit 2; }
bin=$1; shift
chunks=10
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then chunks=$1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
smtp=127.0.0.1:${SMTP_PORT:-28250}; pop3=127.0.0.1:${POP3_PORT:-28251}
source "$(dirname "$0")/lib.sh"
cleanup() { :; }
if [ -n "${FRESH_FS:-}" ]; then
    fs=$(mktemp -d); truncate -s 16G "$fs.img"; mkfs.ext4 -q "$fs.img"; mount -o loop "$fs.img" "$fs"
    cleanup() { umount "$fs" && rm -rf "$fs" "$fs.img"; }
    export TMPDIR=$fs
fi
new_store "$bin"; data=$DATA; references=(); trap 'rm -rf "$data" "${references[@]}"; cleanup' EXIT
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
maild_args=("$@")
start_maild "$bin" "$data/log" --smtp "$smtp" --pop3 "$pop3" "${maild_args[@]}"
pid=$MAILD_PID
msgs_per_s() { grep -oE "msgs/s: [0-9]+" <<<"$1" | grep -oE "[0-9]+$"; }
# send ADDRESS MESSAGES: one `mailtool bench smtp` run, its output on one line.
send() {
    "$bin/mailtool" bench smtp --smtp "$1" --connections 32 --messages "$2" --size 1024 2>&1 \
        | grep -E "msgs/s|p99" | tr "\n" " "
}
# rate SLICE_RATES...: msgs/s over slices of REFERENCE messages each (total / total time).
rate() { printf "%s\n" "$@" | awk -v n="$REFERENCE" '{t += n / $1; c++} END {printf "%.0f", c * n / t}'; }
# interleaved CHUNK: the chunk in slices, each followed by a slice to a new store.
interleaved() {
    local ref_smtp=127.0.0.1:${REF_SMTP_PORT:-28252} ref_pop3=127.0.0.1:${REF_POP3_PORT:-28253}
    local sent=0 chunk=() fresh=()
    new_store "$bin"; references+=("$DATA")
    start_maild "$bin" "$DATA/log" --smtp "$ref_smtp" --pop3 "$ref_pop3" "${maild_args[@]}"
    while [ "$sent" -lt 100000 ]; do
        chunk+=("$(msgs_per_s "$(send "$smtp" "$REFERENCE")")")
        fresh+=("$(msgs_per_s "$(send "$ref_smtp" "$REFERENCE")")")
        sent=$((sent + REFERENCE))
    done
    kill "$MAILD_PID"; wait "$MAILD_PID" 2>/dev/null || true
    local chunk_rate fresh_rate
    chunk_rate=$(rate "${chunk[@]}"); fresh_rate=$(rate "${fresh[@]}")
    echo "chunk $1 ($(( ($1 - 1) * 100000 )) stored before it): msgs/s: $chunk_rate (slices ${chunk[*]}) RSS $(rss $pid)"
    echo "  a new store between the slices: $fresh_rate msgs/s (slices ${fresh[*]}); chunk / new store: $(echo "scale=2; $chunk_rate / $fresh_rate" | bc)"
}
for i in $(seq "$chunks"); do
    if [ -n "${REFERENCE:-}" ]; then interleaved "$i"; continue; fi
    perf=
    if [[ " ${PERF_CHUNKS:-} " == *" $i "* ]]; then
        perf record -g -p "$pid" -o "${PERF_DIR:-.}/chunk$i.perf" 2>/dev/null & perf=$!
        sleep 0.5
    fi
    out=$(send "$smtp" 100000)
    if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
    echo "chunk $i ($(( (i - 1) * 100000 )) stored before it): $out RSS $(rss $pid)"
done
python3 - "$smtp" "$pop3" <<'PY' &
import socket, sys, time
held = []
for _ in range(500):
    for address in sys.argv[1:]:
        host, port = address.rsplit(":", 1)
        held.append(socket.create_connection((host, int(port))))
time.sleep(20)
PY
holder=$!
sleep 12
echo "with 1,000 idle sessions: RSS $(rss $pid), $(awk '/Threads/ {print $2}' /proc/$pid/status) threads"
wait "$holder"
echo "store: $(du -sm "$data/store" | cut -f1) MiB"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
if [ -n "${KEEP:-}" ]; then cp -a "$data" "$KEEP"; fi
start=$(date +%s.%N)
"$bin/maild" --data "$data" --smtp "$smtp" --pop3 "$pop3" "$@" 2>"$data/log2" & pid=$!
until grep -qs "maild ready" "$data/log2"; do sleep 0.01; done
echo "restart after kill -9: $(echo "$(date +%s.%N) - $start" | bc) s to ready ($(grep -o "opened in [^ :]*" "$data/log2" | head -1))"
kill "$pid"; wait "$pid" 2>/dev/null || true
