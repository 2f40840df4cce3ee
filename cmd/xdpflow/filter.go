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

// mirrorKey identifies a mirrored rule by its text without the keepalive
// the daemon adds.
func mirrorKey(r *rule.Rule) string {
	if r.Keepalive == 0 {
		return r.Text
	}
	k := *r
	k.Keepalive = 0
	return ruletext.Format(&k)
}

// tcShown lists the filters in tc's namespace of prefs on the device:
// those only XDP holds (added here with skip_sw, or on a kernel without
// cls_flower) and the kernel's ingress filters with what became of each
// in XDP, computed the way the daemon mirrors them.
func tcShown(s *session, withStats bool) ([]flower.Shown, error) {
	now := monotonicCoarseNs()
	xdpStats := func(id maps.RuleID) (flower.Stats, error) {
		var st flower.Stats
		if !withStats {
			return st, nil
		}
		pk, by, last, err := s.table.Stats(id)
		if err != nil {
			return st, err
		}
		st = flower.Stats{Packets: pk, Bytes: by}
		if last != 0 {
			st.Used = true
			if now > last {
				st.LastUsedMs = (now - last) / 1e6
			}
		}
		return st, nil
	}
	var out []flower.Shown
	// Mirrored rules by their text without the daemon's keepalive, which
	// the kernel's filter does not carry.
	mirrored := map[string]*maps.Installed{}
	for _, in := range tcRules(s.table) {
		if in.Rule.Source == rule.SourceTC {
			mirrored[mirrorKey(in.Rule)] = in
			continue
		}
		sh := flower.Shown{Rule: in.Rule, Offloaded: true}
		var err error
		if sh.Stats, err = xdpStats(in.ID); err != nil {
			return nil, err
		}
		out = append(out, sh)
	}
	rd, err := flower.NewReader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	filters, err := rd.Filters(s.dev.Name, s.dev.Ifindex)
	if err != nil {
		return nil, err
	}
	// What the daemon would do with the device's policy; what it did is
	// what is installed, and that is what is shown.
	pol, err := s.dev.Policy()
	if err != nil {
		return nil, err
	}
	_, statuses := flower.Mirror(s.dev.Name, filters, flower.MirrorOptions{SkipHW: pol.MirrorSkipHW,
		CheckRedirect: offload.ForwardChecker(s.dev.Ifindex), Blocked: offload.CheckDevice(s.dev.Ifindex)})
	seen := map[*maps.Installed]bool{}
	for _, st := range statuses {
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
				if sh.Stats, err = xdpStats(asRule.ID); err != nil {
					return nil, err
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
		if withStats {
			sh.TC = &flower.Stats{Packets: f.Packets, Bytes: f.Bytes}
		}
		out = append(out, sh)
	}
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
