package selftests

import (
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/internal/trafficgen"
)

// rateRig is a veth pair A(a0) -> B(b0) and a live-frames generator on a0.
type rateRig struct {
	a, b  *testutil.Netns
	frame []byte
}

func newRateRig(b *testing.B) *rateRig {
	r := &rateRig{a: testutil.NewNetns(b), b: testutil.NewNetns(b)}
	for _, ns := range []*testutil.Netns{r.a, r.b} {
		ns.MustExec(b, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	testutil.Veth(b, r.a, "a0", r.b, "b0")
	// Frames redirected into a veth need NAPI on the receiving end.
	r.b.MustExec(b, "ethtool", "-K", "b0", "gro", "on")
	r.frame = testutil.Eth(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil, 0x0800,
		testutil.IPv4(net.ParseIP("198.18.1.1"), net.ParseIP("198.18.1.2"), 17, testutil.IPv4Opts{},
			testutil.UDP(1024, 9, make([]byte, 18))))
	return r
}

// rate sends frames for about d from one CPU (with b0's NAPI on that CPU too)
// and returns the frames the receiver counted per second, the median of
// three runs.
func (r *rateRig) rate(b *testing.B, d time.Duration, count func() uint64) float64 {
	var rates []float64
	r.a.Run(b, func() {
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			panic(err)
		}
		ifi, err := net.InterfaceByName("a0")
		if err != nil {
			panic(err)
		}
		g, err := trafficgen.New(ifi.Index)
		if err != nil {
			panic(err)
		}
		defer g.Close()
		// One long call per run: every call sets up and tears down the
		// kernel's frame pool (tens of ms), so short calls measure that.
		// Grow the count until a call takes a quarter of d, then size
		// the measured calls to d.
		n := uint32(1 << 14)
		for {
			start := time.Now()
			if err := g.Send(r.frame, n); err != nil {
				panic(err)
			}
			el := time.Since(start)
			if el >= d/4 || n >= 1<<30 {
				n = uint32(min(float64(n)*float64(d)/float64(el), 1<<31))
				break
			}
			n *= 4
		}
		for rep := 0; rep < 3; rep++ {
			c0 := count()
			start := time.Now()
			if err := g.Send(r.frame, n); err != nil {
				panic(err)
			}
			el := time.Since(start)
			rates = append(rates, float64(count()-c0)/el.Seconds())
		}
		runtime.GC()
	})
	sort.Float64s(rates)
	return rates[1]
}

// countingDrop attaches "count, then XDP_DROP" to b0: the bare baseline.
func (r *rateRig) countingDrop(b *testing.B) (count func() uint64, detach func()) {
	var (
		cnt *ebpf.Map
		l   link.Link
	)
	r.b.Run(b, func() {
		var err error
		cnt, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
		if err != nil {
			panic(err)
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, cnt.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
			asm.Return(),
		}})
		if err != nil {
			panic(err)
		}
		defer prog.Close()
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			panic(err)
		}
		if l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index}); err != nil {
			panic(err)
		}
	})
	return func() uint64 { return sumPerCPU(b, cnt, 0) }, func() { l.Close(); cnt.Close() }
}

func sumPerCPU(b *testing.B, m *ebpf.Map, key uint32) uint64 {
	var vs []uint64
	if err := m.Lookup(key, &vs); err != nil {
		b.Fatalf("read counter: %v", err)
	}
	s := uint64(0)
	for _, v := range vs {
		s += v
	}
	return s
}

// nftRuleset: n-1 rules that do not match the test frame, then the one
// that drops it (with a counter: the receiver's count in nft).
func nftRuleset(n int) string {
	var sb strings.Builder
	sb.WriteString("table netdev xf {\n  chain in {\n    type filter hook ingress device b0 priority 0; policy accept;\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&sb, "    ip saddr 10.%d.%d.%d drop\n", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	sb.WriteString("    ip saddr 198.18.1.1 counter drop\n  }\n}\n")
	return sb.String()
}

// BenchmarkNftRate: packets per second received and dropped on b0 with n
// nft rules (the matching one last), nft alone vs xdpflow mirroring them,
// against a bare counting XDP_DROP, all in one run. Run with
// `make bench` (-benchtime 1x: each case measures for a fixed time).
func BenchmarkNftRate(b *testing.B) {
	r := newRateRig(b)
	const d = time.Second

	count, detach := r.countingDrop(b)
	bare := r.rate(b, d, count)
	detach()
	b.ReportMetric(bare/1e6, "bare-xdp-drop-Mpps")
	b.Logf("bare XDP_DROP (counting): %.2f Mpps", bare/1e6)

	for _, n := range []int{1, 100, 1000, 10000} {
		r.b.MustExec(b, "nft", "flush", "ruleset")
		if _, err := r.b.ExecStdin(nftRuleset(n), "nft", "-f", "-"); err != nil {
			b.Fatal(err)
		}
		nftCount := func() uint64 {
			c := nftCounters(b, r.b)
			for _, v := range c {
				return v // the one rule with a counter
			}
			return 0
		}
		nftRate := r.rate(b, d, nftCount)

		mustXdpflowB(b, r.b, "enable", "dev", "b0")
		mustXdpflowB(b, r.b, "daemon", "--once")
		counters, err := ebpf.LoadPinnedMap(filepath.Join("/sys/fs/bpf/xdpflow", fmt.Sprint(r.b.Ino), "b0", "counters"), nil)
		if err != nil {
			b.Fatalf("open xdpflow counters: %v", err)
		}
		xdpCount := func() uint64 { return sumPerCPU(b, counters, uint32(bpf.XdpflowXfCounterXF_CNT_DROP)) }
		xdpRate := r.rate(b, d, xdpCount)
		counters.Close()
		mustXdpflowB(b, r.b, "disable", "dev", "b0")

		b.Logf("%5d rules: nft %.3f Mpps (%.1f%% of bare), xdpflow %.3f Mpps (%.1f%% of bare), xdpflow/nft %.1fx",
			n, nftRate/1e6, 100*nftRate/bare, xdpRate/1e6, 100*xdpRate/bare, xdpRate/nftRate)
		b.ReportMetric(nftRate/1e6, fmt.Sprintf("nft-%d-Mpps", n))
		b.ReportMetric(xdpRate/1e6, fmt.Sprintf("xdpflow-%d-Mpps", n))
	}
}

func mustXdpflowB(b *testing.B, ns *testutil.Netns, args ...string) {
	b.Helper()
	if out, err := xdpflow(ns, args...); err != nil {
		b.Fatalf("xdpflow %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
