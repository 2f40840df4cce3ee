package flower

import (
	"fmt"
	"sort"

	"github.com/xdpflow/xdpflow/rule"
)

// filterID names a filter of one device's ingress.
type filterID struct {
	Chain  uint32
	Prio   uint16
	Handle uint32
}

// idOf is f's filterID.
func idOf(f *KernelFilter) filterID { return filterID{f.Chain, f.Prio, f.Handle} }

// MirrorSet is Mirror kept up to date one filter at a time: the daemon's
// view of one device's filters between dumps. Mirror works over all of
// a device's filters, and Open vSwitch changes one at a time; a change
// here costs what the filters it can affect cost (those of its pref whose
// match may overlap its own), and says which rules come and go.
//
// What it decides is exactly what Mirror decides for the same filters
// (TestMirrorSetAsMirror): a filter of chain 0 is offloaded when it can
// run in XDP and no other filter of its pref may match the same packets;
// otherwise it is a punt.
type MirrorSet struct {
	opt     MirrorOptions
	filters map[filterID]*mirrorEntry
	prefs   map[uint16]*prefIndex // chain 0's prefs
	// rules: what the filters contribute, by identity, and how many
	// filters contribute each (punts of one pref's non-flower entries
	// share one). before: whether an identity was installed at the last
	// Flush, for those changed since.
	rules   map[rule.Identity]*ruleRef
	before  map[rule.Identity]bool
	offload int // chain-0 filters offloaded
}

type ruleRef struct {
	rule *rule.Rule
	n    int
}

type mirrorEntry struct {
	f      *KernelFilter
	reason string // offloadable's; "" when it can run in XDP
	// overlaps: the other filters of its pref whose match may overlap
	// its own (symmetric: each is in the other's set).
	overlaps map[*mirrorEntry]bool
	out      *rule.Rule // what it contributes now (nil: chain other than 0)
	punt     *rule.Rule // its punt, once needed (PuntRule makes a new one each call)
	counted  bool       // counted in MirrorSet.offload
}

func (e *mirrorEntry) match() *rule.Match {
	if e.f.Rule != nil {
		return &e.f.Rule.Match
	}
	return &e.f.Punt.Match
}

func (e *mirrorEntry) offloaded() bool {
	return e.f.Chain == 0 && e.reason == "" && len(e.overlaps) == 0
}

// prefIndex finds the filters of one pref whose match may overlap a
// given one: by mask, and within a mask by a hash of the key under it.
type prefIndex struct {
	groups map[rule.Key]*maskIndex
}

type maskIndex struct {
	mask  rule.Key
	byKey map[uint64][]*mirrorEntry // maskedHash(key, mask)
	n     int
}

// NewMirrorSet mirrors filters as Mirror does, and keeps them for Change.
// opt stays the options of every later change: its CheckRedirect is asked
// again only for filters that change.
func NewMirrorSet(filters []*KernelFilter, opt MirrorOptions) *MirrorSet {
	s := &MirrorSet{opt: opt, filters: map[filterID]*mirrorEntry{}, prefs: map[uint16]*prefIndex{},
		rules: map[rule.Identity]*ruleRef{}, before: map[rule.Identity]bool{}}
	for _, f := range filters {
		s.Change(f, false)
	}
	s.Flush()
	return s
}

// Change applies one notification: f is new or replaces the filter of
// its id, or (deleted) is gone.
func (s *MirrorSet) Change(f *KernelFilter, deleted bool) {
	id := idOf(f)
	if old := s.filters[id]; old != nil {
		s.remove(old)
	}
	if !deleted {
		s.insert(f)
	}
}

func (s *MirrorSet) insert(f *KernelFilter) {
	e := &mirrorEntry{f: f}
	s.filters[idOf(f)] = e
	if f.Chain != 0 {
		return // reached only through goto chain: nothing in XDP
	}
	e.reason = offloadable(f, s.opt)
	p := s.prefs[f.Prio]
	if p == nil {
		p = &prefIndex{groups: map[rule.Key]*maskIndex{}}
		s.prefs[f.Prio] = p
	}
	var touched []*mirrorEntry
	p.overlapping(e, func(o *mirrorEntry) {
		if e.overlaps == nil {
			e.overlaps = map[*mirrorEntry]bool{}
		}
		if o.overlaps == nil {
			o.overlaps = map[*mirrorEntry]bool{}
		}
		e.overlaps[o], o.overlaps[e] = true, true
		touched = append(touched, o)
	})
	p.add(e)
	s.refresh(e)
	for _, o := range touched {
		s.refresh(o)
	}
}

func (s *MirrorSet) remove(e *mirrorEntry) {
	delete(s.filters, idOf(e.f))
	if e.f.Chain != 0 {
		return
	}
	p := s.prefs[e.f.Prio]
	p.delete(e)
	if len(p.groups) == 0 {
		delete(s.prefs, e.f.Prio)
	}
	if e.counted {
		s.offload--
	}
	s.contribute(e.out, -1)
	e.out = nil
	for o := range e.overlaps {
		delete(o.overlaps, e)
		s.refresh(o)
	}
}

