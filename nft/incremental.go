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
	claims  map[rule.Entry]*prepared // ranged flows, by the rule holding each
	wanted  map[rule.Entry]int       // by flow, the rules that found it held and chose past it
	// takesAll: by chain, the last rule that takes every packet.
	takesAll map[string]*ruleInfo
	byName   map[string]*Status
	limits   Limits
	spacing  int // a whole compile's, between the last rule and one appended
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
		chains: map[string]chainPlace{}, keys: map[tableKey]int{}, claims: map[rule.Entry]*prepared{}, wanted: a.wanted,
		byName: a.byName, limits: a.lim, nparts: len(a.out), spacing: a.spacing}
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
	for flow := range u.freed {
		delete(fs.claims, flow)
	}
	for flow, p := range u.claims {
		fs.claims[flow] = p
	}
	for flow, n := range u.unwanted {
		if fs.wanted[flow] -= n; fs.wanted[flow] <= 0 {
			delete(fs.wanted, flow)
		}
	}
	for flow, n := range u.wanted {
		fs.wanted[flow] += n
	}
	fs.keys, fs.nflows, fs.nparts = u.keys, u.nflows, u.nparts
	for k, n := range fs.keys {
		if n == 0 {
			delete(fs.keys, k)
		}
	}
	cp.delta, cp.out = d, nil
}
