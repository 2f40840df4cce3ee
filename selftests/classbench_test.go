package selftests

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/internal/classbench"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/internal/trafficgen"
)

// ClassBench sets in nft and flower. The rules' addresses are ClassBench's
// (all over IPv4); their frames only ever cross the veths of the test's
// own namespaces.

// classbenchSet is a generated set and a trace over it.
func classbenchSet(t testing.TB, seed string, n, headers int) ([]classbench.Rule, []classbench.Header) {
	t.Helper()
	s, err := classbench.LoadSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	rules := classbench.Generate(s, n, 1, classbench.DefaultOptions)
	return rules, classbench.Trace(rules, headers, 1, classbench.DefaultParetoA, classbench.DefaultParetoB)
}

// classbenchVerdict gives rule i a verdict: most drop, some accept, so
// that an accept ahead of a drop decides the packets both match.
func classbenchVerdict(i int) string {
	if i*7919%3 == 0 {
		return "accept"
	}
	return "drop"
}

// classbenchNft is the set as one netdev ingress chain on b0.
func classbenchNft(rules []classbench.Rule, verdict func(int) string) string {
	return classbench.NftChain(rules, "b0", verdict)
}

// classbenchFrame is h as an Ethernet frame from src to a unicast MAC
// holding index in bytes 2-5 (frameFates tells frames apart by it): TCP or
// UDP with h's ports, ICMP, or 8 bytes of another protocol.
func classbenchFrame(h classbench.Header, src net.HardwareAddr, index int) []byte {
	var l4 []byte
	switch h.Proto {
	case 6:
		l4 = testutil.TCP(h.SrcPort, h.DstPort, 0x10)
	case 17:
		l4 = testutil.UDP(h.SrcPort, h.DstPort, make([]byte, 8))
	case 1:
		l4 = testutil.ICMP(8, 0)
	default:
		l4 = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, h.SrcPort), h.DstPort)
		l4 = append(l4, 0, 0, 0, 0)
	}
	ip := func(v uint32) net.IP { return binary.BigEndian.AppendUint32(nil, v) }
	dst := net.HardwareAddr{2, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(dst[2:], uint32(index))
	return testutil.Eth(dst, src, nil, 0x0800, testutil.IPv4(ip(h.Src), ip(h.Dst), h.Proto, testutil.IPv4Opts{}, l4))
}

