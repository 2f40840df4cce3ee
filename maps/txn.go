package maps

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/rule"
)

// Change is one transaction: rules to delete and rules to insert. An insert
// that Replaces an installed rule takes its place in the lookup order (as
// tc filter replace does) and the old rule goes away in the same change.
type Change struct {
	Delete []RuleID
	Insert []Insert
}

// Insert is one rule to install. Its actions' Ifindex must be resolved.
type Insert struct {
	Rule     *rule.Rule
	Replaces RuleID // 0: a new rule
}

// groupEdit is what a change does to one mask group.
type groupEdit struct{ del, ins []*Installed }

// plan is a change worked out in memory, before any map is written.
type plan struct {
	del        map[RuleID]*Installed
	ins        []*Installed
	edits      map[groupKey]groupEdit    // affected groups: who leaves, who comes
	groups     map[groupKey][]*Installed // affected ranged groups, after the change
	newFlows   map[RuleID][]flowKey      // flows of recomputed rules
	recomputed map[RuleID]bool
	newSubs    []*subtable
	stFlows    map[uint32]int // flow count per subtable id after the change
	// The flow map after the change, as a change of t.flows (which holds
	// tens of thousands of flows; a change touches few): gone are the
	// flows of deleted and recomputed rules, now the recomputed rules'
	// flows and their owners.
	gone   map[flowKey]bool
	now    map[flowKey]RuleID
	nflows int       // flows after the change
	put    []flowKey // flows to write (new or changed owner)
	remove []flowKey // flows to delete
	idHint RuleID    // Table.idHint after the change
}

// Apply runs one change. On error nothing the change touched stays changed:
// the maps are brought back to the state before it.
func (t *Table) Apply(ch Change) ([]RuleID, error) {
	if err := t.prepareWrite(); err != nil {
		return nil, err
	}
	p, err := t.plan(ch)
	if err != nil {
		return nil, err
	}
	ids := make([]RuleID, len(p.ins))
	for i, in := range p.ins {
		ids[i] = in.ID
	}
	if err := t.write(p); err != nil {
		var live *liveChangeError
		if errors.As(err, &live) {
			// Memory holds the new state: repair finishes writing it, and
			// only then are the slots the change freed held for reuse.
			rerr := t.repair(nil)
			if live.freed != nil {
				t.hold(live.freed)
			}
			if rerr != nil {
				t.unsettled = true
				return ids, fmt.Errorf("%w: %v, and repairing failed: %v (the next change or process repairs it)",
					ErrUnsettled, live.err, rerr)
			}
			return ids, nil
		}
		if rerr := t.repair(nil); rerr != nil {
			return nil, fmt.Errorf("%w (and restoring the previous state failed: %v)", err, rerr)
		}
		return nil, err
	}
	return ids, nil
}

// ErrUnsettled is returned with the ids of a change that is live, in the
// datapath and in memory, but whose cleanup (stale flows, subtables or
// specs left in the maps) could not be finished. The change must be
// treated as made.
var ErrUnsettled = errors.New("the change is live but cleaning up after it failed")

// liveChangeError is a write step that failed after the change went live
// in memory: the change is not undone but completed by repair.
type liveChangeError struct {
	err   error
	freed *heldSlots // not yet held; nil when it was
}

func (e *liveChangeError) Error() string { return e.err.Error() }
func (e *liveChangeError) Unwrap() error { return e.err }

// failStep, when a test sets it, makes the named write step fail.
var failStep func(step string) error

// SyncSource makes the table's rules of one source equal to want in one
// transaction: rules whose text is installed stay (and keep their
// counters), others are added and the rest removed; new entries are put
// before stale ones go.
func (t *Table) SyncSource(src rule.Source, want []*rule.Rule) (added, removed int, err error) {
	// By text, in no order (sorting 10,000 rules each call was a third of
	// this function's time). A rule wanted again is marked kept with id 0
	// (never a rule's); the rest goes.
	have := make(map[string]RuleID, len(t.rules))
	for _, in := range t.rules {
		if in.Rule.Source == src {
			have[in.Rule.Text] = in.ID
		}
	}
	var ch Change
	for _, r := range want {
		if _, ok := have[r.Text]; ok {
			have[r.Text] = 0
			continue
		}
		ch.Insert = append(ch.Insert, Insert{Rule: r})
	}
	for _, id := range have {
		if id != 0 {
			ch.Delete = append(ch.Delete, id)
		}
	}
	if len(ch.Insert)+len(ch.Delete) == 0 {
		return 0, 0, nil
	}
	if _, err := t.Apply(ch); err != nil {
		if errors.Is(err, ErrUnsettled) {
			return len(ch.Insert), len(ch.Delete), err
		}
		return 0, 0, err
	}
	return len(ch.Insert), len(ch.Delete), nil
}

