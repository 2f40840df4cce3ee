package selftests

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/framegen"
	"github.com/xdpflow/xdpflow/internal/testutil"
)

// randomWideNftRule draws a rule from nft's grammar for a netdev ingress
// chain as a whole, not from what xdpflow offloads: raw payloads at any
// base and offset, meta keys, ordered comparisons of constants, statements
// that decide without a verdict (limit, quota, reject), header fields
// xdpflow does not key. What it cannot run must be punted, not guessed.
func randomWideNftRule(rng *rand.Rand) string {
	v := func() string { return pick(rng, []string{"drop", "drop", "accept"}) }
	switch rng.Intn(24) {
	case 0:
		return fmt.Sprintf("meta l4proto %d counter %s", pick(rng, []int{6, 17, 1, 58, 22, 47, 132, 59}), v())
	case 1:
		return fmt.Sprintf("@th,16,16 %d counter %s", pick(rng, nftPorts), v())
	case 2:
		return fmt.Sprintf("@nh,72,8 %d counter %s", pick(rng, []int{6, 17, 1}), v())
	case 3:
		return fmt.Sprintf("@ll,%d,8 %d counter %s", 8*rng.Intn(30), rng.Intn(256), v())
	case 4:
		return fmt.Sprintf("meta protocol %s counter %s", pick(rng, []string{"vlan", "0x0004", "0x0001", "ip", "ip6", "arp", "8021ad"}), v())
	case 5:
		return fmt.Sprintf("meta iif %s %d counter %s", pick(rng, []string{">", "<", ">=", "<=", "!="}), rng.Intn(6), v())
	case 6:
		return fmt.Sprintf("ip saddr %s limit rate 1/hour burst 3 packets %s", pick(rng, nftSrcIPs), v())
	case 7:
		return fmt.Sprintf("udp dport %d quota 10 packets drop", pick(rng, nftPorts))
	case 8:
		return fmt.Sprintf("tcp dport %d reject", pick(rng, nftPorts))
	case 9:
		return fmt.Sprintf("ip length > %d counter %s", 20+rng.Intn(100), v())
	case 10:
		return fmt.Sprintf("ip hdrlength != 5 counter %s", v())
	case 11:
		return fmt.Sprintf("tcp doff < 5 counter %s", v())
	case 12:
		return fmt.Sprintf("icmp type %s counter %s", pick(rng, []string{"echo-request", "echo-reply", "destination-unreachable"}), v())
	case 13:
		return fmt.Sprintf("icmpv6 type %s counter %s", pick(rng, []string{"echo-request", "nd-neighbor-solicit"}), v())
	case 14:
		return fmt.Sprintf("arp operation %d counter %s", rng.Intn(10), v())
	case 15:
		return fmt.Sprintf("arp htype %d counter %s", pick(rng, []int{1, 6}), v())
	case 16:
		return fmt.Sprintf("vlan type %s counter %s", pick(rng, []string{"ip", "ip6", "arp", "0x0034", "vlan"}), v())
	case 17:
		return fmt.Sprintf("ether type %s counter %s", pick(rng, []string{"0x8035", "0x0034", "vlan", "ip"}), v())
	case 18:
		return fmt.Sprintf("ip6 nexthdr %s counter %s", pick(rng, []string{"udp", "tcp", "44", "0", "60"}), v())
	case 19:
		return fmt.Sprintf("meta pkttype %s counter %s", pick(rng, []string{"host", "broadcast", "multicast", "other"}), v())
	case 20:
		return fmt.Sprintf("meta length %s %d counter %s", pick(rng, []string{">", "<"}), 40+rng.Intn(80), v())
	case 21:
		return fmt.Sprintf("ether daddr & ff:ff:00:00:00:00 == 02:%02x:00:00:00:00 meta l4proto udp counter %s", pick(rng, []int{0xee, 0xef}), v())
	case 22:
		return fmt.Sprintf("ip frag-off & 0x1fff != 0 counter %s", v())
	}
	return fmt.Sprintf("udp length < %d counter %s", 8+rng.Intn(30), v())
}

