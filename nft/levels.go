package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// maxLevel keeps a part's Level (level+1) within 32 bits. Rules take the
// levels below it; the catch-all punt takes it.
const maxLevel = 1<<32 - 2

// maxSpacing is the room left between the levels of rules placed afresh
// (at most: maxLevel over twice the rules), which rules later added among
// them halve.
const maxSpacing = 1 << 16

// assemble places flat rules on levels, each above the rule before it:
// the level is nft's order, which the table's rank-ordered search keeps.
// Subtables are shared by mask whatever the levels, so levels cost
// nothing. A part installed before keeps its level while that is above
// the rule before it (Limits.Level), so a change moves only the rules it
// must; a new rule goes halfway to the next level kept, or a spacing above
// the last. When kept levels run out of room, the set is placed afresh.
// Rules that do not fit the limits, and every rule after them, stay in
// nft behind one catch-all punt.
//
// installed says the prepared rules' built parts that are in place are all
// the nft parts the table holds: their levels are the kept ones, and no
// other part is installed.
func assemble(flat []flatRule, rs *Ruleset, lim Limits, prep func(*flatRule) *prepared, installed bool) *assembler {
	a := newAssembler(flat, rs, lim, prep, installed)
	a.placeAll()
	if a.outOfLevels && (lim.Level != nil || installed) {
		lim.Level = nil
		a = newAssembler(flat, rs, lim, prep, false)
		a.placeAll()
	}
	return a
}

func newAssembler(flat []flatRule, rs *Ruleset, lim Limits, prep func(*flatRule) *prepared, installed bool) *assembler {
	a := &assembler{rs: rs, lim: lim, flat: flat, prep: prep, installed: installed, prepared: make([]*prepared, len(flat)),
		byName: map[string]*Status{}, parts: map[string]int{}, subs: map[tableKey]bool{},
		notInPlace: map[tableKey]bool{}, ranged: map[rule.Entry]*prepared{}, wanted: map[rule.Entry]int{}, top: -1,
		spacing: min(max(maxLevel/(2*len(flat)+2), 1), maxSpacing)}
	// The catch-all's subtable, flow and part may be in place from a
	// result before: then the room kept for each is free for rules.
	a.keep.subtables, a.keep.flows, a.keep.rules = 1, 1, 1
	if in := lim.InPlace; in != nil {
		if in.HasSubtable(rule.Key{}, false) {
			a.keep.subtables = 0
		}
		if in.HasFlow(rule.Entry{}) {
			a.keep.flows = 0
		}
		if in.HasRule(overflowPart(rs).Identity()) {
			a.keep.rules = 0
		}
	}
	return a
}

func (a *assembler) placeAll() {
	for i := range a.flat {
		a.place(i)
	}
}

// prepared is a flat rule's matches, before ranges or blocks are chosen,
// and what its parts' digests and keys were when last made.
type prepared struct {
	main, frag []rule.Match // merged where they can be (merge.go)
	// origMain: the main matches before merging, which chooseFlows
	// falls back to.
	origMain  []rule.Match
	dropped   []string
	made      map[string]madePart // by actions and which part
	tableKeys []tableKey          // of main and frag, once each
	ranged    bool                // a match has port ranges or merged prefixes
	claimed   []rule.Entry        // the ranged flows it took when last placed
	wanting   []rule.Entry        // and those it found held
	// The parts last built from it, for the level, part number and
	// actions they were built for; inPlace once installed (Compiler).
	built struct {
		parts    []*rule.Rule
		from     [2][]rule.Match // the main and frag matches they were built from
		level, n int
		acts     []rule.Action
		placed   bool // in the last result
		inPlace  bool
		keys     []tableKey // the subtables they take
		nflows   int
	}
}

type madePart struct {
	digest string
	keys   []rule.KeyValue
}

