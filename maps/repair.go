package maps

import "fmt"

// repair makes the maps match the in-memory state: the subtable list, every
// flow, and the rule specs (dropping those listed in bad).
func (t *Table) repair(bad []uint32) error {
	if err := t.prepareWrite(); err != nil {
		return err
	}
	t.removeStaleSpecs(bad)
	// Publish every subtable a flow needs, fix the flows, then drop the rest.
	t.inlineCommitted(nil)
	if err := t.publish(t.sortedSubtables(nil, exactBound)); err != nil {
		return err
	}
	if err := t.repairFlows(); err != nil {
		return err
	}
	if err := t.invalidateCache(); err != nil {
		return err
	}
	if err := t.Sync(); err != nil {
		return err
	}
	if err := t.syncTxPorts(); err != nil {
		return err
	}
	t.meta.Dirty = 0
	return t.putMeta()
}

// removeStaleSpecs deletes the specs listed in bad and those of rules the
// table does not hold (a writer died before removing them).
func (t *Table) removeStaleSpecs(bad []uint32) {
	for _, id := range bad {
		_ = t.m.RuleSpecs.Delete(id)
	}
	var id uint32
	var spec ruleSpec
	var stale []uint32
	it := t.m.RuleSpecs.Iterate()
	for it.Next(&id, &spec) {
		if t.rules[id] == nil {
			stale = append(stale, id)
		}
	}
	for _, id := range stale {
		_ = t.m.RuleSpecs.Delete(id)
	}
}

// repairFlows writes every flow of the table and deletes the others the
// maps hold.
func (t *Table) repairFlows() error {
	var extra []flowKey
	stray, err := t.readFlows(func(fk flowKey, val flowValue) {
		owner, ok := t.flows[fk]
		if !ok {
			extra = append(extra, fk)
			return
		}
		if in := t.rules[owner]; in == nil || val != flowValueOf(in, t.flowRanges[fk]) {
			extra = append(extra, fk) // rewritten below
		}
	})
	if err != nil {
		return err
	}
	if err := batchDelete(t.m.Flows, stray.wide); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	if err := batchDelete(t.m.FlowsNarrow, stray.narrow); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	if err := batchDelete(t.m.FlowsRanged, stray.ranged); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	keys := make([]flowKey, 0, len(t.flows))
	vals := make([]flowValue, 0, len(t.flows))
	for fk, owner := range t.flows {
		keys = append(keys, fk)
		vals = append(vals, flowValueOf(t.rules[owner], t.flowRanges[fk]))
	}
	if err := t.putFlows(keys, vals, nil); err != nil {
		return fmt.Errorf("restore flows: %w", err)
	}
	var gone []flowKey
	for _, fk := range extra {
		if _, ok := t.flows[fk]; !ok {
			gone = append(gone, fk)
		}
	}
	if err := t.deleteFlows(gone); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	return nil
}
