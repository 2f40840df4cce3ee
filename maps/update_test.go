package maps_test

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
	xmaps "github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// TestUpdateSourceAsSyncSource: random deltas applied with UpdateSource
// (the daemon's path for one filter notification) leave the table as
// SyncSource of the whole wanted set would: the same rules of the source,
// each once, with the flows the maps hold and no slot reused early; and
// the packets of a rule kept across changes keep being counted.
func TestUpdateSourceAsSyncSource(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarness(t, 7, 1<<16)
		h.deferred = true // the daemon's mode: freed ids are held
		h.reopen()
		g := &gen{rng: h.rng}
		// The wanted rules by "pref/handle": 60 of them at most, over 3
		// prefs with several masks each.
		want := map[string]*rule.Rule{}
		clashes, changes := 0, 0
		for round := 0; round < 300; round++ {
			next := maps.Clone(want)
			add, remove, gone := randomTCDelta(t, h, g, next)
			added, removed, err := h.table.UpdateSource(rule.SourceTC, add, remove)
			h.checkHeld()
			h.checkFlows()
			if err != nil {
				// Two random matches of one pref may be the same
				// (ErrExists): then nothing changed.
				if !errors.Is(err, xmaps.ErrExists) {
					t.Fatalf("round %d: %v", round, err)
				}
				clashes++
				sameTCRules(t, h, want, round, "after a refused change")
				continue
			}
			changes++
			want = next
			// The model as the kernel: a filter out and one in at its
			// pref and handle is a replace, which keeps its place.
			in := map[[2]int]*rule.Rule{}
			for _, r := range add {
				in[[2]int{int(r.Prio), int(r.Handle)}] = r
			}
			for _, g := range gone {
				if r := in[g]; r != nil {
					h.model.Replace(uint16(g[0]), uint32(g[1]), r)
					delete(in, g)
				} else {
					h.model.Delete(uint16(g[0]), uint32(g[1]))
				}
			}
			for _, r := range add {
				if in[[2]int{int(r.Prio), int(r.Handle)}] == r {
					h.model.Add(r)
				}
			}
			if added != len(add) || removed != len(remove) {
				t.Fatalf("round %d: added %d removed %d, asked %d and %d", round, added, removed, len(add), len(remove))
			}
			sameTCRules(t, h, want, round, "after UpdateSource")
			// The same set as a whole: SyncSource finds nothing to do.
			all := make([]*rule.Rule, 0, len(want))
			for _, r := range want {
				all = append(all, r)
			}
			if a, r, err := h.table.SyncSource(rule.SourceTC, all); err != nil || a+r != 0 {
				t.Fatalf("round %d: SyncSource after UpdateSource: added %d removed %d, %v", round, a, r, err)
			}
			if round%4 == 0 {
				frames := make([][]byte, 50)
				for i := range frames {
					frames[i] = g.frame()
				}
				h.check(frames)
			}
			if round%50 == 49 {
				h.reopen() // the text index is rebuilt from the pins
			}
		}
		t.Logf("%d changes, %d refused as clashes", changes, clashes)
		if changes < 200 {
			t.Errorf("only %d of 300 changes went in: the generator clashes too often to test much", changes)
		}
	})
}

// randomTCDelta draws a few changes to next, the wanted rules by
// "pref/handle", and makes them in it: filters added, replaced (the old
// text removed, the new added) or deleted; gone is the pref and handle
// of each removed text.
func randomTCDelta(t *testing.T, h *harness, g *gen, next map[string]*rule.Rule) (add []*rule.Rule, remove []rule.Identity, gone [][2]int) {
	for i := 0; i < 1+h.rng.Intn(4); i++ {
		prio, handle := uint16(1+h.rng.Intn(3)), uint32(1+h.rng.Intn(20))
		k := fmt.Sprint(prio, "/", handle)
		if slices.ContainsFunc(add, func(a *rule.Rule) bool { return a.Prio == prio && a.Handle == handle }) {
			continue
		}
		old := next[k]
		if old != nil {
			remove = append(remove, old.Identity())
			gone = append(gone, [2]int{int(prio), int(handle)})
			delete(next, k)
			if h.rng.Intn(2) == 0 {
				continue // deleted
			}
		}
		r := randomTCRule(t, g, prio, handle) // added, or replaced
		next[k] = r
		add = append(add, r)
	}
	return add, remove, gone
}

