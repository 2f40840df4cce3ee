package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// tcMirror is a device's ingress filters as the daemon last mirrored
// them: the base that notifications change (syncTCChanges).
type tcMirror struct {
	set *flower.MirrorSet
	// table is the table object set's rules were installed in; another
	// one (reopened after another process wrote) may hold other rules.
	// nil: not installed (the table could not take them: a punt-all
	// stands in).
	table *maps.Table
}

// syncTC mirrors dev's ingress filters into its table: each filter of
// chain 0 as the same rule, or as a punt sending its packets on to TC. It
// reads them from the kernel (a dump), and keeps them as the base that
// notifications then change (syncTCChanges).
func (d *daemon) syncTC(dev, why string) error {
	start := time.Now()
	return d.withTable(dev, func(o *openTable) error {
		d.ifindexes[o.dev.Ifindex] = dev
		// No base while the dump is not in: a failed dump leaves none,
		// and the next notification dumps again.
		delete(d.tcMirror, o.dev.Ifindex)
		var filters []*flower.KernelFilter
		err := d.readRetried("tc", func() (err error) {
			if d.tcReader == nil {
				if d.tcReader, err = flower.NewReader(); err != nil {
					return err
				}
			}
			filters, err = d.tcReader.Filters(dev, o.dev.Ifindex)
			return err
		}, d.closeTCReader)
		if err != nil {
			// The filters TC holds are unknown: XDP must not go on running
			// the ones it last saw, nor let nft's rules behind them
			// overtake them. One punt of every packet, until a dump
			// succeeds (the daemon tries every second).
			d.retryLater(dev)
			_, _, rerr := o.table.SyncSource(rule.SourceTC, []*rule.Rule{offload.PuntEverything(dev)})
			return errors.Join(fmt.Errorf("tc: read filters: %w (every packet left to the kernel until a read succeeds)", err), rerr)
		}
		if d.tcMirror == nil {
			d.tcMirror = map[int]*tcMirror{}
		}
		if d.tcDumps == nil {
			d.tcDumps = map[int]uint64{} // never reset: counts only grow
		}
		if d.tcBlocks == nil {
			d.tcBlocks = map[int]uint32{}
		}
		d.tcBlocks[o.dev.Ifindex] = ingressBlock(o.dev.Ifindex)
		m := &tcMirror{set: flower.NewMirrorSet(filters, d.mirrorOptions(o.dev.Ifindex))}
		d.tcMirror[o.dev.Ifindex] = m
		d.tcDumps[o.dev.Ifindex]++
		return d.installMirror(o, dev, why, m, start)
	})
}

// mirrorOptions are the daemon's options for ingress's mirror; its
// redirects are checked through the daemon's fwdCache.
func (d *daemon) mirrorOptions(ingress int) flower.MirrorOptions {
	if d.fwd == nil {
		d.fwd = offload.NewChecks()
	}
	check := func(target int) error {
		if d.fwd == nil {
			d.fwd = offload.NewChecks()
		}
		return d.fwd.Forward(ingress, target)
	}
	return flower.MirrorOptions{SkipHW: d.mirrorSkipHW, CheckRedirect: check, Keepalive: d.keepalive,
		Blocked: d.fwd.Device(ingress)}
}

// syncTCChanges applies filter notifications to dev's mirror and installs
// the difference they make, without reading the kernel's filters again:
// with thousands of filters (Open vSwitch's), a dump and its decoding
// cost ~100 ms, and mirroring them all again ~5 ms; one filter's change
// costs what the filters of its pref that may overlap it cost. Without a
// base (no dump yet, or it failed) it dumps.
//
// The mirror holds the kernel's filters as of the last dump, with every
// notification read since. Notifications still queued when the dump was
// taken describe changes the dump holds: applied in order, each filter
// ends as its last notification says, which is what the dump said; and
// follow takes everything queued in one batch, so the table is never
// written from a state in between. Notifications already read when the
// device was dumped again (by another goroutine, before this batch got
// the lock) are older than that dump, and a later one of the same filter
// may be in the next batch: they are dropped (tcChange.dump).
func (d *daemon) syncTCChanges(dev string, ifindex int, changes []tcChange) error {
	m := d.tcMirror[ifindex]
	if m == nil {
		return d.syncTC(dev, "tc")
	}
	fresh := changes[:0:0]
	for _, c := range changes {
		if c.dump == d.tcDumps[ifindex] {
			fresh = append(fresh, c)
		}
	}
	if changes = fresh; len(changes) == 0 {
		return nil
	}
	start := time.Now()
	return d.withTable(dev, func(o *openTable) error {
		if o.dev.Ifindex != ifindex {
			// The name moved to another device since: read it afresh.
			delete(d.tcMirror, ifindex)
			return nil
		}
		for _, c := range changes {
			m.set.Change(c.filter, c.deleted)
		}
		add, remove := m.set.Flush()
		why := fmt.Sprintf("tc: %d notification(s)", len(changes))
		if m.table != o.table {
			// Not installed, or in a table object since replaced: the
			// whole set, not a difference.
			return d.installMirror(o, dev, why, m, start)
		}
		added, removed, err := o.table.UpdateSource(rule.SourceTC, add, remove)
		if errors.Is(err, maps.ErrUnsettled) {
			// Live, its cleanup not: the table repairs first at its next
			// write, which the retry makes.
			d.retryLater(dev)
			return fmt.Errorf("tc: %w", err)
		}
		if err != nil {
			// Nothing changed; the whole set fails the same way and
			// leaves a punt-all standing in for it.
			return d.installMirror(o, dev, why, m, start)
		}
		if added+removed > 0 {
			d.logSync(dev, "tc", why, "filters", m.set.Len(), m.set.Offloaded(), added, removed, start)
		}
		return nil
	})
}

