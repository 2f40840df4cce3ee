package nft

import (
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/xdpflow/xdpflow/maps"
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
	if !maps.Narrow(&out.Mask) {
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

// widenFragPunt is the matches of a rule's fragment punt on just the
// fields that say which packets are fragments of which protocol. A punt
// sends packets to nft, which decides them exactly, so punting more
// fragments from the rule's level on is safe; every rule's punt then
// shares a few flows of one subtable, where its own fields would take
// subtables of their own.
func widenFragPunt(ms []rule.Match) []rule.Match {
	var out []rule.Match
	seen := map[rule.Match]bool{}
	for i := range ms {
		var w rule.Match
		w.Mask.EthType, w.Mask.L3Proto, w.Mask.IpProto, w.Mask.IpFrag = ms[i].Mask.EthType, ms[i].Mask.L3Proto, ms[i].Mask.IpProto, ms[i].Mask.IpFrag
		w.Key = rule.MaskKey(&ms[i].Key, &w.Mask)
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// portPrefixed is m, then m with the prefix each of its port ranges has
// in common kept in the mask as well (the flow still checks the range):
// matches of one masked key and other ranges then take flows of their
// own, in a few subtables, rather than prefix blocks.
func portPrefixed(m *rule.Match) []rule.Match {
	out := []rule.Match{*m}
	common := func(r rule.PortRange) uint16 {
		if !r.Set() {
			return 0
		}
		return ^uint16(0) << (16 - bits.LeadingZeros16(r.Min^r.Max))
	}
	sm, dm := common(m.SrcPortRange), common(m.DstPortRange)
	for _, pm := range [][2]uint16{{0, dm}, {sm, 0}, {sm, dm}} {
		if pm[0]|pm[1] == 0 {
			continue // no prefix to keep (a repeat is skipped as a flow tried)
		}
		c := *m
		if pm[0] != 0 {
			c.Mask.SrcPort = rule.HostToBE16(pm[0])
		}
		if pm[1] != 0 {
			c.Mask.DstPort = rule.HostToBE16(pm[1])
		}
		c.Key = rule.MaskKey(&m.Key, &c.Mask)
		c.Key.SrcPort |= rule.HostToBE16(m.SrcPortRange.Min & pm[0])
		c.Key.DstPort |= rule.HostToBE16(m.DstPortRange.Min & pm[1])
		if (c.SrcAddrs.Set() || c.DstAddrs.Set()) && !maps.Narrow(&c.Mask) {
			continue // the ports' word would make it wide, and only a narrow subtable checks addresses
		}
		out = append(out, c)
	}
	return out
}

// fragPunts is the fragment punts of ms whose flows claim gives: one
// held by a rule before is left out, since that rule's punt, at a lower
// level and of the same widened match, takes every packet this one
// would. False when a claim says placing must start again.
func fragPunts(ms []rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	out := ms[:0:0]
	for k := range ms {
		e := ms[k].Entry()
		switch claim(flowOf(&e)) {
		case claimTaken:
			out = append(out, ms[k])
		case claimHeldAfter:
			return nil, false
		}
	}
	if len(out) == len(ms) {
		return ms, true
	}
	return out, true
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
		switch {
		case !ok:
			return nil, false
		case choice == nil && out == nil:
			continue
		case out == nil:
			out = append(ms[:0:0], ms[:k]...)
		}
		if choice == nil {
			choice = ms[k : k+1]
		}
		out = append(out, choice...)
	}
	if out == nil {
		return ms, true
	}
	return out, true
}

// chooseFlow is chooseFlows for one match: nil when m itself takes its
// flow, which most do, so the other choices are made only when it does
// not.
func chooseFlow(m, orig *rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	var tried []rule.Entry
	try := func(c *rule.Match) (took, ok bool) {
		if !c.Ranged() {
			return true, true
		}
		e := c.Entry()
		flow := flowOf(&e)
		if slices.Contains(tried, flow) {
			return false, true
		}
		tried = append(tried, flow)
		switch claim(flow) {
		case claimTaken:
			return true, true
		case claimHeldAfter:
			return false, false
		}
		return false, true
	}
	if took, ok := try(m); !ok || took {
		return nil, ok
	}
	var choices []rule.Match
	for _, step := range keptSteps {
		c, mergeable := merged(orig, step)
		if !mergeable {
			break
		}
		if step == keptSteps[0] {
			c = *m
		}
		choices = append(choices, portPrefixed(&c)...)
	}
	choices = append(choices, portPrefixed(orig)...)
	for i := range choices {
		if took, ok := try(&choices[i]); !ok || took {
			return choices[i : i+1], ok
		}
	}
	e := orig.Entry()
	var out []rule.Match
	for _, b := range e.Blocks() {
		out = append(out, rule.Match{Key: b.Key, Mask: b.Mask})
	}
	return out, true
}
