package maps

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/xdpflow/xdpflow/rule"
)

// A subtable's spans bound the addresses of the keys its flows can match:
// the first 4 bytes of src_ip and of dst_ip, read big-endian (an IPv4
// address, or the top of an IPv6 one), as a range and, for each of the 4
// bytes, as the set of its values. The list carries the ranges in each
// subtable's entry and the byte values as rows, one per byte and value,
// of the subtables that have it. The program searches only the subtables
// in all 8 of a packet's rows, and skips those whose ranges leave its
// addresses out, at the cost of a few compares rather than a hash lookup
// that would miss: subtables of few flows, as most of a ClassBench set's
// or one per /24, are then looked up only by the packets that can hit
// them.
//
// The listed spans must hold every flow of the subtable whenever a packet
// can meet it: they widen before a change puts flows (with the new
// subtables and lowered bounds), and they never narrow while the table is
// open, since finding the new edges when a flow goes would need its
// subtable's flows. Opening the table computes them from the flows.

// addrBytes is the number of address bytes the rows are kept for: an
// IPv4 address's.
const addrBytes = 4

// span is lo..hi, inclusive, and bytes[k] the values of byte k (0 the
// top) of the addresses that a flow matches, a bit each: a subtable of a
// few flows far apart spans most addresses but few values of each byte,
// and flows that share their top bytes (one per /24 of a /16) differ in
// the next.
type span struct {
	lo, hi uint32
	bytes  [addrBytes][4]uint64
}

func (s span) union(o span) span {
	u := span{lo: min(s.lo, o.lo), hi: max(s.hi, o.hi)}
	for k := range u.bytes {
		for i := range u.bytes[k] {
			u.bytes[k][i] = s.bytes[k][i] | o.bytes[k][i]
		}
	}
	return u
}

func (s span) covers(o span) bool {
	for k := range s.bytes {
		for i := range s.bytes[k] {
			if o.bytes[k][i]&^s.bytes[k][i] != 0 {
				return false
			}
		}
	}
	return s.lo <= o.lo && o.hi <= s.hi
}

// byteBits is the values byte k (0 the top) takes in the addresses lo..hi
// that are addr under mask: a bit each. Both constraints hold of every
// address a flow matches, so what both allow is a superset of the byte's
// values there, and exact for a prefix.
func byteBits(k int, lo, hi, addr, mask uint32) (vals [4]uint64) {
	if lo > hi {
		return vals
	}
	shift := 24 - 8*k
	first, last := lo>>shift, hi>>shift
	mb, ab := byte(mask>>shift), byte(addr>>shift)&byte(mask>>shift)
	if mb == 0 && last-first >= 255 {
		return [4]uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64}
	}
	// A count, not an end: first+255 can pass the top of the address space.
	for j := range min(last-first, 255) + 1 {
		if v := byte(first + j); v&mb == ab {
			vals[v>>6] |= 1 << (v & 63)
		}
	}
	return vals
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
// when they hold nothing) and as its bits of the byte rows.
func (a addrSpans) listed(l *subtableList, i int) {
	e := &l.Subtables[i]
	if !a.some {
		e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = math.MaxUint32, 0, math.MaxUint32, 0
		return
	}
	e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = a.src.lo, a.src.hi, a.dst.lo, a.dst.hi
	word, bit := i/64, uint64(1)<<(i%64)
	for k := range addrBytes {
		for w := range 4 {
			for x := a.src.bytes[k][w]; x != 0; x &= x - 1 {
				l.BySaddrByte[word][k][w*64+bits.TrailingZeros64(x)] |= bit
			}
			for x := a.dst.bytes[k][w]; x != 0; x &= x - 1 {
				l.ByDaddrByte[word][k][w*64+bits.TrailingZeros64(x)] |= bit
			}
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
	for k := range addrBytes {
		for b := range 256 {
			if l.BySaddrByte[word][k][b]&bit != 0 {
				a.src.bytes[k][b>>6] |= 1 << (b & 63)
			}
			if l.ByDaddrByte[word][k][b]&bit != 0 {
				a.dst.bytes[k][b>>6] |= 1 << (b & 63)
			}
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
	a := binary.BigEndian.Uint32(addr[:4]) & m
	plo, phi := p.Range()
	s := span{lo: max(a, plo), hi: min(a|^m, phi)}
	for k := range s.bytes {
		s.bytes[k] = byteBits(k, s.lo, s.hi, a, m)
	}
	return s
}
