package selftests

import (
	"fmt"
	"math/rand"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// One scenario, step by step: the steps share b0's filters and the daemon.
// TestTCDaemon: filters written by hand with tc are mirrored by a running
// daemon and handled in XDP (TC's counter does not move), replaced and
// deleted filters follow, a filter XDP cannot run keeps its packets for TC,
// the kernel's mask order is respected, and a daemon killed and restarted
// reconciles without duplicates.
func TestTCDaemon(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.settle = 1500 * time.Millisecond
	d := startDaemon(t, tp.b)
	defer func() {
		if t.Failed() {
			t.Log(d.logText())
		}
	}()
	tc := func(args ...string) { tp.b.MustExec(t, append([]string{"tc", "filter"}, args...)...) }
	offloaded := func(key string) func(map[string]tcShownFilter) bool {
		return func(fs map[string]tcShownFilter) bool { return fs[key].Offloaded }
	}

	tc("add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.5", "action", "drop")
	waitShown(t, tp.b, "drop filter offloaded", offloaded("10/1"))
	frames, markers := tp.srcFrames("drop", repeatStr("198.18.1.5", 20)...)
	for i, f := range tp.fates(t, frames, markers) {
		if f != "drop" {
			t.Fatalf("frame %d from 198.18.1.5: %s, want drop", i, f)
		}
	}
	// The daemon's keepalive (1 s) sends the first packet of a second
	// and CPU on to TC: the burst (well under a second, though it may
	// straddle the start of one) leaves TC at most two per CPU.
	sh := tcShown(t, tp.b, "b0")["10/1"]
	inTC := tcFilterStats(t, tp.b, "b0")["10/1"]
	if sh.Stats == nil || sh.Stats.Packets+inTC != 20 {
		t.Errorf("XDP counted %+v and TC %d packets of filter 10/1, want 20 together", sh.Stats, inTC)
	}
	if inTC > 2*uint64(runtime.NumCPU()) {
		t.Errorf("TC counted %d of the 20 packets an offloaded filter handled in XDP, want at most two keepalives per CPU", inTC)
	}

	// Replaced: the new action runs in XDP.
	tc("replace", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.5",
		"action", "mirred", "egress", "redirect", "dev", "b2")
	waitShown(t, tp.b, "replacement offloaded", func(fs map[string]tcShownFilter) bool {
		return fs["10/1"].Offloaded && len(fs["10/1"].Actions) == 1 && strings.Contains(fs["10/1"].Actions[0], "redirect")
	})
	tp.expectFates(t, "replace", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	// A filter XDP cannot run, in front: punted, and its packets are TC's.
	tc("add", "dev", "b0", "ingress", "pref", "5", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.0/24",
		"action", "skbedit", "mark", "7", "action", "drop")
	waitShown(t, tp.b, "punt installed", func(fs map[string]tcShownFilter) bool {
		return fs["5/1"].Punted && !strings.Contains(fs["5/1"].Reason, "not installed")
	})
	tp.expectFates(t, "punt", map[string]string{"198.18.1.5": "drop", "198.18.3.9": "c0"})
	tc("del", "dev", "b0", "ingress", "pref", "5")
	waitShown(t, tp.b, "punt gone", func(fs map[string]tcShownFilter) bool { _, ok := fs["5/1"]; return !ok && fs["10/1"].Offloaded })
	tp.expectFates(t, "unpunt", map[string]string{"198.18.1.5": "d0"})

	// Mask order: in pref 20 the /32 mask is created first, the /24 mask
	// after it is recreated, so the kernel tries /32 first although the
	// /24 filter has the lower handle. Overlapping filters of one pref
	// stay in TC; the fate is the kernel's.
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.3.0/24", "action", "drop")
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "2", "protocol", "ip", "flower", "src_ip", "198.18.1.77", "action", "mirred", "egress", "redirect", "dev", "b2")
	tc("del", "dev", "b0", "ingress", "pref", "20", "handle", "1", "flower")
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.0/24", "action", "drop")
	waitShown(t, tp.b, "pref 20 mirrored", func(fs map[string]tcShownFilter) bool {
		return fs["20/1"].Punted && fs["20/2"].Punted && !strings.Contains(fs["20/1"].Reason+fs["20/2"].Reason, "not installed")
	})
	tp.expectFates(t, "maskorder", map[string]string{"198.18.1.77": "d0", "198.18.1.78": "drop", "198.18.1.5": "d0"})

	// Killed and restarted, with a change in between: no duplicate, the
	// deleted filter is gone, the unchanged one keeps its XDP counter.
	before := tcShown(t, tp.b, "b0")["10/1"]
	d.kill()
	tp.expectFates(t, "dead", map[string]string{"198.18.1.5": "d0"})
	tc("del", "dev", "b0", "ingress", "pref", "20")
	d = startDaemon(t, tp.b)
	fs := waitShown(t, tp.b, "restart reconciled", func(fs map[string]tcShownFilter) bool {
		for k := range fs {
			if strings.HasPrefix(k, "20/") {
				return false // pref 20's filters, or their punt (handle 0xffffffff)
			}
		}
		return fs["10/1"].Offloaded
	})
	if len(fs) != 1 {
		t.Errorf("after restart: %d filters shown, want 1: %+v", len(fs), fs)
	}
	if got := fs["10/1"]; got.Stats == nil || before.Stats == nil || got.Stats.Packets < before.Stats.Packets {
		t.Errorf("filter 10/1 lost its XDP counter across the restart: %+v then %+v", before.Stats, got.Stats)
	}
	tp.expectFates(t, "restarted", map[string]string{"198.18.1.5": "d0", "198.18.1.78": "c0"})

	// The qdisc deleted: everything goes, traffic flows through again.
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
	waitShown(t, tp.b, "all gone", func(fs map[string]tcShownFilter) bool { return len(fs) == 0 })
	tp.expectFates(t, "noqdisc", map[string]string{"198.18.1.5": "c0"})
}

// TestTCDaemonFollowsNotifications: a running daemon applies filter
// notifications to the filters it knows instead of reading the device's
// filters again. After rounds of random adds, replaces, deletions of one
// filter and of a whole pref, and egress filters (which it ignores), the
// table it built must be what a fresh reading of the kernel's filters
// builds: `daemon --once` then changes nothing.
func TestTCDaemonFollowsNotifications(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	once := regexp.MustCompile(`b0: tc \(once\): (\d+) filters, (\d+) offloaded; installed \+(\d+) -(\d+)`)
	churn := &tcChurn{rng: rand.New(rand.NewSource(7)), protoOf: map[int]string{}, nextHandle: 1}
	notified, filters := 0, 0
	for round := 0; round < 6; round++ {
		d := startDaemon(t, tp.b)
		d.logOnFailure(t)
		time.Sleep(time.Second) // its first reading is in
		var b strings.Builder
		churn.batch(&b)
		// -force: tc refuses a filter with the key and mask of another of
		// its pref (random prefixes collide); the rest stands.
		_, _ = tp.b.ExecStdin(b.String(), "tc", "-force", "-b", "-")
		time.Sleep(2 * time.Second) // emulated CPUs: let the daemon catch up
		d.kill()
		if strings.Contains(d.logText(), "notification(s)") {
			notified++
		}
		out := mustXdpflow(t, tp.b, "daemon", "--once")
		m := once.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("round %d: daemon --once said nothing of b0's tc filters:\n%s", round, out)
		}
		n, _ := strconv.Atoi(m[1])
		filters += n
		if m[3] != "0" || m[4] != "0" {
			t.Fatalf("round %d: the running daemon's table was not what the kernel's filters make: --once installed +%s -%s\nbatch:\n%s\n%s",
				round, m[3], m[4], b.String(), d.logText())
		}
	}
	if notified == 0 || filters == 0 {
		t.Fatalf("%d rounds synced from notifications, %d filters seen: the test proved nothing", notified, filters)
	}
	t.Logf("%d of 6 rounds synced from notifications; %d filters compared", notified, filters)
}

