package maps

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// A subtable holds the flows of one mask, of rules of any priority. Each
// flow carries its rule's rank; the program searches the subtables in
// order of their bounds (no flow of a subtable has a lower rank) and stops
// at the first whose bound cannot beat the best hit.

type subtableKey struct {
	mask rule.Key
	// ranged: its flows carry port ranges, and each is the only entry
	// of its key (a flow holds one range); no other flow shares it.
	ranged bool
	// chosen: its ranged flows are tc filters', which the table chooses
	// (choices.go), apart from nft's, whose compiler chooses its own;
	// addrs: they check IPv4 addresses, where the others check ports
	// alone and the cache need not key the addresses for them.
	chosen, addrs bool
}

// rangedKind is what a ranged subtable is listed as (xf_subtable's ranged).
func (k subtableKey) rangedKind() uint8 {
	switch {
	case !k.chosen:
		return rangedNFT
	case k.addrs:
		return rangedChosen
	}
	return rangedChosenPorts
}

// subtableKeyOfListed is the key of a listed subtable.
func subtableKeyOfListed(s *subtableEntry) subtableKey {
	return subtableKey{mask: s.Mask, ranged: s.Ranged != 0, chosen: s.Ranged == rangedChosen || s.Ranged == rangedChosenPorts,
		addrs: s.Ranged == rangedChosen}
}

// subtableKeyOf is the subtable of r's entry e.
func subtableKeyOf(e *rule.Entry, r *rule.Rule) subtableKey {
	ranged := e.Ranged()
	chosen := ranged && r.Source != rule.SourceNFT
	return subtableKey{mask: e.Mask, ranged: ranged, chosen: chosen, addrs: chosen && (e.SrcAddrs.Set() || e.DstAddrs.Set())}
}

// flowRanges are a flow's port ranges and IPv4 address prefixes (unset:
// any).
type flowRanges struct {
	src, dst     rule.PortRange
	saddr, daddr rule.Prefix4
}

// rangesOfEntry is e's ranges.
func rangesOfEntry(e *rule.Entry) flowRanges {
	return flowRanges{e.SrcPorts, e.DstPorts, e.SrcAddrs, e.DstAddrs}
}

// entry is the entry of a flow of a subtable of mask with key and ranges r.
func (r flowRanges) entry(key, mask rule.Key) rule.Entry {
	return rule.Entry{Key: key, Mask: mask, SrcPorts: r.src, DstPorts: r.dst, SrcAddrs: r.saddr, DstAddrs: r.daddr}
}

// hasAddrRanges reports whether v checks addresses, which only a value of
// flows_ranged can.
func hasAddrRanges(v *flowValue) bool {
	return v.SaddrLo != 0 || v.SaddrHi != math.MaxUint32 || v.DaddrLo != 0 || v.DaddrHi != math.MaxUint32
}

// flowValueOf is the value of a flow of owner with ranges.
func flowValueOf(owner *Installed, r flowRanges) flowValue {
	v := flowValue{Flow: plainValue{ActionSet: owner.ActionSet, Stats: owner.ID, Rank: rankOf(owner),
		SportLo: 0, SportHi: 0xffff, DportLo: 0, DportHi: 0xffff}}
	if r.src.Set() {
		v.Flow.SportLo, v.Flow.SportHi = r.src.Min, r.src.Max
	}
	if r.dst.Set() {
		v.Flow.DportLo, v.Flow.DportHi = r.dst.Min, r.dst.Max
	}
	v.SaddrLo, v.SaddrHi = r.saddr.Range()
	v.DaddrLo, v.DaddrHi = r.daddr.Range()
	return v
}

// valueOfPlain is the value of a flow of flows or flows_narrow: no
// address ranges.
func valueOfPlain(v plainValue) flowValue {
	return flowValue{Flow: v, SaddrHi: math.MaxUint32, DaddrHi: math.MaxUint32}
}

// rangesOf is the ranges a flow value carries.
func rangesOf(v *flowValue) flowRanges {
	var r flowRanges
	if f := &v.Flow; f.SportLo != 0 || f.SportHi != 0xffff {
		r.src = rule.PortRange{Min: f.SportLo, Max: f.SportHi}
	}
	if f := &v.Flow; f.DportLo != 0 || f.DportHi != 0xffff {
		r.dst = rule.PortRange{Min: f.DportLo, Max: f.DportHi}
	}
	if v.SaddrLo != 0 || v.SaddrHi != math.MaxUint32 {
		r.saddr = rule.Prefix4Of(v.SaddrLo, v.SaddrHi)
	}
	if v.DaddrLo != 0 || v.DaddrHi != math.MaxUint32 {
		r.daddr = rule.Prefix4Of(v.DaddrLo, v.DaddrHi)
	}
	return r
}

type subtable struct {
	subtableKey
	id    uint32
	flows int
	// ranks counts the subtable's flows by rank; bound is the lowest, as
	// the table holds it, and listed the bound the live list carries
	// (never above the lowest rank of a flow in the maps).
	ranks  map[uint64]int
	bound  uint64
	listed uint64
	// spans hold every key its flows match (spans.go), as listed; deps
	// what its flows' ranges read beyond its mask (deps.go), as listed.
	spans addrSpans
	deps  rangeDeps
	// keyXor is the XOR of its flows' keys; inline the copy of its one
	// flow it is listed with, if any (inline.go).
	keyXor rule.Key
	inline *inlineFlow
}

