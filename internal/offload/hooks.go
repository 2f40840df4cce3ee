package offload

import (
	"fmt"
	"net"
	"slices"
	"sort"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
)

// HookStatus is one thing the kernel runs on an enabled device's packets
// besides xdpflow, at its ingress or on the egress of a device its rules
// redirect to, and what xdpflow does about it.
type HookStatus struct {
	Where   string `json:"where"` // "ingress", "egress of b2"
	What    string `json:"what"`
	Xdpflow string `json:"xdpflow"`
}

// Hooks lists what else runs where dev's packets go, and why rules the
// kernel holds are not in t now (held). An error reading one hook is
// listed as such: status must show what it could not check, not hide it.
func Hooks(t *maps.Table, dev string, ifindex int) (out []HookStatus, held []string) {
	add := func(where, what, does string) { out = append(out, HookStatus{where, what, does}) }
	failed := func(where string, err error) {
		add(where, "unreadable: "+err.Error(), "cannot tell; the daemon punts what depends on it")
	}
	ingress := ifindex
	for _, in := range t.Rules() {
		if r := in.Rule; r.Source == rule.SourceTC && r.Handle == UnreadableHandle && r.Prio == 1 && len(r.Keys) == 0 {
			held = append(held, "tc: every packet goes to the kernel: the daemon could not read or install TC's filters (see its log); it tries again every second")
		}
	}

	hooks, err := loader.IngressHooks(ingress)
	if err != nil {
		failed("ingress", err)
	}
	for _, h := range hooks {
		add("ingress", h.What, "runs before TC and nft: every rule of the device is punted")
	}
	if err := loader.CheckVLANVisible(ingress); err != nil {
		add("ingress", "VLAN tags outside the frame: "+err.Error(), "every rule of the device is punted")
	}
	var targets []int
	filters, err := kernelFilters(dev, ifindex)
	if err != nil {
		failed("ingress", fmt.Errorf("tc filters: %w", err))
	}
	if len(filters) > 0 {
		add("ingress", fmt.Sprintf("tc ingress filters: %d", len(filters)), "mirrored (see flow show)")
	}
	for _, f := range filters {
		if f.Rule == nil {
			continue
		}
		for _, a := range f.Rule.Actions {
			if a.Kind == rule.ActRedirect && !slices.Contains(targets, a.Ifindex) {
				targets = append(targets, a.Ifindex)
			}
		}
	}
	nftTargets := map[int]bool{}
	rs, err := nft.Read(dev, ingress)
	if err != nil {
		failed("ingress", fmt.Errorf("nft: %w", err))
	} else {
		for _, c := range rs.Base {
			add("ingress", fmt.Sprintf("nft chain netdev/%s/%s (priority %d, %d rules)", c.Table, c.Name, c.Priority, len(c.Rules)),
				"mirrored (see flow show)")
		}
		for _, c := range rs.ForeignIngress() {
			add("ingress", fmt.Sprintf("nft %s (priority %d)", c.What, c.Priority),
				fmt.Sprintf("not mirrored: netdev chains of priority %d and later are punted", c.Priority))
		}
		_, statuses := nft.Compile(rs, nft.Limits{Subtables: 1 << 20, Flows: 1 << 30, Rules: 1 << 30})
		offloadable, installed := 0, 0
		for _, in := range t.Rules() {
			if in.Rule.Source == rule.SourceNFT {
				installed++
			}
		}
		for _, st := range statuses {
			if st.Offloaded {
				offloadable++
			}
		}
		if offloadable > 0 && installed == 0 {
			held = append(held, fmt.Sprintf("nft: %d rules could run in XDP and none is installed: the daemon is not running, or could not read nft's rules (see its log)", offloadable))
		}
		for _, st := range statuses {
			for _, t := range st.FwdTo {
				nftTargets[t] = true
				if !slices.Contains(targets, t) {
					targets = append(targets, t)
				}
			}
		}
	}
	sort.Ints(targets)
	for _, t := range targets {
		name := fmt.Sprintf("ifindex %d", t)
		if ifi, err := net.InterfaceByIndex(t); err == nil {
			name = ifi.Name
		}
		where := "egress of " + name
		hooks, err := loader.EgressHooks(t)
		if err != nil {
			failed(where, err)
			continue
		}
		for _, h := range hooks {
			add(where, h.What, "skipped by an XDP redirect: redirects to "+name+" are punted")
		}
		var chains []string
		if nftTargets[t] && rs != nil {
			chains = rs.EgressChains(name)
		}
		for _, c := range chains {
			add(where, "nft chain netdev/"+c, "run by nft's fwd (not by TC's mirred): nft fwd to "+name+" is punted")
		}
		if len(hooks)+len(chains) == 0 {
			add(where, "nothing that decides a packet's fate", "redirects to "+name+" run in XDP")
		}
	}
	return out, held
}

// kernelFilters reads a device's ingress filters (none without an ingress
// qdisc).
func kernelFilters(dev string, ifindex int) ([]*flower.KernelFilter, error) {
	rd, err := flower.NewReader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return rd.Filters(dev, ifindex)
}