// UpdateSource changes the table's rules of one source by a known
// difference, in one transaction: the rules whose text is in remove go,
// those of add whose text is not installed come (a text installed
// already stays, with its counters; one in both add and remove stays as
// well). What SyncSource does given the whole set, at the cost of the
// change rather than of the table's size.
func (t *Table) UpdateSource(src rule.Source, add []*rule.Rule, remove []string) (added, removed int, err error) {
	if t.byText == nil {
		t.byText = make(map[textKey]RuleID, len(t.rules))
		for _, in := range t.rules {
			t.byText[in.key()] = in.ID
		}
	}
	adding := make(map[string]bool, len(add))
	for _, r := range add {
		adding[r.Text] = true
	}
	var ch Change
	seen := map[string]bool{} // each text once, however often listed
	for _, text := range remove {
		if seen[text] || adding[text] {
			continue
		}
		seen[text] = true
		if id, ok := t.byText[textKey{src, text}]; ok {
			ch.Delete = append(ch.Delete, id)
		}
	}
	for _, r := range add {
		if seen[r.Text] {
			continue
		}
		seen[r.Text] = true
		if _, ok := t.byText[textKey{src, r.Text}]; !ok {
			ch.Insert = append(ch.Insert, Insert{Rule: r})
		}
	}
	if len(ch.Insert)+len(ch.Delete) == 0 {
		return 0, 0, nil
	}
	if _, err := t.Apply(ch); err != nil {
		if errors.Is(err, ErrUnsettled) {
			return len(ch.Insert), len(ch.Delete), err
		}
		return 0, 0, err
	}
	return len(ch.Insert), len(ch.Delete), nil
}

func (in *Installed) key() textKey { return textKey{in.Rule.Source, in.Rule.Text} }

// prepareWrite frees what is held and no longer needs to be. Slots another
// process left held are unknown here: wait a grace period for all of them.
func (t *Table) prepareWrite() error {
	if t.unsettled {
		// The last change is live but its cleanup failed: finish it
		// before anything else is written.
		t.unsettled = false
		if err := t.repair(nil); err != nil {
			t.unsettled = true
			return fmt.Errorf("%w: %v", ErrUnsettled, err)
		}
	}
	if t.foreignHeld {
		return t.Sync()
	}
	return t.release()
}

