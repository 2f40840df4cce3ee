package maps

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// A match's port ranges and IPv4 prefixes can be held whole, as one
// ranged flow checked in the program, instead of as prefix blocks, and
// its prefixes in a subtable whose mask keeps fewer bits of each
// (TupleMerge's relaxed tuples, Daly et al. 2019): rules of many prefix
// lengths and ranges then share a few subtables, where a subtable per
// pair of lengths and per block would run past the table's limit on sets
// the size of ClassBench's. A ranged flow holds one rule: a match whose
// first choice another holds takes its next (FlowChoices), and its
// prefix blocks after the last.
//
// nft's compiler chooses for its rules (nft.Compile). For tc filters the
// table chooses (chooseFlows), in rank order, so that the choices are the
// rules' own and a process that opens the table makes them again alike.

// MergeSteps are the multiples of bits a merged mask keeps of each
// prefix, tried in order.
var MergeSteps = []uint8{8, 4, 2, 1}

// Merged is m in the subtable that keeps a multiple of step bits of each
// IPv4 prefix (the first four bytes of src_ip and dst_ip), the prefixes
// checked as ranges; false when m has no such prefix, matches more of the
// addresses, or would not be narrow (only a narrow subtable checks
// addresses).
func Merged(m *rule.Match, step uint8) (rule.Match, bool) {
	sbits, sok := prefixBits(m.Mask.SrcIp)
	dbits, dok := prefixBits(m.Mask.DstIp)
	if !sok || !dok || sbits+dbits == 0 || m.SrcAddrs.Set() || m.DstAddrs.Set() {
		return rule.Match{}, false
	}
	out := *m
	keep := func(mask []byte, n uint8) { binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-n)) }
	keep(out.Mask.SrcIp[:4], sbits-sbits%step)
	keep(out.Mask.DstIp[:4], dbits-dbits%step)
	if !Narrow(&out.Mask) {
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

// PortPrefixed is m, then m with the prefix each of its port ranges has
// in common kept in the mask as well (the flow still checks the range):
// matches of one masked key and other ranges then take flows of their
// own, in a few subtables, rather than prefix blocks.
func PortPrefixed(m *rule.Match) []rule.Match {
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
		if (c.SrcAddrs.Set() || c.DstAddrs.Set()) && !Narrow(&c.Mask) {
			continue // the ports' word would make it wide, and only a narrow subtable checks addresses
		}
		out = append(out, c)
	}
	return out
}

// FlowChoices is what m can be held as in one flow each, best first: m
// merged at each step in turn (MergeSteps, while it can be), with its
// ports' prefixes kept (PortPrefixed), then m itself and its ports'
// prefixes. A choice without ranges takes a flow other rules may share;
// a ranged one takes a flow only if no rule holds it. When none is free,
// m's prefix blocks (rule.Entry.Blocks) are.
func FlowChoices(m *rule.Match) []rule.Match {
	var out []rule.Match
	eachFlowChoice(m, func(c *rule.Match) bool {
		out = append(out, *c)
		return true
	})
	return out
}

// eachFlowChoice calls f with each of FlowChoices(m) in turn while f
// returns true: most rules take their first, and a change works out every
// rule's.
func eachFlowChoice(m *rule.Match, f func(c *rule.Match) bool) {
	each := func(c *rule.Match) bool {
		for _, p := range PortPrefixed(c) {
			if !f(&p) {
				return false
			}
		}
		return true
	}
	for _, step := range MergeSteps {
		c, ok := Merged(m, step)
		if !ok {
			break
		}
		if !each(&c) {
			return
		}
	}
	each(m)
}

// chooses says whether the table chooses r's entries among FlowChoices:
// a tc filter (nft chooses for its own) whose match has a ranged choice,
// and whose ranges nothing lends: a filter of ranges shares its mask
// group with no other (fl_lookup_range lends ranges within one; see
// rule.RangeOrder). groupSize is its mask group's members.
func chooses(r *rule.Rule, groupSize int) bool {
	if r.Source == rule.SourceNFT || r.Opaque || len(r.More) > 0 || (r.HasRanges() && groupSize != 1) {
		return false
	}
	if r.HasRanges() {
		return true
	}
	_, ok := Merged(&r.Match, MergeSteps[0])
	return ok && !isPlainMerge(&r.Match)
}

