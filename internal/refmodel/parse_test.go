package refmodel

import (
	"net"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/rule"
)

// Frames read as the kernel's code reads them: punted with the reason
// named, or keyed as flower keys them.
func TestParseAsTheKernel(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	src, dst := net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2)
	src6, dst6 := net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::2")
	tag := func(tci uint16) testutil.VLAN { return testutil.VLAN{TPID: 0x8100, TCI: tci} }
	udp4 := testutil.IPv4(src, dst, 17, testutil.IPv4Opts{}, testutil.UDP(1, 2, nil))
	eth := func(tags []testutil.VLAN, typ uint16, p []byte) []byte { return testutil.Eth(mac, mac, tags, typ, p) }
	hop := func(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }
	for _, c := range []struct {
		name  string
		frame []byte
		punt  string               // part of the reason; "" for keyed
		check func(*rule.Key) bool // the key, when keyed
	}{
		{"udp", eth(nil, 0x0800, udp4), "", func(k *rule.Key) bool { return k.IpProto == 17 && rule.BE16ToHost(k.DstPort) == 2 }},
		{"802.3", eth(nil, 0x0040, make([]byte, 64)), "ETH_P_802_3", nil},
		{"tag_without_2_bytes", eth(nil, 0x8100, []byte{0, 10, 8}), "skb_vlan_untag drops", nil},
		{"length_after_outer_tag", eth([]testutil.VLAN{tag(10)}, 0x0040, make([]byte, 64)), "vlan_set_encap_proto", nil},
		{"three_tags", eth([]testutil.VLAN{tag(1), tag(2), tag(3)}, 0x0800, udp4), "more than two VLAN tags", nil},
		{"inner_tag_cut", eth(nil, 0x8100, []byte{0, 10, 0x81, 0, 0, 20}), "inner VLAN tag cut short", nil},
		{"qinq_udp", eth([]testutil.VLAN{{TPID: 0x88A8, TCI: 1}, tag(2)}, 0x0800, udp4), "", func(k *rule.Key) bool {
			return rule.BE16ToHost(k.EthType[0]) == 0x88A8 && rule.BE16ToHost(k.EthType[2]) == 0x0800 && k.IpProto == 17
		}},
		// Past two tags nft sees no IP header; the datapath checks one
		// all the same.
		{"qinq_tot_len_past_frame", eth([]testutil.VLAN{tag(1), tag(2)}, 0x0800, udp4[:24]), "under two tags", nil},
		{"ipv4_version_6", eth(nil, 0x0800, append([]byte{0x65}, udp4[1:]...)), "nft's pktinfo validation", nil},
		{"tcp_data_offset_4", eth(nil, 0x0800, testutil.IPv4(src, dst, 6, testutil.IPv4Opts{}, append(testutil.TCP(1, 2, 2)[:12], 0x40, 2, 0, 0, 0, 0, 0, 0))),
			"data offset below 5", nil},
		{"udp_ports_cut", eth(nil, 0x0800, testutil.IPv4(src, dst, 17, testutil.IPv4Opts{}, []byte{0, 1})), "ports cut short", nil},
		{"later_fragment", eth(nil, 0x0800, testutil.IPv4(src, dst, 17, testutil.IPv4Opts{FragOff: 0x0010}, nil)), "", func(k *rule.Key) bool {
			return k.IpFrag == rule.FragIsFragment && k.DstPort == 0
		}},
		{"ipv6_first_fragment_then_hop", eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 44, 0, 64, []byte{0, 0, 0, 1, 0, 0, 0, 1}, hop(17))),
			"ipv6_find_hdr", nil},
		{"ipv6_later_fragment", eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 44, 0, 64, []byte{17, 0, 0, 8, 0, 0, 0, 1}, nil)), "", func(k *rule.Key) bool {
			return k.IpProto == 17 && k.IpFrag == rule.FragIsFragment
		}},
		{"ipv6_eight_option_headers", eth(nil, 0x86DD, testutil.IPv6(src6, dst6, 0, 0, 64,
			append(append(append(hop(0), hop(0)...), append(hop(0), hop(0)...)...), append(append(hop(0), hop(0)...), append(hop(60), hop(17)...)...)...),
			testutil.UDP(1, 2, nil))), "more IPv6 extension headers", nil},
		{"arp_reply", eth(nil, 0x0806, testutil.ARP(2, mac, src, mac, dst)), "", func(k *rule.Key) bool {
			return k.IpProto == 2 && k.DstIp[3] == 2
		}},
		{"arp_hln_8", eth(nil, 0x0806, append([]byte{0, 1, 8, 0, 8, 4}, testutil.ARP(1, mac, src, mac, dst)[6:]...)), "ARP the dissector does not key", nil},
		{"mpls_in_ipv4", eth(nil, 0x0800, testutil.IPv4(src, dst, 137, testutil.IPv4Opts{}, []byte{0, 1, 1, 64})), "MPLS", nil},
		{"batman", eth(nil, 0x4305, make([]byte, 46)), "batman-adv", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, _, ok := Parse(c.frame, 1)
			why := Punt(c.frame)
			if ok != (why == "") || (c.punt == "") != ok || !strings.Contains(why, c.punt) {
				t.Fatalf("punt %q, want %q", why, c.punt)
			}
			if ok && !c.check(&k) {
				t.Fatalf("key %+v", k)
			}
		})
	}
}
