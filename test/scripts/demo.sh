#!/usr/bin/env bash
# Imports a hello-world wasm image into containerd and runs it under the wasmcell shim with ctr.
# Uses the running containerd at /run/containerd/containerd.sock, or starts one if none answers.
set -euo pipefail
cd "$(dirname "$0")/../.."

sock=/run/containerd/containerd.sock
ctr=(ctr --address "$sock")
if ! "${ctr[@]}" version >/dev/null 2>&1; then
  echo "demo: no containerd answers at $sock; starting one (log: /var/log/wasmcell-demo-containerd.log)"
  nohup containerd >/var/log/wasmcell-demo-containerd.log 2>&1 &
  for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${BIN:-target/release}/wasmcell-fixtures" "$work"
wasmcell image build --name wasmcell.demo/hello:latest --wasm "$work/probe.wasm" \
  --arg hello -o "$work/hello.tar" >/dev/null
"${ctr[@]}" image import --all-platforms "$work/hello.tar" >/dev/null

echo "demo: ctr run --rm --runtime io.containerd.wasmcell.v1 --platform wasi/wasm wasmcell.demo/hello:latest"
"${ctr[@]}" run --rm --runtime io.containerd.wasmcell.v1 --platform wasi/wasm \
  wasmcell.demo/hello:latest "wasmcell-demo-$$" </dev/null
