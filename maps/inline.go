package maps

import "github.com/xdpflow/xdpflow/rule"

// A narrow subtable of one flow is listed with a copy of the flow (its
// key words and value), and the program compares the copy instead of
// looking the flow up: one rule per mask, as TC's and OVS's sets often
// have, then costs compares. The flows map keeps the flow too, and is what
// the program reads whenever the copy is not listed, so the copy never
// has to change together with a flow: a change lists the subtables it
// writes flows of without their copies (with the new subtables, before
// any flow is written) and lists the copies of every subtable of one
// flow once its flows are final. A new subtable's flow is listed with it:
// that is the flow written first, and no packet can tell.

// inlineFlow is the copy of a subtable's one flow.
type inlineFlow struct {
	words [narrowWords]uint64
	value flowValue
}

// listInline writes copy into a list entry.
func (c *inlineFlow) listInline(e *subtableEntry) {
	if c == nil {
		return
	}
	e.Inlined = 1
	e.InlineWords = c.words
	e.InlineFlow = c.value
}

// inlineOfEntry is the copy a list entry carries, nil for none.
func inlineOfEntry(e *subtableEntry) *inlineFlow {
	if e.Inlined == 0 {
		return nil
	}
	return &inlineFlow{words: e.InlineWords, value: e.InlineFlow}
}

// xorKey adds or takes key from a subtable's keyXor, the XOR of its
// flows' keys, which is its one flow's key when it has one.
func (st *subtable) xorKey(key *rule.Key) {
	a, b := rule.KeyWords(&st.keyXor), rule.KeyWords(key)
	for i := range a {
		a[i] ^= b[i]
	}
}

// inlineable reports whether st is to be listed with a copy of its flow.
func (st *subtable) inlineable() bool {
	return st.flows == 1 && layoutOf(&st.mask).n > 0
}

// inlineOf is the copy of flow fk of a subtable of layout lay, with owner
// and ranges r.
func inlineOf(lay layout, fk *flowKey, owner *Installed, r flowRanges) *inlineFlow {
	return &inlineFlow{words: lay.narrow(fk).Words, value: flowValueOf(owner, r)}
}

// committedInline is the copy of st's one flow as the table holds it, nil
// if st is not to have one.
func (t *Table) committedInline(st *subtable) *inlineFlow {
	if !st.inlineable() {
		return nil
	}
	fk := flowKey{Subtable: st.id, Key: st.keyXor}
	owner, ok := t.flows[fk]
	if !ok || t.rules[owner] == nil {
		return nil // cannot happen: keyXor is its one flow's key
	}
	return inlineOf(layoutOf(&st.mask), &fk, t.rules[owner], t.flowRanges[fk])
}

// inlineCommitted gives the subtables of ids (all, if nil), and those of
// one flow listed without a copy (as opening the table leaves them), the
// copies the table's flows make, and reports whether any changed.
func (t *Table) inlineCommitted(ids map[uint32]bool) (changed bool) {
	for id, st := range t.subtablesByID {
		if ids != nil && !ids[id] && (st.inline != nil || st.flows != 1) {
			continue
		}
		c := t.committedInline(st)
		if (c == nil) != (st.inline == nil) || (c != nil && *c != *st.inline) {
			st.inline, changed = c, true
		}
	}
	return changed
}

// planInline drops the copies of the subtables the change writes flows of
// and gives the new subtables of one flow theirs, for the list published
// before any flow is written; those subtables are p.inlineLater, whose
// copies step 6 works out. It reports whether an existing subtable's
// listing changed.
func (t *Table) planInline(p *plan) (changed bool) {
	p.inlineLater = map[uint32]bool{}
	for _, keys := range [][]flowKey{p.flowsToWrite, p.flowsToDemote, p.flowsToDelete} {
		for i := range keys {
			p.inlineLater[keys[i].Subtable] = true
			if st := t.subtablesByID[keys[i].Subtable]; st != nil && st.inline != nil {
				st.inline, changed = nil, true
			}
		}
	}
	for i := range p.flowsToWrite {
		fk := &p.flowsToWrite[i]
		st := p.newSubtables[fk.Subtable]
		if st == nil || p.subtableFlows[st.id] != 1 || layoutOf(&st.mask).n == 0 {
			continue
		}
		st.inline = inlineOf(layoutOf(&st.mask), fk, t.owner(p.claimsAfter[*fk][0], p), p.rangesAfter[*fk])
	}
	return changed
}
