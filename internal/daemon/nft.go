package daemon

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
)

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
			d.metrics.nftRuleDumps(d.reader.TakeRuleDumps())
			return err
		}, d.closeNFTReader)
		if err != nil {
			// XDP must not go on running rules nft may no longer have:
			// every nft rule out, so nft decides all of their packets,
			// until a read succeeds (the daemon tries every second).
			d.retryLater(dev)
			o.nft.Forget()
			_, _, rerr := nft.Sync(o.table, nil)
			return errors.Join(fmt.Errorf("nft: read: %w (nft rules left to the kernel until a read succeeds)", err), rerr)
		}
		opt := d.mirrorOptions(o.dev.Ifindex)
		rs.CheckFwd, rs.Blocked = opt.CheckRedirect, opt.Blocked
		var statuses []*nft.Status
		added, removed := 0, 0
		// A result cramped by the rules it replaces places the rest once
		// they are out and their slots free: a second round, rarely a
		// third.
		for round := 0; round < 3; round++ {
			var want []*rule.Rule
			want, statuses = o.nft.Compile(rs, nft.LimitsOf(o.table.Room(rule.SourceNFT)))
			var a, r int
			var err error
			if add, remove, ok := o.nft.Delta(); ok {
				a, r, err = o.table.UpdateSource(rule.SourceNFT, add, remove)
			} else {
				a, r, err = nft.Sync(o.table, want)
			}
			if err != nil {
				// XDP must not keep running rules nft no longer has: take
				// every nft rule out, so nft handles all of their packets
				// again.
				o.nft.Forget()
				_, _, rerr := nft.Sync(o.table, nil)
				return errors.Join(fmt.Errorf("nft: install: %w (nft rules left to the kernel)", err), rerr)
			}
			o.nft.Installed()
			added, removed = added+a, removed+r
			if a+r == 0 || !slices.ContainsFunc(statuses, func(st *nft.Status) bool { return st.Cramped }) {
				break
			}
			// What the round freed is held for a grace period first.
			if err := o.table.Settle(); err != nil {
				return fmt.Errorf("nft: install: %w", err)
			}
		}
		d.metrics.nftCompiled(o.nft.TakeCompiles())
		if added+removed > 0 || why != "nft" {
			n, off := o.nft.Counts()
			d.logSync(dev, "nft", why, "rules", n, off, added, removed, start)
		}
		return nil
	})
}

// nftChanged brings the devices' nft rules up to date after committed
// nftables transactions (msgs, their notifications), or after some were
// lost.
func (d *daemon) nftChanged(msgs []netlink.Message, lost bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reader != nil {
		if lost {
			d.reader.Lost()
		}
		d.reader.Follow(msgs)
	}
	d.syncNFTAll("nft")
}

// nftBatch follows nftables (NFNLGRP_NFTABLES): it acts after committed
// transactions — the kernel ends each with NFT_MSG_NEWGEN — passing on
// their messages (nft.Reader.Follow), or that some were lost.
type nftBatch struct {
	msgs      []netlink.Message
	overran   bool
	committed bool
	changed   func(msgs []netlink.Message, lost bool)
}

func (b *nftBatch) add(msgs []netlink.Message) {
	newgen := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)
	for _, m := range msgs {
		if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue
		}
		b.msgs = append(b.msgs, m)
		b.committed = b.committed || m.Header.Type == newgen
	}
}

func (b *nftBatch) lost() { b.msgs, b.overran, b.committed = b.msgs[:0], true, true }

func (b *nftBatch) ready() bool { return b.committed }

func (b *nftBatch) flush() {
	msgs, lost := b.msgs, b.overran
	b.msgs, b.overran, b.committed = nil, false, false
	b.changed(msgs, lost)
}
