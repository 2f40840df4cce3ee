package classbench

import (
	"net/netip"
	"strings"
	"testing"
)

var anyPort = PortRange{0, 65535}

func TestFlowerBatch(t *testing.T) {
	p := netip.MustParsePrefix
	rules := []Rule{
		// Host bits are cleared; a single port and a range.
		{Src: p("10.1.2.3/24"), Dst: p("192.0.2.7/32"), SrcPort: PortRange{1024, 65535}, DstPort: PortRange{80, 80}, Proto: 6, ProtoMask: 0xff},
		// /0 and wildcard ports are left out.
		{Src: p("0.0.0.0/0"), Dst: p("198.51.100.0/22"), SrcPort: anyPort, DstPort: PortRange{0, 1023}, Proto: 17, ProtoMask: 0xff},
		// ICMP by name; ports never go with a protocol other than TCP or UDP.
		{Src: p("0.0.0.0/0"), Dst: p("0.0.0.0/0"), SrcPort: PortRange{5, 5}, DstPort: anyPort, Proto: 1, ProtoMask: 0xff},
		// Other protocols in hex, as tc reads a number.
		{Src: p("203.0.113.0/25"), Dst: p("0.0.0.0/0"), SrcPort: anyPort, DstPort: anyPort, Proto: 47, ProtoMask: 0xff},
		// A wildcard protocol: no ip_proto, so no ports either.
		{Src: p("0.0.0.0/0"), Dst: p("0.0.0.0/0"), SrcPort: anyPort, DstPort: PortRange{53, 53}, Proto: 0, ProtoMask: 0},
	}
	want := "filter add dev b0 ingress pref 1 protocol ip flower skip_sw src_ip 10.1.2.0/24 dst_ip 192.0.2.7/32 ip_proto tcp src_port 1024-65535 dst_port 80 action drop\n" +
		"filter add dev b0 ingress pref 2 protocol ip flower skip_sw dst_ip 198.51.100.0/22 ip_proto udp dst_port 0-1023 action pass\n" +
		"filter add dev b0 ingress pref 3 protocol ip flower skip_sw ip_proto icmp action drop\n" +
		"filter add dev b0 ingress pref 4 protocol ip flower skip_sw src_ip 203.0.113.0/25 ip_proto 0x2f action pass\n" +
		"filter add dev b0 ingress pref 5 protocol ip flower skip_sw action drop\n"
	verdict := func(i int) string { return []string{"drop", "pass"}[i%2] }
	if got := FlowerBatch(rules, "b0", verdict); got != want {
		t.Errorf("FlowerBatch:\n%s\nwant\n%s", got, want)
	}
}

// TestFlowerMatchesNft: flower and nft say the same of every generated
// rule: the same keys present, ports under the same protocols.
func TestFlowerMatchesNft(t *testing.T) {
	for _, name := range Seeds {
		for _, r := range Generate(loadSeed(t, name), 1000, 1, DefaultOptions) {
			f, n := FlowerMatch(r), NftMatch(r)
			for _, k := range [][2]string{{"src_ip", "ip saddr"}, {"dst_ip", "ip daddr"}, {"ip_proto", "ip protocol"}, {"src_port", "sport"}, {"dst_port", "dport"}} {
				if strings.Contains(f, k[0]+" ") != strings.Contains(n, k[1]+" ") {
					t.Fatalf("%s: %+v: flower %q, nft %q disagree on %s", name, r, f, n, k[0])
				}
			}
		}
	}
}
