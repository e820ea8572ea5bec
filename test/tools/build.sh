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
      echo "tools: unknown tool '$tool' (known: containerd nerdctl crictl crane kubernetes-validate)" >&2
      exit 2
      ;;
  esac
done