// isPlainMerge reports whether m's prefixes are whole multiples of the
// first step, so merging it changes nothing.
func isPlainMerge(m *rule.Match) bool {
	s, _ := prefixBits(m.Mask.SrcIp)
	d, _ := prefixBits(m.Mask.DstIp)
	return s%MergeSteps[0] == 0 && d%MergeSteps[0] == 0
}

// chosenFlow names a ranged flow the table chooses for a tc filter: its
// subtable's mask, whether it checks addresses, and its masked key.
type chosenFlow struct {
	mask  rule.Key
	addrs bool
	key   rule.Key
}

// chosenFlowOfMatch is the ranged flow choice c takes.
func chosenFlowOfMatch(c *rule.Match) chosenFlow {
	return chosenFlow{c.Mask, c.SrcAddrs.Set() || c.DstAddrs.Set(), rule.MaskKey(&c.Key, &c.Mask)}
}

// choice is what chooseFlows gave a rule: the index of its FlowChoices
// taken, or blocks.
type choice int

const blocks choice = -1

// chooseFlows gives each of rules, in rank order (ties by Seq, then id),
// the first of its FlowChoices it can take, a ranged flow no rule before
// it took, or else its blocks. Its result is a function of the rules
// alone: a change and a process opening the table work it out alike.
func chooseFlows(rules []*Installed) map[RuleID]choice {
	slices.SortFunc(rules, byChoiceOrder)
	held := make(map[chosenFlow]bool, len(rules))
	out := make(map[RuleID]choice, len(rules))
	for _, in := range rules {
		i, took := 0, blocks
		eachFlowChoice(&in.Rule.Match, func(c *rule.Match) bool {
			if c.Ranged() {
				f := chosenFlowOfMatch(c)
				if held[f] {
					i++
					return true
				}
				held[f] = true
			}
			took = choice(i)
			return false
		})
		out[in.ID] = took
	}
	return out
}

// byChoiceOrder orders rules as chooseFlows takes them.
func byChoiceOrder(a, b *Installed) int {
	return cmp.Or(cmp.Compare(rankOf(a), rankOf(b)), cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID))
}

// choiceAt is choice c of m's FlowChoices; false for blocks.
func choiceAt(m *rule.Match, c choice) (at rule.Match, ok bool) {
	i := choice(0)
	eachFlowChoice(m, func(x *rule.Match) bool {
		if i == c {
			at, ok = *x, true
			return false
		}
		i++
		return true
	})
	return at, ok
}

// chosenFlowOf is the ranged flow of choice c of m, if c is one.
func chosenFlowOf(m *rule.Match, c choice) (chosenFlow, bool) {
	x, ok := choiceAt(m, c)
	if !ok || !x.Ranged() {
		return chosenFlow{}, false
	}
	return chosenFlowOfMatch(&x), true
}

// passedOver is the ranged flows of m's choices before c: those another
// rule held when c was taken.
func passedOver(m *rule.Match, c choice) []chosenFlow {
	var out []chosenFlow
	i := choice(0)
	eachFlowChoice(m, func(x *rule.Match) bool {
		if c != blocks && i == c {
			return false
		}
		if x.Ranged() {
			out = append(out, chosenFlowOfMatch(x))
		}
		i++
		return true
	})
	return out
}

// want records in as a wanter of the flows its choice passed over, or
// (add false) forgets it.
func (t *Table) want(in *Installed, add bool) {
	if !in.chooses {
		return
	}
	for _, f := range passedOver(&in.Rule.Match, in.choice) {
		if add {
			t.wanters[f] = append(t.wanters[f], in.ID)
			continue
		}
		if w := slices.DeleteFunc(t.wanters[f], func(id RuleID) bool { return id == in.ID }); len(w) > 0 {
			t.wanters[f] = w
		} else {
			delete(t.wanters, f)
		}
	}
}

// chosenHolder is the rule holding chosen flow f, 0 for none.
func (t *Table) chosenHolder(f chosenFlow) RuleID {
	st := t.subtables[subtableKey{mask: f.mask, ranged: true, chosen: true, addrs: f.addrs}]
	if st == nil {
		return 0
	}
	return t.flows[flowKey{Subtable: st.id, Key: f.key}]
}

// chosenEntries is the entries of r for choice c.
func chosenEntries(r *rule.Rule, c choice) []rule.Entry {
	m, ok := choiceAt(&r.Match, c)
	if !ok {
		e := r.Match.Entry()
		return e.Blocks()
	}
	return []rule.Entry{m.Entry()}
}
