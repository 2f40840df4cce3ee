package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
)

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
