package maps

import (
	"fmt"

	"github.com/xdpflow/xdpflow/bpf"
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
			if t.stByID[id] != nil {
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
	var l bpf.XdpflowXfSubtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return 0, err
	}
	return int(l.CacheWords), nil
}
