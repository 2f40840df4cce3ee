package daemon

import (
	"time"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
)

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
