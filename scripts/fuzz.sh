#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets/) for SECONDS each, one after another, and prints each
# target's executions and the total. Installs what it needs first: the nightly toolchain and
# cargo-fuzz, if missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 seconds, every target)
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, written by fuzz/seeds),
# the inputs that once crashed it (fuzz/regressions/<target>/) and what earlier runs on this
# machine found (fuzz/target/corpus/<target>/, not committed). A crash stops that target and
# leaves its input in fuzz/artifacts/<target>/; the script goes on with the others and exits 1.
# Built without a sanitizer: the project has no unsafe code, and what the targets look for are
# panics, aborts, timeouts and runaway memory, which libFuzzer catches by itself (ASan halves the
# rate). FUZZ_ARGS adds libFuzzer flags, e.g. FUZZ_ARGS="-max_len=65536".
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[[ $# -gt 0 ]] && shift
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build --sanitizer none

total=0
failed=()
printf '%-16s %14s %8s %10s  %s\n' target executions seconds exec/s result
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target" "corpus/$target"
  # Inputs that once crashed the target are run first, every time (their tests are in the
  # stable suite too: see fuzz/regressions/README.md).
  corpora=("target/corpus/$target" "corpus/$target")
  [[ -d regressions/$target ]] && corpora+=("regressions/$target")
  log=$(mktemp)
  start=$(date +%s)
  status=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  cargo +nightly fuzz run --sanitizer none "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 ${FUZZ_ARGS:-} \
    >"$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' \
    | awk '{s += $1} END {print s + 0}')
  if [[ $status -eq 0 ]]; then
    result=ok
  else
    result="CRASH: $(grep -o 'artifacts/[^ ]*' "$log" | head -1 || true) (log: $log)"
    failed+=("$target")
  fi
  # libFuzzer's own rate: the wall time above also counts a build, if sources changed.
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  printf '%-16s %14d %8d %10d  %s\n' "$target" "$runs" "$elapsed" "${rate:-0}" "$result"
  [[ $status -eq 0 ]] && rm -f "$log"
  total=$(( total + runs ))
done
printf '%-16s %14d\n' total "$total"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
