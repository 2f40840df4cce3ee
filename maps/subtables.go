package maps

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// A subtable holds the flows of one (priority, mask group, mask); the
// program looks them up in the order of the live subtable list.

type subtableKey struct {
	prio  uint32 // rule.Rule.Order
	group uint64
	mask  rule.Key
}

type subtable struct {
	subtableKey
	id    uint32
	flows int
}

// SubtableOrder returns the live list's (prio, flows) in lookup order.
func (t *Table) SubtableOrder() []struct {
	ID    uint32
	Prio  uint32
	Flows int
} {
	sts := t.sortedSubtables(nil)
	out := make([]struct {
		ID    uint32
		Prio  uint32
		Flows int
	}, len(sts))
	for i, s := range sts {
		out[i].ID, out[i].Prio, out[i].Flows = s.id, s.prio, s.flows
	}
	return out
}

// sortedSubtables returns the table's subtables and add in lookup order.
func (t *Table) sortedSubtables(add map[uint32]*subtable) []*subtable {
	out := make([]*subtable, 0, len(t.subtables)+len(add))
	for _, s := range t.subtables {
		out = append(out, s)
	}
	for _, s := range add {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *subtable) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.group, b.group),
			bytes.Compare(rule.KeyBytes(&a.mask), rule.KeyBytes(&b.mask)))
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
	for i, s := range list {
		lay := layoutOf(&s.mask)
		l.Subtables[i] = subtableEntry{Id: s.id, Prio: s.prio, GroupSeq: s.group, Mask: s.mask,
			NarrowWords: lay.n, WordIdx: lay.idx}
		l.UnionMask = rule.UnionKey(&l.UnionMask, &s.mask)
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
