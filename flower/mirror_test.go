package flower

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// ovsLikeFilters: n filters as Open vSwitch offloads them, one pref per
// (protocol, mask): exact IPv4 destinations and UDP ports, mirred
// redirect and drop.
func ovsLikeFilters(tb testing.TB, n int) []*KernelFilter {
	tb.Helper()
	out := make([]*KernelFilter, 0, n)
	for i := 0; i < n; i++ {
		text := fmt.Sprintf("protocol ip flower dst_ip 198.18.%d.%d ip_proto udp dst_port %d action drop",
			i>>8&0xff, i&0xff, 1000+i%7)
		out = append(out, testFilter(tb, 2, uint32(1+i), text))
	}
	return out
}

// testFilter is a kernel filter of chain 0 as the reader would decode it.
func testFilter(tb testing.TB, prio uint16, handle uint32, text string) *KernelFilter {
	tb.Helper()
	r, err := ruletext.Parse("b0", fmt.Sprintf("pref %d handle 0x%x %s", prio, handle, text))
	if err != nil {
		tb.Fatalf("%s: %v", text, err)
	}
	return &KernelFilter{Prio: prio, Handle: handle, Protocol: r.Protocol, Kind: "flower", Rule: r}
}

// BenchmarkMirror10K: deciding what of 10,000 filters of one pref runs in
// XDP, which the daemon does on every change of the device's filters.
func BenchmarkMirror10K(b *testing.B) {
	filters := ovsLikeFilters(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rules, _ := Mirror("b0", filters, MirrorOptions{Keepalive: time.Second})
		if len(rules) != len(filters) {
			b.Fatalf("%d rules of %d filters", len(rules), len(filters))
		}
	}
}

// BenchmarkMirrorSet10K: the same as a MirrorSet, which the daemon builds
// on every dump of a device.
func BenchmarkMirrorSet10K(b *testing.B) {
	filters := ovsLikeFilters(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s := NewMirrorSet(filters, MirrorOptions{Keepalive: time.Second}); s.Offloaded() != len(filters) {
			b.Fatalf("%d offloaded of %d filters", s.Offloaded(), len(filters))
		}
	}
}

// pairwiseStatuses is what Mirror must decide, by comparing every pair of
// a pref's filters: the reference for MirrorSet's indexes.
func pairwiseStatuses(filters []*KernelFilter, opt MirrorOptions) []MirrorStatus {
	sorted := slices.Clone(filters)
	slices.SortFunc(sorted, func(a, b *KernelFilter) int {
		if lessID(idOf(a), idOf(b)) {
			return -1
		}
		return 1
	})
	match := func(f *KernelFilter) *rule.Match {
		if f.Rule != nil {
			return &f.Rule.Match
		}
		return &f.Punt.Match
	}
	out := make([]MirrorStatus, len(sorted))
	for i, f := range sorted {
		st := &out[i]
		st.Filter = f
		if f.Chain != 0 {
			st.Reason = fmt.Sprintf("chain %d is reached only through goto chain, which TC runs", f.Chain)
			continue
		}
		st.Punted = true
		if st.Reason = offloadable(f, opt); st.Reason != "" {
			continue
		}
		for _, o := range sorted {
			if o != f && o.Chain == 0 && o.Prio == f.Prio && rule.Overlaps(match(f), match(o)) {
				st.Reason = fmt.Sprintf("may match the same packets as handle 0x%x of pref %d, and the kernel's order between them is not visible",
					o.Handle, o.Prio)
				break
			}
		}
		st.Offloaded, st.Punted = st.Reason == "", st.Reason != ""
	}
	return out
}

