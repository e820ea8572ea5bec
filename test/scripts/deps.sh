#!/usr/bin/env bash
# Installs the Debian packages wasmcell's build and tests need, only those that are missing.
set -euo pipefail

packages=(containerd runc protobuf-compiler clang lld wasi-libc libclang-rt-14-dev-wasm32 busybox-static iproute2 libseccomp-dev openssl python3-venv
  # The VM tier (test/vm): the machine is debootstrapped and booted with qemu; its disks are
  # made with mkfs.ext4 and read with debugfs.
  debootstrap qemu-system-x86 e2fsprogs
  # The fuzz targets (fuzz/): libFuzzer is C++, built by the libfuzzer-sys crate with `c++`.
  g++
  # wasi:http: curl is the tests' HTTP/2 (h2c) and upload client, wrk the bench's load.
  curl wrk
  # The cluster tier's kube-proxy programs the node's Services with iptables (nf_tables).
  iptables)
need=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: everything is installed"
  exit 0
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${need[@]}"