func (t *Table) plan(ch Change) (*plan, error) {
	p := &plan{del: map[RuleID]*Installed{}, groups: map[groupKey][]*Installed{}, edits: map[groupKey]groupEdit{},
		newFlows: map[RuleID][]flowKey{}, recomputed: map[RuleID]bool{}, stFlows: map[uint32]int{}}
	for _, id := range ch.Delete {
		in := t.rules[id]
		if in == nil {
			return nil, fmt.Errorf("rule %d: not installed", id)
		}
		p.del[id] = in
	}
	for _, ins := range ch.Insert {
		if ins.Replaces == 0 {
			continue
		}
		in := t.rules[ins.Replaces]
		if in == nil {
			return nil, fmt.Errorf("rule %d: not installed", ins.Replaces)
		}
		p.del[in.ID] = in
	}

	// Mask groups alive after the deletions, by (prio, mask).
	groupOf := map[string]uint64{}
	for gk, members := range t.groups {
		for _, in := range members {
			if p.del[in.ID] == nil {
				groupOf[groupIndex(gk.prio, in.Rule)] = gk.group
				break
			}
		}
	}

	// Ids from t.idHint up; the first one passed over because a running
	// program may still use it (held) is where the next search starts.
	nextID := max(t.idHint, 1)
	p.idHint = 0
	allocID := func() (RuleID, error) {
		for ; int(nextID) < t.maxRules; nextID++ {
			if t.rules[nextID] != nil {
				continue
			}
			if t.heldRule(nextID) {
				if p.idHint == 0 {
					p.idHint = nextID
				}
				continue
			}
			nextID++
			return nextID - 1, nil
		}
		return 0, fmt.Errorf("%d rules: %w", t.maxRules-1, ErrTableFull)
	}
	nextSeq := t.meta.NextSeq
	for _, ins := range ch.Insert {
		r := ins.Rule
		if len(r.Actions) > int(bpf.XdpflowXfLimitsXF_MAX_ACTIONS) {
			return nil, fmt.Errorf("pref %d: %d actions, at most %d", r.Prio, len(r.Actions), bpf.XdpflowXfLimitsXF_MAX_ACTIONS)
		}
		if len(r.Text) > len(ruleSpec{}.Text) {
			return nil, fmt.Errorf("pref %d: rule text is %d bytes, at most %d", r.Prio, len(r.Text), len(ruleSpec{}.Text))
		}
		id, err := allocID()
		if err != nil {
			return nil, err
		}
		in := &Installed{ID: id, Rule: r}
		gi := groupIndex(r.Order(), r)
		old := t.rules[ins.Replaces]
		samePrio := old != nil && old.Rule.Order() == r.Order()
		if samePrio {
			in.Seq = old.Seq // tc replace keeps the filter's place
		} else {
			in.Seq = nextSeq
			nextSeq++
		}
		if samePrio && old.Rule.MaskGroup() == r.MaskGroup() {
			// Same mask: the kernel reuses it, so the group keeps its place.
			in.GroupSeq = old.GroupSeq
			groupOf[gi] = in.GroupSeq
		} else if g, ok := groupOf[gi]; ok {
			in.GroupSeq = g
		} else {
			in.GroupSeq = nextSeq
			nextSeq++
			groupOf[gi] = in.GroupSeq
		}
		p.ins = append(p.ins, in)
	}
	t.meta.NextSeq = nextSeq // persisted with the change; harmless if it fails
	if p.idHint == 0 {
		p.idHint = nextID
	}
	for id := range p.del {
		p.idHint = min(p.idHint, id) // held once the change is in
	}

	// Affected groups, as they will be: the installed members (sorted by
	// Seq) without the deleted, with the inserted in their places. A
	// group of Open vSwitch's holds thousands of rules and a change
	// touches one: members are found by binary search, not re-sorted.
	for _, in := range p.del {
		gk := groupKey{in.Rule.Order(), in.GroupSeq}
		e := p.edits[gk]
		e.del = append(e.del, in)
		p.edits[gk] = e
	}
	for _, in := range p.ins {
		gk := groupKey{in.Rule.Order(), in.GroupSeq}
		e := p.edits[gk]
		e.ins = append(e.ins, in)
		p.edits[gk] = e
	}
	for gk, e := range p.edits {
		// A mask group's rules all have ranges or none: the group is by
		// mask, and which ranges a rule has. Ranged rules' entries depend
		// on every member's: the group as it will be, in a copy (write
		// edits the live one in place).
		member := e.ins
		if len(e.del) > 0 {
			member = e.del
		}
		if member[0].Rule.RangesOrdered() {
			p.groups[gk] = groupAfter(slices.Clone(t.groups[gk]), e.del, e.ins)
			if err := sameRangedMatch(p.groups[gk], e.ins); err != nil {
				return nil, err
			}
		}
	}

	// Entries of the rules whose entries can change.
	subIDs := map[uint32]bool{}
	for id := range t.stByID {
		subIDs[id] = true
	}
	nextSub := uint32(1)
	subFor := map[subtableKey]*subtable{}
	subtableOf := func(k subtableKey) (*subtable, error) {
		if st := t.subtables[k]; st != nil {
			return st, nil
		}
		if st := subFor[k]; st != nil {
			return st, nil
		}
		for subIDs[nextSub] || t.heldSubtable(nextSub) {
			nextSub++
		}
		st := &subtable{subtableKey: k, id: nextSub}
		subIDs[nextSub] = true
		subFor[k] = st
		p.newSubs = append(p.newSubs, st)
		return st, nil
	}
	for gk, e := range p.edits {
		var entries map[RuleID][]rule.Entry
		if members, ranged := p.groups[gk]; ranged {
			entries = expandGroup(members)
		} else {
			entries = map[RuleID][]rule.Entry{}
			for _, in := range e.ins {
				entries[in.ID] = rule.Expand(in.Rule, nil)
			}
		}
		for id, es := range entries {
			p.recomputed[id] = true
			keys := make([]flowKey, 0, len(es))
			for _, e := range es {
				st, err := subtableOf(subtableKey{gk.prio, gk.group, e.Mask})
				if err != nil {
					return nil, err
				}
				keys = append(keys, flowKey{Subtable: st.id, Key: e.Key})
			}
			p.newFlows[id] = keys
		}
	}

	// The flow map after the change, and what to write.
	p.gone, p.now = map[flowKey]bool{}, map[flowKey]RuleID{}
	leaving := func(in *Installed) {
		for _, fk := range in.flows {
			if t.flows[fk] == in.ID { // the flow map is the truth
				p.gone[fk] = true
			}
		}
	}
	for id := range p.recomputed {
		if in := t.rules[id]; in != nil {
			leaving(in)
		}
	}
	for _, in := range p.del {
		leaving(in)
	}
	for id, keys := range p.newFlows {
		for _, fk := range keys {
			other, taken := p.now[fk]
			if !taken {
				other, taken = t.flows[fk]
				taken = taken && !p.gone[fk]
			}
			if taken {
				return nil, fmt.Errorf("%w (%s)", ErrExists, t.describe(other, p))
			}
			p.now[fk] = id
		}
	}
	// Every flow in now belongs to a recomputed rule: all are written.
	for fk := range p.now {
		p.put = append(p.put, fk)
	}
	for fk := range p.gone {
		if _, ok := p.now[fk]; !ok {
			p.remove = append(p.remove, fk)
		}
	}
	p.nflows = len(t.flows) - len(p.gone) + len(p.now)
	for id, st := range t.stByID {
		if st.flows > 0 {
			p.stFlows[id] = st.flows
		}
	}
	for fk := range p.gone {
		p.stFlows[fk.Subtable]--
	}
	for fk := range p.now {
		p.stFlows[fk.Subtable]++
	}
	for id, n := range p.stFlows {
		if n == 0 {
			delete(p.stFlows, id)
		}
	}

	if p.nflows > t.maxFlows {
		return nil, fmt.Errorf("%w: the change needs %d flow entries, the table holds %d (enable with a larger \"flows\")",
			ErrTableFull, p.nflows, t.maxFlows)
	}
	nsubs := len(p.stFlows)
	if nsubs > int(t.meta.MaxSubtables) || len(t.subtables)+len(p.newSubs) > MaxSubtables {
		return nil, fmt.Errorf("%w: the change needs %d subtables (distinct priority and mask pairs), the device allows %d",
			ErrTableFull, max(nsubs, len(t.subtables)+len(p.newSubs)), t.meta.MaxSubtables)
	}
	return p, nil
}

