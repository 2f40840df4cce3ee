package nft

import (
	"math/rand"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// matchHolds is whether m matches a TCP packet with these ports (the
// other fields are the same in every match of the test).
func matchHolds(m *rule.Match, sport, dport uint16) bool {
	var k rule.Key
	k.IpProto, k.SrcPort, k.DstPort = 6, rule.HostToBE16(sport), rule.HostToBE16(dport)
	e := rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange}
	return e.Covers(&k)
}

// blocks is [lo, hi] as nft translates it: prefix blocks, here of the
// source port.
func blocks(lo, hi uint16) []rule.Match {
	var out []rule.Match
	for _, b := range prefixes(uint64(lo), uint64(hi), 2) {
		out = append(out, rule.Match{Key: rule.Key{SrcPort: rule.HostToBE16(uint16(beUint(b.val)))},
			Mask: rule.Key{SrcPort: rule.HostToBE16(uint16(beUint(b.mask)))}})
	}
	return out
}

// TestCoalescePortsExact: matches made of the prefix blocks of random
// ranges (as nft's ranges and sets translate), exact ports, wildcards and
// ports under masks that are no prefix, coalesced, accept exactly the
// ports they did, in no more matches.
func TestCoalescePortsExact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	base := rule.Match{}
	base.Key.IpProto, base.Mask.IpProto = 6, 0xff
	randomPort := func() uint16 { return uint16(rng.Intn(1 << uint(4+rng.Intn(13)))) }
	for round := 0; round < 100; round++ {
		var ms []rule.Match
		// src blocks x dst blocks, as a cross product of two ranges or
		// values would give.
		var src, dst []rule.Match
		for i := 0; i < 1+rng.Intn(3); i++ {
			lo := randomPort()
			hi := lo + uint16(rng.Intn(3000))
			if hi < lo {
				hi = 0xffff
			}
			src = append(src, blocks(lo, hi)...)
		}
		for i := 0; i < 1+rng.Intn(3); i++ {
			lo := randomPort()
			hi := lo
			if rng.Intn(2) == 0 {
				hi += uint16(rng.Intn(2000))
			}
			if hi < lo {
				hi = 0xffff
			}
			for _, d := range blocks(lo, hi) {
				d.Key.DstPort, d.Mask.DstPort = d.Key.SrcPort, d.Mask.SrcPort
				d.Key.SrcPort, d.Mask.SrcPort = 0, 0
				dst = append(dst, d)
			}
		}
		if rng.Intn(4) == 0 {
			// a port under a mask that is no prefix: left as it is
			dst = append(dst, rule.Match{Key: rule.Key{DstPort: rule.HostToBE16(0x0050)}, Mask: rule.Key{DstPort: rule.HostToBE16(0x00ff)}})
		}
		for _, s := range src {
			for _, d := range dst {
				m := base
				m.Key.SrcPort, m.Mask.SrcPort = s.Key.SrcPort, s.Mask.SrcPort
				m.Key.DstPort, m.Mask.DstPort = d.Key.DstPort, d.Mask.DstPort
				ms = append(ms, m)
			}
		}
		got := coalescePorts(ms)
		if len(got) > len(ms) {
			t.Fatalf("round %d: %d matches became %d", round, len(ms), len(got))
		}
		for i := 0; i < 2000; i++ {
			sp, dp := uint16(rng.Intn(1<<16)), uint16(rng.Intn(1<<16))
			if i%2 == 0 { // near the matches, where they differ
				sp, dp = rule.BE16ToHost(ms[rng.Intn(len(ms))].Key.SrcPort)+uint16(rng.Intn(3)), rule.BE16ToHost(ms[rng.Intn(len(ms))].Key.DstPort)-uint16(rng.Intn(2))
			}
			before, after := false, false
			for j := range ms {
				before = before || matchHolds(&ms[j], sp, dp)
			}
			for j := range got {
				after = after || matchHolds(&got[j], sp, dp)
			}
			if before != after {
				t.Fatalf("round %d: ports %d,%d: %v before coalescing, %v after\nbefore %+v\nafter %+v", round, sp, dp, before, after, ms, got)
			}
		}
	}
}

// TestCoalescePortsOneRange: 1024-65535 x 1024-65535, 36 blocks, is one
// ranged match.
func TestCoalescePortsOneRange(t *testing.T) {
	base := rule.Match{}
	base.Key.IpProto, base.Mask.IpProto = 6, 0xff
	var ms []rule.Match
	for _, s := range blocks(1024, 65535) {
		for _, d := range blocks(1024, 65535) {
			m := base
			m.Key.SrcPort, m.Mask.SrcPort = s.Key.SrcPort, s.Mask.SrcPort
			m.Key.DstPort, m.Mask.DstPort = d.Key.SrcPort, d.Mask.SrcPort
			ms = append(ms, m)
		}
	}
	got := coalescePorts(ms)
	want := rule.PortRange{Min: 1024, Max: 65535}
	if len(got) != 1 || got[0].SrcPortRange != want || got[0].DstPortRange != want || got[0].Mask.SrcPort|got[0].Mask.DstPort != 0 {
		t.Fatalf("1024-65535 x 1024-65535 coalesced into %+v", got)
	}
}
