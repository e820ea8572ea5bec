#!/usr/bin/env bash
# Builds one of the programs in benches/workloads into a component:
#   large-component: large-component/app.py, a wasi:cli/command (componentize-py, which embeds
#                    CPython: about 18 MiB of wasm);
#   python-repl:     python-repl/app.py, a wasi:cli/command that runs Python's interactive
#                    prompt (componentize-py), for the terminal tests;
#   http-handler:    http-handler/app.py, a wasi:http/proxy handler (componentize-py);
#   js-handler:      js-handler/app.js, a wasi:http/proxy handler (componentize-js, which embeds
#                    SpiderMonkey: about 13 MiB);
#   app-frontend:    the example application's frontend (deploy/kubernetes/examples/app), a
#                    wasi:http/proxy handler (componentize-py);
#   app-backend:     its backend, a wasi:http/proxy handler that also imports wasi:sockets (TCP
#                    and name lookup) to reach Redis (componentize-py).
#
# componentize-py comes from PyPI into a venv under target/bench, componentize-js from the npm
# registry into target/bench too. The WIT comes from the sources of the wasmtime-wasi (wasi:cli)
# and wasmtime-wasi-http (wasi:http) crates the workspace builds with, so the component imports
# the WASI version the shim's wasmtime provides.
# Usage: componentize.sh PROGRAM OUTPUT.wasm (a program above)
set -euo pipefail

usage="usage: componentize.sh large-component|python-repl|http-handler|js-handler|app-frontend|app-backend OUTPUT.wasm"
program=${1:?$usage}
out=$(realpath -m "${2:?$usage}")
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$root/target/bench/venv
componentize_py_version=0.25.1
js_tools=$root/target/bench/componentize-js
componentize_js_version=0.23.0

# The WIT of the crate named $1 (below $2 of its sources).
wit_of() {
  local manifest
  manifest=$(cd "$root" && cargo metadata --format-version 1 --locked 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == sys.argv[1]))' "$1")
  echo "$(dirname "$manifest")/$2"
}

# The version of WASI package $2 (cli, http) that WIT directory $1 declares.
package_version() {
  sed -n "s/^package wasi:$2@\([0-9.]*\);/\1/p" "$1/deps/$2.wit"
}

# Copies the built component $1 to the output, built for world $2.
publish() {
  mkdir -p "$(dirname "$out")"
  cp "$1" "$out.tmp" && mv "$out.tmp" "$out"
  echo "componentize: $out ($(stat -c %s "$out") bytes, $2)"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

componentize_js() {
  local installed=$js_tools/node_modules/@bytecodealliance/componentize-js/package.json
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "componentize: installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q nodejs npm
  fi
  if [ ! -f "$installed" ] ||
    [ "$(node -p "require('$installed').version")" != "$componentize_js_version" ]; then
    echo "componentize: installing componentize-js $componentize_js_version from npm into $js_tools"
    rm -rf "$js_tools" && mkdir -p "$js_tools"
    npm install --prefix "$js_tools" --no-audit --no-fund --loglevel=error \
      "@bytecodealliance/componentize-js@$componentize_js_version" >/dev/null
  fi
  # componentize-js's engine (StarlingMonkey) is built against one wasi:http release and
  # exports exactly that version of the handler, so the world must name the same one. Patch
  # releases of wasi:http 0.2 only add items (each marked @since), so wasmtime's newer WIT,
  # relabelled, describes it; wasmtime serves any 0.2 guest.
  local engine=$js_tools/node_modules/@bytecodealliance/componentize-js/lib/starlingmonkey_embedding.wasm
  local version host_version wit f
  version=$(grep -aoE 'wasi:http/incoming-handler@0\.2\.[0-9]+' "$engine" | head -1 | sed 's/.*@//')
  [ -n "$version" ] || { echo "componentize: no wasi:http version in $engine" >&2; exit 1; }
  wit=$(wit_of wasmtime-wasi-http wit)
  host_version=$(package_version "$wit" http)
  mkdir -p "$work/wit/deps"
  for f in "$wit"/deps/*.wit; do
    sed -e "s/@$host_version\b/@$version/g" -e "s/version = $host_version\b/version = $version/g" \
      "$f" >"$work/wit/deps/$(basename "$f")"
  done
  printf 'package wasmcell:js-handler;\n\nworld handler {\n  include wasi:http/proxy@%s;\n}\n' \
    "$version" >"$work/wit/world.wit"
  # componentize-js's API, from a module beside its node_modules so that the import resolves.
  cat >"$js_tools/componentize.mjs" <<'JS'
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
const { component } = await componentize({ sourcePath, witPath, worldName });
await writeFile(out, component);
JS
  node "$js_tools/componentize.mjs" "$root/benches/workloads/js-handler/app.js" "$work/wit" \
    handler "$work/app.wasm"
  publish "$work/app.wasm" "wasi:http/proxy@$version"
}

componentize_py() {
  local wit=$1 world=$2
  if ! python3 -m venv --help >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1; then
    echo "componentize: installing python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q python3-venv
  fi
  # A venv made elsewhere (the tree moved) has scripts that name another interpreter: remake it.
  if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -qF "$componentize_py_version"; then
    echo "componentize: installing componentize-py $componentize_py_version from PyPI into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "componentize-py==$componentize_py_version"
  fi
  case "$program" in
    app-*) cp "$root/deploy/kubernetes/examples/app/${program#app-}/app.py" "$work/" ;;
    *) cp "$root/benches/workloads/$program/app.py" "$work/" ;;
  esac
  (
    cd "$work"
    "$venv/bin/componentize-py" -d "$wit" -w "$world" bindings . >/dev/null
    "$venv/bin/componentize-py" -d "$wit" -w "$world" componentize app -o app.wasm >/dev/null
  )
  publish "$work/app.wasm" "$world"
}

case "$program" in
  large-component | python-repl)
    wit=$(wit_of wasmtime-wasi src/p2/wit)
    version=$(package_version "$wit" cli)
    [ -n "$version" ] || { echo "componentize: no wasi:cli version in $wit" >&2; exit 1; }
    componentize_py "$wit" "wasi:cli/command@$version"
    ;;
  http-handler)
    wit=$(wit_of wasmtime-wasi-http wit)
    version=$(package_version "$wit" http)
    [ -n "$version" ] || { echo "componentize: no wasi:http version in $wit" >&2; exit 1; }
    componentize_py "$wit" "wasi:http/proxy@$version"
    ;;
  js-handler) componentize_js ;;
  app-frontend)
    wit=$(wit_of wasmtime-wasi-http wit)
    componentize_py "$wit" "wasi:http/proxy@$(package_version "$wit" http)"
    ;;
  app-backend)
    # wasi:http/proxy plus the wasi:sockets interfaces a TCP client needs.
    wit=$(wit_of wasmtime-wasi-http wit)
    version=$(package_version "$wit" http)
    mkdir -p "$work/wit/deps"
    cp "$wit"/deps/*.wit "$work/wit/deps/"
    {
      printf 'package wasmcell:example-app;\n\nworld backend {\n  include wasi:http/proxy@%s;\n' "$version"
      for i in instance-network ip-name-lookup tcp-create-socket tcp; do
        printf '  import wasi:sockets/%s@%s;\n' "$i" "$version"
      done
      printf '}\n'
    } >"$work/wit/world.wit"
    componentize_py "$work/wit" "wasmcell:example-app/backend"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