// groupAfter is a group's members (sorted by Seq) without del and with
// ins, sorted by Seq, edited in place (members' array is reused).
// sameRangedMatch refuses an inserted ranged rule whose key, mask and
// ranges another member of its group has: flower's fl_ht_insert_unique
// answers EEXIST for it, where expansion would leave the second filter
// no entries and accept it.
func sameRangedMatch(members, ins []*Installed) error {
	if len(ins) == 0 {
		return nil
	}
	type match struct {
		key      rule.Key
		src, dst rule.PortRange
	}
	matchOf := func(r *rule.Rule) match {
		return match{rule.MaskKey(&r.Match.Key, &r.Match.Mask), r.Match.SrcPortRange, r.Match.DstPortRange}
	}
	inserted := make(map[*Installed]bool, len(ins))
	for _, in := range ins {
		inserted[in] = true
	}
	seen := make(map[match]*Installed, len(members))
	for _, in := range members {
		m := matchOf(in.Rule)
		if other, dup := seen[m]; dup && (inserted[in] || inserted[other]) {
			if inserted[other] && !inserted[in] {
				other = in // name the one already installed
			}
			return fmt.Errorf("%w (%s)", ErrExists, other.Rule.Describe())
		}
		seen[m] = in
	}
	return nil
}

func groupAfter(members, del, ins []*Installed) []*Installed {
	const few = 16 // more than this: one pass and one sort, not a search each
	out := members
	if len(del) > few {
		gone := make(map[*Installed]bool, len(del))
		for _, in := range del {
			gone[in] = true
		}
		out = slices.DeleteFunc(out, func(in *Installed) bool { return gone[in] })
	} else {
		for _, in := range del {
			i, ok := slices.BinarySearchFunc(out, in, bySeq)
			for ; ok && i < len(out) && out[i].Seq == in.Seq && out[i] != in; i++ {
			}
			if i < len(out) && out[i] == in {
				out = slices.Delete(out, i, i+1)
			} else if j := slices.Index(out, in); j >= 0 {
				out = slices.Delete(out, j, j+1)
			}
		}
	}
	if len(ins) > few {
		out = append(out, ins...)
		slices.SortStableFunc(out, bySeq)
		return out
	}
	for _, in := range ins {
		i, _ := slices.BinarySearchFunc(out, in, bySeq)
		out = slices.Insert(out, i, in)
	}
	return out
}

