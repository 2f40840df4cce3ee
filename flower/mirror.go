package flower

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// MirrorOptions say how kernel filters are mirrored.
type MirrorOptions struct {
	// SkipHW: mirror filters flagged skip_hw as well. skip_hw asks the
	// kernel not to put a filter in hardware; XDP is not hardware, but a
	// user may mean "leave this to the kernel" (and `xdpflow filter add
	// skip_hw` means exactly that), so by default they are punted.
	SkipHW bool
	// CheckRedirect says whether XDP can carry out a redirect out of
	// ifindex (the ingress device itself: XDP_TX) without losing packets.
	CheckRedirect func(ifindex int) error
	// Keepalive is given to every offloaded filter (rule.Rule.Keepalive):
	// one packet per interval and CPU goes on to TC, so the kernel's
	// counters of a filter XDP handles still move (0: none do).
	Keepalive time.Duration
	// Blocked, when set, is why no filter of the device may run in XDP
	// (a hook that runs before TC, say): every one is punted with it.
	Blocked error
}

// MirrorStatus is what became of one kernel filter.
type MirrorStatus struct {
	Filter    *KernelFilter
	Offloaded bool
	Reason    string // why not, when not
	Punted    bool   // a punt entry keeps the filter's packets for TC
}

// Mirror decides what of one device's ingress filters runs in XDP. Every
// filter of chain 0 becomes either the same rule in XDP or a punt: its
// match, or what of it xdpflow can read, sending packets on to TC, so no
// lower-priority rule in XDP overtakes it. Filters of other chains are
// only reached through goto chain, which is never offloaded (its filter
// is a punt), so they need nothing in XDP.
func Mirror(dev string, filters []*KernelFilter, opt MirrorOptions) ([]*rule.Rule, []MirrorStatus) {
	sorted, chain0, statuses, match := mirrorInputs(filters, opt)
	// The kernel's order between filters of one pref is not visible in a
	// dump (flower tries masks in creation order, ranged filters of a mask
	// in insertion order): an offloaded filter that could match a packet
	// another filter of its pref also matches is punted.
	for i, j := range overlapWitnesses(sorted, chain0, statuses, match) {
		statuses[i].Offloaded = false
		statuses[i].Reason = fmt.Sprintf("may match the same packets as handle 0x%x of pref %d, and the kernel's order between them is not visible",
			sorted[j].Handle, sorted[j].Prio)
	}
	var rules []*rule.Rule
	punts := map[string]bool{}
	for _, i := range chain0 {
		f, st := sorted[i], &statuses[i]
		if st.Offloaded {
			rules = append(rules, f.withKeepalive(opt.Keepalive))
			continue
		}
		st.Punted = true
		// One punt per distinct text: a classifier other than flower lists
		// many entries, each punting its whole pref alike.
		if p := f.PuntRule(); !punts[p.Text] {
			punts[p.Text] = true
			rules = append(rules, p)
		}
	}
	return rules, statuses
}

// PuntHandle is the handle of every punt: a punt's text names its pref
// and match, not its filter, so that filters whose punts match alike
// (the readable part of one equal to another's match; the kernel holds
// no two equal matches in a pref) share one rule instead of colliding.
const PuntHandle = 0xFFFFFFFF

// withKeepalive is f's rule with keepalive d. The copy is kept: the
// daemon mirrors the same filters on every change of the device's, and
// formatting every rule's text again would be much of each mirror.
func (f *KernelFilter) withKeepalive(d time.Duration) *rule.Rule {
	if d == 0 {
		return f.Rule
	}
	if f.keepalive.rule == nil || f.keepalive.d != d {
		k := *f.Rule
		k.Keepalive = d
		k.Text = ruletext.Format(&k)
		f.keepalive.d, f.keepalive.rule = d, &k
	}
	return f.keepalive.rule
}

// offloadable says why a chain-0 filter cannot run in XDP ("" if it can).
func offloadable(f *KernelFilter, opt MirrorOptions) string {
	if opt.Blocked != nil {
		return opt.Blocked.Error()
	}
	if f.Err != nil {
		return f.Err.Error()
	}
	r := f.Rule
	if r.SkipHW && !opt.SkipHW {
		return "skip_hw"
	}
	if n := len(r.Actions); n == 0 || (r.Actions[n-1].Kind != rule.ActDrop && r.Actions[n-1].Kind != rule.ActRedirect) {
		// The packet goes on to the stack: XDP would pass it to TC, which
		// runs this filter again (on a packet XDP may have changed).
		return "the packet goes on to the stack: TC runs this filter itself"
	}
	for _, a := range r.Actions {
		if a.Kind == rule.ActRedirect && opt.CheckRedirect != nil {
			if err := opt.CheckRedirect(a.Ifindex); err != nil {
				return fmt.Sprintf("redirect to %s: %v", a.Dev, err)
			}
		}
	}
	return ""
}