// installMirror makes the table's TC rules m's, and logs it.
func (d *daemon) installMirror(o *openTable, dev, why string, m *tcMirror, start time.Time) error {
	m.table = nil
	added, removed, err := offload.InstallTC(o.table, dev, m.set.Rules(), m.set.Filters())
	if err != nil {
		return err
	}
	m.table = o.table
	if added+removed > 0 || !strings.HasPrefix(why, "tc") {
		d.logSync(dev, "tc", why, "filters", m.set.Len(), m.set.Offloaded(), added, removed, start)
	}
	return nil
}

// recheckForwards asks again whether XDP can carry out the mirrors'
// redirects (loader.CheckXDPForward: a veth target's peer needs an XDP
// program or GRO, a veth ingress's peer must not leave checksums
// unfinished) and mirrors every device again when an answer changed.
// The daemon asks about a device once and keeps the answer, so this runs
// on link events (GRO toggled, or an XDP program attached to a veth,
// notify one end of the pair) and every second, for what notifications
// miss (a peer in another namespace). The checks run without d.mu, so
// that a filter change does not wait for them. The caller does not hold
// d.mu.
func (d *daemon) recheckForwards(why string) {
	d.mu.Lock()
	if d.fwd == nil {
		d.mu.Unlock()
		return
	}
	q := d.fwd.Questions()
	q.Base = d.fwd
	d.mu.Unlock()
	d.takeForwards(q, why)
}

// warmForwards asks about every enabled device, as the ingress and as a
// redirect target, before any filter needs the answer: Open vSwitch's
// flows redirect between its ports, and a first check costs several ms
// (the process reads the ethtool feature names and finds the peers'
// namespaces once). It asks without d.mu, as recheckForwards does, so
// that notifications are not held up. The caller does not hold d.mu.
func (d *daemon) warmForwards() {
	q := offload.NewChecks()
	d.mu.Lock()
	for ifindex := range d.ifindexes {
		q.Question(ifindex)
	}
	q.Base = d.fwd
	d.mu.Unlock()
	d.takeForwards(q, "warm")
}

// takeForwards asks q's questions without d.mu, keeps the answers, and
// mirrors every device again from its base if an answer changed. The
// caller does not hold d.mu.
func (d *daemon) takeForwards(q *offload.Checks, why string) {
	q.Ask()
	d.mu.Lock()
	defer d.mu.Unlock()
	if q.Base != nil && q.Base != d.fwd {
		// A sync started afresh meanwhile: its answers are newer.
		return
	}
	if d.fwd == nil {
		d.fwd = offload.NewChecks()
	}
	if !d.fwd.Take(q) {
		return
	}
	for ifindex, m := range d.tcMirror {
		dev, ok := d.ifindexes[ifindex]
		if !ok {
			continue
		}
		start := time.Now()
		err := d.withTable(dev, func(o *openTable) error {
			if o.dev.Ifindex != ifindex {
				delete(d.tcMirror, ifindex)
				return nil
			}
			m.set = flower.NewMirrorSet(m.set.Filters(), d.mirrorOptions(ifindex))
			return d.installMirror(o, dev, why+": a redirect target changed", m, start)
		})
		if err != nil {
			d.log.Errorf("%s: %v", dev, err)
		}
	}
	// nft's fwd asks the same cache.
	for _, dev := range d.devices {
		if err := d.syncNFT(dev, why+": a redirect target changed"); err != nil {
			d.log.Errorf("%s: %v", dev, err)
		}
	}
}

