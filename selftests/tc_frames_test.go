package selftests

import (
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// randomWideFlowerKeys draws flower keys from what tc accepts for a
// filter of protocol proto, not from what xdpflow offloads: every L2,
// VLAN, IP, transport, ICMP and ARP key, masked forms, and keys xdpflow
// does not model (MPLS, tunnel, conntrack), whose filters must be punted.
func randomWideFlowerKeys(rng *rand.Rand, proto string) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	if oneIn(rng, 4) {
		add("src_mac", pick(rng, []string{"02:00:00:00:00:01", "02:00:00:00:00:00/ff:ff:ff:ff:ff:fe", "00:00:00:00:00:00/01:00:00:00:00:00"}))
	}
	if oneIn(rng, 5) {
		add("dst_mac", pick(rng, []string{"02:ee:00:00:00:00/ff:ff:00:00:00:00", "02:ef:00:00:00:00/ff:ff:00:00:00:00", "01:00:00:00:00:00/01:00:00:00:00:00"}))
	}
	switch proto {
	case "ip":
		add(wideFlowerIPKeys(rng, false)...)
	case "ipv6":
		add(wideFlowerIPKeys(rng, true)...)
	case "arp", "rarp":
		add(wideFlowerARPKeys(rng)...)
	case "802.1q", "802.1ad":
		add(wideFlowerVLANKeys(rng)...)
	case "mpls_uc":
		add(pick(rng, []string{"mpls_label", "mpls_tc", "mpls_bos", "mpls_ttl"}), "1")
	default: // all, and protocols xdpflow parses nothing of
	}
	if oneIn(rng, 15) {
		add("ct_state", "-trk")
	}
	if oneIn(rng, 20) {
		add("enc_key_id", "5")
	}
	return keys
}

// oneIn is true one time in n.
func oneIn(rng *rand.Rand, n int) bool { return rng.Intn(n) == 0 }

// wideFlowerIPKeys: randomWideFlowerKeys's IPv4 (or IPv6) and transport
// keys.
func wideFlowerIPKeys(rng *rand.Rand, v6 bool) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	if oneIn(rng, 2) {
		if v6 {
			add("src_ip", pick(rng, []string{"2001:db8:1::/48", "2001:db8::/32", "fd00::9", "::/0"}))
		} else {
			add("src_ip", pick(rng, []string{"198.18.1.1", "198.18.1.5", "198.18.1.0/24", "198.18.0.0/15", "0.0.0.0/0"}))
		}
	}
	if !v6 && oneIn(rng, 4) {
		add("dst_ip", pick(rng, nftDstIPs))
	}
	if oneIn(rng, 6) {
		add("ip_ttl", pick(rng, []string{"1", "5", "64", "0x40/0xc0"}))
	}
	if oneIn(rng, 6) {
		add("ip_tos", pick(rng, []string{"0", "0x10/0xf0", "0xfc/0xfc"}))
	}
	if oneIn(rng, 5) {
		add("ip_flags", pick(rng, []string{"frag", "nofrag", "frag/firstfrag", "frag/nofirstfrag", "nofrag/firstfrag"}))
	}
	return append(keys, wideFlowerL4Keys(rng, v6)...)
}

// wideFlowerL4Keys: randomWideFlowerKeys's ip_proto and the keys of the
// protocol it names.
func wideFlowerL4Keys(rng *rand.Rand, v6 bool) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	switch rng.Intn(8) {
	case 0, 1:
		add("ip_proto", "tcp")
		switch rng.Intn(5) {
		case 0:
			add("dst_port", fmt.Sprint(pick(rng, nftPorts)))
		case 1:
			lo := pick(rng, nftPorts)
			add("src_port", fmt.Sprintf("%d-%d", lo, lo+1+rng.Intn(600)))
		case 2:
			add("tcp_flags", pick(rng, []string{"0x2/0x12", "0x10", "0x1/0x1", "0x4"}))
		case 3:
			add("dst_port", fmt.Sprint(pick(rng, nftPorts)), "tcp_flags", "0x2/0x2")
		}
	case 2, 3:
		add("ip_proto", "udp")
		if oneIn(rng, 2) {
			add("src_port", fmt.Sprint(pick(rng, nftPorts)))
		}
		if oneIn(rng, 2) {
			lo := pick(rng, nftPorts)
			add("dst_port", fmt.Sprintf("%d-%d", lo, lo+1+rng.Intn(100)))
		}
	case 4:
		if v6 {
			add("ip_proto", "icmpv6")
			if oneIn(rng, 2) {
				add("type", pick(rng, []string{"128", "129", "135"}))
				if oneIn(rng, 2) {
					add("code", "0")
				}
			}
		} else {
			add("ip_proto", "icmp")
			if oneIn(rng, 2) {
				add("type", pick(rng, []string{"0", "8", "3"}))
				if oneIn(rng, 2) {
					add("code", pick(rng, []string{"0", "1"}))
				}
			}
		}
	case 5:
		add("ip_proto", pick(rng, []string{"sctp", "47", "132", "22"}))
		if keys[len(keys)-1] == "sctp" && oneIn(rng, 2) {
			add("dst_port", fmt.Sprint(pick(rng, nftPorts)))
		}
	}
	return keys
}

