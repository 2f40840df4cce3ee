package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// maxLevel keeps prefs (level+1) within a tc-sized priority.
const maxLevel = 65533

// assemble places flat rules on levels, each above the rule before it:
// the level is nft's order, which the table's rank-ordered search keeps.
// Subtables are shared by mask whatever the levels, so levels cost
// nothing. A part installed before keeps its level while that is above
// the rule before it (Limits.Prios), so a change moves only the rules it
// must; a new rule goes halfway to the next level kept, or a spacing above
// the last. When kept levels run out of room, the set is placed afresh.
// Rules that do not fit the limits, and every rule after them, stay in
// nft behind one catch-all punt.
func assemble(flat []flatRule, rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	a := newAssembler(flat, rs, lim)
	a.placeAll()
	if a.outOfLevels && lim.Prios != nil {
		lim.Prios = nil
		a = newAssembler(flat, rs, lim)
		a.placeAll()
	}
	return a.out, a.statuses
}

func newAssembler(flat []flatRule, rs *Ruleset, lim Limits) *assembler {
	return &assembler{rs: rs, lim: lim, flat: flat, prepared: make([]*prepared, len(flat)),
		byName: map[string]*Status{}, parts: map[string]int{}, subs: map[tableKey]bool{},
		notInPlace: map[tableKey]bool{}, ranged: map[rule.Entry]bool{}, top: -1,
		spacing: min(max(maxLevel/(2*len(flat)+2), 1), 16)}
}

func (a *assembler) placeAll() {
	for i := range a.flat {
		a.place(i)
	}
}

// prepared is a flat rule's matches, before ranges or blocks are chosen.
type prepared struct {
	main, frag []rule.Match
	dropped    []string
}

// prepare expands flat rule i, once.
func (a *assembler) prepare(i int) *prepared {
	if a.prepared[i] == nil {
		main, frag, dropped := entriesOf(&a.flat[i])
		a.prepared[i] = &prepared{main: coalescePorts(main), frag: frag, dropped: dropped}
	}
	return a.prepared[i]
}

// partsOf is how many parts flat rule i makes.
func (a *assembler) partsOf(i int) int {
	if a.flat[i].skip != "" {
		return 0
	}
	p := a.prepare(i)
	return min(len(p.main), 1) + min(len(p.frag), 1)
}

// keptLevel is the level the first part of flat rule i had, if installed:
// n is the number of parts of its name before it.
func (a *assembler) keptLevel(i, n int) (int, bool) {
	prio, ok := a.lim.Prios[partName(a.flat[i].name, n)]
	return int(prio) - 1, ok
}

// nextKept is the kept level of the first of the few flat rules after i
// that has one.
func (a *assembler) nextKept(i int) (int, bool) {
	seen := map[string]int{a.flat[i].name: a.partsOf(i)}
	for j := i + 1; j < len(a.flat) && j <= i+8; j++ {
		name := a.flat[j].name
		if l, ok := a.keptLevel(j, a.parts[name]+seen[name]); ok {
			return l, true
		}
		seen[name] += a.partsOf(j)
	}
	return 0, false
}

// levelOf is the level for flat rule i.
func (a *assembler) levelOf(i int) int {
	if a.lim.Prios == nil {
		return a.top + a.spacing
	}
	if l, ok := a.keptLevel(i, a.parts[a.flat[i].name]); ok && l > a.top {
		return l
	}
	next, ok := a.nextKept(i)
	switch {
	case !ok:
		return a.top + a.spacing
	case next-a.top >= 2:
		return a.top + (next-a.top)/2
	}
	return a.top + 1
}

