#!/usr/bin/env bash
# Runs the workspace's tests (one release build, shared with `make build`):
# 1. the unit tests, the end-to-end suites, the cluster tier (test/cluster: a kubelet, which
#    needs containerd 2.2+) and the VM tier (test/vm: the cgroup tests on cgroup v2 with
#    systemd, in a qemu VM) against the pinned containerd (test/tools/versions.env);
# 2. the end-to-end suites whole against Debian's containerd 1.6 (the oldest supported);
# 3. the version matrix: a subset of the suites against each other pinned release (the newest
#    2.4, 2.2 and 1.7; below);
# 4. a short run of the fuzz targets (fuzz/).
# Every test binary runs even when one before it failed (--no-fail-fast). Closes with one line
# that totals every test binary of every run: "N passed, N failed, N skipped" (a test that
# cannot run here says so through wasmcell_e2e::skip; the harness counts it as passed, and it
# is moved to the skips here).
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export WASMCELL_SKIP_LOG=$skips
status=0

# shellcheck source=../tools/env.sh
source test/tools/env.sh
containerd2=$WASMCELL_CONTAINERD2
echo "== unit tests, and the end-to-end suites against $("$containerd2/containerd" --version)"
WASMCELL_CONTAINERD_DIR=$containerd2 cargo test --release --no-fail-fast --workspace --all-targets 2>&1 \
  | tee -a "$log" || status=$?

echo "== the end-to-end suites against $(/usr/bin/containerd --version)"
WASMCELL_CONTAINERD_DIR=/usr/bin cargo test --release --no-fail-fast -p wasmcell-e2e --tests 2>&1 \
  | tee -a "$log" || status=$?

# The version matrix: the suites that cover every code path that talks to containerd (the task
# lifecycle, the shim's start in each form, finding the shims again after containerd restarts,
# image layouts and the content store, pulls, exec,
# terminals, wasi:http serving, CRI pods and sandboxes, `wasmcell install` and `doctor` against that
# containerd's own config loader) against each other pinned release.
MATRIX_SUITES=(lifecycle daemon restart layouts pull exec terminal http sandbox install doctor)
for release in 2.4 2.2 1.7; do
  dir=$(bash test/tools/build.sh "containerd-$release") || { status=1; continue; }
  echo "== the matrix suites against $("$dir/containerd" --version)"
  suites=()
  for suite in "${MATRIX_SUITES[@]}"; do suites+=(--test "$suite"); done
  WASMCELL_CONTAINERD_DIR=$dir cargo test --release --no-fail-fast -p wasmcell-e2e "${suites[@]}" 2>&1 \
    | tee -a "$log" || status=$?
done

echo "== the fuzz targets, 20 s each (make soak runs them 10 minutes each)"
bash test/scripts/fuzz.sh 20 || status=$?

if [ -s "$skips" ]; then
  echo "== skipped (counted as passed by the test harness):"
  sed 's/^/   /' "$skips"
fi
awk -v skipped="$(wc -l < "$skips")" \
  '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
   END { printf "%d passed, %d failed, %d skipped\n", p - skipped, f, skipped }' "$log"
exit "$status"
