#!/usr/bin/env bash
# Builds one of the benchmark's Python programs into a component with componentize-py, which
# embeds CPython (about 18 MiB of wasm):
#   large-component: benches/workloads/large-component/app.py, a wasi:cli/command;
#   http-handler:    benches/workloads/http-handler/app.py, a wasi:http/proxy handler.
#
# componentize-py comes from PyPI into a venv under target/bench; the WIT comes from the sources
# of the wasmtime-wasi (wasi:cli) and wasmtime-wasi-http (wasi:http) crates the workspace builds
# with, so the component imports the WASI version the shim's wasmtime provides.
# Usage: componentize.sh large-component|http-handler OUTPUT.wasm
set -euo pipefail

usage="usage: componentize.sh large-component|http-handler OUTPUT.wasm"
program=${1:?$usage}
out=$(realpath -m "${2:?$usage}")
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$root/target/bench/venv
componentize_py_version=0.25.1

if ! python3 -m venv --help >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1; then
  echo "componentize: installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q python3-venv
fi
if [ ! -x "$venv/bin/componentize-py" ]; then
  echo "componentize: installing componentize-py $componentize_py_version from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "componentize-py==$componentize_py_version"
fi

# The WIT of the crate named $1 (below $2 of its sources).
wit_of() {
  local manifest
  manifest=$(cd "$root" && cargo metadata --format-version 1 --locked 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == sys.argv[1]))' "$1")
  echo "$(dirname "$manifest")/$2"
}
case "$program" in
  large-component)
    wit=$(wit_of wasmtime-wasi src/p2/wit)
    version=$(sed -n 's/^package wasi:cli@\([0-9.]*\);/\1/p' "$wit/deps/cli.wit")
    world="wasi:cli/command@$version"
    ;;
  http-handler)
    wit=$(wit_of wasmtime-wasi-http wit)
    version=$(sed -n 's/^package wasi:http@\([0-9.]*\);/\1/p' "$wit/deps/http.wit")
    world="wasi:http/proxy@$version"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[ -n "$version" ] || { echo "componentize: no WASI package version in $wit" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/benches/workloads/$program/app.py" "$work/"
cd "$work"
"$venv/bin/componentize-py" -d "$wit" -w "$world" bindings . >/dev/null
"$venv/bin/componentize-py" -d "$wit" -w "$world" componentize app -o app.wasm >/dev/null
mkdir -p "$(dirname "$out")"
cp app.wasm "$out.tmp" && mv "$out.tmp" "$out"
echo "componentize: $out ($(stat -c %s "$out") bytes, $world)"
