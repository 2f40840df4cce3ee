package maps

import (
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// HeldViolations lists slots in use that are still held: a slot reused, or
// a list buffer made live, before the grace period that frees it ended.
// Tests call it after changes; it must stay empty.
func (t *Table) HeldViolations() []string {
	var out []string
	for _, h := range t.held {
		select {
		case <-h.done:
			continue // over: reusable
		default:
		}
		for _, id := range h.rules {
			if t.rules[id] != nil {
				out = append(out, fmt.Sprintf("rule id %d reused", id))
			}
		}
		for _, slot := range h.actionSets {
			for _, in := range t.rules {
				if in.ActionSet == slot {
					out = append(out, fmt.Sprintf("action set slot %d reused", slot))
				}
			}
		}
		for _, id := range h.subtables {
			if t.subtablesByID[id] != nil {
				out = append(out, fmt.Sprintf("subtable id %d reused", id))
			}
		}
		if h.listBuf != 0 && uint32(h.listBuf-1) == t.meta.ActiveList%listBuffers {
			out = append(out, fmt.Sprintf("list buffer %d rewritten and live", h.listBuf-1))
		}
	}
	return out
}

// CacheKeyWords is how many key words the live list's flow cache key
// holds: 1..6 for a narrow key (two-way sets), 0 for the whole key.
func (t *Table) CacheKeyWords() (int, error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return 0, err
	}
	return int(l.CacheWords), nil
}

// FlowViolations compares the table's idea of its flows with the maps and
// with itself: every flow in memory is in the maps with its owner's
// counter slot, the maps hold no other, each rule's flow list is what the
// flow map says it owns, and each subtable's count is its flows'.
func (t *Table) FlowViolations() ([]string, error) {
	var out []string
	inMaps := map[flowKey]flowValue{}
	stray, err := t.readFlows(func(fk flowKey, val flowValue) { inMaps[fk] = val })
	if err != nil {
		return nil, err
	}
	v, err := t.inlineViolations(inMaps)
	if err != nil {
		return nil, err
	}
	out = append(out, v...)
	if n := len(stray.wide) + len(stray.narrow) + len(stray.ranged); n > 0 {
		out = append(out, fmt.Sprintf("%d flows of unknown subtables", n))
	}
	perSubtable := map[uint32]int{}
	lowest := map[uint32]uint64{}
	for fk, owner := range t.flows {
		perSubtable[fk.Subtable]++
		in := t.rules[owner]
		if in == nil {
			out = append(out, fmt.Sprintf("flow owned by rule %d, which the table does not hold", owner))
			continue
		}
		if r, ok := lowest[fk.Subtable]; !ok || rankOf(in) < r {
			lowest[fk.Subtable] = rankOf(in)
		}
		val, ok := inMaps[fk]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("flow of rule %d not in the maps", owner))
		case val.Flow.Stats != owner:
			out = append(out, fmt.Sprintf("flow of rule %d has counter slot %d in the maps", owner, val.Flow.Stats))
		case val.Flow.Rank != rankOf(in):
			out = append(out, fmt.Sprintf("flow of rule %d has rank %#x in the maps, the rule %#x", owner, val.Flow.Rank, rankOf(in)))
		case val != flowValueOf(in, t.flowRanges[fk]):
			out = append(out, fmt.Sprintf("flow of rule %d has ranges %+v in the maps, the table %+v", owner, rangesOf(&val), t.flowRanges[fk]))
		}
		if st := t.subtablesByID[fk.Subtable]; st != nil && st.ranged != (t.flowRanges[fk] != flowRanges{}) {
			out = append(out, fmt.Sprintf("flow of rule %d: ranges %+v in a subtable ranged=%v", owner, t.flowRanges[fk], st.ranged))
		}
		if st := t.subtablesByID[fk.Subtable]; st != nil && !st.deps.covers(depsOf(t.flowRanges[fk])) {
			out = append(out, fmt.Sprintf("flow of rule %d: ranges %+v read past subtable %d's listed dependencies %+v", owner, t.flowRanges[fk], st.id, st.deps))
		}
		if r := t.flowRanges[fk]; t.subtablesByID[fk.Subtable] != nil {
			if st := t.subtablesByID[fk.Subtable]; st.chosen && st.addrs != (r.saddr.Set() || r.daddr.Set()) {
				out = append(out, fmt.Sprintf("flow of rule %d: address ranges %+v in a chosen subtable addrs=%v", owner, r, st.addrs))
			}
		}
		delete(inMaps, fk)
		claims := t.claimsOf(fk)
		for i := 1; i < len(claims); i++ {
			if a, b := t.rules[claims[i-1]], t.rules[claims[i]]; a == nil || b == nil || rankOf(a) >= rankOf(b) {
				out = append(out, fmt.Sprintf("claims %v of a flow not in rank order", claims))
			}
		}
	}
	for fk := range t.shadowed {
		if _, ok := t.flows[fk]; !ok {
			out = append(out, "shadowed claims of a flow without an owner")
		}
	}
	for _, val := range inMaps {
		out = append(out, fmt.Sprintf("flow in the maps for rule %d that the table does not know", val.Flow.Stats))
	}
	claimed := 0
	for id, in := range t.rules {
		for _, fk := range in.flows {
			if !slices.Contains(t.claimsOf(fk), id) {
				out = append(out, fmt.Sprintf("rule %d lists a flow it has no claim on (owner %d)", id, t.flows[fk]))
			}
		}
		claimed += len(in.flows)
	}
	shadowed := 0
	for _, ids := range t.shadowed {
		shadowed += len(ids)
	}
	if claimed != len(t.flows)+shadowed {
		out = append(out, fmt.Sprintf("rules list %d flows, the table holds %d owned and %d shadowed", claimed, len(t.flows), shadowed))
	}
	// The choices a change made are those a process opening the table
	// makes (choices.go).
	var choosers []*Installed
	for _, members := range t.groups {
		for _, in := range members {
			if chooses(in.Rule, len(members)) {
				choosers = append(choosers, in)
			} else if in.chooses {
				out = append(out, fmt.Sprintf("rule %d has chosen entries, and chooses none", in.ID))
			}
		}
	}
	wanters := map[chosenFlow][]RuleID{}
	for id, c := range chooseFlows(choosers) {
		in := t.rules[id]
		if !in.chooses || in.choice != c {
			out = append(out, fmt.Sprintf("rule %d took choice %d (chooses %v), a fresh choice is %d", id, in.choice, in.chooses, c))
		}
		for _, f := range passedOver(&in.Rule.Match, c) {
			wanters[f] = append(wanters[f], id)
		}
	}
	for f, ids := range t.wanters {
		if !sameIDs(ids, wanters[f]) {
			out = append(out, fmt.Sprintf("wanters of a chosen flow %v, a fresh choice's %v", ids, wanters[f]))
		}
		delete(wanters, f)
	}
	for _, ids := range wanters {
		out = append(out, fmt.Sprintf("rules %v passed over a chosen flow, and are not its wanters", ids))
	}
	for gk := range t.groups {
		if !slices.Contains(t.prioGroups[gk.prio], gk.group) {
			out = append(out, fmt.Sprintf("group %+v not among its priority's", gk))
		}
	}
	for prio, groups := range t.prioGroups {
		for _, g := range groups {
			if len(t.groups[groupKey{prio, g}]) == 0 {
				out = append(out, fmt.Sprintf("priority %#x lists group %d, which has no rules", prio, g))
			}
		}
	}
	var live subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &live); err != nil {
		return nil, err
	}
	for id, st := range t.subtablesByID {
		if answers := st.answers(); rule.UnionKey(&live.UnionMask, &answers) != live.UnionMask {
			out = append(out, fmt.Sprintf("subtable %d: the live list's union mask leaves out what its answers read", id))
		}
		if st.flows != perSubtable[id] {
			out = append(out, fmt.Sprintf("subtable %d counts %d flows, holds %d", id, st.flows, perSubtable[id]))
		}
		if r, ok := lowest[id]; ok && (st.bound != r || st.listed > r) {
			out = append(out, fmt.Sprintf("subtable %d: bound %#x, listed %#x, its lowest rank %#x", id, st.bound, st.listed, r))
		}
	}
	return out, nil
}

