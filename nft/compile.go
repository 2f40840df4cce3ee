package nft

import (
	"fmt"
	"net"

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
// no InPlace, the way there is not bounded. Prios are the installed nft
// parts' priorities by name: a part keeps its level where nft's order
// allows, so a change does not move the rules around it.
type Limits struct {
	Subtables, Flows, Rules          int
	SharedMasks                      map[rule.Key]bool
	Prios                            map[string]uint16
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
	return Limits{Subtables: room.Subtables, Flows: room.Flows, Rules: room.Rules, SharedMasks: room.Masks, Prios: room.Prios,
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
}

// Compile turns the ruleset into rules for the device's table, in lookup
// order, and a status per nft rule.
func Compile(rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	var flat []flatRule
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
		f := &flattener{rs: rs, env: e, base: c, lastBase: last}
		flat = append(flat, f.chain(c, nil, 0)...)
		if c.Policy == nfDrop {
			flat = append(flat, flatRule{name: chainName(c) + "/policy", verdict: verdict{kind: vDrop}})
		}
	}
	return assemble(flat, rs, lim)
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
