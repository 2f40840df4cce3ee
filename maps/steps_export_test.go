package maps

import (
	"fmt"

	"github.com/xdpflow/xdpflow/rule"
)

// StepHook calls fn before each named write step of every change until the
// test ends, with the flow cache made stale first (as BeforeEveryStep);
// a non-nil error from fn makes that step fail (as FailStep). tab gives the
// table whose cache to invalidate (the harness reopens tables).
func StepHook(tb interface{ Cleanup(func()) }, tab func() *Table, fn func(step string) error) {
	failStep = func(step string) error {
		if err := tab().invalidateCache(); err != nil {
			return err
		}
		return fn(step)
	}
	tb.Cleanup(func() { failStep = nil })
}

// ListedSpans is the live list's spans of each subtable, by id:
// saddr lo, hi, daddr lo, hi.
func (t *Table) ListedSpans() (map[uint32][4]uint32, error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return nil, err
	}
	out := map[uint32][4]uint32{}
	for i := 0; i < int(l.Count) && i < MaxSubtables; i++ {
		e := &l.Subtables[i]
		out[e.Id] = [4]uint32{e.SaddrLo, e.SaddrHi, e.DaddrLo, e.DaddrHi}
	}
	return out, nil
}

// SpanViolations checks that the live list's spans hold every flow the
// program can reach: each flow in the maps of a listed subtable, and each
// listed copy; and that the table's spans hold its flows.
func (t *Table) SpanViolations() ([]string, error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return nil, err
	}
	listed := map[uint32]addrSpans{}
	masks := map[uint32]*rule.Key{}
	var out []string
	for i := 0; i < int(l.Count) && i < MaxSubtables; i++ {
		e := &l.Subtables[i]
		listed[e.Id], masks[e.Id] = spansOfEntry(&l, i), &e.Mask
		if c := inlineOfEntry(e); c != nil {
			lay := layoutOf(&e.Mask)
			fk := lay.wide(&narrowKey{Subtable: e.Id, Words: c.words})
			if fs := spansOfFlow(&fk.Key, &e.Mask, rangesOf(&c.value)); !listed[e.Id].covers(fs) {
				out = append(out, fmt.Sprintf("subtable %d: listed spans %+v leave out its copy's %+v", e.Id, listed[e.Id], fs))
			}
		}
	}
	_, err := t.readFlows(func(fk flowKey, val flowValue) {
		sp, ok := listed[fk.Subtable]
		if !ok {
			return
		}
		if fs := spansOfFlow(&fk.Key, masks[fk.Subtable], rangesOf(&val)); !sp.covers(fs) {
			out = append(out, fmt.Sprintf("subtable %d: listed spans %+v leave out flow %x's %+v", fk.Subtable, sp, fk.Key.DstIp[:4], fs))
		}
	})
	if err != nil {
		return nil, err
	}
	for fk := range t.flows {
		st := t.subtablesByID[fk.Subtable]
		if st == nil {
			continue
		}
		if fs := spansOfFlow(&fk.Key, &st.mask, t.flowRanges[fk]); !st.spans.covers(fs) {
			out = append(out, fmt.Sprintf("subtable %d: the table's spans %+v leave out a flow's %+v", fk.Subtable, st.spans, fs))
		}
	}
	return out, nil
}

// CopyViolations checks every copy the live list carries against the
// flows maps: its subtable holds exactly one flow there, the copy's (none
// at all is allowed when newOK: a new subtable's copy is listed before its
// flow is written).
func (t *Table) CopyViolations(newOK bool) ([]string, error) {
	var l subtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &l); err != nil {
		return nil, err
	}
	type got struct {
		n   int
		key narrowKey
		val flowValue
	}
	copies := map[uint32]*subtableEntry{}
	for i := 0; i < int(l.Count) && i < MaxSubtables; i++ {
		if e := &l.Subtables[i]; e.Inlined != 0 {
			copies[e.Id] = e
		}
	}
	in := map[uint32]*got{}
	var nk narrowKey
	var pv plainValue
	var rv flowValue
	it := t.m.FlowsNarrow.Iterate()
	for it.Next(&nk, &pv) {
		if copies[nk.Subtable] != nil {
			g := in[nk.Subtable]
			if g == nil {
				g = &got{}
				in[nk.Subtable] = g
			}
			g.n, g.key, g.val = g.n+1, nk, valueOfPlain(pv)
		}
	}
	rit := t.m.FlowsRanged.Iterate()
	for rit.Next(&nk, &rv) {
		if copies[nk.Subtable] != nil {
			g := in[nk.Subtable]
			if g == nil {
				g = &got{}
				in[nk.Subtable] = g
			}
			g.n, g.key, g.val = g.n+1, nk, rv
		}
	}
	var out []string
	for id, e := range copies {
		g := in[id]
		switch {
		case g == nil && newOK:
		case g == nil:
			out = append(out, fmt.Sprintf("subtable %d listed with a copy, no flow in the maps", id))
		case g.n != 1:
			out = append(out, fmt.Sprintf("subtable %d listed with a copy, %d flows in the maps", id, g.n))
		case g.key.Words != e.InlineWords || g.val != e.InlineFlow:
			out = append(out, fmt.Sprintf("subtable %d: copy %x %+v, the maps' flow %x %+v", id, e.InlineWords, e.InlineFlow, g.key.Words, g.val))
		}
	}
	return out, nil
}
