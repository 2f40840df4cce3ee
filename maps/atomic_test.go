package maps_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// dropVariants are the forms one rule changes between: a port, a range,
// another mask with another action, a rewrite.
var dropVariants = []string{
	"protocol ip flower ip_proto udp dst_port 1000 action drop",
	"protocol ip flower ip_proto udp dst_port 990-1010 action drop",
	"protocol ip flower ip_proto udp src_ip 198.18.0.0/15 dst_port 1000 action vlan push id 5 action drop",
	"protocol ip flower dst_ip 198.18.0.2 action pedit ex munge eth dst set 02:00:00:00:00:09 action drop",
}

// TestChangesAreAtomicUnderTraffic replaces the rule that drops a flow again
// and again — new masks, new subtables, new action sets, subtables of later
// rules whose bounds it lowers and raises — and inserts and removes an
// earlier rule (subtable list swaps), while another goroutine
// runs the program on a matching packet. Every run must be dropped: a
// packet meeting a half-written rule, or a moment with neither the old nor
// the new rule, would pass.
func TestChangesAreAtomicUnderTraffic(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(map[bool]string{false: "strict", true: "deferred"}[deferred], func(t *testing.T) {
			testAtomicUnderTraffic(t, deferred)
		})
	}
}

func testAtomicUnderTraffic(t *testing.T, deferred bool) {
	h := newHarness(t, 1, 1<<16)
	h.deferred = deferred
	h.reopen()
	variants := dropVariants
	h.install(10, 1, variants[0])
	installPassingNeighbours(h)
	frame := benchFrame(1000)

	var stop atomic.Bool
	var runs, wrong atomic.Int64
	var firstWrong atomic.Uint32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := make([]byte, len(frame)+64)
		for !stop.Load() {
			opts := ebpf.RunOptions{Data: frame, DataOut: out}
			ret, err := h.objs.Xdpflow.Run(&opts)
			if err != nil {
				t.Error(err)
				return
			}
			runs.Add(1)
			if ret != 1 { // XDP_DROP
				if wrong.Add(1) == 1 {
					firstWrong.Store(ret)
				}
			}
		}
	}()

	// Stop the traffic however the test ends (a Fatalf below included).
	stopped := false
	stopTraffic := func() {
		if !stopped {
			stopped = true
			stop.Store(true)
			wg.Wait()
		}
	}
	defer stopTraffic()

	// Deferred changes that keep their subtables return in microseconds:
	// keep changing for a while, so packets meet changes whose grace
	// periods are still running.
	changes := 0
	for start := time.Now(); changes < 400 || (deferred && time.Since(start) < 4*time.Second); changes++ {
		i := changes
		h.install(10, 1, variants[i%len(variants)])
		if i%3 == 0 {
			// An earlier rule with another mask that this packet does not
			// match: a new subtable ahead of the live one, then gone.
			h.install(5, 1, "protocol ip flower ip_proto tcp dst_port 22 action pass")
			h.remove(5, 1)
		}
		if v := h.table.HeldViolations(); len(v) > 0 {
			t.Fatalf("change %d: %v", i, v)
		}
		if i%50 == 49 {
			h.reopen()
		}
	}
	stopTraffic()
	t.Logf("%d packets during %d replaces and %d insert/delete pairs", runs.Load(), changes, (changes+2)/3)
	if runs.Load() < 1000 {
		t.Fatalf("only %d packets ran during the churn: the test saw too little traffic", runs.Load())
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d of %d packets not dropped (first verdict %d)", wrong.Load(), runs.Load(), firstWrong.Load())
	}
}

// TestEveryStepKeepsVerdict replaces the drop rule of the atomicity test
// by each of its variants in turn and runs its packet before every named
// step of each change, with the flow cache stale so that the run searches
// the flows: a step order that lets a moment without either rule through
// (a flow passed to a later rule before the new rule's is in) shows here
// deterministically, where traffic meets it only by chance.
func TestEveryStepKeepsVerdict(t *testing.T) {
	h := newHarness(t, 1, 1<<16)
	variants := dropVariants
	h.install(10, 1, variants[0])
	installPassingNeighbours(h)
	frame := benchFrame(1000)
	var from, to int
	steps := map[string]bool{}
	h.table.BeforeEveryStep(t, func(step string) {
		steps[step] = true
		ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)})
		if err != nil {
			t.Fatal(err)
		}
		if ret != 1 { // XDP_DROP
			t.Errorf("variant %d to %d, before step %q: verdict %d, want a drop", from, to, step, ret)
		}
	})
	for from = range variants {
		for to = range variants {
			if from == to {
				continue
			}
			h.install(10, 1, variants[from])
			h.install(10, 1, variants[to])
		}
	}
	for _, step := range []string{"flows", "demote", "invalidate", "publish"} {
		if !steps[step] {
			t.Errorf("no change reached step %q", step)
		}
	}
}

// installPassingNeighbours adds later filters that pass the atomicity
// test's packet: one matches it (a moment without the drop rule would pass
// it), the others share the masks of its variants, so those subtables'
// bounds are theirs until a variant lowers them (a search that stopped at
// a bound not yet lowered would pass it too), and one has the very match
// of a variant (which then shadows it).
func installPassingNeighbours(h *harness) {
	h.install(15, 1, "protocol ip flower dst_ip 198.18.0.2 action pass")
	h.install(20, 1, "protocol ip flower ip_proto udp dst_port 2000 action pass")
	h.install(20, 2, "protocol ip flower ip_proto udp src_ip 198.18.0.0/15 dst_port 2000 action pass")
}
