package nft

import (
	"slices"

	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// A match's IPv4 prefixes are checked in the program as address ranges,
// in a subtable whose mask keeps fewer bits of each, and its port ranges
// as ranges (maps.FlowChoices). A flow of such a subtable is the only one
// of its masked key, so a match whose first choice another rule holds
// tries the next, then its prefix blocks.

// mergedAll is ms, each match merged at the first step where it can be.
func mergedAll(ms []rule.Match) []rule.Match {
	var out []rule.Match
	for i := range ms {
		if m, ok := maps.Merged(&ms[i], maps.MergeSteps[0]); ok {
			if out == nil {
				out = append(ms[:0:0], ms...)
			}
			out[i] = m
		}
	}
	if out == nil {
		return ms
	}
	return out
}

// widenFragPunt is the matches of a rule's fragment punt on just the
// fields that say which packets are fragments of which protocol. A punt
// sends packets to nft, which decides them exactly, so punting more
// fragments from the rule's level on is safe; every rule's punt then
// shares a few flows of one subtable, where its own fields would take
// subtables of their own.
func widenFragPunt(ms []rule.Match) []rule.Match {
	var out []rule.Match
	seen := map[rule.Match]bool{}
	for i := range ms {
		var w rule.Match
		w.Mask.EthType, w.Mask.L3Proto, w.Mask.IpProto, w.Mask.IpFrag = ms[i].Mask.EthType, ms[i].Mask.L3Proto, ms[i].Mask.IpProto, ms[i].Mask.IpFrag
		w.Key = rule.MaskKey(&ms[i].Key, &w.Mask)
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// fragPunts is the fragment punts of ms whose flows claim gives: one
// held by a rule before is left out, since that rule's punt, at a lower
// level and of the same widened match, takes every packet this one
// would. False when a claim says placing must start again.
func fragPunts(ms []rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	out := ms[:0:0]
	for k := range ms {
		e := ms[k].Entry()
		switch claim(flowOf(&e)) {
		case claimTaken:
			out = append(out, ms[k])
		case claimHeldAfter:
			return nil, false
		}
	}
	if len(out) == len(ms) {
		return ms, true
	}
	return out, true
}

// flowOf is the flow a ranged entry takes: only one entry may.
func flowOf(e *rule.Entry) rule.Entry { return rule.Entry{Key: e.Key, Mask: e.Mask} }

// claimed is what a ranged flow's claim found.
type claimed int

const (
	claimTaken      claimed = iota // free: now the claimant's
	claimHeldBefore                // held by a rule before the claimant
	claimHeldAfter                 // held by a rule after it: placing must start again
)

// chooseFlows is ms (prepared, merged at the first step) with each
// ranged match whose flow claim does not give it replaced by the next
// choice of orig's match: merged keeping more bits, then orig's own
// ranges, then its prefix blocks. It returns ms itself when no match
// changes; false when a claim says placing must start again.
func chooseFlows(ms, orig []rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	var out []rule.Match
	for k := range ms {
		choice, ok := chooseFlow(&ms[k], &orig[k], claim)
		switch {
		case !ok:
			return nil, false
		case choice == nil && out == nil:
			continue
		case out == nil:
			out = append(ms[:0:0], ms[:k]...)
		}
		if choice == nil {
			choice = ms[k : k+1]
		}
		out = append(out, choice...)
	}
	if out == nil {
		return ms, true
	}
	return out, true
}

// chooseFlow is chooseFlows for one match: nil when m itself takes its
// flow, which most do, so the other choices are made only when it does
// not.
func chooseFlow(m, orig *rule.Match, claim func(flow rule.Entry) claimed) ([]rule.Match, bool) {
	var tried []rule.Entry
	try := func(c *rule.Match) (took, ok bool) {
		if !c.Ranged() {
			return true, true
		}
		e := c.Entry()
		flow := flowOf(&e)
		if slices.Contains(tried, flow) {
			return false, true
		}
		tried = append(tried, flow)
		switch claim(flow) {
		case claimTaken:
			return true, true
		case claimHeldAfter:
			return false, false
		}
		return false, true
	}
	if took, ok := try(m); !ok || took {
		return nil, ok
	}
	// m is orig merged at the first step, or orig: the first choice.
	choices := maps.FlowChoices(orig)
	for i := range choices {
		if took, ok := try(&choices[i]); !ok || took {
			return choices[i : i+1], ok
		}
	}
	e := orig.Entry()
	var out []rule.Match
	for _, b := range e.Blocks() {
		out = append(out, rule.Match{Key: b.Key, Mask: b.Mask})
	}
	return out, true
}
