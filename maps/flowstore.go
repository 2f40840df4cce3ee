package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/rule"
)

// Flows live in one of two hash maps, by their subtable's mask (struct
// xf_subtable): a mask that covers at most narrowWords key words makes a
// narrow subtable, whose flows are keyed by just those words in
// flows_narrow; wider ones use flows with the whole masked key. In memory
// every flow is a flowKey (the whole key); only reads and writes of the
// maps convert.

// layout is where a subtable's flows are stored: n key words (idx, in
// ascending order) in flows_narrow, or the whole key in flows (n == 0).
type layout struct {
	n   uint8
	idx [narrowWords]uint8
}

// layoutOf is the storage layout of flows under mask. Slots past n name
// a word the mask has zero (a narrow mask always has one), which the
// program then reads as zero without a branch.
func layoutOf(mask *rule.Key) layout {
	var l layout
	zero := -1
	for i, w := range rule.KeyWords(mask) {
		if w == 0 {
			if zero < 0 {
				zero = i
			}
			continue
		}
		if int(l.n) == narrowWords {
			return layout{}
		}
		l.idx[l.n] = uint8(i)
		l.n++
	}
	for j := int(l.n); j < narrowWords; j++ {
		l.idx[j] = uint8(zero)
	}
	return l
}

// narrow is fk's key in flows_narrow.
func (l layout) narrow(fk *flowKey) narrowKey {
	nk := narrowKey{Subtable: fk.Subtable}
	kw := rule.KeyWords(&fk.Key)
	for j := 0; j < int(l.n); j++ {
		nk.Words[j] = kw[l.idx[j]]
	}
	return nk
}

// wide is the whole key of a flows_narrow key.
func (l layout) wide(nk *narrowKey) flowKey {
	fk := flowKey{Subtable: nk.Subtable}
	kw := rule.KeyWords(&fk.Key)
	for j := 0; j < int(l.n); j++ {
		kw[l.idx[j]] = nk.Words[j]
	}
	return fk
}

// layoutFor finds subtable id's layout among the table's subtables and
// extra (a change's new ones by id, not yet in the table).
func (t *Table) layoutFor(id uint32, extra map[uint32]*subtable) (layout, error) {
	st := t.subtablesByID[id]
	if st == nil {
		st = extra[id]
	}
	if st == nil {
		return layout{}, fmt.Errorf("flow of unknown subtable %d", id)
	}
	return layoutOf(&st.mask), nil
}

// splitFlows sorts flows into the two maps' keys; vals may be nil.
func (t *Table) splitFlows(keys []flowKey, vals []flowValue, extra map[uint32]*subtable) (
	wk []flowKey, wv []flowValue, nk []narrowKey, nv []flowValue, err error) {
	for i := range keys {
		l, err := t.layoutFor(keys[i].Subtable, extra)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if l.n == 0 {
			wk = append(wk, keys[i])
			if vals != nil {
				wv = append(wv, vals[i])
			}
			continue
		}
		nk = append(nk, l.narrow(&keys[i]))
		if vals != nil {
			nv = append(nv, vals[i])
		}
	}
	return wk, wv, nk, nv, nil
}

// putFlows writes flows to the map their subtable's layout names.
func (t *Table) putFlows(keys []flowKey, vals []flowValue, extra map[uint32]*subtable) error {
	wk, wv, nk, nv, err := t.splitFlows(keys, vals, extra)
	if err != nil {
		return err
	}
	if err := batchPut(t.m.Flows, wk, wv); err != nil {
		return err
	}
	return batchPut(t.m.FlowsNarrow, nk, nv)
}

// deleteFlows removes flows, tolerating ones already gone.
func (t *Table) deleteFlows(keys []flowKey) error {
	wk, _, nk, _, err := t.splitFlows(keys, nil, nil)
	if err != nil {
		return err
	}
	if err := batchDelete(t.m.Flows, wk); err != nil {
		return err
	}
	return batchDelete(t.m.FlowsNarrow, nk)
}

// readFlows calls fn for every flow in the maps, with its whole key.
// raw is the flows_narrow key of a narrow flow (nil for a wide one);
// known is false for a narrow flow whose subtable the table does not have
// with a narrow layout (its key cannot be widened: fk is zero).
func (t *Table) readFlows(fn func(fk flowKey, val flowValue, raw *narrowKey, known bool)) error {
	var (
		fk  flowKey
		nk  narrowKey
		val flowValue
	)
	it := t.m.Flows.Iterate()
	for it.Next(&fk, &val) {
		fn(fk, val, nil, true)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read flows: %w", err)
	}
	nit := t.m.FlowsNarrow.Iterate()
	for nit.Next(&nk, &val) {
		raw := nk
		l, err := t.layoutFor(nk.Subtable, nil)
		if err != nil || l.n == 0 {
			fn(flowKey{}, val, &raw, false)
			continue
		}
		fn(l.wide(&nk), val, &raw, true)
	}
	if err := nit.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return fmt.Errorf("read narrow flows: %w", err)
	}
	return nil
}
