#!/usr/bin/env bash
# Runs the workspace's tests (one release build, shared with `make build`): the unit tests, the
# end-to-end suites and the cluster tier (test/cluster: a kubelet v1.36, which needs containerd
# 2.2+) against the pinned containerd 2.x (test/tools/versions.env), then the end-to-end suites
# again against Debian's containerd 1.6 (the oldest supported). Closes with
# one line that totals every test binary of both runs: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

containerd2=$(bash test/tools/build.sh containerd)
WASMCELL_CRICTL=$(bash test/tools/build.sh crictl)/crictl
WASMCELL_CRITEST=$(bash test/tools/build.sh critest)/critest
WASMCELL_NERDCTL=$(bash test/tools/build.sh nerdctl)/nerdctl
WASMCELL_CRANE=$(bash test/tools/build.sh crane)/crane
WASMCELL_KUBERNETES_VALIDATE=$(bash test/tools/build.sh kubernetes-validate)/kubernetes-validate
WASMCELL_KUBECTL=$(bash test/tools/build.sh kubernetes)/kubectl
WASMCELL_ETCD=$(bash test/tools/build.sh etcd)/etcd
WASMCELL_CNI_PLUGINS=$(bash test/tools/build.sh cni-plugins)
export WASMCELL_CRICTL WASMCELL_CRITEST WASMCELL_NERDCTL WASMCELL_CRANE WASMCELL_KUBERNETES_VALIDATE WASMCELL_KUBECTL \
  WASMCELL_ETCD WASMCELL_CNI_PLUGINS
echo "== unit tests, and the end-to-end suites against $("$containerd2/containerd" --version)"
WASMCELL_CONTAINERD_DIR=$containerd2 cargo test --release --workspace --all-targets 2>&1 \
  | tee -a "$log" || status=$?

echo "== the end-to-end suites against $(/usr/bin/containerd --version)"
WASMCELL_CONTAINERD_DIR=/usr/bin cargo test --release -p wasmcell-e2e --tests 2>&1 \
  | tee -a "$log" || status=$?

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