// groupIndex names a mask group by priority and mask.
func groupIndex(prio uint32, r *rule.Rule) string {
	return fmt.Sprintf("%d|%s", prio, r.MaskGroup())
}

func (t *Table) describe(id RuleID, p *plan) string {
	in := t.rules[id]
	if in == nil {
		for _, x := range p.ins {
			if x.ID == id {
				in = x
			}
		}
	}
	if in == nil {
		return fmt.Sprintf("rule %d", id)
	}
	return in.Rule.Describe()
}

// actionSetFor encodes a rule's actions for the datapath.
func actionSetFor(r *rule.Rule) (actionSet, error) {
	var set actionSet
	set.Count = uint32(len(r.Actions))
	set.KeepaliveMs = uint32(r.Keepalive.Milliseconds())
	for i, a := range r.Actions {
		x := &set.Actions[i]
		switch a.Kind {
		case rule.ActDrop:
			x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_DROP)
		case rule.ActPass:
			x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_PASS)
		case rule.ActRedirect:
			if a.Ifindex <= 0 {
				return set, fmt.Errorf("redirect to %q: device not resolved", a.Dev)
			}
			x.Op, x.Ifindex = uint8(bpf.XdpflowXfActionOpXF_ACT_REDIRECT), uint32(a.Ifindex)
			if a.Dev == r.Dev {
				// back out of the device it came in on
				x.Op, x.Ifindex = uint8(bpf.XdpflowXfActionOpXF_ACT_TX), 0
			}
		case rule.ActVlanPush, rule.ActVlanModify:
			x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_PUSH)
			if a.Kind == rule.ActVlanModify {
				x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_MODIFY)
			}
			x.VlanProto, x.VlanId, x.VlanPrio = rule.HostToBE16(a.VlanProto), a.VlanID, a.VlanPrio
			if a.HasPrio {
				x.Flags |= uint8(bpf.XdpflowXfVlanFlagsXF_VLAN_SET_PRIO)
			}
		case rule.ActVlanPop:
			x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_POP)
		case rule.ActSetEthSrc, rule.ActSetEthDst:
			x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_SET_ETH_SRC)
			if a.Kind == rule.ActSetEthDst {
				x.Op = uint8(bpf.XdpflowXfActionOpXF_ACT_SET_ETH_DST)
			}
			copy(x.Mac[:], a.MAC)
		default:
			return set, fmt.Errorf("action kind %d has no datapath form", a.Kind)
		}
	}
	return set, nil
}

