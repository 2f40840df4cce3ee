package ruletext

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// ethTypes maps tc's protocol names (ll_proto) to ethertypes.
var ethTypes = map[string]uint16{
	"all": rule.EthPAll, "ip": rule.EthPIP, "ipv4": rule.EthPIP, "ipv6": rule.EthPIPv6, "arp": rule.EthPARP,
	"rarp": rule.EthPRARP, "802.1q": rule.EthP8021Q, "802.1ad": rule.EthP8021AD, "8021q": rule.EthP8021Q,
	"8021ad": rule.EthP8021AD, "mpls_uc": 0x8847, "mpls_mc": 0x8848, "lldp": 0x88CC, "ipx": 0x8137,
	"loop": 0x0060, "pppoe_disc": 0x8863, "pppoe_sess": 0x8864, "802_3": 0x0001,
}

// ParseEthType parses a tc protocol name or number.
func ParseEthType(s string) (uint16, error) {
	if v, ok := ethTypes[strings.ToLower(s)]; ok {
		return v, nil
	}
	v, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return uint16(v), nil
}

// EthTypeName is the inverse of ParseEthType, in tc's spelling.
func EthTypeName(v uint16) string {
	switch v {
	case rule.EthPAll:
		return "all"
	case rule.EthPIP:
		return "ip"
	case rule.EthPIPv6:
		return "ipv6"
	case rule.EthPARP:
		return "arp"
	case rule.EthPRARP:
		return "rarp"
	case rule.EthP8021Q:
		return "802.1Q"
	case rule.EthP8021AD:
		return "802.1ad"
	}
	return fmt.Sprintf("0x%04x", v)
}

// ipProtoNames are the protocols tc's flower names (flower_parse_ip_proto,
// tc/f_flower.c): the first five also as any prefix of the name, tried in
// this order, as tc's matches() takes them; the rest whole.
var ipProtoNames = []struct {
	name   string
	proto  uint8
	prefix bool
}{{"tcp", 6, true}, {"udp", 17, true}, {"sctp", 132, true}, {"icmp", 1, true}, {"icmpv6", 58, true},
	{"l2tp", 115, false}, {"esp", 50, false}, {"ah", 51, false}}

// parseIPProto reads ip_proto's value as tc does: a name, or else a number
// in hex as get_u8 reads it in base 16 (strtoul: a sign, one "0x", hex
// digits, at most 0xff; "47" is 0x47, "-0" is 0). byName says which.
func parseIPProto(v string) (p uint8, byName, ok bool) {
	for _, n := range ipProtoNames {
		if v == n.name || n.prefix && v != "" && strings.HasPrefix(n.name, v) {
			return n.proto, true, true
		}
	}
	h, neg := v, false
	if h != "" && (h[0] == '+' || h[0] == '-') {
		h, neg = h[1:], h[0] == '-'
	}
	if len(h) > 2 && h[0] == '0' && (h[1] == 'x' || h[1] == 'X') {
		h = h[2:]
	}
	n, err := strconv.ParseUint(h, 16, 8)
	if err != nil || h == "" || h[0] == '+' || h[0] == '-' || neg && n != 0 {
		return 0, false, false // a negative number wraps past 0xff
	}
	return uint8(n), false, true
}

// ipProtoName is p as tc shows it (flower_print_ip_proto): its name, or
// 0x and two hex digits, which parseIPProto reads back.
func ipProtoName(p uint8) string {
	for _, n := range ipProtoNames {
		if n.proto == p {
			return n.name
		}
	}
	return fmt.Sprintf("0x%02x", p)
}
