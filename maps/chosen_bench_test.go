package maps_test

import (
	"slices"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/classbench"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// BenchmarkChosenChange10K: one tc filter added in the middle of
// ClassBench acl1 10K as filters of a pref each, and deleted again, in a
// table already holding the set (the table chooses flows for nearly every
// one of them: choices.go): the table's part of one change, p50 and max.
func BenchmarkChosenChange10K(b *testing.B) {
	s, err := classbench.LoadSeed("acl1")
	if err != nil {
		b.Fatal(err)
	}
	set := classbench.Generate(s, 10000, 1, classbench.DefaultOptions)
	// Rule i as FlowerFilter has it: pref pref, its match, action act.
	filter := func(r classbench.Rule, pref uint16, act string) *rule.Rule {
		return parseTC(b, pref, 1, "protocol ip flower "+classbench.FlowerMatch(r)+" action "+act)
	}
	_, t := scaleTable(b, 65536, 16384, parseStored)
	t.DeferGrace()
	var ch maps.Change
	for i, r := range set {
		ch.Insert = append(ch.Insert, maps.Insert{Rule: filter(r, uint16(2*i+1), "drop")})
	}
	if _, err := t.Apply(ch); err != nil {
		b.Fatal(err)
	}
	// Between the set's middle prefs (2i+1), a filter of ranges and
	// prefixes like the set's.
	mid := len(set) / 2
	added := filter(set[mid], uint16(2*mid+2), "pass")
	var adds, dels []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		ids, err := t.Apply(maps.Change{Insert: []maps.Insert{{Rule: added}}})
		adds = append(adds, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if _, err := t.Apply(maps.Change{Delete: ids}); err != nil {
			b.Fatal(err)
		}
		dels = append(dels, time.Since(t0))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1e3, name+"-p50-ms")
		b.ReportMetric(float64(d[len(d)-1].Microseconds())/1e3, name+"-max-ms")
	}
	report("add", adds)
	report("del", dels)
}