// tcChange is one filter notification: the filter as it now is, or gone.
type tcChange struct {
	deleted bool
	filter  *flower.KernelFilter
	dump    uint64 // the device's dump count when it was read (daemon.tcDumps)
}

// egressParent is TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS).
const egressParent = 0xFFFFFFF3

// changeOf reads a filter notification for dev. ok false: it is not one
// the mirror can take (a whole pref deleted, another classifier
// than flower, a parent other than ingress and egress, a message that
// does not decode), and the device's filters must be read again. A nil
// change with ok: nothing the mirror reads changed (an egress filter).
func changeOf(m netlink.Message, dev string, names func(int) (string, error)) (c *tcChange, ok bool) {
	hdr, _, err := flower.ParseTCMsg(m.Data)
	if err != nil {
		return nil, false
	}
	switch {
	case hdr.Ifindex == tcmIfindexMagicBlock:
		// A shared block's filter: the caller knows the block is bound
		// at dev's ingress (tcm_parent holds the block index).
		if hdr.Handle == 0 {
			return nil, false
		}
	case hdr.Parent == egressParent:
		return nil, true
	case hdr.Parent != flower.IngressParent && hdr.Parent != ingressQdiscParent:
		return nil, false
	case hdr.Handle == 0:
		// Every filter of a pref (or of a chain) at once.
		return nil, false
	}
	f, err := flower.DecodeFilter(m.Data, dev, names)
	if err != nil || f.Kind != "flower" {
		return nil, false
	}
	return &tcChange{deleted: m.Header.Type == unix.RTM_DELTFILTER, filter: f}, true
}

// ingressParent says whether a filter's parent is a device's ingress.
func ingressParent(parent uint32) bool {
	return parent == flower.IngressParent || parent == ingressQdiscParent
}

// tcmIfindexMagicBlock is TCM_IFINDEX_MAGIC_BLOCK: a filter notification
// about a shared block (tc filter ... block N) rather than a device.
const tcmIfindexMagicBlock = -1

// ingressBlock is the shared block bound at ifindex's ingress
// (TCA_INGRESS_BLOCK of its clsact or ingress qdisc), or 0.
func ingressBlock(ifindex int) uint32 {
	l, err := vnl.LinkByIndex(ifindex)
	if err != nil {
		return 0
	}
	qs, err := vnl.QdiscList(l)
	if err != nil {
		return 0
	}
	for _, q := range qs {
		if k := q.Type(); (k == "clsact" || k == "ingress") && q.Attrs().IngressBlock != nil {
			return *q.Attrs().IngressBlock
		}
	}
	return 0
}

// ingressQdiscParent is "parent ffff:", the ingress qdisc's own handle,
// which tc accepts for its filters as well as "ingress".
const ingressQdiscParent = 0xFFFF0000

// tcBatch follows RTNLGRP_TC and RTNLGRP_LINK: filter notifications on
// enabled devices change their mirrors; other changes of filters,
// chains and qdiscs, and any other device's removal, make the device's
// filters be read again; an enabled device removed or renamed makes the
// device list stale.
type tcBatch struct {
	d       *daemon
	redump  map[int]bool       // ifindexes whose filters must be read again
	changes map[int][]tcChange // filter notifications, in order, by ifindex
	// names: redirect targets' names, resolved once (a lookup is a dump
	// of every link) and kept until a link changes.
	names  func(int) (string, error)
	links  bool // an enabled device went away or was renamed
	linkEv bool // any link changed: redirect targets may have
	// egressEv: a redirect target's qdiscs or filters changed, which
	// may change whether XDP may redirect to it (its egress path).
	egressEv bool
	overrun  bool
}

// readAgain drops what was gathered for ifindex: its filters are read
// after everything in this batch happened.
func (b *tcBatch) readAgain(ifindex int) {
	if b.redump == nil {
		b.redump = map[int]bool{}
	}
	b.redump[ifindex] = true
	delete(b.changes, ifindex)
}

// filterChange notes a filter notification as a change of ifindex's
// ingress filters. The caller holds d.mu.
func (b *tcBatch) filterChange(m netlink.Message, ifindex int) {
	d := b.d
	dev, ok := d.ifindexes[ifindex]
	if !ok || b.redump[ifindex] {
		return
	}
	if b.names == nil {
		b.names = flower.NewIfnameMemo()
	}
	c, ok := changeOf(m, dev, b.names)
	switch {
	case !ok:
		b.readAgain(ifindex)
	case c != nil:
		if b.changes == nil {
			b.changes = map[int][]tcChange{}
		}
		c.dump = d.tcDumps[ifindex]
		b.changes[ifindex] = append(b.changes[ifindex], *c)
	}
}

