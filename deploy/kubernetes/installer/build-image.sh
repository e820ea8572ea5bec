#!/usr/bin/env bash
# Builds the node installer's image as an OCI image tarball (`make installer-image`): the
# static wasmcell CLI and shim, and the host's static busybox for the DaemonSet's shell.
# Load it on your nodes (`ctr -n k8s.io image import FILE`) or push it to your registry
# (`skopeo copy oci-archive:FILE docker://REGISTRY/wasmcell-installer:VERSION`), and point
# daemonset.yaml's image at it.
#
#   deploy/kubernetes/installer/build-image.sh BIN_DIR OUTPUT.tar
set -euo pipefail
bin=$1 out=$2
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-image: no static busybox at $busybox (apt-get install busybox-static)" >&2; exit 1; }
version=$("$bin/wasmcell" --version | awk '{print $2}')
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
args=(
  --name "wasmcell.dev/wasmcell-installer:$version"
  --platform "linux/$arch"
  --file "$busybox:/bin/busybox"
  --file "$bin/wasmcell:/usr/local/bin/wasmcell"
  --file "$bin/containerd-shim-wasmcell-v1:/usr/local/bin/containerd-shim-wasmcell-v1"
  # After --enter-host, PATH is looked up in the node's filesystem (containerd, systemctl).
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --entrypoint /bin/sh
)
for applet in sh test [ echo touch sleep cat; do
  args+=(--symlink "/bin/$applet:busybox")
done
mkdir -p "$(dirname "$out")"
"$bin/wasmcell" image build "${args[@]}" -o "$out"
