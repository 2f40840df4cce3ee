package maps

import "fmt"

// write carries out a plan in the order the package comment gives. Until
// the change is live in memory a failure is undone by repair (Apply);
// after it, it is cleanup left undone (liveChangeError).
func (t *Table) write(p *plan) error {
	if err := t.beginWrite(p); err != nil {
		return err
	}
	// 1. Action sets, counters, specs: not yet referenced by any flow.
	if err := t.writeActionSets(p.inserted); err != nil {
		return err
	}
	if err := t.writeRuleSpecs(p.inserted); err != nil {
		return err
	}
	// 2. New subtables, empty, and lowered bounds.
	if err := t.publishNewSubtables(p); err != nil {
		return err
	}
	// 3. Flows in, and flows to owners of lower ranks.
	if err := runStep("flows", func() error { return t.writeFlows(p.flowsToWrite, p) }); err != nil {
		return err
	}
	// 4. Flows to owners of higher ranks, ranged flows to other owners,
	// and stale flows out: only now, or a packet would meet its old
	// rule's flow gone, narrowed or passed to a later rule before its
	// new rule's flow is in.
	for _, round := range t.demoteRounds(p) {
		if err := runStep("demote", func() error { return t.writeFlows(round, p) }); err != nil {
			return err
		}
	}
	if err := t.deleteStaleFlows(p); err != nil {
		return err
	}

	// In memory: the new state.
	deletedIDs := p.deletedIDs()
	t.commitRules(p)
	t.commitGroups(p)
	t.commitFlows(p)
	emptied := t.commitSubtables(p)
	freed := &heldSlots{rules: deletedIDs, actionSets: t.commitActionSets(p)}

	// 5. The flows are final: cached answers from before are stale.
	if err := runStep("invalidate", t.invalidateCache); err != nil {
		return liveError(err, freed)
	}
	// 6. Emptied subtables out, and the deleted rules' specs (only user
	// space reads them).
	if err := t.unpublishSubtables(emptied, freed, p.inlineLater); err != nil {
		return liveError(err, freed)
	}
	if err := t.deleteRuleSpecs(deletedIDs); err != nil {
		return liveError(err, freed)
	}
	// 7. Freed slots wait for running programs.
	if err := t.holdFreed(freed); err != nil {
		return liveError(err, nil)
	}
	return nil
}

// liveChangeError is a write step that failed after the change went live
// in memory: the change is not undone but completed by repair.
type liveChangeError struct {
	err   error
	freed *heldSlots // not yet held; nil when it was
}

func (e *liveChangeError) Error() string { return e.err.Error() }
func (e *liveChangeError) Unwrap() error { return e.err }

func liveError(err error, freed *heldSlots) error { return &liveChangeError{err: err, freed: freed} }

// failStep, when a test sets it, makes the named write step fail.
var failStep func(step string) error

// runStep runs the write step name, unless a test makes it fail.
func runStep(name string, f func() error) error {
	if failStep != nil {
		if err := failStep(name); err != nil {
			return err
		}
	}
	return f()
}

// beginWrite records in meta that a change is being written (a process
// that finds it so repairs the maps), with the sequence numbers it takes.
func (t *Table) beginWrite(p *plan) error {
	t.meta.NextSeq = p.nextSeq
	t.meta.Dirty |= dirtyWriting
	return t.putMeta()
}

// writeRuleSpecs zeroes the inserted rules' counters and writes their
// specs, in batches: a bulk change of rules would otherwise be two
// syscalls a rule.
func (t *Table) writeRuleSpecs(inserted []*Installed) error {
	ids := make([]RuleID, len(inserted))
	specs := make([]ruleSpec, len(inserted))
	for i, in := range inserted {
		ids[i] = in.ID
		specs[i] = ruleSpec{Seq: in.Seq, GroupSeq: in.GroupSeq, ActionSet: in.ActionSet,
			Source: uint32(in.Rule.Source), TextLen: uint32(len(in.Rule.Text))}
		copy(specs[i].Text[:], in.Rule.Text)
	}
	if err := batchPutPerCPU(t.m.RuleStats, ids, ruleStats{}); err != nil {
		return fmt.Errorf("reset rule counters: %w", err)
	}
	if err := batchPut(t.m.RuleSpecs, ids, specs); err != nil {
		return fmt.Errorf("write rule specs: %w", err)
	}
	return nil
}

