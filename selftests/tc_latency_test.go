package selftests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestTCFilterToXDPLatency measures, with a daemon running, the time from
// the kernel's notification of a `tc filter add` (or `del`) to the change
// being live in XDP (the pinned cache generation moves): on a device with
// one other filter, and on one with 2,000 more in another pref (the
// notification changes the daemon's copy of them and the table by the
// difference it makes).
func TestTCFilterToXDPLatency(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "protocol", "ip", "flower", "src_ip", "198.18.3.3", "action", "drop")
	waitShown(t, tp.b, "first filter", func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	adds, dels := measureTCLatency(t, tp, 60)
	t.Logf("tc filter add -> live in XDP (%d): %s", len(adds), percentiles(adds))
	t.Logf("tc filter del -> live in XDP (%d): %s", len(dels), percentiles(dels))

	// 2,000 filters more, in pref 20 (exact destinations, as Open
	// vSwitch's flows of one mask share a pref).
	var batch strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&batch, "filter add dev b0 ingress pref 20 handle %d protocol ip flower dst_ip 198.19.%d.%d ip_proto udp dst_port 9 action drop\n",
			i+1, i>>8, i&0xff)
	}
	start := time.Now()
	if out, err := tp.b.ExecStdin(batch.String(), "tc", "-b", "-"); err != nil {
		t.Fatalf("tc -b: %v: %s", err, out)
	}
	added := time.Since(start)
	// What queues up during a sync is taken by the next at once (2.1-4.1
	// s for all here; 92 s when each notification was a sync of its own).
	waitFor(t, 2*time.Minute, "2,001 filters mirrored", func() int {
		n := 0
		for _, f := range tcShown(t, tp.b, "b0") {
			if f.Offloaded {
				n++
			}
		}
		return n
	}, func(n int) bool { return n == 2001 })
	t.Logf("2,000 filters: tc -b added them in %v, all were offloaded %v after the first", added.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	adds, dels = measureTCLatency(t, tp, 30)
	t.Logf("with 2,000 filters more: tc filter add -> live in XDP (%d): %s", len(adds), percentiles(adds))
	t.Logf("with 2,000 filters more: tc filter del -> live in XDP (%d): %s", len(dels), percentiles(dels))
}

// measureTCLatency adds and deletes a filter (pref 10 handle 2) rounds
// times in turn, each timed from the kernel's notification to the change
// being live in XDP.
func measureTCLatency(t *testing.T, tp *nftTopo, rounds int) (adds, dels []time.Duration) {
	t.Helper()
	readGen := pinnedGeneration(t, tp.b, "b0")
	var mon *netlink.Conn
	tp.b.Run(t, func() {
		var err error
		if mon, err = netlink.Dial(unix.NETLINK_ROUTE, nil); err != nil {
			panic(err)
		}
		if err := mon.JoinGroup(unix.RTNLGRP_TC); err != nil {
			panic(err)
		}
	})
	defer mon.Close()
	for i := 0; i < rounds; i++ {
		g0 := readGen()
		verb, want := "add", netlink.HeaderType(unix.RTM_NEWTFILTER)
		args := []string{"tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "2", "protocol", "ip",
			"flower", "src_ip", fmt.Sprintf("198.18.4.%d", i), "action", "drop"}
		if i%2 == 1 {
			verb, want = "del", unix.RTM_DELTFILTER
			args = []string{"tc", "filter", "del", "dev", "b0", "ingress", "pref", "10", "handle", "2", "flower"}
		}
		done := make(chan error, 1)
		go func() { _, err := tp.b.Exec(args...); done <- err }()
		var t0 time.Time
		for t0.IsZero() {
			msgs, err := mon.Receive()
			if err != nil {
				t.Fatalf("tc monitor: %v", err)
			}
			for _, m := range msgs {
				if m.Header.Type == want {
					t0 = time.Now()
				}
			}
		}
		if !waitGeneration(readGen, g0, t0, 5*time.Second) {
			t.Fatalf("%s %d not in XDP after 5 s", verb, i)
		}
		lat := time.Since(t0)
		if verb == "add" {
			adds = append(adds, lat)
		} else {
			dels = append(dels, lat)
		}
		if err := <-done; err != nil {
			t.Fatalf("tc filter %s: %v", verb, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return adds, dels
}