// wideFlowerARPKeys: randomWideFlowerKeys's ARP keys.
func wideFlowerARPKeys(rng *rand.Rand) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	if oneIn(rng, 2) {
		add("arp_op", pick(rng, []string{"request", "reply", "1", "2"}))
	}
	if oneIn(rng, 2) {
		add("arp_sip", pick(rng, []string{"198.18.1.1", "198.18.1.0/24"}))
	}
	if oneIn(rng, 3) {
		add("arp_tip", "198.18.1.2")
	}
	if oneIn(rng, 4) {
		add("arp_sha", "02:00:00:00:00:01")
	}
	if oneIn(rng, 5) {
		add("arp_tha", "00:00:00:00:00:00")
	}
	return keys
}

// wideFlowerVLANKeys: randomWideFlowerKeys's VLAN keys, and those of what
// the tag (or the inner tag) carries.
func wideFlowerVLANKeys(rng *rand.Rand) []string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	if oneIn(rng, 3) {
		add("vlan_id", fmt.Sprint(pick(rng, nftVLANs)))
	}
	if oneIn(rng, 4) {
		add("vlan_prio", fmt.Sprint(rng.Intn(8)))
	}
	switch rng.Intn(4) {
	case 0:
		add("vlan_ethtype", "ip")
		add(wideFlowerIPKeys(rng, false)...)
	case 1:
		add("vlan_ethtype", "ipv6")
		add(wideFlowerIPKeys(rng, true)...)
	case 2:
		add("vlan_ethtype", pick(rng, []string{"802.1q", "802.1ad"}))
		if oneIn(rng, 2) {
			add("cvlan_id", fmt.Sprint(pick(rng, nftVLANs)))
		}
		if oneIn(rng, 3) {
			add("cvlan_prio", fmt.Sprint(rng.Intn(8)))
		}
		if oneIn(rng, 2) {
			add("cvlan_ethtype", "ip")
			add(wideFlowerIPKeys(rng, false)...)
		}
	}
	return keys
}

// randomWideFlowerActions draws actions tc accepts on ingress: gact
// verdicts, mirred (redirect and mirror, egress and ingress), vlan
// push/pop/modify, pedit and skbedit, goto chain. Destination MACs are
// left alone: they carry the frame's index.
func randomWideFlowerActions(rng *rand.Rand, proto string) string {
	tagged := strings.HasPrefix(proto, "802.1")
	switch r := rng.Intn(24); {
	case r < 6:
		return "action drop"
	case r < 8:
		return pick(rng, []string{"action pass", "action ok", "action continue", "action reclassify"})
	case r < 12:
		return "action mirred egress redirect dev b2"
	case r < 13:
		return "action mirred egress mirror dev b2"
	case r < 14:
		return "action mirred ingress redirect dev b2"
	case r < 16:
		return fmt.Sprintf("action vlan push id %d%s action mirred egress redirect dev b2", 30+rng.Intn(3),
			pick(rng, []string{"", " protocol 802.1ad", " priority 3"}))
	case r < 17 && tagged:
		return "action vlan pop action mirred egress redirect dev b2"
	case r < 18 && tagged:
		return "action vlan modify id 33 action mirred egress redirect dev b2"
	case r < 19:
		return "action pedit ex munge eth src set 02:0c:00:00:00:01 pipe action mirred egress redirect dev b2"
	case r < 20:
		return "action pedit ex munge ip ttl set 9 pipe action drop"
	case r < 21:
		return "action skbedit mark 7 action drop"
	case r < 22:
		return "action goto chain 1"
	case r < 23:
		return "action vlan push id 40 action drop"
	}
	return "action drop"
}

