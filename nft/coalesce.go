package nft

import (
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// coalescePorts merges matches that differ only in one port into matches
// with a range of it: the prefix blocks nft's ranges and sets translate
// into (1024-65535 is six) become one match each, which the table holds as
// one entry rather than one per block and mask. A single value stays
// exact, and everything a merge would not keep exactly (a port under a
// mask that is no prefix) stays as it is.
func coalescePorts(ms []rule.Match) []rule.Match {
	return coalescePort(coalescePort(ms, dstPort), srcPort)
}

type portDim int

const (
	srcPort portDim = iota
	dstPort
)

// port is the key field, mask field and range of dimension d of m.
func (d portDim) of(m *rule.Match) (key, mask *uint16, r *rule.PortRange) {
	if d == srcPort {
		return &m.Key.SrcPort, &m.Mask.SrcPort, &m.SrcPortRange
	}
	return &m.Key.DstPort, &m.Mask.DstPort, &m.DstPortRange
}

// interval is the ports of dimension d that m accepts, if they are one
// interval.
func (d portDim) interval(m *rule.Match) (lo, hi uint16, ok bool) {
	key, mask, r := d.of(m)
	if r.Set() {
		return r.Min, r.Max, true
	}
	k, mk := rule.BE16ToHost(*key), rule.BE16ToHost(*mask)
	if inv := ^mk; inv&(inv+1) != 0 { // not a prefix
		return 0, 0, false
	}
	return k & mk, k | ^mk, true
}

func coalescePort(ms []rule.Match, d portDim) []rule.Match {
	type span struct{ lo, hi uint16 }
	groups := map[rule.Match][]span{}
	var order []rule.Match // first appearance, for a stable result
	var out []rule.Match
	for _, m := range ms {
		lo, hi, ok := d.interval(&m)
		if !ok {
			out = append(out, m)
			continue
		}
		rest := m
		key, mask, r := d.of(&rest)
		*key, *mask, *r = 0, 0, rule.PortRange{}
		if _, seen := groups[rest]; !seen {
			order = append(order, rest)
		}
		groups[rest] = append(groups[rest], span{lo, hi})
	}
	for _, rest := range order {
		spans := groups[rest]
		slices.SortFunc(spans, func(a, b span) int { return int(a.lo) - int(b.lo) })
		merged := spans[:1]
		for _, s := range spans[1:] {
			last := &merged[len(merged)-1]
			if uint32(s.lo) <= uint32(last.hi)+1 {
				last.hi = max(last.hi, s.hi)
				continue
			}
			merged = append(merged, s)
		}
		for _, s := range merged {
			m := rest
			key, mask, r := d.of(&m)
			switch {
			case s.lo == 0 && s.hi == 0xffff: // any port
			case s.lo == s.hi:
				*key, *mask = rule.HostToBE16(s.lo), 0xffff
			default:
				*r = rule.PortRange{Min: s.lo, Max: s.hi}
			}
			out = append(out, m)
		}
	}
	return out
}
