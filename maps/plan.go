package maps

import (
	"cmp"
	"container/heap"
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
	// choices: the tc filters the table chooses for (choices.go) whose
	// entries are recomputed, with their choices after the change.
	choices map[RuleID]choice

	// The flows after the change, as a change of the table's, which are
	// many where a change touches few: the flow keys whose claims change
	// (those of deleted and recomputed rules, and the recomputed rules'
	// new ones) with their claimants after it, in rank order (none: the
	// flow goes). The first claimant is the flow's owner; the others are
	// shadowed, there to take over when it goes.
	claimsAfter map[flowKey][]RuleID
	rangesAfter map[flowKey]flowRanges // of the ranged flows the change puts
	// The flows whose owner changes: to one of a rank as low or lower
	// (new flows among them), written before any other flow changes,
	// and to one of a higher rank, or a ranged flow to another owner
	// (whose ranges are its own), written after.
	flowsToWrite  []flowKey
	flowsToDemote []flowKey
	flowsToDelete []flowKey // left without claimants
	flowCount     int       // flows after the change
	// Per subtable id after the change: flow counts (none zero), the
	// change of its flows' ranks, its bound.
	subtableFlows  map[uint32]int
	rankDelta      map[uint32]map[uint64]int
	subtableBounds map[uint32]uint64
	subtableSpans  map[uint32]addrSpans // of those the change writes flows to
	subtableDeps   map[uint32]rangeDeps // of those the change writes ranged flows to
	inlineLater    map[uint32]bool      // the subtables whose flow copies step 6 works out

	idHint  RuleID // Table.idHint after the change
	nextSeq uint64 // meta.NextSeq after the change
}

// plan works out ch against the table, checking that it can be made.
func (t *Table) plan(ch Change) (*plan, error) {
	p := &plan{
		deleted:        map[RuleID]*Installed{},
		insertedByID:   map[RuleID]*Installed{},
		groupEdits:     map[groupKey]groupEdit{},
		rangedGroups:   map[groupKey][]*Installed{},
		ruleFlows:      map[RuleID][]flowKey{},
		choices:        map[RuleID]choice{},
		newSubtables:   map[uint32]*subtable{},
		claimsAfter:    map[flowKey][]RuleID{},
		rangesAfter:    map[flowKey]flowRanges{},
		subtableFlows:  map[uint32]int{},
		rankDelta:      map[uint32]map[uint64]int{},
		subtableBounds: map[uint32]uint64{},
		subtableSpans:  map[uint32]addrSpans{},
		subtableDeps:   map[uint32]rangeDeps{},
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
	t.planChoices(p)
	t.planEntries(p)
	if err := t.planFlows(p); err != nil {
		return nil, err
	}
	t.countSubtableFlows(p)
	t.planSpans(p)
	t.planDeps(p)
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
	prios := make(map[uint64]bool, len(ch.Insert))
	for _, ins := range ch.Insert {
		prios[ins.Rule.Order()] = true
	}
	groupOf := t.groupsLeft(p.deleted, prios)
	// A filter replaced by one of its pref and mask keeps its group, which
	// other inserts of that mask join, wherever they come in the change.
	for _, ins := range ch.Insert {
		if old := t.rules[ins.Replaces]; old != nil && old.Rule.Order() == ins.Rule.Order() &&
			old.Rule.MaskGroup() == ins.Rule.MaskGroup() {
			groupOf[groupIndex(old.Rule.Order(), old.Rule)] = old.GroupSeq
		}
	}
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
			// Two filters of one match take one flow at one rank, which
			// rankClaims refuses, unless the table chooses their flows:
			// then the second would take another choice.
			if slices.ContainsFunc(e.inserted, func(in *Installed) bool { return chooses(in.Rule, 1) }) {
				if err := sameMatch(groupAfter(slices.Clone(t.groups[gk]), e.deleted, e.inserted), e.inserted); err != nil {
					return err
				}
			}
			continue
		}
		p.rangedGroups[gk] = groupAfter(slices.Clone(t.groups[gk]), e.deleted, e.inserted)
		if err := sameMatch(p.rangedGroups[gk], e.inserted); err != nil {
			return err
		}
	}
	return nil
}

// planEntries expands the rules whose entries the change can change into
// their flows, giving each new mask a new subtable.
func (t *Table) planEntries(p *plan) {
	subs := subtableAlloc{t: t, p: p, held: t.heldSubtables(), next: 1, byKey: map[subtableKey]*subtable{}}
	flows := func(id RuleID, es []rule.Entry) {
		r := t.owner(id, p).Rule
		keys := make([]flowKey, 0, len(es))
		for _, entry := range es {
			st := subs.get(subtableKeyOf(&entry, r))
			fk := flowKey{Subtable: st.id, Key: entry.Key}
			keys = append(keys, fk)
			if entry.Ranged() {
				p.rangesAfter[fk] = rangesOfEntry(&entry)
			}
		}
		p.ruleFlows[id] = keys
	}
	for gk, e := range p.groupEdits {
		for id, es := range p.entriesOf(gk, e) {
			if _, chosen := p.choices[id]; !chosen {
				flows(id, es)
			}
		}
	}
	for id, c := range p.choices {
		flows(id, chosenEntries(t.owner(id, p).Rule, c))
	}
}

