package selftests

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// nftTopo: A(a0) -> (b0)B, where b0 and b1 are ports of bridge br0, so
// every frame nft lets through b0's ingress is forwarded out of b1 to
// C(c0), whatever it carries (VLAN tags, ARP, IPv6). b2 -> D(d0) is the
// target of `fwd` rules. xdpflow runs on b0.
type nftTopo struct {
	a, b, c, d *testutil.Netns
	a0MAC      net.HardwareAddr
	// settle is how long fates waits for frames to come out (longer in
	// the emulated VM of make vmtest).
	settle time.Duration
	// pace is frameFates' pause after each 32 frames sent.
	pace time.Duration
}

func newNftTopo(t *testing.T) *nftTopo {
	t.Helper()
	tp := &nftTopo{a: testutil.NewNetns(t), b: testutil.NewNetns(t), c: testutil.NewNetns(t), d: testutil.NewNetns(t),
		settle: 700 * time.Millisecond, pace: time.Millisecond}
	for _, ns := range []*testutil.Netns{tp.a, tp.b, tp.c, tp.d} {
		// No IPv6 chatter (DAD, router solicitations) from the test hosts.
		ns.MustExec(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	testutil.Veth(t, tp.a, "a0", tp.b, "b0")
	testutil.Veth(t, tp.b, "b1", tp.c, "c0")
	testutil.Veth(t, tp.b, "b2", tp.d, "d0")
	tp.b.MustExec(t, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
	for _, p := range []string{"b0", "b1"} {
		tp.b.MustExec(t, "ip", "link", "set", p, "master", "br0")
		// Without learning every frame floods: a source MAC seen on b0
		// never turns into a destination the bridge filters.
		tp.b.MustExec(t, "ip", "link", "set", "dev", p, "type", "bridge_slave", "learning", "off")
	}
	tp.b.MustExec(t, "ip", "link", "set", "br0", "up")
	// XDP redirects into b2 need NAPI on its peer, and b0 forwards in XDP
	// only what a0 sends with finished checksums.
	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	tp.a.MustExec(t, "ethtool", "-K", "a0", "tx", "off")
	tp.a0MAC = mac(t, tp.a, "a0")
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	return tp
}

// fates injects frames at a0 and reports where each went: "c0" (through
// nft to the stack), "d0" (fwd), or "drop".
func (tp *nftTopo) fates(t *testing.T, frames [][]byte, markers []string) []string {
	t.Helper()
	return tp.fatesAs(t, frames, markers, func(testutil.Frame) string { return "" })
}

// fatesAs is fates with each delivered frame described further (its VLAN
// tags, say): "c0" + describe(frame).
func (tp *nftTopo) fatesAs(t *testing.T, frames [][]byte, markers []string, describe func(testutil.Frame) string) []string {
	t.Helper()
	capC := testutil.NewCapture(t, tp.c, "c0")
	capD := testutil.NewCapture(t, tp.d, "d0")
	var (
		wg     sync.WaitGroup
		gc, gd []testutil.Frame
	)
	incoming := func(f testutil.Frame) bool { return !f.Outgoing }
	wg.Add(2)
	go func() { defer wg.Done(); gc = capC.Collect(tp.settle, incoming) }()
	go func() { defer wg.Done(); gd = capD.Collect(tp.settle, incoming) }()
	time.Sleep(50 * time.Millisecond)
	testutil.Inject(t, tp.a, "a0", frames...)
	wg.Wait()
	out := make([]string, len(frames))
	for i, m := range markers {
		out[i] = "drop"
		for _, f := range gc {
			if testutil.HasPayload(f, []byte(m)) {
				out[i] = "c0" + describe(f)
			}
		}
		for _, f := range gd {
			if testutil.HasPayload(f, []byte(m)) {
				if out[i] != "drop" {
					out[i] += "+d0" + describe(f)
				} else {
					out[i] = "d0" + describe(f)
				}
			}
		}
	}
	return out
}

// nftCounters reads every rule's counter of table netdev xf: "chain/handle" -> packets.
func nftCounters(t testing.TB, ns *testutil.Netns) map[string]uint64 {
	t.Helper()
	out := ns.MustExec(t, "nft", "-j", "list", "table", "netdev", "xf")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	res := map[string]uint64{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["rule"]
		if !ok {
			continue
		}
		var r struct {
			Chain  string            `json:"chain"`
			Handle int               `json:"handle"`
			Expr   []json.RawMessage `json:"expr"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Expr {
			var c struct {
				Counter *struct {
					Packets uint64 `json:"packets"`
				} `json:"counter"`
			}
			if json.Unmarshal(e, &c) == nil && c.Counter != nil {
				res[fmt.Sprintf("%s/%d", r.Chain, r.Handle)] = c.Counter.Packets
			}
		}
	}
	return res
}

type jsonFlow struct {
	Source    string   `json:"source"`
	Name      string   `json:"name"`
	Actions   []string `json:"actions"`
	Offloaded bool     `json:"offloaded"`
	Reason    string   `json:"reason"`
	Stats     *struct {
		Packets uint64 `json:"packets"`
	} `json:"stats"`
}

func flows(t *testing.T, ns *testutil.Netns, dev string) []jsonFlow {
	t.Helper()
	out := mustXdpflow(t, ns, "-s", "-j", "flow", "show", "dev", dev)
	var fs []jsonFlow
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("flow show: %v: %s", err, out)
	}
	return fs
}

// Pools the random rules and frames draw from, small so they meet often.
var (
	nftSrcIPs  = []string{"198.18.1.1", "198.18.1.5", "198.18.1.6", "198.18.1.77", "198.18.3.9"}
	nftDstIPs  = []string{"198.18.1.2", "198.18.1.10", "198.18.1.11"}
	nftSrc6    = []string{"2001:db8:1::1", "2001:db8:2::5", "fd00::9"}
	nftPorts   = []int{22, 53, 80, 85, 123, 443, 1000, 5000}
	nftTTLs    = []int{1, 5, 64}
	nftVLANs   = []int{10, 20}
	nftSrcMACs = []string{"02:00:00:00:00:01", "02:00:00:00:00:02"}
)

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.Intn(len(s))] }

// randomNftRule is one rule line for chain "in" (or "sub").
func randomNftRule(rng *rand.Rand, fwd bool) string {
	port := func() int { return pick(rng, nftPorts) }
	verdict := func() string {
		switch r := rng.Intn(10); {
		case r < 6:
			return "drop"
		case r < 9 || !fwd:
			return "accept"
		default:
			return "fwd to b2"
		}
	}
	switch rng.Intn(20) {
	case 0:
		return fmt.Sprintf("ip saddr %s counter %s", pick(rng, nftSrcIPs), verdict())
	case 1:
		return fmt.Sprintf("ip saddr { %s, %s } counter %s", pick(rng, nftSrcIPs), pick(rng, nftSrcIPs), verdict())
	case 2:
		return fmt.Sprintf("tcp dport %d counter %s", port(), verdict())
	case 3:
		return fmt.Sprintf("udp dport { %d, %d } counter %s", port(), port(), verdict())
	case 4:
		lo := port()
		return fmt.Sprintf("tcp dport %d-%d counter %s", lo, lo+rng.Intn(600), verdict())
	case 5:
		return fmt.Sprintf("ip saddr %s tcp dport %d counter %s", pick(rng, nftSrcIPs), port(), verdict())
	case 6:
		return fmt.Sprintf("ip6 saddr %s counter %s", pick(rng, []string{"2001:db8:1::/48", "2001:db8::/32", "fd00::9"}), verdict())
	case 7:
		return fmt.Sprintf("vlan id %d counter %s", pick(rng, nftVLANs), verdict())
	case 8:
		return fmt.Sprintf("ether saddr %s counter %s", pick(rng, nftSrcMACs), verdict())
	case 9:
		return fmt.Sprintf("ip ttl %d counter %s", pick(rng, nftTTLs), verdict())
	case 10:
		return "meta l4proto icmp counter " + verdict()
	case 11:
		return "icmp type echo-request counter " + verdict()
	case 12:
		return "tcp flags syn / syn,ack counter " + verdict()
	case 13:
		return fmt.Sprintf("ip saddr != %s udp dport %d counter %s", pick(rng, nftSrcIPs), port(), verdict())
	case 14:
		// Never offloaded: punted on its keyable part.
		return fmt.Sprintf("meta mark 0 ip saddr %s counter drop", pick(rng, nftSrcIPs))
	case 15:
		return fmt.Sprintf("ip daddr vmap { %s : drop, %s : accept }", nftDstIPs[1], nftDstIPs[2])
	case 16:
		return fmt.Sprintf("ip saddr . udp dport { %s . %d, %s . %d } counter %s",
			pick(rng, nftSrcIPs), port(), pick(rng, nftSrcIPs), port(), verdict())
	case 17:
		return fmt.Sprintf("ether type arp arp operation request counter %s", verdict())
	case 18:
		return fmt.Sprintf("meta protocol ip6 udp dport %d counter %s", port(), verdict())
	}
	return fmt.Sprintf("ip daddr %s counter %s", pick(rng, nftDstIPs), verdict())
}

// randomNftRuleset writes table netdev xf: chain "in" on b0, sometimes a
// jumped-to chain, a drop policy, a second base chain.
func randomNftRuleset(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString("table netdev xf {\n")
	policy := "accept"
	if rng.Intn(4) == 0 {
		policy = "drop"
	}
	fmt.Fprintf(&b, "  chain in {\n    type filter hook ingress device b0 priority 0; policy %s;\n", policy)
	n := 3 + rng.Intn(12)
	for i := 0; i < n; i++ {
		if rng.Intn(8) == 0 {
			fmt.Fprintf(&b, "    ether saddr %s jump sub\n", pick(rng, nftSrcMACs))
			continue
		}
		fmt.Fprintf(&b, "    %s\n", randomNftRule(rng, true))
	}
	b.WriteString("  }\n  chain sub {\n")
	for i := 0; i < 1+rng.Intn(3); i++ {
		fmt.Fprintf(&b, "    %s\n", randomNftRule(rng, false))
	}
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "    ip ttl %d return\n", pick(rng, nftTTLs))
	}
	b.WriteString("  }\n")
	if rng.Intn(4) == 0 {
		b.WriteString("  chain late {\n    type filter hook ingress device b0 priority 10; policy accept;\n")
		for i := 0; i < 1+rng.Intn(3); i++ {
			fmt.Fprintf(&b, "    %s\n", randomNftRule(rng, false))
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// randomFrame builds a frame from the pools, with a unique marker.
func randomFrame(rng *rand.Rand, a0 net.HardwareAddr, marker string) []byte {
	src := a0
	if rng.Intn(3) == 0 {
		src, _ = net.ParseMAC(pick(rng, nftSrcMACs))
	}
	dst := net.HardwareAddr{0x02, 0xee, 0, 0, 0, byte(1 + rng.Intn(200))}
	var vlans []testutil.VLAN
	switch rng.Intn(8) {
	case 0:
		vlans = []testutil.VLAN{{TPID: 0x8100, TCI: uint16(pick(rng, nftVLANs))}}
	case 1:
		vlans = []testutil.VLAN{{TPID: 0x88a8, TCI: uint16(pick(rng, nftVLANs))}, {TPID: 0x8100, TCI: 10}}
	}
	payload := []byte(marker)
	l4 := func(proto uint8) []byte {
		switch proto {
		case 6:
			flags := []uint16{0x02, 0x10, 0x12, 0x11}
			return append(testutil.TCP(uint16(30000+rng.Intn(1000)), uint16(pick(rng, nftPorts)), pick(rng, flags)), payload...)
		case 17:
			return testutil.UDP(uint16(pick(rng, nftPorts)), uint16(pick(rng, nftPorts)), payload)
		case 58:
			return append(testutil.ICMP(128, 0), payload...)
		}
		return append(testutil.ICMP(uint8(pick(rng, []int{0, 8})), 0), payload...)
	}
	switch rng.Intn(10) {
	case 0, 1, 2, 3, 4, 5:
		proto := pick(rng, []uint8{6, 17, 1})
		o := testutil.IPv4Opts{TTL: uint8(pick(rng, nftTTLs))}
		if rng.Intn(8) == 0 {
			o.FragOff = pick(rng, []uint16{0x2000, 0x0004}) // first fragment, later fragment
		}
		ip := testutil.IPv4(net.ParseIP(pick(rng, nftSrcIPs)), net.ParseIP(pick(rng, nftDstIPs)), proto, o, l4(proto))
		return testutil.Eth(dst, src, vlans, 0x0800, ip)
	case 6, 7:
		proto := pick(rng, []uint8{6, 17, 58})
		ip := testutil.IPv6(net.ParseIP(pick(rng, nftSrc6)), net.ParseIP("2001:db8:9::2"), proto, 0, uint8(pick(rng, nftTTLs)), nil, l4(proto))
		return testutil.Eth(dst, src, vlans, 0x86dd, ip)
	case 8:
		arp := testutil.ARP(uint16(1+rng.Intn(2)), src, net.ParseIP(pick(rng, nftSrcIPs)), net.HardwareAddr{0, 0, 0, 0, 0, 0}, net.ParseIP("198.18.1.2"))
		return testutil.Eth(dst, src, vlans, 0x0806, append(arp, payload...))
	}
	return testutil.Eth(dst, src, vlans, 0x88b5, payload) // an ethertype nothing keys
}

// TestNftDifferential: random nft rule sets and frames; every frame has
// the same fate with xdpflow as with nft alone, and each packet is counted
// once, by XDP or by nft.
func TestNftDifferential(t *testing.T) {
	tp := newNftTopo(t)
	seeds := 8
	if testing.Short() {
		seeds = 3
	}
	offloadedHits := 0
	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewSource(int64(seed)))
		ruleset := randomNftRuleset(rng)
		tp.b.MustExec(t, "nft", "flush", "ruleset")
		mustXdpflow(t, tp.b, "daemon", "--once") // XDP holds no nft rule now
		if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
			t.Fatalf("seed %d: nft -f: %v\n%s", seed, err, ruleset)
		}
		var frames [][]byte
		var markers []string
		for i := 0; i < 120; i++ {
			m := fmt.Sprintf("XFNFT-%02d-%04d", seed, i)
			markers = append(markers, m)
			frames = append(frames, randomFrame(rng, tp.a0MAC, m))
		}
		before := nftCounters(t, tp.b)
		want := tp.fates(t, frames, markers)
		mid := nftCounters(t, tp.b)

		mustXdpflow(t, tp.b, "daemon", "--once")
		got := tp.fates(t, frames, markers)
		after := nftCounters(t, tp.b)
		fl := flows(t, tp.b, "b0")

		delivered := 0
		for i := range frames {
			if want[i] != got[i] {
				t.Errorf("seed %d frame %d (%x): nft alone %s, with xdpflow %s", seed, i, frames[i], want[i], got[i])
			}
			if want[i] != "drop" {
				delivered++
			}
		}
		if delivered == 0 || delivered == len(frames) {
			t.Logf("seed %d: %d of %d frames delivered (no contrast)", seed, delivered, len(frames))
		}
		offloadedHits += checkNftCounts(t, seed, fl, before, mid, after)
		if t.Failed() {
			t.Logf("seed %d ruleset:\n%s\nflows: %+v", seed, ruleset, fl)
			return
		}
	}
	if offloadedHits == 0 {
		t.Fatal("no offloaded drop/fwd rule handled a packet in XDP: the test proved nothing")
	}
}

// checkNftCounts: a drop or fwd rule's packets are counted once, by XDP
// or by nft; every other rule's packets still reach nft. before and mid
// are nft's counters around the frames sent with nft alone, after with
// xdpflow. It returns how many offloaded drop or fwd rules counted packets
// in XDP.
func checkNftCounts(t *testing.T, seed int, fl []jsonFlow, before, mid, after map[string]uint64) (offloadedHits int) {
	t.Helper()
	for _, f := range fl {
		if f.Source != "nft" || !strings.HasPrefix(f.Name, "netdev/xf/") || strings.HasSuffix(f.Name, "/policy") {
			continue
		}
		key := strings.TrimPrefix(f.Name, "netdev/xf/")
		nft1, nft2 := mid[key]-before[key], after[key]-mid[key]
		if _, counted := mid[key]; !counted {
			continue
		}
		xdp := uint64(0)
		if f.Stats != nil {
			xdp = f.Stats.Packets
		}
		single := len(f.Actions) == 1 && (f.Actions[0] == "drop" || strings.HasPrefix(f.Actions[0], "fwd"))
		switch {
		case f.Offloaded && single:
			if xdp+nft2 != nft1 {
				t.Errorf("seed %d rule %s (%v): nft alone counted %d; with xdpflow XDP %d + nft %d", seed, f.Name, f.Actions, nft1, xdp, nft2)
			}
			if xdp > 0 {
				offloadedHits++
			}
		case !f.Offloaded:
			if nft2 != nft1 {
				t.Errorf("seed %d rule %s not offloaded (%s): nft counted %d alone, %d with xdpflow", seed, f.Name, f.Reason, nft1, nft2)
			}
		}
	}
	return offloadedHits
}