func (b *tcBatch) add(msgs []netlink.Message) {
	d := b.d
	// Held throughout: a notification is tagged with the dump count of
	// the moment it is taken, which no dump changes meanwhile.
	d.mu.Lock()
	defer d.mu.Unlock()
	known := d.ifindexes
	for _, m := range msgs {
		if len(m.Data) < 8 {
			continue
		}
		ifindex := int(int32(binary.NativeEndian.Uint32(m.Data[4:])))
		switch m.Header.Type {
		case unix.RTM_NEWTFILTER, unix.RTM_DELTFILTER, unix.RTM_NEWQDISC, unix.RTM_DELQDISC:
			// A redirect target's egress path: its qdiscs, and filters
			// anywhere but its ingress (Open vSwitch's ports are
			// targets, and their ingress filters change all the time).
			isFilter := m.Header.Type == unix.RTM_NEWTFILTER || m.Header.Type == unix.RTM_DELTFILTER
			if d.fwd != nil && d.fwd.IsTarget(ifindex) && !(isFilter && len(m.Data) >= 16 && ingressParent(binary.NativeEndian.Uint32(m.Data[12:]))) {
				b.egressEv = true
			}
		}
		if ifindex == tcmIfindexMagicBlock && len(m.Data) >= 16 &&
			(m.Header.Type == unix.RTM_NEWTFILTER || m.Header.Type == unix.RTM_DELTFILTER) {
			// A shared block's filter: a change of every enabled device
			// bound to it at ingress.
			block := binary.NativeEndian.Uint32(m.Data[12:])
			for ifindex, bound := range d.tcBlocks {
				if bound == block {
					b.filterChange(m, ifindex)
				}
			}
			continue
		}
		switch m.Header.Type {
		case unix.RTM_NEWTFILTER, unix.RTM_DELTFILTER:
			b.filterChange(m, ifindex)
		case unix.RTM_NEWCHAIN, unix.RTM_DELCHAIN, unix.RTM_NEWQDISC, unix.RTM_DELQDISC:
			if _, ok := known[ifindex]; ok {
				b.readAgain(ifindex)
			}
		case unix.RTM_DELLINK:
			b.linkEv, b.names = true, nil
			if _, ok := known[ifindex]; ok {
				b.links = true
				break
			}
			// Maybe a redirect target: the kernel's mirred actions that
			// sent to it now drop (their device is gone, and a device
			// that later gets its ifindex is not theirs), which only a
			// fresh reading of the filters shows. Rare (a port
			// removed), so every mirror is read again.
			for ifindex := range d.tcMirror {
				b.readAgain(ifindex)
			}
		case unix.RTM_NEWLINK:
			b.linkEv, b.names = true, nil
			if name, ok := known[ifindex]; ok && linkName(m.Data) != name {
				b.links = true
			}
		}
	}
}

// linkName is IFLA_IFNAME of an RTM_NEWLINK message ("" if absent).
func linkName(b []byte) string {
	const ifinfomsgLen = 16
	if len(b) < ifinfomsgLen {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(b[ifinfomsgLen:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.IFLA_IFNAME {
			return ad.String()
		}
	}
	return ""
}

func (b *tcBatch) lost() { b.overrun, b.names = true, nil }
func (b *tcBatch) ready() bool {
	return len(b.redump) > 0 || len(b.changes) > 0 || b.links || b.linkEv || b.egressEv || b.overrun
}
func (b *tcBatch) flush() {
	d := b.d
	d.mu.Lock()
	switch {
	case b.links || b.overrun:
		d.syncAll("devices")
	default:
		var errs []error
		for ifindex := range b.redump {
			dev, ok := d.ifindexes[ifindex]
			if !ok {
				continue
			}
			if err := d.syncTC(dev, "tc"); err != nil {
				d.log.Errorf("%s: %v", dev, err)
				errs = append(errs, fmt.Errorf("%s: %w", dev, err))
			}
		}
		for ifindex, changes := range b.changes {
			dev, ok := d.ifindexes[ifindex]
			if !ok {
				continue
			}
			if err := d.syncTCChanges(dev, ifindex, changes); err != nil {
				d.log.Errorf("%s: %v", dev, err)
				errs = append(errs, fmt.Errorf("%s: %w", dev, err))
			}
		}
		d.inst.synced(errors.Join(errs...))
	}
	d.mu.Unlock()
	if (b.linkEv || b.egressEv) && !b.links && !b.overrun { // a full sync asked afresh
		d.recheckForwards(map[bool]string{true: "link", false: "egress"}[b.linkEv])
	}
	b.redump, b.changes, b.links, b.linkEv, b.egressEv, b.overrun = nil, nil, false, false, false, false
}