// planChoices works out the choices of the tc filters the table chooses
// flows for (choices.go) as they will be after the change, as chooseFlows
// would make them afresh, and puts in p.choices those whose entries
// change. Only the filters a change reaches are looked at again: those it
// inserts or regroups, those that passed over a flow it frees (wanters),
// and those whose flow a filter ahead of them in rank order takes; each
// after every filter ahead of it that moves, so a filter's choice is made
// once, against the flows the filters before it hold.
func (t *Table) planChoices(p *plan) {
	touches := false
	for _, in := range p.inserted {
		touches = touches || chooses(in.Rule, 1)
	}
	for _, in := range p.deleted {
		touches = touches || chooses(in.Rule, 1)
	}
	if !touches {
		return
	}
	chooser := func(in *Installed) bool {
		if p.deleted[in.ID] != nil {
			return false
		}
		if members, ok := p.rangedGroups[in.group()]; ok {
			return chooses(in.Rule, len(members))
		}
		return chooses(in.Rule, len(t.groups[in.group()]))
	}
	q := &choiceQueue{t: t, p: p, queued: map[RuleID]bool{}}
	held := map[chosenFlow]RuleID{} // the holders the change moves (0: none)
	holder := func(f chosenFlow) RuleID {
		if id, ok := held[f]; ok {
			return id
		}
		return t.chosenHolder(f)
	}
	release := func(f chosenFlow, id RuleID) {
		if holder(f) != id {
			return // taken from it already
		}
		held[f] = 0
		for _, w := range t.wanters[f] {
			q.add(w)
		}
	}
	leave := func(in *Installed) {
		if f, ok := chosenFlowOf(&in.Rule.Match, in.choice); in.chooses && ok {
			release(f, in.ID)
		}
	}
	for _, in := range p.deleted {
		leave(in)
	}
	for _, in := range p.inserted {
		q.add(in.ID)
	}
	for _, members := range p.rangedGroups {
		for _, in := range members {
			if t.rules[in.ID] == nil {
				continue // inserted
			}
			if chooser(in) {
				q.add(in.ID)
			} else {
				leave(in)
			}
		}
	}
	for q.Len() > 0 {
		in := heap.Pop(q).(*Installed)
		if !chooser(in) {
			continue
		}
		old, had := blocks, t.rules[in.ID] != nil && in.chooses
		if had {
			old = in.choice
		}
		i, took := choice(0), blocks
		eachFlowChoice(&in.Rule.Match, func(c *rule.Match) bool {
			if c.Ranged() {
				f := chosenFlowOfMatch(c)
				switch h := holder(f); {
				case h != 0 && h != in.ID && byChoiceOrder(t.owner(h, p), in) < 0:
					i++
					return true // held by a rule before it
				case h != 0 && h != in.ID:
					q.add(h) // held by a rule after it, which moves on
				}
				held[f] = in.ID
			}
			took = i
			return false
		})
		if had && old != took {
			if f, ok := chosenFlowOf(&in.Rule.Match, old); ok {
				release(f, in.ID)
			}
		}
		if !had || old != took {
			p.choices[in.ID] = took
		}
	}
	// A chooser whose group the change recomputes keeps its choice.
	for _, members := range p.rangedGroups {
		for _, in := range members {
			if _, ok := p.choices[in.ID]; !ok && chooser(in) {
				p.choices[in.ID] = in.choice
			}
		}
	}
}

// choiceQueue is the rules planChoices looks at again, lowest rank first,
// each once.
type choiceQueue struct {
	t      *Table
	p      *plan
	rules  []*Installed
	queued map[RuleID]bool
}

func (q *choiceQueue) add(id RuleID) {
	if !q.queued[id] {
		q.queued[id] = true
		heap.Push(q, q.t.owner(id, q.p))
	}
}

func (q *choiceQueue) Len() int           { return len(q.rules) }
func (q *choiceQueue) Less(i, j int) bool { return byChoiceOrder(q.rules[i], q.rules[j]) < 0 }
func (q *choiceQueue) Swap(i, j int)      { q.rules[i], q.rules[j] = q.rules[j], q.rules[i] }
func (q *choiceQueue) Push(x any)         { q.rules = append(q.rules, x.(*Installed)) }
func (q *choiceQueue) Pop() any {
	in := q.rules[len(q.rules)-1]
	q.rules = q.rules[:len(q.rules)-1]
	return in
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

// subtableAlloc finds the subtable of a mask, making a new
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
	st := &subtable{subtableKey: k, id: s.next, bound: noRank, listed: noRank}
	s.byKey[k] = st
	s.p.newSubtables[st.id] = st
	return st
}

