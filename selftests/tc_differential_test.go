package selftests

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

var (
	tcSrcPrefixes = []string{"198.18.1.1", "198.18.1.5", "198.18.1.0/24", "198.18.0.0/15", "198.18.3.9"}
	tcSrc6        = []string{"2001:db8:1::/48", "2001:db8::/32", "fd00::9"}
)

// randomFlowerFilter is one `tc filter add` line's match and actions
// (after "flower"), for a filter of protocol proto.
func randomFlowerFilter(rng *rand.Rand, proto string) string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	switch proto {
	case "ip":
		add(randomFlowerIPKeys(rng, false)...)
	case "ipv6":
		add(randomFlowerIPKeys(rng, true)...)
	case "arp":
		add("arp_op", pick(rng, []string{"request", "reply"}))
		if rng.Intn(2) == 0 {
			add("arp_sip", pick(rng, nftSrcIPs))
		}
	case "802.1q", "802.1ad":
		add("vlan_id", fmt.Sprint(pick(rng, nftVLANs)))
		if proto == "802.1q" && rng.Intn(2) == 0 {
			add("vlan_ethtype", "ip")
			add(randomFlowerIPKeys(rng, false)...)
		}
	default: // all
		if rng.Intn(2) == 0 {
			add("src_mac", pick(rng, nftSrcMACs))
		} else {
			add("dst_mac", fmt.Sprintf("02:ee:00:00:00:%02x/ff:ff:ff:ff:ff:f0", rng.Intn(200)))
		}
	}
	return strings.Join(keys, " ") + " " + randomFlowerActions(rng, proto)
}

// randomFlowerIPKeys: randomFlowerFilter's IPv4 (or IPv6) and transport
// keys.
func randomFlowerIPKeys(rng *rand.Rand, v6 bool) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	if rng.Intn(2) == 0 {
		if v6 {
			add("src_ip", pick(rng, tcSrc6))
		} else {
			add("src_ip", pick(rng, tcSrcPrefixes))
		}
	}
	if !v6 && rng.Intn(4) == 0 {
		add("dst_ip", pick(rng, nftDstIPs))
	}
	if !v6 && rng.Intn(5) == 0 {
		add("ip_ttl", fmt.Sprint(pick(rng, nftTTLs)))
	}
	if !v6 && rng.Intn(6) == 0 {
		add("ip_flags", pick(rng, []string{"frag", "nofrag", "frag/nofirstfrag", "frag/firstfrag"}))
	}
	switch rng.Intn(5) {
	case 0:
		add("ip_proto", "tcp")
		switch rng.Intn(3) {
		case 0:
			add("dst_port", fmt.Sprint(pick(rng, nftPorts)))
		case 1:
			lo := pick(rng, nftPorts)
			add("dst_port", fmt.Sprintf("%d-%d", lo, lo+1+rng.Intn(600)))
		default:
			add("tcp_flags", "0x2/0x12")
		}
	case 1:
		add("ip_proto", "udp")
		if rng.Intn(2) == 0 {
			add("src_port", fmt.Sprint(pick(rng, nftPorts)))
		} else {
			add("dst_port", fmt.Sprint(pick(rng, nftPorts)))
		}
	case 2:
		if v6 {
			add("ip_proto", "icmpv6")
		} else {
			add("ip_proto", "icmp", "type", "8")
		}
	}
	return keys
}

// randomFlowerActions: randomFlowerFilter's actions, for a filter of
// protocol proto.
func randomFlowerActions(rng *rand.Rand, proto string) string {
	switch r := rng.Intn(20); {
	case r < 7:
		return "action drop"
	case r < 8:
		// What Open vSwitch installs for set_field of eth_dst: pedit
		// keys xdpflow reads back as an address rewrite.
		return fmt.Sprintf("action pedit ex munge eth dst set 02:0d:00:00:00:%02x pipe action mirred egress redirect dev b2", rng.Intn(3))
	case r < 11:
		return "action pass"
	case r < 15:
		return "action mirred egress redirect dev b2"
	case r < 17:
		return fmt.Sprintf("action vlan push id %d action mirred egress redirect dev b2", 30+rng.Intn(3))
	case r < 18 && strings.HasPrefix(proto, "802.1"):
		return "action vlan pop action mirred egress redirect dev b2"
	case r < 19:
		return "action goto chain 1" // never offloaded: a punt
	default:
		return "action skbedit mark 7 action drop" // never offloaded
	}
}

