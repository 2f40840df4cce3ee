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

var ipProtos = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}

func ipProtoName(v uint8) string {
	for n, p := range ipProtos {
		if p == v {
			return n
		}
	}
	return strconv.Itoa(int(v))
}
