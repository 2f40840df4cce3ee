package rule

import (
	"math/rand"
	"testing"
)

func TestPrefixBlocksCoverExactly(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	check := func(lo, hi uint16) {
		blocks := prefixBlocks(lo, hi)
		covered := 0
		for _, b := range blocks {
			covered += int(^b.mask) + 1
			if b.value&^b.mask != 0 {
				t.Fatalf("[%d,%d]: block %+v not aligned", lo, hi, b)
			}
		}
		if covered != int(hi)-int(lo)+1 {
			t.Fatalf("[%d,%d]: blocks cover %d ports", lo, hi, covered)
		}
		for _, p := range []uint16{lo, hi, lo + (hi-lo)/2} {
			n := 0
			for _, b := range blocks {
				if p&b.mask == b.value {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("[%d,%d]: port %d in %d blocks", lo, hi, p, n)
			}
		}
		if len(blocks) > 30 {
			t.Fatalf("[%d,%d]: %d blocks, want at most 2*16-2", lo, hi, len(blocks))
		}
	}
	check(0, 65535)
	check(1, 65534)
	check(1000, 2000)
	for i := 0; i < 2000; i++ {
		a, b := uint16(rng.Intn(65536)), uint16(rng.Intn(65536))
		if a > b {
			a, b = b, a
		}
		check(a, b)
	}
}

// Expand with earlier overlapping ranges must match exactly the ports the
// kernel gives this rule: its range minus the ranges before it.
func TestExpandSubtractsEarlierRanges(t *testing.T) {
	mk := func(src, dst PortRange) *Rule {
		r := &Rule{Prio: 1}
		r.Match.SrcPortRange, r.Match.DstPortRange = src, dst
		r.Match.Key.IpProto, r.Match.Mask.IpProto = 6, 0xFF
		return r
	}
	first := mk(PortRange{10, 50}, PortRange{100, 200})
	second := mk(PortRange{30, 80}, PortRange{150, 300})
	entries := Expand(second, []*Rule{first})
	for sp := uint16(0); sp < 100; sp++ {
		for _, dp := range []uint16{99, 100, 149, 150, 200, 201, 300, 301} {
			var k Key
			k.IpProto, k.SrcPort, k.DstPort = 6, HostToBE16(sp), HostToBE16(dp)
			n := 0
			for i := range entries {
				if entries[i].Covers(&k) {
					n++
				}
			}
			inSecond := sp >= 30 && sp <= 80 && dp >= 150 && dp <= 300
			inFirst := sp >= 10 && sp <= 50 && dp >= 100 && dp <= 200
			want := 0
			if inSecond && !inFirst {
				want = 1
			}
			if n != want {
				t.Fatalf("src %d dst %d: covered by %d entries, want %d", sp, dp, n, want)
			}
		}
	}
}

// RangeOrder: a filter whose ranges another filter had first (of other
// fields) goes ahead of a filter inserted before it, as fl_lookup_range
// finds it first.
func TestRangeOrderByFirstRanges(t *testing.T) {
	mk := func(src byte, lo, hi uint16) *Rule {
		r := &Rule{Prio: 1}
		r.Match.Key.SrcIp[0], r.Match.Mask.SrcIp[0] = src, 0xFF
		r.Match.DstPortRange = PortRange{lo, hi}
		return r
	}
	a, b, c := mk(9, 1, 50), mk(1, 1, 100), mk(1, 1, 50)
	got := RangeOrder([]*Rule{a, b, c})
	if got[0] != a || got[1] != c || got[2] != b {
		t.Fatalf("order %v, want a, c, b", got)
	}
	entries := Expand(b, got[:2])
	var k Key
	k.SrcIp[0] = 1
	for _, p := range []uint16{10, 60} {
		k.DstPort = HostToBE16(p)
		n := 0
		for i := range entries {
			if entries[i].Covers(&k) {
				n++
			}
		}
		if want := map[uint16]int{10: 0, 60: 1}[p]; n != want {
			t.Fatalf("port %d: b covers it %d times, want %d", p, n, want)
		}
	}
}
