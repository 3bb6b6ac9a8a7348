#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a short, bounded time (FUZZ_SECONDS,
# default 20) on a copy of its committed corpus, after replaying its regression inputs.
# Exits non-zero if any build fails or any target finds a crash (the input is left in
# fuzz/artifacts/<target>/). Runs on the stable toolchain: `-s none` builds the targets
# with libFuzzer's coverage instrumentation but without a sanitizer, which needs no
# nightly. Run it from anywhere; as root or not.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz_dir")"
cd "$root"
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version '^0.13'
fi
cargo fuzz --version

fuzz() {
    cargo fuzz "$1" --fuzz-dir "$fuzz_dir" -s none "${@:2}"
}

fuzz build
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo fuzz list --fuzz-dir "$fuzz_dir"); do
    # Known findings' inputs (README.md) must at least not panic in the default mode.
    regressions=("$fuzz_dir/regressions/$target"/*)
    if [ -e "${regressions[0]}" ]; then
        echo "fuzz: $target: replaying ${#regressions[@]} regression input(s)"
        fuzz run "$target" "${regressions[@]}" || { failed+=("$target (regression)"); continue; }
    fi
    # New inputs go to the scratch directory; the committed corpus is only read.
    mkdir -p "$scratch/$target" "$fuzz_dir/corpus/$target"
    echo "fuzz: $target: ${seconds}s"
    if ! fuzz run "$target" "$scratch/$target" "$fuzz_dir/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>"$scratch/$target.log"; then
        tail -60 "$scratch/$target.log" >&2
        failed+=("$target")
    else
        grep -E '^stat::number_of_executed_units|^Done' "$scratch/$target.log" || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
