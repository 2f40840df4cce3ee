package nft

// Planning a change in place (incremental.go): what goes, what comes and
// where, and whether the table has room for it.

import (
	"slices"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// updater is one change in place, planned before anything is changed.
type updater struct {
	cp      *Compiler
	rs      *Ruleset
	lim     Limits
	fs      *fastState
	deleted map[*ruleInfo]bool
	keys    map[tableKey]int
	nflows  int
	nparts  int
	// What the change does.
	removedKeys []flatKey
	removedPrep []preparedKey
	removed     []*rule.Rule
	goneNames   []string
	addedFlat   map[flatKey]*flatOf
	addedPrep   map[preparedKey]*prepared
	added       []*rule.Rule
	claims      map[rule.Entry]*prepared
	wanted      map[rule.Entry]int  // flows added rules found held, by how many
	unwanted    map[rule.Entry]int  // flows removed rules had found held, by how many
	freed       map[rule.Entry]bool // flows removed rules held
	byName      map[string]*Status
	levels      map[*ruleInfo]int // of the rules added
	newFlows    int
	newRules    int
	newSubs     []tableKey
}

func (u *updater) flatKey(r *ruleInfo, chain string) flatKey {
	cpl := u.fs.chains[chain]
	return flatKey{r, cpl.last, cpl.policy, u.rs.setsGen, u.rs.Ifindex}
}

func (u *updater) prepKey(fr *flatRule) preparedKey {
	return preparedKey{src: fr.src, idx: fr.idx, setsGen: u.rs.setsGen, ifindex: u.rs.Ifindex}
}

// remove plans taking out rule r's parts.
func (u *updater) remove(r *ruleInfo) bool {
	chain := r.Table + "/" + r.Chain
	key := u.flatKey(r, chain)
	fo := u.cp.flat[key]
	if fo == nil || fo.unreachable != "" {
		return false
	}
	u.removedKeys = append(u.removedKeys, key)
	for i := range fo.flat {
		fr := &fo.flat[i]
		u.goneNames = append(u.goneNames, fr.name)
		if fr.skip != "" {
			continue
		}
		pk := u.prepKey(fr)
		p := u.cp.prepared[pk]
		if p == nil {
			continue // never prepared
		}
		if u.unwanted == nil {
			u.unwanted = map[rule.Entry]int{}
		}
		for _, flow := range p.wanting {
			u.unwanted[flow]++
		}
		for _, flow := range p.claimed {
			if u.fs.claims[flow] != p {
				continue
			}
			if u.fs.wanted[flow]-u.unwanted[flow]+u.wanted[flow] > 0 {
				return false // another rule would take its flow
			}
			if u.freed == nil {
				u.freed = map[rule.Entry]bool{}
			}
			u.freed[flow] = true
		}
		u.removedPrep = append(u.removedPrep, pk)
		if !p.built.placed {
			continue // it made no parts
		}
		u.removed = append(u.removed, p.built.parts...)
		for _, k := range p.built.keys {
			u.keys[k]--
		}
		u.nflows -= p.built.nflows
		u.nparts -= len(p.built.parts)
	}
	return true
}

// levelRange is the range of levels of rule r's placed parts (of the last
// result or of this change), if it has any that stay: a verdict map's
// parts are on several.
func (u *updater) levelRange(r *ruleInfo, chain string) (lo, hi int, ok bool) {
	if u.deleted[r] {
		return 0, 0, false
	}
	if l, ok := u.levels[r]; ok {
		return l, l, true
	}
	fo := u.cp.flat[u.flatKey(r, chain)]
	if fo == nil {
		return 0, 0, false
	}
	for i := range fo.flat {
		if p := u.cp.prepared[u.prepKey(&fo.flat[i])]; p != nil && p.built.placed {
			if !ok {
				lo, hi = p.built.level, p.built.level
			}
			lo, hi, ok = min(lo, p.built.level), max(hi, p.built.level), true
		}
	}
	return lo, hi, ok
}

// neighbours are the levels around position i of the chain: the highest
// of the placed rule before it and the lowest of the one after (-1 at the
// start of the device's rules, a whole compile's spacing past the last
// one at the end), or false when they are far or past a chain's end.
func (u *updater) neighbours(chain string, i int) (prev, next int, ok bool) {
	const far = 64
	cpl := u.fs.chains[chain]
	rules := u.rs.chains[chain].Rules
	prev, next = -2, -2
	for j := i - 1; j >= 0 && j >= i-far; j-- {
		if _, hi, ok := u.levelRange(rules[j], chain); ok {
			prev = hi
			break
		}
	}
	if prev == -2 && i-far <= 0 && cpl.first {
		prev = -1
	}
	for j := i + 1; j < len(rules) && j <= i+far; j++ {
		if lo, _, ok := u.levelRange(rules[j], chain); ok {
			next = lo
			break
		}
	}
	if next == -2 && i+far >= len(rules)-1 && cpl.last && cpl.policy != nfDrop && prev != -2 {
		next = min(prev+2*u.fs.spacing, maxLevel)
	}
	return prev, next, prev != -2 && next != -2
}

// place plans placing rule r, at position i of its chain.
func (u *updater) place(r *ruleInfo, chain string, i int) bool {
	cpl, c := u.fs.chains[chain], u.rs.chains[chain]
	e := &env{dev: u.rs.Dev, ifindex: u.rs.Ifindex, sets: u.rs.sets[c.Table]}
	used := map[flatKey]*flatOf{}
	f := &flattener{rs: u.rs, env: e, base: c, lastBase: cpl.last, used: used}
	fo := f.rule(c, r, nil, 0)
	key := u.flatKey(r, chain)
	if used[key] == nil || fo.unreachable != "" {
		return false // not the rule's own, or it takes every packet
	}
	if t := u.fs.takesAll[chain]; t != nil {
		if j := slices.Index(c.Rules, t); j >= 0 && j < i {
			return false // after a rule that takes every packet: never reached
		}
	}
	withParts := 0
	for k := range fo.flat {
		if fo.flat[k].skip == "" {
			withParts++
		}
	}
	if withParts > 1 {
		return false
	}
	if u.addedFlat == nil {
		u.addedFlat, u.addedPrep, u.claims = map[flatKey]*flatOf{}, map[preparedKey]*prepared{}, map[rule.Entry]*prepared{}
		u.wanted = map[rule.Entry]int{}
	}
	u.addedFlat[key] = fo
	for k := range fo.flat {
		if !u.placeFlat(r, &fo.flat[k], chain, i) {
			return false
		}
	}
	return true
}

// placeFlat places flat rule fr of nft rule r, the chain's i'th, between
// its neighbours' levels; false if it cannot be placed in place.
func (u *updater) placeFlat(r *ruleInfo, fr *flatRule, chain string, i int) bool {
	st := u.byName[fr.name] // one per nft rule, as the assembler's
	if st == nil {
		st = &Status{Name: fr.name, Offloaded: true}
		u.byName[fr.name] = st
	}
	if fr.skip != "" {
		notOffloaded(st, fr.skip)
		return true
	}
	p := prepare(fr)
	p.claimed, p.wanting = nil, nil
	main, frag := p.main, p.frag
	pass, reason := fr.pass, fr.reason
	if len(p.dropped) > 0 {
		pass, reason = true, "punted (its match goes to the kernel): "+strings.Join(p.dropped, ", ")
	}
	if len(main) == 0 && len(frag) == 0 {
		notOffloaded(st, "matches no packet xdpflow keys")
		return true
	}
	prev, next, ok := u.neighbours(chain, i)
	if !ok || next-prev < 2 {
		return false
	}
	level := prev + (next-prev)/2
	if frag, ok = fragPunts(p.frag, u.claim(p, level)); !ok {
		return false
	}
	if p.ranged {
		if main, ok = chooseFlows(p.main, p.origMain, u.claim(p, level)); !ok {
			return false
		}
	}
	acts := noteVerdict(st, fr, pass)
	a := &assembler{rs: u.rs, parts: map[string]int{}}
	b := &p.built
	b.parts, b.level, b.n, b.acts = a.build(fr, p, level, main, frag, acts), level, 0, acts
	b.from = [2][]rule.Match{main, frag}
	b.placed, b.inPlace = true, false
	b.keys, b.nflows = nil, len(main)+len(frag)
	for _, ms := range [][]rule.Match{main, frag} {
		for m := range ms {
			if tk := tableKeyOf(&ms[m]); !slices.Contains(b.keys, tk) {
				b.keys = append(b.keys, tk)
			}
		}
	}
	if !u.reserve(p, main, frag) {
		return false
	}
	st.Parts = b.parts[:min(len(main), 1)]
	st.Companions = b.parts[min(len(main), 1):]
	if pass {
		notOffloaded(st, reason)
	}
	u.levels[r] = level
	u.addedPrep[u.prepKey(fr)] = p
	u.added = append(u.added, b.parts...)
	return true
}

// claim is the assembler's, against the flows rules hold: a flow another
// rule holds before level is held before; one a rule holds after it
// cannot be taken in place.
func (u *updater) claim(p *prepared, level int) func(flow rule.Entry) claimed {
	return func(flow rule.Entry) claimed {
		holder := u.claims[flow]
		if holder == nil && !u.freed[flow] {
			holder = u.fs.claims[flow]
		}
		switch {
		case holder == nil:
			u.claims[flow] = p
			p.claimed = append(p.claimed, flow)
			return claimTaken
		case holder.built.level > level:
			return claimHeldAfter
		}
		u.wanted[flow]++
		p.wanting = append(p.wanting, flow)
		return claimHeldBefore
	}
}

// reserve counts what prepared rule p's new parts take; false if the
// table has no room for them next to what is in place.
func (u *updater) reserve(p *prepared, main, frag []rule.Match) bool {
	in := u.lim.InPlace
	for _, k := range p.built.keys {
		if u.keys[k] == 0 && in != nil && !in.HasSubtable(k.mask, k.ranged) && !slices.Contains(u.newSubs, k) {
			u.newSubs = append(u.newSubs, k)
		}
		u.keys[k]++
	}
	u.nflows += len(main) + len(frag)
	u.nparts += len(p.built.parts)
	if in != nil {
		for _, ms := range [][]rule.Match{main, frag} {
			for k := range ms {
				m := &ms[k]
				if !in.HasFlow(m.Entry()) {
					u.newFlows++
				}
			}
		}
		for _, r := range p.built.parts {
			if !in.HasRule(r.Identity()) {
				u.newRules++
			}
		}
	}
	return true
}

// fits says whether the changed result is within the limits, keeping the
// room a whole compile keeps for the catch-all punt.
func (u *updater) fits() bool {
	subs := 0
	for k, n := range u.keys {
		if n > 0 && (k.ranged || !u.lim.SharedMasks[k.mask]) {
			subs++
		}
	}
	if subs > u.lim.Subtables-1 || u.nflows > u.lim.Flows-1 || u.nparts > u.lim.Rules-1 {
		return false
	}
	if u.lim.InPlace != nil && (len(u.newSubs) > u.lim.NewSubtables-1 || u.newFlows > u.lim.NewFlows-1 ||
		u.newRules > u.lim.NewRules-1) {
		return false
	}
	return true
}