// xdpflowCounters is b0's counters from `xdpflow -j status`.
func xdpflowCounters(t testing.TB, ns *testutil.Netns) map[string]uint64 {
	t.Helper()
	out, err := xdpflow(ns, "-j", "status")
	if err != nil {
		t.Fatalf("xdpflow status: %v: %s", err, out)
	}
	var st []struct {
		Counters map[string]uint64 `json:"counters"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		t.Fatalf("xdpflow status: %v: %s", err, out)
	}
	return st[0].Counters
}

// TestClassBenchNft: ClassBench's acl1, fw1 and ipc1 sets of 1,000 and
// 10,000 rules as one nft chain (most rules drop, some accept), and 3,000 headers of a
// ClassBench trace over each: every frame meets the fate a brute-force
// first match over the set gives, with nft alone and again with the set
// mirrored into XDP.
func TestClassBenchNft(t *testing.T) {
	for _, seed := range classbench.Seeds {
		for _, n := range []int{1000, 10000} {
			t.Run(fmt.Sprintf("%s/%dK", seed, n/1000), func(t *testing.T) { testClassBenchNft(t, seed, n) })
		}
	}
}

func testClassBenchNft(t *testing.T, seed string, n int) {
	rules, trace := classbenchSet(t, seed, n, 3000)
	tp := newNftTopo(t)
	if _, err := tp.b.ExecStdin(classbenchNft(rules, classbenchVerdict), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f: %v", err)
	}
	frames := make([][]byte, len(trace))
	want := make([]string, len(trace))
	for i, h := range trace {
		frames[i] = classbenchFrame(h, tp.a0MAC, i)
		want[i] = "c0" // no rule: the chain's policy
		if m := classbench.FirstMatch(rules, h); m >= 0 && classbenchVerdict(m) == "drop" {
			want[i] = "drop"
		}
	}
	sameFates(t, "nft alone", tp.frameFates(t, frames), want, trace)

	mustXdpflow(t, tp.b, "daemon", "--once")
	offloaded, reasons := 0, map[string]int{}
	for _, f := range flows(t, tp.b, "b0") {
		if f.Source != "nft" {
			continue
		}
		if f.Offloaded {
			offloaded++
		} else {
			reasons[f.Reason]++
		}
	}
	c0 := xdpflowCounters(t, tp.b)
	sameFates(t, "mirrored into XDP", tp.frameFates(t, frames), want, trace)
	c1 := xdpflowCounters(t, tp.b)
	drops := 0
	for _, w := range want {
		if w == "drop" {
			drops++
		}
	}
	xdpDrops := int(c1["drop"] - c0["drop"])
	t.Logf("%s: %d rules, %d offloaded; not: %v; %d frames to drop, %d dropped in XDP; %d hits, %d misses, %d unparsed",
		seed, len(rules), offloaded, reasons, drops, xdpDrops, c1["hits"]-c0["hits"], c1["misses"]-c0["misses"],
		c1["unparsed"]-c0["unparsed"])
	// Every set fits the table whole, with its default sizes; where
	// every rule is in XDP, every drop is XDP's.
	if offloaded != len(rules) {
		t.Errorf("%s: %d of %d rules offloaded", seed, offloaded, len(rules))
	}
	if offloaded == len(rules) && xdpDrops != drops {
		t.Errorf("%s: every rule is in XDP, but XDP dropped %d of the %d frames to drop", seed, xdpDrops, drops)
	}
}

// sameFates fails the test on the first frames whose fate is not want's.
func sameFates(t *testing.T, what string, got, want []string, trace []classbench.Header) {
	t.Helper()
	bad := 0
	for i := range want {
		if got[i] != want[i] {
			if bad++; bad <= 5 {
				t.Errorf("%s: frame %d %+v: %s, the first match says %s", what, i, trace[i], got[i], want[i])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d frames met another fate", what, bad, len(want))
	}
}

// traceFrame is the frame a trace generator writes its headers over: 60
// bytes, IPv4 of total length 46, 26 bytes after the IP header that read
// as UDP (length 26) or as a TCP header of data offset 5.
func traceFrame() []byte {
	l4 := testutil.UDP(0, 0, make([]byte, 18))
	l4[12] = 5 << 4 // TCP's data offset; UDP payload
	l4[13] = 0x10   // ACK
	return testutil.Eth(net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil, 0x0800,
		testutil.IPv4(net.ParseIP("198.18.0.1"), net.ParseIP("198.19.0.0"), 17, testutil.IPv4Opts{}, l4))
}

// classbenchCase is a ClassBench set of about n rules, every rule a drop,
// as one nft chain on b0, with 65,536 headers of a ClassBench trace over
// it sent at random: nft alone, or mirrored into XDP. Every header
// matches a rule, so every frame is dropped: by XDP, or by nft (its rules'
// counters) for what the table could not take.
func classbenchCase(seed string, n int, mirror bool) rateCase {
	name := fmt.Sprintf("nft, ClassBench %s %dK", seed, n/1000)
	if mirror {
		name = fmt.Sprintf("xdpflow, ClassBench %s %dK mirrored", seed, n/1000)
	}
	s, err := classbench.LoadSeed(seed)
	if err != nil {
		panic(err)
	}
	rules := classbench.Generate(s, n, 1, classbench.DefaultOptions)
	c := rateCase{name: name}
	for _, h := range classbench.Trace(rules, 1<<16, 1, classbench.DefaultParetoA, classbench.DefaultParetoB) {
		c.trace = append(c.trace, trafficgen.IPv4TraceHeader(h.Src, h.Dst, h.Proto, h.SrcPort, h.DstPort, 46))
	}
	c.setup = func(b *testing.B, r *rateRig) (func() uint64, func()) {
		if _, err := r.b.ExecStdin(classbenchNft(rules, func(int) string { return "drop" }), "nft", "-f", "-"); err != nil {
			b.Fatal(err)
		}
		nftDrops := func() uint64 {
			var sum uint64
			for _, v := range nftCounters(b, r.b) {
				sum += v
			}
			return sum
		}
		flush := func() { r.b.MustExec(b, "nft", "flush", "ruleset") }
		if !mirror {
			return nftDrops, flush
		}
		mustXdpflowB(b, r.b, "enable", "dev", "b0")
		mustXdpflowB(b, r.b, "daemon", "--once")
		return func() uint64 { return r.vethXDPDrops(b, "b0") + nftDrops() }, func() {
			b.Logf("%s: %s", name, r.xdpflowNotes(b))
			mustXdpflowB(b, r.b, "disable", "dev", "b0")
			flush()
		}
	}
	return c
}
