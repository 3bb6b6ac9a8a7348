#!/usr/bin/env bash
# bench/before-after.sh A_DIR B_DIR: the same `mailtool bench smtp` load (1 KiB messages,
# 1, 8 and 32 connections, a fresh store each run, two alternating rounds) against the
# maild and mailtool in A_DIR and in B_DIR, to compare two builds on the same day.
#
# The power-cut fix was measured this way (docs/BENCHMARKS.md):
#   cargo build --release && mkdir -p /tmp/bin-patched && cp target/release/{maild,mailtool} /tmp/bin-patched/
#   # comment out `sled = { path = "vendor/sled" }` in Cargo.toml (sled as published), then
#   cargo build --release && mkdir -p /tmp/bin-unpatched && cp target/release/{maild,mailtool} /tmp/bin-unpatched/
#   git checkout Cargo.toml Cargo.lock
#   bench/before-after.sh /tmp/bin-unpatched /tmp/bin-patched
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 A_DIR B_DIR (each holding maild and mailtool)" >&2; exit 2; }
port=${SMTP_PORT:-26250}
source "$(dirname "$0")/lib.sh"
for round in 1 2; do
    for bin in "$1" "$2"; do
        for conns in 1 8 32; do
            new_store "$bin"; data=$DATA
            start_maild "$bin" "$data/log" --smtp "127.0.0.1:$port" --pop3 "127.0.0.1:$((port + 1))" \
                --hostname bench.test
            pid=$MAILD_PID
            messages=10000
            [ "$conns" = 1 ] && messages=4000
            out=$("$bin/mailtool" --data "$data" bench smtp --smtp "127.0.0.1:$port" --connections "$conns" \
                --messages "$messages" --size 1024 2>&1 | grep -E "msgs|latency" | tr "\n" " ")
            echo "round $round $bin connections=$conns: $out"
            kill "$pid"
            wait "$pid" || true
            rm -rf "$data"
        done
    done
done
