#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer, on the nightly toolchain) for
# SECONDS each (default 30) and fails if any finds a crash. The seeds and what earlier runs
# found are in fuzz/corpus/<target>; what this run finds goes to a scratch directory unless
# FUZZ_KEEP=1, which adds it to fuzz/corpus (for a long run whose corpus is to be committed).
#
#   test/scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
shift || true
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: libFuzzer needs the nightly toolchain, which rustup does not have here" >&2
  exit 1
fi
PATH="$(bash test/tools/build.sh cargo-fuzz):$PATH"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd fuzz && cargo +nightly fuzz build -O)
status=0
for target in "${targets[@]}"; do
  corpus=$PWD/fuzz/corpus/$target
  out=$scratch/$target
  mkdir -p "$out" "$corpus"
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then out=$corpus; fi
  log=$scratch/$target.log
  echo "== fuzz $target for $seconds s"
  if (cd fuzz && cargo +nightly fuzz run -O "$target" "$out" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1) >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' "$log" || true
  else
    status=1
    tail -n 60 "$log"
    echo "fuzz $target: FAILED (the crashing input is under fuzz/artifacts/$target)"
  fi
done
exit "$status"
