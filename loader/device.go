package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/maps"
)

// Mode is the XDP attach mode.
type Mode string

const (
	ModeNative  Mode = "native"
	ModeGeneric Mode = "generic"
)

// Options are the sizes and mode chosen at enable time.
type Options struct {
	Mode         Mode
	MaxFlows     uint32 // flow entries (after range expansion)
	MaxRules     uint32 // rules (and per-rule counters)
	MaxSubtables int    // distinct (priority, mask) pairs, at most maps.MaxSubtables
	CacheEntries int    // flow cache entries per CPU (maps.SizeSpec)
}

// DefaultOptions are used for what enable is not told.
var DefaultOptions = Options{Mode: ModeNative, MaxFlows: 65536, MaxRules: 16384, MaxSubtables: maps.MaxSubtables,
	CacheEntries: maps.DefaultCacheEntries}

const (
	pinProg   = "prog"
	pinLink   = "link"
	pinPolicy = "policy" // the mirror policy (maps.Policy); made when first set
)

// ErrNotEnabled is returned for a device xdpflow is not enabled on.
var ErrNotEnabled = errors.New("xdpflow is not enabled on this device")

// Device is one enabled device's pinned objects.
type Device struct {
	Name    string
	Ifindex int
	Dir     string
	Maps    bpf.XdpflowMaps
	Prog    *ebpf.Program
	Link    link.Link // nil when attached through netlink (kernels without XDP links)
	policy  *ebpf.Map // nil until a policy is set
}

// Close releases the handles; the pins (and so the attachment) remain.
func (d *Device) Close() {
	if d.Link != nil {
		d.Link.Close()
	}
	if d.Prog != nil {
		d.Prog.Close()
	}
	if d.policy != nil {
		d.policy.Close()
	}
	_ = d.Maps.Close()
}

// mapFields lists the generated map fields with their names.
func mapFields(m *bpf.XdpflowMaps) map[string]**ebpf.Map {
	out := map[string]**ebpf.Map{}
	v := reflect.ValueOf(m).Elem()
	tp := v.Type()
	for i := 0; i < tp.NumField(); i++ {
		if name := tp.Field(i).Tag.Get("ebpf"); name != "" {
			out[name] = v.Field(i).Addr().Interface().(**ebpf.Map)
		}
	}
	return out
}

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

// Open opens an enabled device's pinned objects.
func Open(p Paths, dev string) (*Device, error) {
	dir := p.Device(dev)
	if ok, err := p.trustTree(false); err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	} else if !ok {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotEnabled)
	}
	if ok, err := trustDeviceDir(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	} else if !ok {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotEnabled)
	}
	d := &Device{Name: dev, Dir: dir}
	for name, m := range mapFields(&d.Maps) {
		pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("%s: open pinned map %s: %w", dev, name, err)
		}
		*m = pm
	}
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(dir, pinProg), nil)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: open pinned program: %w", dev, err)
	}
	d.Prog = prog
	if lk, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); err == nil {
		d.Link = lk
	}
	if pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinPolicy), nil); err == nil {
		d.policy = pm
	} else if !errors.Is(err, os.ErrNotExist) {
		d.Close()
		return nil, fmt.Errorf("%s: open pinned mirror policy: %w", dev, err)
	}
	if a, err := maps.ReadAttachment(d.Maps.Meta); err == nil {
		d.Ifindex = a.Ifindex
	}
	return d, nil
}

// Policy is how the device's TC filters are mirrored.
func (d *Device) Policy() (maps.Policy, error) { return maps.ReadPolicy(d.policy) }

// SetPolicy sets how the device's TC filters are mirrored, pinning the
// policy's map first if the device has none yet. The caller holds the
// namespace's lock.
func (d *Device) SetPolicy(p maps.Policy) error {
	if d.policy != nil {
		return maps.WritePolicy(d.policy, p)
	}
	m, err := ebpf.NewMap(maps.PolicyMapSpec())
	if err != nil {
		return fmt.Errorf("%s: mirror policy: %w", d.Name, err)
	}
	// Written before it is pinned: no process reads a policy never set.
	if err := maps.WritePolicy(m, p); err != nil {
		m.Close()
		return err
	}
	if err := m.Pin(filepath.Join(d.Dir, pinPolicy)); err != nil {
		m.Close()
		return fmt.Errorf("%s: pin mirror policy: %w", d.Name, err)
	}
	d.policy = m
	return nil
}

// attachedTo returns the ifindex the program is attached to now, or 0.
func (d *Device) attachedTo() int {
	if d.Link != nil {
		info, err := d.Link.Info()
		if err != nil {
			return 0
		}
		if x := info.XDP(); x != nil {
			return int(x.Ifindex)
		}
		return 0
	}
	// netlink attachment: is our program the one on the device?
	l, err := netlink.LinkByIndex(d.Ifindex)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return 0
	}
	info, err := d.Prog.Info()
	if err != nil {
		return 0
	}
	if id, ok := info.ID(); ok && uint32(id) == l.Attrs().Xdp.ProgId {
		return d.Ifindex
	}
	return 0
}

// Attached reports whether the program is attached to the device it was
// enabled on, and the mode.
func (d *Device) Attached() (bool, Mode) {
	mode := ModeNative
	if a, err := maps.ReadAttachment(d.Maps.Meta); err == nil && link.XDPAttachFlags(a.AttachFlags)&link.XDPGenericMode != 0 {
		mode = ModeGeneric
	}
	return d.Ifindex != 0 && d.attachedTo() == d.Ifindex, mode
}

// ProgramID returns the kernel's id of the device's program.
func (d *Device) ProgramID() uint32 {
	info, err := d.Prog.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// Disable detaches xdpflow from dev and removes every pin enable created.
func Disable(p Paths, dev string) error {
	d, err := Open(p, dev)
	if err != nil {
		if errors.Is(err, ErrNotEnabled) || errors.Is(err, ErrUntrustedTree) {
			return err
		}
		// Half-readable state: still remove it.
		return removePins(p.Device(dev))
	}
	attachedTo := d.attachedTo()
	if d.Link == nil && attachedTo != 0 {
		if l, err := netlink.LinkByIndex(attachedTo); err == nil {
			if err := netlink.LinkSetXdpFd(l, -1); err != nil {
				d.Close()
				return fmt.Errorf("disable %s: detach: %w", dev, err)
			}
		}
	}
	d.Close()
	return removePins(p.Device(dev))
}

// removePins unpins exactly the objects enable creates, then the
// directory, following no link: the names are removed relative to the
// directory opened with O_NOFOLLOW, and a link named like one is removed
// as the link.
func removePins(dir string) error {
	parent, err := unix.Open(filepath.Dir(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(dir), err)
	}
	defer unix.Close(parent)
	fd, err := unix.Openat(parent, filepath.Base(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w: %s is not a directory (a link?); remove it", ErrUntrustedTree, dir)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	names := []string{pinLink, pinProg, pinPolicy}
	for name := range mapFields(&bpf.XdpflowMaps{}) {
		names = append(names, name)
	}
	for _, n := range names {
		if err := unix.Unlinkat(fd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unpin %s: %w", filepath.Join(dir, n), err)
		}
	}
	if err := unix.Unlinkat(parent, filepath.Base(dir), unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// List returns the devices enabled in this network namespace.
func List(p Paths) ([]string, error) {
	if ok, err := p.trustTree(false); err != nil || !ok {
		return nil, err
	}
	ents, err := os.ReadDir(p.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), tempPrefix) {
			out = append(out, ifName(e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}
