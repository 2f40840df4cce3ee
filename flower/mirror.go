package flower

import (
	"fmt"
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
// is a punt), so they need nothing in XDP. The kernel's order between
// filters of one pref is not visible in a dump (flower tries masks in
// creation order, ranged filters of a mask in insertion order): an
// offloaded filter that could match a packet another filter of its pref
// also matches is punted.
//
// It is a MirrorSet built in one go: the rules in the order of their
// filters (pref, then handle), and each filter's status.
func Mirror(dev string, filters []*KernelFilter, opt MirrorOptions) ([]*rule.Rule, []MirrorStatus) {
	s := NewMirrorSet(filters, opt)
	rules := s.Rules()
	sort.Slice(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.Prio != b.Prio {
			return a.Prio < b.Prio
		}
		if a.Handle != b.Handle {
			return a.Handle < b.Handle
		}
		return a.Text < b.Text // punts share PuntHandle
	})
	return rules, s.Statuses()
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
