package maps_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/refmodel"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// The differential tests run inside a namespace whose loopback is the
// ingress device (BPF_PROG_TEST_RUN's default) and whose veth pair r1/r2
// are redirect targets.
const ingressDev = "lo"

// harness is a loaded (unattached) program with its table and the model.
type harness struct {
	t     testing.TB
	objs  *bpf.XdpflowObjects
	table *maps.Table
	model refmodel.Table
	ids   map[string]maps.RuleID // "prio/handle" -> id
	rng   *rand.Rand
	// seen counts model outcomes over the run, so the test can show it
	// exercised every verdict.
	seen map[string]int
	// deferred tables return from changes before freed slots are reusable
	// (the daemon's mode); reopen keeps the mode.
	deferred bool
}

func newHarness(t testing.TB, seed int64, maxFlows uint32) *harness {
	return newHarnessCache(t, seed, maxFlows, true)
}

// newHarnessCache loads the program with or without its flow cache.
func newHarnessCache(t testing.TB, seed int64, maxFlows uint32, cache bool) *harness {
	t.Helper()
	spec, err := bpf.LoadXdpflow()
	if err != nil {
		t.Fatal(err)
	}
	if !cache {
		if err := spec.Variables["xf_cache_disabled"].Set(uint32(1)); err != nil {
			t.Fatal(err)
		}
	}
	spec.Maps[bpf.XdpflowMapFlows].MaxEntries = maxFlows
	spec.Maps[bpf.XdpflowMapFlowsNarrow].MaxEntries = maxFlows
	for _, n := range []string{bpf.XdpflowMapRuleStats, bpf.XdpflowMapRuleSpecs, bpf.XdpflowMapActionSets} {
		spec.Maps[n].MaxEntries = 4096
	}
	objs := &bpf.XdpflowObjects{}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	if err := maps.Init(&objs.XdpflowMaps, maps.MaxSubtables, 1, 0); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, objs: objs, ids: map[string]maps.RuleID{}, rng: rand.New(rand.NewSource(seed)), seen: map[string]int{}}
	h.reopen()
	return h
}

func parseStored(text string) (*rule.Rule, error) { return flower.ParseRuleText(ingressDev, text) }

// reopen rebuilds the table from the maps alone, as a new process would.
func (h *harness) reopen() {
	t, err := maps.Open(&h.objs.XdpflowMaps, parseStored)
	if err != nil {
		h.t.Fatalf("open table: %v", err)
	}
	if h.deferred {
		t.DeferGrace()
	}
	h.table = t
}

func key(prio uint16, handle uint32) string { return fmt.Sprintf("%d/%d", prio, handle) }

// install parses a tc command tail and installs it (replace when the
// handle exists), keeping the model in step. It returns false when the
// table refused it for an expected reason.
func (h *harness) install(prio uint16, handle uint32, text string) bool {
	h.t.Helper()
	args := append([]string{"add", "dev", ingressDev, "ingress", "pref", fmt.Sprint(prio), "handle", fmt.Sprint(handle)},
		strings.Fields(text)...)
	c, err := flower.ParseCommand(args)
	if err != nil {
		h.t.Fatalf("parse %q: %v", text, err)
	}
	r := c.Rule
	for i := range r.Actions {
		if r.Actions[i].Kind == rule.ActRedirect {
			ifi, err := net.InterfaceByName(r.Actions[i].Dev)
			if err != nil {
				h.t.Fatal(err)
			}
			r.Actions[i].Ifindex = ifi.Index
		}
	}
	r.Text = flower.Format(r)
	k := key(prio, handle)
	old, replacing := h.ids[k]
	ids, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r, Replaces: old}}})
	if errors.Is(err, maps.ErrExists) || errors.Is(err, maps.ErrTableFull) {
		return false
	}
	if err != nil {
		h.t.Fatalf("install %q: %v", r.Text, err)
	}
	h.checkHeld()
	h.ids[k] = ids[0]
	if replacing {
		h.model.Replace(prio, handle, r)
	} else {
		h.model.Add(r)
	}
	return true
}

func (h *harness) remove(prio uint16, handle uint32) {
	k := key(prio, handle)
	id, ok := h.ids[k]
	if !ok {
		return
	}
	if _, err := h.table.Apply(maps.Change{Delete: []maps.RuleID{id}}); err != nil {
		h.t.Fatalf("delete %s: %v", k, err)
	}
	h.checkHeld()
	delete(h.ids, k)
	h.model.Delete(prio, handle)
}

