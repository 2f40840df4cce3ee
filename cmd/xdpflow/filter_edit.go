package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// filterEdit is a run of filter commands on one device (one command, or a
// batch's): the device's filters in tc's namespace of prefs, the table's
// and the kernel's, read once, with each command's change on top of the
// commands before it. Filters that go into TC go there at once, as tc puts
// them; XDP-only filters wait in chunks (filter_commit.go) and are written
// by commit, or before the next command that changes TC.
type filterEdit struct {
	s      *session
	fwd    *offload.Checks // forward and device checks, asked once per edit
	policy maps.Policy     // how the device's TC filters are mirrored

	kernel      []*flower.KernelFilter // TC's ingress filters, as the commands leave them
	kernelPrefs map[uint16]int         // chain 0 filters of kernel, by pref
	prefs       map[uint16]*prefRules  // the table's rules, as the commands leave them
	lowest      uint16                 // lowest pref in use (0: none), if lowestOK
	lowestOK    bool

	chunks  []xdpChunk // XDP-only changes not written yet, in command order
	applied bool       // something of the edit is in the kernel or the table

	tc        *flower.Writer
	hasFlower int // 0: not asked; 1: the kernel has cls_flower; -1: it has not
	mirror    bool
	noteXDP   bool // an XDP-only filter went in only for want of cls_flower
	redirects map[string]int
}

// prefRules are one pref's rules: installed ones, and those the edit adds.
type prefRules struct {
	byHandle  map[uint32]*editRule
	sources   map[rule.Source]int
	protocols map[uint16]int
	matches   map[matchID]*editRule
	freeFrom  uint32 // every handle from 1 below it is taken
}

// matchID is what two rules of a pref must not share: their entries would
// be the same (maps.ErrExists, as flower's fl_ht_insert_unique refuses).
type matchID struct {
	mask, key rule.Key
	src, dst  rule.PortRange
}

func matchOf(r *rule.Rule) matchID {
	return matchID{r.Match.Mask, rule.MaskKey(&r.Match.Key, &r.Match.Mask), r.Match.SrcPortRange, r.Match.DstPortRange}
}

type editRule struct {
	rule *rule.Rule
	id   maps.RuleID // installed; 0 until it is
}

func newFilterEdit(s *session) (*filterEdit, error) {
	kernel, err := offload.KernelFilters(s.dev.Name, s.dev.Ifindex)
	if err != nil {
		return nil, err
	}
	pol, err := s.dev.Policy()
	if err != nil {
		return nil, err
	}
	e := &filterEdit{s: s, fwd: offload.NewChecks(), policy: pol, kernelPrefs: map[uint16]int{}, prefs: map[uint16]*prefRules{},
		redirects: map[string]int{}}
	for _, f := range kernel {
		e.addKernel(f)
	}
	for _, in := range tcRules(s.table) {
		e.put(&editRule{rule: in.Rule, id: in.ID})
	}
	return e, nil
}

func (e *filterEdit) addKernel(f *flower.KernelFilter) {
	e.kernel = append(e.kernel, f)
	if f.Chain == 0 {
		e.kernelPrefs[f.Prio]++
	}
	e.lowestOK = false
}

func (e *filterEdit) pref(prio uint16) *prefRules {
	p := e.prefs[prio]
	if p == nil {
		p = &prefRules{byHandle: map[uint32]*editRule{}, sources: map[rule.Source]int{},
			protocols: map[uint16]int{}, matches: map[matchID]*editRule{}, freeFrom: 1}
		e.prefs[prio] = p
	}
	return p
}

func (e *filterEdit) put(er *editRule) {
	p := e.pref(er.rule.Prio)
	p.byHandle[er.rule.Handle] = er
	p.sources[er.rule.Source]++
	p.protocols[er.rule.Protocol]++
	p.matches[matchOf(er.rule)] = er
	e.lowestOK = false
}

