// Package offload is what every process that writes a device's table
// agrees on: what may run in XDP (Checks), how TC's filters become rules
// and what stands for them when they cannot (MirrorTC, the punts), and how
// a device's pinned table is opened (Open).
package offload

import (
	"errors"
	"fmt"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// PuntEverything is a TC rule before any other that sends every packet
// on to the kernel: what stands for TC's filters while they are unknown.
func PuntEverything(dev string) *rule.Rule {
	r := &rule.Rule{Source: rule.SourceTC, Dev: dev, Prio: 1, Handle: UnreadableHandle, Protocol: rule.EthPAll,
		Actions: []rule.Action{{Kind: rule.ActPass}}}
	r.Text = ruletext.Format(r)
	return r
}

// UnreadableHandle is PuntEverything's handle: no punt of a filter's
// (flower.PuntHandle), so that status can tell it.
const UnreadableHandle = flower.PuntHandle - 1

// PuntAllFrom is one rule sending every packet on to TC from the lowest
// pref of filters on: what stands in for filters the table cannot take.
func PuntAllFrom(dev string, filters []*flower.KernelFilter) []*rule.Rule {
	if len(filters) == 0 {
		return nil
	}
	prio := filters[0].Prio
	for _, f := range filters {
		prio = min(prio, f.Prio)
	}
	r := &rule.Rule{Source: rule.SourceTC, Dev: dev, Prio: prio, Handle: flower.PuntHandle, Protocol: rule.EthPAll,
		Actions: []rule.Action{{Kind: rule.ActPass}}}
	r.Text = ruletext.Format(r)
	return []*rule.Rule{r}
}

// MirrorOptions are the options a device's TC filters are mirrored with
// by a process other than the daemon: the device's policy, and checks
// asked what may run in XDP.
func MirrorOptions(ifindex int, checks *Checks, pol maps.Policy) flower.MirrorOptions {
	return flower.MirrorOptions{SkipHW: pol.MirrorSkipHW, Keepalive: pol.Keepalive,
		CheckRedirect: func(target int) error { return checks.Forward(ifindex, target) },
		Blocked:       checks.Device(ifindex)}
}

// MirrorTC mirrors a device's TC filters into its table as the daemon
// does, with MirrorOptions.
func MirrorTC(t *maps.Table, dev string, ifindex int, filters []*flower.KernelFilter, checks *Checks, pol maps.Policy) error {
	want, _ := flower.Mirror(dev, filters, MirrorOptions(ifindex, checks, pol))
	_, _, err := InstallTC(t, dev, want, filters)
	return err
}

// KernelFilters reads a device's ingress filters (none without an ingress
// qdisc).
func KernelFilters(dev string, ifindex int) ([]*flower.KernelFilter, error) {
	rd, err := flower.NewReader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return rd.Filters(dev, ifindex)
}

// InstallTC makes the table's TC rules want, what filters mirror to. If
// the table cannot take them, one punt from the lowest pref on stands for
// all of them: XDP must not run rules TC no longer has, nor let later
// rules (nft's, lower prefs) overtake filters it could not install.
func InstallTC(t *maps.Table, dev string, want []*rule.Rule, filters []*flower.KernelFilter) (added, removed int, err error) {
	added, removed, err = t.SyncSource(rule.SourceTC, want)
	if err != nil {
		_, _, rerr := t.SyncSource(rule.SourceTC, PuntAllFrom(dev, filters))
		return added, removed, errors.Join(fmt.Errorf("tc: install: %w (tc filters left to the kernel)", err), rerr)
	}
	return added, removed, nil
}
