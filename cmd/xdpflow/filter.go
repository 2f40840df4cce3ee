package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

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

func filterAdd(s *session, c *flower.Command) error {
	r := c.Rule
	r.Source = rule.SourceCLI
	installed := tcRules(s.table)

	if !c.PrioSet {
		// tc: one below the lowest pref in use, or 49152 on an empty block.
		r.Prio = tcAutoPrio
		if len(installed) > 0 {
			if installed[0].Rule.Prio == 0 {
				return errors.New("filter: no pref below 0 is left: give \"pref\"")
			}
			r.Prio = installed[0].Rule.Prio - 1
		}
	}
	if r.Prio == 0 {
		return errors.New("filter: pref 0 is not allowed (tc allocates prefs from 1)")
	}
	var replaces maps.RuleID
	used := map[uint32]bool{}
	for _, in := range installed {
		if in.Rule.Prio != r.Prio {
			continue
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
		// Refuse what the kernel would silently drop: no packet may be
		// lost because of offload.
		if err := loader.CheckXDPTarget(a.Ifindex, a.Dev == r.Dev); err != nil {
			return fmt.Errorf("action mirred: %w", err)
		}
	}
	r.Text = flower.Format(r)
	_, err := s.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r, Replaces: replaces}}})
	if err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
			return fmt.Errorf("filter: %w (%v)", maps.ErrTableFull, err)
		}
		return fmt.Errorf("filter: %w", err)
	}
	return nil
}

func filterDel(s *session, c *flower.Command) error {
	var ids []maps.RuleID
	for _, in := range tcRules(s.table) {
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
	now := monotonicCoarseNs()
	var shown []flower.Shown
	for _, in := range tcRules(s.table) {
		if c.PrioSet && in.Rule.Prio != c.Prio {
			continue
		}
		if c.HandleSet && in.Rule.Handle != c.Handle {
			continue
		}
		sh := flower.Shown{Rule: in.Rule, Offloaded: true}
		if g.stats {
			pk, by, last, err := s.table.Stats(in.ID)
			if err != nil {
				return err
			}
			sh.Stats = flower.Stats{Packets: pk, Bytes: by}
			if last != 0 {
				sh.Stats.Used = true
				if now > last {
					sh.Stats.LastUsedMs = (now - last) / 1e6
				}
			}
		}
		shown = append(shown, sh)
	}
	if g.json {
		out := make([]flower.JSONFilter, 0, len(shown))
		for i := range shown {
			out = append(out, shown[i].JSON(g.stats))
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	for i := range shown {
		fmt.Print(shown[i].Text(g.stats))
	}
	return nil
}