// assembler is assemble's state: what is placed so far and the room it
// takes.
type assembler struct {
	rs       *Ruleset
	lim      Limits
	flat     []flatRule
	prepared []*prepared // by flat rule, once expanded
	spacing  int         // between the levels of new rules at the end
	// outOfLevels: a rule found no level below maxLevel.
	outOfLevels bool
	out         []*rule.Rule
	statuses    []*Status
	byName      map[string]*Status
	parts       map[string]int    // parts so far, by nft rule
	subs        map[tableKey]bool // subtables used
	// ranged: the flows of ranged matches placed, each the only one of
	// its key (a flow holds one range).
	ranged map[rule.Entry]bool
	nflows int
	// What the result needs that is not in place (Limits.InPlace).
	notInPlace         map[tableKey]bool
	newFlows, newRules int
	cramped            bool   // the overflow is for want of room next to what is in place
	top                int    // highest level used
	overflow           string // set once a rule did not fit: why every later one stays in nft
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
func (a *assembler) place(i int) {
	fr := &a.flat[i]
	st := a.status(fr.name)
	if fr.skip != "" {
		notOffloaded(st, fr.skip)
		return
	}
	if a.overflow != "" {
		notOffloaded(st, a.overflow)
		return
	}
	p := a.prepare(i)
	main, frag := a.rangesOrBlocks(p.main), p.frag
	pass := fr.pass
	reason := fr.reason
	if len(p.dropped) > 0 {
		pass = true
		reason = "punted (its match goes to the kernel): " + strings.Join(p.dropped, ", ")
	}
	if len(main) == 0 && len(frag) == 0 {
		notOffloaded(st, "matches no packet xdpflow keys")
		return
	}
	acts := noteVerdict(st, fr, pass)
	level := a.levelOf(i)
	var parts []*rule.Rule
	if len(main) > 0 {
		parts = append(parts, part(a.rs, fr.name, a.parts[fr.name], level, main, acts))
	}
	if len(frag) > 0 {
		parts = append(parts, part(a.rs, fr.name, a.parts[fr.name]+len(parts), level, frag, []rule.Action{{Kind: rule.ActPass}}))
	}
	if why := a.reserve(level, main, frag, parts); why != "" {
		a.overflow = why
		st.Cramped = a.cramped
		notOffloaded(st, a.overflow)
		catchAll := rule.Match{}
		a.out = append(a.out, part(a.rs, "xdpflow/overflow", 0, a.top+1, []rule.Match{catchAll}, []rule.Action{{Kind: rule.ActPass}}))
		return
	}
	a.top = level
	a.out = append(a.out, parts...)
	a.parts[fr.name] += len(parts)
	if len(main) > 0 {
		st.Parts = append(st.Parts, parts[0])
		parts = parts[1:]
	}
	st.Companions = append(st.Companions, parts...)
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

// reserve takes the subtables, flows and rules the entries and parts need
// at level, keeping one of each for the catch-all punt; when they do not
// fit it takes nothing and says why.
func (a *assembler) reserve(level int, main, frag []rule.Match, parts []*rule.Rule) string {
	in := a.lim.InPlace
	newSubs, notInPlace := map[tableKey]bool{}, map[tableKey]bool{}
	newFlows, newRules := 0, 0
	for _, ms := range [][]rule.Match{main, frag} {
		for k := range ms {
			m := &ms[k]
			tk := tableKeyOf(m)
			if !a.subs[tk] && (tk.ranged || !a.lim.SharedMasks[tk.mask]) {
				newSubs[tk] = true
			}
			if in == nil {
				continue
			}
			if !a.notInPlace[tk] && !in.HasSubtable(tk.mask, tk.ranged) {
				notInPlace[tk] = true
			}
			e := rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange}
			if !in.HasFlow(e) {
				newFlows++
			}
		}
	}
	for _, p := range parts {
		if in != nil && !in.HasRule(p.Identity()) {
			newRules++
		}
	}
	if level >= maxLevel {
		a.outOfLevels = true
	}
	if level >= maxLevel || len(a.subs)+len(newSubs) > a.lim.Subtables-1 ||
		a.nflows+len(main)+len(frag) > a.lim.Flows-1 || len(a.out)+len(parts) > a.lim.Rules-1 {
		return fmt.Sprintf("not offloaded: xdpflow's table is full here (%d subtables, %d flows, %d rules left), so this rule and every later one run in nft only",
			a.lim.Subtables, a.lim.Flows, a.lim.Rules)
	}
	// The catch-all's subtable and flow may be in place from a cramped
	// result before: then the room kept for it is free for rules.
	keepSub, keepFlow := 1, 1
	if in != nil && in.HasSubtable(rule.Key{}, false) {
		keepSub = 0
	}
	if in != nil && in.HasFlow(rule.Entry{}) {
		keepFlow = 0
	}
	if in != nil && (len(a.notInPlace)+len(notInPlace) > a.lim.NewSubtables-keepSub ||
		a.newFlows+newFlows > a.lim.NewFlows-keepFlow || a.newRules+newRules > a.lim.NewRules-1) {
		a.cramped = true
		return "not offloaded yet: xdpflow's table has no room for this rule next to the rules it replaces, so this rule and every later one run in nft only until those are out"
	}
	for key := range newSubs {
		a.subs[key] = true
	}
	for key := range notInPlace {
		a.notInPlace[key] = true
	}
	a.nflows += len(main) + len(frag)
	a.newFlows += newFlows
	a.newRules += newRules
	return ""
}

// part builds one installed rule: part n of the nft rule name.
func part(rs *Ruleset, name string, n, level int, ms []rule.Match, acts []rule.Action) *rule.Rule {
	r := &rule.Rule{
		Source: rule.SourceNFT, Dev: rs.Dev, Prio: uint16(level + 1), Protocol: rule.EthPAll,
		Match: ms[0], More: ms[1:], Actions: acts, Name: partName(name, n),
	}
	r.Keys = describe(&ms[0])
	if len(ms) > 1 {
		r.Keys = append(r.Keys, rule.KeyValue{Name: "entries", Value: uint64(len(ms))})
	}
	r.Digest = digest(ms, ruletext.FormatActions(acts))
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
