package maps

import (
	"fmt"
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
	if err := t.readFlows(func(fk flowKey, val flowValue, _ *narrowKey, known bool) {
		if !known {
			out = append(out, "a narrow flow of an unknown subtable")
			return
		}
		inMaps[fk] = val
	}); err != nil {
		return nil, err
	}
	perSubtable := map[uint32]int{}
	for fk, owner := range t.flows {
		perSubtable[fk.Subtable]++
		val, ok := inMaps[fk]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("flow of rule %d not in the maps", owner))
		case val.Stats != owner:
			out = append(out, fmt.Sprintf("flow of rule %d has counter slot %d in the maps", owner, val.Stats))
		}
		delete(inMaps, fk)
	}
	for _, val := range inMaps {
		out = append(out, fmt.Sprintf("flow in the maps for rule %d that the table does not know", val.Stats))
	}
	owned := 0
	for id, in := range t.rules {
		for _, fk := range in.flows {
			if t.flows[fk] != id {
				out = append(out, fmt.Sprintf("rule %d lists a flow owned by %d", id, t.flows[fk]))
			}
		}
		owned += len(in.flows)
	}
	if owned != len(t.flows) {
		out = append(out, fmt.Sprintf("rules list %d flows, the flow map holds %d", owned, len(t.flows)))
	}
	for id, st := range t.subtablesByID {
		if st.flows != perSubtable[id] {
			out = append(out, fmt.Sprintf("subtable %d counts %d flows, holds %d", id, st.flows, perSubtable[id]))
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
