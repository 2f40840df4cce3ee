package maps

import "github.com/xdpflow/xdpflow/rule"

// Room is what a table has for the rules of one source that recompiles
// all of them: the budget of a SyncSource.
//
// Subtables, Flows and Rules bound the result: the table's limits less
// what the other sources hold. Masks are the other sources' subtables,
// which a rule of any priority may share without taking one.
//
// The New counts bound the way there. A change writes its new rules,
// flows and subtables before it removes the old ones (every step keeps
// each packet's verdict), so what a result has that is not in place
// already must fit in what is free now: slots no rule holds and no
// grace period keeps. HasSubtable, HasFlow and HasRule say what is in
// place and costs nothing more.
type Room struct {
	Subtables, Flows, Rules          int
	Masks                            map[rule.Key]bool
	NewSubtables, NewFlows, NewRules int

	t   *Table
	src rule.Source
}

// Room returns the room for the rules of source src. Rule slot 0 is never
// used. What the other sources hold is counted once per change of theirs.
func (t *Table) Room(src rule.Source) Room {
	stamp := uint64(0)
	for s, n := range t.srcChanges {
		if s != src {
			stamp += n
		}
	}
	others := t.othersUse[src]
	if others == nil || others.stamp != stamp {
		others = t.countOthers(src)
		others.stamp = stamp
		if t.othersUse == nil {
			t.othersUse = map[rule.Source]*othersUse{}
		}
		t.othersUse[src] = others
	}
	return Room{
		Subtables: int(t.meta.MaxSubtables) - others.subtables, Flows: t.maxFlows - others.flows,
		Rules: t.maxRules - 1 - others.rules, Masks: others.masks,
		NewSubtables: MaxSubtables - len(t.subtables) - len(t.heldSubtables()),
		NewFlows:     t.maxFlows - len(t.flows),
		NewRules:     t.maxRules - 1 - len(t.rules) - len(t.heldRules()),
		t:            t,
		src:          src,
	}
}

// othersUse is what the sources other than one hold, as of stamp (the sum
// of their changes).
type othersUse struct {
	stamp                   uint64
	subtables, flows, rules int
	masks                   map[rule.Key]bool
}

func (t *Table) countOthers(src rule.Source) *othersUse {
	used := map[uint32]bool{}
	o := &othersUse{}
	for _, in := range t.rules {
		if in.Rule.Source == src {
			continue
		}
		o.rules++
		o.flows += len(in.flows)
		for _, fk := range in.flows {
			used[fk.Subtable] = true
		}
	}
	o.subtables = len(used)
	o.masks = make(map[rule.Key]bool, len(used))
	for id := range used {
		o.masks[t.subtablesByID[id].mask] = true
	}
	return o
}

// changed notes a change of a rule of source src (Room's counts).
func (t *Table) changed(src rule.Source) {
	if t.srcChanges == nil {
		t.srcChanges = map[rule.Source]uint64{}
	}
	t.srcChanges[src]++
}

// Levels are the source's installed rules' levels (rule.Rule.Level), by
// name, for a result that keeps what it can in place.
func (r Room) Levels() map[string]uint32 {
	levels := map[string]uint32{}
	if r.t == nil {
		return levels
	}
	for _, in := range r.t.rules {
		if in.Rule.Source == r.src {
			levels[in.Rule.Name] = in.Rule.Level
		}
	}
	return levels
}

// HasSubtable says whether a subtable of mask (with ranged flows or not)
// is in place.
func (r Room) HasSubtable(mask rule.Key, ranged bool) bool {
	return r.t != nil && r.t.subtables[subtableKey{mask: mask, ranged: ranged}] != nil
}

// HasFlow says whether the flow of entry e is in place, whichever rule
// owns it: writing it again takes no new slot.
func (r Room) HasFlow(e rule.Entry) bool {
	if r.t == nil {
		return false
	}
	st := r.t.subtables[subtableKey{mask: e.Mask, ranged: e.Ranged()}]
	if st == nil {
		return false
	}
	_, ok := r.t.flows[flowKey{Subtable: st.id, Key: e.Key}]
	return ok
}

// HasRule says whether a rule of identity id is installed: a result that
// wants it again keeps it, in its slot.
func (r Room) HasRule(id rule.Identity) bool {
	if r.t == nil {
		return false
	}
	_, ok := r.t.identities()[id]
	return ok
}