// PuntRule is the punt entry of a filter that stays in TC: its match (or
// the part of it xdpflow reads) → pass.
func (f *KernelFilter) PuntRule() *rule.Rule {
	if f.Punt != nil {
		return f.Punt
	}
	p := *f.Rule
	p.Handle = PuntHandle
	p.Actions = []rule.Action{{Kind: rule.ActPass}}
	p.SkipHW, p.SkipSW = false, false
	p.Text = ruletext.Format(&p)
	return &p
}

// overlapWitnesses finds, for each offloaded filter of chain0 (indices
// into sorted, in order), the first other filter of its pref whose match
// may overlap its own (rule.Overlaps), if any: i -> that filter.
//
// Comparing every pair is quadratic in a pref's filters, and Open
// vSwitch puts every flow of one mask in one pref. Two matches can
// only overlap if their keys agree under both masks, so the filters of a
// pref are grouped by mask, and for each pair of groups one group is
// hashed by its keys under the masks' common bits: a filter meets only the
// filters it agrees with there, and rule.Overlaps decides (port ranges).
func overlapWitnesses(sorted []*KernelFilter, chain0 []int, statuses []MirrorStatus,
	match func(int) *rule.Match) map[int]int {
	out := map[int]int{}
	for start := 0; start < len(chain0); {
		end := start
		for end < len(chain0) && sorted[chain0[end]].Prio == sorted[chain0[start]].Prio {
			end++
		}
		pref := chain0[start:end]
		start = end
		if len(pref) < 2 {
			continue
		}
		// Groups of one mask, in order of first appearance; members in
		// order. Filters of one mask usually come together (Open
		// vSwitch's prefs hold one), so the previous filter's group is
		// tried before the map.
		var masks []rule.Key
		groups := map[rule.Key][]int{}
		last := -1
		for _, i := range pref {
			m := &match(i).Mask
			if last < 0 || masks[last] != *m {
				if _, ok := groups[*m]; !ok {
					masks = append(masks, *m)
				}
				last = slices.Index(masks, *m)
			}
			groups[*m] = append(groups[*m], i)
		}
		for _, ma := range masks {
			var wanting []int
			for _, i := range groups[ma] {
				if statuses[i].Offloaded {
					wanting = append(wanting, i)
				}
			}
			if len(wanting) == 0 {
				continue
			}
			for _, mb := range masks {
				common := rule.MaskKey(&ma, &mb)
				// Buckets by a hash of the key under the common bits,
				// each a chain through next in ascending order (no
				// allocation per bucket). A collision only adds a
				// candidate that rule.Overlaps turns down.
				members := groups[mb]
				head := make(map[uint64]int, len(members))
				next := make([]int, len(members))
				for n := len(members) - 1; n >= 0; n-- {
					h := maskedHash(&match(members[n]).Key, &common)
					if first, ok := head[h]; ok {
						next[n] = first
					} else {
						next[n] = -1
					}
					head[h] = n
				}
				for _, i := range wanting {
					n, ok := head[maskedHash(&match(i).Key, &common)]
					for ; ok && n >= 0; n = next[n] {
						j := members[n]
						if j == i || !rule.Overlaps(match(i), match(j)) {
							continue
						}
						if w, ok := out[i]; !ok || j < w {
							out[i] = j
						}
						break
					}
				}
			}
		}
	}
	return out
}

// maskedHash hashes k & m.
func maskedHash(k, m *rule.Key) uint64 {
	kw, mw := rule.KeyWords(k), rule.KeyWords(m)
	h := uint64(0)
	for i := range kw {
		h = (h ^ (kw[i] & mw[i])) * 0x100000001B3 // FNV-1a's prime, a word at a time
		h ^= h >> 29
	}
	return h
}

// mirrorInputs sorts filters by chain, pref and handle, and gives each its
// status before overlaps are looked at; chain0 lists the indices of
// chain 0's filters, and match(i) is what filter i matches (its punt's
// match when it has no rule).
func mirrorInputs(filters []*KernelFilter, opt MirrorOptions) (sorted []*KernelFilter, chain0 []int,
	statuses []MirrorStatus, match func(int) *rule.Match) {
	sorted = append([]*KernelFilter(nil), filters...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.Chain != b.Chain {
			return a.Chain < b.Chain
		}
		if a.Prio != b.Prio {
			return a.Prio < b.Prio
		}
		return a.Handle < b.Handle
	})
	statuses = make([]MirrorStatus, len(sorted))
	for i, f := range sorted {
		statuses[i].Filter = f
		if f.Chain != 0 {
			statuses[i].Reason = fmt.Sprintf("chain %d is reached only through goto chain, which TC runs", f.Chain)
			continue
		}
		chain0 = append(chain0, i)
		statuses[i].Offloaded = true
		if reason := offloadable(f, opt); reason != "" {
			statuses[i].Offloaded, statuses[i].Reason = false, reason
		}
	}
	match = func(i int) *rule.Match {
		f := sorted[i]
		if f.Rule != nil {
			return &f.Rule.Match
		}
		return &f.Punt.Match
	}
	return sorted, chain0, statuses, match
}
