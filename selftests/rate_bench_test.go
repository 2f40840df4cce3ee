package selftests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/classbench"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/internal/trafficgen"
)

// rateRig is two veth pairs from A to B: a0 -> b0 carries the case under
// test, a1 -> b1 the bare XDP_DROP baseline, which stays attached so that
// every measurement of a case can be paired with one of the baseline taken
// just before it. (This VM's speed drifts by half over minutes: a ratio to
// a baseline measured at another time would measure the drift.)
type rateRig struct {
	a, b      *testutil.Netns
	bareDrops func() uint64
}

func newRateRig(b testing.TB) *rateRig {
	r := &rateRig{a: testutil.NewNetns(b), b: testutil.NewNetns(b)}
	for _, ns := range []*testutil.Netns{r.a, r.b} {
		ns.MustExec(b, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	for _, dev := range []string{"0", "1"} {
		testutil.Veth(b, r.a, "a"+dev, r.b, "b"+dev)
		// Frames redirected into a veth need NAPI on the receiving end.
		r.b.MustExec(b, "ethtool", "-K", "b"+dev, "gro", "on")
	}
	detach := r.attachXDP(b, "b1", bareDrop)
	b.Cleanup(detach)
	r.bareDrops = func() uint64 { return r.vethXDPDrops(b, "b1") }
	return r
}

// bareDrop is the baseline program: return XDP_DROP.
var bareDrop = asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}

// rateFrame: a 64-byte UDP/IPv4 frame 198.18.0.1 -> 198.19.0.0, port 9.
// Every address in the benchmarks is in 198.18.0.0/15.
func rateFrame() []byte {
	return testutil.Eth(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil, 0x0800,
		testutil.IPv4(net.ParseIP("198.18.0.1"), net.ParseIP("198.19.0.0"), 17, testutil.IPv4Opts{},
			testutil.UDP(1024, 9, make([]byte, 18))))
}

// Where the generator spreads frames: the low half of the source or the
// destination address (Ethernet 14 + IPv4 offsets 14 and 18).
const (
	spreadSrcLow = 14 + 14
	spreadDstLow = 14 + 18
)

// sample is one paired measurement: the case's rate and the baseline's
// just before it, in frames per second.
type sample struct{ rate, bare float64 }

// rate measures a case for rounds rounds of about d each, every round
// paired with a round of the bare baseline on a1 -> b1. Frames are sent
// from one CPU (b0's and b1's NAPI run on that CPU too); count is the
// case's receiver-side counter.
func (r *rateRig) rate(b testing.TB, d time.Duration, rounds int, c rateCase, count func() uint64) []sample {
	var out []sample
	r.a.Run(b, func() {
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			panic(err)
		}
		gen := func(dev string, s trafficgen.Spread, trace []trafficgen.TraceHeader) (*trafficgen.Generator, []byte) {
			ifi, err := net.InterfaceByName(dev)
			if err != nil {
				panic(err)
			}
			if trace != nil {
				g, err := trafficgen.NewTrace(ifi.Index, trace)
				if err != nil {
					panic(err)
				}
				return g, traceFrame()
			}
			g, err := trafficgen.New(ifi.Index, s)
			if err != nil {
				panic(err)
			}
			frame, err := g.Prepare(rateFrame())
			if err != nil {
				panic(err)
			}
			return g, frame
		}
		gCase, fCase := gen("a0", c.spread, c.trace)
		defer gCase.Close()
		gBare, fBare := gen("a1", trafficgen.Spread{}, nil)
		defer gBare.Close()
		// One long call per measurement: every call sets up and tears
		// down the kernel's frame pool (tens of ms), so short calls
		// measure that. Grow the count until a call takes a quarter of
		// d, then size the calls to d.
		size := func(g *trafficgen.Generator, frame []byte) uint32 {
			n := uint32(1 << 14)
			for {
				start := time.Now()
				if err := g.Send(frame, n); err != nil {
					panic(err)
				}
				el := time.Since(start)
				if el >= d/4 || n >= 1<<30 {
					return uint32(min(float64(n)*float64(d)/float64(el), 1<<31))
				}
				n *= 4
			}
		}
		nCase, nBare := size(gCase, fCase), size(gBare, fBare)
		one := func(g *trafficgen.Generator, frame []byte, n uint32, count func() uint64) float64 {
			c0 := count()
			start := time.Now()
			if err := g.Send(frame, n); err != nil {
				panic(err)
			}
			el := time.Since(start)
			return float64(count()-c0) / el.Seconds()
		}
		for i := 0; i < rounds; i++ {
			bare := one(gBare, fBare, nBare, r.bareDrops)
			out = append(out, sample{rate: one(gCase, fCase, nCase, count), bare: bare})
		}
		runtime.GC()
	})
	return out
}

