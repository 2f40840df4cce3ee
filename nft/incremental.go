package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// Changing a result in place. A whole compile walks every rule; a change
// of a few rules among thousands (the daemon's common case) is applied to
// the last result instead, when the Reader's edits say which rules came
// and went and the result allows it: every rule of it fitted, each is the
// base chain rule's own (no jumps, no forward checks), and each added rule
// finds a level between its neighbours'. Anything else compiles whole. The
// result is the one a whole compile gives, since a whole compile keeps the
// levels of installed parts too; TestNftFollowsRuleChanges checks it.

// fastState is what changing the last result in place needs.
type fastState struct {
	epoch   uint64 // the Reader's edits epoch, and how many of its edits are in
	nEdits  int
	context string // what else the result depends on (contextOf)
	chains  map[string]chainPlace
	keys    map[tableKey]int // subtables, by the placed parts using them
	nflows  int
	nparts  int
	claims  map[rule.Entry]*prepared // flows whose port ranges a rule holds
	byName  map[string]*Status
	limits  Limits
}

// chainPlace is a base chain's place among the device's base chains.
type chainPlace struct {
	policy      uint32
	first, last bool
}

// delta is a result changed in place: what it adds and removes.
type delta struct {
	add, removed []*rule.Rule
	prepared     []*prepared // of the parts added
}

// contextOf is what a result depends on besides the rules: the base
// chains in order, with their policies, the sets and the device.
func contextOf(rs *Ruleset) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d %d %v|", rs.setsGen, rs.Ifindex, rs.Blocked)
	for _, c := range rs.Base {
		tag, _ := rs.puntFrom(c)
		fmt.Fprintf(&sb, "%s/%s %d %d %s|", c.Table, c.Name, c.Priority, c.Policy, tag)
	}
	return sb.String()
}

// newFastState is what a whole compile leaves for changes in place, or nil
// where its result cannot be changed in place.
func newFastState(a *assembler, rs *Ruleset) *fastState {
	if a.overflow != "" || a.outOfLevels {
		return nil
	}
	fs := &fastState{epoch: rs.editsEpoch, nEdits: len(rs.edits), context: contextOf(rs),
		chains: map[string]chainPlace{}, keys: map[tableKey]int{}, claims: map[rule.Entry]*prepared{},
		byName: a.byName, limits: a.lim, nparts: len(a.out)}
	for i, c := range rs.Base {
		fs.chains[c.Table+"/"+c.Name] = chainPlace{policy: c.Policy, first: i == 0, last: i == len(rs.Base)-1}
	}
	for i := range a.flat {
		fr := &a.flat[i]
		if a.partsOf(i) == 0 {
			continue
		}
		if fr.src == nil && !strings.HasSuffix(fr.name, "/policy") || fr.verdict.kind == vFwd {
			// A jump's, or a punt of chains: not the rule's own; or a fwd,
			// whose forward check can change without it.
			return nil
		}
		p := a.prepare(i)
		for _, k := range p.built.keys {
			fs.keys[k]++
		}
		fs.nflows += p.built.nflows
	}
	for flow, p := range a.ranged {
		fs.claims[flow] = p
	}
	return fs
}

// update changes the last result in place for the edits rs has beyond
// it, and says whether it could.
func (cp *Compiler) update(rs *Ruleset, lim Limits) bool {
	fs := cp.fast
	if fs == nil || cp.installed == nil || cp.delta != nil || rs.editsEpoch != fs.epoch ||
		len(rs.edits) < fs.nEdits || !sameLimits(lim, fs.limits) || contextOf(rs) != fs.context {
		return false
	}
	edits := rs.edits[fs.nEdits:]
	added, deleted := map[*ruleInfo]bool{}, map[*ruleInfo]bool{}
	for _, e := range edits {
		if _, ok := fs.chains[e.chain]; !ok {
			continue // a chain the device's hook does not run
		}
		switch {
		case e.added:
			added[e.rule] = true
		case added[e.rule]:
			delete(added, e.rule)
		default:
			deleted[e.rule] = true
		}
	}
	if len(added)+len(deleted) > 64 {
		return false
	}
	u := &updater{cp: cp, rs: rs, lim: lim, fs: fs, deleted: deleted, keys: cloneCounts(fs.keys),
		byName: map[string]*Status{}, nflows: fs.nflows, nparts: fs.nparts, levels: map[*ruleInfo]int{}}
	for r := range deleted {
		if !u.remove(r) {
			return false
		}
	}
	// Added rules in chain order, each placed against the ones before.
	type at struct {
		r     *ruleInfo
		chain string
		i     int
	}
	var adds []at
	for _, e := range edits {
		if added[e.rule] {
			i := slices.Index(rs.chains[e.chain].Rules, e.rule)
			if i < 0 {
				return false
			}
			adds = append(adds, at{e.rule, e.chain, i})
			delete(added, e.rule)
		}
	}
	slices.SortFunc(adds, func(x, y at) int {
		if x.chain != y.chain {
			return strings.Compare(x.chain, y.chain)
		}
		return x.i - y.i
	})
	for _, a := range adds {
		if !u.place(a.r, a.chain, a.i) {
			return false
		}
	}
	if !u.fits() {
		return false
	}
	u.commit()
	fs.nEdits = len(rs.edits)
	return true
}

