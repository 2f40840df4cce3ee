package classbench

import (
	"fmt"
	"net/netip"
	"strings"
)

// NftMatch is r as nft match expressions ("" for the rule matching all).
// Ports are matched only under a protocol of exactly TCP or UDP: nft's
// port matches need one.
func NftMatch(r Rule) string {
	var w []string
	prefix := func(field string, p netip.Prefix) {
		if p.Bits() > 0 {
			w = append(w, field, p.Masked().String())
		}
	}
	prefix("ip saddr", r.Src)
	prefix("ip daddr", r.Dst)
	if r.ProtoMask != 0 {
		w = append(w, "ip protocol", fmt.Sprint(r.Proto))
	}
	proto := map[uint8]string{6: "tcp", 17: "udp"}[r.Proto]
	ports := func(field string, pr PortRange) {
		switch {
		case pr.Lo == 0 && pr.Hi == 65535:
		case pr.Lo == pr.Hi:
			w = append(w, proto, field, fmt.Sprint(pr.Lo))
		default:
			w = append(w, proto, field, fmt.Sprintf("%d-%d", pr.Lo, pr.Hi))
		}
	}
	if proto != "" && r.ProtoMask == 0xff {
		ports("sport", r.SrcPort)
		ports("dport", r.DstPort)
	}
	return strings.Join(w, " ")
}

// NftChain is the set as one netdev ingress chain (table netdev xf, chain
// in) on dev, in priority order, each rule with a counter and verdict(i).
func NftChain(rules []Rule, dev string, verdict func(int) string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "table netdev xf {\n  chain in {\n    type filter hook ingress device %s priority 0; policy accept;\n", dev)
	for i, r := range rules {
		fmt.Fprintf(&sb, "    %s counter %s\n", NftMatch(r), verdict(i))
	}
	sb.WriteString("  }\n}\n")
	return sb.String()
}
