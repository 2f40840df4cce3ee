package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
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
	tcReader     *flower.Reader
	mirrorSkipHW bool
	keepalive    time.Duration  // given to offloaded TC filters (rule.Rule.Keepalive)
	ifindexes    map[int]string // enabled devices by ifindex, at the last sync
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

// openTable is a device's table kept open between syncs, so a change costs
// no reopen: valid while the device's pin directory is the same one and no
// other process changed the table since (the cache generation says).
type openTable struct {
	dev   *loader.Device
	table *maps.Table
	ino   uint64
	gen   uint32
}

func (o *openTable) close() { o.dev.Close() }

func dirInode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// table returns dev's open table, reopening it when it went stale. The
// caller holds the namespace lock.
func (d *daemon) table(p loader.Paths, dev string) (*openTable, error) {
	if d.open == nil {
		d.open = map[string]*openTable{}
	}
	ino := dirInode(p.Device(dev))
	if o := d.open[dev]; o != nil {
		if gen, err := o.table.Generation(); err == nil && gen == o.gen && o.ino == ino && ino != 0 {
			return o, nil
		}
		o.close()
		delete(d.open, dev)
	}
	ld, err := loader.Open(p, dev)
	if err != nil {
		return nil, err
	}
	t, err := maps.Open(&ld.Maps, offload.RuleParser(dev))
	if err != nil {
		ld.Close()
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	// Changes return as soon as they are live; slots they free wait for
	// running programs in the background (maps.Table.DeferGrace).
	t.DeferGrace()
	o := &openTable{dev: ld, table: t, ino: ino}
	if o.gen, err = t.Generation(); err != nil {
		ld.Close()
		return nil, err
	}
	d.open[dev] = o
	return o, nil
}

// settle frees what the tables hold from earlier changes whose grace
// periods are over and records that nothing is held, so other processes
// writing to them need not wait a grace period first. It waits for grace
// periods still running only when stopping (a wait each second would hold
// up the next sync). The caller holds d.mu.
func (d *daemon) settle(wait bool) {
	for dev, o := range d.open {
		if !o.table.Pending() {
			continue
		}
		p, err := d.pathsOnce()
		if err != nil {
			return
		}
		unlock, err := p.Lock()
		if err != nil {
			d.log.Errorf("%s: %v", dev, err)
			d.metrics.failed(dev)
			continue
		}
		// Only if no other process changed the table since.
		if gen, err := o.table.Generation(); err == nil && gen == o.gen {
			var err error
			if wait {
				err = o.table.Settle()
			} else {
				_, err = o.table.TrySettle()
			}
			if err != nil {
				d.log.Errorf("%s: %v", dev, err)
				d.metrics.failed(dev)
			}
		}
		unlock()
	}
}

// syncAll brings every enabled device's nft rules up to date; it returns
// the errors it logged.
func (d *daemon) syncAll(why string) error {
	devs, err := d.enabledDevices(true)
	if err != nil {
		return err
	}
	d.devices = devs
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

// syncNFTAll brings every enabled device's nft rules up to date after an
// nft change: TC's filters did not change, and the device list is checked
// only by name (one readdir; a rename comes with a link event, which
// syncs all). It returns the errors it logged.
func (d *daemon) syncNFTAll(why string) error {
	devs, err := d.enabledDevices(false)
	if err != nil {
		return err
	}
	if !slices.Equal(devs, d.devices) {
		return d.syncAll(why)
	}
	var errs []error
	for _, dev := range devs {
		if err := d.syncNFT(dev, why); err != nil {
			d.log.Errorf("%s: %v", dev, err)
			d.metrics.failed(dev)
			errs = append(errs, fmt.Errorf("%s: %w", dev, err))
		}
	}
	err = errors.Join(errs...)
	d.inst.synced(err)
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

// withTable runs fn on dev's open table under the namespace lock.
func (d *daemon) withTable(dev string, fn func(o *openTable) error) error {
	p, err := d.pathsOnce()
	if err != nil {
		return err
	}
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	o, err := d.table(p, dev)
	if err != nil {
		return err
	}
	defer func() {
		// Whatever happened, remember the generation this process left.
		if gen, err := o.table.Generation(); err == nil {
			o.gen = gen
		}
	}()
	return fn(o)
}

func (d *daemon) syncNFT(dev, why string) error {
	start := time.Now()
	return d.withTable(dev, func(o *openTable) error {
		var rs *nft.Ruleset
		err := d.readRetried("nft", func() (err error) {
			if d.reader == nil {
				if d.reader, err = nft.NewReader(); err != nil {
					return err
				}
			}
			rs, err = d.reader.Read(dev, o.dev.Ifindex)
			return err
		}, d.closeNFTReader)
		if err != nil {
			// XDP must not go on running rules nft may no longer have:
			// every nft rule out, so nft decides all of their packets,
			// until a read succeeds (the daemon tries every second).
			d.retryLater(dev)
			_, _, rerr := nft.Sync(o.table, nil)
			return errors.Join(fmt.Errorf("nft: read: %w (nft rules left to the kernel until a read succeeds)", err), rerr)
		}
		opt := d.mirrorOptions(o.dev.Ifindex)
		rs.CheckFwd, rs.Blocked = opt.CheckRedirect, opt.Blocked
		sub, flows, rules := o.table.Room(rule.SourceNFT)
		want, statuses := nft.Compile(rs, nft.Limits{Subtables: sub, Flows: flows, Rules: rules})
		added, removed, err := nft.Sync(o.table, want)
		if err != nil {
			// XDP must not keep running rules nft no longer has: take every nft
			// rule out, so nft handles all of their packets again.
			_, _, rerr := nft.Sync(o.table, nil)
			return errors.Join(fmt.Errorf("nft: install: %w (nft rules left to the kernel)", err), rerr)
		}
		if added+removed > 0 || why != "nft" {
			off := countIf(statuses, func(st *nft.Status) bool { return st.Offloaded })
			d.logSync(dev, "nft", why, "rules", len(statuses), off, added, removed, start)
		}
		return nil
	})
}

// countIf counts the elements of s that f holds for.
func countIf[T any](s []T, f func(T) bool) int {
	n := 0
	for _, x := range s {
		if f(x) {
			n++
		}
	}
	return n
}

// logSync reports one sync of a device's rules from one source.
func (d *daemon) logSync(dev, src, why, what string, n, offloaded, added, removed int, start time.Time) {
	d.metrics.synced(dev, src, time.Since(start))
	d.log.Printf("%s: %s (%s): %d %s, %d offloaded; installed +%d -%d in %.2f ms",
		dev, src, why, n, what, offloaded, added, removed, float64(time.Since(start).Microseconds())/1000)
}

// batcher is what a watch does with one multicast socket's notifications.
type batcher interface {
	add(msgs []netlink.Message) // note what changed
	lost()                      // the socket overran: anything may have changed
	ready() bool                // something to act on
	flush()                     // act on it, and forget it
}

// follow reads c's notifications until ctx ends and hands them to b. It
// acts in the goroutine that reads: handing over to another goroutine
// costs a thread wakeup, 0.1-0.3 ms on this class of VM, a third of the
// time from a change to XDP. What queued up meanwhile (during a sync, or a
// burst of changes) is taken in one go and acted on once: b acts when it
// is ready and nothing more is queued.
func follow(ctx context.Context, c *netlink.Conn, lg *Log, name string, b batcher) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		msgs, err := c.Receive()
		switch {
		case err == nil:
			b.add(msgs)
		case ctx.Err() != nil:
			return
		case errors.Is(err, unix.ENOBUFS):
			b.lost()
		default:
			// What failed to arrive is unknown: everything is read again
			// (and every 100 ms while the socket keeps failing).
			lg.Errorf("%s: %v (reading everything again)", name, err)
			time.Sleep(100 * time.Millisecond)
			b.lost()
			b.flush()
			continue
		}
		if b.ready() && !queued(c) {
			b.flush()
		}
	}
}

// queued reports whether c has a datagram (or an error) waiting, without
// waiting for one. (A read deadline in the past does not do: Go returns
// the timeout before it reads, and a burst of 2,000 TC filters was then
// handled one notification at a time, each a sync of the device.)
func queued(c *netlink.Conn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLERR) != 0
	})
	return ready
}

