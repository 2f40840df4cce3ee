package maps

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// load reads the table from the maps: the live subtable list, the rules'
// specs and action sets; the flows are recomputed from the rules. Maps a
// writer left mid-change, or with unreadable specs, are repaired.
func (t *Table) load(parse ParseFunc) error {
	if err := t.loadSubtables(); err != nil {
		return err
	}
	bad, err := t.loadRules(parse)
	if err != nil {
		return err
	}
	if err := t.loadActionSets(); err != nil {
		return err
	}
	t.countTxPorts()

	// Opaque rules (nft) are known by their installed entries only: read
	// them from the flows map. After a writer died mid-change those cannot
	// be trusted, so the rules are dropped; the daemon installs them again
	// from the kernel's ruleset, and until then nft handles their packets.
	if err := t.loadOpaqueFlows(); err != nil {
		return err
	}
	if t.meta.Dirty&dirtyWriting != 0 {
		for id, in := range t.rules {
			if in.Rule.Opaque {
				bad = append(bad, id)
				t.dropLoaded(in)
			}
		}
		t.countTxPorts()
	}

	// Flows: recomputed from the rules, the same way they were installed.
	if t.rebuildFlows() || len(bad) > 0 || t.meta.Dirty&dirtyWriting != 0 {
		// A writer died mid-change, or specs are unreadable: make the
		// maps match the rules again.
		return t.repair(bad)
	}
	return nil
}

// loadSubtables reads the live subtable list.
func (t *Table) loadSubtables() error {
	var list subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &list); err != nil {
		return fmt.Errorf("read subtable list: %w", err)
	}
	t.listGen, t.listedUnion = list.Generation, list.UnionMask
	for i := 0; i < int(list.Count) && i < MaxSubtables; i++ {
		s := &list.Subtables[i]
		st := &subtable{subtableKey: subtableKeyOfListed(s), id: s.Id, bound: noRank, listed: s.Bound,
			spans: spansOfEntry(&list, i), inline: inlineOfEntry(s)}
		t.subtables[st.subtableKey] = st
		t.subtablesByID[st.id] = st
	}
	return nil
}

// loadRules reads the rules from their persisted specs, into their mask
// groups. It returns the ids of the specs parse refused.
func (t *Table) loadRules(parse ParseFunc) (bad []uint32, err error) {
	var (
		id   uint32
		spec ruleSpec
	)
	it := t.m.RuleSpecs.Iterate()
	for it.Next(&id, &spec) {
		text := string(spec.Text[:min(int(spec.TextLen), len(spec.Text))])
		r, err := parse(text)
		if err != nil {
			bad = append(bad, id)
			continue
		}
		r.Source, r.Text = rule.Source(spec.Source), text
		in := &Installed{ID: id, Rule: r, Seq: spec.Seq, GroupSeq: spec.GroupSeq, ActionSet: spec.ActionSet}
		t.rules[id] = in
		t.groups[in.group()] = append(t.groups[in.group()], in)
		t.addPrioGroup(in.group())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read rule specs: %w", err)
	}
	for gk := range t.groups {
		sortBySeq(t.groups[gk])
	}
	return bad, nil
}

// loadActionSets reads the rules' action sets: their content as installed.
// Redirect targets come from there, not from names, which may have moved
// since.
func (t *Table) loadActionSets() error {
	for _, in := range t.rules {
		set, ok := t.actionSetBySlot[in.ActionSet]
		if !ok {
			if err := t.m.ActionSets.Lookup(in.ActionSet, &set); err != nil {
				return fmt.Errorf("read action set %d: %w", in.ActionSet, err)
			}
			t.addActionSet(in.ActionSet, set)
		}
		t.actionSets[t.actionKeyBySlot[in.ActionSet]].refs++
		for i := range in.Rule.Actions {
			if i < int(set.Count) && in.Rule.Actions[i].Kind == rule.ActRedirect {
				in.Rule.Actions[i].Ifindex = int(set.Actions[i].Ifindex)
				if set.Actions[i].Op == opTX {
					in.Rule.Actions[i].Ifindex = int(t.meta.Ifindex)
				}
			}
		}
	}
	return nil
}

// loadOpaqueFlows gives each opaque rule the flows the map holds for it.
func (t *Table) loadOpaqueFlows() error {
	opaque := false
	for _, in := range t.rules {
		opaque = opaque || in.Rule.Opaque
	}
	if !opaque {
		return nil
	}
	_, err := t.readFlows(func(fk flowKey, val flowValue) {
		if in := t.rules[val.Flow.Stats]; in != nil && in.Rule.Opaque {
			in.flows = append(in.flows, fk)
			if r := rangesOf(&val); r != (flowRanges{}) {
				t.flowRanges[fk] = r
			}
		}
	})
	return err
}

