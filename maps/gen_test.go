package maps_test

import (
	"fmt"
	"math/rand"
	"net"
	"strings"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/rule"
)

// gen makes random rules (in tc syntax) and frames from small pools of
// values, so that rules overlap and frames hit them often.
type gen struct{ rng *rand.Rand }

var (
	macPool    = []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"}
	v4Pool     = []string{"10.0.0.1", "10.0.0.2", "10.1.2.3", "192.0.2.1"}
	v4Prefixes = []string{"10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/16", "10.0.0.1", "192.0.2.1", "0.0.0.0/1"}
	v6Pool     = []string{"2001:db8::1", "2001:db8::2", "2001:db8:1::1", "fe80::1"}
	v6Prefixes = []string{"2001:db8::/32", "2001:db8::1", "2001:db8:1::/48", "fe80::/10"}
	portPool   = []uint16{53, 80, 443, 1000, 1500, 2000, 65535, 0, 67, 99}
	portRules  = []string{"53", "80", "443", "1000-2000", "50-100", "1-1023", "443-1500", "0x0400/0xfc00", "60-70"}
)

func (g *gen) pick(s []string) string { return s[g.rng.Intn(len(s))] }
func (g *gen) chance(p float64) bool  { return g.rng.Float64() < p }

// prioProtocol: tc allows one protocol per priority.
var prioProtocol = map[uint16]string{1: "ip", 2: "802.1Q", 3: "ipv6", 4: "ip", 5: "arp"}

func (g *gen) rule(prio uint16, _ []*rule.Rule) string {
	proto, ok := prioProtocol[prio]
	if !ok {
		proto = "all"
	}
	var w []string
	add := func(s ...string) { w = append(w, s...) }
	add("protocol", proto, "flower")
	if g.chance(0.2) {
		add("dst_mac", g.pick(macPool))
	}
	if g.chance(0.1) {
		add("src_mac", g.pick(macPool)+"/ff:ff:ff:00:00:00")
	}
	l3 := proto
	switch proto {
	case "802.1Q":
		var vlan []string
		vlan, l3 = g.vlanKeys()
		add(vlan...)
	}
	switch l3 {
	case "ip", "ipv6":
		add(g.ipKeys(l3 == "ip")...)
	case "arp":
		add(g.arpKeys()...)
	}
	add(g.actions()...)
	return strings.Join(w, " ")
}

// vlanKeys: rule's keys of an 802.1Q filter, and the protocol the tags
// carry ("ip", or "802.1Q" when no key says).
func (g *gen) vlanKeys() (w []string, l3 string) {
	add := func(s ...string) { w = append(w, s...) }
	l3 = "802.1Q"
	if g.chance(0.7) {
		add("vlan_id", fmt.Sprint(10*(1+g.rng.Intn(2))))
	}
	if g.chance(0.2) {
		add("vlan_prio", fmt.Sprint(g.rng.Intn(2)))
	}
	switch g.rng.Intn(3) {
	case 0:
		add("vlan_ethtype", "ip")
		l3 = "ip"
	case 1:
		add("vlan_ethtype", "802.1Q")
		if g.chance(0.6) {
			add("cvlan_id", fmt.Sprint(20+g.rng.Intn(2)))
		}
		if g.chance(0.5) {
			add("cvlan_ethtype", "ip")
			l3 = "ip"
		}
	}
	return w, l3
}

// ipKeys: rule's IPv4 (or IPv6) keys, and its transport keys.
func (g *gen) ipKeys(v4 bool) []string {
	var w []string
	add := func(s ...string) { w = append(w, s...) }
	if g.chance(0.4) {
		if v4 {
			add("src_ip", g.pick(v4Prefixes))
		} else {
			add("src_ip", g.pick(v6Prefixes))
		}
	}
	if g.chance(0.4) {
		if v4 {
			add("dst_ip", g.pick(v4Prefixes))
		} else {
			add("dst_ip", g.pick(v6Prefixes))
		}
	}
	if g.chance(0.15) {
		add("ip_tos", "0x10/0xf0")
	}
	if g.chance(0.1) {
		add("ip_ttl", "64")
	}
	if g.chance(0.1) {
		add("ip_flags", g.pick([]string{"frag", "nofrag", "frag/firstfrag", "frag/nofirstfrag"}))
	}
	if g.chance(0.7) {
		add(g.l4Keys(v4)...)
	}
	return w
}

// l4Keys: rule's ip_proto and the keys of the protocol it names.
func (g *gen) l4Keys(v4 bool) []string {
	var w []string
	add := func(s ...string) { w = append(w, s...) }
	icmp := "icmp"
	if !v4 {
		icmp = "icmpv6"
	}
	p := g.pick([]string{"tcp", "udp", "sctp", icmp})
	add("ip_proto", p)
	switch p {
	case "tcp", "udp", "sctp":
		if g.chance(0.6) {
			add("dst_port", g.pick(portRules))
		}
		if g.chance(0.3) {
			add("src_port", g.pick(portRules))
		}
		if p == "tcp" && g.chance(0.2) {
			add("tcp_flags", "0x02/0x12")
		}
	default:
		if g.chance(0.6) {
			add("type", fmt.Sprint([]int{8, 0, 128, 129}[g.rng.Intn(4)]))
		}
		if g.chance(0.3) {
			add("code", "0")
		}
	}
	return w
}

// arpKeys: rule's ARP keys.
func (g *gen) arpKeys() []string {
	var w []string
	add := func(s ...string) { w = append(w, s...) }
	if g.chance(0.5) {
		add("arp_op", g.pick([]string{"request", "reply"}))
	}
	if g.chance(0.4) {
		add("arp_tip", g.pick(v4Prefixes))
	}
	if g.chance(0.3) {
		add("arp_sip", g.pick(v4Prefixes))
	}
	if g.chance(0.2) {
		add("arp_sha", g.pick(macPool))
	}
	return w
}