// medians returns the median rate, the median baseline and the median of
// the per-round ratios.
func medians(ss []sample) (rate, bare, ratio float64) {
	med := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return med(func(s sample) float64 { return s.rate }), med(func(s sample) float64 { return s.bare }),
		med(func(s sample) float64 { return s.rate / s.bare })
}

// vethXDPDrops is a B device's own count of frames its XDP program dropped
// (veth's per-queue rx_queue_N_xdp_drops): the same count, at no cost to
// the program, for bare XDP_DROP and for xdpflow.
func (r *rateRig) vethXDPDrops(b testing.TB, dev string) uint64 {
	out := r.b.MustExec(b, "ethtool", "-S", dev)
	var sum uint64
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && strings.HasPrefix(k, "rx_queue_") && strings.HasSuffix(k, "_xdp_drops") {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatalf("ethtool -S %s: %q: %v", dev, line, err)
			}
			sum += n
		}
	}
	return sum
}

// ingressDrops is what TC dropped at b0's ingress (the clsact qdisc's
// drop count).
func (r *rateRig) ingressDrops(b testing.TB) uint64 {
	out := r.b.MustExec(b, "tc", "-s", "-j", "qdisc", "show", "dev", "b0")
	var qs []struct {
		Kind  string `json:"kind"`
		Drops uint64 `json:"drops"`
	}
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		b.Fatalf("tc -j qdisc show: %v", err)
	}
	for _, q := range qs {
		if q.Kind == "clsact" {
			return q.Drops
		}
	}
	b.Fatal("no clsact qdisc on b0")
	return 0
}

// attachXDP attaches a program to dev in B and returns the detach.
func (r *rateRig) attachXDP(b testing.TB, dev string, insns asm.Instructions) func() {
	var l link.Link
	r.b.Run(b, func() {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
		if err != nil {
			panic(err)
		}
		defer prog.Close()
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			panic(err)
		}
		if l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index}); err != nil {
			panic(err)
		}
	})
	return func() { l.Close() }
}

// attachClsBPFDrop adds clsact and a direct-action cls_bpf filter that
// returns TC_ACT_SHOT, and returns the removal.
func (r *rateRig) attachClsBPFDrop(b testing.TB) func() {
	r.b.MustExec(b, "tc", "qdisc", "add", "dev", "b0", "clsact")
	r.b.Run(b, func() {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // TC_ACT_SHOT
			asm.Return(),
		}})
		if err != nil {
			panic(err)
		}
		defer prog.Close()
		lk, err := netlink.LinkByName("b0")
		if err != nil {
			panic(err)
		}
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: lk.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
				Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1},
			Fd: prog.FD(), Name: "xf_bench_drop", DirectAction: true,
		}
		if err := netlink.FilterAdd(f); err != nil {
			panic(fmt.Sprintf("add cls_bpf filter: %v", err))
		}
	})
	return func() { r.b.MustExec(b, "tc", "qdisc", "del", "dev", "b0", "clsact") }
}

// nftRuleset: n-1 rules that do not match the test frame, then the one
// that drops it (with a counter: the receiver's count in nft).
func nftRuleset(n int) string {
	var sb strings.Builder
	sb.WriteString("table netdev xf {\n  chain in {\n    type filter hook ingress device b0 priority 0; policy accept;\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&sb, "    ip saddr 10.%d.%d.%d drop\n", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	sb.WriteString("    ip saddr 198.18.0.1 counter drop\n  }\n}\n")
	return sb.String()
}

// maskRule is rule i of a set of distinct masks: each matches its own
// destination /24 (198.19.i.0/24), so a frame matches exactly one, and
// differs from the others in its mask by the source prefix length and
// which of dst_port, ip_ttl and ip_tos it also matches.
func maskRule(i int) string {
	s := fmt.Sprintf("prio %d protocol ip flower ip_proto udp dst_ip 198.19.%d.0/24 src_ip 198.18.0.0/%d", i+1, i, 16+i%16)
	if i>>4&1 == 1 {
		s += " dst_port 9"
	}
	if i>>5&1 == 1 {
		s += " ip_ttl 64"
	}
	if i>>6&1 == 1 {
		s += " ip_tos 0"
	}
	return s + " action drop"
}

