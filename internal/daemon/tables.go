package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
)

// openTable is a device's table kept open between syncs, so a change costs
// no reopen: valid while the device's pin directory is the same one and no
// other process changed the table since (the cache generation says).
type openTable struct {
	dev   *loader.Device
	table *maps.Table
	ino   uint64
	gen   uint32
	nft   nft.Compiler // what the device's nft rules expand to, kept between syncs
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
	// The daemon's policy is the device's: `filter add` mirrors with it.
	if pol, err := ld.Policy(); err != nil || pol != d.policy {
		if err := ld.SetPolicy(d.policy); err != nil {
			ld.Close()
			return nil, err
		}
	}
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

// withTable runs fn on dev's open table under the namespace lock.
func (d *daemon) withTable(dev string, fn func(o *openTable) error) error {
	return d.locked(func(p loader.Paths) error {
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
	})
}

// locked runs fn with the daemon's paths under the namespace lock.
func (d *daemon) locked(fn func(p loader.Paths) error) error {
	p, err := d.pathsOnce()
	if err != nil {
		return err
	}
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	return fn(p)
}
