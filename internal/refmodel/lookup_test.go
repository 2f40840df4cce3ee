package refmodel

import (
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// fl_lookup_range: the ranges of the first filter (in insertion order)
// that holds the port pick the filter, among those with the packet's other
// fields; masks go in creation order.
func TestClassifyAsFlower(t *testing.T) {
	mk := func(handle uint32, src string, lo, hi uint16) *rule.Rule {
		r := &rule.Rule{Prio: 1, Handle: handle, Protocol: rule.EthPIP}
		m := &r.Match
		m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xFFFF
		copy(m.Key.SrcIp[:4], net.ParseIP(src).To4())
		copy(m.Mask.SrcIp[:4], []byte{255, 255, 255, 255})
		m.DstPortRange = rule.PortRange{Min: lo, Max: hi}
		return r
	}
	var tb Table
	tb.Add(mk(1, "10.0.0.9", 1, 50))
	tb.Add(mk(2, "10.0.0.1", 1, 100))
	tb.Add(mk(3, "10.0.0.1", 1, 50))
	exact := &rule.Rule{Prio: 1, Handle: 4, Protocol: rule.EthPIP}
	exact.Match.Key.EthType[0], exact.Match.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xFFFF
	tb.Add(exact) // another mask, made after: tried after
	rules := tb.Rules()
	var k rule.Key
	k.EthType[0] = rule.HostToBE16(rule.EthPIP)
	copy(k.SrcIp[:4], net.ParseIP("10.0.0.1").To4())
	for _, c := range []struct {
		port   uint16
		handle uint32
	}{{10, 3}, {60, 2}, {200, 4}} {
		k.DstPort = rule.HostToBE16(c.port)
		i := classify(rules, &k)
		if i < 0 || rules[i].Handle != c.handle {
			t.Fatalf("port %d: rule %d, want handle %d", c.port, i, c.handle)
		}
	}
}