// TestMirrorOverlapsAsPairwise: on random filter sets (a few prefs, many
// masks, exact and ranged ports, small value domains so that overlaps are
// common), Mirror's indexed search decides every filter as comparing every
// pair does, with the same witness named.
func TestMirrorOverlapsAsPairwise(t *testing.T) {
	found := 0
	for seed := int64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewSource(seed))
		n := 2 + rng.Intn(60)
		var filters []*KernelFilter
		for h := 1; h <= n; h++ {
			filters = append(filters, randomFilter(t, rng, uint16(1+rng.Intn(3)), uint32(h)))
		}
		_, got := Mirror("b0", filters, MirrorOptions{})
		want := pairwiseStatuses(filters, MirrorOptions{})
		for i := range want {
			if got[i].Filter != want[i].Filter || got[i].Offloaded != want[i].Offloaded || got[i].Reason != want[i].Reason ||
				got[i].Punted != want[i].Punted {
				t.Fatalf("seed %d: filter pref %d handle %d: %+v, pairwise %+v", seed, want[i].Filter.Prio, want[i].Filter.Handle, got[i], want[i])
			}
			if strings.HasPrefix(want[i].Reason, "may match") {
				found++
			}
		}
	}
	if found < 500 {
		t.Fatalf("only %d overlapping filters over all seeds: the generator no longer makes overlaps", found)
	}
}

// randomFilter: a flower filter of chain 0 over small value domains, so
// that overlaps are common: many masks, exact and ranged ports; one in
// eight cannot be offloaded.
func randomFilter(tb testing.TB, rng *rand.Rand, prio uint16, handle uint32) *KernelFilter {
	text := "protocol ip flower"
	if rng.Intn(2) == 0 {
		text += fmt.Sprintf(" dst_ip 10.0.%d.0/%d", rng.Intn(4), 22+rng.Intn(3))
	}
	if rng.Intn(3) == 0 {
		text += fmt.Sprintf(" src_ip 10.1.0.%d", rng.Intn(3))
	}
	if rng.Intn(2) == 0 {
		text += " ip_proto " + []string{"tcp", "udp"}[rng.Intn(2)]
		switch rng.Intn(3) {
		case 0:
			text += fmt.Sprintf(" dst_port %d", 1+rng.Intn(4))
		case 1:
			lo := 1 + rng.Intn(4)
			text += fmt.Sprintf(" dst_port %d-%d", lo, lo+1+rng.Intn(3))
		}
	}
	if rng.Intn(4) == 0 {
		text += fmt.Sprintf(" action mirred egress redirect dev b%d", rng.Intn(3))
	} else {
		text += " action drop"
	}
	f := testFilter(tb, prio, handle, text)
	for i := range f.Rule.Actions {
		if a := &f.Rule.Actions[i]; a.Kind == rule.ActRedirect {
			a.Ifindex = int(a.Dev[1]-'0') + 10
		}
	}
	if rng.Intn(8) == 0 {
		f.Err = fmt.Errorf("not offloadable")
	}
	return f
}

