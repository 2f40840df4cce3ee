package maps

import (
	"errors"
	"fmt"
	"iter"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/rule"
)

// Rules with the same actions share one action set slot: t.actionSets
// finds a slot by content and counts the rules using it. The redirect
// targets of the sets in use are the devmap's entries (txPorts).

type actionSlot struct {
	slot uint32
	refs int
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
			x.Op = opDrop
		case rule.ActPass:
			x.Op = opPass
		case rule.ActRedirect:
			if a.Ifindex <= 0 {
				return set, fmt.Errorf("redirect to %q: device not resolved", a.Dev)
			}
			x.Op, x.Ifindex = opRedirect, uint32(a.Ifindex)
			if a.Dev == r.Dev {
				// back out of the device it came in on
				x.Op, x.Ifindex = opTX, 0
			}
		case rule.ActVlanPush, rule.ActVlanModify:
			x.Op = opVlanPush
			if a.Kind == rule.ActVlanModify {
				x.Op = opVlanModify
			}
			x.VlanProto, x.VlanId, x.VlanPrio = rule.HostToBE16(a.VlanProto), a.VlanID, a.VlanPrio
			if a.HasPrio {
				x.Flags |= flagVlanPrio
			}
		case rule.ActVlanPop:
			x.Op = opVlanPop
		case rule.ActSetEthSrc, rule.ActSetEthDst:
			x.Op = opSetEthSrc
			if a.Kind == rule.ActSetEthDst {
				x.Op = opSetEthDst
			}
			copy(x.Mac[:], a.MAC)
		default:
			return set, fmt.Errorf("action kind %d has no datapath form", a.Kind)
		}
	}
	return set, nil
}

func contentKey(set *actionSet) string {
	// The datapath bytes themselves (padding included, which encoding
	// leaves zero): equal content, equal key. Called once per rule of a
	// change, so it must be cheap.
	n := min(int(set.Count), len(set.Actions))
	used := *set
	clear(used.Actions[n:])
	return string((*[unsafe.Sizeof(actionSet{})]byte)(unsafe.Pointer(&used))[:])
}

// redirectTargets yields the ifindex of each redirect of set.
func redirectTargets(set *actionSet) iter.Seq[uint32] {
	return func(yield func(uint32) bool) {
		for _, a := range set.Actions[:min(int(set.Count), len(set.Actions))] {
			if a.Op == opRedirect && !yield(a.Ifindex) {
				return
			}
		}
	}
}

// addActionSet records that slot holds set, used by no rule yet.
func (t *Table) addActionSet(slot uint32, set actionSet) {
	c := contentKey(&set)
	t.actionSets[c] = &actionSlot{slot: slot}
	t.actionKeyBySlot[slot] = c
	t.actionSetBySlot[slot] = set
}

// unrefActionSet drops a rule's reference to the set in slot, and the set
// with the last one.
func (t *Table) unrefActionSet(slot uint32) {
	c, ok := t.actionKeyBySlot[slot]
	if !ok {
		return
	}
	if a := t.actionSets[c]; a != nil {
		if a.refs--; a.refs <= 0 {
			delete(t.actionSets, c)
			delete(t.actionKeyBySlot, slot)
			delete(t.actionSetBySlot, slot)
		}
	}
}

// writeActionSets gives each inserted rule the slot of its action set: one
// installed, or written earlier in the change, with the same content, or
// a new one written here. The devmap gets the new sets' redirect targets.
func (t *Table) writeActionSets(inserted []*Installed) error {
	used := map[uint32]bool{}
	for _, a := range t.actionSets {
		used[a.slot] = true
	}
	held := t.heldActionSets()
	next := uint32(0)
	written := map[string]uint32{} // content key -> slot
	targets := map[uint32]bool{}
	for _, in := range inserted {
		set, err := actionSetFor(in.Rule)
		if err != nil {
			return fmt.Errorf("pref %d: %w", in.Rule.Prio, err)
		}
		c := contentKey(&set)
		if a := t.actionSets[c]; a != nil {
			in.ActionSet = a.slot
			continue
		}
		if slot, ok := written[c]; ok {
			in.ActionSet = slot
			continue
		}
		for used[next] || held[next] {
			next++
		}
		if int(next) >= t.maxActionSets {
			return fmt.Errorf("%w: %d distinct action lists", ErrTableFull, t.maxActionSets)
		}
		if err := t.m.ActionSets.Put(next, &set); err != nil {
			return fmt.Errorf("write action set: %w", err)
		}
		used[next] = true
		written[c] = next
		in.ActionSet = next
		// Put even where txPorts has the target: the kernel drops a
		// device's devmap entry when the device goes away, and txPorts
		// learns only when the table settles.
		for ifindex := range redirectTargets(&set) {
			targets[ifindex] = true
		}
	}
	for ifindex := range targets {
		if err := t.m.TxPorts.Put(ifindex, ifindex); err != nil {
			return fmt.Errorf("add redirect target ifindex %d to the devmap: %w", ifindex, err)
		}
		t.txPorts[ifindex] = true
	}
	return nil
}

// commitActionSets moves the references of the deleted rules' action sets
// to the inserted rules' in memory. It returns the slots no rule uses any
// more.
func (t *Table) commitActionSets(p *plan) (freed []uint32) {
	for _, in := range p.deleted {
		t.refTxPorts(t.actionSetBySlot[in.ActionSet], -1)
		t.unrefActionSet(in.ActionSet)
	}
	for _, in := range p.inserted {
		if _, ok := t.actionKeyBySlot[in.ActionSet]; !ok {
			set, _ := actionSetFor(in.Rule) // writeActionSets encoded it
			t.addActionSet(in.ActionSet, set)
		}
		t.actionSets[t.actionKeyBySlot[in.ActionSet]].refs++
		t.refTxPorts(t.actionSetBySlot[in.ActionSet], 1)
	}
	seen := map[uint32]bool{}
	for _, in := range p.deleted {
		// Freed unless an inserted rule shares the same content.
		if _, used := t.actionKeyBySlot[in.ActionSet]; !used && !seen[in.ActionSet] {
			seen[in.ActionSet] = true
			freed = append(freed, in.ActionSet)
		}
	}
	return freed
}

// countTxPorts counts the redirect targets of the installed action sets
// (txRefs), which are the devmap's entries (txPorts): at load.
func (t *Table) countTxPorts() {
	t.txRefs, t.txPorts = map[uint32]int{}, map[uint32]bool{}
	for _, in := range t.rules {
		t.refTxPorts(t.actionSetBySlot[in.ActionSet], 1)
	}
	for ifindex := range t.txRefs {
		t.txPorts[ifindex] = true
	}
}

// refTxPorts adds n references to each redirect target of set.
func (t *Table) refTxPorts(set actionSet, n int) {
	for ifindex := range redirectTargets(&set) {
		if t.txRefs[ifindex] += n; t.txRefs[ifindex] <= 0 {
			delete(t.txRefs, ifindex)
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
