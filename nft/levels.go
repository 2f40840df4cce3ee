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
	a := &assembler{rs: rs, lim: lim, byName: map[string]*Status{}, parts: map[string]int{},
		ix: newLevelIndex(), subs: map[tableKey]bool{}, ranged: map[rule.Entry]bool{}, top: -1}
	for i := range flat {
		a.place(&flat[i])
	}
	return a.out, a.statuses
}

// assembler is assemble's state: what is placed so far and the room it
// takes.
type assembler struct {
	rs       *Ruleset
	lim      Limits
	out      []*rule.Rule
	statuses []*Status
	byName   map[string]*Status
	parts    map[string]int    // parts so far, by nft rule
	ix       *levelIndex       // entries placed, by level
	subs     map[tableKey]bool // subtables used
	// ranged: the flows of ranged matches placed, each the only one of
	// its key (a flow holds one range).
	ranged   map[rule.Entry]bool
	nflows   int
	top      int    // highest level used
	overflow string // set once a rule did not fit: why every later one stays in nft
}

// status is the nft rule's status, made on first sight.
func (a *assembler) status(name string) *Status {
	st := a.byName[name]
	if st == nil {
		st = &Status{Name: name, Offloaded: true}
		a.byName[name] = st
		a.statuses = append(a.statuses, st)
	}
	return st
}

func notOffloaded(st *Status, why string) {
	st.Offloaded = false
	if st.Reason == "" {
		st.Reason = why
	} else if !strings.Contains(st.Reason, why) {
		st.Reason += "; " + why
	}
}

// place installs one flat rule's parts on their level, or notes why not.
func (a *assembler) place(fr *flatRule) {
	st := a.status(fr.name)
	if fr.skip != "" {
		notOffloaded(st, fr.skip)
		return
	}
	if a.overflow != "" {
		notOffloaded(st, a.overflow)
		return
	}
	main, frag, dropped := entriesOf(fr)
	main = a.rangesOrBlocks(coalescePorts(main))
	pass := fr.pass
	reason := fr.reason
	if len(dropped) > 0 {
		pass = true
		reason = "punted (its match goes to the kernel): " + strings.Join(dropped, ", ")
	}
	if len(main) == 0 && len(frag) == 0 {
		notOffloaded(st, "matches no packet xdpflow keys")
		return
	}
	acts := noteVerdict(st, fr, pass)
	level := -1
	for k := range main {
		level = max(level, a.ix.above(&main[k]))
	}
	for k := range frag {
		level = max(level, a.ix.above(&frag[k]))
	}
	level++
	if !a.reserve(level, main, frag) {
		a.overflow = fmt.Sprintf("not offloaded: xdpflow's table is full here (%d subtables, %d flows, %d rules left), so this rule and every later one run in nft only",
			a.lim.Subtables, a.lim.Flows, a.lim.Rules)
		notOffloaded(st, a.overflow)
		catchAll := rule.Match{}
		a.out = append(a.out, part(a.rs, "xdpflow/overflow", 0, a.top+1, []rule.Match{catchAll}, []rule.Action{{Kind: rule.ActPass}}))
		return
	}
	a.top = max(a.top, level)
	for _, ms := range [][]rule.Match{main, frag} {
		for k := range ms {
			a.ix.add(&ms[k], level)
		}
	}
	if len(main) > 0 {
		a.out = append(a.out, part(a.rs, fr.name, a.parts[fr.name], level, main, acts))
		a.parts[fr.name]++
		st.Parts = append(st.Parts, a.out[len(a.out)-1])
	}
	if len(frag) > 0 {
		a.out = append(a.out, part(a.rs, fr.name, a.parts[fr.name], level, frag, []rule.Action{{Kind: rule.ActPass}}))
		a.parts[fr.name]++
		st.Companions = append(st.Companions, a.out[len(a.out)-1])
	}
	if pass {
		notOffloaded(st, reason)
	}
}

// noteVerdict adds the flat rule's verdict (pass for a punt) and fwd
// target to its nft rule's status, and returns the actions its main part
// gets.
func noteVerdict(st *Status, fr *flatRule, pass bool) []rule.Action {
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
	return acts
}

// reserve takes the subtables, flows and rules the entries need at level,
// keeping one of each for the catch-all punt; false, taking nothing, when
// they do not fit.
func (a *assembler) reserve(level int, main, frag []rule.Match) bool {
	newSubs := map[tableKey]bool{}
	for _, ms := range [][]rule.Match{main, frag} {
		for k := range ms {
			tk := tableKeyOf(&ms[k])
			if !a.subs[tk] && (tk.ranged || !a.lim.SharedMasks[tk.mask]) {
				newSubs[tk] = true
			}
		}
	}
	nparts := 1
	if len(frag) > 0 {
		nparts = 2
	}
	if level >= maxLevel || len(a.subs)+len(newSubs) > a.lim.Subtables-1 ||
		a.nflows+len(main)+len(frag) > a.lim.Flows-1 || len(a.out)+nparts > a.lim.Rules-1 {
		return false
	}
	for key := range newSubs {
		a.subs[key] = true
	}
	a.nflows += len(main) + len(frag)
	return true
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
	r.Digest = digest(ms, ruletext.FormatActions(acts))
	r.Text = FormatSpec(r)
	return r
}

// tableKey is the subtable a match's entry goes to (maps' subtableKey):
// ranged entries have tables of their own.
type tableKey struct {
	mask   rule.Key
	ranged bool
}

func tableKeyOf(m *rule.Match) tableKey {
	return tableKey{m.Mask, m.SrcPortRange.Set() || m.DstPortRange.Set()}
}

// rangesOrBlocks keeps each ranged match whose flow no ranged match placed
// before holds, and claims it; the others become prefix blocks.
func (a *assembler) rangesOrBlocks(ms []rule.Match) []rule.Match {
	out := ms[:0:0]
	for _, m := range ms {
		e := rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange}
		if !e.Ranged() {
			out = append(out, m)
			continue
		}
		flow := rule.Entry{Key: e.Key, Mask: e.Mask}
		if !a.ranged[flow] {
			a.ranged[flow] = true
			out = append(out, m)
			continue
		}
		for _, b := range e.Blocks() {
			out = append(out, rule.Match{Key: b.Key, Mask: b.Mask})
		}
	}
	return out
}
