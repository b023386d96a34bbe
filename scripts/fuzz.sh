#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while each: scripts/fuzz.sh [seconds per target] [target...]
#
# Needs `cargo install cargo-fuzz`. libFuzzer's sanitizer flags are nightly-only, so on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them. Each target reads its seeds (fuzz/seeds/<target>,
# committed) and keeps what it finds in fuzz/corpus/<target> (not committed); crashing inputs
# land in fuzz/artifacts/<target>/. Extra libFuzzer flags go in FUZZ_ARGS (e.g. "-max_len=10000").
set -uo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    echo "== $t: ${seconds}s"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    grep -E '^(Done [0-9]+ runs|SUMMARY|thread .* panicked|Failing input)' "$log"
    runs="$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)"
    if [ "$rc" -eq 0 ]; then
        summary+=("$t: ok, ${runs:-no run count}, ${cov:-}")
        rm -f "$log"
    else
        summary+=("$t: FAILED (exit $rc), inputs in fuzz/artifacts/$t, log $log")
        status=1
    fi
done

echo
printf '%s\n' "${summary[@]}"
exit "$status"
