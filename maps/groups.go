package maps

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// A mask group is the rules of one priority with the same mask, in
// insertion order (Seq); the groups of a priority are looked up in
// creation order (GroupSeq).

type groupKey struct {
	prio  uint64 // rule.Rule.Order
	group uint64
}

// groupEdit is what a change does to one mask group.
type groupEdit struct{ deleted, inserted []*Installed }

// group is the key of in's mask group.
func (in *Installed) group() groupKey { return groupKey{in.Rule.Order(), in.GroupSeq} }

// groupIndex names a mask group by priority and mask.
func groupIndex(prio uint64, r *rule.Rule) string {
	return fmt.Sprintf("%d|%s", prio, r.MaskGroup())
}

// groupsLeft is the mask groups of priorities prios with a member that is
// not in deleted, by groupIndex. (nft rules are a priority each: a change
// names a few of thousands.)
func (t *Table) groupsLeft(deleted map[RuleID]*Installed, prios map[uint64]bool) map[string]uint64 {
	groupOf := map[string]uint64{}
	for prio := range prios {
		for _, group := range t.prioGroups[prio] {
			gk := groupKey{prio, group}
			for _, in := range t.groups[gk] {
				if deleted[in.ID] == nil {
					groupOf[groupIndex(gk.prio, in.Rule)] = gk.group
					break
				}
			}
		}
	}
	return groupOf
}

// setGroup makes members group gk's, forgetting a group left empty.
func (t *Table) setGroup(gk groupKey, members []*Installed) {
	if len(members) > 0 {
		t.groups[gk] = members
		t.addPrioGroup(gk)
		return
	}
	delete(t.groups, gk)
	if g := slices.DeleteFunc(t.prioGroups[gk.prio], func(x uint64) bool { return x == gk.group }); len(g) > 0 {
		t.prioGroups[gk.prio] = g
	} else {
		delete(t.prioGroups, gk.prio)
	}
}

// addPrioGroup records gk among its priority's groups.
func (t *Table) addPrioGroup(gk groupKey) {
	if g := t.prioGroups[gk.prio]; !slices.Contains(g, gk.group) {
		t.prioGroups[gk.prio] = append(g, gk.group)
	}
}

// groupAfter is a group's members (sorted by Seq) without del and with
// ins, sorted by Seq, edited in place (members' array is reused). A group
// of Open vSwitch's holds thousands of rules and a change touches one:
// members are found by binary search, not re-sorted.
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

// sameMatch refuses an inserted rule whose key, mask and ranges
// another member of its group has: flower's fl_ht_insert_unique answers
// EEXIST for it, where expansion would leave the second filter no entries,
// or choices another flow, and accept it.
func sameMatch(members, ins []*Installed) error {
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

// expandGroup expands the rules of one mask group, given in insertion
// order; a ranged group's in the order they take packets (rule.RangeOrder).
func expandGroup(members []*Installed) map[RuleID][]rule.Entry {
	out := make(map[RuleID][]rule.Entry, len(members))
	ranged := false
	for _, in := range members {
		ranged = ranged || in.Rule.RangesOrdered()
	}
	if !ranged {
		for _, in := range members {
			if !in.Rule.Opaque { // an opaque rule's entries are as installed
				out[in.ID] = rule.Expand(in.Rule, nil)
			}
		}
		return out
	}
	// Ranged rules are tc filters, never opaque.
	byRule := make(map[*rule.Rule]RuleID, len(members))
	rules := make([]*rule.Rule, len(members))
	for i, in := range members {
		byRule[in.Rule], rules[i] = in.ID, in.Rule
	}
	ordered := rule.RangeOrder(rules)
	for i, r := range ordered {
		out[byRule[r]] = rule.Expand(r, ordered[:i])
	}
	return out
}

func sortBySeq(s []*Installed) { slices.SortFunc(s, bySeq) }

func bySeq(a, b *Installed) int { return cmp.Compare(a.Seq, b.Seq) }
