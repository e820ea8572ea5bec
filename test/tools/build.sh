#!/usr/bin/env bash
# Builds the pinned third-party tools (test/tools/versions.env) from the Go module proxy (and
# one from PyPI) into a cache outside the repository, one directory per tool and version, and prints each tool's bin
# directory. A tool already in the cache is not built again.
#
#   test/tools/build.sh containerd nerdctl crictl crane kubernetes-validate
#
# The cache is $WASMCELL_TOOLS_CACHE (default /var/cache/wasmcell-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${WASMCELL_TOOLS_CACHE:-/var/cache/wasmcell-tools}

# build NAME VERSION MODULE [go install arguments...]: go install into $cache/NAME-VERSION/bin.
build() {
  local name=$1 version=$2 dir="$cache/$1-$2"
  shift 2
  if [ -f "$dir/.built" ]; then
    echo "$dir/bin"
    return
  fi
  echo "tools: building $name $version into $dir (once; later runs reuse it)" >&2
  rm -rf "$dir"
  mkdir -p "$dir/bin"
  local started=$SECONDS
  GOBIN="$dir/bin" GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED="${CGO_ENABLED:-1}" \
    go install "$@" >&2
  touch "$dir/.built"
  echo "tools: $name $version built in $((SECONDS - started)) s" >&2
  echo "$dir/bin"
}

# nerdctl's go.mod replaces its test-only module tigron with a directory of its repository, so
# `go install nerdctl@version` refuses it: a wrapper module requires nerdctl and points tigron
# at an empty stand-in (no package nerdctl's binary builds from imports it).
build_nerdctl() {
  local version=$NERDCTL_VERSION dir="$cache/nerdctl-$NERDCTL_VERSION"
  local pkg=github.com/containerd/nerdctl/v2
  if [ -f "$dir/.built" ]; then
    echo "$dir/bin"
    return
  fi
  echo "tools: building nerdctl $version into $dir (once; later runs reuse it)" >&2
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/wrapper/tigron"
  local started=$SECONDS
  echo 'module github.com/containerd/nerdctl/mod/tigron' >"$dir/wrapper/tigron/go.mod"
  cat >"$dir/wrapper/go.mod" <<MOD
module wasmcell.test/tools/nerdctl

go 1.24

replace github.com/containerd/nerdctl/mod/tigron v0.0.0 => ./tigron
MOD
  (
    cd "$dir/wrapper"
    export GOFLAGS="-buildvcs=false -modcacherw"
    go get "$pkg/cmd/nerdctl@$version" >&2
    go build -o "$dir/bin/nerdctl" \
      -ldflags "-s -w -X $pkg/pkg/version.Version=$version" "$pkg/cmd/nerdctl" >&2
  )
  touch "$dir/.built"
  echo "tools: nerdctl $version built in $((SECONDS - started)) s" >&2
  echo "$dir/bin"
}

# Kubernetes' own go.mod points every k8s.io staging module at a directory of its repository,
# so `go install` refuses it: a wrapper module requires k8s.io/kubernetes and replaces each
# staging module (the list is read from that go.mod in the module cache) with its published
# v0.<minor>.<patch>. The version variables are set as Kubernetes' own build sets them.
build_kubernetes() {
  local version=$KUBERNETES_VERSION dir="$cache/kubernetes-$KUBERNETES_VERSION"
  if [ -f "$dir/.built" ]; then
    echo "$dir/bin"
    return
  fi
  echo "tools: building Kubernetes $version into $dir (once; later runs reuse it)" >&2
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/wrapper"
  local started=$SECONDS staging="v0.${version#v1.}"
  local gomod
  gomod=$(GOFLAGS=-modcacherw go mod download -json "k8s.io/kubernetes@$version" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  {
    printf 'module wasmcell.test/tools/kubernetes\n\ngo 1.25\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$version"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod" |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    printf ')\n'
  } >"$dir/wrapper/go.mod"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(echo "$version" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  (
    cd "$dir/wrapper"
    export GOFLAGS="-buildvcs=false -modcacherw"
    local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
    local pkgs=()
    for cmd in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd@$version"); done
    go get "${pkgs[@]}" >&2
    for cmd in "${cmds[@]}"; do
      echo "tools: building $cmd" >&2
      go build -o "$dir/bin/$cmd" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$cmd" >&2
    done
  )
  touch "$dir/.built"
  echo "tools: Kubernetes $version built in $((SECONDS - started)) s" >&2
  echo "$dir/bin"
}

# etcd's root module (whose main is the etcd binary) has replace lines: a wrapper module's own
# main calls etcdmain, which the server module publishes.
build_etcd() {
  local version=$ETCD_VERSION dir="$cache/etcd-$ETCD_VERSION"
  if [ -f "$dir/.built" ]; then
    echo "$dir/bin"
    return
  fi
  echo "tools: building etcd $version into $dir (once; later runs reuse it)" >&2
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/wrapper"
  local started=$SECONDS
  printf 'module wasmcell.test/tools/etcd\n\ngo 1.25\n' >"$dir/wrapper/go.mod"
  cat >"$dir/wrapper/main.go" <<'GO'
// The etcd server binary: what etcd's own main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$dir/wrapper"
    export GOFLAGS="-buildvcs=false -modcacherw"
    go get "go.etcd.io/etcd/server/v3@$version" >&2
    go mod tidy >&2
    go build -o "$dir/bin/etcd" -ldflags "-s -w" . >&2
  )
  touch "$dir/.built"
  echo "tools: etcd $version built in $((SECONDS - started)) s" >&2
  echo "$dir/bin"
}

for tool in "$@"; do
  case "$tool" in
    containerd)
      pkg=github.com/containerd/containerd/v2
      build containerd "$CONTAINERD_VERSION" -tags no_btrfs \
        -ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Revision=go-module-proxy" \
        "$pkg/cmd/containerd@$CONTAINERD_VERSION" \
        "$pkg/cmd/ctr@$CONTAINERD_VERSION" \
        "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
      ;;
    nerdctl)
      build_nerdctl
      ;;
    crictl)
      pkg=sigs.k8s.io/cri-tools
      build crictl "$CRI_TOOLS_VERSION" \
        -ldflags "-s -w -X $pkg/pkg/version.Version=$CRI_TOOLS_VERSION" \
        "$pkg/cmd/crictl@$CRI_TOOLS_VERSION"
      ;;
    kubernetes)
      build_kubernetes
      ;;
    etcd)
      build_etcd
      ;;
    crane)
      pkg=github.com/google/go-containerregistry
      build crane "$CRANE_VERSION" -ldflags "-s -w" "$pkg/cmd/crane@$CRANE_VERSION"
      ;;
    kubernetes-validate)
      dir="$cache/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
      if [ ! -f "$dir/.built" ]; then
        echo "tools: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $dir" >&2
        rm -rf "$dir"
        python3 -m venv "$dir/venv" >&2
        "$dir/venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
        mkdir -p "$dir/bin"
        ln -s ../venv/bin/kubernetes-validate "$dir/bin/kubernetes-validate"
        touch "$dir/.built"
      fi
      echo "$dir/bin"
      ;;
    *)
      echo "tools: unknown tool '$tool' (known: containerd nerdctl crictl crane kubernetes-validate kubernetes etcd)" >&2
      exit 2
      ;;
  esac
done