// planFlows works out the claims the change takes away and adds, and the
// flows that come, change owner and go. Two claims of one rank on one flow
// are refused: the rules' matches are the same (flower's EEXIST); of two
// ranks the lower owns it.
func (t *Table) planFlows(p *plan) error {
	gone := map[flowKey]map[RuleID]bool{}
	dropClaims := func(in *Installed) {
		for _, fk := range in.flows {
			if gone[fk] == nil {
				gone[fk] = map[RuleID]bool{}
			}
			gone[fk][in.ID] = true
		}
	}
	for id := range p.ruleFlows {
		if in := t.rules[id]; in != nil {
			dropClaims(in)
		}
	}
	for _, in := range p.deleted {
		dropClaims(in)
	}
	for fk, ids := range gone {
		p.claimsAfter[fk] = slices.DeleteFunc(t.claimsOf(fk), func(id RuleID) bool { return ids[id] })
	}
	for id, keys := range p.ruleFlows {
		for _, fk := range keys {
			claims, ok := p.claimsAfter[fk]
			if !ok {
				claims = t.claimsOf(fk)
			}
			p.claimsAfter[fk] = append(claims, id)
		}
	}
	for fk, claims := range p.claimsAfter {
		if _, ranged := p.rangesAfter[fk]; ranged && len(claims) > 1 {
			// One range per flow: a second entry of the key would
			// never be reached when the first's range does not hold.
			return fmt.Errorf("%w: two ranged entries of one flow (%s)", ErrExists, t.describe(claims[0], p))
		}
		if err := t.rankClaims(p, claims); err != nil {
			return err
		}
		before, had := t.flows[fk]
		switch {
		case len(claims) == 0 && had:
			p.flowsToDelete = append(p.flowsToDelete, fk)
		case len(claims) == 0 || (had && claims[0] == before):
		case had && rankOf(t.owner(claims[0], p)) > rankOf(t.rules[before]):
			p.flowsToDemote = append(p.flowsToDemote, fk)
		case had && isRanged(p.rangesAfter, fk):
			// A ranged flow's new owner brings its own ranges: the old
			// owner's packets outside them must first meet its new
			// flows, written before.
			p.flowsToDemote = append(p.flowsToDemote, fk)
		default:
			p.flowsToWrite = append(p.flowsToWrite, fk)
		}
	}
	p.flowCount = len(t.flows) + len(p.flowsToWrite) - len(p.flowsToDelete)
	for _, fk := range p.flowsToWrite {
		if _, had := t.flows[fk]; had {
			p.flowCount-- // a new owner, not a new flow
		}
	}
	return nil
}

// isRanged reports whether ranges holds fk.
func isRanged(ranges map[flowKey]flowRanges, fk flowKey) bool {
	_, ok := ranges[fk]
	return ok
}

// claimsOf is a copy of fk's claimants in rank order: its owner, then the
// rules it shadows.
func (t *Table) claimsOf(fk flowKey) []RuleID {
	owner, ok := t.flows[fk]
	if !ok {
		return nil
	}
	return append([]RuleID{owner}, t.shadowed[fk]...)
}

// rankClaims sorts claims by rank, refusing two of one rank.
func (t *Table) rankClaims(p *plan, claims []RuleID) error {
	if len(claims) < 2 {
		return nil
	}
	rank := func(id RuleID) uint64 { return rankOf(t.owner(id, p)) }
	slices.SortFunc(claims, func(a, b RuleID) int { return cmp.Compare(rank(a), rank(b)) })
	for i := 1; i < len(claims); i++ {
		if rank(claims[i]) == rank(claims[i-1]) {
			other := claims[i-1]
			if p.insertedByID[other] != nil {
				other = claims[i] // name the one installed, if one is
			}
			return fmt.Errorf("%w (%s)", ErrExists, t.describe(other, p))
		}
	}
	return nil
}

// countSubtableFlows counts each subtable's flows after the change, with
// the change of their ranks and the bounds that follow.
func (t *Table) countSubtableFlows(p *plan) {
	for id, st := range t.subtablesByID {
		if st.flows > 0 {
			p.subtableFlows[id] = st.flows
		}
	}
	shift := func(fk flowKey, id RuleID, by int) {
		d := p.rankDelta[fk.Subtable]
		if d == nil {
			d = map[uint64]int{}
			p.rankDelta[fk.Subtable] = d
		}
		d[rankOf(t.owner(id, p))] += by
		p.subtableFlows[fk.Subtable] += by
	}
	for fk, claims := range p.claimsAfter {
		if before, had := t.flows[fk]; had {
			shift(fk, before, -1)
		}
		if len(claims) > 0 {
			shift(fk, claims[0], 1)
		}
	}
	for id, n := range p.subtableFlows {
		if n == 0 {
			delete(p.subtableFlows, id)
		}
	}
	for id, d := range p.rankDelta {
		p.subtableBounds[id] = t.subtableOf(id, p).boundAfter(d)
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
		return fmt.Errorf("%w: the change needs %d subtables (distinct masks), the device allows %d",
			ErrTableFull, max(nsubs, len(t.subtables)+len(p.newSubtables)), t.meta.MaxSubtables)
	}
	return nil
}

// subtableOf is the subtable of id, the table's or one the change makes.
func (t *Table) subtableOf(id uint32, p *plan) *subtable {
	if st := t.subtablesByID[id]; st != nil {
		return st
	}
	return p.newSubtables[id]
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