// write carries out a plan in the order the package comment gives.
func (t *Table) write(p *plan) error {
	t.meta.Dirty |= dirtyWriting
	if err := t.putMeta(); err != nil {
		return err
	}

	// 1. Action sets, counters, specs: not yet referenced by any flow.
	asOf := map[RuleID]uint32{}
	newSlots := map[string]uint32{}
	usedSlots := map[uint32]bool{}
	for _, a := range t.actionSets {
		usedSlots[a.slot] = true
	}
	nextSlot := uint32(0)
	newPorts := map[uint32]bool{}
	for _, in := range p.ins {
		set, err := actionSetFor(in.Rule)
		if err != nil {
			return fmt.Errorf("pref %d: %w", in.Rule.Prio, err)
		}
		c := contentKey(&set)
		if a := t.actionSets[c]; a != nil {
			asOf[in.ID] = a.slot
		} else if s, ok := newSlots[c]; ok {
			asOf[in.ID] = s
		} else {
			for usedSlots[nextSlot] || t.heldActionSet(nextSlot) {
				nextSlot++
			}
			if int(nextSlot) >= t.maxActionSets {
				return fmt.Errorf("%w: %d distinct action lists", ErrTableFull, t.maxActionSets)
			}
			if err := t.m.ActionSets.Put(nextSlot, &set); err != nil {
				return fmt.Errorf("write action set: %w", err)
			}
			usedSlots[nextSlot] = true
			newSlots[c] = nextSlot
			asOf[in.ID] = nextSlot
			// Put even where txPorts has the target: the kernel drops
			// a device's devmap entry when the device goes away, and
			// txPorts learns only when the table settles.
			for _, a := range set.Actions[:set.Count] {
				if a.Op == uint8(bpf.XdpflowXfActionOpXF_ACT_REDIRECT) {
					newPorts[a.Ifindex] = true
				}
			}
		}
		in.ActionSet = asOf[in.ID]
	}
	for ifindex := range newPorts {
		if err := t.m.TxPorts.Put(ifindex, ifindex); err != nil {
			return fmt.Errorf("add redirect target ifindex %d to the devmap: %w", ifindex, err)
		}
		t.txPorts[ifindex] = true
	}
	// In batches: one syscall per few thousand rules, not two per rule
	// (which is most of the time a bulk change of flower rules takes).
	ids := make([]RuleID, len(p.ins))
	specs := make([]ruleSpec, len(p.ins))
	for i, in := range p.ins {
		ids[i] = in.ID
		specs[i] = ruleSpec{Seq: in.Seq, GroupSeq: in.GroupSeq, ActionSet: in.ActionSet,
			Source: uint32(in.Rule.Source), TextLen: uint32(len(in.Rule.Text))}
		copy(specs[i].Text[:], in.Rule.Text)
	}
	if err := batchPutPerCPU(t.m.RuleStats, ids, ruleStats{}); err != nil {
		return fmt.Errorf("reset rule counters: %w", err)
	}
	if err := batchPut(t.m.RuleSpecs, ids, specs); err != nil {
		return fmt.Errorf("write rule specs: %w", err)
	}

	// 2. New subtables, empty.
	if len(p.newSubs) > 0 {
		if err := t.publish(t.sortedSubtables(nil, p.newSubs)); err != nil {
			return err
		}
	}

	// 3. Flows in.
	if len(p.put) > 0 {
		vals := make([]flowValue, len(p.put))
		for i, fk := range p.put {
			owner := p.now[fk]
			as, ok := asOf[owner]
			if !ok {
				as = t.rules[owner].ActionSet
			}
			vals[i] = flowValue{ActionSet: as, Stats: owner}
		}
		if err := t.putFlows(p.put, vals, p.newSubs); err != nil {
			return fmt.Errorf("install flows: %w", err)
		}
	}

	// 4. Stale flows out.
	if len(p.remove) > 0 {
		if err := t.deleteFlows(p.remove); err != nil {
			return fmt.Errorf("remove flows: %w", err)
		}
	}

	// In memory: the new state.
	for id, in := range p.del {
		delete(t.rules, id)
		if t.byText != nil && t.byText[in.key()] == id {
			delete(t.byText, in.key())
		}
	}
	for _, in := range p.ins {
		t.rules[in.ID] = in
		if t.byText != nil {
			t.byText[in.key()] = in.ID
		}
	}
	t.idHint = p.idHint
	for gk, e := range p.edits {
		// In place: a copy of a group of 10,000 is 80 KB a change, and
		// the garbage of such changes is most of what the daemon's
		// collections cost.
		members := groupAfter(t.groups[gk], e.del, e.ins)
		if len(members) == 0 {
			delete(t.groups, gk)
		} else {
			t.groups[gk] = members
		}
	}
	for _, st := range p.newSubs {
		t.subtables[st.subtableKey] = st
		t.stByID[st.id] = st
	}
	for fk := range p.gone {
		delete(t.flows, fk)
	}
	for fk, owner := range p.now {
		t.flows[fk] = owner
	}
	for id, keys := range p.newFlows {
		in := t.rules[id]
		in.flows, in.Entries = keys, len(keys)
	}
	var emptied map[uint32]bool
	for id, st := range t.stByID {
		st.flows = p.stFlows[id]
		if st.flows == 0 {
			if emptied == nil {
				emptied = map[uint32]bool{}
			}
			emptied[id] = true
		}
	}

	// Action set references. What the change freed is held (7.).
	freed := &heldSlots{}
	for _, in := range p.del {
		freed.rules = append(freed.rules, in.ID)
		t.refTxPorts(t.asBySlot[in.ActionSet], -1)
		c := t.asContent[in.ActionSet]
		if a := t.actionSets[c]; a != nil {
			a.refs--
			if a.refs == 0 {
				delete(t.actionSets, c)
				delete(t.asContent, in.ActionSet)
				delete(t.asBySlot, in.ActionSet)
			}
		}
	}
	for _, in := range p.ins {
		if c, ok := t.asContent[in.ActionSet]; ok {
			t.actionSets[c].refs++
			t.refTxPorts(t.asBySlot[in.ActionSet], 1)
			continue
		}
		set, _ := actionSetFor(in.Rule)
		t.refTxPorts(set, 1)
		c := contentKey(&set)
		t.actionSets[c] = &actionSlot{slot: in.ActionSet, refs: 1}
		t.asContent[in.ActionSet] = c
		t.asBySlot[in.ActionSet] = set
	}
	for _, in := range p.del {
		// Freed unless an inserted rule shares the same content.
		if _, used := t.asContent[in.ActionSet]; !used && !slices.Contains(freed.actionSets, in.ActionSet) {
			freed.actionSets = append(freed.actionSets, in.ActionSet)
		}
	}

	// From here on the change is live: a failure is cleanup left undone.
	live := func(err error, freed *heldSlots) error { return &liveChangeError{err: err, freed: freed} }
	step := func(name string, f func() error) error {
		if failStep != nil {
			if err := failStep(name); err != nil {
				return err
			}
		}
		return f()
	}

	// 5. The flows are final: cached answers from before are stale.
	if err := step("invalidate", t.invalidateCache); err != nil {
		return live(err, freed)
	}

	// 6. Emptied subtables out.
	if emptied != nil {
		for id := range emptied {
			st := t.stByID[id]
			delete(t.subtables, st.subtableKey)
			delete(t.stByID, id)
			freed.subtables = append(freed.subtables, id)
		}
		if err := step("publish", func() error { return t.publish(t.sortedSubtables(nil, nil)) }); err != nil {
			return live(err, freed)
		}
	}
	// Specs are read by user space only: no run needs them.
	if len(p.del) > 0 {
		gone := make([]RuleID, 0, len(p.del))
		for id := range p.del {
			gone = append(gone, id)
		}
		if err := step("specs", func() error { return batchDelete(t.m.RuleSpecs, gone) }); err != nil {
			return live(fmt.Errorf("remove rule specs: %w", err), freed)
		}
	}

	// 7. Freed slots wait for running programs: here (strict), or in the
	// background (deferred), recorded in meta for other processes.
	t.hold(freed)
	if !t.deferGrace {
		if err := step("settle", t.Settle); err != nil {
			return live(err, nil)
		}
	} else if !t.Pending() {
		if err := step("txports", t.syncTxPorts); err != nil {
			return live(err, nil)
		}
	}
	t.meta.Dirty = 0
	if t.Pending() {
		t.meta.Dirty = dirtyGrace
	}
	if err := step("meta", t.putMeta); err != nil {
		return live(err, nil)
	}
	return nil
}

