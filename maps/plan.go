package maps

import (
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// plan is a change worked out in memory, before any map is written.
// Table.plan fills it without changing the table; write carries it out.
type plan struct {
	deleted      map[RuleID]*Installed // with the rules inserts replace
	inserted     []*Installed          // in the change's order
	insertedByID map[RuleID]*Installed

	groupEdits   map[groupKey]groupEdit    // the groups the change touches
	rangedGroups map[groupKey][]*Installed // the ranged ones of them, after the change
	newSubtables map[uint32]*subtable      // by id
	// ruleFlows are the flows of the rules whose entries are recomputed:
	// the inserted ones and every member of a ranged group the change
	// touches.
	ruleFlows map[RuleID][]flowKey

	// The flow map after the change, as a change of t.flows, which is
	// large where a change touches few flows: it loses flowsBefore, the
	// flows of deleted and recomputed rules, and gains flowsAfter, the
	// recomputed rules' flows with their owners.
	flowsBefore   map[flowKey]bool
	flowsAfter    map[flowKey]RuleID
	flowsToWrite  []flowKey      // all of flowsAfter's
	flowsToDelete []flowKey      // flowsBefore's not in flowsAfter
	flowCount     int            // flows after the change
	subtableFlows map[uint32]int // flow count per subtable id after the change, none zero

	idHint  RuleID // Table.idHint after the change
	nextSeq uint64 // meta.NextSeq after the change
}

// plan works out ch against the table, checking that it can be made.
func (t *Table) plan(ch Change) (*plan, error) {
	p := &plan{
		deleted:       map[RuleID]*Installed{},
		insertedByID:  map[RuleID]*Installed{},
		groupEdits:    map[groupKey]groupEdit{},
		rangedGroups:  map[groupKey][]*Installed{},
		ruleFlows:     map[RuleID][]flowKey{},
		newSubtables:  map[uint32]*subtable{},
		flowsBefore:   map[flowKey]bool{},
		flowsAfter:    map[flowKey]RuleID{},
		subtableFlows: map[uint32]int{},
	}
	if err := t.planDeletes(p, ch); err != nil {
		return nil, err
	}
	if err := t.planInserts(p, ch); err != nil {
		return nil, err
	}
	if err := t.planGroups(p); err != nil {
		return nil, err
	}
	t.planEntries(p)
	if err := t.planFlows(p); err != nil {
		return nil, err
	}
	t.countSubtableFlows(p)
	if err := t.checkRoom(p); err != nil {
		return nil, err
	}
	return p, nil
}

// planDeletes finds the rules the change deletes or replaces.
func (t *Table) planDeletes(p *plan, ch Change) error {
	for _, id := range ch.Delete {
		in := t.rules[id]
		if in == nil {
			return fmt.Errorf("rule %d: not installed", id)
		}
		p.deleted[id] = in
	}
	for _, ins := range ch.Insert {
		if ins.Replaces == 0 {
			continue
		}
		in := t.rules[ins.Replaces]
		if in == nil {
			return fmt.Errorf("rule %d: not installed", ins.Replaces)
		}
		p.deleted[in.ID] = in
	}
	return nil
}

// planInserts gives each inserted rule an id and its place in the lookup
// order: its Seq and its mask group's.
func (t *Table) planInserts(p *plan, ch Change) error {
	groupOf := t.groupsLeft(p.deleted)
	ids := ruleIDAlloc{t: t, held: t.heldRules(), next: max(t.idHint, 1)}
	p.nextSeq = t.meta.NextSeq
	for _, ins := range ch.Insert {
		if err := fitsDatapath(ins.Rule); err != nil {
			return err
		}
		id, err := ids.alloc()
		if err != nil {
			return err
		}
		in := &Installed{ID: id, Rule: ins.Rule}
		p.place(in, t.rules[ins.Replaces], groupOf)
		p.inserted = append(p.inserted, in)
		p.insertedByID[id] = in
	}
	p.idHint = ids.hint()
	for id := range p.deleted {
		p.idHint = min(p.idHint, id) // held once the change is in
	}
	return nil
}

// fitsDatapath refuses a rule the datapath's records cannot hold.
func fitsDatapath(r *rule.Rule) error {
	if len(r.Actions) > maxActions {
		return fmt.Errorf("pref %d: %d actions, at most %d", r.Prio, len(r.Actions), maxActions)
	}
	if len(r.Text) > len(ruleSpec{}.Text) {
		return fmt.Errorf("pref %d: rule text is %d bytes, at most %d", r.Prio, len(r.Text), len(ruleSpec{}.Text))
	}
	return nil
}

// place sets in's Seq and GroupSeq. old is the rule it replaces (nil: none);
// groupOf holds the mask groups alive after the change, by groupIndex, and
// gains the one in creates.
func (p *plan) place(in, old *Installed, groupOf map[string]uint64) {
	r := in.Rule
	gi := groupIndex(r.Order(), r)
	samePrio := old != nil && old.Rule.Order() == r.Order()
	if samePrio {
		in.Seq = old.Seq // tc replace keeps the filter's place
	} else {
		in.Seq = p.takeSeq()
	}
	if samePrio && old.Rule.MaskGroup() == r.MaskGroup() {
		// Same mask: the kernel reuses it, so the group keeps its place.
		in.GroupSeq = old.GroupSeq
		groupOf[gi] = in.GroupSeq
	} else if g, ok := groupOf[gi]; ok {
		in.GroupSeq = g
	} else {
		in.GroupSeq = p.takeSeq()
		groupOf[gi] = in.GroupSeq
	}
}

// takeSeq returns the next sequence number of the table's meta.
func (p *plan) takeSeq() uint64 {
	p.nextSeq++
	return p.nextSeq - 1
}

// ruleIDAlloc hands out the free rule ids from Table.idHint up, passing over
// those a running program may still use (held).
type ruleIDAlloc struct {
	t         *Table
	held      map[RuleID]bool
	next      RuleID
	firstHeld RuleID // 0: none passed over yet
}

func (a *ruleIDAlloc) alloc() (RuleID, error) {
	for ; int(a.next) < a.t.maxRules; a.next++ {
		if a.t.rules[a.next] != nil {
			continue
		}
		if a.held[a.next] {
			if a.firstHeld == 0 {
				a.firstHeld = a.next
			}
			continue
		}
		a.next++
		return a.next - 1, nil
	}
	return 0, fmt.Errorf("%d rules: %w", a.t.maxRules-1, ErrTableFull)
}

// hint is where the next change's search starts: the first id passed over
// because it was held, else the first not looked at.
func (a *ruleIDAlloc) hint() RuleID {
	if a.firstHeld != 0 {
		return a.firstHeld
	}
	return a.next
}

// planGroups lists what the change does to each mask group it touches and
// works out the ranged ones as they will be: the installed members (sorted
// by Seq) without the deleted, with the inserted in their places.
func (t *Table) planGroups(p *plan) error {
	for _, in := range p.deleted {
		e := p.groupEdits[in.group()]
		e.deleted = append(e.deleted, in)
		p.groupEdits[in.group()] = e
	}
	for _, in := range p.inserted {
		e := p.groupEdits[in.group()]
		e.inserted = append(e.inserted, in)
		p.groupEdits[in.group()] = e
	}
	for gk, e := range p.groupEdits {
		// A mask group's rules all have ranges or none: the group is by
		// mask, and which ranges a rule has. Ranged rules' entries depend
		// on every member's: the group as it will be, in a copy (write
		// edits the live one in place).
		member := e.inserted
		if len(e.deleted) > 0 {
			member = e.deleted
		}
		if !member[0].Rule.RangesOrdered() {
			continue
		}
		p.rangedGroups[gk] = groupAfter(slices.Clone(t.groups[gk]), e.deleted, e.inserted)
		if err := sameRangedMatch(p.rangedGroups[gk], e.inserted); err != nil {
			return err
		}
	}
	return nil
}

// planEntries expands the rules whose entries the change can change into
// their flows, giving each new mask a new subtable.
func (t *Table) planEntries(p *plan) {
	subs := subtableAlloc{t: t, p: p, held: t.heldSubtables(), next: 1, byKey: map[subtableKey]*subtable{}}
	for gk, e := range p.groupEdits {
		for id, es := range p.entriesOf(gk, e) {
			keys := make([]flowKey, 0, len(es))
			for _, entry := range es {
				st := subs.get(subtableKey{gk.prio, gk.group, entry.Mask})
				keys = append(keys, flowKey{Subtable: st.id, Key: entry.Key})
			}
			p.ruleFlows[id] = keys
		}
	}
}

// entriesOf expands the rules of group gk whose entries can change: every
// member of a ranged group (each one's entries depend on those before it),
// else the inserted rules.
func (p *plan) entriesOf(gk groupKey, e groupEdit) map[RuleID][]rule.Entry {
	if members, ranged := p.rangedGroups[gk]; ranged {
		return expandGroup(members)
	}
	entries := make(map[RuleID][]rule.Entry, len(e.inserted))
	for _, in := range e.inserted {
		entries[in.ID] = rule.Expand(in.Rule, nil)
	}
	return entries
}

// subtableAlloc finds the subtable of a (priority, group, mask), making a new
// one, with an id no subtable has and no running program may still use,
// for a mask the table has none of.
type subtableAlloc struct {
	t     *Table
	p     *plan // gains the new subtables
	held  map[uint32]bool
	next  uint32
	byKey map[subtableKey]*subtable // the new ones
}

func (s *subtableAlloc) get(k subtableKey) *subtable {
	if st := s.t.subtables[k]; st != nil {
		return st
	}
	if st := s.byKey[k]; st != nil {
		return st
	}
	for s.t.subtablesByID[s.next] != nil || s.p.newSubtables[s.next] != nil || s.held[s.next] {
		s.next++
	}
	st := &subtable{subtableKey: k, id: s.next}
	s.byKey[k] = st
	s.p.newSubtables[st.id] = st
	return st
}

// planFlows works out the flows the change takes out of the flow map and
// puts in, refusing a flow another rule holds.
func (t *Table) planFlows(p *plan) error {
	for id := range p.ruleFlows {
		if in := t.rules[id]; in != nil {
			t.addFlowsBefore(p, in)
		}
	}
	for _, in := range p.deleted {
		t.addFlowsBefore(p, in)
	}
	for id, keys := range p.ruleFlows {
		for _, fk := range keys {
			other, taken := p.flowsAfter[fk]
			if !taken {
				other, taken = t.flows[fk]
				taken = taken && !p.flowsBefore[fk]
			}
			if taken {
				return fmt.Errorf("%w (%s)", ErrExists, t.describe(other, p))
			}
			p.flowsAfter[fk] = id
		}
	}
	for fk := range p.flowsAfter {
		p.flowsToWrite = append(p.flowsToWrite, fk)
	}
	for fk := range p.flowsBefore {
		if _, ok := p.flowsAfter[fk]; !ok {
			p.flowsToDelete = append(p.flowsToDelete, fk)
		}
	}
	p.flowCount = len(t.flows) - len(p.flowsBefore) + len(p.flowsAfter)
	return nil
}

// addFlowsBefore adds the flows in owns to flowsBefore.
func (t *Table) addFlowsBefore(p *plan, in *Installed) {
	for _, fk := range in.flows {
		if t.flows[fk] == in.ID { // the flow map is the truth
			p.flowsBefore[fk] = true
		}
	}
}

// countSubtableFlows counts each subtable's flows after the change.
func (t *Table) countSubtableFlows(p *plan) {
	for id, st := range t.subtablesByID {
		if st.flows > 0 {
			p.subtableFlows[id] = st.flows
		}
	}
	for fk := range p.flowsBefore {
		p.subtableFlows[fk.Subtable]--
	}
	for fk := range p.flowsAfter {
		p.subtableFlows[fk.Subtable]++
	}
	for id, n := range p.subtableFlows {
		if n == 0 {
			delete(p.subtableFlows, id)
		}
	}
}

// checkRoom refuses a change the maps or the device's limits cannot hold.
func (t *Table) checkRoom(p *plan) error {
	if p.flowCount > t.maxFlows {
		return fmt.Errorf("%w: the change needs %d flow entries, the table holds %d (enable with a larger \"flows\")",
			ErrTableFull, p.flowCount, t.maxFlows)
	}
	nsubs := len(p.subtableFlows)
	if nsubs > int(t.meta.MaxSubtables) || len(t.subtables)+len(p.newSubtables) > MaxSubtables {
		return fmt.Errorf("%w: the change needs %d subtables (distinct priority and mask pairs), the device allows %d",
			ErrTableFull, max(nsubs, len(t.subtables)+len(p.newSubtables)), t.meta.MaxSubtables)
	}
	return nil
}

// owner is the rule of id, installed or inserted by the change.
func (t *Table) owner(id RuleID, p *plan) *Installed {
	if in := t.rules[id]; in != nil {
		return in
	}
	return p.insertedByID[id]
}

// describe names rule id for an error.
func (t *Table) describe(id RuleID, p *plan) string {
	if in := t.owner(id, p); in != nil {
		return in.Rule.Describe()
	}
	return fmt.Sprintf("rule %d", id)
}
