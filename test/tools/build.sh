#!/usr/bin/env bash
# Builds the pinned third-party tools (test/tools/versions.env) from the Go module proxy (and
# one from PyPI, one from crates.io) into a cache outside the repository, one directory per tool and version, and
# prints each tool's bin directory. A tool already in the cache is not built again.
#
#   test/tools/build.sh containerd crictl critest nerdctl crane kubernetes etcd cni-plugins kubernetes-validate
#
# The cache is $WASMCELL_TOOLS_CACHE (default /var/cache/wasmcell-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${WASMCELL_TOOLS_CACHE:-/var/cache/wasmcell-tools}
export GOFLAGS="-buildvcs=false -modcacherw"

# tool NAME VERSION BUILDER: runs `BUILDER DIR` once into DIR=$cache/NAME-VERSION (its binaries
# go to DIR/bin, a scratch module may use DIR/wrapper), then prints DIR/bin. A build that fails
# leaves no marker, so the next run builds again; the marker holds a hash of the builder's
# text, so a changed recipe (another plugin, another flag) builds again too (an empty marker,
# from before markers held one, is taken as current).
tool() {
  local name=$1 version=$2 builder=$3 dir="$cache/$1-$2" recipe
  recipe=$(declare -f "$builder" | sha256sum | cut -c1-16)
  if [ ! -f "$dir/.built" ] || { [ -s "$dir/.built" ] && [ "$(cat "$dir/.built")" != "$recipe" ]; }; then
    echo "tools: building $name $version into $dir (once; later runs reuse it)" >&2
    rm -rf "$dir"
    mkdir -p "$dir/bin" "$dir/wrapper"
    local started=$SECONDS
    ("$builder" "$dir") >&2
    echo "$recipe" >"$dir/.built"
    echo "tools: $name $version built in $((SECONDS - started)) s" >&2
  fi
  echo "$dir/bin"
}

# Every containerd of the matrix: `version` is tool()'s (bash's locals reach the functions
# they call), so one recipe builds each release; 1.x is the module without /v2.
# 1.x's go.mod has exclude directives, which `go install pkg@version` refuses: a scratch module
# requires it and builds its commands.
build_containerd() {
  local pkg=github.com/containerd/containerd/v2 v=$version cmds=(containerd ctr containerd-shim-runc-v2)
  local ldflags
  if [[ $v == v1.* ]]; then
    pkg=github.com/containerd/containerd
    ldflags="-s -w -X $pkg/version.Version=$v -X $pkg/version.Revision=go-module-proxy"
    printf 'module wasmcell.test/tools/containerd\n\ngo 1.25\n' >"$1/wrapper/go.mod"
    cd "$1/wrapper"
    for cmd in "${cmds[@]}"; do go get "$pkg/cmd/$cmd@$v"; done
    for cmd in "${cmds[@]}"; do
      go build -tags no_btrfs -ldflags "$ldflags" -o "$1/bin/$cmd" "$pkg/cmd/$cmd"
    done
    return
  fi
  ldflags="-s -w -X $pkg/version.Version=$v -X $pkg/version.Revision=go-module-proxy"
  local targets=()
  for cmd in "${cmds[@]}"; do targets+=("$pkg/cmd/$cmd@$v"); done
  GOBIN="$1/bin" go install -tags no_btrfs -ldflags "$ldflags" "${targets[@]}"
}

build_crictl() {
  local pkg=sigs.k8s.io/cri-tools v=$CRI_TOOLS_VERSION
  GOBIN="$1/bin" go install -ldflags "-s -w -X $pkg/pkg/version.Version=$v" "$pkg/cmd/crictl@$v"
}

# critest, cri-tools' CRI conformance suite, is a Go test binary (`go test -c`), which `go
# install` cannot make: a scratch module requires cri-tools and compiles its test package.
build_critest() {
  local pkg=sigs.k8s.io/cri-tools v=$CRI_TOOLS_VERSION
  printf 'module wasmcell.test/tools/critest\n\ngo 1.25\n' >"$1/wrapper/go.mod"
  cd "$1/wrapper"
  go get -t "$pkg/cmd/critest@$v"
  go test -c -o "$1/bin/critest" -ldflags "-s -w -X $pkg/pkg/version.Version=$v" "$pkg/cmd/critest"
}

