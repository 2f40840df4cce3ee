package selftests

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTCRedirectFollowsItsTarget: a mirred redirect into a veth whose
// peer has neither XDP nor GRO stays in TC (XDP's frames would be lost
// there); once the peer turns GRO on the daemon offloads it, and once
// GRO is off again it hands the filter back to TC. No filter changed:
// the daemon notices the target by itself (the peer is in another
// namespace, so no link notification reaches it: its recheck each
// second does). In every state the packets reach the target.
func TestTCRedirectFollowsItsTarget(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "off")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "mirred", "egress", "redirect", "dev", "b2")
	punted := func(fs map[string]tcShownFilter) bool {
		f := fs["10/1"]
		return f.Punted && strings.Contains(f.Reason, "redirect to b2 would lose packets") && !strings.Contains(f.Reason, "not installed")
	}
	offloaded := func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded }
	inXDP := func() uint64 {
		if st := tcShown(t, tp.b, "b0")["10/1"].Stats; st != nil {
			return st.Packets
		}
		return 0
	}
	waitShown(t, tp.b, "redirect kept in TC while d0 has no GRO", punted)
	tp.expectFates(t, "nogro", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	waitShown(t, tp.b, "redirect offloaded once d0 has GRO", offloaded)
	before := inXDP()
	var frames [][]byte
	var markers []string
	for i := 0; i < 20; i++ { // markers must differ: a fate is where its marker was seen
		f, m := tp.srcFrames(fmt.Sprint("gro", i), "198.18.1.5")
		frames, markers = append(frames, f...), append(markers, m...)
	}
	for i, f := range tp.fates(t, frames, markers) {
		if f != "d0" {
			t.Fatalf("frame %d from 198.18.1.5 with the redirect offloaded: %s, want d0", i, f)
		}
	}
	if n := inXDP() - before; n < 20-2*uint64(runtime.NumCPU()) {
		t.Errorf("XDP redirected %d of 20 frames of an offloaded filter, want all but the keepalives", n)
	}

	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "off")
	waitShown(t, tp.b, "redirect back in TC once d0's GRO is off", punted)
	tp.expectFates(t, "groagain", map[string]string{"198.18.1.5": "d0"})
	if log := d.logText(); strings.Count(log, "a redirect target changed") < 2 {
		t.Errorf("the daemon's log does not show it mirroring b0 again twice for its redirect target:\n%s", log)
	}
}

// TestTCRedirectTargetRemoved: a filter redirecting into b2 runs in XDP;
// b2 is deleted, and the kernel's mirred now drops (its device is gone),
// so the filter must go back to TC; a new device then takes b2's
// ifindex, which XDP's redirect named, and still the filter's packets
// are dropped as TC drops them, not sent to the newcomer.
func TestTCRedirectTargetRemoved(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "mirred", "egress", "redirect", "dev", "b2")
	waitShown(t, tp.b, "redirect offloaded", func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	tp.expectFates(t, "before", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	index := fmt.Sprint(ifindexIn(t, tp.b, "b2"))
	tp.b.MustExec(t, "ip", "link", "del", "b2")
	punted := func(fs map[string]tcShownFilter) bool {
		f := fs["10/1"]
		return f.Punted && !f.Offloaded && !strings.Contains(f.Reason, "not installed")
	}
	waitShown(t, tp.b, "filter back in TC once its target is gone", punted)

	// A newcomer with b2's ifindex, its peer d0 again (with GRO, so XDP
	// could redirect to it).
	tp.b.MustExec(t, "ip", "link", "add", "b9", "index", index, "type", "veth", "peer", "name", "d0", "netns", tp.d.Name)
	tp.b.MustExec(t, "ip", "link", "set", "b9", "up")
	tp.d.MustExec(t, "ip", "link", "set", "d0", "up")
	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	if got := fmt.Sprint(ifindexIn(t, tp.b, "b9")); got != index {
		t.Fatalf("b9 has ifindex %s, want b2's %s", got, index)
	}
	time.Sleep(2 * time.Second) // a recheck and a link notification later
	waitShown(t, tp.b, "filter still in TC after its target's ifindex was reused", punted)
	tp.expectFates(t, "reused", map[string]string{"198.18.1.5": "drop", "198.18.1.6": "c0"})
}
