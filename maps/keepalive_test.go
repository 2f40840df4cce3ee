package maps_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/maps"
)

// TestKeepaliveSendsOnePacketPerIntervalToTheKernel: a rule with a
// keepalive hands the first packet of each interval (per CPU) on to the
// kernel untouched and uncounted, and runs its actions on the rest. The
// interval survives a reopen from the pinned text, and the same actions
// without keepalive are another action set.
func TestKeepaliveSendsOnePacketPerIntervalToTheKernel(t *testing.T) {
	// Per-CPU state: every run on one CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var one unix.CPUSet
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatalf("pin to CPU 0: %v", err)
	}
	var all unix.CPUSet
	for i := 0; i < runtime.NumCPU(); i++ {
		all.Set(i)
	}
	defer unix.SchedSetaffinity(0, &all) //nolint:errcheck

	h := newHarness(t, 1, 1024)
	h.install(10, 1, "protocol ip flower ip_proto udp dst_port 1000 keepalive 300ms action drop")
	h.install(10, 2, "protocol ip flower ip_proto udp dst_port 1001 action drop")
	h.reopen() // the keepalive comes back from the pinned text
	const xdpDrop, xdpPass = 1, 2

	start := time.Now()
	v := runVerdicts(t, h, 1000, 20)
	if time.Since(start) > 250*time.Millisecond {
		t.Skip("SKIPPED: 20 runs took longer than the keepalive interval; the machine is too loaded for this test")
	}
	if v[0] != xdpPass {
		t.Errorf("first packet of a keepalive rule: verdict %d, want XDP_PASS (on to the kernel)", v[0])
	}
	for i, r := range v[1:] {
		if r != xdpDrop {
			t.Errorf("packet %d within the interval: verdict %d, want XDP_DROP", i+1, r)
		}
	}
	if got := rulePackets(t, h, 10, 1); got != 19 {
		t.Errorf("rule counted %d packets, want 19 (the keepalive packet is the kernel's)", got)
	}
	if got := keepaliveCount(t, h); got != 1 {
		t.Errorf("keepalive counter %d, want 1", got)
	}
	// A rule without keepalive never hands packets on.
	for i, r := range runVerdicts(t, h, 1001, 5) {
		if r != xdpDrop {
			t.Errorf("packet %d of a rule without keepalive: verdict %d, want XDP_DROP", i, r)
		}
	}
	// The next interval: one more to the kernel.
	time.Sleep(350 * time.Millisecond)
	if v := runVerdicts(t, h, 1000, 3); v[0] != xdpPass || v[1] != xdpDrop || v[2] != xdpDrop {
		t.Errorf("next interval: verdicts %v, want [pass drop drop]", v)
	}
	if got := keepaliveCount(t, h); got != 2 {
		t.Errorf("keepalive counter %d after two intervals, want 2", got)
	}
	if n := h.table.Sizes().ActionSets; n != 2 {
		t.Errorf("%d action sets, want 2: drop with and without keepalive differ", n)
	}
}

// runVerdicts runs the program n times on a frame to UDP port dport and
// returns its verdicts.
func runVerdicts(t *testing.T, h *harness, dport uint16, n int) []uint32 {
	t.Helper()
	out := make([]uint32, n)
	for i := range out {
		frame := benchFrame(dport)
		opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)}
		ret, err := h.objs.Xdpflow.Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ret
	}
	return out
}

// rulePackets is the XDP packet count of the rule at prio and handle.
func rulePackets(t *testing.T, h *harness, prio uint16, handle uint32) uint64 {
	t.Helper()
	p, _, _, err := h.table.Stats(h.ids[key(prio, handle)])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// keepaliveCount is the program's count of packets handed on to the kernel
// as keepalives.
func keepaliveCount(t *testing.T, h *harness) uint64 {
	t.Helper()
	c, err := h.table.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[maps.CounterKeepalive]
}
