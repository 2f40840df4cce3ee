package main

import (
	"encoding/binary"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/rule"
)

// syncTC mirrors dev's ingress filters into its table: each filter of
// chain 0 as the same rule, or as a punt sending its packets on to TC.
func (d *daemon) syncTC(dev, why string) error {
	start := time.Now()
	return d.withTable(dev, func(o *openTable) error {
		d.ifindexes[o.dev.Ifindex] = dev
		var err error
		if d.tcReader == nil {
			if d.tcReader, err = flower.NewReader(); err != nil {
				return err
			}
		}
		filters, err := d.tcReader.Filters(dev, o.dev.Ifindex)
		if err != nil {
			d.tcReader.Close()
			d.tcReader = nil
			return err
		}
		chk := fwdChecker(o.dev.Ifindex)
		statuses, added, removed, err := mirrorTC(o.table, dev, filters,
			flower.MirrorOptions{SkipHW: d.mirrorSkipHW, CheckRedirect: chk, Keepalive: d.keepalive})
		if err != nil {
			return err
		}
		if added+removed > 0 || why != "tc" {
			off := 0
			for _, st := range statuses {
				if st.Offloaded {
					off++
				}
			}
			d.logSync(dev, "tc", why, "filters", len(statuses), off, added, removed, start)
		}
		return nil
	})
}

// puntAllFrom is one rule sending every packet on to TC from the lowest
// pref of filters on: what stands in for filters the table cannot take.
func puntAllFrom(dev string, filters []*flower.KernelFilter) []*rule.Rule {
	if len(filters) == 0 {
		return nil
	}
	prio := filters[0].Prio
	for _, f := range filters {
		prio = min(prio, f.Prio)
	}
	r := &rule.Rule{Source: rule.SourceTC, Dev: dev, Prio: prio, Handle: 0xFFFFFFFF, Protocol: rule.EthPAll,
		Actions: []rule.Action{{Kind: rule.ActPass}}}
	r.Text = flower.Format(r)
	return []*rule.Rule{r}
}

// tcBatch follows RTNLGRP_TC and RTNLGRP_LINK: filters, chains and
// qdiscs changed on enabled devices are re-read; a device removed or
// renamed makes the device list stale.
type tcBatch struct {
	d       *daemon
	devs    map[int]bool // ifindexes whose filters changed
	links   bool         // an enabled device went away or was renamed
	overrun bool
}

func (b *tcBatch) add(msgs []netlink.Message) {
	d := b.d
	d.mu.Lock()
	known := d.ifindexes
	d.mu.Unlock()
	for _, m := range msgs {
		if len(m.Data) < 8 {
			continue
		}
		ifindex := int(int32(binary.NativeEndian.Uint32(m.Data[4:])))
		switch m.Header.Type {
		case unix.RTM_NEWTFILTER, unix.RTM_DELTFILTER, unix.RTM_NEWCHAIN, unix.RTM_DELCHAIN,
			unix.RTM_NEWQDISC, unix.RTM_DELQDISC:
			if _, ok := known[ifindex]; ok {
				if b.devs == nil {
					b.devs = map[int]bool{}
				}
				b.devs[ifindex] = true
			}
		case unix.RTM_DELLINK:
			if _, ok := known[ifindex]; ok {
				b.links = true
			}
		case unix.RTM_NEWLINK:
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

func (b *tcBatch) lost()       { b.overrun = true }
func (b *tcBatch) ready() bool { return len(b.devs) > 0 || b.links || b.overrun }
func (b *tcBatch) flush() {
	d := b.d
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case b.links || b.overrun:
		d.syncAll("devices")
	default:
		for ifindex := range b.devs {
			dev, ok := d.ifindexes[ifindex]
			if !ok {
				continue
			}
			if err := d.syncTC(dev, "tc"); err != nil {
				d.log.Printf("%s: %v", dev, err)
			}
		}
	}
	b.devs, b.links, b.overrun = nil, false, false
}
