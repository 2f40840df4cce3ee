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
	MaxSubtables int    // distinct masks, at most maps.MaxSubtables
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

// MapsByName is the device's pinned maps by their names in the program,
// for loading another instance of the program over them (a benchmark's
// program without its cache).
func (d *Device) MapsByName() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	for name, m := range mapFields(&d.Maps) {
		out[name] = *m
	}
	return out
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
		if errors.Is(err, os.ErrNotExist) {
			d.Close()
			return nil, fmt.Errorf("%s: no pinned map %s: the device was enabled by another xdpflow version; disable and enable it again", dev, name)
		}
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
