package main

import (
	"errors"
	"fmt"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// `filter add` and `filter del` on a kernel with cls_flower: the filter
// goes into the kernel's TC, as tc would put it there, and the device's
// TC filters are then mirrored into XDP exactly as the daemon mirrors
// them (flower.Mirror, installTC), so the CLI needs no daemon and both agree.

// kernelFilters reads the device's ingress filters (none without an
// ingress qdisc).
func kernelFilters(s *session) ([]*flower.KernelFilter, error) {
	rd, err := flower.NewReader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return rd.Filters(s.dev.Name, s.dev.Ifindex)
}

// filterAddTC adds c's filter to TC and mirrors. done is false when the
// kernel has no cls_flower and nothing was changed: the caller puts the
// filter in XDP alone.
func filterAddTC(s *session, c *flower.Command, installed []*maps.Installed) (done bool, err error) {
	r := c.Rule
	w, err := flower.NewWriter()
	if err != nil {
		return true, err
	}
	defer w.Close()
	created, err := w.EnsureIngress(s.dev.Ifindex)
	if err != nil {
		return true, err
	}
	has, err := w.HasFlower(s.dev.Ifindex)
	if err != nil {
		return true, err
	}
	if !has {
		if created {
			_ = w.DeleteIngress(s.dev.Ifindex)
		}
		if r.SkipHW {
			return true, errors.New("filter: skip_hw keeps a filter out of XDP, and this kernel has no cls_flower to hold it in TC")
		}
		return false, nil
	}
	for _, in := range installed {
		if in.Rule.Source == rule.SourceCLI && in.Rule.Prio == r.Prio {
			return true, fmt.Errorf("filter: pref %d holds XDP-only (skip_sw) filters; a filter in TC needs another pref", r.Prio)
		}
	}
	verb := map[string]flower.Verb{"add": flower.VerbAdd, "replace": flower.VerbReplace, "change": flower.VerbChange}[c.Verb]
	if _, err := w.Add(s.dev.Ifindex, r, verb); err != nil {
		return true, fmt.Errorf("filter: %w", err)
	}
	if err := mirrorDevice(s); err != nil {
		return true, fmt.Errorf("filter: added to TC, which handles its packets; XDP: %w", err)
	}
	return true, nil
}

// filterDelTC deletes c's filters from TC (all of them, a pref's, or one)
// and mirrors. found: some kernel filter matched.
func filterDelTC(s *session, c *flower.Command) (found bool, err error) {
	kernel, err := kernelFilters(s)
	if err != nil {
		return false, err
	}
	type pref struct {
		chain uint32
		prio  uint16
	}
	var one []*flower.KernelFilter
	prefs := map[pref]bool{}
	for _, f := range kernel {
		if f.Chain != 0 || (c.PrioSet && f.Prio != c.Prio) || (c.HandleSet && f.Handle != c.Handle) ||
			(c.ProtocolSet && c.Protocol != rule.EthPAll && f.Protocol != c.Protocol) {
			continue
		}
		one = append(one, f)
		prefs[pref{f.Chain, f.Prio}] = true
	}
	if len(one) == 0 {
		return false, nil
	}
	w, err := flower.NewWriter()
	if err != nil {
		return true, err
	}
	defer w.Close()
	if c.HandleSet {
		for _, f := range one {
			if err := w.Delete(s.dev.Ifindex, f.Chain, f.Prio, f.Protocol, f.Handle, f.Kind); err != nil {
				return true, fmt.Errorf("filter del: %w", err)
			}
		}
	} else {
		for p := range prefs {
			if err := w.Delete(s.dev.Ifindex, p.chain, p.prio, 0, 0, ""); err != nil {
				return true, fmt.Errorf("filter del: %w", err)
			}
		}
	}
	if err := mirrorDevice(s); err != nil {
		return true, fmt.Errorf("filter del: deleted from TC; XDP: %w", err)
	}
	return true, nil
}

// mirrorDevice mirrors the device's TC filters into XDP as the daemon
// does with its default options.
func mirrorDevice(s *session) error {
	filters, err := kernelFilters(s)
	if err != nil {
		return err
	}
	want, _ := flower.Mirror(s.dev.Name, filters, flower.MirrorOptions{
		CheckRedirect: fwdChecker(s.dev.Ifindex), Keepalive: defaultKeepalive, Blocked: checkDevice(s.dev.Ifindex)})
	_, _, err = installTC(s.table, s.dev.Name, want, filters)
	return err
}

// installTC makes the table's TC rules want, what filters mirror to. If
// the table cannot take them, one punt from the lowest pref on stands for
// all of them: XDP must not run rules TC no longer has, nor let later
// rules (nft's, lower prefs) overtake filters it could not install.
func installTC(t *maps.Table, dev string, want []*rule.Rule, filters []*flower.KernelFilter) (added, removed int, err error) {
	added, removed, err = t.SyncSource(rule.SourceTC, want)
	if err != nil {
		_, _, rerr := t.SyncSource(rule.SourceTC, puntAllFrom(dev, filters))
		return added, removed, errors.Join(fmt.Errorf("tc: install: %w (tc filters left to the kernel)", err), rerr)
	}
	return added, removed, nil
}
