#!/usr/bin/env bash
# Builds the benchmark's large program (benches/workloads/large-component/app.py) into a
# wasi:cli/command component with componentize-py, which embeds CPython (about 18 MiB of wasm).
#
# componentize-py comes from PyPI into a venv under target/bench; the WIT of wasi:cli comes from
# the sources of the wasmtime-wasi crate the workspace builds with (so the component imports the
# WASI version the shim's wasmtime provides). Usage: large-component.sh OUTPUT.wasm
set -euo pipefail

out=$(realpath -m "${1:?usage: large-component.sh OUTPUT.wasm}")
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$root/target/bench/venv
componentize_py_version=0.25.1

if ! python3 -m venv --help >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1; then
  echo "large-component: installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q python3-venv
fi
if [ ! -x "$venv/bin/componentize-py" ]; then
  echo "large-component: installing componentize-py $componentize_py_version from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "componentize-py==$componentize_py_version"
fi

# The wasmtime-wasi crate's WIT: package wasi:cli and its dependencies.
manifest=$(cd "$root" && cargo metadata --format-version 1 --locked 2>/dev/null |
  python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "wasmtime-wasi"))')
wit=$(dirname "$manifest")/src/p2/wit
version=$(sed -n 's/^package wasi:cli@\([0-9.]*\);/\1/p' "$wit/deps/cli.wit")
[ -n "$version" ] || { echo "large-component: no wasi:cli package in $wit" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/benches/workloads/large-component/app.py" "$work/"
cd "$work"
"$venv/bin/componentize-py" -d "$wit" -w "wasi:cli/command@$version" bindings . >/dev/null
"$venv/bin/componentize-py" -d "$wit" -w "wasi:cli/command@$version" componentize app -o app.wasm >/dev/null
mkdir -p "$(dirname "$out")"
cp app.wasm "$out.tmp" && mv "$out.tmp" "$out"
echo "large-component: $out ($(stat -c %s "$out") bytes, wasi:cli@$version)"