// randomTCRule is a random TC filter at prio and handle, as the daemon
// reads one from the kernel.
func randomTCRule(t *testing.T, g *gen, prio uint16, handle uint32) *rule.Rule {
	for {
		text := fmt.Sprintf("pref %d handle 0x%x %s", prio, handle, g.rule(prio, nil))
		r, err := ruletext.Parse(ingressDev, text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if r.RangesOrdered() && handle%3 != 0 {
			continue // ranged groups, but not all of them
		}
		resolveRedirects(t, r)
		r.Source = rule.SourceTC
		r.Text = ruletext.Format(r)
		return r
	}
}

// sameTCRules fails the test unless the table's TC rules are want's.
func sameTCRules(t *testing.T, h *harness, want map[string]*rule.Rule, round int, what string) {
	t.Helper()
	var got, exp []string
	for _, in := range h.table.Rules() {
		if in.Rule.Source == rule.SourceTC {
			got = append(got, in.Rule.Text)
		}
	}
	for _, r := range want {
		exp = append(exp, r.Text)
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Fatalf("round %d, %s: table holds\n%v\nwanted\n%v", round, what, got, exp)
	}
}

// TestRedirectTargetBackInDevmap: the kernel drops a device's devmap
// entry when the device goes away, without the table knowing. A new
// action set redirecting to that ifindex (a device that took it over, or
// the same one back) must put the entry in again, even while the table
// still believes it there (a deferred table forgets unused entries only
// when it settles): a missing entry makes XDP drop what it redirects.
func TestRedirectTargetBackInDevmap(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarness(t, 1, 1<<10)
		h.deferred = true
		h.reopen()
		ifi, err := net.InterfaceByName("r1")
		if err != nil {
			t.Fatal(err)
		}
		redirect := func(handle uint32, port int) *rule.Rule {
			r, err := ruletext.Parse(ingressDev, fmt.Sprintf(
				"pref 1 handle 0x%x protocol ip flower ip_proto udp dst_port %d action mirred egress redirect dev r1", handle, port))
			if err != nil {
				t.Fatal(err)
			}
			r.Actions[0].Ifindex = ifi.Index
			r.Text = ruletext.Format(r)
			return r
		}
		first := redirect(1, 1000)
		if _, err := h.table.Apply(xmaps.Change{Insert: []xmaps.Insert{{Rule: first}}}); err != nil {
			t.Fatal(err)
		}
		var v uint32
		if err := h.objs.TxPorts.Lookup(uint32(ifi.Index), &v); err != nil {
			t.Fatalf("devmap entry of r1 after the first rule: %v", err)
		}
		// As the kernel does when r1 is unregistered.
		if err := h.objs.TxPorts.Delete(uint32(ifi.Index)); err != nil {
			t.Fatal(err)
		}
		ids := h.table.Rules()
		if _, err := h.table.Apply(xmaps.Change{Delete: []xmaps.RuleID{ids[0].ID}}); err != nil {
			t.Fatal(err)
		}
		// Before the table settles: a new rule to the same ifindex.
		if _, err := h.table.Apply(xmaps.Change{Insert: []xmaps.Insert{{Rule: redirect(2, 2000)}}}); err != nil {
			t.Fatal(err)
		}
		if err := h.objs.TxPorts.Lookup(uint32(ifi.Index), &v); err != nil {
			t.Fatalf("devmap entry of r1 after a new rule redirecting to it: %v (XDP would drop its packets)", err)
		}
	})
}
