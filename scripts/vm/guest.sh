#!/bin/sh
# Runs in the guest as its first process (after the initramfs): prepares
# what tests expect of a machine, runs the host's job, powers off. The
# job's exit code goes back in /run/vmjob/rc.
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t bpf bpf /sys/fs/bpf
# No tmpfs on /tmp: the host's /tmp shows through the overlay, where a
# checkout being tested may live (writes stay in the guest's tmpfs upper).
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
hostname xdpflow-vm
modprobe -a veth sch_ingress cls_flower act_gact act_mirred act_vlan act_skbedit act_pedit \
	act_tunnel_key 8021q openvswitch bridge sch_tbf sch_fq_codel cls_u32 nf_flow_table nf_flow_table_inet 2>/run/vmjob/modprobe.err
job=/run/vmjob
cd "$(cat $job/cwd)"
echo "vm: kernel $(uname -r), $(nproc) CPUs; running: $(cat $job/cmd)" >$job/out
sh $job/cmd >>$job/out 2>&1
echo $? >$job/rc
sync
poweroff -f
