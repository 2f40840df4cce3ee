package maps

import (
	"math"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// TestByteBits: the byte values of address spans, at the edges of the
// address space and of the bytes, and of masks that are no prefix.
func TestByteBits(t *testing.T) {
	bit := func(bs ...uint32) (top [4]uint64) {
		for _, b := range bs {
			top[b>>6] |= 1 << (b & 63)
		}
		return top
	}
	all := [4]uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64}
	for _, c := range []struct {
		k      int
		lo, hi uint32
		want   [4]uint64
	}{
		{0, 0, math.MaxUint32, all},
		{3, 0, math.MaxUint32, all},
		{0, 0, 0, bit(0)},
		{3, 0, 0, bit(0)},
		{0, math.MaxUint32, math.MaxUint32, bit(255)},
		{3, math.MaxUint32, math.MaxUint32, bit(255)},
		{3, math.MaxUint32 - 1, math.MaxUint32, bit(254, 255)},
		{0, 0xC6FFFFFF, 0xC7000000, bit(198, 199)},
		{1, 0xC6FFFFFF, 0xC7000000, bit(255, 0)},
		{3, 0xC6FFFFFF, 0xC7000000, bit(255, 0)},
		{2, 0xC613FF00, 0xC614FFFF, all},
		{2, 0xC6130500, 0xC61305FF, bit(5)},
		{0, 0x3F000000, 0x40FFFFFF, bit(63, 64)},
		{0, 5, 4, [4]uint64{}},
	} {
		if got := byteBits(c.k, c.lo, c.hi, 0, 0); got != c.want {
			t.Errorf("byteBits(%d, %#x, %#x) = %x, want %x", c.k, c.lo, c.hi, got, c.want)
		}
	}
	// 10.0.0.0 under 255.0.255.0 matches 10.x.0.y: one value of the top
	// and third bytes, every value of the others, and the span's edges.
	var key, mask rule.Key
	copy(key.SrcIp[:], []byte{10, 0, 0, 0})
	copy(mask.SrcIp[:], []byte{255, 0, 255, 0})
	s := spansOfFlow(&key, &mask, flowRanges{})
	if s.src.lo != 0x0A000000 || s.src.hi != 0x0AFF00FF || s.src.bytes != [4][4]uint64{bit(10), all, bit(0), all} {
		t.Errorf("10.0.0.0/255.0.255.0 spans %#x-%#x bytes %x", s.src.lo, s.src.hi, s.src.bytes)
	}
	if s.dst.lo != 0 || s.dst.hi != math.MaxUint32 || s.dst.bytes != [4][4]uint64{all, all, all, all} {
		t.Errorf("no destination mask spans %#x-%#x bytes %x", s.dst.lo, s.dst.hi, s.dst.bytes)
	}
	// A /20 within a range of a ranged flow: the range's bytes where it
	// is narrower than the prefix.
	copy(key.DstIp[:], []byte{198, 19, 16, 0})
	copy(mask.DstIp[:], []byte{255, 255, 240, 0})
	s = spansOfFlow(&key, &mask, flowRanges{daddr: rule.Prefix4{Addr: 0xC6131100, Bits: 24}})
	if s.dst.lo != 0xC6131100 || s.dst.hi != 0xC61311FF || s.dst.bytes != [4][4]uint64{bit(198), bit(19), bit(17), all} {
		t.Errorf("198.19.16.0/20 in 198.19.17.0/24 spans %#x-%#x bytes %x", s.dst.lo, s.dst.hi, s.dst.bytes)
	}
}
