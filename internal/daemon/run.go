// Package daemon mirrors the kernel's rules into the tables of every
// enabled device of a network namespace and keeps them mirrored: TC's
// ingress filters (tc.go, tc_batch.go), nftables netdev ingress chains
// (nft.go), following their netlink groups (follow.go), with the forward
// checks kept fresh (forward.go) and the tables kept open (tables.go).
package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
)

// Config is how a daemon runs.
type Config struct {
	BPFFS string // where bpffs is mounted ("": found)
	Log   *Log
	// Policy: how TC filters are mirrored, set on every enabled device
	// for the CLI to follow too.
	Policy      maps.Policy
	Enable      []string // devices to enable at start
	MetricsAddr string   // serve Prometheus metrics there ("": not)
}

func newDaemon(cfg Config) *daemon {
	return &daemon{bpffs: cfg.BPFFS, log: cfg.Log, policy: cfg.Policy}
}

// Once mirrors the kernel's rules into every enabled device's table once:
// for scripts and tests.
func Once(cfg Config) error {
	d := newDaemon(cfg)
	if err := d.enableAtStart(cfg.Enable); err != nil {
		return err
	}
	return d.syncAll("once")
}

// Run mirrors the kernel's rules into XDP on every enabled device of this
// network namespace and keeps them mirrored, following nftables netdev
// ingress chains (NFNLGRP_NFTABLES) and TC ingress filters (RTNLGRP_TC),
// until SIGTERM or SIGINT; SIGHUP reads everything again. All of its
// state is the pinned tables, so it can be killed at any moment and a new
// one reconciles. One runs per network namespace.
func Run(cfg Config) error {
	// A sync allocates, and a collection in the middle of one is the
	// largest single delay between a change and XDP: collect less often.
	debug.SetGCPercent(400)
	inst, err := claimInstance()
	if err != nil {
		return err
	}
	defer inst.close()
	d := newDaemon(cfg)
	if err := d.enableAtStart(cfg.Enable); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP: read everything again with fresh sockets (an operator's
	// "reload"; by default it would kill the daemon).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d.warm = true
	d.inst = inst
	if cfg.MetricsAddr != "" {
		if err := d.serveMetrics(cfg.MetricsAddr); err != nil {
			return err
		}
	}
	nftConn, tcConn, err := dialMonitors()
	if err != nil {
		return err
	}
	devs := d.start()
	d.followMonitors(ctx, nftConn, tcConn)
	d.loop(ctx, hup, devs)
	return nil
}

// dialMonitors subscribes to the nftables and the TC (and link) groups.
func dialMonitors() (nftConn, tcConn *netlink.Conn, err error) {
	nftConn, err = dialGroups(unix.NETLINK_NETFILTER, "nftables monitor", unix.NFNLGRP_NFTABLES)
	if err != nil {
		return nil, nil, err
	}
	tcConn, err = dialGroups(unix.NETLINK_ROUTE, "tc monitor", unix.RTNLGRP_TC, unix.RTNLGRP_LINK)
	if err != nil {
		nftConn.Close()
		return nil, nil, err
	}
	return nftConn, tcConn, nil
}

// start syncs every enabled device for the first time and tells the
// service manager; it returns the devices.
func (d *daemon) start() []string {
	d.mu.Lock()
	d.syncAll("start")
	devs := d.devices
	d.mu.Unlock()
	d.log.Printf("running on %d device(s): %v", len(devs), devs)
	// Ready once the first sync is in: from here changes are followed.
	if err := sdNotify(fmt.Sprintf("READY=1\nSTATUS=running on %d device(s)", len(devs))); err != nil {
		d.log.Errorf("tell the service manager it is ready: %v", err)
	}
	return devs
}

// followMonitors follows the nftables and TC monitors until ctx ends.
func (d *daemon) followMonitors(ctx context.Context, nftConn, tcConn *netlink.Conn) {
	go follow(ctx, nftConn, d.log, "nftables monitor", &nftBatch{changed: d.nftChanged})
	go follow(ctx, tcConn, d.log, "tc monitor", &tcBatch{d: d})
}

// loop serves signals and ticks until ctx ends; devs are the enabled
// devices as of the last full sync.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal, devs []string) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			d.settle(true)
			d.mu.Unlock()
			_ = sdNotify("STOPPING=1")
			d.log.Printf("stopping; offloaded rules stay installed")
			return
		case <-hup:
			d.mu.Lock()
			_ = sdNotify("RELOADING=1")
			d.log.Printf("SIGHUP: reading everything again")
			d.closeReaders()
			d.syncAll("hup")
			devs = d.devices
			d.mu.Unlock()
			_ = sdNotify("READY=1")
		case <-ticker.C:
			devs = d.tick(devs)
		}
	}
}

// tick is the loop's work each second; it returns the enabled devices.
func (d *daemon) tick(devs []string) []string {
	d.mu.Lock()
	d.settle(false)
	foreign := d.syncForeignWrites()
	d.syncRetries(foreign)
	d.mu.Unlock()
	d.recheckForwards("recheck")
	return d.syncDeviceList(devs)
}

// syncForeignWrites mirrors again the tables another process changed
// and returns their devices. The caller holds d.mu.
func (d *daemon) syncForeignWrites() []string {
	// Another process changed a table (`xdpflow filter add` mirrors TC
	// itself, with the policy this daemon set): mirror it again, so the
	// table is this daemon's mirror.
	var foreign []string
	for dev, o := range d.open {
		if gen, err := o.table.Generation(); err == nil && gen != o.gen {
			foreign = append(foreign, dev)
		}
	}
	for _, dev := range foreign {
		d.syncDevice(dev, "writer")
	}
	return foreign
}

// syncRetries syncs again the enabled devices whose last sync asked for a
// retry, but for those just synced (done). The caller holds d.mu.
func (d *daemon) syncRetries(done []string) {
	retry := d.retry
	d.retry = nil
	for dev := range retry {
		if slices.Contains(d.devices, dev) && !slices.Contains(done, dev) {
			d.syncDevice(dev, "retry")
		}
	}
}

// syncDeviceList syncs everything again if devices were enabled or
// disabled since devs; it returns the enabled devices.
func (d *daemon) syncDeviceList(devs []string) []string {
	p, err := d.pathsOnce()
	if err != nil {
		return devs
	}
	now, err := loader.List(p)
	if err == nil && !slices.Equal(now, devs) {
		d.mu.Lock()
		d.syncAll("devices")
		devs = d.devices
		d.mu.Unlock()
	}
	return devs
}

// enableAtStart enables the daemon's --enable devices that are not enabled
// yet, with the default sizes: a service's declaration of where it runs
// (a DaemonSet's, a unit's), where `xdpflow enable` would be a step done by
// hand on each host.
func (d *daemon) enableAtStart(devs []string) error {
	if len(devs) == 0 {
		return nil
	}
	return d.locked(func(p loader.Paths) error {
		for _, dev := range devs {
			enabled, err := loader.Enable(p, dev, loader.DefaultOptions)
			if err != nil {
				return fmt.Errorf("daemon --enable: %w", err)
			}
			if enabled {
				d.log.Printf("enabled %s", dev)
			}
		}
		return nil
	})
}