// refresh brings what e contributes in line with its status.
func (s *MirrorSet) refresh(e *mirrorEntry) {
	off := e.offloaded()
	var want *rule.Rule
	switch {
	case off:
		want = e.f.withKeepalive(s.opt.Keepalive)
	case e.punt != nil:
		want = e.punt
	default:
		// Formatted only when needed: most filters never are punts, and
		// formatting texts was most of a dump's mirror.
		e.punt = e.f.PuntRule()
		want = e.punt
	}
	if off != e.counted {
		if off {
			s.offload++
		} else {
			s.offload--
		}
		e.counted = off
	}
	if e.out != want {
		s.contribute(e.out, -1)
		s.contribute(want, 1)
		e.out = want
	}
}

func (s *MirrorSet) contribute(r *rule.Rule, n int) {
	if r == nil {
		return
	}
	id := r.Identity()
	ref := s.rules[id]
	if ref == nil {
		ref = &ruleRef{rule: r}
		s.rules[id] = ref
	}
	if _, ok := s.before[id]; !ok {
		s.before[id] = ref.n > 0
	}
	if ref.n += n; ref.n == 0 {
		delete(s.rules, id)
	}
}

// Flush returns the rules that came and the identities of those that
// went since the last Flush (or NewMirrorSet).
func (s *MirrorSet) Flush() (add []*rule.Rule, remove []rule.Identity) {
	for id, was := range s.before {
		ref, now := s.rules[id]
		switch {
		case now && !was:
			add = append(add, ref.rule)
		case was && !now:
			remove = append(remove, id)
		}
	}
	clear(s.before)
	return add, remove
}

// Rules is every rule the filters contribute (what Mirror returns, in no
// particular order).
func (s *MirrorSet) Rules() []*rule.Rule {
	out := make([]*rule.Rule, 0, len(s.rules))
	for _, ref := range s.rules {
		out = append(out, ref.rule)
	}
	return out
}

// Len is how many filters the set holds, and Offloaded how many of them
// run in XDP.
func (s *MirrorSet) Len() int       { return len(s.filters) }
func (s *MirrorSet) Offloaded() int { return s.offload }

// Filters is the set's filters, in no particular order.
func (s *MirrorSet) Filters() []*KernelFilter {
	out := make([]*KernelFilter, 0, len(s.filters))
	for _, e := range s.filters {
		out = append(out, e.f)
	}
	return out
}

// Statuses is what became of each filter, in Mirror's order (chain,
// pref, handle) and with Mirror's reasons.
func (s *MirrorSet) Statuses() []MirrorStatus {
	entries := make([]*mirrorEntry, 0, len(s.filters))
	for _, e := range s.filters {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return lessID(idOf(entries[i].f), idOf(entries[j].f)) })
	out := make([]MirrorStatus, len(entries))
	for i, e := range entries {
		st := MirrorStatus{Filter: e.f}
		switch {
		case e.f.Chain != 0:
			st.Reason = fmt.Sprintf("chain %d is reached only through goto chain, which TC runs", e.f.Chain)
		case e.reason != "":
			st.Reason, st.Punted = e.reason, true
		case len(e.overlaps) > 0:
			// Mirror names the first of them.
			var w *mirrorEntry
			for o := range e.overlaps {
				if w == nil || lessID(idOf(o.f), idOf(w.f)) {
					w = o
				}
			}
			st.Punted = true
			st.Reason = fmt.Sprintf("may match the same packets as handle 0x%x of pref %d, and the kernel's order between them is not visible",
				w.f.Handle, w.f.Prio)
		default:
			st.Offloaded = true
		}
		out[i] = st
	}
	return out
}

func lessID(a, b filterID) bool {
	if a.Chain != b.Chain {
		return a.Chain < b.Chain
	}
	if a.Prio != b.Prio {
		return a.Prio < b.Prio
	}
	return a.Handle < b.Handle
}

// overlapping calls fn with each filter of the pref whose match may
// overlap e's. Two matches overlap only if their keys agree under both
// masks: in a group whose mask lies within e's (Open vSwitch's prefs hold
// one mask, so the common case), that is one bucket of the group's index;
// other groups are scanned.
func (p *prefIndex) overlapping(e *mirrorEntry, fn func(*mirrorEntry)) {
	m := e.match()
	for _, g := range p.groups {
		common := rule.MaskKey(&m.Mask, &g.mask)
		if common == g.mask {
			for _, o := range g.byKey[maskedHash(&m.Key, &g.mask)] {
				if rule.Overlaps(m, o.match()) {
					fn(o)
				}
			}
			continue
		}
		for _, bucket := range g.byKey {
			for _, o := range bucket {
				if rule.Overlaps(m, o.match()) {
					fn(o)
				}
			}
		}
	}
}

func (p *prefIndex) add(e *mirrorEntry) {
	m := e.match()
	g := p.groups[m.Mask]
	if g == nil {
		g = &maskIndex{mask: m.Mask, byKey: map[uint64][]*mirrorEntry{}}
		p.groups[m.Mask] = g
	}
	h := maskedHash(&m.Key, &g.mask)
	g.byKey[h] = append(g.byKey[h], e)
	g.n++
}

func (p *prefIndex) delete(e *mirrorEntry) {
	m := e.match()
	g := p.groups[m.Mask]
	h := maskedHash(&m.Key, &g.mask)
	bucket := g.byKey[h]
	for i, o := range bucket {
		if o == e {
			bucket = append(bucket[:i], bucket[i+1:]...)
			break
		}
	}
	if len(bucket) == 0 {
		delete(g.byKey, h)
	} else {
		g.byKey[h] = bucket
	}
	if g.n--; g.n == 0 {
		delete(p.groups, m.Mask)
	}
}