func (e *filterEdit) remove(er *editRule) {
	p := e.prefs[er.rule.Prio]
	delete(p.byHandle, er.rule.Handle)
	if p.sources[er.rule.Source]--; p.sources[er.rule.Source] == 0 {
		delete(p.sources, er.rule.Source)
	}
	if p.protocols[er.rule.Protocol]--; p.protocols[er.rule.Protocol] == 0 {
		delete(p.protocols, er.rule.Protocol)
	}
	if m := matchOf(er.rule); p.matches[m] == er {
		delete(p.matches, m)
	}
	if er.rule.Handle < p.freeFrom {
		p.freeFrom = er.rule.Handle
	}
	if len(p.byHandle) == 0 {
		delete(e.prefs, er.rule.Prio)
	}
	e.lowestOK = false
}

// lowestPref is the lowest pref in use, in the table or in TC (0: none).
func (e *filterEdit) lowestPref() uint16 {
	if !e.lowestOK {
		e.lowest = 0
		for p := range e.prefs {
			if e.lowest == 0 || p < e.lowest {
				e.lowest = p
			}
		}
		for p := range e.kernelPrefs {
			if e.lowest == 0 || p < e.lowest {
				e.lowest = p
			}
		}
		e.lowestOK = true
	}
	return e.lowest
}

// do applies one command to the edit. A command that fails changes
// nothing of it.
func (e *filterEdit) do(c *flower.Command) error {
	switch c.Verb {
	case "add", "replace", "change":
		return e.add(c)
	case "del":
		return e.del(c)
	}
	return fmt.Errorf("filter %s: not a change", c.Verb)
}

func (e *filterEdit) add(c *flower.Command) error {
	r := *c.Rule
	r.Actions = append([]rule.Action(nil), c.Rule.Actions...)
	r.Source = rule.SourceCLI
	if r.Keepalive > 0 {
		// xdpflow gives it to what it mirrors; a user's would send packets
		// of an XDP-only rule to a kernel that holds no such filter.
		return errors.New("filter: keepalive is xdpflow's own flag for filters it mirrors from TC; it is not given by hand")
	}
	if err := e.resolveRedirects(&r); err != nil {
		return err
	}
	if !c.PrioSet {
		// tc: one below the lowest pref in use, or 49152 on an empty block.
		r.Prio = tcAutoPrio
		switch lowest := e.lowestPref(); lowest {
		case 0:
		case 1:
			return errors.New("filter: no pref below 1 is left: give \"pref\"")
		default:
			r.Prio = lowest - 1
		}
	}
	if r.Prio == 0 {
		return errors.New("filter: pref 0 is not allowed (tc allocates prefs from 1)")
	}
	if !r.SkipSW {
		// In TC (skip_hw: only there; neither flag: there and, if it
		// can, in XDP), as tc itself would add it.
		done, err := e.addTC(c, &r)
		if done || err != nil {
			return err
		}
		e.noteXDP = true
	}
	return e.addXDP(c, &r)
}

