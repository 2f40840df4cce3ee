package offload

import (
	"fmt"
	"net"
	"slices"
	"sort"

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
	h := &hookList{nftTargets: map[int]bool{}}
	h.heldTC(t)
	h.ingressHooks(ifindex)
	h.tcFilters(dev, ifindex)
	h.nftChains(t, dev, ifindex)
	h.targetEgress()
	return h.out, h.held
}

// hookList is what Hooks has found so far.
type hookList struct {
	out        []HookStatus
	held       []string
	targets    []int        // the devices rules redirect to
	nftTargets map[int]bool // those of nft's fwd
	rs         *nft.Ruleset
}

func (h *hookList) add(where, what, does string) {
	h.out = append(h.out, HookStatus{where, what, does})
}

func (h *hookList) failed(where string, err error) {
	h.add(where, "unreadable: "+err.Error(), "cannot tell; the daemon punts what depends on it")
}

func (h *hookList) addTarget(ifindex int) {
	if !slices.Contains(h.targets, ifindex) {
		h.targets = append(h.targets, ifindex)
	}
}

// heldTC notes a table that punts everything because TC's filters could
// not be mirrored.
func (h *hookList) heldTC(t *maps.Table) {
	for _, in := range t.Rules() {
		if r := in.Rule; r.Source == rule.SourceTC && r.Handle == UnreadableHandle && r.Prio == 1 && len(r.Keys) == 0 {
			h.held = append(h.held, "tc: every packet goes to the kernel: the daemon could not read or install TC's filters (see its log); it tries again every second")
		}
	}
}

// ingressHooks lists what runs at the ingress before TC and nft.
func (h *hookList) ingressHooks(ingress int) {
	hooks, err := loader.IngressHooks(ingress)
	if err != nil {
		h.failed("ingress", err)
	}
	for _, hk := range hooks {
		h.add("ingress", hk.What, "runs before TC and nft: every rule of the device is punted")
	}
	if err := loader.CheckVLANVisible(ingress); err != nil {
		h.add("ingress", "VLAN tags outside the frame: "+err.Error(), "every rule of the device is punted")
	}
}

// tcFilters lists the device's TC ingress filters and notes the devices
// they redirect to.
func (h *hookList) tcFilters(dev string, ifindex int) {
	filters, err := KernelFilters(dev, ifindex)
	if err != nil {
		h.failed("ingress", fmt.Errorf("tc filters: %w", err))
	}
	if len(filters) > 0 {
		h.add("ingress", fmt.Sprintf("tc ingress filters: %d", len(filters)), "mirrored (see flow show)")
	}
	for _, f := range filters {
		if f.Rule == nil {
			continue
		}
		for _, a := range f.Rule.Actions {
			if a.Kind == rule.ActRedirect {
				h.addTarget(a.Ifindex)
			}
		}
	}
}

// nftChains lists the device's nft ingress chains, notes nft rules that
// could run in XDP and are not in t, and the devices nft forwards to.
func (h *hookList) nftChains(t *maps.Table, dev string, ingress int) {
	rs, err := nft.Read(dev, ingress)
	h.rs = rs
	if err != nil {
		h.failed("ingress", fmt.Errorf("nft: %w", err))
		return
	}
	for _, c := range rs.Base {
		h.add("ingress", fmt.Sprintf("nft chain netdev/%s/%s (priority %d, %d rules)", c.Table, c.Name, c.Priority, len(c.Rules)),
			"mirrored (see flow show)")
	}
	for _, c := range rs.ForeignIngress() {
		h.add("ingress", fmt.Sprintf("nft %s (priority %d)", c.What, c.Priority),
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
		h.held = append(h.held, fmt.Sprintf("nft: %d rules could run in XDP and none is installed: the daemon is not running, or could not read nft's rules (see its log)", offloadable))
	}
	for _, st := range statuses {
		for _, t := range st.FwdTo {
			h.nftTargets[t] = true
			h.addTarget(t)
		}
	}
}

// targetEgress lists what runs on the egress of each device rules
// redirect to, which an XDP redirect skips.
func (h *hookList) targetEgress() {
	sort.Ints(h.targets)
	for _, t := range h.targets {
		name := fmt.Sprintf("ifindex %d", t)
		if ifi, err := net.InterfaceByIndex(t); err == nil {
			name = ifi.Name
		}
		where := "egress of " + name
		hooks, err := loader.EgressHooks(t)
		if err != nil {
			h.failed(where, err)
			continue
		}
		for _, hk := range hooks {
			h.add(where, hk.What, "skipped by an XDP redirect: redirects to "+name+" are punted")
		}
		var chains []string
		if h.nftTargets[t] && h.rs != nil {
			chains = h.rs.EgressChains(name)
		}
		for _, c := range chains {
			h.add(where, "nft chain netdev/"+c, "run by nft's fwd (not by TC's mirred): nft fwd to "+name+" is punted")
		}
		if len(hooks)+len(chains) == 0 {
			h.add(where, "nothing that decides a packet's fate", "redirects to "+name+" run in XDP")
		}
	}
}