// randomWideFlowerBatch is a `tc -b` batch of b0's ingress filters from
// the wide grammar, over several prefs and protocols, with chain 1.
func randomWideFlowerBatch(rng *rand.Rand) string {
	var b strings.Builder
	fmt.Fprintf(&b, "filter add dev b0 ingress chain 1 pref 1 protocol all flower action drop\n")
	protoOf := map[int]string{}
	for i := 0; i < 6+rng.Intn(16); i++ {
		pref := 1 + rng.Intn(8)
		proto, ok := protoOf[pref]
		if !ok {
			proto = pick(rng, []string{"ip", "ip", "ip", "ipv6", "ipv6", "arp", "rarp", "802.1q", "802.1q", "802.1ad", "all", "all", "mpls_uc", "0x88b5"})
			protoOf[pref] = proto
		}
		flags := pick(rng, []string{"", "", "", "", "skip_hw "})
		fmt.Fprintf(&b, "filter add dev b0 ingress pref %d handle %d protocol %s flower %s%s %s\n",
			pref, i+1, proto, flags, strings.Join(randomWideFlowerKeys(rng, proto), " "), randomWideFlowerActions(rng, proto))
	}
	return b.String()
}

// TestTCAdversarialFrames: frames from internal/framegen (malformed,
// truncated and unusual in every field the parser reads), with their
// index in the destination MAC, against random filter sets over flower's
// whole grammar, sent with TC alone and with xdpflow mirroring it: the
// kernel is the oracle, and no frame may meet another fate or arrive
// carrying other VLAN tags or another length.
func TestTCAdversarialFrames(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.settle = 2 * time.Second    // software-emulated CPUs in make vmtest
	tp.pace = 4 * time.Millisecond // and slower receivers
	seeds, perSeed := 10, 10000
	if testing.Short() {
		seeds, perSeed = 2, 2000
	}
	describe := func(f testutil.Frame) string { return fmt.Sprintf("%s len %d", vlanOf(f), len(f.Data)) }
	total, differ, refused, offloaded := 0, 0, 0, 0
	outcomes := map[string]int{}
	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewSource(int64(2000 + seed)))
		batch := randomWideFlowerBatch(rng)
		tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
		mustXdpflow(t, tp.b, "daemon", "--once") // XDP holds no tc rule now
		tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b0", "clsact")
		if out, err := tp.b.ExecStdin(batch, "tc", "-force", "-b", "-"); err != nil {
			// tc refuses what it does not accept (and a key and mask
			// another filter of the pref has); the rest stands.
			refused += strings.Count(out, "Command failed")
		}
		frames := adversarialFrames(rng, tp.a0MAC,
			[]net.HardwareAddr{{0x02, 0xee, 0, 0, 0, 0}, {0x02, 0xef, 0, 0, 0, 0}, {0x03, 0xee, 0, 0, 0, 0}}, perSeed)
		want := tp.frameFatesAs(t, frames, describe)
		mustXdpflow(t, tp.b, "daemon", "--once")
		got := tp.frameFatesAs(t, frames, describe)
		for _, f := range tcShown(t, tp.b, "b0") {
			if f.Offloaded {
				offloaded++
			}
		}
		for i := range frames {
			outcomes[strings.SplitN(want[i], " ", 2)[0]]++
			if want[i] != got[i] {
				differ++
				if differ <= 20 {
					t.Errorf("seed %d frame %d %x: TC alone %s, with xdpflow %s", seed, i, frames[i], want[i], got[i])
				}
			}
		}
		total += len(frames)
		if t.Failed() {
			t.Logf("seed %d batch:\n%s\nfilters: %s", seed, batch, mustXdpflow(t, tp.b, "filter", "show", "dev", "b0", "ingress"))
			break
		}
	}
	t.Logf("%d frames, %d fate differences; TC alone: %v; %d filters offloaded over the seeds, %d generated filters tc refused",
		total, differ, outcomes, offloaded, refused)
	if offloaded == 0 || outcomes["drop"] == 0 || outcomes["c0"] == 0 || outcomes["d0"] == 0 {
		t.Fatalf("outcomes %v, %d offloaded: every fate and some offload must occur for the comparison to mean anything", outcomes, offloaded)
	}
}
