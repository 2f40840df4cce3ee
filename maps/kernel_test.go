package maps_test

import (
	"net"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflow/internal/refmodel"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
)

// kernelCase is frames whose fate the kernel's own code decides in a way
// a datapath reading of the headers easily gets wrong, with rules that
// show it: the model's outcome (want, and why it punts, "" for keyed) is
// asserted, so the case exercises what it names, then the program must
// agree with the model.
type kernelCase struct {
	name   string
	rules  []string     // tc filters, prio 1 with handles in order
	nft    []rule.Match // nft rules (drop), after them
	frames []kernelFrame
}

type kernelFrame struct {
	frame []byte
	want  refmodel.Verdict
	punt  string // a part of refmodel.Punt's reason
}

// Long for its table: one kernelCase per kernel reading, then their loop.
func TestKernelReadings(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	src, dst := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	src6, dst6 := net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::2")
	udp := testutil.UDP(9, 10, []byte("xdpflow........"))
	v4 := func(proto uint8, o testutil.IPv4Opts, l4 []byte) []byte { return testutil.IPv4(src, dst, proto, o, l4) }
	eth := func(tags []testutil.VLAN, typ uint16, payload []byte) []byte {
		return testutil.Eth(mac, mac, tags, typ, payload)
	}
	mpls := []byte{0x00, 0x01, 0x01, 0x40, 0x45, 0, 0, 20} // label 16, bottom of stack, then a scrap of IPv4
	ah := append([]byte{17, 4}, make([]byte, 22)...)       // next UDP, 24 bytes
	l4proto113 := rule.Match{}
	l4proto113.Key.EthType[0], l4proto113.Mask.EthType[0] = rule.HostToBE16(rule.EthPIPv6), 0xFFFF
	l4proto113.Key.IpProto, l4proto113.Mask.IpProto = 113, 0xFF

	cases := []kernelCase{{
		// __skb_flow_dissect: IPPROTO_MPLS is not behind
		// FLOW_DISSECTOR_F_STOP_BEFORE_ENCAP; n_proto ends as
		// ETH_P_MPLS_UC, which no protocol ip filter matches. A fragment
		// stops before the IP protocol switch.
		name:  "ip_carrying_mpls",
		rules: []string{"protocol ip flower action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x0800, v4(137, testutil.IPv4Opts{}, mpls)), refmodel.Pass, "MPLS"},
			{eth(nil, 0x0800, v4(137, testutil.IPv4Opts{FragOff: 0x2000}, mpls)), refmodel.Drop, ""},
		},
	}, {
		name:  "tagged_ipv6_carrying_mpls",
		rules: []string{"protocol 802.1Q flower vlan_ethtype ipv6 action drop"},
		frames: []kernelFrame{
			{eth([]testutil.VLAN{{TPID: 0x8100, TCI: 10}}, 0x86DD,
				testutil.IPv6(src6, dst6, 0, 0, 64, []byte{137, 0, 1, 4, 0, 0, 0, 0}, mpls)), refmodel.Pass, "MPLS"},
		},
	}, {
		// PPP_SES: the dissector goes on into the PPP payload, n_proto
		// becoming ETH_P_IP; the filter's n_proto 0x8864 misses.
		name:  "pppoe_session_carrying_ipv4",
		rules: []string{"protocol pppoe_sess flower action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x8864, append([]byte{0x11, 0x00, 0x00, 0x01, 0x00, 0x2d, 0x00, 0x21}, v4(17, testutil.IPv4Opts{}, udp)...)),
				refmodel.Pass, "PPPoE"},
		},
	}, {
		// ETH_P_HSR: the tag's encapsulated protocol replaces n_proto.
		name:  "hsr_carrying_ipv4",
		rules: []string{"protocol 0x892f flower action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x892F, append([]byte{0x00, 0x40, 0x00, 0x01, 0x08, 0x00}, v4(17, testutil.IPv4Opts{}, udp)...)),
				refmodel.Pass, "HSR"},
		},
	}, {
		// ipv6_find_hdr reads a routing header's 4-byte struct
		// ipv6_rt_hdr: with 2 bytes nft's validation fails and meta
		// l4proto breaks, while the dissector keys the next header.
		name: "ipv6_routing_header_cut_to_2_bytes",
		nft:  []rule.Match{l4proto113},
		frames: []kernelFrame{
			{eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 43, 0, 64, []byte{113, 0}, nil)), refmodel.Pass, "nft's pktinfo validation"},
			{eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 43, 0, 64, []byte{113, 0, 0, 0, 0, 0, 0, 0}, nil)), refmodel.Drop, ""},
		},
	}, {
		// The dissector stops at AH, and so does ipv6_find_hdr with
		// IP6_FH_F_AUTH (nft), having read its first 2 bytes.
		name:  "ipv6_ah",
		rules: []string{"protocol ipv6 flower ip_proto ah action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 51, 0, 64, nil, ah)), refmodel.Drop, ""},
			{eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 51, 0, 64, nil, ah[:1])), refmodel.Pass, "nft's pktinfo validation"},
			{eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 44, 0, 64, []byte{51, 0, 0, 1, 0, 0, 0, 1}, ah)), refmodel.Pass, "AH after a first fragment"},
		},
	}, {
		// fl_lookup_range: walking in insertion order, filter 1's range
		// holds port 10 and lends it to the lookup of 10.0.0.1, which
		// finds filter 3, not filter 2 inserted before it. Port 60 is
		// only in filter 2's range.
		name: "port_range_lent_by_another_filter",
		rules: []string{
			"protocol ip flower src_ip 10.0.0.9 ip_proto udp dst_port 1-50 action drop",
			"protocol ip flower src_ip 10.0.0.1 ip_proto udp dst_port 1-100 action drop",
			"protocol ip flower src_ip 10.0.0.1 ip_proto udp dst_port 1-50 action pass",
		},
		frames: []kernelFrame{
			{eth(nil, 0x0800, v4(17, testutil.IPv4Opts{}, udp)), refmodel.Pass, ""},
			{eth(nil, 0x0800, v4(17, testutil.IPv4Opts{}, testutil.UDP(9, 60, nil))), refmodel.Drop, ""},
		},
	}, {
		// __skb_flow_dissect_arp checks the whole 16-bit opcode: 0x0101
		// leaves every ARP key zero.
		name:  "arp_opcode_above_255",
		rules: []string{"protocol arp flower arp_op request action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x0806, testutil.ARP(0x0101, mac, src, mac, dst)), refmodel.Pass, "ARP the dissector does not key"},
			{eth(nil, 0x0806, testutil.ARP(1, mac, src, mac, dst)), refmodel.Drop, ""},
		},
	}, {
		// skb_flow_get_icmp_tci wants a whole struct icmphdr; flower
		// would match zeros, nft reads the bytes.
		name:  "icmp_header_cut_to_4_bytes",
		rules: []string{"protocol ip flower ip_proto icmp type 0 code 0 action drop"},
		frames: []kernelFrame{
			{eth(nil, 0x0800, v4(1, testutil.IPv4Opts{}, testutil.ICMP(0, 0)[:4])), refmodel.Pass, "ICMP header shorter"},
			{eth(nil, 0x0800, v4(1, testutil.IPv4Opts{}, testutil.ICMP(0, 0))), refmodel.Drop, ""},
		},
	}}
	ns := testutil.NewNetns(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarness(t, 1, 1<<12)
				for i, r := range c.rules {
					if !h.install(1, uint32(i+1), r) {
						t.Fatalf("install %q refused", r)
					}
				}
				for i, m := range c.nft {
					h.installNFT(uint32(i+1), m)
				}
				var frames [][]byte
				for _, f := range c.frames {
					m := refmodel.Run(h.model.Rules(), f.frame, 1)
					why := refmodel.Punt(f.frame)
					if m.Verdict != f.want || (f.punt == "") != (why == "") || !strings.Contains(why, f.punt) {
						t.Fatalf("frame %x: model %s (punt %q), want %s (punt %q): the case no longer shows what it names",
							f.frame, m.Verdict, why, f.want, f.punt)
					}
					frames = append(frames, f.frame)
				}
				h.check(frames)
			})
		})
	}
}

// installNFT installs a drop rule of nft's netdev ingress at level, as
// nft.Compile makes one, and adds it to the model.
func (h *harness) installNFT(level uint32, m rule.Match) {
	h.t.Helper()
	r := &rule.Rule{Source: rule.SourceNFT, Dev: ingressDev, Level: level, Protocol: rule.EthPAll,
		Match: m, Actions: []rule.Action{{Kind: rule.ActDrop}}, Name: "netdev/t/in/1#0"}
	r.Digest = "test"
	r.Text = nft.FormatSpec(r)
	if _, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r}}}); err != nil {
		h.t.Fatalf("install nft rule: %v", err)
	}
	h.model.Add(r)
}
