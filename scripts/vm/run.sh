#!/usr/bin/env bash
# Runs a command in a guest booted with Debian's stock kernel (scripts/vm/
# build.sh) under qemu software emulation, the host's root shared
# read-only: scripts/vm/run.sh [-t SECONDS] COMMAND... Prints the
# command's output as it comes and exits with its code (124: timed out).
set -euo pipefail
cd "$(dirname "$0")/../.."
VM_DIR=${VM_DIR:-build/vm}
timeout=900
if [ "${1:-}" = "-t" ]; then timeout=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: scripts/vm/run.sh [-t SECONDS] COMMAND..." >&2; exit 2; }
[ -f "$VM_DIR/initramfs.gz" ] || scripts/vm/build.sh
VM_DIR=$(cd "$VM_DIR" && pwd)

job=$(mktemp -d "$VM_DIR/job.XXXXXX")
trap 'rm -rf "$job"' EXIT
cp scripts/vm/guest.sh "$job/guest.sh"
printf '%q ' "$@" >"$job/cmd"
pwd >"$job/cwd"
: >"$job/out"

# /dev/kvm here is PVM and cannot boot a stock kernel: software emulation.
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 \
	-machine q35,accel=tcg -cpu max -m 2G -smp 2 \
	-nographic -no-reboot -nic none -monitor none \
	-serial "file:$job/console.log" \
	-kernel "$VM_DIR/vmlinuz" -initrd "$VM_DIR/initramfs.gz" \
	-append "console=ttyS0 quiet panic=-1 xdpflow.modules=$VM_DIR/kernel" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$job,mount_tag=vmjob,security_model=none,multidevs=remap" &
qemu=$!
tail -n +1 -f --pid=$qemu "$job/out" &
tailer=$!
status=0
wait $qemu || status=$?
wait $tailer 2>/dev/null || true
if [ $status -eq 124 ]; then
	echo "vm: timed out after ${timeout}s; console:" >&2
	tail -n 30 "$job/console.log" >&2
	exit 124
fi
if [ ! -f "$job/rc" ]; then
	echo "vm: the guest stopped without finishing the job (qemu exit $status); console:" >&2
	tail -n 40 "$job/console.log" >&2
	exit 1
fi
if [ -s "$job/modprobe.err" ]; then
	echo "vm: modprobe said:" >&2
	cat "$job/modprobe.err" >&2
fi
exit "$(cat "$job/rc")"