// randomFlowerBatch is a `tc -b` batch for b0's ingress: filters in a few
// prefs, several (with different masks) sharing a pref, and chain 1.
func randomFlowerBatch(rng *rand.Rand) string {
	var b strings.Builder
	fmt.Fprintf(&b, "filter add dev b0 ingress chain 1 pref 1 protocol all flower action drop\n")
	n := 4 + rng.Intn(12)
	protoOf := map[int]string{}
	var lines []string
	for i := 0; i < n; i++ {
		pref := 1 + rng.Intn(6)
		proto, ok := protoOf[pref]
		if !ok {
			proto = pick(rng, []string{"ip", "ip", "ip", "ipv6", "arp", "802.1q", "802.1ad", "all"})
			protoOf[pref] = proto
		}
		lines = append(lines, fmt.Sprintf("filter add dev b0 ingress pref %d handle %d protocol %s flower %s\n",
			pref, i+1, proto, randomFlowerFilter(rng, proto)))
		b.WriteString(lines[i])
	}
	// Churn: filters deleted and added back. flower tries a pref's masks
	// in their creation order, so a mask that went with its last filter
	// comes back last, out of handle order.
	for k := 0; k < 3; k++ {
		line := pick(rng, lines)
		b.WriteString(strings.Replace(strings.SplitN(line, " flower ", 2)[0], "filter add", "filter del", 1) + " flower\n")
		b.WriteString(line)
	}
	return b.String()
}

// TestTCDifferential: random flower filter sets and frames; every frame
// has the same fate (dropped, delivered, redirected, with the same VLAN
// tags) with xdpflow mirroring the filters as with the kernel's TC alone,
// and each packet of an offloaded filter is counted once, by XDP or by TC.
func TestTCDifferential(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.settle = 1500 * time.Millisecond // software-emulated CPUs in make vmtest
	seeds := 10
	if testing.Short() {
		seeds = 3
	}
	offloadedHits, punts := 0, 0
	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewSource(int64(seed)))
		batch := randomFlowerBatch(rng)
		tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
		mustXdpflow(t, tp.b, "daemon", "--once") // XDP holds no tc rule now
		tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b0", "clsact")
		if out, err := tp.b.ExecStdin(batch, "tc", "-force", "-b", "-"); err != nil {
			// tc refuses a filter with the key and mask of another in its
			// pref (random prefixes collide), and then its deletion; the
			// rest of the batch stands.
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.Contains(line, "File exists") && !strings.Contains(line, "error talking to the kernel") &&
					!strings.Contains(line, "filter handle not found") &&
					!strings.HasPrefix(line, "Command failed") {
					t.Fatalf("seed %d: tc -b: %v\n%s\n%s", seed, err, out, batch)
				}
			}
		}
		var frames [][]byte
		var markers []string
		for i := 0; i < 100; i++ {
			m := fmt.Sprintf("XFTC-%02d-%04d", seed, i)
			markers = append(markers, m)
			frames = append(frames, randomFrame(rng, tp.a0MAC, m))
		}
		before := tcFilterStats(t, tp.b, "b0")
		want := tp.fatesAs(t, frames, markers, vlanAndDstOf)
		mid := tcFilterStats(t, tp.b, "b0")

		mustXdpflow(t, tp.b, "daemon", "--once")
		got := tp.fatesAs(t, frames, markers, vlanAndDstOf)
		after := tcFilterStats(t, tp.b, "b0")
		shown := tcShown(t, tp.b, "b0")

		for i := range frames {
			if want[i] != got[i] {
				t.Errorf("seed %d frame %d (%x): TC alone %q, with xdpflow %q", seed, i, frames[i], want[i], got[i])
			}
		}
		hits, punted := checkTCCounts(t, seed, shown, before, mid, after)
		offloadedHits, punts = offloadedHits+hits, punts+punted
		if t.Failed() {
			t.Logf("seed %d batch:\n%s\nshown: %+v", seed, batch, shown)
			return
		}
	}
	if offloadedHits == 0 || punts == 0 {
		t.Fatalf("offloaded filters with hits: %d, punted filters: %d: the test proved nothing", offloadedHits, punts)
	}
	t.Logf("%d offloaded filters handled packets in XDP; %d filters punted", offloadedHits, punts)
}

// checkTCCounts: each packet of a filter shown as offloaded was counted
// once, by XDP or by TC, and a filter not offloaded is punted and counted
// in TC what it counted alone. before and mid are TC's counters around the
// frames sent with TC alone, after with xdpflow. It returns how many
// offloaded filters counted packets in XDP, and how many were punted.
func checkTCCounts(t *testing.T, seed int, shown map[string]tcShownFilter, before, mid, after map[string]uint64) (offloadedHits, punts int) {
	t.Helper()
	for key, f := range shown {
		if f.Source != "tc" || f.Chain != 0 {
			continue
		}
		tc1, tc2 := mid[key]-before[key], after[key]-mid[key]
		xdp := uint64(0)
		if f.Stats != nil {
			xdp = f.Stats.Packets
		}
		switch {
		case f.Offloaded:
			if xdp+tc2 != tc1 {
				t.Errorf("seed %d filter %s (%v): TC alone counted %d; with xdpflow XDP %d + TC %d", seed, key, f.Actions, tc1, xdp, tc2)
			}
			if xdp > 0 {
				offloadedHits++
			}
		default:
			if !f.Punted {
				t.Errorf("seed %d filter %s neither offloaded nor punted: %s", seed, key, f.Reason)
			}
			punts++
			if tc2 != tc1 || xdp != 0 {
				t.Errorf("seed %d filter %s not offloaded (%s): TC counted %d alone, %d with xdpflow (XDP %d)", seed, key, f.Reason, tc1, tc2, xdp)
			}
		}
	}
	return offloadedHits, punts
}
