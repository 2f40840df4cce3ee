package ruletext

import (
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// TestIPProtoNumberAsTc: tc's flower_parse_ip_proto refuses icmp
// under protocol ipv6 and icmpv6 under protocol ip by name only; a number
// (get_u8 in base 16) goes through whatever the protocol: `protocol ipv6
// flower ip_proto 1` and `protocol ip flower ip_proto 3a` are filters tc
// adds. And get_u8's strtoul takes one 0x prefix only ("0x0X5" is refused,
// trailing "X5") and a sign ("+2f" is 0x2f).
func TestIPProtoNumberAsTc(t *testing.T) {
	for _, c := range []struct {
		proto uint16
		words []string
		ok    bool
	}{
		{rule.EthPIPv6, []string{"ip_proto", "1"}, true},
		{rule.EthPIP, []string{"ip_proto", "3a"}, true},
		{rule.EthPIPv6, []string{"ip_proto", "icmp"}, false},
		{rule.EthPIP, []string{"ip_proto", "icmpv6"}, false},
		{rule.EthPIP, []string{"ip_proto", "0x0X5"}, false},
		{rule.EthPIP, []string{"ip_proto", "+2f"}, true},
	} {
		r := &rule.Rule{Protocol: c.proto}
		err := ParseTypedFlower(append(c.words, "action", "drop"), r)
		if (err == nil) != c.ok {
			t.Errorf("protocol %#04x flower %v: error %v; tc's parser accepts it: %v", c.proto, c.words, err, c.ok)
		}
	}
}
