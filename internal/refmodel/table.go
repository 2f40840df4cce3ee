package refmodel

import (
	"sort"

	"github.com/xdpflow/xdpflow/rule"
)

// Table keeps rules in the kernel's lookup order, written independently of
// maps/: tc's priorities, then nft's levels (rule.Order: the tc ingress hook
// runs before netfilter's netdev ingress); within a priority, masks in
// creation order (fl_create_new_mask appends to the list, fl_mask_put takes
// a mask out with its last filter); within a mask, filters in insertion
// order (fl_change: list_add_tail_rcu), a replaced filter keeping its place
// (list_replace_rcu). The kernel refuses a replacement with another mask
// (fl_check_assign_mask); xdpflow's table allows it, and the model moves
// the filter to that mask with its place in time.
type Table struct {
	entries []*entry
	seq     uint64
}

type entry struct {
	r          *rule.Rule
	seq, group uint64
}

func (t *Table) next() uint64 { t.seq++; return t.seq }

func (t *Table) groupFor(r *rule.Rule, except *entry) (uint64, bool) {
	for _, e := range t.entries {
		if e != except && e.r.Order() == r.Order() && e.r.MaskGroup() == r.MaskGroup() {
			return e.group, true
		}
	}
	return 0, false
}

// Add inserts a new rule.
func (t *Table) Add(r *rule.Rule) {
	e := &entry{r: r}
	g, ok := t.groupFor(r, nil)
	e.seq = t.next()
	if !ok {
		g = t.next()
	}
	e.group = g
	t.entries = append(t.entries, e)
}

func (t *Table) find(prio uint16, handle uint32) int {
	for i, e := range t.entries {
		if e.r.Prio == prio && e.r.Handle == handle {
			return i
		}
	}
	return -1
}

// Replace swaps the rule at (prio, handle) for r, keeping its place.
func (t *Table) Replace(prio uint16, handle uint32, r *rule.Rule) bool {
	i := t.find(prio, handle)
	if i < 0 {
		return false
	}
	old := t.entries[i]
	e := &entry{r: r, seq: old.seq}
	if old.r.MaskGroup() == r.MaskGroup() {
		e.group = old.group
	} else if g, ok := t.groupFor(r, old); ok {
		e.group = g
	} else {
		e.group = t.next()
	}
	t.entries[i] = e
	return true
}

// Delete removes the rule at (prio, handle).
func (t *Table) Delete(prio uint16, handle uint32) bool {
	i := t.find(prio, handle)
	if i < 0 {
		return false
	}
	t.entries = append(t.entries[:i], t.entries[i+1:]...)
	return true
}

// DeleteLevel removes the nft part of level.
func (t *Table) DeleteLevel(level uint32) bool {
	for i, e := range t.entries {
		if e.r.Source == rule.SourceNFT && e.r.Level == level {
			t.entries = append(t.entries[:i], t.entries[i+1:]...)
			return true
		}
	}
	return false
}

// Rules returns the rules in lookup order.
func (t *Table) Rules() []*rule.Rule {
	es := append([]*entry(nil), t.entries...)
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.r.Order() != b.r.Order() {
			return a.r.Order() < b.r.Order()
		}
		if a.group != b.group {
			return a.group < b.group
		}
		return a.seq < b.seq
	})
	out := make([]*rule.Rule, len(es))
	for i, e := range es {
		out[i] = e.r
	}
	return out
}

// Len is the number of rules.
func (t *Table) Len() int { return len(t.entries) }