// rateCase is one row of the table.
type rateCase struct {
	name   string
	spread trafficgen.Spread
	trace  []trafficgen.TraceHeader // headers to send instead, at random
	// setup installs the case on b0 and returns the receiver's counter
	// and the teardown.
	setup func(b *testing.B, r *rateRig) (count func() uint64, teardown func())
}

// xdpflowNotes summarizes b0's xdpflow counters after a case: how many
// packets the flow cache answered, and the subtable lookups the
// rest cost.
func (r *rateRig) xdpflowNotes(b testing.TB) string {
	c := xdpflowCounters(b, r.b)
	searched := c["rx"] - c["cache_hits"] - c["unparsed"]
	note := fmt.Sprintf("cache answered %.1f%%", 100*float64(c["cache_hits"])/float64(max(c["rx"], 1)))
	if searched > 0 {
		note += fmt.Sprintf("; %.1f lookups per searched packet", float64(c["subtable_lookups"])/float64(searched))
	}
	return note
}

func xdpflowCase(name string, s trafficgen.Spread, rules []string, enableOpts ...string) rateCase {
	return rateCase{name: name, spread: s, setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
		mustXdpflowB(b, r.b, append([]string{"enable", "dev", "b0"}, enableOpts...)...)
		for _, rl := range rules {
			mustXdpflowB(b, r.b, append([]string{"filter", "add", "dev", "b0", "ingress"}, strings.Fields(rl)...)...)
		}
		return func() uint64 { return r.vethXDPDrops(b, "b0") }, func() {
			b.Logf("%s: %s", name, r.xdpflowNotes(b))
			mustXdpflowB(b, r.b, "disable", "dev", "b0")
		}
	}}
}

func nftCase(name string, n int, mirror bool) rateCase {
	return rateCase{name: name, setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
		if _, err := r.b.ExecStdin(nftRuleset(n), "nft", "-f", "-"); err != nil {
			b.Fatal(err)
		}
		flush := func() { r.b.MustExec(b, "nft", "flush", "ruleset") }
		if !mirror {
			return func() uint64 {
				for _, v := range nftCounters(b, r.b) {
					return v // the one rule with a counter
				}
				return 0
			}, flush
		}
		mustXdpflowB(b, r.b, "enable", "dev", "b0")
		mustXdpflowB(b, r.b, "daemon", "--once")
		return func() uint64 { return r.vethXDPDrops(b, "b0") }, func() {
			b.Logf("%s: %s", name, r.xdpflowNotes(b))
			mustXdpflowB(b, r.b, "disable", "dev", "b0")
			flush()
		}
	}}
}

// cacheMissedRules look at the whole source address, so that traffic from
// 65,536 sources is 65,536 flows, more than the default cache holds.
var cacheMissedRules = []string{
	"prio 1 protocol ip flower src_ip 198.18.255.255 action pass",
	"prio 2 protocol ip flower ip_proto udp dst_port 9 action drop"}