// dialGroups opens a netlink socket subscribed to groups; call it before
// reading the state it reports on, so no change falls between the read and
// the subscription.
func dialGroups(family int, name string, groups ...uint32) (*netlink.Conn, error) {
	c, err := netlink.Dial(family, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, g := range groups {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: join group %d: %w", name, g, err)
		}
	}
	// Room for a burst (Open vSwitch installs thousands of flows at
	// once; an overrun costs a resync of everything). SO_RCVBUF stops at
	// net.core.rmem_max, 208 KB by default: a few hundred notifications;
	// root may go past it with SO_RCVBUFFORCE.
	_ = c.SetReadBuffer(8 << 20)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
	}
	return c, nil
}

// nftBatch follows nftables (NFNLGRP_NFTABLES): it acts after committed
// transactions — the kernel ends each with NFT_MSG_NEWGEN — with the kinds
// of objects they changed. A lost notification makes everything stale.
type nftBatch struct {
	kinds     nft.Kinds
	committed bool
	gen       uint32 // the last NEWGEN's generation id
	genKnown  bool   // gen holds it, and nothing since was lost
	changed   func(k nft.Kinds, gen uint32, genKnown bool)
}

func (b *nftBatch) add(msgs []netlink.Message) {
	newgen := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)
	for _, m := range msgs {
		if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue
		}
		b.kinds |= nft.KindsOf(uint16(m.Header.Type) & 0xff)
		if m.Header.Type == newgen {
			b.committed = true
			b.gen, b.genKnown = nft.GenOf(m)
		}
	}
}

func (b *nftBatch) lost()       { b.kinds, b.committed, b.genKnown = nft.KindAll, true, false }
func (b *nftBatch) ready() bool { return b.committed }
func (b *nftBatch) flush() {
	k := b.kinds
	b.kinds, b.committed = 0, false
	b.changed(k, b.gen, b.genKnown)
	b.genKnown = false
}
