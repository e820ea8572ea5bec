#!/usr/bin/env bash
# Builds the example application's three images as OCI image tarballs into OUT_DIR:
#   app-frontend.tar  wasmcell.dev/examples/app-frontend:0.1.0 (wasm: frontend/app.py)
#   app-backend.tar   wasmcell.dev/examples/app-backend:0.1.0  (wasm: backend/app.py)
#   app-redis.tar     wasmcell.dev/examples/app-redis:0.1.0    (native: Debian's redis-server)
# The Python handlers are made into components with componentize-py (from PyPI, by
# benches/scripts/componentize.sh); Redis is Debian's, its binary and the libraries it links
# taken from Debian's packages (downloaded, not installed on this machine).
# Import them with `ctr -n k8s.io image import --all-platforms FILE` on each node (or push them
# to your registry), then `kubectl apply -k deploy/kubernetes/examples/app`.
#
# Usage: build-images.sh WASMCELL_BIN OUT_DIR
set -euo pipefail
wasmcell=$(realpath "${1:?usage: build-images.sh WASMCELL_BIN OUT_DIR}")
out=$(realpath -m "${2:?usage: build-images.sh WASMCELL_BIN OUT_DIR}")
root=$(cd "$(dirname "$0")/../../../.." && pwd)
mkdir -p "$out"
work=$(mktemp -d)
# apt downloads as its own user, which must be able to write here.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

for part in frontend backend; do
  bash "$root/benches/scripts/componentize.sh" "app-$part" "$work/$part.wasm"
  "$wasmcell" image build --name "wasmcell.dev/examples/app-$part:0.1.0" \
    --wasm "$work/$part.wasm" --extra-platform linux/amd64 -o "$out/app-$part.tar"
done

# Redis: the redis-tools package holds the server (redis-server is its binary under another
# name: it picks its role by the name it is run as); its libraries come from their packages
# when this machine lacks them, else from this machine's (the same Debian release's).
mkdir -m 777 "$work/debs"
(cd "$work/debs" && apt-get download -q redis-tools libjemalloc2 liblzf1 >/dev/null)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
server=$work/root/usr/bin/redis-check-rdb
files=(--file "$server:/usr/bin/redis-server")
libs=$(LD_LIBRARY_PATH="$work/root/usr/lib/x86_64-linux-gnu" ldd "$server" |
  sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/lib64\/[^ ]*\) .*/\1/p')
for lib in $libs; do
  name=$(basename "$lib")
  case "$lib" in
    /lib64/*) files+=(--file "$(realpath "$lib"):$lib") ;;
    *) files+=(--file "$(realpath "$lib"):/lib/x86_64-linux-gnu/$name") ;;
  esac
done
"$wasmcell" image build --name wasmcell.dev/examples/app-redis:0.1.0 --platform linux/amd64 \
  "${files[@]}" --entrypoint /usr/bin/redis-server -o "$out/app-redis.tar"
ls -l "$out"/app-*.tar