// randomWideNftRuleset is randomNftRuleset with rules of the wide grammar
// mixed in at the top of chain "in".
func randomWideNftRuleset(rng *rand.Rand) string {
	rs := randomNftRuleset(rng)
	var extra strings.Builder
	for i := 0; i < 2+rng.Intn(8); i++ {
		fmt.Fprintf(&extra, "    %s\n", randomWideNftRule(rng))
	}
	marker := "policy accept;\n"
	if !strings.Contains(rs, marker) {
		marker = "policy drop;\n"
	}
	return strings.Replace(rs, marker, marker+extra.String(), 1)
}

// loadNftLines loads ruleset; where nft refuses the whole, it loads the
// tables and chains with as many of the rules as nft accepts one by one.
// It returns how many rule lines nft refused.
func loadNftLines(t *testing.T, ns *testutil.Netns, ruleset string) int {
	t.Helper()
	if _, err := ns.ExecStdin(ruleset, "nft", "-f", "-"); err == nil {
		return 0
	}
	var skeleton strings.Builder
	var rules [][2]string // chain, rule
	chain := ""
	for _, line := range strings.Split(ruleset, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "chain "):
			chain = strings.Fields(l)[1]
			skeleton.WriteString(line + "\n")
		case l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "type "):
			skeleton.WriteString(line + "\n")
		default:
			rules = append(rules, [2]string{chain, l})
		}
	}
	if _, err := ns.ExecStdin(skeleton.String(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f of the chains alone: %v\n%s", err, skeleton.String())
	}
	refused := 0
	for _, r := range rules {
		if _, err := ns.ExecStdin(fmt.Sprintf("add rule netdev xf %s %s\n", r[0], r[1]), "nft", "-f", "-"); err != nil {
			refused++
		}
	}
	return refused
}

// frameFates sends frames out of a0, paced so that no veth ring
// overflows, and returns where each went: "c0", "d0", both or "drop".
// Frames are told apart by bytes 2-5 of their destination MAC, which
// hold their index.
func (tp *nftTopo) frameFates(t *testing.T, frames [][]byte) []string {
	t.Helper()
	return tp.frameFatesAs(t, frames, func(testutil.Frame) string { return "" })
}

