#!/usr/bin/env bash
# Runs the workspace's tests (one release build, shared with `make build`): the unit tests, the
# end-to-end suites, the cluster tier (test/cluster: a kubelet v1.36, which needs containerd
# 2.2+) and the VM tier (test/vm: the cgroup tests on cgroup v2 with systemd, in a qemu VM)
# against the pinned containerd 2.x (test/tools/versions.env), then the end-to-end suites
# again against Debian's containerd 1.6 (the oldest supported), then a short run of the fuzz
# targets (fuzz/). Closes with one line that totals every test binary of both runs:
# "N passed, N failed, N skipped" (a test that cannot run here says so through
# wasmcell_e2e::skip; the harness counts it as passed, and it is moved to the skips here).
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
WASMCELL_CONTAINERD_DIR=$containerd2 cargo test --release --workspace --all-targets 2>&1 \
  | tee -a "$log" || status=$?

echo "== the end-to-end suites against $(/usr/bin/containerd --version)"
WASMCELL_CONTAINERD_DIR=/usr/bin cargo test --release -p wasmcell-e2e --tests 2>&1 \
  | tee -a "$log" || status=$?

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
