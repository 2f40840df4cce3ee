package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/maps"
)

func xdpFlags(mode Mode) (link.XDPAttachFlags, error) {
	switch mode {
	case ModeNative, "":
		return link.XDPDriverMode, nil
	case ModeGeneric:
		return link.XDPGenericMode, nil
	}
	return 0, fmt.Errorf("unknown mode %q (native or generic)", mode)
}

// foreignXDP describes an XDP program on the device that is not ours.
func foreignXDP(l netlink.Link) error {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return nil
	}
	name := ""
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if info, err := p.Info(); err == nil {
			name = " (" + info.Name + ")"
		}
		p.Close()
	}
	return fmt.Errorf("%s already has XDP program id %d%s attached; xdpflow does not replace it (detach it first)",
		l.Attrs().Name, x.ProgId, name)
}

// Enable loads, pins and attaches xdpflow on dev. Enabling an enabled
// device is a no-op that reports so (enabled == false).
func Enable(p Paths, dev string, opts Options) (enabled bool, err error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return false, fmt.Errorf("enable %s: no such device", dev)
	}
	ifindex := l.Attrs().Index
	if attached, err := clearStale(p, dev, ifindex); err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	} else if attached {
		return false, nil
	}
	flags, err := checkEnable(l, opts)
	if err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}
	objs, err := loadObjects(l, opts)
	if err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}
	defer objs.Close()
	if err := maps.Init(&objs.XdpflowMaps, opts.MaxSubtables, uint32(ifindex), uint32(flags)); err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}

	// Pin everything in a temporary directory, attach, then rename it
	// into place: a device directory is either complete or absent.
	tmp, err := pinTemp(p, objs)
	if err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	a, err := attachXDP(l, objs.Xdpflow, flags, opts.Mode)
	if err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}
	if err := a.moveIntoPlace(tmp, p.Device(dev)); err != nil {
		return false, fmt.Errorf("enable %s: %w", dev, err)
	}
	done = true
	if a.lk != nil {
		a.lk.Close() // the pin holds the attachment now
	}
	return true, nil
}

// clearStale reports whether dev is enabled and attached to ifindex
// already; pins left by an earlier device of its name are removed.
func clearStale(p Paths, dev string, ifindex int) (attached bool, err error) {
	d, err := Open(p, dev)
	if err != nil {
		if !errors.Is(err, ErrNotEnabled) {
			return false, err
		}
		return false, nil
	}
	attached = d.attachedTo() == ifindex
	d.Close()
	if attached {
		return true, nil
	}
	// Pins of a device that went away (or an ifindex reused by a
	// new device of the same name): clear them and start afresh.
	if err := Disable(p, dev); err != nil && !errors.Is(err, ErrNotEnabled) {
		return false, fmt.Errorf("clear stale state: %w", err)
	}
	return false, nil
}

// checkEnable checks the machine, the device and the options, and
// returns the attach flags of the mode.
func checkEnable(l netlink.Link, opts Options) (link.XDPAttachFlags, error) {
	if err := checkArch(machine()); err != nil {
		return 0, err
	}
	if err := foreignXDP(l); err != nil {
		return 0, err
	}
	if opts.MaxSubtables < 1 || opts.MaxSubtables > maps.MaxSubtables {
		return 0, fmt.Errorf("subtables %d: must be 1..%d", opts.MaxSubtables, maps.MaxSubtables)
	}
	if opts.MaxFlows < 1 || opts.MaxRules < 2 {
		return 0, errors.New("flows and rules must be positive")
	}
	return xdpFlags(opts.Mode)
}

// loadObjects loads the program for l: on a veth, but in generic mode,
// the one bound to it that reads the RX VLAN metadata if the kernel takes
// it; else the plain one.
func loadObjects(l netlink.Link, opts Options) (*bpf.XdpflowObjects, error) {
	if l.Type() == "veth" && opts.Mode != ModeGeneric {
		// A veth tells where a frame's VLAN tag is outside it (the RX
		// VLAN metadata kfunc): a program bound to it leaves those
		// frames to the kernel and runs the rest. Kernels without the
		// kfunc, or without devmap redirects from device-bound programs,
		// refuse it: then the plain program, and the device check
		// (CheckVLANVisible) decides whether rules may run.
		if spec, err := bpf.LoadSpecVLANMeta(l.Attrs().Index); err == nil {
			if objs, err := loadSized(spec, opts); err == nil {
				return objs, nil
			}
		}
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("load program spec: %w", err)
	}
	return loadSized(spec, opts)
}

