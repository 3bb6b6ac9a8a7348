#!/usr/bin/env bash
# bench/large.sh BIN_DIR [MIB]: what a large message costs a fresh maild. Prints maild's
# peak memory (VmHWM) growth while one MIB MiB message (default 24: 25 MB with headers,
# under the default --max-message-size) comes in over smtplib, and while it goes out by
# RETR over poplib (tests/py/large_message.py, which also checks the bytes), then the
# accept rate for 2 MiB messages (`mailtool bench smtp`, 4 connections, 200 messages)
# and the store's size after. Alternate two builds' runs to compare them.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN_DIR [MIB]" >&2; exit 2; }
bin=$1; mib=${2:-24}
port=${SMTP_PORT:-26750}
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$(dirname "$0")/lib.sh"
new_store "$bin"; data=$DATA; trap 'rm -rf "$data"' EXIT
# The script sends from s@d.test to u@d.test.
echo pw | "$bin/mailtool" --data "$data" user add u@d.test --password-stdin >/dev/null
start_maild "$bin" "$data/log" --smtp "127.0.0.1:$port" --pop3 "127.0.0.1:$((port + 1))" \
    --hostname bench.test --domain d.test --domain localhost
pid=$MAILD_PID
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$pid/status"; }
# Warm up: a small message, and one login (argon2 takes ~19 MiB for a moment).
python3 - "$port" <<'EOF'
import poplib, smtplib, sys
port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port) as s:
    s.sendmail("s@d.test", ["u@d.test"], b"Subject: warm\r\n\r\nwarm\r\n")
p = poplib.POP3("127.0.0.1", port + 1)
p.user("u@d.test"); p.pass_("pw"); p.quit()
EOF
before=$(hwm)
start=$(date +%s.%N)
python3 "$root/tests/py/large_message.py" send "$port" "$mib" | grep number
end=$(date +%s.%N)
after_in=$(hwm)
python3 "$root/tests/py/large_message.py" retr "$((port + 1))" u@d.test pw 2 "$mib"
after_out=$(hwm)
awk -v b="$before" -v i="$after_in" -v o="$after_out" -v s="$start" -v e="$end" -v m="$mib" 'BEGIN {
    printf "%d MiB message: in %.2f s, VmHWM %+.1f MiB; out by RETR, VmHWM %+.1f MiB more (baseline %.1f MiB)\n",
        m, e - s, (i - b) / 1024, (o - i) / 1024, b / 1024 }'
"$bin/mailtool" bench smtp --smtp "127.0.0.1:$port" --connections 4 --messages 200 --size $((2 << 20)) |
    grep -E "msgs/s|p50|p99" | tr '\n' ' '
echo
echo "VmHWM after: $(( $(hwm) / 1024 )) MiB; store: $(du -sm "$data/store" | cut -f1) MiB"
