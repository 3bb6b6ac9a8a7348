#!/usr/bin/env bash
# bench/restart.sh STORE ROUNDS BIN_DIR...: start-up time after kill -9, builds alternated.
# STORE is a data directory maild left when it was killed with -9 (`KEEP=DIR
# bench/million.sh BIN_DIR` keeps its 1,000,000-message one in DIR). Each round starts every
# BIN_DIR's maild once on a fresh copy of STORE, the page cache warm as after a kill, and
# prints the time from exec to "maild ready", maild's CPU until then and the time sled took
# to open the store. The copies are removed at the end.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 STORE ROUNDS BIN_DIR..." >&2; exit 2; }
store=$1 rounds=$2; shift 2
smtp=127.0.0.1:${SMTP_PORT:-28250}; pop3=127.0.0.1:${POP3_PORT:-28251}
copy=$(mktemp -d); trap 'rm -rf "$copy"' EXIT
for _ in $(seq "$rounds"); do
    for bin in "$@"; do
        rm -rf "$copy/data"; cp -a "$store" "$copy/data"; sync; sleep 1
        start=$(date +%s.%N)
        "$bin/maild" --data "$copy/data" --smtp "$smtp" --pop3 "$pop3" 2>"$copy/log" & pid=$!
        until grep -qs "maild ready" "$copy/log"; do sleep 0.01; done
        ready=$(echo "$(date +%s.%N) - $start" | bc)
        cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat")
        echo "$bin: $ready s to ready, CPU $cpu s ($(grep -o "opened in [^ :]*" "$copy/log" | head -1))"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done