// tcChurn makes TestTCDaemonFollowsNotifications's batches of changes to
// b0's filters, keeping track of the filters in the kernel (live) and of
// each pref's protocol.
type tcChurn struct {
	rng        *rand.Rand
	live       []tcChurnFilter
	protoOf    map[int]string
	nextHandle int
}

type tcChurnFilter struct {
	pref, handle int
	proto        string
}

// batch writes one round's `tc -b` lines to b: random adds, replaces,
// deletions of one filter and of a whole pref, and egress filters.
func (c *tcChurn) batch(b *strings.Builder) {
	rng := c.rng
	for i := 0; i < 8+rng.Intn(12); i++ {
		switch op := rng.Intn(10); {
		case op < 5 || len(c.live) == 0:
			pref := 1 + rng.Intn(5)
			proto, ok := c.protoOf[pref]
			if !ok {
				proto = pick(rng, []string{"ip", "ip", "ipv6", "802.1q", "all"})
				c.protoOf[pref] = proto
			}
			f := tcChurnFilter{pref, c.nextHandle, proto}
			c.nextHandle++
			c.live = append(c.live, f)
			fmt.Fprintf(b, "filter add dev b0 ingress pref %d handle %d protocol %s flower %s\n",
				f.pref, f.handle, f.proto, randomFlowerFilter(rng, f.proto))
		case op < 7:
			f := pick(rng, c.live)
			fmt.Fprintf(b, "filter replace dev b0 ingress pref %d handle %d protocol %s flower %s\n",
				f.pref, f.handle, f.proto, randomFlowerFilter(rng, f.proto))
		case op < 9:
			k := rng.Intn(len(c.live))
			f := c.live[k]
			c.live = append(c.live[:k], c.live[k+1:]...)
			fmt.Fprintf(b, "filter del dev b0 ingress pref %d handle %d protocol %s flower\n", f.pref, f.handle, f.proto)
		default:
			// A whole pref: one notification without a handle.
			pref := pick(rng, c.live).pref
			kept := c.live[:0]
			for _, f := range c.live {
				if f.pref != pref {
					kept = append(kept, f)
				}
			}
			c.live = kept
			delete(c.protoOf, pref)
			fmt.Fprintf(b, "filter del dev b0 ingress pref %d\n", pref)
		}
		if rng.Intn(4) == 0 {
			fmt.Fprintf(b, "filter add dev b0 egress pref %d protocol ip flower ip_proto udp action pass\n", 1+rng.Intn(3))
		}
	}
}

