# bench/lib.sh: sourced by the bench scripts that run maild on a fresh store.

# new_store BIN_DIR: a fresh data directory, its path in DATA, holding the user
# bench@localhost with the password "bench" (`mailtool bench pop3`'s default).
new_store() {
    DATA=$(mktemp -d)
    echo bench | "$1/mailtool" --data "$DATA" user add bench@localhost --password-stdin >/dev/null
}

# start_maild BIN_DIR LOG [maild args...]: maild on DATA in the background, its pid in
# MAILD_PID and its log in LOG; returns once it logs "maild ready" (or after 10 s).
start_maild() {
    local bin=$1 log=$2
    shift 2
    "$bin/maild" --data "$DATA" "$@" 2>"$log" &
    MAILD_PID=$!
    for _ in $(seq 100); do
        if grep -q "maild ready" "$log"; then return 0; fi
        sleep 0.1
    done
}