// TestMirrorSetAsMirror: a MirrorSet changed one filter at a time (added,
// replaced, deleted; now and then a chain other than 0 or a non-flower
// filter whose punts share one text) decides after every change what
// Mirror decides from scratch: the same rules, the same status and reason
// for every filter, and the rules its Flush said came and went add up to
// them.
func TestMirrorSetAsMirror(t *testing.T) {
	// b1 cannot take redirects.
	opt := MirrorOptions{Keepalive: time.Second, CheckRedirect: func(ifindex int) error {
		if ifindex == 11 {
			return fmt.Errorf("refused")
		}
		return nil
	}}
	flips := 0
	last := map[string]bool{} // each filter's status at the last step
	for seed := int64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewSource(seed))
		live := map[filterID]*KernelFilter{}
		var initial []*KernelFilter
		for i := 0; i < rng.Intn(20); i++ {
			f := randomMirrorFilter(t, rng)
			if live[idOf(f)] == nil {
				live[idOf(f)] = f
				initial = append(initial, f)
			}
		}
		s := NewMirrorSet(initial, opt)
		installed := ruleIdentities(s.Rules())
		for step := 0; step < 80; step++ {
			// One to three notifications, then a flush.
			for n := 1 + rng.Intn(3); n > 0; n-- {
				f := randomMirrorFilter(t, rng)
				if old := live[idOf(f)]; old != nil && rng.Intn(2) == 0 {
					delete(live, idOf(f))
					s.Change(old, true)
					continue
				}
				live[idOf(f)] = f
				s.Change(f, false)
			}
			add, remove := s.Flush()
			applyFlush(t, seed, step, installed, add, remove)
			var all []*KernelFilter
			for _, f := range live {
				all = append(all, f)
			}
			rules, statuses := Mirror("b0", all, opt)
			want := ruleTexts(rules)
			if wantIDs := ruleIdentities(rules); !maps.Equal(installed, wantIDs) {
				t.Fatalf("seed %d step %d: Flushes add up to %d rules, Mirror gives %d:\n%v", seed, step, len(installed), len(wantIDs), want)
			}
			got := ruleTexts(s.Rules())
			if !maps.Equal(got, want) {
				t.Fatalf("seed %d step %d: Rules\n%v\nMirror gives\n%v", seed, step, got, want)
			}
			gotSt := s.Statuses()
			off := 0
			for i, st := range statuses {
				if st.Offloaded {
					off++
				}
				if i >= len(gotSt) || gotSt[i] != st {
					t.Fatalf("seed %d step %d: status %d: %+v, Mirror %+v", seed, step, i, gotSt[min(i, len(gotSt)-1)], st)
				}
				k := fmt.Sprint(seed, idOf(st.Filter))
				if was, ok := last[k]; ok && was != st.Offloaded {
					flips++
				}
				last[k] = st.Offloaded
			}
			if len(gotSt) != len(statuses) || s.Offloaded() != off || s.Len() != len(live) {
				t.Fatalf("seed %d step %d: %d statuses, %d offloaded, %d filters; Mirror %d, %d, %d",
					seed, step, len(gotSt), s.Offloaded(), s.Len(), len(statuses), off, len(live))
			}
		}
	}
	// Overlaps that come and go make other filters change status.
	if flips < 50 {
		t.Fatalf("only %d status changes over all seeds: the generator no longer moves filters between offloaded and punted", flips)
	}
}

// randomMirrorFilter is randomFilter's filter at a random pref and handle,
// now and then in chain 1 or a u32 filter (punted, with a punt of its own).
func randomMirrorFilter(t *testing.T, rng *rand.Rand) *KernelFilter {
	prio, handle := uint16(1+rng.Intn(3)), uint32(1+rng.Intn(25))
	switch rng.Intn(12) {
	case 0:
		f := randomFilter(t, rng, prio, handle)
		f.Chain = 1
		return f
	case 1:
		punt := &rule.Rule{Source: rule.SourceTC, Dev: "b0", Prio: prio, Handle: 0xFFFFFFFF, Protocol: rule.EthPAll,
			Actions: []rule.Action{{Kind: rule.ActPass}}}
		punt.Text = ruletext.Format(punt)
		return &KernelFilter{Prio: prio, Handle: handle, Kind: "u32", Err: fmt.Errorf("u32: not flower"), Punt: punt}
	}
	return randomFilter(t, rng, prio, handle)
}

// ruleTexts is the set of the rules' texts.
func ruleTexts(rules []*rule.Rule) map[string]bool {
	set := map[string]bool{}
	for _, r := range rules {
		set[r.Text] = true
	}
	return set
}

// ruleIdentities is the set of the rules' identities.
func ruleIdentities(rules []*rule.Rule) map[rule.Identity]bool {
	set := map[rule.Identity]bool{}
	for _, r := range rules {
		set[r.Identity()] = true
	}
	return set
}

// applyFlush applies what a Flush said came and went to installed, the
// identities of the rules the Flushes added so far. Removing one never
// added, or adding one twice, fails the test.
func applyFlush(t *testing.T, seed int64, step int, installed map[rule.Identity]bool, add []*rule.Rule, remove []rule.Identity) {
	t.Helper()
	for _, id := range remove {
		if !installed[id] {
			t.Fatalf("seed %d step %d: Flush removes pref %d handle %d, which it never added", seed, step, id.Prio, id.Handle)
		}
		delete(installed, id)
	}
	for _, r := range add {
		if installed[r.Identity()] {
			t.Fatalf("seed %d step %d: Flush adds %q twice", seed, step, r.Text)
		}
		installed[r.Identity()] = true
	}
}

