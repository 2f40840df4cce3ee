package daemon

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
)

type daemon struct {
	mu      sync.Mutex // one sync at a time: nft changes, device changes
	bpffs   string
	log     *Log
	devices []string // enabled at the last sync
	open    map[string]*openTable
	paths   *loader.Paths
	reader  *nft.Reader
	// TC flower mirroring.
	tcReader  *flower.Reader
	policy    maps.Policy    // how TC filters are mirrored: the daemon's own, set on every device it opens
	ifindexes map[int]string // enabled devices by ifindex, at the last sync
	// tcMirror: each device's ingress filters as of its last dump and
	// the notifications since (see syncTCChanges), by ifindex.
	tcMirror map[int]*tcMirror
	fwd      *offload.Checks // the mirrors' redirect checks
	warm     bool            // ask fwd about every enabled device after a full sync
	tcDumps  map[int]uint64  // dumps taken of each device, by ifindex
	// tcBlocks: the shared block bound at each enabled device's ingress
	// (0: its own), as of its last dump: a block's filter notifications
	// are changes of every device bound to it.
	tcBlocks map[int]uint32
	// failRead, when a test sets it, fails the daemon's reads of "tc"
	// or "nft" state with the error it returns.
	failRead func(src string) error
	// metrics: the Prometheus endpoint's sync metrics (nil without
	// --metrics).
	metrics *daemonMetrics
	// inst: the namespace's daemon socket (nil for --once), told of
	// each sync's outcome.
	inst *instance
	// retry: devices whose last sync could not read what the kernel
	// holds (their rules are punted meanwhile), synced again each second.
	retry map[string]bool
}

// retryLater has dev synced again at the next tick.
func (d *daemon) retryLater(dev string) {
	if d.retry == nil {
		d.retry = map[string]bool{}
	}
	d.retry[dev] = true
}

// pathsOnce finds bpffs once: it does not move under a running daemon, and
// finding it from inside `ip netns exec` walks /proc (hundreds of µs).
func (d *daemon) pathsOnce() (loader.Paths, error) {
	if d.paths == nil {
		p, err := loader.NewPaths(d.bpffs)
		if err != nil {
			return p, err
		}
		d.paths = &p
	}
	return *d.paths, nil
}

// syncAll brings every enabled device's nft rules up to date; it returns
// the errors it logged.
func (d *daemon) syncAll(why string) error {
	devs, err := d.enabledDevices(true)
	if err != nil {
		return err
	}
	d.devices = devs
	if d.reader != nil {
		// nft rules can go without a notification (a netdev chain of a
		// device that went, a table whose owner exited): a full sync
		// reads them all.
		d.reader.Reread()
	}
	if p, err := d.pathsOnce(); err == nil {
		RemoveStaleNamespaces(p, d.log.Writer())
	}
	for dev, o := range d.open {
		if !slices.Contains(devs, dev) {
			o.close()
			delete(d.open, dev)
		}
	}
	// Every device's filters are read again below, and every redirect
	// checked again.
	d.ifindexes, d.tcMirror, d.fwd = map[int]string{}, nil, nil
	var errs []error
	for _, dev := range devs {
		errs = append(errs, d.syncDevice(dev, why)...)
	}
	if d.warm {
		go d.warmForwards() // waits for d.mu, which the caller holds
	}
	err = errors.Join(errs...)
	d.inst.synced(err)
	return err
}

// closeReaders drops the kernel-state readers: the next sync opens fresh
// ones. The caller holds d.mu.
func (d *daemon) closeReaders() {
	d.closeNFTReader()
	d.closeTCReader()
}

func (d *daemon) closeNFTReader() {
	if d.reader != nil {
		d.reader.Close()
		d.reader = nil
	}
}

func (d *daemon) closeTCReader() {
	if d.tcReader != nil {
		d.tcReader.Close()
		d.tcReader = nil
	}
}

// readRetried reads what the kernel holds of src with read (which opens
// its reader when there is none). A failure is tried once more on a fresh
// reader (a socket in a bad state: overrun mid-dump); a second one drops
// the reader, so the next sync opens another. The caller holds d.mu.
func (d *daemon) readRetried(src string, read func() error, closeReader func()) error {
	try := func() error {
		err := read()
		if err == nil && d.failRead != nil {
			err = d.failRead(src)
		}
		return err
	}
	err := try()
	if err != nil {
		closeReader()
		err = try()
	}
	if err != nil {
		closeReader()
	}
	return err
}

// enabledDevices lists the enabled devices, after moving renamed ones'
// pins to their new names if follow; it logs what failed.
func (d *daemon) enabledDevices(follow bool) ([]string, error) {
	p, err := d.pathsOnce()
	if err == nil && follow {
		err = d.followRenames(p)
	}
	var devs []string
	if err == nil {
		devs, err = loader.List(p)
	}
	if err != nil {
		d.log.Errorf("%v", err)
		return nil, err
	}
	return devs, nil
}

// followRenames moves the pins of renamed devices to their new names
// (loader.FollowRenames) and forgets their open tables, which are keyed
// by the old names.
func (d *daemon) followRenames(p loader.Paths) error {
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	renamed, err := loader.FollowRenames(p)
	if err != nil {
		return err
	}
	for from, to := range renamed {
		d.log.Printf("%s: renamed to %s: its pins, program and rules follow", from, to)
		if o := d.open[from]; o != nil {
			o.close()
			delete(d.open, from)
		}
	}
	return nil
}

// syncDevice brings one device's TC and nft rules up to date, logging and
// returning what failed.
func (d *daemon) syncDevice(dev, why string) []error {
	var errs []error
	// TC first: nft rules come after TC's in XDP as in the kernel, and
	// must never run before the TC filters in front of them are there.
	if err := d.syncTC(dev, why); err != nil {
		d.log.Errorf("%s: %v", dev, err)
		d.metrics.failed(dev)
		errs = append(errs, fmt.Errorf("%s: %w", dev, err))
	}
	if err := d.syncNFT(dev, why); err != nil {
		d.log.Errorf("%s: %v", dev, err)
		d.metrics.failed(dev)
		errs = append(errs, fmt.Errorf("%s: %w", dev, err))
	}
	return errs
}

// logSync reports one sync of a device's rules from one source.
func (d *daemon) logSync(dev, src, why, what string, n, offloaded, added, removed int, start time.Time) {
	d.metrics.synced(dev, src, time.Since(start))
	d.log.Printf("%s: %s (%s): %d %s, %d offloaded; installed +%d -%d in %.2f ms",
		dev, src, why, n, what, offloaded, added, removed, float64(time.Since(start).Microseconds())/1000)
}
