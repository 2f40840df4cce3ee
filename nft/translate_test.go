package nft

import (
	"math/rand"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func matches(c bytesCmp, v []byte) bool {
	for i := range v {
		if (v[i]^c.val[i])&c.mask[i] != 0 {
			return false
		}
	}
	return true
}

func countMatches(cs []choice, v []byte) int {
	n := 0
	for _, c := range cs {
		if matches(c.parts[0], v) {
			n++
		}
	}
	return n
}

// Ranges become disjoint prefixes covering exactly the range.
func TestRangeChoicesExact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		lo, hi := uint64(rng.Intn(1<<16)), uint64(rng.Intn(1<<16))
		if lo > hi {
			lo, hi = hi, lo
		}
		cs := rangeChoices(lo, hi, 2)
		for v := uint64(0); v < 1<<16; v += 1 + uint64(rng.Intn(7)) {
			want := 0
			if v >= lo && v <= hi {
				want = 1
			}
			if got := countMatches(cs, putBE(v, 2)); got != want {
				t.Fatalf("[%d,%d]: %d matched by %d prefixes, want %d", lo, hi, v, got, want)
			}
		}
	}
}

// `!=` becomes one prefix per mask bit: every other value matches exactly
// one of them, the value itself none.
func TestNeqComplementExact(t *testing.T) {
	s := regSlot{known: true, f: field{kind: fPayload, len: 2}, mask: []byte{0x0f, 0xf0}}
	p, err := cmpPred(s, expr.CmpOpNeq, []byte{0x05, 0xa0})
	if err != nil || p == nil {
		t.Fatalf("cmpPred: %v %v", p, err)
	}
	for v := 0; v < 1<<16; v++ {
		b := []byte{byte(v >> 8), byte(v)}
		equal := b[0]&0x0f == 0x05 && b[1]&0xf0 == 0xa0
		want := 1
		if equal {
			want = 0
		}
		if got := countMatches(p.choices, b); got != want {
			t.Fatalf("%#04x: matched %d entries, want %d", v, got, want)
		}
	}
}

// Interval sets arrive as starts and exclusive end markers.
func TestIntervalElements(t *testing.T) {
	si := &setInfo{Set: &nftables.Set{Interval: true, KeyType: nftables.TypeInetService}, Elements: []nftables.SetElement{
		{Key: []byte{0, 0}, IntervalEnd: true},
		{Key: []byte{0, 80}},
		{Key: []byte{0, 91}, IntervalEnd: true},
		{Key: []byte{0x13, 0x88}}, // 5000 to the end
	}}
	els, err := elements(si)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 2 || beUint(els[0].from) != 80 || beUint(els[0].to) != 90 || beUint(els[1].from) != 5000 || beUint(els[1].to) != 0xffff {
		t.Fatalf("elements: %+v", els)
	}
}

func TestWideRange(t *testing.T) {
	lo := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0}
	hi := []byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0xff, 0xff}
	got := wideRange(lo, hi)
	if len(got) != 1 || string(got[0].mask) != string([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) {
		t.Fatalf("wideRange: %+v", got)
	}
	if wideRange(lo, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 5}) != nil {
		t.Fatal("a non-prefix interval must be refused")
	}
}
