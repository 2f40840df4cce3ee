package maps

import (
	"errors"

	"github.com/xdpflow/xdpflow/rule"
)

// textKey names a rule by what SyncSource and UpdateSource know it by.
type textKey struct {
	src  rule.Source
	text string
}

func (in *Installed) key() textKey { return textKey{in.Rule.Source, in.Rule.Text} }

// SyncSource makes the table's rules of one source equal to want in one
// transaction: rules whose text is installed stay (and keep their
// counters), others are added and the rest removed; new entries are put
// before stale ones go.
func (t *Table) SyncSource(src rule.Source, want []*rule.Rule) (added, removed int, err error) {
	// By text, in a map: no sort of the table's rules each call. A rule
	// wanted again is marked kept with id 0 (never a rule's); the rest
	// goes.
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
	return t.applyCounted(ch)
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
	return t.applyCounted(ch)
}

// applyCounted applies ch, if it changes anything, and counts the rules it
// added and removed: none if it failed, all if it is live (ErrUnsettled
// included).
func (t *Table) applyCounted(ch Change) (added, removed int, err error) {
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