// countTxPorts counts the redirect targets of the installed action sets
// (txRefs), which are the devmap's entries (txPorts): at load.
func (t *Table) countTxPorts() {
	t.txRefs, t.txPorts = map[uint32]int{}, map[uint32]bool{}
	for _, in := range t.rules {
		t.refTxPorts(t.asBySlot[in.ActionSet], 1)
	}
	for ifindex := range t.txRefs {
		t.txPorts[ifindex] = true
	}
}

// refTxPorts adds n references to each redirect target of set.
func (t *Table) refTxPorts(set actionSet, n int) {
	for _, a := range set.Actions[:min(int(set.Count), len(set.Actions))] {
		if a.Op == uint8(bpf.XdpflowXfActionOpXF_ACT_REDIRECT) {
			if t.txRefs[a.Ifindex] += n; t.txRefs[a.Ifindex] <= 0 {
				delete(t.txRefs, a.Ifindex)
			}
		}
	}
}

// syncTxPorts drops devmap entries no rule uses any more.
func (t *Table) syncTxPorts() error {
	for ifindex := range t.txPorts {
		if t.txRefs[ifindex] == 0 {
			if err := t.m.TxPorts.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove redirect target %d: %w", ifindex, err)
			}
			delete(t.txPorts, ifindex)
		}
	}
	return nil
}