// publishNewSubtables adds the change's new subtables to the live list,
// lowers the bounds of those that gain flows of lower ranks and widens
// the spans and range dependencies of those that gain flows outside them,
// before any flow goes in: a listed bound must never be above a flow's
// rank, a flow's addresses outside the listed spans, nor what its answer
// reads outside the cache's key.
func (t *Table) publishNewSubtables(p *plan) error {
	changed := false
	for id, b := range p.subtableBounds {
		if st := t.subtablesByID[id]; st != nil && b < st.listed {
			changed = true
		}
	}
	for id, sp := range p.subtableSpans {
		st := t.subtableOf(id, p)
		changed = changed || !st.spans.covers(sp)
		// Wider spans are never wrong, so the change keeps them even
		// if it fails.
		st.spans = sp
	}
	for id, d := range p.subtableDeps {
		st := t.subtableOf(id, p)
		changed = changed || !st.deps.covers(d)
		st.deps = d // as the spans: kept even if the change fails
	}
	if t.planInline(p) {
		changed = true
	}
	if len(p.newSubtables) == 0 && !changed {
		return nil
	}
	return t.publish(t.sortedSubtables(p.newSubtables, func(st *subtable) uint64 {
		if b, ok := p.subtableBounds[st.id]; ok {
			return min(st.listed, b)
		}
		return st.listed
	}))
}

// writeFlows puts flows with their owners after the change.
func (t *Table) writeFlows(keys []flowKey, p *plan) error {
	if len(keys) == 0 {
		return nil
	}
	vals := make([]flowValue, len(keys))
	for i, fk := range keys {
		vals[i] = flowValueOf(t.owner(p.claimsAfter[fk][0], p), p.rangesAfter[fk])
	}
	if err := t.putFlows(keys, vals, p.newSubtables); err != nil {
		return fmt.Errorf("install flows: %w", err)
	}
	return nil
}

// demoteRounds orders step 4's flows into rounds, each written whole: a
// flow whose old owner stays goes in a round after every flow of step 4
// that the old owner takes, so its packets outside the new owner's flow
// meet their rule's new flow first (one filter taking another's chosen
// flow, which takes a third's, say; or a filter moving to a freed ranged
// flow while a shadowed rule takes over its old one). Flows that can wait
// on nothing, in a cycle no change is known to make, go in one last round.
func (t *Table) demoteRounds(p *plan) [][]flowKey {
	if len(p.flowsToDemote) < 2 {
		return [][]flowKey{p.flowsToDemote}
	}
	pending := make(map[flowKey]bool, len(p.flowsToDemote))
	taking := map[RuleID]int{} // a rule's pending flows as new owner
	for _, fk := range p.flowsToDemote {
		pending[fk] = true
		taking[p.claimsAfter[fk][0]]++
	}
	var rounds [][]flowKey
	for len(pending) > 0 {
		var round []flowKey
		for _, fk := range p.flowsToDemote {
			if !pending[fk] {
				continue
			}
			if old := t.flows[fk]; p.deleted[old] != nil || taking[old] == 0 {
				round = append(round, fk)
			}
		}
		if len(round) == 0 { // waiting on each other: all at once
			for _, fk := range p.flowsToDemote {
				if pending[fk] {
					round = append(round, fk)
				}
			}
		}
		for _, fk := range round {
			delete(pending, fk)
			taking[p.claimsAfter[fk][0]]--
		}
		rounds = append(rounds, round)
	}
	return rounds
}

// deleteStaleFlows deletes the flows no rule owns after the change.
func (t *Table) deleteStaleFlows(p *plan) error {
	if len(p.flowsToDelete) == 0 {
		return nil
	}
	if err := t.deleteFlows(p.flowsToDelete); err != nil {
		return fmt.Errorf("remove flows: %w", err)
	}
	return nil
}

// deletedIDs lists the ids of the rules the change deletes.
func (p *plan) deletedIDs() []RuleID {
	ids := make([]RuleID, 0, len(p.deleted))
	for id := range p.deleted {
		ids = append(ids, id)
	}
	return ids
}

// commitRules makes the table's rules (and byIdentity, if built) the new set.
func (t *Table) commitRules(p *plan) {
	for id, in := range p.deleted {
		t.changed(in.Rule.Source)
		delete(t.rules, id)
		if t.byIdentity != nil && t.byIdentity[in.identity()] == id {
			delete(t.byIdentity, in.identity())
		}
	}
	for _, in := range p.inserted {
		t.changed(in.Rule.Source)
		t.rules[in.ID] = in
		if t.byIdentity != nil {
			t.byIdentity[in.identity()] = in.ID
		}
	}
	t.idHint = p.idHint
}

