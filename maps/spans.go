package maps

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/xdpflow/xdpflow/rule"
)

// A subtable's spans bound the addresses of the keys its flows can match:
// the first 4 bytes of src_ip and of dst_ip, read big-endian (an IPv4
// address, or the top of an IPv6 one), as a range and as the set of top
// bytes. The list carries the ranges in each subtable's entry and the top
// bytes as rows, one per byte value, of the subtables that have it. The
// program searches only the subtables in both of a packet's rows, and
// skips those whose ranges leave its addresses out, at the cost of a few
// compares rather than a hash lookup that would miss: subtables of few
// flows, as most of a ClassBench set's or one per /24, are then looked up
// only by the packets that can hit them.
//
// The listed spans must hold every flow of the subtable whenever a packet
// can meet it: they widen before a change puts flows (with the new
// subtables and lowered bounds), and they never narrow while the table is
// open, since finding the new edges when a flow goes would need its
// subtable's flows. Opening the table computes them from the flows.

// span is lo..hi, inclusive, and top the values of the top 8 bits of the
// addresses of lo..hi that a flow matches, a bit each: a subtable of a few
// flows far apart spans most addresses but few of those bits.
type span struct {
	lo, hi uint32
	top    [4]uint64
}

func (s span) union(o span) span {
	u := span{lo: min(s.lo, o.lo), hi: max(s.hi, o.hi)}
	for i := range u.top {
		u.top[i] = s.top[i] | o.top[i]
	}
	return u
}

func (s span) covers(o span) bool {
	for i := range s.top {
		if o.top[i]&^s.top[i] != 0 {
			return false
		}
	}
	return s.lo <= o.lo && o.hi <= s.hi
}

// topBits is the bits of the top 8 bits of the addresses lo..hi.
func topBits(lo, hi uint32) (top [4]uint64) {
	for b := lo >> 24; b <= hi>>24 && lo <= hi; b++ {
		top[b>>6] |= 1 << (b & 63)
		if b == 255 {
			break
		}
	}
	return top
}

// addrSpans are a subtable's spans; the zero value holds nothing.
type addrSpans struct {
	some     bool
	src, dst span
}

func (a addrSpans) union(o addrSpans) addrSpans {
	switch {
	case !o.some:
		return a
	case !a.some:
		return o
	}
	return addrSpans{true, a.src.union(o.src), a.dst.union(o.dst)}
}

// covers reports whether a holds every key o does.
func (a addrSpans) covers(o addrSpans) bool {
	return !o.some || (a.some && a.src.covers(o.src) && a.dst.covers(o.dst))
}

// listed puts the spans in list l as its entry i carries them (lo above hi
// when they hold nothing) and as its bits of the top-byte rows.
func (a addrSpans) listed(l *subtableList, i int) {
	e := &l.Subtables[i]
	if !a.some {
		e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = math.MaxUint32, 0, math.MaxUint32, 0
		return
	}
	e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = a.src.lo, a.src.hi, a.dst.lo, a.dst.hi
	word, bit := i/64, uint64(1)<<(i%64)
	for w := range a.src.top {
		for x := a.src.top[w]; x != 0; x &= x - 1 {
			l.BySaddrTop[w*64+bits.TrailingZeros64(x)][word] |= bit
		}
		for x := a.dst.top[w]; x != 0; x &= x - 1 {
			l.ByDaddrTop[w*64+bits.TrailingZeros64(x)][word] |= bit
		}
	}
}

// spansOfEntry is the spans list l carries for its entry i.
func spansOfEntry(l *subtableList, i int) addrSpans {
	e := &l.Subtables[i]
	if e.SaddrLo > e.SaddrHi || e.DaddrLo > e.DaddrHi {
		return addrSpans{}
	}
	a := addrSpans{true, span{lo: e.SaddrLo, hi: e.SaddrHi}, span{lo: e.DaddrLo, hi: e.DaddrHi}}
	word, bit := i/64, uint64(1)<<(i%64)
	for b := range 256 {
		if l.BySaddrTop[b][word]&bit != 0 {
			a.src.top[b>>6] |= 1 << (b & 63)
		}
		if l.ByDaddrTop[b][word]&bit != 0 {
			a.dst.top[b>>6] |= 1 << (b & 63)
		}
	}
	return a
}

// spansOfFlow is the spans of the keys one flow matches: its masked
// addresses with every bit its subtable's mask leaves out either way,
// within its address ranges.
func spansOfFlow(key, mask *rule.Key, r flowRanges) addrSpans {
	return addrSpans{true, addrSpan(key.SrcIp, mask.SrcIp, r.saddr), addrSpan(key.DstIp, mask.DstIp, r.daddr)}
}

// planSpans works out the spans of the subtables the change writes flows
// to: each one's spans with those of its flows written.
func (t *Table) planSpans(p *plan) {
	for _, keys := range [][]flowKey{p.flowsToWrite, p.flowsToDemote} {
		for i := range keys {
			fk := &keys[i]
			st := t.subtableOf(fk.Subtable, p)
			had, ok := p.subtableSpans[fk.Subtable]
			if !ok {
				had = st.spans
			}
			p.subtableSpans[fk.Subtable] = had.union(spansOfFlow(&fk.Key, &st.mask, p.rangesAfter[*fk]))
		}
	}
}

func addrSpan(addr, mask [16]byte, p rule.Prefix4) span {
	m := binary.BigEndian.Uint32(mask[:4])
	lo := binary.BigEndian.Uint32(addr[:4]) & m
	plo, phi := p.Range()
	lo, hi := max(lo, plo), min(lo|^m, phi)
	return span{lo, hi, topBits(lo, hi)}
}
