#!/usr/bin/env bash
# Builds what `make vmtest` boots: Debian's stock kernel (unpacked, not
# installed) and a busybox initramfs that mounts this machine's root
# read-only over 9p under a tmpfs overlay. This machine's own kernel lacks
# cls_flower, act_gact, act_vlan, 8021q and openvswitch; Debian's has them
# as modules. Output goes to $VM_DIR (default build/vm); reruns reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VM_DIR=${VM_DIR:-build/vm}
mkdir -p "$VM_DIR"
VM_DIR=$(cd "$VM_DIR" && pwd)

pkgs="qemu-system-x86 busybox-static cpio kmod openvswitch-switch"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "vm: installing:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# The kernel package linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64.
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_pkg)
if [ -z "$pkg" ]; then apt-get update -qq && pkg=$(kernel_pkg); fi
[ -n "$pkg" ] || { echo "vm: cannot tell which kernel linux-image-amd64 depends on" >&2; exit 1; }
if [ ! -f "$VM_DIR/kernel/.done-$pkg" ]; then
	echo "vm: fetching $pkg"
	rm -rf "$VM_DIR/kernel" "$VM_DIR"/*.deb
	(cd "$VM_DIR" && apt-get download "$pkg" 2>&1 | grep -v 'Download is performed unsandboxed' || true)
	deb=$(ls "$VM_DIR"/"$pkg"_*.deb)
	dpkg-deb -x "$deb" "$VM_DIR/kernel"
	ver=$(ls "$VM_DIR/kernel/lib/modules")
	depmod -b "$VM_DIR/kernel" "$ver"
	rm -f "$deb"
	touch "$VM_DIR/kernel/.done-$pkg"
fi
ver=$(ls "$VM_DIR/kernel/lib/modules")
ln -sfn "kernel/boot/vmlinuz-$ver" "$VM_DIR/vmlinuz"
echo "$ver" >"$VM_DIR/version"

# The initramfs: busybox, the modules 9p and overlay need, and init.
ird="$VM_DIR/initramfs"
rm -rf "$ird"
mkdir -p "$ird"/{bin,dev,proc,sys,mnt/host,mnt/rw,newroot,modules}
cp /bin/busybox "$ird/bin/busybox"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
	netfs fscache 9pnet 9pnet_virtio 9p overlay; do
	f=$(find "$VM_DIR/kernel/lib/modules/$ver" -name "$m.ko" -print -quit)
	[ -n "$f" ] || { echo "vm: module $m not in $pkg" >&2; exit 1; }
	cp "$f" "$ird/modules/"
	echo "$m" >>"$ird/modules/order"
done
cp scripts/vm/init "$ird/init"
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$VM_DIR/initramfs.gz"
rm -rf "$ird"
echo "vm: kernel $ver, initramfs $(du -h "$VM_DIR/initramfs.gz" | cut -f1)"
