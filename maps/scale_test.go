package maps_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// scaleTable loads the program's maps sized for flows flows and rules
// rules, as `xdpflow enable ... flows N rules N` would.
func scaleTable(b *testing.B, flows, rules uint32, parse maps.ParseFunc) (*bpf.XdpflowObjects, *maps.Table) {
	b.Helper()
	testutil.RequireRoot(b)
	spec, err := bpf.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	if err := maps.SizeSpec(spec, maps.DefaultCacheEntries); err != nil {
		b.Fatal(err)
	}
	if err := maps.SizeTables(spec, flows, rules); err != nil {
		b.Fatal(err)
	}
	objs := &bpf.XdpflowObjects{}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { objs.Close() })
	if err := maps.Init(&objs.XdpflowMaps, maps.MaxSubtables, 1, 0); err != nil {
		b.Fatal(err)
	}
	t, err := maps.Open(&objs.XdpflowMaps, parse)
	if err != nil {
		b.Fatal(err)
	}
	return objs, t
}

// srcRule is `protocol ip flower src_ip 10.x.y.z action drop` at pref 1,
// rule i of a bulk set (one mask: one subtable).
func srcRule(b *testing.B, i int) *rule.Rule {
	ip := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	c, err := flower.ParseCommand([]string{"add", "dev", ingressDev, "ingress", "pref", "1", "handle", fmt.Sprint(i + 1),
		"protocol", "ip", "flower", "src_ip", ip, "action", "drop"})
	if err != nil {
		b.Fatal(err)
	}
	c.Rule.Text = ruletext.Format(c.Rule)
	return c.Rule
}

// BenchmarkBulk10K: 10,000 flower rules installed in one change, then
// removed in one change; ms for each, strict (the change returns after
// the RCU grace period that frees what it removed, as the CLI does) and
// deferred (the daemon's mode: freed slots are held in the background).
func BenchmarkBulk10K(b *testing.B) {
	const n = 10000
	for _, deferred := range []bool{false, true} {
		name := map[bool]string{false: "strict", true: "deferred"}[deferred]
		b.Run(name, func(b *testing.B) {
			rules := make([]*rule.Rule, n)
			for i := range rules {
				rules[i] = srcRule(b, i)
			}
			var install, remove time.Duration
			for it := 0; it < b.N; it++ {
				_, t := scaleTable(b, 65536, 16384, parseStored)
				if deferred {
					t.DeferGrace()
				}
				ch := maps.Change{}
				for _, r := range rules {
					ch.Insert = append(ch.Insert, maps.Insert{Rule: r})
				}
				start := time.Now()
				ids, err := t.Apply(ch)
				install += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if got := t.Sizes().Flows; got != n {
					b.Fatalf("%d flows installed, want %d", got, n)
				}
				start = time.Now()
				if _, err := t.Apply(maps.Change{Delete: ids}); err != nil {
					b.Fatal(err)
				}
				remove += time.Since(start)
				if got := t.Sizes().Flows; got != 0 {
					b.Fatalf("%d flows left, want 0", got)
				}
				if err := t.Settle(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(install.Microseconds())/1e3/float64(b.N), "install-ms")
			b.ReportMetric(float64(remove.Microseconds())/1e3/float64(b.N), "remove-ms")
		})
	}
}

// kernelMemory is what the kernel holds in slab and per-CPU allocations
// (/proc/meminfo Slab + Percpu), in bytes: where BPF maps live.
func kernelMemory(b *testing.B) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var sum int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && (fs[0] == "Slab:" || fs[0] == "Percpu:") {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			sum += kb * 1024
		}
	}
	return sum
}

// mapMemlock is the kernel's own account of a map's memory (fdinfo
// memlock, which is the map's memory usage on this kernel).
func mapMemlock(b *testing.B, fd int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "memlock:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("fdinfo %d: no memlock", fd)
	return 0
}

// Benchmark1MFlows: one nft-style rule (a set of 2^20 source addresses,
// `ip saddr @blocklist drop`) installed as 1,048,576 flows; the map memory
// per flow, measured twice: the kernel's own account of the flows map
// (fdinfo memlock) and the growth of the kernel's slab and per-CPU memory
// while installing; and the install and remove times.
func Benchmark1MFlows(b *testing.B) {
	const n = 1 << 20
	parse := func(text string) (*rule.Rule, error) { return nft.ParseSpec(ingressDev, text) }
	ms := make([]rule.Match, n)
	for i := range ms {
		m := &ms[i]
		m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(0x0800), 0xFFFF
		copy(m.Key.SrcIp[:4], net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).To4())
		copy(m.Mask.SrcIp[:4], []byte{255, 255, 255, 255})
	}
	r := &rule.Rule{Source: rule.SourceNFT, Dev: ingressDev, Level: 1, Protocol: rule.EthPAll,
		Match: ms[0], More: ms[1:], Actions: []rule.Action{{Kind: rule.ActDrop}}, Name: "netdev/xf/in/1#0"}
	r.Digest = "bench"
	r.Text = nft.FormatSpec(r)
	for it := 0; it < b.N; it++ {
		objs, t := scaleTable(b, n, 1024, parse)
		emptyMap := mapMemlock(b, objs.Flows.FD()) + mapMemlock(b, objs.FlowsNarrow.FD())
		before := kernelMemory(b)
		start := time.Now()
		ids, err := t.Apply(maps.Change{Insert: []maps.Insert{{Rule: r}}})
		install := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		grown := kernelMemory(b) - before
		if got := t.Sizes().Flows; got != n {
			b.Fatalf("%d flows installed, want %d", got, n)
		}
		fullMap := mapMemlock(b, objs.Flows.FD()) + mapMemlock(b, objs.FlowsNarrow.FD())
		start = time.Now()
		if _, err := t.Apply(maps.Change{Delete: ids}); err != nil {
			b.Fatal(err)
		}
		remove := time.Since(start)
		b.ReportMetric(float64(fullMap)/n, "memlock-B/flow")
		b.ReportMetric(float64(fullMap-emptyMap)/n, "memlock-elements-B/flow")
		b.ReportMetric(float64(grown)/n, "slab+percpu-growth-B/flow")
		b.ReportMetric(float64(install.Milliseconds()), "install-ms")
		b.ReportMetric(float64(remove.Milliseconds()), "remove-ms")
		objs.Close()
	}
}
