package maps

import (
	"encoding/binary"
	"math"

	"github.com/xdpflow/xdpflow/rule"
)

// A subtable's spans bound the addresses of the keys its flows can match:
// the first 4 bytes of src_ip and of dst_ip, read big-endian (an IPv4
// address, or the top of an IPv6 one), as a range and as the set of top
// bytes. The program skips a subtable whose spans leave a packet's
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

// listed is the spans as the list entry carries them: lo above hi when
// they hold nothing.
func (a addrSpans) listed(e *subtableEntry) {
	if !a.some {
		e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = math.MaxUint32, 0, math.MaxUint32, 0
		e.SaddrTop, e.DaddrTop = [4]uint64{}, [4]uint64{}
		return
	}
	e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi = a.src.lo, a.src.hi, a.dst.lo, a.dst.hi
	e.SaddrTop, e.DaddrTop = a.src.top, a.dst.top
}

// spansOfEntry is the spans a list entry carries.
func spansOfEntry(e *subtableEntry) addrSpans {
	if e.SaddrLo > e.SaddrHi || e.DaddrLo > e.DaddrHi {
		return addrSpans{}
	}
	return addrSpans{true, span{e.SaddrLo, e.SaddrHi, e.SaddrTop}, span{e.DaddrLo, e.DaddrHi, e.DaddrTop}}
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
