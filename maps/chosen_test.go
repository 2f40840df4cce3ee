package maps_test

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/internal/refmodel"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
)

// TestChosenFlows: tc filters whose port ranges and IPv4 prefixes the
// table holds whole, in ranged flows it chooses (a filter's prefixes in a
// subtable keeping fewer bits of them, its ranges checked in the
// program), many of them wanting a flow another holds, among pairs of
// ranged filters of one pref and mask (whose ranges the kernel lends, so
// they keep their blocks): every packet meets the filter the model gives
// it as filters come and go in random order, after a reopen, and every
// choice is the one a process opening the table makes (checkFlows).
func TestChosenFlows(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, true)
		rng := rand.New(rand.NewSource(3))
		// shape is a filter's mask: which fields, prefix lengths and
		// whether each port is a range; text draws its values.
		type shape struct {
			src, dst          int // prefix length, 0: none
			udp, dport, sport bool
			drange, srange    bool
		}
		newShape := func() shape {
			length := func() int {
				if rng.Intn(5) == 0 {
					return 0
				}
				return 20 + rng.Intn(13)
			}
			sh := shape{src: length(), dst: length(), udp: rng.Intn(4) > 0}
			sh.dport, sh.sport = sh.udp && rng.Intn(3) > 0, sh.udp && rng.Intn(3) == 0
			sh.drange, sh.srange = rng.Intn(4) > 0, rng.Intn(4) > 0
			return sh
		}
		text := func(sh shape) string {
			w := "protocol ip flower"
			if sh.src > 0 {
				w += fmt.Sprintf(" src_ip 198.18.%d.%d/%d", rng.Intn(4), rng.Intn(256), sh.src)
			}
			if sh.dst > 0 {
				w += fmt.Sprintf(" dst_ip 198.19.%d.%d/%d", rng.Intn(4), rng.Intn(256), sh.dst)
			}
			ports := func(ranged bool) string {
				lo := rng.Intn(40)
				if !ranged {
					return fmt.Sprint(lo)
				}
				return fmt.Sprintf("%d-%d", lo, lo+1+rng.Intn(30))
			}
			if sh.udp {
				w += " ip_proto udp"
			}
			if sh.dport {
				w += " dst_port " + ports(sh.drange)
			}
			if sh.sport {
				w += " src_port " + ports(sh.srange)
			}
			return w + " action " + []string{"drop", "pass"}[rng.Intn(2)]
		}
		type filter struct {
			prio   uint16
			handle uint32
		}
		var in []filter
		install := func(f filter, s string) {
			if h.install(f.prio, f.handle, s) {
				in = append(in, f)
			}
		}
		for _, prio := range rng.Perm(160) {
			f := filter{uint16(prio + 1), 1}
			sh := newShape()
			install(f, text(sh))
			if prio%8 == 0 {
				// A second filter of the pref and mask: the kernel
				// lends ranges between them.
				install(filter{f.prio, 2}, text(sh))
			}
		}
		chose, later := h.table.ChoiceCounts()
		t.Logf("%d filters in, %d with chosen flows, %d of them not their first choice", len(in), chose, later)
		if len(in) < 150 || chose < 60 || later < 10 {
			t.Fatalf("%d filters in, %d chose flows, %d not their first: the test no longer exercises choices", len(in), chose, later)
		}
		var frames [][]byte
		for i := 0; i < 1200; i++ {
			frames = append(frames, addressFrame(198<<24|18<<16|uint32(rng.Intn(1<<10)), 198<<24|19<<16|uint32(rng.Intn(1<<10)),
				uint16(rng.Intn(72)), uint16(rng.Intn(72))))
		}
		h.check(frames)
		h.reopen()
		h.checkFlows()
		h.check(frames)
		rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		for _, f := range in[:len(in)/2] {
			h.remove(f.prio, f.handle)
		}
		h.check(frames)
		for i := 0; i < 40; i++ {
			install(filter{uint16(200 + rng.Intn(40)), uint32(10 + i)}, text(newShape()))
		}
		h.check(frames)
		h.reopen()
		h.checkFlows()
		h.check(frames)
	})
}

