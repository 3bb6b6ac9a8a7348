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
# REFERENCE=N, each chunk is followed by N messages to a second maild on a store of its
# own, new and empty (on the same file system; kept to the end, as a deletion would slow
# the next one's creates), and the chunk's rate is printed as a ratio to that one: the
# machine's speed drifts by more than 10 % over the run, the ratio much less.
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
# reference CHUNK_OUTPUT: REFERENCE messages to a maild on a new store, and the ratio.
reference() {
    local ref_smtp=127.0.0.1:${REF_SMTP_PORT:-28252} ref_pop3=127.0.0.1:${REF_POP3_PORT:-28253} out
    new_store "$bin"; references+=("$DATA")
    start_maild "$bin" "$DATA/log" --smtp "$ref_smtp" --pop3 "$ref_pop3" "${maild_args[@]}"
    out=$("$bin/mailtool" bench smtp --smtp "$ref_smtp" --connections 32 --messages "$REFERENCE" --size 1024 2>&1)
    kill "$MAILD_PID"; wait "$MAILD_PID" 2>/dev/null || true
    echo "  an empty store right after: $(msgs_per_s "$out") msgs/s; chunk / empty: $(echo "scale=2; $(msgs_per_s "$1") / $(msgs_per_s "$out")" | bc)"
}
for i in $(seq "$chunks"); do
    perf=
    if [[ " ${PERF_CHUNKS:-} " == *" $i "* ]]; then
        perf record -g -p "$pid" -o "${PERF_DIR:-.}/chunk$i.perf" 2>/dev/null & perf=$!
        sleep 0.5
    fi
    out=$("$bin/mailtool" bench smtp --smtp "$smtp" --connections 32 --messages 100000 --size 1024 2>&1 \
        | grep -E "msgs/s|p99" | tr "\n" " ")
    if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
    echo "chunk $i ($(( (i - 1) * 100000 )) stored before it): $out RSS $(rss $pid)"
    if [ -n "${REFERENCE:-}" ]; then reference "$out"; fi
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
