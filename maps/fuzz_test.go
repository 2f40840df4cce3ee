package maps_test

import (
	"encoding/hex"
	"math/rand"
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/internal/framegen"
	"github.com/xdpflow/xdpflow/internal/testutil"
)

// FuzzPacketParser feeds arbitrary frames to the real program and to the
// reference model under a rule set that keys on every field the parser
// fills, so a field parsed differently changes a verdict or a counter.
func FuzzPacketParser(f *testing.F) {
	testutil.RequireRoot(f)
	h := newParserHarness(f)
	g := &gen{rng: h.rng}
	for i := 0; i < 64; i++ {
		f.Add(g.frame())
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	f.Add(testutil.Eth(mac, mac, nil, 0x0800, testutil.IPv4(net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2), 6, testutil.IPv4Opts{}, testutil.TCP(1, 80, 2))))
	// Found by this fuzzer: an IPv6 routing header whose length points past
	// the frame. This one is the kernel's: its payload length points past
	// the frame too, and nft's validation gives it no transport header.
	odd, _ := hex.DecodeString("02000000000130303030303086dd6130303030302b303030303030303030303030303030303030303030303030303030303030303030303030")
	f.Add(odd)
	f.Fuzz(func(t *testing.T, frame []byte) {
		// BPF_PROG_TEST_RUN takes whole Ethernet frames that fit a page,
		// as a device delivers them.
		if len(frame) < 14 || len(frame) > 1500 {
			return
		}
		h.t = t
		h.check([][]byte{frame})
	})
}

// TestAdversarialFramesAsModel: 100,000 frames from internal/framegen
// (malformed in every field the parser reads) and every truncation of
// some, through the real program and the model written from the kernel's
// code, under rules that key on every field: the same verdict, frame and
// counters for each.
func TestAdversarialFramesAsModel(t *testing.T) {
	h := newParserHarness(t)
	g := framegen.New(rand.New(rand.NewSource(7)), framegen.Pools{
		SrcMACs: macs("02:00:00:00:00:01", "02:00:00:00:00:02"),
		DstMACs: macs("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff"),
		SrcIPs:  ips("10.0.0.1", "10.0.0.2", "192.0.2.1"),
		DstIPs:  ips("10.0.0.2", "10.1.2.3"),
		Src6:    ips("2001:db8::1", "fe80::1"),
		Dst6:    ips("2001:db8::2", "2001:db8:1::1"),
		Ports:   []uint16{53, 80, 1000, 1500, 2000},
		VLANs:   []uint16{10, 20},
	})
	n := 100000
	if testing.Short() {
		n = 10000
	}
	for sent := 0; sent < n; {
		batch := make([][]byte, 0, 1000)
		for len(batch) < 1000 {
			f := g.Frame()
			if sent%500 == 0 {
				batch = append(batch, framegen.Truncations(f)...)
			}
			batch = append(batch, f)
		}
		h.check(batch)
		sent += len(batch)
	}
	t.Logf("outcomes: %v", h.seen)
	for _, v := range []string{"drop", "pass", "tx", "matched"} {
		if h.seen[v] < 100 {
			t.Errorf("only %d frames with outcome %q: the rules and frames do not meet", h.seen[v], v)
		}
	}
}

func macs(s ...string) []net.HardwareAddr {
	var out []net.HardwareAddr
	for _, m := range s {
		hw, _ := net.ParseMAC(m)
		out = append(out, hw)
	}
	return out
}

func ips(s ...string) []net.IP {
	var out []net.IP
	for _, a := range s {
		out = append(out, net.ParseIP(a))
	}
	return out
}

// newParserHarness is a harness with rules that key on every field the
// parser fills, so a field parsed differently changes a verdict or a
// counter.
func newParserHarness(t testing.TB) *harness {
	h := newHarness(t, 1, 1<<14)
	rules := []string{
		"protocol ip flower ip_proto tcp dst_port 80 tcp_flags 0x2/0x12 action drop",
		"protocol ip flower ip_proto udp src_port 1000-2000 action mirred egress redirect dev lo",
		"protocol ip flower ip_proto icmp type 8 code 0 action vlan push id 9 action pass",
		"protocol ip flower ip_flags frag/firstfrag action drop",
		"protocol ip flower ip_flags frag action pass",
		"protocol ip flower src_ip 10.0.0.0/8 ip_tos 0x10/0xf0 ip_ttl 64 action drop",
		"protocol ipv6 flower ip_proto udp dst_port 53 action drop",
		"protocol ipv6 flower ip_proto icmpv6 type 128 action mirred egress redirect dev lo",
		"protocol ipv6 flower dst_ip 2001:db8::/32 ip_flags frag action drop",
		"protocol 802.1Q flower vlan_id 10 vlan_ethtype 802.1Q cvlan_id 20 cvlan_ethtype ip action vlan pop action drop",
		"protocol 802.1Q flower vlan_prio 1 vlan_ethtype ipv6 action vlan modify id 7 priority 2 action pass",
		"protocol arp flower arp_op reply arp_sip 10.0.0.1 arp_tha 02:00:00:00:00:02 action drop",
		"protocol rarp flower arp_tip 10.0.0.2 action drop",
		"protocol all flower dst_mac 02:00:00:00:00:01 action pedit ex munge eth src set 02:00:00:00:00:07",
	}
	for i, r := range rules {
		if !h.install(uint16(i+1), 1, r) {
			t.Fatalf("install %q", r)
		}
	}
	return h
}