func rateCases() []rateCase {
	masks := func(n int) []string {
		var rs []string
		for i := 0; i < n; i++ {
			rs = append(rs, maskRule(i))
		}
		return rs
	}
	overMasks := func(n int) trafficgen.Spread {
		// the /24 picks the rule, the last byte is random too
		return trafficgen.Spread{Offset: spreadDstLow, Mask: uint16(n-1)<<8 | 0xFF}
	}
	randomSrc := trafficgen.Spread{Offset: spreadSrcLow, Mask: 0xFFFF}
	allDst := trafficgen.Spread{Offset: spreadDstLow, Mask: 0xFFFF}
	manyMasksManyFlows := append(masks(32),
		"prio 33 protocol ip flower dst_ip 198.19.255.255 action pass",
		"prio 34 protocol ip flower action drop")
	cases := []rateCase{
		{name: "bare XDP_DROP (on b0: the pairing's own check)", setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
			detach := r.attachXDP(b, "b0", bareDrop)
			return func() uint64 { return r.vethXDPDrops(b, "b0") }, detach
		}},
		{name: "XDP_DROP after reading the IPv4 header", setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
			detach := r.attachXDP(b, "b0", readingDrop)
			return func() uint64 { return r.vethXDPDrops(b, "b0") }, detach
		}},
		{name: "XDP_DROP after one hash map lookup (addresses, ports)", setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 8, MaxEntries: 1024})
			if err != nil {
				b.Fatal(err)
			}
			// The test frame's own key: a hit, as a classifier's would be.
			f := rateFrame()
			key := make([]byte, 16)
			copy(key, f[14+12:14+24])
			if err := m.Put(key, uint64(1)); err != nil {
				b.Fatal(err)
			}
			detach := r.attachXDP(b, "b0", lookupDrop(m))
			return func() uint64 { return r.vethXDPDrops(b, "b0") }, func() { detach(); m.Close() }
		}},
		{name: "cls_bpf drop (TC, direct action)", setup: func(b *testing.B, r *rateRig) (func() uint64, func()) {
			remove := r.attachClsBPFDrop(b)
			return func() uint64 { return r.ingressDrops(b) }, remove
		}},
		nftCase("nft, 1 rule", 1, false),
		nftCase("nft, 1,000 rules", 1000, false),
		xdpflowCase("xdpflow, 1 rule", trafficgen.Spread{},
			[]string{"prio 1 protocol ip flower ip_proto udp dst_port 9 action drop"}),
		xdpflowCase("xdpflow, 1 rule, 65,536 sources", randomSrc,
			[]string{"prio 1 protocol ip flower ip_proto udp dst_port 9 action drop"}),
		xdpflowCase("xdpflow, 32 masks, traffic over all", overMasks(32), masks(32)),
		xdpflowCase("xdpflow, 128 masks, traffic over all", overMasks(128), masks(128)),
		// A rule that looks at the whole source address makes every
		// source its own flow: 65,536 flows against the cache's 4,096
		// slots per CPU, so most packets are searched.
		xdpflowCase("xdpflow, 2 masks, 65,536 sources, cache missed", randomSrc, cacheMissedRules),
		// Many masks and every destination its own flow: 32 /24 rules
		// catch 1/8 of the traffic over 198.19.0.0/16, an exact /32 rule
		// makes the cache key hold the whole destination, and a last
		// rule drops the rest after the search went through all 34
		// subtables. The default cache holds 4,096 of the 65,536 flows;
		// `enable ... cache 131072` (8 MB a CPU) holds them all.
		xdpflowCase("xdpflow, 34 masks, 65,536 destinations, cache missed", allDst, manyMasksManyFlows),
		xdpflowCase("xdpflow, the same, cache of 131,072 entries", allDst, manyMasksManyFlows, "cache", "131072"),
		nftCase("xdpflow, the nft 1,000 rules mirrored", 1000, true),
	}
	for _, seed := range classbench.Seeds {
		for _, n := range []int{1000, 10000} {
			cases = append(cases, classbenchCase(seed, n, false), classbenchCase(seed, n, true))
		}
	}
	return cases
}

// BenchmarkRate: packets per second received and dropped on b0 for each
// case of rateCases, each also as a ratio to bare XDP_DROP on b1 measured
// in alternation with it (the median of the rounds' ratios). Run with
// `make bench` (-benchtime 1x: each case measures for a fixed time); it
// prints the table README carries. -bench picks cases
// (BenchmarkRate/xdpflow,_1_rule, say).
func BenchmarkRate(b *testing.B) {
	r := newRateRig(b)
	const (
		d      = 500 * time.Millisecond
		rounds = 5
	)
	var table strings.Builder
	table.WriteString("| case | Mpps | bare XDP_DROP alongside, Mpps | x bare |\n| --- | ---: | ---: | ---: |\n")
	for _, c := range rateCases() {
		b.Run(c.name, func(b *testing.B) {
			count, teardown := c.setup(b, r)
			ss := r.rate(b, d, rounds, c, count)
			teardown()
			rate, bare, ratio := medians(ss)
			if rate == 0 || bare == 0 {
				b.Fatalf("%s: nothing was received (%v)", c.name, ss)
			}
			b.ReportMetric(rate/1e6, "Mpps")
			b.ReportMetric(ratio, "x_bare_drop")
			b.Logf("%-48s %7.3f Mpps  bare %7.3f  %.2f x bare", c.name, rate/1e6, bare/1e6, ratio)
			fmt.Fprintf(&table, "| %s | %.3f | %.3f | %.2f |\n", c.name, rate/1e6, bare/1e6, ratio)
		})
	}
	fmt.Fprint(os.Stdout, "\n"+table.String())
}

func mustXdpflowB(b *testing.B, ns *testutil.Netns, args ...string) {
	b.Helper()
	if out, err := xdpflow(ns, args...); err != nil {
		b.Fatalf("xdpflow %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
