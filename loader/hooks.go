package loader

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A Hook is something the kernel runs on a device's packets that an XDP
// decision would overtake: on the ingress device, before the TC and nft
// rules xdpflow mirrors; on a redirect target, on the way out, which an
// XDP redirect skips (the kernel's mirred and fwd go through
// dev_queue_xmit, XDP's redirect through ndo_xdp_xmit).
type Hook struct {
	Dev  string
	What string // "tcx egress program 42 (name)", "root qdisc tbf", ...
}

func (h Hook) String() string { return h.Dev + ": " + h.What }

// fifoQdiscs are the root qdiscs that decide no packet's fate by policy
// (a full queue drops, as a full XDP ring does): the kernel's and
// systemd's defaults, and plain FIFOs. Any other qdisc may drop, delay
// past a deadline, or classify with filters.
var fifoQdiscs = []string{"noqueue", "pfifo_fast", "pfifo", "bfifo", "mq", "fq_codel", "fq"}

// EgressHooks lists what runs on ifindex's egress path and could decide a
// packet's fate there: a root qdisc other than a FIFO (or an mq of FIFOs),
// clsact egress filters, tcx egress programs. nft's netdev egress chains
// are nft's to read (package nft).
func EgressHooks(ifindex int) ([]Hook, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("ifindex %d: no such device", ifindex)
	}
	name := l.Attrs().Name
	var hooks []Hook
	qdiscs, err := netlink.QdiscList(l)
	if err != nil {
		return nil, fmt.Errorf("%s: list qdiscs: %w", name, err)
	}
	clsact := false
	for _, q := range qdiscs {
		switch kind := q.Type(); {
		case kind == "clsact":
			clsact = true
		case kind == "ingress":
		case slices.Contains(fifoQdiscs, kind):
			// A FIFO decides nothing, but some (fq_codel) take filters,
			// which may drop.
			if h := q.Attrs().Handle; h != 0 {
				filters, err := netlink.FilterList(l, h)
				if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOENT) {
					return nil, fmt.Errorf("%s: list filters of qdisc %s: %w", name, netlink.HandleStr(h), err)
				}
				for _, f := range filters {
					hooks = append(hooks, Hook{name, fmt.Sprintf("filter pref %d %s on qdisc %s (handle %s)",
						f.Attrs().Priority, f.Type(), kind, netlink.HandleStr(h))})
				}
			}
		default:
			hooks = append(hooks, Hook{name, fmt.Sprintf("qdisc %s (handle %s)", kind, netlink.HandleStr(q.Attrs().Handle))})
		}
	}
	// Only clsact has an egress block: the ingress qdisc answers a dump
	// of any parent with its ingress filters (ingress_tcf_block).
	if clsact {
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: list clsact egress filters: %w", name, err)
		}
		for _, f := range filters {
			if a := f.Attrs(); a.Parent == netlink.HANDLE_MIN_EGRESS {
				hooks = append(hooks, Hook{name, fmt.Sprintf("clsact egress filter pref %d %s", a.Priority, f.Type())})
			}
		}
	}
	progs, err := tcxPrograms(ifindex, ebpf.AttachTCXEgress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, p := range progs {
		hooks = append(hooks, Hook{name, "tcx egress program " + p})
	}
	return hooks, nil
}

// IngressHooks lists what runs on ifindex's ingress before TC's flower
// filters and that xdpflow does not mirror: tcx ingress programs
// (sch_handle_ingress runs them before the clsact filters). nft's inet
// ingress chains are nft's to read.
func IngressHooks(ifindex int) ([]Hook, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("ifindex %d: no such device", ifindex)
	}
	progs, err := tcxPrograms(ifindex, ebpf.AttachTCXIngress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.Attrs().Name, err)
	}
	var hooks []Hook
	for _, p := range progs {
		hooks = append(hooks, Hook{l.Attrs().Name, "tcx ingress program " + p})
	}
	return hooks, nil
}

// tcxPrograms names the programs attached to ifindex's tcx hook: "id
// (name)". A kernel without tcx (before 6.6) has none.
func tcxPrograms(ifindex int, attach ebpf.AttachType) ([]string, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("query %s programs: %w", attach, err)
	}
	var out []string
	for _, ap := range res.Programs {
		out = append(out, programName(ap.ID))
	}
	return out, nil
}

// programName is "id (name)" for a loaded program, or "id".
func programName(id ebpf.ProgramID) string {
	s := fmt.Sprint(id)
	if p, err := ebpf.NewProgramFromID(id); err == nil {
		if info, err := p.Info(); err == nil && info.Name != "" {
			s += " (" + info.Name + ")"
		}
		p.Close()
	}
	return s
}

// HooksError is a decision refused because other hooks would see the
// packet first (ingress) or on its way out (a redirect target's egress).
type HooksError struct {
	Where   string // "the ingress of eth0", "the egress of eth1"
	Ingress bool
	Hooks   []Hook
}

func (e *HooksError) Error() string {
	var what []string
	for _, h := range e.Hooks {
		what = append(what, h.What)
	}
	if e.Ingress {
		return fmt.Sprintf("%s runs %s before TC and nft, which an XDP decision would overtake", e.Where, strings.Join(what, ", "))
	}
	return fmt.Sprintf("%s runs %s, which XDP would skip", e.Where, strings.Join(what, ", "))
}

// CheckIngressHooks refuses XDP decisions on ifindex while something the
// kernel runs before TC's filters (IngressHooks) would be overtaken.
func CheckIngressHooks(ifindex int) error {
	hooks, err := IngressHooks(ifindex)
	if err != nil {
		return fmt.Errorf("cannot read what runs at ingress: %w", err)
	}
	if len(hooks) > 0 {
		return &HooksError{Where: "the ingress of " + hooks[0].Dev, Ingress: true, Hooks: hooks}
	}
	return nil
}