// noRank is the bound of a subtable without flows.
const noRank = ^uint64(0)

// rankOf is in's place in the lookup order as the program compares it:
// its Order (source stage and priority), then its mask group's creation.
// TC's: the pref, then GroupSeq, which comes from a sequence that gains one
// per inserted rule, so it stays below 2^47. nft's, all above TC's: the
// level, then GroupSeq's low bits, since the parts of one level never
// overlap and their order does not matter.
func rankOf(in *Installed) uint64 {
	if o := in.Rule.Order(); o >= 1<<32 {
		return 1<<63 | (o&(1<<32-1))<<16 | in.GroupSeq&(1<<16-1)
	}
	return in.Rule.Order()<<47 | in.GroupSeq&(1<<47-1)
}

// boundAfter is the subtable's bound once delta (flows by rank) is applied.
func (st *subtable) boundAfter(delta map[uint64]int) uint64 {
	b := noRank
	for r, d := range delta {
		if d > 0 && st.ranks[r]+d > 0 && r < b {
			b = r
		}
	}
	if st.bound != noRank && st.ranks[st.bound]+delta[st.bound] > 0 {
		return min(b, st.bound)
	}
	for r, n := range st.ranks {
		if n+delta[r] > 0 && r < b {
			b = r
		}
	}
	return b
}

// applyRanks applies delta to the subtable's counts and bound.
func (st *subtable) applyRanks(delta map[uint64]int) {
	st.bound = st.boundAfter(delta)
	if st.ranks == nil {
		st.ranks = map[uint64]int{}
	}
	for r, d := range delta {
		if st.ranks[r] += d; st.ranks[r] <= 0 {
			delete(st.ranks, r)
		}
	}
}

// SubtableBounds returns the live list's (id, bound, flows) in lookup order.
func (t *Table) SubtableBounds() []struct {
	ID    uint32
	Bound uint64
	Flows int
} {
	sts := t.sortedSubtables(nil, nil)
	out := make([]struct {
		ID    uint32
		Bound uint64
		Flows int
	}, len(sts))
	for i, s := range sts {
		out[i].ID, out[i].Bound, out[i].Flows = s.id, s.listed, s.flows
	}
	return out
}

// sortedSubtables returns the table's subtables and add in lookup order,
// each with the bound it is to be listed with: bounds(st), or its listed
// bound when bounds is nil.
func (t *Table) sortedSubtables(add map[uint32]*subtable, bounds func(*subtable) uint64) []*subtable {
	out := make([]*subtable, 0, len(t.subtables)+len(add))
	for _, s := range t.subtables {
		out = append(out, s)
	}
	for _, s := range add {
		out = append(out, s)
	}
	if bounds != nil {
		for _, s := range out {
			s.listed = bounds(s)
		}
	}
	slices.SortFunc(out, func(a, b *subtable) int {
		return cmp.Or(cmp.Compare(a.listed, b.listed), bytes.Compare(rule.KeyBytes(&a.mask), rule.KeyBytes(&b.mask)))
	})
	return out
}

// publish makes list the program's subtable list: it fills the next buffer
// of the ring and points meta.active_list at it. Runs that read the old
// list finish with it; that buffer is held until they have.
func (t *Table) publish(list []*subtable) error {
	var l subtableList
	if len(list) > MaxSubtables {
		return fmt.Errorf("%d subtables: %w", len(list), ErrTableFull)
	}
	l.Count = uint32(len(list))
	l.NoRank = noRank
	for i, s := range list {
		lay := layoutOf(&s.mask)
		l.Subtables[i] = subtableEntry{Id: s.id, Bound: s.listed, Mask: s.mask,
			NarrowWords: lay.n, WordIdx: lay.idx}
		s.spans.listed(&l, i)
		s.inline.listInline(&l.Subtables[i])
		if s.ranged {
			l.Subtables[i].Ranged = s.rangedKind()
		}
		answers := s.answers()
		l.UnionMask = rule.UnionKey(&l.UnionMask, &answers)
	}
	// The flow cache's key: the union's words, when few enough (a
	// narrow layout, as a subtable's), else the whole masked key.
	if lay := layoutOf(&l.UnionMask); lay.n > 0 {
		uw := rule.KeyWords(&l.UnionMask)
		l.CacheWords, l.CacheWordIdx = lay.n, lay.idx
		for j := 0; j < int(lay.n); j++ {
			l.CacheMask[j] = uw[lay.idx[j]]
		}
	}
	// Unique per published list (cache entries are tagged with it), and
	// kept across processes: the next is one past the live one's.
	l.Generation = t.listGen + 1
	if l.Generation == 0 {
		l.Generation = 1
	}
	live := t.meta.ActiveList % listBuffers
	next := (live + 1) % listBuffers
	// The next buffer may still be read by runs from before it stopped
	// being live (only when changes come faster than grace periods).
	if err := t.waitFor(func(h *heldSlots) bool { return h.listBuf == int(next)+1 }); err != nil {
		return err
	}
	if err := t.m.SubtableLists.Put(next, &l); err != nil {
		return fmt.Errorf("write subtable list: %w", err)
	}
	t.meta.ActiveList = next
	if err := t.putMeta(); err != nil {
		return fmt.Errorf("swap subtable list: %w", err)
	}
	t.listGen = l.Generation
	t.hold(&heldSlots{listBuf: int(live) + 1})
	return nil
}