// BenchmarkDecode10K: decoding 10,000 filters of a dump, each redirecting
// out of another device as Open vSwitch's do, with the device names
// resolved through the reader's memo (one lookup per device).
func BenchmarkDecode10K(b *testing.B) {
	var msgs [][]byte
	for _, f := range ovsLikeFilters(b, 10000) {
		r := *f.Rule
		r.Actions = []rule.Action{{Kind: rule.ActRedirect, Dev: "lo", Ifindex: 1}}
		m, err := FilterMessage(7, &r)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		names := NewIfnameMemo()
		for _, m := range msgs {
			f, err := DecodeFilter(m, "b0", names)
			if err != nil || f.Rule == nil {
				b.Fatalf("decode: %v %v", err, f.Err)
			}
		}
	}
}

// TestMirrorBlocked: with Blocked set (a hook before TC that XDP would
// overtake), no filter is offloaded: each is punted with the reason.
func TestMirrorBlocked(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var filters []*KernelFilter
	for h := uint32(1); h <= 30; h++ {
		filters = append(filters, randomFilter(t, rng, uint16(h), h)) // a pref each: no overlap punts
	}
	if _, st := Mirror("b0", filters, MirrorOptions{}); countOffloaded(st) == 0 {
		t.Fatal("no filter offloaded even unblocked: the test proves nothing")
	}
	rules, st := Mirror("b0", filters, MirrorOptions{Blocked: fmt.Errorf("a tcx ingress program runs first")})
	if n := countOffloaded(st); n != 0 {
		t.Errorf("%d filters offloaded while blocked", n)
	}
	for _, s := range st {
		if !strings.Contains(s.Reason, "tcx ingress") || !s.Punted {
			t.Errorf("handle 0x%x: reason %q punted %v", s.Filter.Handle, s.Reason, s.Punted)
		}
	}
	for _, r := range rules {
		if len(r.Actions) != 1 || r.Actions[0].Kind != rule.ActPass {
			t.Errorf("installed %q while blocked: only punts may be", r.Text)
		}
	}
	set := NewMirrorSet(filters, MirrorOptions{Blocked: fmt.Errorf("blocked")})
	if set.Offloaded() != 0 {
		t.Errorf("MirrorSet offloads %d filters while blocked", set.Offloaded())
	}
}

func countOffloaded(st []MirrorStatus) int {
	n := 0
	for _, s := range st {
		if s.Offloaded {
			n++
		}
	}
	return n
}

// TestPuntsOfEqualMatchShareOneRule: a filter xdpflow reads only part of
// (a key it does not know) punts on what it reads, which may equal
// another filter's match in the same pref; the kernel holds both. Their
// punts are one rule, not two rules the table refuses as the same match.
func TestPuntsOfEqualMatchShareOneRule(t *testing.T) {
	known := testFilter(t, 4, 4, "protocol ip flower src_ip 198.18.1.5 action drop")
	partial := &KernelFilter{Prio: 4, Handle: 5, Protocol: known.Protocol, Kind: "flower",
		Err: fmt.Errorf("flower key enc_key_id: not supported")}
	p := *known.Rule
	p.Handle, p.Actions = PuntHandle, []rule.Action{{Kind: rule.ActPass}}
	p.Text = ruletext.Format(&p)
	partial.Punt = &p
	filters := []*KernelFilter{known, partial}
	rules, st := Mirror("b0", filters, MirrorOptions{})
	if len(rules) != 1 || rules[0].Actions[0].Kind != rule.ActPass {
		t.Fatalf("rules %v, want one punt", rules)
	}
	for _, s := range st {
		if s.Offloaded || !s.Punted {
			t.Errorf("handle %d: offloaded %v punted %v (%s)", s.Filter.Handle, s.Offloaded, s.Punted, s.Reason)
		}
	}
	if got := NewMirrorSet(filters, MirrorOptions{}).Rules(); len(got) != 1 || got[0].Text != rules[0].Text {
		t.Errorf("MirrorSet rules %v, want Mirror's %v", got, rules)
	}
}
