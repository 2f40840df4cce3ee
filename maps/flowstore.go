package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/rule"
)

// Flows live in one of three hash maps, by their subtable (struct
// xf_subtable): a mask that covers at most narrowWords key words makes a
// narrow subtable, whose flows are keyed by just those words, in
// flows_ranged with their ranges when the subtable is ranged and in
// flows_narrow when not; wider ones use flows with the whole masked key.
// In memory every flow is a flowKey (the whole key) and a flowValue (with
// address ranges); only reads and writes of the maps convert.

// layout is where a subtable's flows are stored: n key words (idx, in
// ascending order) in flows_narrow, or in flows_ranged when ranged, or
// the whole key in flows (n == 0).
type layout struct {
	n      uint8
	idx    [narrowWords]uint8
	ranged bool
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

// Narrow reports whether the flows of a subtable of mask are narrow,
// keyed by the words the mask covers: only a narrow ranged subtable's
// flows (in flows_ranged) carry address ranges.
func Narrow(mask *rule.Key) bool { return layoutOf(mask).n > 0 }

// layoutOfSubtable is the storage layout of st's flows.
func layoutOfSubtable(st *subtable) layout {
	l := layoutOf(&st.mask)
	l.ranged = st.ranged && l.n > 0
	return l
}

// narrow is fk's key in flows_narrow or flows_ranged.
func (l layout) narrow(fk *flowKey) narrowKey {
	nk := narrowKey{Subtable: fk.Subtable}
	kw := rule.KeyWords(&fk.Key)
	for j := 0; j < int(l.n); j++ {
		nk.Words[j] = kw[l.idx[j]]
	}
	return nk
}

// wide is the whole key of a narrow key.
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
	return layoutOfSubtable(st), nil
}

// flowBatches are flows sorted into the three maps' keys and values
// (values nil when only keys are wanted).
type flowBatches struct {
	wideKeys   []flowKey
	wideVals   []plainValue
	narrowKeys []narrowKey
	narrowVals []plainValue
	rangedKeys []narrowKey
	rangedVals []flowValue
}

// splitFlows sorts flows into the three maps' keys; vals may be nil.
func (t *Table) splitFlows(keys []flowKey, vals []flowValue, extra map[uint32]*subtable) (*flowBatches, error) {
	b := &flowBatches{}
	for i := range keys {
		l, err := t.layoutFor(keys[i].Subtable, extra)
		if err != nil {
			return nil, err
		}
		switch {
		case l.n == 0:
			b.wideKeys = append(b.wideKeys, keys[i])
		case l.ranged:
			b.rangedKeys = append(b.rangedKeys, l.narrow(&keys[i]))
		default:
			b.narrowKeys = append(b.narrowKeys, l.narrow(&keys[i]))
		}
		if vals == nil {
			continue
		}
		switch {
		case l.ranged:
			b.rangedVals = append(b.rangedVals, vals[i])
		case hasAddrRanges(&vals[i]):
			return nil, fmt.Errorf("flow of subtable %d: address ranges need a narrow ranged subtable", keys[i].Subtable)
		case l.n == 0:
			b.wideVals = append(b.wideVals, vals[i].Flow)
		default:
			b.narrowVals = append(b.narrowVals, vals[i].Flow)
		}
	}
	return b, nil
}

// putFlows writes flows to the map their subtable's layout names.
func (t *Table) putFlows(keys []flowKey, vals []flowValue, extra map[uint32]*subtable) error {
	b, err := t.splitFlows(keys, vals, extra)
	if err != nil {
		return err
	}
	if err := batchPut(t.m.Flows, b.wideKeys, b.wideVals); err != nil {
		return err
	}
	if err := batchPut(t.m.FlowsNarrow, b.narrowKeys, b.narrowVals); err != nil {
		return err
	}
	return batchPut(t.m.FlowsRanged, b.rangedKeys, b.rangedVals)
}

// deleteFlows removes flows, tolerating ones already gone.
func (t *Table) deleteFlows(keys []flowKey) error {
	b, err := t.splitFlows(keys, nil, nil)
	if err != nil {
		return err
	}
	if err := batchDelete(t.m.Flows, b.wideKeys); err != nil {
		return err
	}
	if err := batchDelete(t.m.FlowsNarrow, b.narrowKeys); err != nil {
		return err
	}
	return batchDelete(t.m.FlowsRanged, b.rangedKeys)
}

// strayFlows are flows that no subtable of the table explains (those of a
// subtable a failed change made, say): the narrow ones' keys cannot be
// widened, and no layout names the map of any of them.
type strayFlows struct {
	wide           []flowKey
	narrow, ranged []narrowKey
}

// readFlows calls fn for every flow in the maps that a subtable of the
// table explains, with its whole key, and returns the others.
func (t *Table) readFlows(fn func(fk flowKey, val flowValue)) (strayFlows, error) {
	var (
		stray strayFlows
		fk    flowKey
		nk    narrowKey
		pv    plainValue
		rv    flowValue
	)
	it := t.m.Flows.Iterate()
	for it.Next(&fk, &pv) {
		if l, err := t.layoutFor(fk.Subtable, nil); err != nil || l.n > 0 {
			stray.wide = append(stray.wide, fk)
			continue
		}
		fn(fk, valueOfPlain(pv))
	}
	if err := it.Err(); err != nil {
		return stray, fmt.Errorf("read flows: %w", err)
	}
	narrow := func(nk *narrowKey, v flowValue, ranged bool, strays *[]narrowKey) {
		l, err := t.layoutFor(nk.Subtable, nil)
		if err != nil || l.n == 0 || l.ranged != ranged {
			*strays = append(*strays, *nk)
			return
		}
		fn(l.wide(nk), v)
	}
	nit := t.m.FlowsNarrow.Iterate()
	for nit.Next(&nk, &pv) {
		narrow(&nk, valueOfPlain(pv), false, &stray.narrow)
	}
	if err := nit.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return stray, fmt.Errorf("read narrow flows: %w", err)
	}
	rit := t.m.FlowsRanged.Iterate()
	for rit.Next(&nk, &rv) {
		narrow(&nk, rv, true, &stray.ranged)
	}
	if err := rit.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return stray, fmt.Errorf("read ranged flows: %w", err)
	}
	return stray, nil
}