// addXDP puts r in XDP alone.
func (e *filterEdit) addXDP(c *flower.Command, r *rule.Rule) error {
	if n := e.kernelPrefs[r.Prio]; n > 0 {
		// Named as tc lists them first: the lowest handle.
		var first *flower.KernelFilter
		for _, f := range e.kernel {
			if f.Chain == 0 && f.Prio == r.Prio && (first == nil || f.Handle < first.Handle) {
				first = f
			}
		}
		return fmt.Errorf("filter: pref %d holds filters in TC (%s %s); an XDP-only (skip_sw) filter needs a pref of its own",
			r.Prio, first.Kind, first.ID())
	}
	var replaces *editRule
	p := e.prefs[r.Prio]
	if p != nil {
		if p.sources[rule.SourceTC] > 0 {
			return fmt.Errorf("filter: pref %d holds filters mirrored from TC; an XDP-only (skip_sw) filter needs a pref of its own", r.Prio)
		}
		for proto := range p.protocols {
			if proto != r.Protocol {
				return fmt.Errorf("filter: pref %d holds protocol %s filters; protocol %s needs another pref",
					r.Prio, ruletext.EthTypeName(proto), ruletext.EthTypeName(r.Protocol))
			}
		}
		if c.HandleSet {
			if in := p.byHandle[c.Handle]; in != nil {
				if c.Verb == "add" {
					return fmt.Errorf("filter: pref %d handle 0x%x exists (use replace)", r.Prio, c.Handle)
				}
				replaces = in
			}
		}
	}
	if c.HandleSet {
		r.Handle = c.Handle
	} else {
		// flower gives the lowest free handle from 1.
		r.Handle = 1
		if p != nil {
			for r.Handle = p.freeFrom; p.byHandle[r.Handle] != nil; r.Handle++ {
			}
		}
	}
	if c.Verb == "change" && replaces == nil {
		return fmt.Errorf("filter change: no filter pref %d handle 0x%x", r.Prio, r.Handle)
	}
	if p != nil {
		if other := p.matches[matchOf(r)]; other != nil && other != replaces {
			return fmt.Errorf("filter: %w (%s)", maps.ErrExists, other.rule.Describe())
		}
	}
	// An XDP-only filter decides alone: not where XDP cannot see what TC
	// would (tags outside the frame), nor before a hook TC runs after.
	if err := e.fwd.Device(e.s.dev.Ifindex); err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	for _, a := range r.Actions {
		// Refuse what the kernel would silently drop: no packet may be
		// lost because of offload.
		if a.Kind != rule.ActRedirect {
			continue
		}
		if err := e.fwd.Forward(e.s.dev.Ifindex, a.Ifindex); err != nil {
			return fmt.Errorf("action mirred: %w", err)
		}
	}
	r.Text = ruletext.Format(r)
	er := &editRule{rule: r}
	if replaces != nil {
		e.remove(replaces)
	}
	e.queue(xdpOp{del: replaces, ins: er})
	e.put(er)
	if !c.HandleSet {
		e.prefs[r.Prio].freeFrom = r.Handle + 1
	}
	return nil
}

// resolveRedirects looks up the ifindex of each redirect's device.
func (e *filterEdit) resolveRedirects(r *rule.Rule) error {
	for i := range r.Actions {
		a := &r.Actions[i]
		if a.Kind != rule.ActRedirect {
			continue
		}
		ifindex, ok := e.redirects[a.Dev]
		if !ok {
			ifi, err := net.InterfaceByName(a.Dev)
			if err != nil {
				return fmt.Errorf("action mirred: no such device %q", a.Dev)
			}
			ifindex = ifi.Index
			e.redirects[a.Dev] = ifindex
		}
		a.Ifindex = ifindex
	}
	return nil
}

// writer is the edit's TC socket, opened on first use.
func (e *filterEdit) writer() (*flower.Writer, error) {
	if e.tc == nil {
		w, err := flower.NewWriter()
		if err != nil {
			return nil, err
		}
		e.tc = w
	}
	return e.tc, nil
}

// addTC adds r to TC. done is false when the kernel has no cls_flower and
// nothing was changed: the caller puts the filter in XDP alone.
func (e *filterEdit) addTC(c *flower.Command, r *rule.Rule) (done bool, err error) {
	w, err := e.writer()
	if err != nil {
		return true, err
	}
	if e.hasFlower == 0 {
		ifindex := e.s.dev.Ifindex
		created, err := w.EnsureIngress(ifindex)
		if err != nil {
			return true, err
		}
		has, err := w.HasFlower(ifindex)
		if err != nil {
			return true, err
		}
		e.hasFlower = 1
		if !has {
			e.hasFlower = -1
			if created {
				_ = w.DeleteIngress(ifindex)
			}
		}
	}
	if e.hasFlower < 0 {
		if r.SkipHW {
			return true, errors.New("filter: skip_hw keeps a filter out of XDP, and this kernel has no cls_flower to hold it in TC")
		}
		return false, nil
	}
	if p := e.prefs[r.Prio]; p != nil && p.sources[rule.SourceCLI] > 0 {
		return true, fmt.Errorf("filter: pref %d holds XDP-only (skip_sw) filters; a filter in TC needs another pref", r.Prio)
	}
	if err := e.flushXDP(); err != nil {
		return true, err
	}
	verb := map[string]flower.Verb{"add": flower.VerbAdd, "replace": flower.VerbReplace, "change": flower.VerbChange}[c.Verb]
	e.mirror, e.applied = true, true // whatever the answer says, TC may hold the filter
	handle, err := w.Add(e.s.dev.Ifindex, r, verb)
	if err != nil {
		return true, fmt.Errorf("filter: %w", err)
	}
	for _, f := range e.kernel {
		if f.Chain == 0 && f.Prio == r.Prio && f.Handle == handle {
			return true, nil // replaced
		}
	}
	e.addKernel(&flower.KernelFilter{Prio: r.Prio, Handle: handle, Protocol: r.Protocol, Kind: "flower"})
	return true, nil
}