func prepare(fr *flatRule) *prepared {
	main, frag, dropped := entriesOf(fr)
	p := &prepared{origMain: coalescePorts(main), frag: widenFragPunt(frag), dropped: dropped}
	p.main = mergedAll(p.origMain)
	seen := map[tableKey]bool{}
	for _, ms := range [][]rule.Match{p.main, p.frag} {
		for k := range ms {
			tk := tableKeyOf(&ms[k])
			if !seen[tk] {
				seen[tk] = true
				p.tableKeys = append(p.tableKeys, tk)
			}
			p.ranged = p.ranged || tk.ranged
		}
	}
	return p
}

// prepare expands flat rule i, once.
func (a *assembler) prepare(i int) *prepared {
	if a.prepared[i] == nil {
		a.prepared[i] = a.prep(&a.flat[i])
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
	if a.installed {
		if a.partsOf(i) == 0 {
			return 0, false
		}
		b := &a.prepare(i).built
		return b.level, b.inPlace && b.n == n
	}
	if a.lim.Level == nil {
		return 0, false
	}
	level, ok := a.lim.Level(partName(a.flat[i].name, n))
	return int(level) - 1, ok
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
	if a.lim.Level == nil && !a.installed {
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
	rs        *Ruleset
	lim       Limits
	flat      []flatRule
	prep      func(*flatRule) *prepared
	prepared  []*prepared // by flat rule, once expanded
	installed bool        // see assemble
	spacing   int         // between the levels of new rules at the end
	// outOfLevels: a rule found no level below maxLevel.
	outOfLevels bool
	out         []*rule.Rule
	statuses    []*Status
	byName      map[string]*Status
	parts       map[string]int    // parts so far, by nft rule
	subs        map[tableKey]bool // subtables used
	// ranged: the flows of ranged matches placed, each the only one of
	// its key (a flow holds one range).
	ranged map[rule.Entry]*prepared // by flow, the prepared rule holding its range
	wanted map[rule.Entry]int       // by flow, the rules that found it held and chose past it
	nflows int
	// What the result needs that is not in place (Limits.InPlace).
	notInPlace         map[tableKey]bool
	newFlows, newRules int
	cramped            bool // the overflow is for want of room next to what is in place
	// keep: the room kept for the catch-all punt that is not in place.
	keep     struct{ subtables, flows, rules int }
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
	p.claimed, p.wanting = nil, nil
	main := p.main
	frag, _ := fragPunts(p.frag, a.claim(p))
	if p.ranged {
		main, _ = chooseFlows(p.main, p.origMain, a.claim(p))
	}
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
	b := &p.built
	reused := level == b.level && a.parts[fr.name] == b.n && sameSlice(main, b.from[0]) && sameSlice(frag, b.from[1]) &&
		actsEqual(acts, b.acts) && b.parts != nil
	if !reused {
		b.parts, b.level, b.n, b.acts, b.inPlace = a.build(fr, p, level, main, frag, acts), level, a.parts[fr.name], acts, false
		b.from = [2][]rule.Match{main, frag}
	}
	parts := b.parts
	if why := a.reserve(level, main, frag, p, reused && b.inPlace); why != "" {
		a.overflow = why
		st.Cramped = a.cramped
		notOffloaded(st, a.overflow)
		a.out = append(a.out, overflowPart(a.rs))
		return
	}
	b.placed = true
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

// build makes flat rule fr's parts at level: its main matches (ranges or
// blocks as chosen) with acts, and its fragments' punt.
func (a *assembler) build(fr *flatRule, p *prepared, level int, main, frag []rule.Match, acts []rule.Action) []*rule.Rule {
	var parts []*rule.Rule
	if p.made == nil {
		p.made = map[string]madePart{}
	}
	if len(main) > 0 {
		made := p.made
		if !sameSlice(main, p.main) {
			made = nil // prefix blocks of this compile's own
		}
		parts = append(parts, partMade(a.rs, fr.name, a.parts[fr.name], level, main, acts, made, "main "))
	}
	if len(frag) > 0 {
		made := p.made
		if !sameSlice(frag, p.frag) {
			made = nil
		}
		parts = append(parts, partMade(a.rs, fr.name, a.parts[fr.name]+len(parts), level, frag,
			[]rule.Action{{Kind: rule.ActPass}}, made, "frag "))
	}
	return parts
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

// reserve takes the subtables, flows and rules the entries and parts of p
// need at level, keeping one of each for the catch-all punt; when they do
// not fit it takes nothing and says why. inPlace: p's parts are installed
// as they are, so what they need is in place.
func (a *assembler) reserve(level int, main, frag []rule.Match, p *prepared, inPlace bool) string {
	in := a.lim.InPlace
	if inPlace {
		in = nil
	}
	var newSubs, notInPlace []tableKey
	newFlows, newRules := 0, 0
	keys := p.tableKeys
	if !sameSlice(main, p.main) || !sameSlice(frag, p.frag) {
		keys = nil // other choices of flows: their own keys
		for _, ms := range [][]rule.Match{main, frag} {
			for k := range ms {
				keys = append(keys, tableKeyOf(&ms[k]))
			}
		}
	}
	for _, tk := range keys {
		if !a.subs[tk] && (tk.ranged || !a.lim.SharedMasks[tk.mask]) && !slices.Contains(newSubs, tk) {
			newSubs = append(newSubs, tk)
		}
		if in != nil && !a.notInPlace[tk] && !in.HasSubtable(tk.mask, tk.ranged) && !slices.Contains(notInPlace, tk) {
			notInPlace = append(notInPlace, tk)
		}
	}
	if in != nil {
		for _, ms := range [][]rule.Match{main, frag} {
			for k := range ms {
				m := &ms[k]
				if !in.HasFlow(m.Entry()) {
					newFlows++
				}
			}
		}
		for _, part := range p.built.parts {
			if !in.HasRule(part.Identity()) {
				newRules++
			}
		}
	}
	parts := p.built.parts
	if level >= maxLevel {
		a.outOfLevels = true
	}
	if level >= maxLevel || len(a.subs)+len(newSubs) > a.lim.Subtables-1 ||
		a.nflows+len(main)+len(frag) > a.lim.Flows-1 || len(a.out)+len(parts) > a.lim.Rules-1 {
		return fmt.Sprintf("not offloaded: xdpflow's table is full here (%d subtables, %d flows, %d rules left), so this rule and every later one run in nft only",
			a.lim.Subtables, a.lim.Flows, a.lim.Rules)
	}
	if in != nil && (len(a.notInPlace)+len(notInPlace) > a.lim.NewSubtables-a.keep.subtables ||
		a.newFlows+newFlows > a.lim.NewFlows-a.keep.flows || a.newRules+newRules > a.lim.NewRules-a.keep.rules) {
		a.cramped = true
		return "not offloaded yet: xdpflow's table has no room for this rule next to the rules it replaces, so this rule and every later one run in nft only until those are out"
	}
	for _, key := range newSubs {
		a.subs[key] = true
	}
	for _, key := range notInPlace {
		a.notInPlace[key] = true
	}
	a.nflows += len(main) + len(frag)
	a.newFlows += newFlows
	a.newRules += newRules
	p.built.keys, p.built.nflows = keys, len(main)+len(frag)
	return ""
}

func tableKeyOf(m *rule.Match) tableKey {
	return tableKey{m.Mask, m.Ranged()}
}

// claim is prepared rule p's claim of flows in placing order: a flow
// taken by a rule placed before is held before.
func (a *assembler) claim(p *prepared) func(flow rule.Entry) claimed {
	return func(flow rule.Entry) claimed {
		if a.ranged[flow] != nil {
			a.wanted[flow]++
			p.wanting = append(p.wanting, flow)
			return claimHeldBefore
		}
		a.ranged[flow] = p
		p.claimed = append(p.claimed, flow)
		return claimTaken
	}
}