func cloneCounts(m map[tableKey]int) map[tableKey]int {
	out := make(map[tableKey]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sameLimits says whether two compiles' limits are the same budget.
func sameLimits(a, b Limits) bool {
	if a.Subtables != b.Subtables || a.Flows != b.Flows || a.Rules != b.Rules || len(a.SharedMasks) != len(b.SharedMasks) {
		return false
	}
	for m := range a.SharedMasks {
		if !b.SharedMasks[m] {
			return false
		}
	}
	return true
}

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
	return preparedKey{fr.src, fr.idx, u.rs.setsGen, u.rs.Ifindex}
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
			continue // it made no parts
		}
		for _, claimer := range u.fs.claims {
			if claimer == p {
				return false // a later rule would take its ranges
			}
		}
		if !p.built.placed {
			continue
		}
		u.removedPrep = append(u.removedPrep, pk)
		u.removed = append(u.removed, p.built.parts...)
		for _, k := range p.built.keys {
			u.keys[k]--
		}
		u.nflows -= p.built.nflows
		u.nparts -= len(p.built.parts)
	}
	return true
}

// levelOf is the level of rule r's last placed part (of the last result
// or of this change), if it has one that stays.
func (u *updater) levelOf(r *ruleInfo, chain string) (int, bool) {
	if u.deleted[r] {
		return 0, false
	}
	if l, ok := u.levels[r]; ok {
		return l, true
	}
	fo := u.cp.flat[u.flatKey(r, chain)]
	if fo == nil {
		return 0, false
	}
	level, ok := 0, false
	for i := range fo.flat {
		if p := u.cp.prepared[u.prepKey(&fo.flat[i])]; p != nil && p.built.placed {
			level, ok = max(level, p.built.level), true
		}
	}
	return level, ok
}

// neighbours are the levels of the placed rules around position i of the
// chain (-1 and maxLevel at the ends of the device's rules), or false
// when they are far or past a chain's end.
func (u *updater) neighbours(chain string, i int) (prev, next int, ok bool) {
	const far = 64
	cpl := u.fs.chains[chain]
	rules := u.rs.chains[chain].Rules
	prev, next = -2, -2
	for j := i - 1; j >= 0 && j >= i-far; j-- {
		if l, ok := u.levelOf(rules[j], chain); ok {
			prev = l
			break
		}
	}
	if prev == -2 && i-far <= 0 && cpl.first {
		prev = -1
	}
	for j := i + 1; j < len(rules) && j <= i+far; j++ {
		if l, ok := u.levelOf(rules[j], chain); ok {
			next = l
			break
		}
	}
	if next == -2 && i+far >= len(rules)-1 && cpl.last && cpl.policy != nfDrop {
		next = maxLevel
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
	}
	u.addedFlat[key] = fo
	for k := range fo.flat {
		fr := &fo.flat[k]
		st := &Status{Name: fr.name, Offloaded: true}
		u.byName[fr.name] = st
		if fr.skip != "" {
			notOffloaded(st, fr.skip)
			continue
		}
		p := prepare(fr)
		main, frag := p.main, p.frag
		pass, reason := fr.pass, fr.reason
		if len(p.dropped) > 0 {
			pass, reason = true, "punted (its match goes to the kernel): "+strings.Join(p.dropped, ", ")
		}
		if len(main) == 0 && len(frag) == 0 {
			notOffloaded(st, "matches no packet xdpflow keys")
			continue
		}
		prev, next, ok := u.neighbours(chain, i)
		if !ok || next-prev < 2 {
			return false
		}
		level := prev + (next-prev)/2
		if p.ranged {
			if main, ok = u.rangesOrBlocks(p, level); !ok {
				return false
			}
		}
		acts := noteVerdict(st, fr, pass)
		a := &assembler{rs: u.rs, parts: map[string]int{}}
		b := &p.built
		b.parts, b.level, b.n, b.acts = a.build(fr, p, level, main, frag, acts), level, 0, acts
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
	}
	return true
}

// rangesOrBlocks is the assembler's, against the ranges rules hold: a
// range another rule holds before level becomes prefix blocks; one a rule
// holds after it cannot be taken in place.
func (u *updater) rangesOrBlocks(p *prepared, level int) ([]rule.Match, bool) {
	out := p.main[:0:0]
	for _, m := range p.main {
		e := rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange}
		if !e.Ranged() {
			out = append(out, m)
			continue
		}
		flow := rule.Entry{Key: e.Key, Mask: e.Mask}
		holder := u.claims[flow]
		if holder == nil {
			holder = u.fs.claims[flow]
		}
		switch {
		case holder == nil:
			u.claims[flow] = p
			out = append(out, m)
		case holder.built.level > level:
			return nil, false
		default:
			for _, b := range e.Blocks() {
				out = append(out, rule.Match{Key: b.Key, Mask: b.Mask})
			}
		}
	}
	return out, true
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
				if !in.HasFlow(rule.Entry{Key: rule.MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange}) {
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

// commit makes the planned change the compiler's last result.
func (u *updater) commit() {
	cp, fs := u.cp, u.fs
	for _, k := range u.removedKeys {
		delete(cp.flat, k)
	}
	for _, k := range u.removedPrep {
		delete(cp.prepared, k)
	}
	for _, name := range u.goneNames {
		if st := fs.byName[name]; st != nil {
			cp.counts.rules--
			if st.Offloaded {
				cp.counts.offloaded--
			}
			delete(fs.byName, name)
		}
	}
	for k, fo := range u.addedFlat {
		cp.flat[k] = fo
	}
	d := &delta{add: u.added, removed: u.removed}
	for k, p := range u.addedPrep {
		cp.prepared[k] = p
		d.prepared = append(d.prepared, p)
	}
	for name, st := range u.byName {
		fs.byName[name] = st
		cp.counts.rules++
		if st.Offloaded {
			cp.counts.offloaded++
		}
	}
	for flow, p := range u.claims {
		fs.claims[flow] = p
	}
	fs.keys, fs.nflows, fs.nparts = u.keys, u.nflows, u.nparts
	for k, n := range fs.keys {
		if n == 0 {
			delete(fs.keys, k)
		}
	}
	cp.delta, cp.out = d, nil
}
