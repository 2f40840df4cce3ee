package flower

import (
	"fmt"
	"maps"
	"math/rand"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/rule"
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
	r, err := ParseRuleText("b0", fmt.Sprintf("pref %d handle 0x%x %s", prio, handle, text))
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

// naiveWitnesses is the pairwise comparison overlapWitnesses replaces:
// the reference it must agree with.
func naiveWitnesses(sorted []*KernelFilter, chain0 []int, statuses []MirrorStatus,
	match func(int) *rule.Match) map[int]int {
	out := map[int]int{}
	for _, i := range chain0 {
		if !statuses[i].Offloaded {
			continue
		}
		for _, j := range chain0 {
			if i != j && sorted[i].Prio == sorted[j].Prio && rule.Overlaps(match(i), match(j)) {
				out[i] = j
				break
			}
		}
	}
	return out
}

// TestMirrorOverlapsAsPairwise: on random filter sets (a few prefs, many
// masks, exact and ranged ports, small value domains so that overlaps are
// common), the grouped search finds the same witness for every filter as
// comparing every pair does.
func TestMirrorOverlapsAsPairwise(t *testing.T) {
	found := 0
	for seed := int64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewSource(seed))
		n := 2 + rng.Intn(60)
		var filters []*KernelFilter
		for h := 1; h <= n; h++ {
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
			text += " action drop"
			f := testFilter(t, uint16(1+rng.Intn(3)), uint32(h), text)
			if rng.Intn(8) == 0 {
				f.Err = fmt.Errorf("not offloadable")
			}
			filters = append(filters, f)
		}
		sorted, chain0, statuses, match := mirrorInputs(filters, MirrorOptions{})
		got := overlapWitnesses(sorted, chain0, statuses, match)
		want := naiveWitnesses(sorted, chain0, statuses, match)
		if !maps.Equal(got, want) {
			t.Fatalf("seed %d: witnesses %v, pairwise %v", seed, got, want)
		}
		found += len(want)
	}
	if found < 500 {
		t.Fatalf("only %d overlapping filters over all seeds: the generator no longer makes overlaps", found)
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
		m, err := filterMessage(7, &r)
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