func (e *filterEdit) del(c *flower.Command) error {
	inTC, err := e.delTC(c)
	if err != nil {
		return err
	}
	var gone []*editRule
	for _, p := range e.prefs {
		for _, er := range p.byHandle {
			r := er.rule
			if r.Source != rule.SourceCLI || (c.PrioSet && r.Prio != c.Prio) || (c.HandleSet && r.Handle != c.Handle) ||
				(c.ProtocolSet && c.Protocol != rule.EthPAll && r.Protocol != c.Protocol) {
				continue // a mirrored rule goes with the kernel's filter
			}
			gone = append(gone, er)
		}
	}
	if len(gone) == 0 {
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
	for _, er := range gone {
		e.remove(er)
		e.queue(xdpOp{del: er})
	}
	return nil
}

// delTC deletes c's filters from TC (all of them, a pref's, or one). found:
// some kernel filter matched.
func (e *filterEdit) delTC(c *flower.Command) (found bool, err error) {
	type pref struct {
		chain uint32
		prio  uint16
	}
	match := func(f *flower.KernelFilter) bool {
		return f.Chain == 0 && (!c.PrioSet || f.Prio == c.Prio) && (!c.HandleSet || f.Handle == c.Handle) &&
			(!c.ProtocolSet || c.Protocol == rule.EthPAll || f.Protocol == c.Protocol)
	}
	var one []*flower.KernelFilter
	prefs := map[pref]bool{}
	for _, f := range e.kernel {
		if match(f) {
			one = append(one, f)
			prefs[pref{f.Chain, f.Prio}] = true
		}
	}
	if len(one) == 0 {
		return false, nil
	}
	w, err := e.writer()
	if err != nil {
		return true, err
	}
	if err := e.flushXDP(); err != nil {
		return true, err
	}
	e.mirror, e.applied = true, true
	if c.HandleSet {
		for _, f := range one {
			if err := w.Delete(e.s.dev.Ifindex, f.Chain, f.Prio, f.Protocol, f.Handle, f.Kind); err != nil {
				return true, fmt.Errorf("filter del: %w", err)
			}
		}
	} else {
		for p := range prefs {
			if err := w.Delete(e.s.dev.Ifindex, p.chain, p.prio, 0, 0, ""); err != nil {
				return true, fmt.Errorf("filter del: %w", err)
			}
		}
	}
	// What TC no longer holds; its mirrored rules go at commit.
	kept := e.kernel[:0]
	for _, f := range e.kernel {
		if match(f) || (!c.HandleSet && prefs[pref{f.Chain, f.Prio}]) {
			e.kernelPrefs[f.Prio]--
			if e.kernelPrefs[f.Prio] == 0 {
				delete(e.kernelPrefs, f.Prio)
			}
			if p := e.prefs[f.Prio]; p != nil {
				for _, er := range p.byHandle {
					if er.rule.Source == rule.SourceTC {
						e.remove(er)
					}
				}
			}
			continue
		}
		kept = append(kept, f)
	}
	e.kernel = kept
	e.lowestOK = false
	return true, nil
}
