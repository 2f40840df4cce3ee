package maps_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/maps"
)

// TestCacheCoherentUnderChurn flips the action of the rule that matches a
// flow between drop and pass, again and again, with masks that change too
// (new subtables, new union masks), while packets of that flow run on every
// CPU and fill each CPU's flow cache with the action of the moment. Every
// run that starts after a change returned must take the new action: a run
// answered by a cache entry from before the change would not.
func TestCacheCoherentUnderChurn(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(map[bool]string{false: "strict", true: "deferred"}[deferred], func(t *testing.T) {
			testCacheCoherent(t, deferred)
		})
	}
}

// One scenario, step by step: the traffic and the changes share want and seq.
func testCacheCoherent(t *testing.T, deferred bool) {
	h := newHarness(t, 1, 1<<16)
	h.deferred = deferred
	h.reopen()
	// The same flow, matched by rules of different masks; each with
	// either verdict. A packet of another flow shares the subtables.
	matches := []string{
		"protocol ip flower ip_proto udp dst_port 1000",
		"protocol ip flower ip_proto udp dst_port 990-1010",
		"protocol ip flower ip_proto udp src_ip 198.18.0.0/15 dst_port 1000",
		"protocol ip flower dst_ip 198.18.0.2",
	}
	verdicts := []struct {
		action string
		ret    uint32
	}{{"drop", 1}, {"pass", 2}}
	frame := benchFrame(1000)

	// want is the verdict of the last change that returned; seq is odd
	// while a change is under way (the new verdict may already be live)
	// and even between changes, and counts them.
	var want atomic.Uint32
	var seq atomic.Uint64
	var stop atomic.Bool
	var runs, checked, wrong atomic.Int64
	var firstWrong atomic.Value
	var wg sync.WaitGroup
	run := func(cpu int) {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
			return
		}
		for !stop.Load() {
			s0, expect := seq.Load(), want.Load()
			ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: frame})
			if err != nil {
				t.Error(err)
				return
			}
			runs.Add(1)
			// Checked: the run began after a change returned and ended
			// before the next one began. (Others may see either.)
			if s0%2 == 0 && seq.Load() == s0 {
				checked.Add(1)
				if ret != expect && wrong.Add(1) == 1 {
					firstWrong.Store(fmt.Sprintf("verdict %d, want %d, after change %d", ret, expect, s0/2))
				}
			}
		}
	}
	h.install(10, 1, matches[0]+" action drop")
	want.Store(1)
	for cpu := 0; cpu < runtime.NumCPU(); cpu++ {
		wg.Add(1)
		go run(cpu)
	}
	stopTraffic := sync.OnceFunc(func() { stop.Store(true); wg.Wait() })
	defer stopTraffic()

	changes := 600
	if !deferred {
		changes = 200 // each waits a grace period
	}
	for i := 1; i <= changes; i++ {
		v := verdicts[i%2]
		seq.Add(1)
		if !h.install(10, 1, matches[(i/2)%len(matches)]+" action "+v.action) {
			t.Fatalf("change %d refused", i)
		}
		want.Store(v.ret)
		seq.Add(1)
		// This CPU's own check, right after the return.
		ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		if ret != v.ret {
			t.Fatalf("change %d (%s): the next packet got verdict %d", i, v.action, ret)
		}
		if i%5 == 0 {
			// Another rule ahead of it with its own mask: the list and
			// the union mask change under the cached flow.
			seq.Add(1)
			h.install(5, 1, "protocol ip flower ip_proto tcp dst_port 22 action pass")
			h.remove(5, 1)
			seq.Add(1)
		}
		// Let packets meet the new state (a change in strict mode takes
		// a grace period; in deferred mode microseconds).
		time.Sleep(200 * time.Microsecond)
	}
	stopTraffic()
	c, err := h.table.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d runs (%d checked, %d wrong) during %d changes; the cache answered %d", runs.Load(), checked.Load(), wrong.Load(), changes, c[maps.CounterCacheHit])
	if checked.Load() < 1000 {
		t.Fatalf("only %d checked runs: the test saw too little traffic", checked.Load())
	}
	if c[maps.CounterCacheHit] == 0 {
		t.Fatal("the cache answered nothing: the test did not exercise it")
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d of %d checked runs took the old action (first: %v)", wrong.Load(), checked.Load(), firstWrong.Load())
	}
}
