package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// levelIndex finds, for a new entry, the highest level of an earlier
// entry it overlaps. Entries are bucketed by mask; two entries overlap
// when their keys agree on the bits both masks cover, so each bucket keeps
// its keys indexed under every common mask asked for so far.
type levelIndex struct {
	buckets []*bucket
	byMask  map[rule.Key]*bucket
}

type bucket struct {
	mask   rule.Key
	keys   []rule.Key
	levels []int
	common map[rule.Key]map[rule.Key]int // common mask -> key under it -> max level
}

func newLevelIndex() *levelIndex { return &levelIndex{byMask: map[rule.Key]*bucket{}} }

// above returns the highest level an entry overlaps, or -1.
func (ix *levelIndex) above(m *rule.Match) int {
	best := -1
	for _, b := range ix.buckets {
		c := rule.MaskKey(&m.Mask, &b.mask)
		idx := b.common[c]
		if idx == nil {
			idx = make(map[rule.Key]int, len(b.keys))
			for i := range b.keys {
				k := rule.MaskKey(&b.keys[i], &c)
				if l, ok := idx[k]; !ok || b.levels[i] > l {
					idx[k] = b.levels[i]
				}
			}
			b.common[c] = idx
		}
		if l, ok := idx[rule.MaskKey(&m.Key, &c)]; ok && l > best {
			best = l
		}
	}
	return best
}

func (ix *levelIndex) add(m *rule.Match, level int) {
	b := ix.byMask[m.Mask]
	if b == nil {
		b = &bucket{mask: m.Mask, common: map[rule.Key]map[rule.Key]int{}}
		ix.byMask[m.Mask] = b
		ix.buckets = append(ix.buckets, b)
	}
	b.keys = append(b.keys, m.Key)
	b.levels = append(b.levels, level)
	for c, idx := range b.common {
		k := rule.MaskKey(&m.Key, &c)
		if l, ok := idx[k]; !ok || level > l {
			idx[k] = level
		}
	}
}

// maxLevel keeps prefs (level+1) within a tc-sized priority.
const maxLevel = 65533

// assemble places flat rules on levels: a rule goes one level above the
// highest earlier rule it overlaps, so rules of one level never overlap
// and their order inside it does not matter, while every overlap keeps
// nft's order. Rules that do not fit the limits, and every rule after
// them, stay in nft behind one catch-all punt.
func assemble(flat []flatRule, rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	var (
		out      []*rule.Rule
		statuses []*Status
		byName   = map[string]*Status{}
		parts    = map[string]int{}
		ix       = newLevelIndex()
		subs     = map[[2]any]bool{}
		nflows   int
		top      = -1
		overflow string
	)
	status := func(name string) *Status {
		st := byName[name]
		if st == nil {
			st = &Status{Name: name, Offloaded: true}
			byName[name] = st
			statuses = append(statuses, st)
		}
		return st
	}
	notOffloaded := func(st *Status, why string) {
		st.Offloaded = false
		if st.Reason == "" {
			st.Reason = why
		} else if !strings.Contains(st.Reason, why) {
			st.Reason += "; " + why
		}
	}
	for i := range flat {
		fr := &flat[i]
		st := status(fr.name)
		if fr.skip != "" {
			notOffloaded(st, fr.skip)
			continue
		}
		if overflow != "" {
			notOffloaded(st, overflow)
			continue
		}
		main, frag, dropped := entriesOf(fr)
		pass := fr.pass
		reason := fr.reason
		if len(dropped) > 0 {
			pass = true
			reason = "punted (its match goes to the kernel): " + strings.Join(dropped, ", ")
		}
		if len(main) == 0 && len(frag) == 0 {
			notOffloaded(st, "matches no packet xdpflow keys")
			continue
		}
		var acts []rule.Action
		switch {
		case pass:
			acts = []rule.Action{{Kind: rule.ActPass}}
		case fr.verdict.kind == vDrop:
			acts = []rule.Action{{Kind: rule.ActDrop}}
		case fr.verdict.kind == vAccept:
			acts = []rule.Action{{Kind: rule.ActPass}}
		case fr.verdict.kind == vFwd:
			acts = []rule.Action{{Kind: rule.ActRedirect, Ifindex: fr.verdict.ifindex, Dev: ifName(fr.verdict.ifindex)}}
		}
		if fr.verdict.kind == vFwd && !slices.Contains(st.FwdTo, fr.verdict.ifindex) {
			st.FwdTo = append(st.FwdTo, fr.verdict.ifindex)
		}
		v := fr.verdict.String()
		if pass {
			v = "pass"
		}
		if st.Verdict == "" {
			st.Verdict = v
		} else if !strings.Contains(st.Verdict, v) {
			st.Verdict += ", " + v // a verdict map
		}

		level := -1
		for k := range main {
			level = max(level, ix.above(&main[k]))
		}
		for k := range frag {
			level = max(level, ix.above(&frag[k]))
		}
		level++
		newSubs := map[[2]any]bool{}
		for _, ms := range [][]rule.Match{main, frag} {
			for k := range ms {
				if key := [2]any{level, ms[k].Mask}; !subs[key] {
					newSubs[key] = true
				}
			}
		}
		nparts := 1
		if len(frag) > 0 {
			nparts = 2
		}
		// Keep one subtable, flow and rule for the catch-all punt.
		if level >= maxLevel || len(subs)+len(newSubs) > lim.Subtables-1 ||
			nflows+len(main)+len(frag) > lim.Flows-1 || len(out)+nparts > lim.Rules-1 {
			overflow = fmt.Sprintf("not offloaded: xdpflow's table is full here (%d subtables, %d flows, %d rules left), so this rule and every later one run in nft only",
				lim.Subtables, lim.Flows, lim.Rules)
			notOffloaded(st, overflow)
			catchAll := rule.Match{}
			out = append(out, part(rs, "xdpflow/overflow", 0, top+1, []rule.Match{catchAll}, []rule.Action{{Kind: rule.ActPass}}))
			continue
		}
		for key := range newSubs {
			subs[key] = true
		}
		nflows += len(main) + len(frag)
		top = max(top, level)
		for _, ms := range [][]rule.Match{main, frag} {
			for k := range ms {
				ix.add(&ms[k], level)
			}
		}
		if len(main) > 0 {
			out = append(out, part(rs, fr.name, parts[fr.name], level, main, acts))
			parts[fr.name]++
			st.Parts = append(st.Parts, out[len(out)-1])
		}
		if len(frag) > 0 {
			out = append(out, part(rs, fr.name, parts[fr.name], level, frag, []rule.Action{{Kind: rule.ActPass}}))
			parts[fr.name]++
			st.Companions = append(st.Companions, out[len(out)-1])
		}
		if pass {
			notOffloaded(st, reason)
		}
	}
	return out, statuses
}

// part builds one installed rule: part n of the nft rule name.
func part(rs *Ruleset, name string, n, level int, ms []rule.Match, acts []rule.Action) *rule.Rule {
	r := &rule.Rule{
		Source: rule.SourceNFT, Dev: rs.Dev, Prio: uint16(level + 1), Protocol: rule.EthPAll,
		Match: ms[0], More: ms[1:], Actions: acts, Name: fmt.Sprintf("%s#%d", name, n),
	}
	r.Keys = describe(&ms[0])
	if len(ms) > 1 {
		r.Keys = append(r.Keys, rule.KeyValue{Name: "entries", Value: uint64(len(ms))})
	}
	r.Text = FormatSpec(r, digest(ms, ruletext.FormatActions(acts)))
	return r
}
