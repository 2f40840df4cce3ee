package classbench

import (
	"fmt"
	"net/netip"
	"strings"
)

// FlowerMatch is r as tc flower match words ("" for the rule matching
// all), with NftMatch's semantics so that FirstMatch is the reference for
// both: ip_proto under an exact protocol, and ports only under exactly TCP
// or UDP (flower's port keys need an ip_proto too).
func FlowerMatch(r Rule) string {
	var w []string
	prefix := func(key string, p netip.Prefix) {
		if p.Bits() > 0 {
			w = append(w, key, p.Masked().String())
		}
	}
	prefix("src_ip", r.Src)
	prefix("dst_ip", r.Dst)
	if r.ProtoMask != 0 {
		w = append(w, "ip_proto", flowerProto(r.Proto))
	}
	ports := func(key string, pr PortRange) {
		switch {
		case pr.Lo == 0 && pr.Hi == 65535:
		case pr.Lo == pr.Hi:
			w = append(w, key, fmt.Sprint(pr.Lo))
		default:
			w = append(w, key, fmt.Sprintf("%d-%d", pr.Lo, pr.Hi))
		}
	}
	if (r.Proto == 6 || r.Proto == 17) && r.ProtoMask == 0xff {
		ports("src_port", r.SrcPort)
		ports("dst_port", r.DstPort)
	}
	return strings.Join(w, " ")
}

// flowerProto names a protocol as tc flower reads it: by name where both
// tc and xdpflow know one, else in hex with 0x, since tc reads a bare
// number as hex ("47" is 0x47 to tc).
func flowerProto(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprintf("0x%02x", p)
}

// FlowerFilter is rule i as a `filter add` command on dev's ingress
// without the leading "tc" or "xdpflow": pref i+1, so that lower indices
// are looked up first, skip_sw, and action verdict.
func FlowerFilter(r Rule, i int, dev, verdict string) string {
	words := []string{"filter add dev", dev, "ingress pref", fmt.Sprint(i + 1), "protocol ip flower skip_sw"}
	if m := FlowerMatch(r); m != "" {
		words = append(words, m)
	}
	return strings.Join(append(words, "action", verdict), " ")
}

// FlowerBatch is the set as a batch for `xdpflow -b` (or `tc -b`), one
// FlowerFilter a line in priority order, rule i's action verdict(i)
// ("drop" or "pass").
func FlowerBatch(rules []Rule, dev string, verdict func(int) string) string {
	var sb strings.Builder
	for i, r := range rules {
		sb.WriteString(FlowerFilter(r, i, dev, verdict(i)))
		sb.WriteByte('\n')
	}
	return sb.String()
}