build_crane() {
  GOBIN="$1/bin" go install -ldflags "-s -w" \
    "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
}

# nerdctl's go.mod replaces its test-only module tigron with a directory of its repository, so
# `go install nerdctl@version` refuses it: a wrapper module requires nerdctl and points tigron
# at an empty stand-in (no package nerdctl's binary builds from imports it).
build_nerdctl() {
  local pkg=github.com/containerd/nerdctl/v2 v=$NERDCTL_VERSION
  mkdir -p "$1/wrapper/tigron"
  echo 'module github.com/containerd/nerdctl/mod/tigron' >"$1/wrapper/tigron/go.mod"
  printf 'module wasmcell.test/tools/nerdctl\n\ngo 1.24\n\nreplace %s v0.0.0 => ./tigron\n' \
    github.com/containerd/nerdctl/mod/tigron >"$1/wrapper/go.mod"
  cd "$1/wrapper"
  go get "$pkg/cmd/nerdctl@$v"
  go build -o "$1/bin/nerdctl" -ldflags "-s -w -X $pkg/pkg/version.Version=$v" "$pkg/cmd/nerdctl"
}

# Kubernetes' own go.mod points every k8s.io staging module at a directory of its repository,
# so `go install` refuses it: a wrapper module requires k8s.io/kubernetes and replaces each
# staging module (the list is read from that go.mod in the module cache) with its published
# v0.<minor>.<patch>. The version variables are set as Kubernetes' own build sets them.
build_kubernetes() {
  build_kubernetes_commands "$1" kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
}

# kube-proxy, from the same wrapper module: a tool of its own, so that the cluster binaries
# cached before it came are reused.
build_kube_proxy() {
  build_kubernetes_commands "$1" kube-proxy
}

# build_kubernetes_commands DIR CMD...: Kubernetes' commands CMD into DIR/bin.
build_kubernetes_commands() {
  local dir=$1
  shift
  local v=$KUBERNETES_VERSION staging="v0.${KUBERNETES_VERSION#v1.}" gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  {
    printf 'module wasmcell.test/tools/kubernetes\n\ngo 1.25\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$v"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod" |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    printf ')\n'
  } >"$dir/wrapper/go.mod"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  local cmds=("$@") pkgs=() cmd
  for cmd in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd@$v"); done
  cd "$dir/wrapper"
  go get "${pkgs[@]}"
  for cmd in "${cmds[@]}"; do
    echo "tools: building $cmd"
    go build -o "$dir/bin/$cmd" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$cmd"
  done
}

# CoreDNS, static (its go.mod has no replace lines): the cluster tier's cluster DNS. Built as
# CoreDNS's own Makefile builds it.
build_coredns() {
  local pkg=github.com/coredns/coredns v=$COREDNS_VERSION
  CGO_ENABLED=0 GOBIN="$1/bin" go install -tags grpcnotrace \
    -ldflags "-s -w -X $pkg/coremain.GitCommit=$v" "$pkg@$v"
}

# Prometheus with Kubernetes service discovery only (its build tags leave the cloud providers'
# out), through a wrapper module, without the web UI's assets (the API is all the tests use).
build_prometheus() {
  printf 'module wasmcell.test/tools/prometheus\n\ngo 1.25\n' >"$1/wrapper/go.mod"
  cd "$1/wrapper"
  local pkg=github.com/prometheus/prometheus
  go get "$pkg/cmd/prometheus@$PROMETHEUS_VERSION"
  CGO_ENABLED=0 go build -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
    -o "$1/bin/prometheus" "$pkg/cmd/prometheus"
}