// commitGroups edits the affected mask groups in place: a copy of a large
// group each change would be garbage the daemon keeps collecting.
func (t *Table) commitGroups(p *plan) {
	for gk, e := range p.groupEdits {
		t.setGroup(gk, groupAfter(t.groups[gk], e.deleted, e.inserted))
	}
}

// commitFlows makes the flows, their claims and the recomputed rules'
// flow lists the new ones. The rules must be committed.
func (t *Table) commitFlows(p *plan) {
	for fk, claims := range p.claimsAfter {
		if _, had := t.flows[fk]; had != (len(claims) > 0) {
			t.subtableOf(fk.Subtable, p).xorKey(&fk.Key)
		}
		switch {
		case len(claims) == 0:
			delete(t.flows, fk)
			delete(t.shadowed, fk)
			delete(t.flowRanges, fk)
		case len(claims) == 1:
			t.flows[fk] = claims[0]
			delete(t.shadowed, fk)
		default:
			t.flows[fk] = claims[0]
			t.shadowed[fk] = claims[1:]
		}
	}
	for fk, r := range p.rangesAfter {
		if len(p.claimsAfter[fk]) > 0 {
			t.flowRanges[fk] = r
		}
	}
	for _, in := range p.deleted {
		t.want(in, false)
	}
	for id, keys := range p.ruleFlows {
		in := t.rules[id]
		in.flows, in.Entries = keys, len(keys)
		t.want(in, false)
		in.choice, in.chooses = p.choices[id]
		t.want(in, true)
		t.changed(in.Rule.Source)
	}
}

// commitSubtables adds the new subtables and sets every subtable's flow
// count. It returns the ids of those left without flows, which stay
// listed until step 6 unpublishes them.
func (t *Table) commitSubtables(p *plan) (emptied []uint32) {
	for _, st := range p.newSubtables {
		t.subtables[st.subtableKey] = st
		t.subtablesByID[st.id] = st
	}
	for id, st := range t.subtablesByID {
		st.flows = p.subtableFlows[id]
		if d := p.rankDelta[id]; d != nil {
			st.applyRanks(d)
		}
		if st.flows == 0 {
			emptied = append(emptied, id)
		}
	}
	return emptied
}

// unpublishSubtables takes the emptied subtables out of the table and the
// live list, and lists every subtable with its bound (raised where the
// change took the flows of the lowest ranks) and the copy of its flow if it
// has one (inline.go) among inlineLater; the emptied ones' ids join freed.
func (t *Table) unpublishSubtables(emptied []uint32, freed *heldSlots, inlineLater map[uint32]bool) error {
	raised := false
	for _, st := range t.subtablesByID {
		raised = raised || (st.flows > 0 && st.bound != st.listed)
	}
	for _, id := range emptied {
		st := t.subtablesByID[id]
		delete(t.subtables, st.subtableKey)
		delete(t.subtablesByID, id)
		freed.subtables = append(freed.subtables, id)
	}
	if inlined := t.inlineCommitted(inlineLater); len(emptied) == 0 && !raised && !inlined {
		return nil
	}
	return runStep("publish", func() error { return t.publish(t.sortedSubtables(nil, exactBound)) })
}

// exactBound lists a subtable with the lowest rank of its flows.
func exactBound(st *subtable) uint64 { return st.bound }

// deleteRuleSpecs removes the deleted rules' specs.
func (t *Table) deleteRuleSpecs(ids []RuleID) error {
	if len(ids) == 0 {
		return nil
	}
	if err := runStep("specs", func() error { return batchDelete(t.m.RuleSpecs, ids) }); err != nil {
		return fmt.Errorf("remove rule specs: %w", err)
	}
	return nil
}

// holdFreed holds the freed slots for running programs: until they end
// (strict), or in the background (deferred), recorded in meta for other
// processes.
func (t *Table) holdFreed(freed *heldSlots) error {
	t.hold(freed)
	if !t.deferGrace {
		if err := runStep("settle", t.Settle); err != nil {
			return err
		}
	} else if !t.Pending() {
		if err := runStep("txports", t.syncTxPorts); err != nil {
			return err
		}
	}
	t.meta.Dirty = 0
	if t.Pending() {
		t.meta.Dirty = dirtyGrace
	}
	return runStep("meta", t.putMeta)
}
