#!/usr/bin/env bash
# Builds the VM tier's machine from Debian packages only: a debootstrapped Debian (minbase,
# systemd as PID 1, containerd, runc, the Debian cloud kernel and its initramfs) in an ext4
# disk image, with the guest runner (guest/) installed. The result is cached outside the repo,
# keyed by this script and the guest files, so a second run builds nothing. Prints the
# directory that holds vmlinuz, initrd.img and rootfs.ext4.
#
#   bash test/vm/build-image.sh            # build if missing, print the directory
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tools/versions.env
source "$here/../tools/versions.env"
cache=${WASMCELL_TOOLS_CACHE:-/var/cache/wasmcell-tools}
key=$( (cat "$0" "$here"/guest/*; echo "$VM_DEBIAN_RELEASE $VM_DEBIAN_MIRROR") | sha256sum | cut -c1-16)
out=$cache/vm-$VM_DEBIAN_RELEASE-$key
if [[ -f $out/done ]]; then
  echo "$out"
  exit 0
fi

for tool in debootstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool missing (make deps)" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/wasmcell-vm-build.XXXXXX)
root=$work/root
cleanup() {
  for m in proc sys dev/pts dev; do umount "$root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "build-image: debootstrap $VM_DEBIAN_RELEASE (minbase, systemd, containerd, runc, cloud kernel)" >&2
# The kernel's postinst builds its initramfs with initramfs-tools (virtio_blk and ext4 are
# modules of the cloud kernel; the initramfs loads them and mounts the root disk).
debootstrap --variant=minbase \
  --include=systemd-sysv,udev,kmod,dbus,procps,iproute2,iptables,openssl,busybox-static,containerd,runc,initramfs-tools,linux-image-cloud-amd64 \
  "$VM_DEBIAN_RELEASE" "$root" "$VM_DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

# The guest: root on the first virtio disk; the runner runs the host's command at boot and
# powers off; no login prompts; containerd's own service off (each test starts its own).
echo "/dev/vda / ext4 rw,noatime 0 1" >"$root/etc/fstab"
echo wasmcell-vm >"$root/etc/hostname"
# minbase has no netbase; the CRI plugin copies the node's /etc/hosts into each pod.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\twasmcell-vm\n' >"$root/etc/hosts"
install -m 0755 "$here/guest/wasmcell-vm-run" "$root/usr/local/sbin/wasmcell-vm-run"
install -m 0644 "$here/guest/wasmcell-vm.service" "$root/etc/systemd/system/wasmcell-vm.service"
chroot "$root" systemctl enable wasmcell-vm.service >/dev/null 2>&1
chroot "$root" systemctl disable containerd.service >/dev/null 2>&1 || true
for unit in getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*

tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$root"/boot/vmlinuz-* "$tmp/vmlinuz"
cp "$root"/boot/initrd.img-* "$tmp/initrd.img"
mkfs.ext4 -q -F -L wasmcell-vm -d "$root" "$tmp/rootfs.ext4" 3G >&2
cp "$work/debootstrap.log" "$tmp/"
touch "$tmp/done"
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