// frameFatesAs is frameFates with each delivered frame described further
// (what it carries): "c0" + describe(frame).
func (tp *nftTopo) frameFatesAs(t *testing.T, frames [][]byte, describe func(testutil.Frame) string) []string {
	t.Helper()
	capC := testutil.NewCapture(t, tp.c, "c0")
	capD := testutil.NewCapture(t, tp.d, "d0")
	done := make(chan struct{})
	var wg sync.WaitGroup
	got := make([]map[uint32]string, 2)
	for i, c := range []*testutil.Capture{capC, capD} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = map[uint32]string{}
			collect := func(d time.Duration) {
				for _, f := range c.Collect(d, nil) {
					if !f.Outgoing && len(f.Data) >= 6 {
						id, d := binary.BigEndian.Uint32(f.Data[2:6]), describe(f)
						if prev, ok := got[i][id]; ok && d != "" {
							d = prev + "|" + d // a copy: both are kept
						}
						got[i][id] = d
					}
				}
			}
			for {
				select {
				case <-done:
					collect(tp.settle)
					return
				default:
				}
				collect(100 * time.Millisecond)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	tp.a.Run(t, func() {
		s, err := testutil.NewSender("a0")
		if err != nil {
			panic(err)
		}
		defer s.Close()
		for i, f := range frames {
			if err := s.Send(f); err != nil {
				panic(fmt.Sprintf("send frame %d (%x): %v", i, f, err))
			}
			if i%32 == 31 {
				time.Sleep(tp.pace)
			}
		}
	})
	close(done)
	wg.Wait()
	out := make([]string, len(frames))
	for i := range frames {
		id := uint32(i)
		c, inC := got[0][id]
		d, inD := got[1][id]
		switch {
		case inC && inD:
			out[i] = "c0" + c + "+d0" + d
		case inC:
			out[i] = "c0" + c
		case inD:
			out[i] = "d0" + d
		default:
			out[i] = "drop"
		}
	}
	return out
}

// TestNftAdversarialFrames: frames from internal/framegen (malformed,
// truncated and unusual in every field the parser reads), with their
// index in the destination MAC, against random rule sets drawn from nft's
// whole grammar, sent with nft alone and with xdpflow: the kernel is the
// oracle, and no frame may meet another fate.
func TestNftAdversarialFrames(t *testing.T) {
	tp := newNftTopo(t)
	seeds, perSeed := 10, 10000
	if testing.Short() {
		seeds, perSeed = 3, 2000
	}
	total, differ, refused := 0, 0, 0
	outcomes := map[string]int{}
	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewSource(int64(1000 + seed)))
		ruleset := randomWideNftRuleset(rng)
		tp.b.MustExec(t, "nft", "flush", "ruleset")
		mustXdpflow(t, tp.b, "daemon", "--once")
		refused += loadNftLines(t, tp.b, ruleset)

		frames := adversarialFrames(rng, tp.a0MAC, []net.HardwareAddr{{0x02, 0xee, 0, 0, 0, 0}, {0x02, 0xef, 0, 0, 0, 0}}, perSeed)
		want := tp.frameFates(t, frames)
		// Loaded again, so that stateful statements (limit, quota)
		// start the second run as they started the first.
		tp.b.MustExec(t, "nft", "flush", "ruleset")
		loadNftLines(t, tp.b, ruleset)
		mustXdpflow(t, tp.b, "daemon", "--once")
		got := tp.frameFates(t, frames)
		for i := range frames {
			outcomes[want[i]]++
			if want[i] != got[i] {
				differ++
				if differ <= 20 {
					t.Errorf("seed %d frame %d %x: nft alone %s, with xdpflow %s", seed, i, frames[i], want[i], got[i])
				}
			}
		}
		total += len(frames)
		if t.Failed() {
			t.Logf("seed %d ruleset:\n%s\nflows: %s", seed, ruleset, mustXdpflow(t, tp.b, "flow", "show", "dev", "b0"))
			break
		}
	}
	t.Logf("%d frames, %d fate differences; nft alone: %v; %d generated rules nft refused", total, differ, outcomes, refused)
	if outcomes["drop"] == 0 || outcomes["c0"] == 0 || outcomes["d0"] == 0 {
		t.Fatalf("outcomes %v: every fate must occur for the comparison to mean anything", outcomes)
	}
}

// adversarialFrames draws n frames (and now and then every truncation of
// one) from framegen over the differential tests' pools, each with its
// index in bytes 2-5 of its destination MAC (frameFates).
func adversarialFrames(rng *rand.Rand, a0 net.HardwareAddr, dstMACs []net.HardwareAddr, n int) [][]byte {
	srcMACs := []net.HardwareAddr{a0, a0}
	for _, m := range nftSrcMACs {
		hw, _ := net.ParseMAC(m)
		srcMACs = append(srcMACs, hw)
	}
	g := framegen.New(rng, framegen.Pools{
		SrcMACs: srcMACs,
		DstMACs: dstMACs,
		SrcIPs:  parseIPs(nftSrcIPs),
		DstIPs:  parseIPs(nftDstIPs),
		Src6:    parseIPs(nftSrc6),
		Dst6:    parseIPs([]string{"2001:db8:9::2"}),
		Ports:   toU16(nftPorts),
		VLANs:   toU16(nftVLANs),
	})
	var frames [][]byte
	for len(frames) < n {
		f := g.Frame()
		if rng.Intn(400) == 0 {
			frames = append(frames, framegen.Truncations(f)...)
		}
		frames = append(frames, f)
	}
	for i, f := range frames {
		binary.BigEndian.PutUint32(f[2:6], uint32(i))
	}
	return frames
}

func parseIPs(s []string) []net.IP {
	out := make([]net.IP, len(s))
	for i, a := range s {
		out[i] = net.ParseIP(a)
	}
	return out
}

func toU16(s []int) []uint16 {
	out := make([]uint16, len(s))
	for i, v := range s {
		out[i] = uint16(v)
	}
	return out
}