// TestTCSharedBlock: filters of a shared block (tc qdisc add dev X
// ingress_block N clsact; tc filter add block N ..., as Open vSwitch
// does for bonds) are every bound device's ingress filters. Their
// notifications name the block, not a device (TCM_IFINDEX_MAGIC_BLOCK):
// a running daemon mirrors an added block filter onto every enabled
// device bound to the block, and takes a deleted one out of all of them.
func TestTCSharedBlock(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
	for _, dev := range []string{"b0", "b2"} {
		tp.b.MustExec(t, "tc", "qdisc", "add", "dev", dev, "ingress_block", "7", "clsact")
	}
	mustXdpflow(t, tp.b, "enable", "dev", "b2")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	time.Sleep(time.Second) // its first reading is in
	tp.b.MustExec(t, "tc", "filter", "add", "block", "7", "pref", "10", "handle", "1", "protocol", "ip",
		"flower", "src_ip", "198.18.1.5", "action", "drop")
	for _, dev := range []string{"b0", "b2"} {
		waitFor(t, 10*time.Second, "the block's filter mirrored onto "+dev, func() map[string]tcShownFilter { return tcShown(t, tp.b, dev) },
			func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	}
	tp.expectFates(t, "block-add", map[string]string{"198.18.1.5": "drop", "198.18.1.6": "c0"})

	tp.b.MustExec(t, "tc", "filter", "del", "block", "7", "pref", "10", "handle", "1", "protocol", "ip", "flower")
	for _, dev := range []string{"b0", "b2"} {
		waitFor(t, 10*time.Second, "the block's deleted filter gone from "+dev, func() map[string]tcShownFilter { return tcShown(t, tp.b, dev) },
			func(fs map[string]tcShownFilter) bool {
				_, ok := fs["10/1"]
				return !ok && tableRules(t, tp.b, dev) == 0
			})
	}
	tp.expectFates(t, "block-del", map[string]string{"198.18.1.5": "c0", "198.18.1.6": "c0"})
}

// TestTCPolicyShared: a daemon's mirror options are the device's policy,
// and `filter add` mirrors TC with it: a `--keepalive off
// --mirror-skip-hw` daemon and the CLI install the same rules, so the
// daemon, mirroring again after the CLI wrote the table, changes nothing.
func TestTCPolicyShared(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b, "--keepalive", "off", "--mirror-skip-hw")
	d.logOnFailure(t)
	d.waitRunning(t)
	if st := mustXdpflow(t, tp.b, "status"); !strings.Contains(st, "TC mirror: keepalive off, skip_hw filters mirrored") {
		t.Errorf("status does not show the daemon's policy:\n%s", st)
	}
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "drop")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "2", "protocol", "ip", "flower",
		"src_ip", "198.18.1.6", "skip_hw", "action", "drop")
	// The daemon mirrors the filters' notifications, and mirrors again
	// after another writer: seconds for both. It installs nothing the CLI
	// did not already: the same policy, the same rules.
	time.Sleep(3 * time.Second)
	_, after, _ := strings.Cut(d.logText(), "running on")
	if m := regexp.MustCompile(`installed \+[1-9]|installed \+\d+ -[1-9]`).FindString(after); m != "" {
		t.Errorf("the daemon reinstalled what the CLI mirrored (%s):\n%s", m, after)
	}
	fs := tcShown(t, tp.b, "b0")
	if f := fs["2/1"]; !f.Offloaded {
		t.Errorf("pref 2 (skip_hw) under --mirror-skip-hw: offloaded %v, reason %q; want in XDP", f.Offloaded, f.Reason)
	}
}