// loadSized sizes spec's maps by opts and loads it.
func loadSized(spec *ebpf.CollectionSpec, opts Options) (*bpf.XdpflowObjects, error) {
	if err := maps.SizeSpec(spec, opts.CacheEntries); err != nil {
		return nil, err
	}
	if err := maps.SizeTables(spec, opts.MaxFlows, opts.MaxRules); err != nil {
		return nil, err
	}
	var objs bpf.XdpflowObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the kernel refused the program: %v", ve)
		}
		return nil, fmt.Errorf("load program: %w", err)
	}
	return &objs, nil
}

// pinTemp pins the maps and the program in a new temporary directory of
// the tree; it removes the directory again if a pin fails.
func pinTemp(p Paths, objs *bpf.XdpflowObjects) (tmp string, err error) {
	if _, err := p.trustTree(true); err != nil {
		return "", err
	}
	tmp, err = os.MkdirTemp(p.Root, tempPrefix+"enable-")
	if err != nil {
		return "", err
	}
	for name, m := range mapFields(&objs.XdpflowMaps) {
		if err := (*m).Pin(filepath.Join(tmp, name)); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	if err := objs.Xdpflow.Pin(filepath.Join(tmp, pinProg)); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("pin program: %w", err)
	}
	return tmp, nil
}

// xdpAttachment is the program's attachment to a device: an XDP link, or
// through netlink (lk nil).
type xdpAttachment struct {
	l       netlink.Link
	lk      link.Link
	flags   link.XDPAttachFlags
	netlink bool
}

// attachXDP attaches prog to l, through netlink where the kernel has no
// XDP links.
func attachXDP(l netlink.Link, prog *ebpf.Program, flags link.XDPAttachFlags, mode Mode) (*xdpAttachment, error) {
	ifindex := l.Attrs().Index
	a := &xdpAttachment{l: l, flags: flags}
	var err error
	a.lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
	if errors.Is(err, ebpf.ErrNotSupported) {
		// Kernels before 5.9 have no XDP links: attach through netlink;
		// the pinned program keeps the attachment meaningful.
		err = netlink.LinkSetXdpFdWithFlags(l, prog.FD(), int(flags)|unix.XDP_FLAGS_UPDATE_IF_NOEXIST)
		a.netlink = err == nil
	}
	if err == nil {
		return a, nil
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		if l2, lerr := netlink.LinkByIndex(ifindex); lerr == nil {
			if ferr := foreignXDP(l2); ferr != nil {
				return nil, ferr
			}
		}
	}
	if mode != ModeGeneric && errors.Is(err, unix.EOPNOTSUPP) {
		return nil, fmt.Errorf("the driver has no native XDP (try \"mode generic\"): %w", err)
	}
	return nil, fmt.Errorf("attach XDP: %w", err)
}

// detach undoes the attachment.
func (a *xdpAttachment) detach() {
	if a.lk != nil {
		a.lk.Close()
	}
	if a.netlink {
		_ = netlink.LinkSetXdpFdWithFlags(a.l, -1, int(a.flags))
	}
}

// moveIntoPlace pins the link in tmp and renames tmp to dir, detaching
// if either fails.
func (a *xdpAttachment) moveIntoPlace(tmp, dir string) error {
	if a.lk != nil {
		if err := a.lk.Pin(filepath.Join(tmp, pinLink)); err != nil {
			a.detach()
			return fmt.Errorf("pin link: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if a.lk != nil {
			_ = a.lk.Unpin()
		}
		a.detach()
		return fmt.Errorf("move pins into place: %w", err)
	}
	return nil
}