# etcd's root module (whose main is the etcd binary) has replace lines: a wrapper module's own
# main calls etcdmain, which the server module publishes.
build_etcd() {
  printf 'module wasmcell.test/tools/etcd\n\ngo 1.25\n' >"$1/wrapper/go.mod"
  cat >"$1/wrapper/main.go" <<'GO'
// The etcd server binary: what etcd's own main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cd "$1/wrapper"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  go build -o "$1/bin/etcd" -ldflags "-s -w" .
}

build_cni_plugins() {
  local pkg=github.com/containernetworking/plugins v=$CNI_PLUGINS_VERSION
  GOBIN="$1/bin" go install -ldflags "-s -w -X $pkg/pkg/utils/buildversion.BuildVersion=$v" \
    "$pkg/plugins/main/bridge@$v" "$pkg/plugins/main/loopback@$v" "$pkg/plugins/ipam/host-local@$v" \
    "$pkg/plugins/meta/portmap@$v" "$pkg/plugins/meta/firewall@$v" "$pkg/plugins/meta/tuning@$v"
}

# cargo-fuzz (crates.io), for the fuzz targets in fuzz/ (test/scripts/fuzz.sh).
build_cargo_fuzz() {
  cargo install --quiet --locked --root "$1" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
}

# cargo-audit (crates.io): checks Cargo.lock against the RustSec advisory database, read offline
# from the snapshot in ../shared/advisory-db (test/scripts/audit.sh).
build_cargo_audit() {
  cargo install --quiet --locked --root "$1" cargo-audit --version "$CARGO_AUDIT_VERSION"
}

build_wasmtime_cli() {
  cargo install --quiet --locked --root "$1" wasmtime-cli --version "$WASMTIME_CLI_VERSION" \
    --no-default-features \
    --features run,serve,cranelift,parallel-compilation,pooling-allocator,cache,wat,component-model,component-model-async,addr2line
}

build_kubernetes_validate() {
  python3 -m venv "$1/venv"
  "$1/venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  ln -s ../venv/bin/kubernetes-validate "$1/bin/kubernetes-validate"
}

for name in "$@"; do
  case "$name" in
    containerd) tool containerd "$CONTAINERD_VERSION" build_containerd ;;
    containerd-2.4) tool containerd "$CONTAINERD_2_4_VERSION" build_containerd ;;
    containerd-2.2) tool containerd "$CONTAINERD_2_2_VERSION" build_containerd ;;
    containerd-1.7) tool containerd "$CONTAINERD_1_7_VERSION" build_containerd ;;
    crictl) tool crictl "$CRI_TOOLS_VERSION" build_crictl ;;
    critest) tool critest "$CRI_TOOLS_VERSION" build_critest ;;
    crane) tool crane "$CRANE_VERSION" build_crane ;;
    nerdctl) tool nerdctl "$NERDCTL_VERSION" build_nerdctl ;;
    kubernetes) tool kubernetes "$KUBERNETES_VERSION" build_kubernetes ;;
    kube-proxy) tool kube-proxy "$KUBERNETES_VERSION" build_kube_proxy ;;
    coredns) tool coredns "$COREDNS_VERSION" build_coredns ;;
    etcd) tool etcd "$ETCD_VERSION" build_etcd ;;
    prometheus) tool prometheus "$PROMETHEUS_VERSION" build_prometheus ;;
    cni-plugins) tool cni-plugins "$CNI_PLUGINS_VERSION" build_cni_plugins ;;
    kubernetes-validate) tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" build_kubernetes_validate ;;
    cargo-fuzz) tool cargo-fuzz "$CARGO_FUZZ_VERSION" build_cargo_fuzz ;;
    cargo-audit) tool cargo-audit "$CARGO_AUDIT_VERSION" build_cargo_audit ;;
    wasmtime-cli) tool wasmtime-cli "$WASMTIME_CLI_VERSION" build_wasmtime_cli ;;
    *)
      echo "tools: unknown tool '$name' (known: containerd containerd-2.4 containerd-2.2 containerd-1.7 crictl critest crane nerdctl kubernetes etcd cni-plugins kubernetes-validate cargo-fuzz cargo-audit wasmtime-cli)" >&2
      exit 2
      ;;
  esac
done
