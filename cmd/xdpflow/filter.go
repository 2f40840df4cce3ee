package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// tcAutoPrio is the pref tc gives the first filter added without one.
const tcAutoPrio = 49152

func cmdFilter(g globals, args []string) error {
	c, err := flower.ParseCommand(args)
	if err != nil {
		if errors.Is(err, flower.ErrUnsupported) {
			return err
		}
		return usageError{err.Error()}
	}
	s, err := openDevice(g, c.Dev)
	if err != nil {
		return err
	}
	defer s.close()
	switch c.Verb {
	case "add", "replace", "change":
		return filterAdd(s, c)
	case "del":
		return filterDel(s, c)
	}
	return filterShow(g, s, c)
}

func filterAdd(s *session, c *flower.Command) (rerr error) {
	r := c.Rule
	r.Source = rule.SourceCLI
	if r.Keepalive > 0 {
		// xdpflow gives it to what it mirrors; a user's would send packets
		// of an XDP-only rule to a kernel that holds no such filter.
		return errors.New("filter: keepalive is xdpflow's own flag for filters it mirrors from TC; it is not given by hand")
	}
	if err := resolveRedirects(r); err != nil {
		return err
	}
	kernel, err := kernelFilters(s)
	if err != nil {
		return err
	}
	installed := tcRules(s.table)
	if !c.PrioSet {
		// tc: one below the lowest pref in use, or 49152 on an empty block.
		r.Prio = tcAutoPrio
		lowest := 0
		for _, in := range installed {
			if lowest == 0 || int(in.Rule.Prio) < lowest {
				lowest = int(in.Rule.Prio)
			}
		}
		for _, f := range kernel {
			if lowest == 0 || int(f.Prio) < lowest {
				lowest = int(f.Prio)
			}
		}
		if lowest == 1 {
			return errors.New("filter: no pref below 1 is left: give \"pref\"")
		}
		if lowest > 0 {
			r.Prio = uint16(lowest - 1)
		}
	}
	if r.Prio == 0 {
		return errors.New("filter: pref 0 is not allowed (tc allocates prefs from 1)")
	}
	if !r.SkipSW {
		// In TC (skip_hw: only there; neither flag: there and, if it
		// can, in XDP), as tc itself would add it.
		done, err := filterAddTC(s, c, installed)
		if done || err != nil {
			return err
		}
		// Said once the filter is in.
		defer func() {
			if rerr == nil {
				fmt.Fprintf(os.Stderr, "xdpflow: note: this kernel has no cls_flower: the filter is in XDP only, as with skip_sw\n")
			}
		}()
	}
	// In XDP alone: the pref must not be TC's.
	for _, f := range kernel {
		if f.Prio == r.Prio {
			return fmt.Errorf("filter: pref %d holds filters in TC (%s %s); an XDP-only (skip_sw) filter needs a pref of its own",
				r.Prio, f.Kind, f.ID())
		}
	}
	var replaces maps.RuleID
	used := map[uint32]bool{}
	for _, in := range installed {
		if in.Rule.Prio != r.Prio {
			continue
		}
		if in.Rule.Source != rule.SourceCLI {
			return fmt.Errorf("filter: pref %d holds filters mirrored from TC; an XDP-only (skip_sw) filter needs a pref of its own", r.Prio)
		}
		if in.Rule.Protocol != r.Protocol {
			return fmt.Errorf("filter: pref %d holds protocol %s filters; protocol %s needs another pref",
				r.Prio, flower.EthTypeName(in.Rule.Protocol), flower.EthTypeName(r.Protocol))
		}
		used[in.Rule.Handle] = true
		if c.HandleSet && in.Rule.Handle == c.Handle {
			if c.Verb == "add" {
				return fmt.Errorf("filter: pref %d handle 0x%x exists (use replace)", r.Prio, c.Handle)
			}
			replaces = in.ID
		}
	}
	if c.HandleSet {
		r.Handle = c.Handle
	} else {
		// flower gives the lowest free handle from 1.
		for r.Handle = 1; used[r.Handle]; r.Handle++ {
		}
	}
	if c.Verb == "change" && replaces == 0 {
		return fmt.Errorf("filter change: no filter pref %d handle 0x%x", r.Prio, r.Handle)
	}
	// An XDP-only filter decides alone: not where XDP cannot see what TC
	// would (tags outside the frame), nor before a hook TC runs after.
	if err := checkDevice(s.dev.Ifindex); err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	for _, a := range r.Actions {
		// Refuse what the kernel would silently drop: no packet may be
		// lost because of offload.
		if a.Kind != rule.ActRedirect {
			continue
		}
		if err := loader.CheckXDPForward(s.dev.Ifindex, a.Ifindex); err != nil {
			return fmt.Errorf("action mirred: %w", err)
		}
	}
	r.Text = flower.Format(r)
	_, err = s.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r, Replaces: replaces}}})
	if err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
			return fmt.Errorf("filter: %w (%v)", maps.ErrTableFull, err)
		}
		return fmt.Errorf("filter: %w", err)
	}
	return nil
}

// resolveRedirects looks up the ifindex of each redirect's device.
func resolveRedirects(r *rule.Rule) error {
	for i := range r.Actions {
		a := &r.Actions[i]
		if a.Kind != rule.ActRedirect {
			continue
		}
		ifi, err := net.InterfaceByName(a.Dev)
		if err != nil {
			return fmt.Errorf("action mirred: no such device %q", a.Dev)
		}
		a.Ifindex = ifi.Index
	}
	return nil
}

func filterDel(s *session, c *flower.Command) error {
	inTC, err := filterDelTC(s, c)
	if err != nil {
		return err
	}
	var ids []maps.RuleID
	for _, in := range tcRules(s.table) {
		if in.Rule.Source != rule.SourceCLI {
			continue // mirrored: TC's, gone with the kernel's filter
		}
		if c.PrioSet && in.Rule.Prio != c.Prio {
			continue
		}
		if c.HandleSet && in.Rule.Handle != c.Handle {
			continue
		}
		if c.ProtocolSet && c.Protocol != rule.EthPAll && in.Rule.Protocol != c.Protocol {
			continue
		}
		ids = append(ids, in.ID)
	}
	if len(ids) == 0 {
		switch {
		case inTC:
			return nil
		case c.HandleSet:
			return fmt.Errorf("filter del: no filter pref %d handle 0x%x on %s", c.Prio, c.Handle, c.Dev)
		case c.PrioSet:
			return fmt.Errorf("filter del: no filter with pref %d on %s", c.Prio, c.Dev)
		}
		return nil // deleting all of none is fine, as in tc
	}
	if _, err := s.table.Apply(maps.Change{Delete: ids}); err != nil {
		return fmt.Errorf("filter del: %w", err)
	}
	return nil
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
	return flower.Format(&k)
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
	// What the daemon would do with its default options; what it did is
	// what is installed, and that is what is shown.
	_, statuses := flower.Mirror(s.dev.Name, filters, flower.MirrorOptions{CheckRedirect: fwdChecker(s.dev.Ifindex),
		Blocked: checkDevice(s.dev.Ifindex)})
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
		case in.Rule.Handle == unreadableHandle:
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