func (g *gen) actions() []string {
	var w []string
	for i := 0; i < g.rng.Intn(3); i++ {
		switch g.rng.Intn(5) {
		case 0:
			w = append(w, "action", "vlan", "push", "id", fmt.Sprint(100+g.rng.Intn(3)), "priority", "3")
		case 1:
			w = append(w, "action", "vlan", "pop")
		case 2:
			w = append(w, "action", "vlan", "modify", "id", "77")
		case 3:
			w = append(w, "action", "pedit", "ex", "munge", "eth", "dst", "set", "02:00:00:00:00:99")
		case 4:
			w = append(w, "action", "skbmod", "set", "smac", "02:00:00:00:00:98")
		}
	}
	switch g.rng.Intn(5) {
	case 0, 1:
		w = append(w, "action", "drop")
	case 2:
		w = append(w, "action", "pass")
	case 3:
		w = append(w, "action", "mirred", "egress", "redirect", "dev", g.pick([]string{"r1", "r2", "lo"}))
	}
	return w
}

func (g *gen) mac() net.HardwareAddr {
	m, _ := net.ParseMAC(g.pick(macPool))
	return m
}

func (g *gen) port() uint16 { return portPool[g.rng.Intn(len(portPool))] }

func (g *gen) l4(proto uint8) []byte {
	switch proto {
	case 6:
		return testutil.TCP(g.port(), g.port(), []uint16{0x02, 0x12, 0x10, 0x11}[g.rng.Intn(4)])
	case 17, 132:
		return testutil.UDP(g.port(), g.port(), []byte("xdpflow"))
	case 1:
		return testutil.ICMP([]uint8{8, 0, 3}[g.rng.Intn(3)], uint8(g.rng.Intn(2)))
	case 58:
		return testutil.ICMP([]uint8{128, 129, 135}[g.rng.Intn(3)], 0)
	}
	return []byte{1, 2, 3, 4, 5, 6, 7, 8}
}

func (g *gen) ipv4() []byte {
	proto := []uint8{6, 17, 132, 1, 47}[g.rng.Intn(5)]
	o := testutil.IPv4Opts{TOS: []uint8{0, 0x10, 0x18}[g.rng.Intn(3)], TTL: []uint8{64, 1}[g.rng.Intn(2)]}
	if g.chance(0.1) {
		o.FragOff = []uint16{0x2000, 0x2010, 0x0010}[g.rng.Intn(3)]
	}
	return testutil.IPv4(net.ParseIP(g.pick(v4Pool)), net.ParseIP(g.pick(v4Pool)), proto, o, g.l4(proto))
}

func (g *gen) ipv6() []byte {
	proto := []uint8{6, 17, 58, 132}[g.rng.Intn(4)]
	next, ext := proto, []byte(nil)
	switch g.rng.Intn(5) {
	case 0: // hop-by-hop options, 8 bytes
		next, ext = 0, []byte{proto, 0, 1, 4, 0, 0, 0, 0}
	case 1: // fragment header: first fragment or a later one
		off := []byte{0, 1}[g.rng.Intn(2)]
		next, ext = 44, []byte{proto, 0, 0, off<<3 | 1, 0, 0, 0, 1}
	}
	return testutil.IPv6(net.ParseIP(g.pick(v6Pool)), net.ParseIP(g.pick(v6Pool)), next,
		[]uint8{0, 0x10}[g.rng.Intn(2)], 64, ext, g.l4(proto))
}

func (g *gen) frame() []byte {
	dst, src := g.mac(), g.mac()
	var vlans []testutil.VLAN
	switch g.rng.Intn(8) {
	case 0, 1:
		vlans = []testutil.VLAN{{TPID: 0x8100, TCI: uint16(10*(1+g.rng.Intn(2))) | uint16(g.rng.Intn(2))<<13}}
	case 2:
		vlans = []testutil.VLAN{{TPID: 0x8100, TCI: 10}, {TPID: 0x8100, TCI: uint16(20 + g.rng.Intn(2))}}
	}
	var f []byte
	switch g.rng.Intn(10) {
	case 0, 1, 2, 3:
		f = testutil.Eth(dst, src, vlans, 0x0800, g.ipv4())
	case 4, 5:
		f = testutil.Eth(dst, src, vlans, 0x86DD, g.ipv6())
	case 6:
		tip, sip := net.ParseIP(g.pick(v4Pool)), net.ParseIP(g.pick(v4Pool))
		f = testutil.Eth(dst, src, vlans, 0x0806, testutil.ARP(uint16(1+g.rng.Intn(2)), src, sip, dst, tip))
	case 7:
		f = testutil.Eth(dst, src, vlans, 0x88CC, []byte("lldp-ish payload..........................."))
	case 8:
		// Truncated: cut somewhere in the headers.
		f = testutil.Eth(dst, src, vlans, 0x0800, g.ipv4())
		f = f[:14+g.rng.Intn(len(f)-14)]
	default:
		// Three tags: left to the kernel.
		f = testutil.Eth(dst, src, []testutil.VLAN{{TPID: 0x88A8, TCI: 1}, {TPID: 0x8100, TCI: 2}, {TPID: 0x8100, TCI: 3}}, 0x0800, g.ipv4())
	}
	if len(f) < 60 && g.chance(0.5) {
		f = append(f, make([]byte, 60-len(f))...) // padded to the minimum
	}
	return f
}
