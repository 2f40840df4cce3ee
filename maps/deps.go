package maps

import (
	"encoding/binary"

	"github.com/xdpflow/xdpflow/rule"
)

// A ranged flow's answer depends on more of a packet's key than its
// subtable's mask: the ports its port ranges check, and the leading bits
// of the addresses its address prefixes check. The flow cache keys
// packets by what the answers of every listed subtable depend on, so a
// subtable's range dependencies go into the list's union mask (answers):
// as the spans, they widen before a change puts flows and never narrow
// while the table is open, and opening the table computes them from the
// flows.

// rangeDeps are what a subtable's flows' ranges read beyond its mask: the
// leading bits of src_ip and dst_ip their longest address prefixes cover,
// and whether any checks a source or a destination port range.
type rangeDeps struct {
	saddr, daddr uint8
	sport, dport bool
}

func (d rangeDeps) union(o rangeDeps) rangeDeps {
	return rangeDeps{max(d.saddr, o.saddr), max(d.daddr, o.daddr), d.sport || o.sport, d.dport || o.dport}
}

func (d rangeDeps) covers(o rangeDeps) bool { return d.union(o) == d }

// depsOf is what a flow with ranges r reads beyond its mask.
func depsOf(r flowRanges) rangeDeps {
	return rangeDeps{r.saddr.Bits, r.daddr.Bits, r.src.Set(), r.dst.Set()}
}

// answers is what the answers of the subtable's flows depend on: its mask
// and its range dependencies.
func (st *subtable) answers() rule.Key {
	a := st.mask
	if st.deps.sport {
		a.SrcPort = 0xffff
	}
	if st.deps.dport {
		a.DstPort = 0xffff
	}
	lead := func(addr []byte, n uint8) {
		if n > 0 {
			binary.BigEndian.PutUint32(addr, binary.BigEndian.Uint32(addr)|^uint32(0)<<(32-n))
		}
	}
	lead(a.SrcIp[:4], st.deps.saddr)
	lead(a.DstIp[:4], st.deps.daddr)
	return a
}

// planDeps works out the range dependencies of the subtables the change
// writes ranged flows to.
func (t *Table) planDeps(p *plan) {
	for _, keys := range [][]flowKey{p.flowsToWrite, p.flowsToDemote} {
		for _, fk := range keys {
			r, ok := p.rangesAfter[fk]
			if !ok {
				continue
			}
			had, ok := p.subtableDeps[fk.Subtable]
			if !ok {
				had = t.subtableOf(fk.Subtable, p).deps
			}
			p.subtableDeps[fk.Subtable] = had.union(depsOf(r))
		}
	}
}
