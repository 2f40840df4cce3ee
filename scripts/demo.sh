#!/usr/bin/env bash
# make demo: two namespaces joined by veth, xdpflow on the receiver, a few
# rules, real traffic, the counters; then an nft chain the daemon mirrors.
# Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin/xdpflow
SND=xdpf-demo-snd RCV=xdpf-demo-rcv

cleanup() {
	ip netns exec $RCV "$BIN" disable dev rcv0 >/dev/null 2>&1 || true
	ip netns del $SND 2>/dev/null || true
	ip netns del $RCV 2>/dev/null || true
}
trap cleanup EXIT
cleanup

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "two namespaces joined by veth (198.18.0.0/15, the benchmarking range)"
ip netns add $SND
ip netns add $RCV
ip link add snd0 netns $SND type veth peer name rcv0 netns $RCV
ip -n $SND addr add 198.18.0.1/24 dev snd0
ip -n $RCV addr add 198.18.0.2/24 dev rcv0
for ns in $SND $RCV; do ip -n $ns link set lo up; done
ip -n $SND link set snd0 up
ip -n $RCV link set rcv0 up
# VLAN tags in the frame, where XDP sees them (xdpflow punts a device
# whose sender keeps them outside: ethtool -K PEER txvlan off).
ip netns exec $SND ethtool -K snd0 txvlan off tx-vlan-stag-hw-insert off
R="ip netns exec $RCV $BIN"

say "enable xdpflow on the receiver (native XDP, pinned bpf_link)"
run $R enable dev rcv0
run $R -k rcv0

say "rules, in tc's flower syntax"
run $R filter add dev rcv0 ingress prio 10 protocol ip flower ip_proto udp dst_port 53 action drop
run $R filter add dev rcv0 ingress prio 20 protocol ip flower ip_proto icmp type 8 action drop
run $R filter add dev rcv0 ingress prio 30 protocol ip flower ip_proto udp dst_port 1000-1999 action drop
run $R filter add dev rcv0 ingress prio 40 protocol ip flower src_ip 198.18.0.0/24 ip_proto udp dst_port 7 action pass

say "traffic: 5 pings (dropped in XDP), UDP to 53, 1500, 7"
ip netns exec $SND ping -c 5 -i 0.2 -W 1 198.18.0.2 | tail -2 || true
for port in 53 1500 7; do
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		ip netns exec $SND bash -c "echo demo > /dev/udp/198.18.0.2/$port" 2>/dev/null || true
	done
done
sleep 0.3

say "the counters: per rule (tc -s style), then as JSON"
run $R -s filter show dev rcv0 ingress
run $R -s -j filter show dev rcv0 ingress
say "engine status"
run $R status

say "delete the ping rule: pings get through again"
run $R filter del dev rcv0 ingress prio 20
ip netns exec $SND ping -c 3 -i 0.2 -W 1 198.18.0.2 | tail -2

say "nftables: a netdev ingress chain, mirrored by the daemon into XDP"
ip netns exec $RCV nft -f - <<'NFT'
table netdev demo {
	chain in {
		type filter hook ingress device "rcv0" priority 0; policy accept;
		udp dport 4000 counter drop
	}
}
NFT
run ip netns exec $RCV nft list table netdev demo
ip netns exec $RCV "$BIN" daemon >/tmp/xdpflow-demo-daemon.log 2>&1 &
DAEMON=$!
for _ in $(seq 50); do grep -q "running on" /tmp/xdpflow-demo-daemon.log && break; sleep 0.1; done
for _ in 1 2 3 4 5 6 7 8 9 10; do
	ip netns exec $SND bash -c "echo demo > /dev/udp/198.18.0.2/4000" 2>/dev/null || true
done
sleep 0.3
say "the same drops, counted in XDP; nft's own counter stays 0 (the packets never reached it)"
run $R -s flow show dev rcv0
run ip netns exec $RCV nft list table netdev demo
kill $DAEMON; wait $DAEMON 2>/dev/null || true
ip netns exec $RCV nft delete table netdev demo

say "disable: detach and remove every pin"
run $R disable dev rcv0
run $R -k rcv0
