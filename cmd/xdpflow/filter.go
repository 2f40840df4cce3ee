package main

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// tcAutoPrio is the pref tc gives the first filter added without one.
const tcAutoPrio = 49152

func cmdFilter(g globals, args []string) error {
	c, err := flower.ParseCommand(args)
	if err != nil {
		if errors.Is(err, ruletext.ErrUnsupported) {
			return err
		}
		return usageError{err.Error()}
	}
	s, err := openDevice(g, c.Dev)
	if err != nil {
		return err
	}
	defer s.close()
	if c.Verb == "show" {
		return filterShow(g, s, c)
	}
	e, err := newFilterEdit(s)
	if err != nil {
		return err
	}
	err = e.do(c)
	return errors.Join(err, e.commit(err != nil))
}

// tcRules are the installed rules in tc's namespace of prefs and handles
// (filters added here or mirrored from TC), in lookup order.
func tcRules(t *maps.Table) []*maps.Installed {
	var out []*maps.Installed
	for _, in := range t.Rules() {
		if in.Rule.Source != rule.SourceNFT {
			out = append(out, in)
		}
	}
	return out
}

func monotonicCoarseNs() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

func filterShow(g globals, s *session, c *flower.Command) error {
	all, err := tcShown(s, g.stats)
	if err != nil {
		return err
	}
	var shown []flower.Shown
	for _, sh := range all {
		if c.PrioSet && sh.Rule.Prio != c.Prio {
			continue
		}
		if c.HandleSet && sh.Rule.Handle != c.Handle {
			continue
		}
		shown = append(shown, sh)
	}
	if g.json {
		out := make([]flower.JSONFilter, 0, len(shown))
		for i := range shown {
			out = append(out, shown[i].JSON(g.stats))
		}
		return g.encodeJSON(out)
	}
	for i := range shown {
		fmt.Print(shown[i].Text(g.stats))
	}
	return nil
}

// mirrorKey identifies a mirrored rule by its identity without the
// keepalive the daemon adds.
func mirrorKey(r *rule.Rule) rule.Identity {
	k := *r
	k.Keepalive = 0
	return k.Identity()
}

// tcShown lists the filters in tc's namespace of prefs on the device:
// those only XDP holds (added here with skip_sw, or on a kernel without
// cls_flower) and the kernel's ingress filters with what became of each
// in XDP, computed the way the daemon mirrors them.
func tcShown(s *session, withStats bool) ([]flower.Shown, error) {
	c := xdpCounters{t: s.table, now: monotonicCoarseNs(), on: withStats}
	out, mirrored, err := xdpOnlyShown(s.table, c)
	if err != nil {
		return nil, err
	}
	statuses, err := mirrorStatuses(s)
	if err != nil {
		return nil, err
	}
	seen := map[*maps.Installed]bool{}
	for _, st := range statuses {
		sh, err := kernelShown(st, mirrored, seen, c)
		if err != nil {
			return nil, err
		}
		out = append(out, sh)
	}
	out = append(out, unseenMirrored(mirrored, seen)...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Rule, out[j].Rule
		if a.Chain != b.Chain {
			return a.Chain < b.Chain
		}
		if a.Prio != b.Prio {
			return a.Prio < b.Prio
		}
		return a.Handle < b.Handle
	})
	return out, nil
}

// xdpCounters reads installed rules' XDP counters as of now; all zero
// unless on.
type xdpCounters struct {
	t   *maps.Table
	now uint64
	on  bool
}

func (c xdpCounters) of(id maps.RuleID) (flower.Stats, error) {
	var st flower.Stats
	if !c.on {
		return st, nil
	}
	pk, by, last, err := c.t.Stats(id)
	if err != nil {
		return st, err
	}
	st = flower.Stats{Packets: pk, Bytes: by}
	if last != 0 {
		st.Used = true
		if c.now > last {
			st.LastUsedMs = (c.now - last) / 1e6
		}
	}
	return st, nil
}

