package selftests

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/internal/classbench"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
)

// BenchmarkClassBenchSearch: the classifier's own cost on ClassBench sets
// mirrored from one nft chain, as the packet-classification literature
// measures it (one thread, every packet classified, no cache): the kernel's
// time per run of the program loaded with its flow cache off, over the
// device's pinned tables (BPF_PROG_TEST_RUN), and the subtables it looks
// in per packet, over 2,000 headers of a ClassBench trace, each run 20
// times (a test run costs milliseconds of setup whatever its repeats).
func BenchmarkClassBenchSearch(b *testing.B) {
	testutil.RequireRoot(b)
	for _, seed := range classbench.Seeds {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s_%dK", seed, n/1000), func(b *testing.B) { benchClassBenchSearch(b, seed, n) })
		}
	}
}

func benchClassBenchSearch(b *testing.B, seed string, n int) {
	const repeat = 20
	rules, trace := classbenchSet(b, seed, n, 2000)
	ns, peer := testutil.NewNetns(b), testutil.NewNetns(b)
	testutil.Veth(b, ns, "b0", peer, "a0")
	if _, err := ns.ExecStdin(classbenchNft(rules, func(int) string { return "drop" }), "nft", "-f", "-"); err != nil {
		b.Fatalf("nft -f: %v", err)
	}
	mustXdpflowB(b, ns, "enable", "dev", "b0")
	mustXdpflowB(b, ns, "daemon", "--once")
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	frames := make([][]byte, len(trace))
	for i, h := range trace {
		frames[i] = classbenchFrame(h, mac, i)
	}
	ns.Run(b, func() {
		prog, counters := searchProgram(b, "b0")
		before := subtableLookups(b, counters)
		var total time.Duration
		runs := 0
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, f := range frames {
				ret, d, err := prog.Benchmark(f, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				if ret != 1 { // XDP_DROP: every header matches a rule, and every rule drops
					b.Fatalf("a trace frame ended in %d, not XDP_DROP: not classified in XDP", ret)
				}
				total += d * repeat
				runs += repeat
			}
		}
		b.StopTimer()
		lookups := subtableLookups(b, counters) - before
		b.ReportMetric(float64(total.Nanoseconds())/float64(runs), "ns/pkt")
		b.ReportMetric(float64(lookups)/float64(runs), "lookups/pkt")
		b.ReportMetric(harnessNs(b, frames[:200], repeat), "harness-ns/pkt")
		b.ReportMetric(steadyNs(b, prog, frames[:100]), "steady-ns/pkt")
	})
}

// steadyNs is the kernel's time per run with each frame run 10,000 times
// in a row: the search with its caches and branch predictors trained on
// the frame and the harness's cost spread thin, a floor under ns/pkt.
func steadyNs(b *testing.B, prog *ebpf.Program, frames [][]byte) float64 {
	b.Helper()
	var total time.Duration
	for _, f := range frames {
		_, d, err := prog.Benchmark(f, 10000, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	return float64(total.Nanoseconds()) / float64(len(frames))
}

// harnessNs is the kernel's time per run of a program that only returns
// XDP_DROP, over the same frames and repeats: what BPF_PROG_TEST_RUN's
// own timing costs each run of ns/pkt, which a classifier in user space
// does not pay.
func harnessNs(b *testing.B, frames [][]byte, repeat int) float64 {
	b.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: bareDrop})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	var total time.Duration
	for _, f := range frames {
		_, d, err := prog.Benchmark(f, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	return float64(total.Nanoseconds()) / float64(len(frames))
}

// searchProgram loads the program with its flow cache off over dev's
// pinned maps (the tables the daemon wrote), and returns it with the
// counters map it counts in.
func searchProgram(b *testing.B, dev string) (*ebpf.Program, *ebpf.Map) {
	b.Helper()
	paths, err := loader.NewPaths("")
	if err != nil {
		b.Fatal(err)
	}
	d, err := loader.Open(paths, dev)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Close)
	spec, err := bpf.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["xf_cache_disabled"].Set(uint32(1)); err != nil {
		b.Fatal(err)
	}
	pinned := map[string]*ebpf.Map{}
	for name, m := range d.MapsByName() {
		if ms, ok := spec.Maps[name]; ok {
			ms.MaxEntries = m.MaxEntries() // as the device was enabled
			pinned[name] = m
		}
	}
	var objs bpf.XdpflowPrograms
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: pinned}); err != nil {
		b.Fatalf("load the program without its cache: %v", err)
	}
	b.Cleanup(func() { objs.Close() })
	return objs.Xdpflow, d.Maps.Counters
}

// subtableLookups is the program's count of subtable lookups.
func subtableLookups(b *testing.B, counters *ebpf.Map) uint64 {
	b.Helper()
	c, err := maps.ReadCounters(counters)
	if err != nil {
		b.Fatal(err)
	}
	return c[maps.CounterSubtableLookups]
}
