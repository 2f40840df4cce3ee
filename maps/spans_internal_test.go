package maps

import (
	"math"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// TestTopBits: the top-byte bits of address spans, at the edges of the
// address space and of the bytes, and of masks that are no prefix.
func TestTopBits(t *testing.T) {
	bit := func(bs ...uint32) (top [4]uint64) {
		for _, b := range bs {
			top[b>>6] |= 1 << (b & 63)
		}
		return top
	}
	all := [4]uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64}
	for _, c := range []struct {
		lo, hi uint32
		want   [4]uint64
	}{
		{0, math.MaxUint32, all},
		{0, 0, bit(0)},
		{math.MaxUint32, math.MaxUint32, bit(255)},
		{0xC6FFFFFF, 0xC7000000, bit(198, 199)},
		{0x3F000000, 0x40FFFFFF, bit(63, 64)},
		{5, 4, [4]uint64{}},
	} {
		if got := topBits(c.lo, c.hi); got != c.want {
			t.Errorf("topBits(%#x, %#x) = %x, want %x", c.lo, c.hi, got, c.want)
		}
	}
	// 10.0.0.0 under 255.0.255.0 matches 10.x.0.y: one top byte, and
	// the span's edges.
	var key, mask rule.Key
	copy(key.SrcIp[:], []byte{10, 0, 0, 0})
	copy(mask.SrcIp[:], []byte{255, 0, 255, 0})
	s := spansOfFlow(&key, &mask, flowRanges{})
	if s.src.lo != 0x0A000000 || s.src.hi != 0x0AFF00FF || s.src.top != bit(10) {
		t.Errorf("10.0.0.0/255.0.255.0 spans %#x-%#x top %x", s.src.lo, s.src.hi, s.src.top)
	}
	if s.dst.lo != 0 || s.dst.hi != math.MaxUint32 || s.dst.top != all {
		t.Errorf("no destination mask spans %#x-%#x top %x", s.dst.lo, s.dst.hi, s.dst.top)
	}
}
