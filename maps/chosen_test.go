package maps_test

import (
	"errors"
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

// TestEveryStepChosenFlows: changes that move tc filters' chosen flows
// between them: a filter inserted ahead of another takes the other's flow
// (the same merged key, its own ranges) and the other moves on, or moves
// the other onto a third's, which moves on in turn; deleted, it gives the
// flows back along the chain; a filter moving onto a freed ranged flow
// while a shadowed filter takes over its own. Before every write step,
// and every round of step 4, each packet's verdict is the old filters' or
// the new filters'.
func TestEveryStepChosenFlows(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	var frames [][]byte
	for third := uint32(0); third < 12; third++ {
		for _, port := range []uint16{5, 10, 15, 16, 17, 20, 25, 30, 31, 35, 150} {
			frames = append(frames, addressFrame(198<<24|18<<16|third<<8|7, 198<<24|19<<16|third%4<<8|7, 40000, port))
		}
	}
	udp := "protocol ip flower dst_ip 198.19.0.0/22 ip_proto udp dst_port "
	type op struct {
		prio uint16
		text string // "": delete the filter of prio
	}
	for _, sc := range []struct {
		name  string
		ops   []op
		later []int // filters past their first choice after each op
	}{
		{"takeover", []op{{5, udp + "10-20 action drop"}, {2, udp + "15-30 action pass"}, {2, ""}}, []int{0, 1, 0}},
		{"chain", []op{{3, udp + "17-30 action drop"}, {2, udp + "16-31 action pass"}, {1, udp + "100-200 action drop"}, {1, ""}}, []int{0, 1, 2, 1}},
		{"shadowed takes over", []op{
			{1, "protocol ip flower src_ip 198.18.4.0/22 action drop"},
			{2, "protocol ip flower src_ip 198.18.8.0/22 action drop"},
			{3, "protocol ip flower src_ip 198.18.0.0/23 action drop"},
			{4, "protocol ip flower src_ip 198.18.0.0/22 action pass"},
			{5, "protocol ip flower src_ip 198.18.0.0/22 action drop"},
			{3, ""},
		}, nil},
	} {
		t.Run(sc.name, func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarnessCache(t, 1, 1<<16, false)
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
				ids := map[uint16]maps.RuleID{}
				for k, o := range sc.ops {
					var ch maps.Change
					mop := modelOp{prio: o.prio, handle: 1}
					what = fmt.Sprintf("delete pref %d", o.prio)
					if o.text != "" {
						mop.r = parseTC(t, o.prio, 1, o.text)
						ch.Insert = []maps.Insert{{Rule: mop.r}}
						what = fmt.Sprintf("insert pref %d %s", o.prio, o.text)
					} else {
						ch.Delete = []maps.RuleID{ids[o.prio]}
					}
					oldRules, newRules := buildModel(ops).Rules(), buildModel(append(slices.Clone(ops), mop)).Rules()
					oldV, newV = make([]uint32, len(frames)), make([]uint32, len(frames))
					for i, f := range frames {
						oldV[i] = verdictRet[refmodel.Run(oldRules, f, 1).Verdict]
						newV[i] = verdictRet[refmodel.Run(newRules, f, 1).Verdict]
					}
					got, err := h.table.Apply(ch)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if o.text != "" {
						ids[o.prio] = got[0]
					}
					ops = append(ops, mop)
					h.model = *buildModel(ops)
					h.checkFlows()
					h.check(frames)
					if sc.later != nil {
						if _, n := h.table.ChoiceCounts(); n != sc.later[k] {
							t.Fatalf("%s: %d filters past their first choice, want %d", what, n, sc.later[k])
						}
					}
				}
			})
		})
	}
}

// TestChosenSameMatchRefused: a second filter of one pref with the
// first's match is refused, as flower refuses it (EEXIST), though the
// table could hold it in another of its choices.
func TestChosenSameMatchRefused(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, false)
		const text = "protocol ip flower src_ip 198.18.0.0/20 action drop"
		if !h.install(1, 1, text) {
			t.Fatal("the first filter was refused")
		}
		if h.install(1, 2, text) {
			t.Fatal("a second filter of the same pref and match was taken")
		}
		two := maps.Change{Insert: []maps.Insert{{Rule: parseTC(t, 2, 1, text)}, {Rule: parseTC(t, 2, 2, text)}}}
		if _, err := h.table.Apply(two); !errors.Is(err, maps.ErrExists) {
			t.Fatalf("two filters of one pref and match in one change: %v, want ErrExists", err)
		}
		h.checkFlows()
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
