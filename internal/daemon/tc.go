package daemon

import (
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
// redirects are checked through the daemon's offload.Checks.
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
	return flower.MirrorOptions{SkipHW: d.policy.MirrorSkipHW, CheckRedirect: check, Keepalive: d.policy.Keepalive,
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