// TestEveryStepChosenFlows: a filter inserted ahead of another takes the
// other's chosen flow (the same merged key, its own ranges), and the
// other moves on to its next choice; deleted, it gives the flow back.
// Before every write step of both changes each packet's verdict is the
// old filters' or the new filters'.
func TestEveryStepChosenFlows(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, false)
		var frames [][]byte
		for third := uint32(0); third < 4; third++ {
			for port := uint16(5); port <= 35; port += 2 {
				frames = append(frames, addressFrame(198<<24|18<<16|1, 198<<24|19<<16|third<<8|7, 40000, port))
			}
		}
		var ops []modelOp
		var oldV, newV []uint32
		what := ""
		maps.StepHook(t, func() *maps.Table { return h.table }, func(step string) error {
			for i, f := range frames {
				ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)})
				if err != nil {
					t.Fatal(err)
				}
				if ret != oldV[i] && ret != newV[i] {
					t.Fatalf("%s, before step %q: frame %d verdict %d, old filters %d, new %d", what, step, i, ret, oldV[i], newV[i])
				}
			}
			return nil
		})
		apply := func(desc string, ch maps.Change, op modelOp) []maps.RuleID {
			t.Helper()
			what = desc
			oldRules, newRules := buildModel(ops).Rules(), buildModel(append(slices.Clone(ops), op)).Rules()
			oldV, newV = make([]uint32, len(frames)), make([]uint32, len(frames))
			for i, f := range frames {
				oldV[i] = verdictRet[refmodel.Run(oldRules, f, 1).Verdict]
				newV[i] = verdictRet[refmodel.Run(newRules, f, 1).Verdict]
			}
			ids, err := h.table.Apply(ch)
			if err != nil {
				t.Fatalf("%s: %v", desc, err)
			}
			ops = append(ops, op)
			h.model = *buildModel(ops)
			h.checkFlows()
			h.check(frames)
			return ids
		}
		later := func(want int) {
			t.Helper()
			if _, n := h.table.ChoiceCounts(); n != want {
				t.Fatalf("%s: %d filters past their first choice, want %d", what, n, want)
			}
		}
		x := parseTC(t, 5, 1, "protocol ip flower dst_ip 198.19.0.0/23 ip_proto udp dst_port 10-20 action drop")
		apply("insert pref 5", maps.Change{Insert: []maps.Insert{{Rule: x}}}, modelOp{prio: 5, handle: 1, r: x})
		later(0)
		w := parseTC(t, 2, 1, "protocol ip flower dst_ip 198.19.0.0/22 ip_proto udp dst_port 15-30 action pass")
		ids := apply("insert pref 2", maps.Change{Insert: []maps.Insert{{Rule: w}}}, modelOp{prio: 2, handle: 1, r: w})
		later(1)
		apply("delete pref 2", maps.Change{Delete: ids}, modelOp{prio: 2, handle: 1})
		later(0)
	})
}

// TestMergedFlowCacheKey: a filter on 198.18.0.0/23, held in a subtable
// keeping /16 of the source and checking the /23 as a range, among
// packets from 198.18.0.0/22: the flow cache keys them by the 23 bits the
// range reads, no more (the packets of one /23 share an entry) and no
// fewer (those of the /23 and of the rest are answered apart).
func TestMergedFlowCacheKey(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, true)
		h.install(1, 1, "protocol ip flower src_ip 198.18.0.0/23 ip_proto udp action drop")
		h.install(2, 1, "protocol ip flower action pass")
		if chose, _ := h.table.ChoiceCounts(); chose != 1 {
			t.Fatalf("%d filters with chosen flows, want the /23's", chose)
		}
		var frames [][]byte
		for i := uint32(0); i < 300; i++ {
			third := []uint32{0, 1, 2, 3}[i%4]
			frames = append(frames, addressFrame(198<<24|18<<16|third<<8|(1+i/4), 198<<24|19<<16|1, 40000, 9))
		}
		defer testutil.OnOneCPU(t)() // the cache is per CPU
		hits := h.cacheHits()
		h.check(frames)
		if n := h.cacheHits() - hits; n < len(frames)-4 {
			t.Fatalf("%d of %d packets answered from the cache: it keys more than the bits the range reads", n, len(frames))
		}
	})
}
