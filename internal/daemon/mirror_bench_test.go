package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// BenchmarkMirrorChange10K: one filter added to, then deleted from, a
// device holding 10,000 mirrored filters of one pref (Open vSwitch's
// layout of one mask): what the daemon does for each once the
// notification is read (syncTCChanges), timed in its two parts, the
// mirror's change (flower.MirrorSet) and the table's (UpdateSource).
func BenchmarkMirrorChange10K(b *testing.B) {
	spec, err := bpf.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	if err := maps.SizeSpec(spec, maps.DefaultCacheEntries); err != nil {
		b.Fatal(err)
	}
	if err := maps.SizeTables(spec, 1<<16, 1<<15); err != nil {
		b.Fatal(err)
	}
	var objs bpf.XdpflowObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Skipf("load (needs root): %v", err)
	}
	defer objs.Close()
	if err := maps.Init(&objs.XdpflowMaps, maps.MaxSubtables, 1, 0); err != nil {
		b.Fatal(err)
	}
	t, err := maps.Open(&objs.XdpflowMaps, offload.RuleParser("lo"))
	if err != nil {
		b.Fatal(err)
	}
	t.DeferGrace()
	filter := func(i int) *flower.KernelFilter {
		text := fmt.Sprintf("pref 2 handle 0x%x protocol ip flower dst_ip 198.18.%d.%d ip_proto udp dst_port %d action drop",
			1+i, i>>8&0xff, i&0xff, 1000+i%7)
		r, err := ruletext.Parse("lo", text)
		if err != nil {
			b.Fatal(err)
		}
		r.Source = rule.SourceTC // as the reader gives them
		r.Text = ruletext.Format(r)
		return &flower.KernelFilter{Prio: 2, Handle: uint32(1 + i), Protocol: r.Protocol, Kind: "flower", Rule: r}
	}
	var filters []*flower.KernelFilter
	for i := 0; i < 10000; i++ {
		filters = append(filters, filter(i))
	}
	opt := flower.MirrorOptions{Keepalive: time.Second}
	set := flower.NewMirrorSet(filters, opt)
	if _, _, err := t.SyncSource(rule.SourceTC, set.Rules()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var tMirror, tSync time.Duration
	defer func() {
		b.ReportMetric(float64(tMirror.Microseconds())/float64(2*b.N)/1000, "mirror-ms/change")
		b.ReportMetric(float64(tSync.Microseconds())/float64(2*b.N)/1000, "table-ms/change")
	}()
	timed := func(f *flower.KernelFilter, deleted bool) (added, removed int) {
		t0 := time.Now()
		set.Change(f, deleted)
		add, remove := set.Flush()
		t1 := time.Now()
		added, removed, err := t.UpdateSource(rule.SourceTC, add, remove)
		if err != nil {
			b.Fatal(err)
		}
		tMirror += t1.Sub(t0)
		tSync += time.Since(t1)
		return added, removed
	}
	for i := 0; i < b.N; i++ {
		f := filter(10000 + i)
		if added, _ := timed(f, false); added != 1 {
			b.Fatalf("added %d", added)
		}
		if _, removed := timed(f, true); removed != 1 {
			b.Fatalf("removed %d", removed)
		}
	}
	if set.Len() != 10000 || set.Offloaded() != 10000 {
		b.Fatalf("%d filters, %d offloaded", set.Len(), set.Offloaded())
	}
}