// xdpOnlyShown lists the rules only XDP holds, and returns the mirrored
// ones by mirrorKey.
func xdpOnlyShown(t *maps.Table, c xdpCounters) ([]flower.Shown, map[rule.Identity]*maps.Installed, error) {
	var out []flower.Shown
	// Mirrored rules without the daemon's keepalive, which the kernel's
	// filter does not carry.
	mirrored := map[rule.Identity]*maps.Installed{}
	for _, in := range tcRules(t) {
		if in.Rule.Source == rule.SourceTC {
			mirrored[mirrorKey(in.Rule)] = in
			continue
		}
		sh := flower.Shown{Rule: in.Rule, Offloaded: true}
		var err error
		if sh.Stats, err = c.of(in.ID); err != nil {
			return nil, nil, err
		}
		out = append(out, sh)
	}
	return out, mirrored, nil
}

// mirrorStatuses reads the device's ingress filters and what the daemon
// would do with them under the device's policy.
func mirrorStatuses(s *session) ([]flower.MirrorStatus, error) {
	filters, err := offload.KernelFilters(s.dev.Name, s.dev.Ifindex)
	if err != nil {
		return nil, err
	}
	// What the daemon would do with the device's policy; what it did is
	// what is installed, and that is what is shown.
	pol, err := s.dev.Policy()
	if err != nil {
		return nil, err
	}
	_, statuses := flower.Mirror(s.dev.Name, filters, offload.MirrorOptions(s.dev.Ifindex, offload.NewChecks(), pol))
	return statuses, nil
}

// kernelShown is one kernel filter as shown: what became of it in XDP,
// found among the mirrored rules (noting it in seen).
func kernelShown(st flower.MirrorStatus, mirrored map[rule.Identity]*maps.Installed, seen map[*maps.Installed]bool,
	c xdpCounters) (flower.Shown, error) {
	f := st.Filter
	sh := flower.Shown{Rule: f.Rule, Reason: st.Reason}
	if f.Rule == nil {
		// Only the readable part of the match is known; the punt's
		// handle is every punt's (flower.PuntHandle), not the filter's.
		r := *f.Punt
		r.Actions, r.Handle = nil, f.Handle
		sh.Rule = &r
	}
	if f.Chain == 0 {
		var asRule *maps.Installed
		if f.Rule != nil {
			asRule = mirrored[mirrorKey(f.Rule)]
		}
		asPunt := mirrored[mirrorKey(f.PuntRule())]
		switch {
		// A filter that ends in pass has a punt just like itself:
		// then what Mirror said decides.
		case asRule != nil && (st.Offloaded || asRule != asPunt):
			seen[asRule] = true
			sh.Rule, sh.Offloaded, sh.Reason = asRule.Rule, true, ""
			var err error
			if sh.Stats, err = c.of(asRule.ID); err != nil {
				return sh, err
			}
		case asPunt != nil:
			seen[asPunt] = true
			sh.Punted = true
			if sh.Reason == "" {
				sh.Reason = "left to TC by the daemon's options"
			}
		case st.Offloaded:
			sh.Reason = "not installed yet: is `xdpflow daemon` running?"
		default:
			sh.Reason += "; its punt is not installed yet: is `xdpflow daemon` running?"
		}
	}
	if c.on {
		sh.TC = &flower.Stats{Packets: f.Packets, Bytes: f.Bytes}
	}
	return sh, nil
}

// unseenMirrored lists the mirrored rules no kernel filter accounts for.
func unseenMirrored(mirrored map[rule.Identity]*maps.Installed, seen map[*maps.Installed]bool) []flower.Shown {
	var out []flower.Shown
	for _, in := range mirrored {
		switch {
		case seen[in]:
		case in.Rule.Handle == offload.UnreadableHandle:
			out = append(out, flower.Shown{Rule: in.Rule, Punted: true,
				Reason: "every packet goes on to TC: the daemon could not read TC's filters"})
		default:
			out = append(out, flower.Shown{Rule: in.Rule, Offloaded: true,
				Reason: "stale: TC no longer has it; the daemon removes it"})
		}
	}
	return out
}