// dropLoaded forgets a rule read from the specs (before flows are built).
func (t *Table) dropLoaded(in *Installed) {
	t.changed(in.Rule.Source)
	delete(t.rules, in.ID)
	t.byIdentity, t.idHint = nil, 1
	gk := in.group()
	t.setGroup(gk, slices.DeleteFunc(t.groups[gk], func(x *Installed) bool { return x == in }))
	t.unrefActionSet(in.ActionSet)
}

// entriesOfAll is every rule's entries, as its mask group and the
// table's choices (choices.go) give them; none for opaque rules.
func (t *Table) entriesOfAll() map[RuleID][]rule.Entry {
	entries := make(map[RuleID][]rule.Entry, len(t.rules))
	var choosers []*Installed
	for _, members := range t.groups {
		for id, es := range expandGroup(members) {
			entries[id] = es
		}
		for _, in := range members {
			in.chooses = chooses(in.Rule, len(members))
			if in.chooses {
				choosers = append(choosers, in)
			}
		}
	}
	t.wanters = map[chosenFlow][]RuleID{}
	for id, c := range chooseFlows(choosers) {
		in := t.rules[id]
		in.choice = c
		t.want(in, true)
		entries[id] = chosenEntries(in.Rule, c)
	}
	return entries
}

// rebuildFlows recomputes every flow and its claims from the rules, reusing
// the live subtables. It reports whether the live list differs from what
// the rules need.
func (t *Table) rebuildFlows() (differs bool) {
	t.othersUse = nil // every rule's flows are counted again
	live := t.subtables
	t.subtables, t.flows, t.shadowed = map[subtableKey]*subtable{}, map[flowKey]RuleID{}, map[flowKey][]RuleID{}
	installedRanges := t.flowRanges
	t.flowRanges = map[flowKey]flowRanges{}
	used := map[uint32]bool{}
	for _, st := range live {
		used[st.id] = true
	}
	next := uint32(1)
	liveByID := t.subtablesByID
	t.subtablesByID = map[uint32]*subtable{}
	claims := map[flowKey][]RuleID{}
	listedSpans := map[uint32]addrSpans{}
	entries := t.entriesOfAll()
	for _, members := range t.groups {
		for _, in := range members {
			if in.Rule.Opaque {
				// Entries as installed: (subtable mask, masked key).
				// Those another rule shadowed are not in the maps, and
				// are lost: their packets go to the kernel when it goes.
				for _, fk := range in.flows {
					if st := liveByID[fk.Subtable]; st != nil {
						entries[in.ID] = append(entries[in.ID], installedRanges[fk].entry(fk.Key, st.mask))
					}
				}
			}
			in.flows = in.flows[:0]
			for _, e := range entries[in.ID] {
				k := subtableKeyOf(&e, in.Rule)
				st := t.subtables[k]
				if st == nil {
					if st = live[k]; st == nil {
						// Not in the live list: a fresh id, never one
						// whose stale flows could show up under it.
						for used[next] {
							next++
						}
						st = &subtable{subtableKey: k, id: next, listed: noRank}
						used[next] = true
						differs = true
					}
					listedSpans[st.id] = st.spans
					st.flows, st.ranks, st.bound, st.spans, st.deps, st.keyXor = 0, map[uint64]int{}, noRank, addrSpans{}, rangeDeps{}, rule.Key{}
					t.subtables[k] = st
					t.subtablesByID[st.id] = st
				}
				fk := flowKey{Subtable: st.id, Key: e.Key}
				claims[fk] = append(claims[fk], in.ID)
				if e.Ranged() {
					t.flowRanges[fk] = rangesOfEntry(&e)
				}
				in.flows = append(in.flows, fk)
			}
			in.Entries = len(in.flows)
		}
	}
	rank := func(id RuleID) uint64 { return rankOf(t.rules[id]) }
	for fk, ids := range claims {
		slices.SortFunc(ids, func(a, b RuleID) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b)) })
		t.flows[fk] = ids[0]
		if len(ids) > 1 {
			t.shadowed[fk] = ids[1:]
		}
		st := t.subtablesByID[fk.Subtable]
		st.flows++
		st.ranks[rank(ids[0])]++
		st.bound = min(st.bound, rank(ids[0]))
		st.spans = st.spans.union(spansOfFlow(&fk.Key, &st.mask, t.flowRanges[fk]))
		st.deps = st.deps.union(depsOf(t.flowRanges[fk]))
		st.xorKey(&fk.Key)
	}
	for _, st := range t.subtables {
		answers := st.answers()
		differs = differs || rule.UnionKey(&t.listedUnion, &answers) != t.listedUnion
		differs = differs || st.listed != st.bound || !listedSpans[st.id].covers(st.spans)
		// A listed copy must be the one flow's (one not yet listed is
		// listed with the next change).
		if st.inline != nil {
			c := t.committedInline(st)
			differs = differs || c == nil || *c != *st.inline
		}
	}
	return differs || len(t.subtables) != len(live)
}
