package nft

// An nft rule's parts: the rules of the table that carry its matches,
// each on its level.

import (
	"fmt"
	"slices"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// part builds one installed rule: part n of the nft rule name.
func part(rs *Ruleset, name string, n, level int, ms []rule.Match, acts []rule.Action) *rule.Rule {
	return partMade(rs, name, n, level, ms, acts, nil, "")
}

// partMade is part, with the digest and keys made for these matches before
// (in made under key), or made now and kept there. made is nil where the
// matches are not a prepared rule's own.
func partMade(rs *Ruleset, name string, n, level int, ms []rule.Match, acts []rule.Action, made map[string]madePart, key string) *rule.Rule {
	r := &rule.Rule{
		Source: rule.SourceNFT, Dev: rs.Dev, Level: uint32(level + 1), Protocol: rule.EthPAll,
		Match: ms[0], More: ms[1:], Actions: acts, Name: partName(name, n),
	}
	actText := ruletext.FormatActions(acts)
	key += actText
	mp, ok := made[key]
	if !ok {
		mp.keys = describe(&ms[0])
		if len(ms) > 1 {
			mp.keys = append(mp.keys, rule.KeyValue{Name: "entries", Value: uint64(len(ms))})
		}
		mp.digest = digest(ms, actText)
		if made != nil {
			made[key] = mp
		}
	}
	r.Keys, r.Digest = mp.keys, mp.digest
	r.Text = FormatSpec(r)
	return r
}

// partName names part n of the nft rule name.
func partName(name string, n int) string { return fmt.Sprintf("%s#%d", name, n) }

// tableKey is the subtable a match's entry goes to (maps' subtableKey):
// ranged entries have tables of their own.
type tableKey struct {
	mask   rule.Key
	ranged bool
}

// overflowPart is the catch-all punt after the rules that fit. It is at
// the one level no rule takes, after them all: the same part whatever
// their levels, so it stays in place across compiles.
func overflowPart(rs *Ruleset) *rule.Rule {
	return part(rs, "xdpflow/overflow", 0, maxLevel, []rule.Match{{}}, []rule.Action{{Kind: rule.ActPass}})
}

// actsEqual compares nft parts' actions (drop, pass, redirect).
func actsEqual(a, b []rule.Action) bool {
	return slices.EqualFunc(a, b, func(x, y rule.Action) bool {
		return x.Kind == y.Kind && x.Ifindex == y.Ifindex && x.Dev == y.Dev
	})
}

// sameSlice says whether a and b are the same slice.
func sameSlice(a, b []rule.Match) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
