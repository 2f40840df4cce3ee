package maps

import (
	"errors"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
)

// identity is the rule's identity, made once.
func (in *Installed) identity() rule.Identity {
	if in.ident == nil {
		id := in.Rule.Identity()
		in.ident = &id
	}
	return *in.ident
}

// SyncSource makes the table's rules of one source equal to want in one
// transaction: rules whose identity is installed stay (and keep their
// counters), others are added and the rest removed; new entries are put
// before stale ones go.
func (t *Table) SyncSource(src rule.Source, want []*rule.Rule) (added, removed int, err error) {
	// In a map: no sort of the table's rules each call. A rule wanted
	// again is marked kept with id 0 (never a rule's); the rest goes.
	have := make(map[rule.Identity]RuleID, len(t.rules))
	for _, in := range t.rules {
		if in.Rule.Source == src {
			have[in.identity()] = in.ID
		}
	}
	var ch Change
	for _, r := range want {
		id := r.Identity()
		if _, ok := have[id]; ok {
			have[id] = 0
			continue
		}
		ch.Insert = append(ch.Insert, Insert{Rule: r})
	}
	for _, id := range have {
		if id != 0 {
			ch.Delete = append(ch.Delete, id)
		}
	}
	t.pairReplaces(&ch)
	return t.applyCounted(ch)
}

// UpdateSource changes the table's rules of one source by a known
// difference, in one transaction: the rules of identities in remove go,
// those of add not installed come (one installed already stays, with its
// counters; one in both add and remove stays as well). What SyncSource
// does given the whole set, at the cost of the change rather than of the
// table's size.
func (t *Table) UpdateSource(src rule.Source, add []*rule.Rule, remove []rule.Identity) (added, removed int, err error) {
	byIdentity := t.identities()
	ids := make([]rule.Identity, len(add))
	adding := make(map[rule.Identity]bool, len(add))
	for i, r := range add {
		ids[i] = r.Identity()
		adding[ids[i]] = true
	}
	var ch Change
	seen := map[rule.Identity]bool{} // each once, however often listed

	for _, id := range remove {
		if seen[id] || adding[id] || id.Source != src {
			continue
		}
		seen[id] = true
		if rid, ok := byIdentity[id]; ok {
			ch.Delete = append(ch.Delete, rid)
		}
	}
	for i, r := range add {
		if seen[ids[i]] {
			continue
		}
		seen[ids[i]] = true
		if _, ok := byIdentity[ids[i]]; !ok {
			ch.Insert = append(ch.Insert, Insert{Rule: r})
		}
	}
	t.pairReplaces(&ch)
	return t.applyCounted(ch)
}

// pairReplaces makes a filter ch deletes and one it inserts at the same
// pref and handle a replace, as the kernel made it: the kernel keeps a
// replaced filter's place, and its mask's when the mask stays.
func (t *Table) pairReplaces(ch *Change) {
	leaving := map[filterSlot]int{} // index in ch.Delete
	for i, id := range ch.Delete {
		if s, ok := slotOf(t.rules[id].Rule); ok {
			leaving[s] = i
		}
	}
	if len(leaving) == 0 {
		return
	}
	paired := map[RuleID]bool{}
	for i := range ch.Insert {
		ins := &ch.Insert[i]
		s, ok := slotOf(ins.Rule)
		if j, out := leaving[s]; ok && out && ins.Replaces == 0 {
			ins.Replaces = ch.Delete[j]
			paired[ch.Delete[j]] = true
			delete(leaving, s)
		}
	}
	ch.Delete = slices.DeleteFunc(ch.Delete, func(id RuleID) bool { return paired[id] })
}

// filterSlot is where a handled filter (tc's) sits: one at a time.
type filterSlot struct {
	src    rule.Source
	chain  uint32
	prio   uint16
	handle uint32
}

// slotOf is r's slot, if it is a handled filter.
func slotOf(r *rule.Rule) (filterSlot, bool) {
	return filterSlot{r.Source, r.Chain, r.Prio, r.Handle}, r.Handle != 0
}

// applyCounted applies ch, if it changes anything, and counts the rules it
// added and removed: none if it failed, all if it is live (ErrUnsettled
// included).
func (t *Table) applyCounted(ch Change) (added, removed int, err error) {
	if len(ch.Insert)+len(ch.Delete) == 0 {
		return 0, 0, nil
	}
	deleted := len(ch.Delete)
	for _, ins := range ch.Insert {
		if ins.Replaces != 0 {
			deleted++
		}
	}
	if _, err := t.Apply(ch); err != nil {
		if errors.Is(err, ErrUnsettled) {
			return len(ch.Insert), deleted, err
		}
		return 0, 0, err
	}
	return len(ch.Insert), deleted, nil
}

// identities is byIdentity, built if it is not.
func (t *Table) identities() map[rule.Identity]RuleID {
	if t.byIdentity == nil {
		t.byIdentity = make(map[rule.Identity]RuleID, len(t.rules))
		for _, in := range t.rules {
			t.byIdentity[in.identity()] = in.ID
		}
	}
	return t.byIdentity
}
