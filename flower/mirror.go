package flower

import (
	"fmt"
	"sort"
	"time"

	"github.com/xdpflow/xdpflow/rule"
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
	sorted := append([]*KernelFilter(nil), filters...)
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
	statuses := make([]MirrorStatus, len(sorted))
	var chain0 []int
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
	// The kernel's order between filters of one pref is not visible in a
	// dump (flower tries masks in creation order, ranged filters of a mask
	// in insertion order): an offloaded filter that could match a packet
	// another filter of its pref also matches is punted.
	match := func(i int) *rule.Match {
		f := sorted[i]
		if f.Rule != nil {
			return &f.Rule.Match
		}
		return &f.Punt.Match
	}
	for _, i := range chain0 {
		if !statuses[i].Offloaded {
			continue
		}
		for _, j := range chain0 {
			fi, fj := sorted[i], sorted[j]
			if i == j || fi.Prio != fj.Prio {
				continue
			}
			if rule.Overlaps(match(i), match(j)) {
				statuses[i].Offloaded = false
				statuses[i].Reason = fmt.Sprintf("may match the same packets as handle 0x%x of pref %d, and the kernel's order between them is not visible", fj.Handle, fj.Prio)
				break
			}
		}
	}
	var rules []*rule.Rule
	punts := map[string]bool{}
	for _, i := range chain0 {
		f, st := sorted[i], &statuses[i]
		if st.Offloaded {
			r := f.Rule
			if opt.Keepalive > 0 {
				k := *r
				k.Keepalive = opt.Keepalive
				k.Text = Format(&k)
				r = &k
			}
			rules = append(rules, r)
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

// offloadable says why a chain-0 filter cannot run in XDP ("" if it can).
func offloadable(f *KernelFilter, opt MirrorOptions) string {
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
	p.Actions = []rule.Action{{Kind: rule.ActPass}}
	p.SkipHW, p.SkipSW = false, false
	p.Text = Format(&p)
	return &p
}
