package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
)

// cmdFlow: `flow show dev DEV` lists every rule the engine holds for DEV,
// whatever its source, with whether it runs in XDP and why not.
func cmdFlow(g globals, args []string) error {
	if len(args) < 1 || args[0] != "show" {
		return usageError{"usage: xdpflow [-s] [-j] flow show dev DEV"}
	}
	dev, rest, err := parseDevArg(args[1:], "flow show")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("flow show: unexpected %q", rest[0])}
	}
	s, err := openDevice(g, dev)
	if err != nil {
		return err
	}
	defer s.close()
	now := monotonicCoarseNs()

	var out []flower.JSONFilter
	tc, err := tcShown(s, g.stats)
	if err != nil {
		return err
	}
	for i := range tc {
		out = append(out, tc[i].JSON(g.stats))
	}
	nftRows, err := nftFlows(s, dev, now, g.stats)
	if err != nil {
		return err
	}
	out = append(out, nftRows...)

	if g.json {
		if out == nil {
			out = []flower.JSONFilter{}
		}
		return g.encodeJSON(out)
	}
	for _, j := range out {
		printFlow(j, g.stats)
	}
	return nil
}

// nftFlows lists the nft rules: what nft holds now, compiled the way the
// daemon does, joined with what is installed.
func nftFlows(s *session, dev string, now uint64, withStats bool) ([]flower.JSONFilter, error) {
	installed := map[rule.Identity]*maps.Installed{}
	for _, in := range s.table.Rules() {
		if in.Rule.Source == rule.SourceNFT {
			installed[in.Rule.Identity()] = in
		}
	}
	rs, err := nft.Read(dev, s.dev.Ifindex)
	if err != nil {
		return nil, err
	}
	// The daemon's checks, so the compile (and its reasons) is the same.
	rs.CheckFwd, rs.Blocked = offload.ForwardChecker(s.dev.Ifindex), offload.CheckDevice(s.dev.Ifindex)
	_, statuses := nft.Compile(rs, nft.LimitsOf(s.table.Room(rule.SourceNFT)))
	var out []flower.JSONFilter
	seen := map[rule.Identity]bool{}
	for _, st := range statuses {
		j, ids := nftFlow(dev, st, installed, seen)
		if withStats {
			stt, err := sumStats(s.table, now, ids)
			if err != nil {
				return nil, err
			}
			j.Stats = &stt
		}
		out = append(out, j)
	}
	// Installed parts nft no longer has: the daemon has not caught up.
	var stale []string
	for id, in := range installed {
		if !seen[id] {
			stale = append(stale, in.Rule.Name)
		}
	}
	sort.Strings(stale)
	for _, name := range stale {
		out = append(out, flower.JSONFilter{Dev: dev, Kind: "nft", Protocol: "all", Source: "nft", Name: name,
			Keys: map[string]any{}, Actions: []string{}, Offloaded: true,
			Reason: "stale: nft no longer has it; the daemon removes it"})
	}
	return out, nil
}

// nftFlow is one compiled nft rule as shown, joined with its installed
// parts (noted in seen), whose ids it returns.
func nftFlow(dev string, st *nft.Status, installed map[rule.Identity]*maps.Installed, seen map[rule.Identity]bool) (flower.JSONFilter, []maps.RuleID) {
	j := flower.JSONFilter{Dev: dev, Kind: "nft", Protocol: "all", Source: "nft", Name: st.Name,
		Keys: map[string]any{}, Actions: []string{}, Offloaded: st.Offloaded, Reason: st.Reason}
	if st.Verdict != "" {
		j.Actions = strings.Split(st.Verdict, ", ")
	}
	if i := strings.LastIndexByte(st.Name, '/'); i >= 0 {
		fmt.Sscan(st.Name[i+1:], &j.Handle)
	}
	var ids []maps.RuleID
	missing := false
	for k, p := range st.Parts {
		in := installed[p.Identity()]
		if in == nil {
			missing = true
			continue
		}
		seen[p.Identity()] = true
		ids = append(ids, in.ID)
		if k == 0 {
			for _, kv := range p.Keys {
				j.Keys[kv.Name] = kv.Value
				j.KeyOrder = append(j.KeyOrder, kv.Name)
			}
		}
	}
	for _, p := range st.Companions {
		if installed[p.Identity()] == nil {
			missing = true
		}
		seen[p.Identity()] = true
	}
	if missing {
		j.Offloaded = false
		j.Reason = "not installed yet: is `xdpflow daemon` running?"
	}
	return j, ids
}

// sumStats adds up the XDP counters of the rules ids, last used as of now
// by the latest.
func sumStats(t *maps.Table, now uint64, ids []maps.RuleID) (flower.Stats, error) {
	var st flower.Stats
	for _, id := range ids {
		pk, by, last, err := t.Stats(id)
		if err != nil {
			return st, err
		}
		st.Packets += pk
		st.Bytes += by
		if last != 0 {
			age := uint64(0)
			if now > last {
				age = (now - last) / 1e6
			}
			if !st.Used || age < st.LastUsedMs {
				st.LastUsedMs = age
			}
			st.Used = true
		}
	}
	return st, nil
}

func printFlow(j flower.JSONFilter, withStats bool) {
	name := j.Name
	if name == "" {
		name = fmt.Sprintf("pref %d handle 0x%x chain %d", j.Pref, j.Handle, j.Chain)
	}
	state := "in_xdp"
	switch {
	case !j.Offloaded && j.Punted:
		state = "not_in_xdp (" + j.Reason + "; its packets go on to TC)"
	case !j.Offloaded:
		state = "not_in_xdp (" + j.Reason + ")"
	}
	// In the order they are typed, so that the line can be pasted back.
	keys := make([]string, 0, len(j.Keys))
	for _, k := range j.KeyOrder {
		keys = append(keys, fmt.Sprintf("%s %v", k, j.Keys[k]))
	}
	fmt.Printf("%s %s: %s -> %s  %s\n", j.Source, name, strings.Join(keys, " "), strings.Join(j.Actions, ", "), state)
	if withStats && j.Stats != nil {
		fmt.Printf("\tSent %d bytes %d pkt\n", j.Stats.Bytes, j.Stats.Packets)
	}
	if withStats && j.TCStats != nil {
		fmt.Printf("\tin TC: Sent %d bytes %d pkt\n", j.TCStats.Bytes, j.TCStats.Packets)
	}
}