// checkHeld fails the test if a slot was reused before its grace period.
func (h *harness) checkHeld() {
	h.t.Helper()
	if v := h.table.HeldViolations(); len(v) > 0 {
		h.t.Fatalf("slots reused too early: %v", v)
	}
}

// check runs frames through the program and the model and compares verdict,
// output frame and per-rule counters.
func (h *harness) check(frames [][]byte) {
	h.t.Helper()
	rules := h.model.Rules()
	before := map[maps.RuleID][2]uint64{}
	for _, in := range h.table.Rules() {
		p, b, _, err := h.table.Stats(in.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		before[in.ID] = [2]uint64{p, b}
	}
	want := map[string][2]uint64{}
	for _, f := range frames {
		m := refmodel.Run(rules, f, 1)
		opts := ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)}
		ret, err := h.objs.Xdpflow.Run(&opts)
		if err != nil {
			h.t.Fatalf("run: %v", err)
		}
		h.seen[m.Verdict.String()]++
		if m.Rule >= 0 {
			h.seen["matched"]++
		}
		wantRet := map[refmodel.Verdict]uint32{refmodel.Pass: 2, refmodel.Drop: 1, refmodel.TX: 3, refmodel.Redirect: 4}[m.Verdict]
		matched := "none"
		if m.Rule >= 0 {
			matched = rules[m.Rule].Text
			r := rules[m.Rule]
			c := want[key(r.Prio, r.Handle)]
			want[key(r.Prio, r.Handle)] = [2]uint64{c[0] + 1, c[1] + uint64(m.Bytes)}
		}
		if ret != wantRet {
			k, _, ok := refmodel.Parse(f, 1)
			h.t.Fatalf("frame %s\nparsed=%v key=%+v\nprogram returned %d, model %s (rule %q)\nrules:\n%s",
				hex.EncodeToString(f), ok, k, ret, m.Verdict, matched, dump(rules))
		}
		if m.Verdict != refmodel.Drop && !bytes.Equal(opts.DataOut, m.Frame) {
			h.t.Fatalf("frame %s\nrule %q\nprogram out %s\nmodel out   %s", hex.EncodeToString(f), matched,
				hex.EncodeToString(opts.DataOut), hex.EncodeToString(m.Frame))
		}
	}
	for _, in := range h.table.Rules() {
		p, b, _, err := h.table.Stats(in.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		got := [2]uint64{p - before[in.ID][0], b - before[in.ID][1]}
		if w := want[key(in.Rule.Prio, in.Rule.Handle)]; got != w {
			h.t.Fatalf("rule %q: counted %d packets %d bytes, model %d packets %d bytes\nrules:\n%s",
				in.Rule.Text, got[0], got[1], w[0], w[1], dump(rules))
		}
	}
}

func dump(rules []*rule.Rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString("  " + r.Text + "\n")
	}
	return b.String()
}

func TestDifferentialRandom(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	total := map[string]int{}
	defer func() {
		t.Logf("outcomes over all seeds: %v", total)
		if total["cache_hits"] < 1000 {
			t.Errorf("only %d flow cache hits: the cache is not exercised", total["cache_hits"])
		}
		for _, v := range []string{"pass", "drop", "tx", "redirect", "matched"} {
			if total[v] < 20 {
				t.Errorf("only %d %q outcomes: the generator no longer exercises them", total[v], v)
			}
		}
	}()
	for seed := int64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarness(t, seed, 1<<16)
				// Even seeds: the daemon's deferred grace periods, with
				// reopens finding slots another table left held.
				h.deferred = seed%2 == 0
				h.reopen()
				g := &gen{rng: h.rng}
				for round := 0; round < 6; round++ {
					// Churn: add or replace a few rules, delete some.
					for i := 0; i < 4+h.rng.Intn(6); i++ {
						prio := uint16(1 + h.rng.Intn(6))
						handle := uint32(1 + h.rng.Intn(6))
						h.install(prio, handle, g.rule(prio, h.model.Rules()))
					}
					for i := 0; i < h.rng.Intn(3); i++ {
						h.remove(uint16(1+h.rng.Intn(6)), uint32(1+h.rng.Intn(6)))
					}
					if round%2 == 1 {
						h.reopen()
					}
					frames := make([][]byte, 300)
					for i := range frames {
						frames[i] = g.frame()
					}
					// Twice: the second pass is answered by the
					// flow cache and must not differ.
					h.check(append(frames, frames...))
				}
				for k, v := range h.seen {
					total[k] += v
				}
				cnt, err := h.table.Counters()
				if err != nil {
					t.Fatal(err)
				}
				total["cache_hits"] += int(cnt[bpf.XdpflowXfCounterXF_CNT_CACHE_HIT])
			})
		})
	}
}
