package ruletext

import "testing"

// TestIPProtoAsTc: ip_proto's values read as tc's flower_parse_ip_proto
// reads them (a bare number is hex), and show as flower_print_ip_proto
// shows them, which read back the same.
func TestIPProtoAsTc(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint8
		ok   bool
	}{
		{"tcp", 6, true}, {"t", 6, true}, {"ud", 17, true}, {"ic", 1, true}, {"icmpv", 58, true}, {"icmpv6", 58, true},
		{"esp", 50, true}, {"es", 0, false}, {"ah", 51, true}, {"l2tp", 115, true},
		{"47", 0x47, true}, {"2f", 47, true}, {"0x2f", 47, true}, {"0X2F", 47, true}, {"ff", 255, true},
		{"100", 0, false}, {"", 0, false}, {"0x", 0, false}, {"gre", 0, false},
		{"0x0X5", 0, false}, {"+2f", 47, true}, {"-0", 0, true}, {"-1", 0, false}, {"+-1", 0, false}, {"0x+5", 0, false},
	} {
		got, _, ok := parseIPProto(c.in)
		if ok != c.ok || ok && got != c.want {
			t.Errorf("ip_proto %q: %d %v, want %d %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for p := 0; p < 256; p++ {
		name := ipProtoName(uint8(p))
		if back, _, ok := parseIPProto(name); !ok || back != uint8(p) {
			t.Errorf("ip_proto %d shows as %q, which reads back as %d %v", p, name, back, ok)
		}
	}
	if got := ipProtoName(47); got != "0x2f" {
		t.Errorf("ip_proto 47 shows as %q, tc's 0x2f", got)
	}
}