// FailStep makes the write step named fail with err until the test ends.
func FailStep(t interface{ Cleanup(func()) }, name string, err error) {
	failStep = func(step string) error {
		if step == name {
			return err
		}
		return nil
	}
	t.Cleanup(func() { failStep = nil })
}

// BeforeEveryStep calls fn before each named write step of t's changes
// until the test ends, with the flow cache made stale first: runs that fn
// makes search the flows as the change has left them so far.
func (t *Table) BeforeEveryStep(tb interface {
	Cleanup(func())
}, fn func(step string)) {
	failStep = func(step string) error {
		if err := t.invalidateCache(); err != nil {
			return err
		}
		fn(step)
		return nil
	}
	tb.Cleanup(func() { failStep = nil })
}

// inlineViolations compares the live list's copies of flows with the
// table's idea of them and with the flows maps: a listed copy is the one
// the table thinks listed, and is its subtable's one flow as the maps
// hold it.
func (t *Table) inlineViolations(inMaps map[flowKey]flowValue) ([]string, error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return nil, err
	}
	var out []string
	for i := 0; i < int(l.Count) && i < MaxSubtables; i++ {
		e := &l.Subtables[i]
		st := t.subtablesByID[e.Id]
		if st == nil {
			out = append(out, fmt.Sprintf("listed subtable %d the table does not hold", e.Id))
			continue
		}
		c := inlineOfEntry(e)
		if (c == nil) != (st.inline == nil) || (c != nil && *c != *st.inline) {
			out = append(out, fmt.Sprintf("subtable %d listed with copy %+v, the table thinks %+v", e.Id, c, st.inline))
		}
		if c == nil {
			continue
		}
		want := t.committedInline(st)
		fk := flowKey{Subtable: st.id, Key: st.keyXor}
		if want == nil || *want != *c || inMaps[fk] != c.value {
			out = append(out, fmt.Sprintf("subtable %d (%d flows) listed with copy %+v, its flow %+v, in the maps %+v",
				e.Id, st.flows, c, want, inMaps[fk]))
		}
	}
	return out, nil
}

// InlinedSubtables is how many subtables the live list carries a copy
// of the one flow of, and how many subtables it lists.
func (t *Table) InlinedSubtables() (inlined, listed int, err error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return 0, 0, err
	}
	for i := 0; i < int(l.Count) && i < MaxSubtables; i++ {
		inlined += int(l.Subtables[i].Inlined)
	}
	return inlined, int(l.Count), nil
}

// ChoiceCounts is how many rules the table chose entries for
// (choices.go), and how many of them took a later choice than their
// first or their blocks: a ranged flow a rule before held.
func (t *Table) ChoiceCounts() (chose, later int) {
	for _, in := range t.rules {
		if in.chooses {
			chose++
			if in.choice != 0 {
				later++
			}
		}
	}
	return chose, later
}

// sameIDs reports whether a and b hold the same ids, in any order.
func sameIDs(a, b []RuleID) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