// batchChunk is how many elements one batch syscall carries.
const batchChunk = 4096

// batchPut writes elements, in batches where the kernel supports them.
func batchPut[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	for i := 0; i < len(keys); i += batchChunk {
		j := min(i+batchChunk, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for k := i; k < j; k++ {
				if err := m.Put(keys[k], vals[k]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// batchPutPerCPU sets every CPU's value of each key to v, in batches
// where the kernel supports them.
func batchPutPerCPU[K, V any](m *ebpf.Map, keys []K, v V) error {
	ncpu := ebpf.MustPossibleCPU()
	vals := make([]V, min(len(keys), batchChunk)*ncpu)
	for i := range vals {
		vals[i] = v
	}
	for i := 0; i < len(keys); i += batchChunk {
		j := min(i+batchChunk, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[:(j-i)*ncpu], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for k := i; k < j; k++ {
				if err := m.Put(keys[k], vals[:ncpu]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// batchDelete removes elements, tolerating ones already gone.
func batchDelete[K any](m *ebpf.Map, keys []K) error {
	for i := 0; i < len(keys); i += batchChunk {
		j := min(i+batchChunk, len(keys))
		if _, err := m.BatchDelete(keys[i:j], nil); err == nil {
			continue
		}
		// A batch stops at the first missing key: fall back to one by one.
		for k := i; k < j; k++ {
			if err := m.Delete(keys[k]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
		}
	}
	return nil
}

// repair makes the maps match the in-memory state: the subtable list, every
// flow, and the rule specs (dropping those listed in bad).
func (t *Table) repair(bad []uint32) error {
	if err := t.prepareWrite(); err != nil {
		return err
	}
	for _, id := range bad {
		_ = t.m.RuleSpecs.Delete(id)
	}
	// Specs of rules not held (a writer died before removing them).
	var id uint32
	var spec ruleSpec
	var stale []uint32
	it := t.m.RuleSpecs.Iterate()
	for it.Next(&id, &spec) {
		if t.rules[id] == nil {
			stale = append(stale, id)
		}
	}
	for _, id := range stale {
		_ = t.m.RuleSpecs.Delete(id)
	}

	// Publish every subtable a flow needs, fix the flows, then drop the rest.
	if err := t.publish(t.sortedSubtables(nil, nil)); err != nil {
		return err
	}
	var extra []flowKey
	var strayNarrow []narrowKey // flows_narrow entries no known subtable explains
	err := t.readFlows(func(fk flowKey, val flowValue, raw *narrowKey, known bool) {
		if !known {
			strayNarrow = append(strayNarrow, *raw)
			return
		}
		owner, ok := t.flows[fk]
		if !ok {
			extra = append(extra, fk)
			return
		}
		if in := t.rules[owner]; in == nil || val.Stats != owner || val.ActionSet != in.ActionSet {
			extra = append(extra, fk) // rewritten below
		}
	})
	if err != nil {
		return err
	}
	if err := batchDelete(t.m.FlowsNarrow, strayNarrow); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	keys := make([]flowKey, 0, len(t.flows))
	vals := make([]flowValue, 0, len(t.flows))
	for fk, owner := range t.flows {
		keys = append(keys, fk)
		vals = append(vals, flowValue{ActionSet: t.rules[owner].ActionSet, Stats: owner})
	}
	if err := t.putFlows(keys, vals, nil); err != nil {
		return fmt.Errorf("restore flows: %w", err)
	}
	var gone []flowKey
	for _, fk := range extra {
		if _, ok := t.flows[fk]; !ok {
			gone = append(gone, fk)
		}
	}
	if err := t.deleteFlows(gone); err != nil {
		return fmt.Errorf("remove stray flows: %w", err)
	}
	if err := t.invalidateCache(); err != nil {
		return err
	}
	if err := t.Sync(); err != nil {
		return err
	}
	if err := t.syncTxPorts(); err != nil {
		return err
	}
	t.meta.Dirty = 0
	return t.putMeta()
}
