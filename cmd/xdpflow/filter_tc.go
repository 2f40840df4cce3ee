package main

import (
	"errors"
	"fmt"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// `filter add` and `filter del` on a kernel with cls_flower put the filter
// into the kernel's TC, as tc would (filterEdit), and the device's TC
// filters are then mirrored into XDP exactly as the daemon mirrors them
// (flower.Mirror, installTC), so the CLI needs no daemon and both agree.

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

// mirrorDevice mirrors the device's TC filters into XDP as the daemon
// does with its default options.
func mirrorDevice(s *session, fwd *fwdCache) error {
	filters, err := kernelFilters(s)
	if err != nil {
		return err
	}
	ifindex := s.dev.Ifindex
	want, _ := flower.Mirror(s.dev.Name, filters, flower.MirrorOptions{
		CheckRedirect: func(target int) error { return fwd.check(ifindex, target) },
		Keepalive:     defaultKeepalive, Blocked: fwd.blocked(ifindex)})
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
