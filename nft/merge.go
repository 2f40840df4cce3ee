package nft

import (
	"encoding/binary"
	"math/bits"

	"github.com/xdpflow/xdpflow/rule"
)

// A match's IPv4 prefixes are checked in the program as address ranges,
// in a subtable whose mask keeps fewer bits of each (TupleMerge's relaxed
// tuples, Daly et al. 2019): rules of many prefix lengths then share a
// few subtables, where a subtable per pair of lengths would run past the
// table's limit on sets the size of ClassBench's. A flow of such a
// subtable is the only one of its masked key, so a match whose first
// choice another rule holds tries masks keeping more bits, then its
// ranges or prefix blocks as without merging.

// keptSteps are the multiples of bits a merged mask keeps of each prefix,
// tried in order.
var keptSteps = []uint8{8, 4, 2, 1}

// narrowWords is maps' narrow subtable: merged flows need one.
const narrowWords = 6

// merged is m in the subtable that keeps a multiple of step bits of each
// IPv4 prefix (the first four bytes of src_ip and dst_ip), the prefixes
// checked as ranges; false when m has no such prefix, matches more of
// the addresses, or would not be narrow.
func merged(m *rule.Match, step uint8) (rule.Match, bool) {
	sbits, sok := prefixBits(m.Mask.SrcIp)
	dbits, dok := prefixBits(m.Mask.DstIp)
	if !sok || !dok || sbits+dbits == 0 || m.SrcAddrs.Set() || m.DstAddrs.Set() {
		return rule.Match{}, false
	}
	out := *m
	keep := func(mask []byte, n uint8) { binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-n)) }
	keep(out.Mask.SrcIp[:4], sbits-sbits%step)
	keep(out.Mask.DstIp[:4], dbits-dbits%step)
	if !narrow(&out.Mask) {
		return rule.Match{}, false
	}
	out.Key = rule.MaskKey(&m.Key, &out.Mask)
	if sbits > 0 {
		out.SrcAddrs = rule.Prefix4{Addr: binary.BigEndian.Uint32(m.Key.SrcIp[:4]), Bits: sbits}
	}
	if dbits > 0 {
		out.DstAddrs = rule.Prefix4{Addr: binary.BigEndian.Uint32(m.Key.DstIp[:4]), Bits: dbits}
	}
	return out, true
}

// prefixBits is the length of the prefix an address mask is, when it is
// one of the first 32 bits.
func prefixBits(mask [16]byte) (uint8, bool) {
	if [12]byte(mask[4:]) != [12]byte{} {
		return 0, false
	}
	v := binary.BigEndian.Uint32(mask[:4])
	n := bits.LeadingZeros32(^v)
	return uint8(n), v<<n == 0
}

// narrow reports whether mask covers few enough key words for a narrow
// subtable.
func narrow(mask *rule.Key) bool {
	n := 0
	for _, w := range rule.KeyWords(mask) {
		if w != 0 {
			n++
		}
	}
	return n <= narrowWords
}

// mergedAll is ms, each match merged at the first step where it can be.
func mergedAll(ms []rule.Match) []rule.Match {
	var out []rule.Match
	for i := range ms {
		if m, ok := merged(&ms[i], keptSteps[0]); ok {
			if out == nil {
				out = append(ms[:0:0], ms...)
			}
			out[i] = m
		}
	}
	if out == nil {
		return ms
	}
	return out
}

// entryOf is the flow-table entry of match m.
func entryOf(m *rule.Match) rule.Entry {
	return rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange,
		SrcAddrs: m.SrcAddrs, DstAddrs: m.DstAddrs}
}

// flowOf is the flow a ranged entry takes: only one entry may.
func flowOf(e *rule.Entry) rule.Entry { return rule.Entry{Key: e.Key, Mask: e.Mask} }

// claimed is what a ranged flow's claim found.
type claimed int

const (
	claimTaken      claimed = iota // free: now the claimant's
	claimHeldBefore                // held by a rule before the claimant
	claimHeldAfter                 // held by a rule after it: placing must start again
)

// chooseFlows is ms (prepared, merged at the first step) with each
// ranged match whose flow claim does not give it replaced by the next
// choice of orig's match: merged keeping more bits, then orig's own
// ranges, then its prefix blocks. It returns ms itself when no match
// changes; false when a claim says placing must start again.
func chooseFlows(ms, orig []rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	var out []rule.Match
	for k := range ms {
		choice, ok := chooseFlow(&ms[k], &orig[k], claim)
		if !ok {
			return nil, false
		}
		if len(choice) == 1 && choice[0] == ms[k] && out == nil {
			continue
		}
		if out == nil {
			out = append(ms[:0:0], ms[:k]...)
		}
		out = append(out, choice...)
	}
	if out == nil {
		return ms, true
	}
	return out, true
}

// chooseFlow is chooseFlows for one match.
func chooseFlow(m, orig *rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	tried := map[rule.Entry]bool{}
	try := func(c *rule.Match) (bool, bool) {
		e := entryOf(c)
		if !e.Ranged() {
			return true, true
		}
		flow := flowOf(&e)
		if tried[flow] {
			return false, true
		}
		tried[flow] = true
		switch claim(flow) {
		case claimTaken:
			return true, true
		case claimHeldAfter:
			return false, false
		}
		return false, true
	}
	if took, ok := try(m); !ok || took {
		return []rule.Match{*m}, ok
	}
	for _, step := range keptSteps[1:] {
		c, mergeable := merged(orig, step)
		if !mergeable {
			break
		}
		if took, ok := try(&c); !ok || took {
			return []rule.Match{c}, ok
		}
	}
	if took, ok := try(orig); !ok || took {
		return []rule.Match{*orig}, ok
	}
	e := entryOf(orig)
	var out []rule.Match
	for _, b := range e.Blocks() {
		out = append(out, rule.Match{Key: b.Key, Mask: b.Mask})
	}
	return out, true
}
