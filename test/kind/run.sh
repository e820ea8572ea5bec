#!/usr/bin/env bash
# The cluster tier's workload checks on kind, for machines with Docker (the test machines of
# this repository have no Docker engine: `make test` runs the same checks on a single-node
# cluster of the same Kubernetes binaries instead, test/cluster). It
#   1. builds a kind node image with wasmcell (Dockerfile) from `make build`'s binaries,
#   2. creates a two-node cluster (kind-config.yaml) with kind from versions.env,
#   3. loads the example images (built here with `wasmcell image build`) into the nodes,
#   4. applies deploy/kubernetes's RuntimeClass and examples and checks them: the Job
#      succeeds with its output in the logs, the Deployment scales 1 -> 10 -> 0, the sidecar
#      pod's wasm service is Ready and the sidecar read its greeting,
#   5. deletes the cluster (also when a check fails; KEEP=1 keeps it).
#
#   make build fixtures && bash test/kind/run.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../tools/versions.env
source "$repo/test/tools/versions.env"
bin="$repo/target/$(rustc -vV | sed -n 's/^host: //p')/release"
work=$(mktemp -d)
cluster=wasmcell
kubectl=(kubectl --context "kind-$cluster")

command -v docker >/dev/null || { echo "run.sh: needs Docker (kind runs its nodes as containers)" >&2; exit 1; }
[ -x "$bin/wasmcell" ] || { echo "run.sh: no $bin/wasmcell: run make build first" >&2; exit 1; }
[ -x "$bin/wasmcell-fixtures" ] || { echo "run.sh: no $bin/wasmcell-fixtures: run make fixtures first" >&2; exit 1; }
kind=$(go env GOPATH)/bin/kind
[ -x "$kind" ] && "$kind" version | grep -q "$KIND_VERSION" || go install "sigs.k8s.io/kind@$KIND_VERSION"

cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    "${kubectl[@]}" get pods -A -o wide || true
    "${kubectl[@]}" get events -A --sort-by=.lastTimestamp | tail -40 || true
  fi
  [ "${KEEP:-0}" = 1 ] || "$kind" delete cluster --name "$cluster" || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

echo "== node image"
cp "$bin/wasmcell" "$bin/containerd-shim-wasmcell-v1" "$work/"
docker build -t wasmcell/kind-node:dev --build-arg "KIND_NODE_IMAGE=$KIND_NODE_IMAGE" \
  -f "$repo/test/kind/Dockerfile" "$work"

echo "== cluster"
"$kind" create cluster --name "$cluster" --image wasmcell/kind-node:dev \
  --config "$repo/test/kind/kind-config.yaml" --wait 120s

echo "== images"
# The test programs (probe.wasm, server.wasm...), as the test build made them.
"$bin/wasmcell-fixtures" "$work"
image() { # NAME OUT ARGS...: build an image for the nodes' platform and load it
  local name=$1 out=$work/$2; shift 2
  "$bin/wasmcell" image build --name "$name" --extra-platform linux/amd64 "$@" -o "$out"
  "$kind" load image-archive "$out" --name "$cluster"
}
image wasmcell.dev/examples/probe:0.1.0 probe.tar --wasm "$work/probe.wasm"
image wasmcell.dev/examples/server:0.1.0 server.tar --wasm "$work/server.wasm"
"$bin/wasmcell" image build --name wasmcell.dev/examples/busybox:0.1.0 --platform linux/amd64 \
  --file /bin/busybox:/bin/busybox --entrypoint /bin/busybox -o "$work/busybox.tar"
"$kind" load image-archive "$work/busybox.tar" --name "$cluster"

echo "== checks"
"${kubectl[@]}" apply -f "$repo/deploy/kubernetes/runtimeclass.yaml"
"${kubectl[@]}" apply -k "$repo/deploy/kubernetes/examples"
"${kubectl[@]}" wait --for=condition=complete job/wasm-hello --timeout=120s
[ "$("${kubectl[@]}" logs job/wasm-hello)" = "hello from C" ]
"${kubectl[@]}" rollout status deployment/wasm-sleeper --timeout=120s
"${kubectl[@]}" scale deployment/wasm-sleeper --replicas 10
"${kubectl[@]}" rollout status deployment/wasm-sleeper --timeout=180s
"${kubectl[@]}" scale deployment/wasm-sleeper --replicas 0
"${kubectl[@]}" wait --for=delete pod -l app=wasm-sleeper --timeout=120s
"${kubectl[@]}" wait --for=condition=ready pod/wasm-with-sidecar --timeout=120s ||
  "${kubectl[@]}" wait --for=jsonpath='{.status.containerStatuses[?(@.name=="server")].ready}'=true \
    pod/wasm-with-sidecar --timeout=60s
"${kubectl[@]}" logs wasm-with-sidecar -c sidecar | grep -q "hello from the guest's network namespace"
echo "run.sh: every check passed on kind $KIND_VERSION ($KIND_NODE_IMAGE)"
