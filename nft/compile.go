package nft

import (
	"fmt"
	"net"
	"strings"

	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// Status is what became of one nft rule (or a base chain's policy).
type Status struct {
	Name      string // family/table/chain/handle, or .../policy
	Offloaded bool
	Reason    string
	Verdict   string
	FwdTo     []int        // the ifindexes its fwd sends to, offloaded or not
	Parts     []*rule.Rule // installed parts that carry the rule's own verdict (a punt's is pass)
	// Companions are pass parts that keep a rule exact without being its
	// action: its fragments, which nft matches on transport bytes and the
	// key cannot. Their packets are nft's to count.
	Companions []*rule.Rule
	// Cramped: not offloaded only for want of room next to the rules the
	// result replaces; a compile once those are out places more.
	Cramped bool
}

// Limits bound what the compile may use: the room the device's table has
// for nft rules (maps.Room). A subtable is a mask, whatever the levels of
// its rules; those of SharedMasks exist for other rules already and cost
// nothing.
//
// The result is written next to what it replaces before that goes, so
// what it needs that is not InPlace must also fit in the New counts. With
// no InPlace, the way there is not bounded. Level is an installed nft
// part's level by name: a part keeps its level where nft's order allows,
// so a change does not move the rules around it. With no Level the rules
// are placed afresh.
type Limits struct {
	Subtables, Flows, Rules          int
	SharedMasks                      map[rule.Key]bool
	Level                            func(name string) (uint32, bool)
	NewSubtables, NewFlows, NewRules int
	InPlace                          InPlace
}

// InPlace says what a device's table holds already (maps.Room).
type InPlace interface {
	HasSubtable(mask rule.Key, ranged bool) bool
	HasFlow(e rule.Entry) bool
	HasRule(id rule.Identity) bool
}

// LimitsOf is the compile's limits in room.
func LimitsOf(room maps.Room) Limits {
	var levels map[string]uint32 // read from the table on first use
	level := func(name string) (uint32, bool) {
		if levels == nil {
			levels = room.Levels()
		}
		l, ok := levels[name]
		return l, ok
	}
	return Limits{Subtables: room.Subtables, Flows: room.Flows, Rules: room.Rules, SharedMasks: room.Masks, Level: level,
		NewSubtables: room.NewSubtables, NewFlows: room.NewFlows, NewRules: room.NewRules, InPlace: room}
}

// flatRule is one rule after jumps are flattened: a conjunction of
// predicates and what to do.
type flatRule struct {
	name    string
	preds   []pred
	verdict verdict
	pass    bool   // punt: hand the packet to the kernel
	reason  string // why not offloaded (punts, notes)
	skip    string // not installed at all, and why
	// src and idx: the base chain rule whose own match this is (none for
	// what a jump brought in), and which of its flat rules.
	src *ruleInfo
	idx int
}

// Compile turns the ruleset into rules for the device's table, in lookup
// order, and a status per nft rule.
func Compile(rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	return new(Compiler).Compile(rs, lim)
}

// A Compiler compiles one device's rulesets, one after another, keeping
// what each base chain rule's match expands to while the rule (as the
// Reader keeps it) and the sets stay the same: a change to a few rules
// expands only those.
//
// Told that a result is installed (Installed), it knows which parts are
// in place, checks only the others against the table, and gives the next
// result as a difference (Delta). Where the Reader's edits since then say
// what changed and the result allows, the next result is that result
// changed in place (incremental.go), at the cost of the edits.
type Compiler struct {
	flat      map[flatKey]*flatOf
	prepared  map[preparedKey]*prepared
	out       []*rule.Rule        // the last result, if made whole
	installed map[*rule.Rule]bool // the parts last installed
	fast      *fastState          // what changing the last result in place needs; nil: it cannot be
	delta     *delta              // the last result as a change, if made in place
	counts    struct{ rules, offloaded int }
	compiles  struct{ whole, inPlace int } // since TakeCompiles
}

// TakeCompiles says how many results the compiler made whole and how many
// it changed in place since it was last asked.
func (cp *Compiler) TakeCompiles() (whole, inPlace int) {
	whole, inPlace = cp.compiles.whole, cp.compiles.inPlace
	cp.compiles.whole, cp.compiles.inPlace = 0, 0
	return whole, inPlace
}

type preparedKey struct {
	src     *ruleInfo
	idx     int
	policy  string // a chain's drop policy, which has no src
	setsGen uint64
	ifindex int
}

// Compile is Compile, with what the compiler kept. A result changed in
// place comes as nil parts and statuses: Delta and Counts tell it.
func (cp *Compiler) Compile(rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	if cp.update(rs, lim) {
		cp.compiles.inPlace++
		return nil, nil
	}
	cp.compiles.whole++
	cp.delta, cp.fast = nil, nil
	var flat []flatRule
	used := make(map[flatKey]*flatOf, len(cp.flat))
	unkept := false
	takesAll := map[string]*ruleInfo{}
	for i, c := range rs.Base {
		if tag, reason := rs.puntFrom(c); reason != "" {
			// From here on every packet goes to the kernel, which runs
			// these chains and what xdpflow cannot see in hook order.
			flat = append(flat, flatRule{name: chainName(c) + "/" + tag, pass: true, reason: reason})
			for _, later := range rs.Base[i:] {
				for _, r := range later.Rules {
					flat = append(flat, flatRule{name: fmt.Sprintf("%s/%d", chainName(later), r.Handle), skip: reason})
				}
			}
			break
		}
		e := &env{dev: rs.Dev, ifindex: rs.Ifindex, sets: rs.sets[c.Table]}
		last := i == len(rs.Base)-1
		f := &flattener{rs: rs, env: e, base: c, lastBase: last, kept: cp.flat, used: used}
		flat = append(flat, f.chain(c, nil, 0)...)
		unkept = unkept || f.unkept
		if f.takesAll != nil {
			takesAll[c.Table+"/"+c.Name] = f.takesAll
		}
		if c.Policy == nfDrop {
			flat = append(flat, flatRule{name: chainName(c) + "/policy", verdict: verdict{kind: vDrop}})
		}
	}
	cp.flat = used
	kept := cp.prepared
	cp.prepared = make(map[preparedKey]*prepared, len(kept))
	prep := func(fr *flatRule) *prepared {
		key := preparedKey{src: fr.src, idx: fr.idx, setsGen: rs.setsGen, ifindex: rs.Ifindex}
		if fr.src == nil {
			if !strings.HasSuffix(fr.name, "/policy") {
				return prepare(fr)
			}
			key.policy = fr.name
		}
		p := kept[key]
		if p == nil {
			p = prepare(fr)
		}
		p.built.placed = false // until this compile places it
		cp.prepared[key] = p
		return p
	}
	a := assemble(flat, rs, lim, prep, cp.installed != nil)
	cp.out = a.out
	cp.counts.rules, cp.counts.offloaded = len(a.statuses), 0
	for _, st := range a.statuses {
		if st.Offloaded {
			cp.counts.offloaded++
		}
	}
	if !unkept {
		cp.fast = newFastState(a, rs)
		if cp.fast != nil {
			cp.fast.takesAll = takesAll
		}
	}
	return a.out, a.statuses
}

// Counts is the number of nft rules (and chain policies) of the last
// result, and of those in XDP.
func (cp *Compiler) Counts() (rules, offloaded int) { return cp.counts.rules, cp.counts.offloaded }

// Installed tells the compiler that its last result is the table's nft
// parts now.
func (cp *Compiler) Installed() {
	if d := cp.delta; d != nil && cp.installed != nil {
		for _, p := range d.prepared {
			p.built.inPlace = true
		}
		for _, r := range d.add {
			cp.installed[r] = true
		}
		for _, r := range d.removed {
			delete(cp.installed, r)
		}
		cp.delta = nil
		return
	}
	for _, p := range cp.prepared {
		p.built.inPlace = p.built.placed
	}
	cp.installed = make(map[*rule.Rule]bool, len(cp.out))
	for _, r := range cp.out {
		cp.installed[r] = true
	}
}

// Forget tells the compiler that the table's nft parts are no longer any
// result of its (a failed change took them out).
func (cp *Compiler) Forget() {
	for _, p := range cp.prepared {
		p.built.inPlace = false
	}
	cp.installed, cp.fast, cp.delta = nil, nil, nil
}

// Delta is the last result as a change to the result installed: the
// parts to add and the identities to remove (maps.Table.UpdateSource).
// ok is false when nothing of the compiler's is installed.
func (cp *Compiler) Delta() (add []*rule.Rule, remove []rule.Identity, ok bool) {
	if cp.installed == nil {
		return nil, nil, false
	}
	if d := cp.delta; d != nil {
		for _, r := range d.removed {
			remove = append(remove, r.Identity())
		}
		return d.add, remove, true
	}
	kept := make(map[*rule.Rule]bool, len(cp.out))
	for _, r := range cp.out {
		kept[r] = true
		if !cp.installed[r] {
			add = append(add, r)
		}
	}
	for r := range cp.installed {
		if !kept[r] {
			remove = append(remove, r.Identity())
		}
	}
	return add, remove, true
}

// puntFrom says why base chain c and those after it cannot run in XDP
// (and a tag for the punt's name), or "": the device is blocked, a chain
// of another table has c's priority (the kernel runs the one registered
// last first, and across tables handles do not tell which that is), or a
// hook xdpflow does not mirror runs before c.
func (rs *Ruleset) puntFrom(c *Chain) (tag, reason string) {
	if rs.Blocked != nil {
		return "blocked", "punted: " + rs.Blocked.Error()
	}
	if other := rs.tieAcrossTables(c); other != nil {
		return "order", fmt.Sprintf("punted: base chains %s/%s and %s/%s have priority %d, and the kernel's order between chains of different tables is not visible",
			c.Table, c.Name, other.Table, other.Name, c.Priority)
	}
	if in := rs.inetBefore(c); in != nil {
		return "inet", fmt.Sprintf("punted: %s (priority %d) runs before it, and xdpflow does not mirror it", in.foreign, in.Priority)
	}
	return "", ""
}

// tieAcrossTables is a base chain of another table with c's priority, or
// nil.
func (rs *Ruleset) tieAcrossTables(c *Chain) *Chain {
	for _, o := range rs.Base {
		if o.Priority == c.Priority && o.Table != c.Table {
			return o
		}
	}
	return nil
}

// inetBefore is an inet ingress chain that runs before the netdev base
// chain c (lower priority; at equal priority registration decides, which
// is not visible across families), or nil.
func (rs *Ruleset) inetBefore(c *Chain) *Chain {
	for _, in := range rs.inetIngress {
		if in.Priority <= c.Priority {
			return in
		}
	}
	return nil
}

func chainName(c *Chain) string { return fmt.Sprintf("netdev/%s/%s", c.Table, c.Name) }

// ifName names a device by its ifindex, or "ifN" when it has none.
func ifName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return fmt.Sprintf("if%d", ifindex)
}
