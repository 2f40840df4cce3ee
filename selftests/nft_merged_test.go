package selftests

// The merged (address-ranged) subtables, the widened fragment punts and
// the flows rules claim, against nft alone.

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestNftMergedWideChoice: two rules of one destination MAC whose IPv4
// prefixes merge into one flow (/12 each, kept /8), with port ranges. The
// second rule's next choice keeps its port range's common prefix in the
// mask: a seventh key word, so its subtable is wide, and flows_ranged (the
// only map with address ranges) is a narrow subtable's. maps refuses the
// flow, and the whole nft set stays out of XDP, the unrelated third rule
// with it.
func TestNftMergedWideChoice(t *testing.T) {
	tp := newNftTopo(t)
	tp.loadChain(t,
		"ether daddr 02:00:00:00:00:99 ip saddr 10.0.0.0/12 ip daddr 10.1.0.0/12 tcp dport 1000-1999 drop",
		"ether daddr 02:00:00:00:00:99 ip saddr 10.16.0.0/12 ip daddr 10.1.0.0/12 tcp dport 2000-2999 accept",
		"udp dport 53 drop",
	)
	out, err := xdpflow(tp.b, "daemon", "--once")
	t.Logf("daemon --once: err %v\n%s", err, out)
	bad := 0
	for _, f := range flows(t, tp.b, "b0") {
		if f.Source != "nft" {
			continue
		}
		t.Logf("%s offloaded %v %s", f.Name, f.Offloaded, f.Reason)
		if !f.Offloaded || strings.Contains(f.Reason, "not installed") {
			bad++
		}
	}
	if bad > 0 || err != nil {
		st, _ := xdpflow(tp.b, "status")
		t.Errorf("%d nft rules out of XDP (daemon err %v): the three rules fit the table\nstatus: %s", bad, err, st)
	}
}

// mergedPrefix is a random prefix of base's first 32 bits (length 1-32)
// as nft writes it, for IPv4 or IPv6.
func mergedPrefix(rng *rand.Rand, v6 bool) string {
	bits := 1 + rng.Intn(32)
	var a [4]byte
	a[0], a[1], a[2], a[3] = 10, byte(rng.Intn(2)), byte(rng.Intn(4)<<6|rng.Intn(2)), byte(rng.Intn(4))
	if v6 {
		a[0], a[1] = 0x20, 0x01
		ip := make(net.IP, 16)
		copy(ip, a[:])
		return (&net.IPNet{IP: ip.Mask(net.CIDRMask(bits, 128)), Mask: net.CIDRMask(bits, 128)}).String()
	}
	ip := net.IP(a[:])
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(bits, 32)), Mask: net.CIDRMask(bits, 32)}).String()
}

// mergedAddr is an address the prefixes above meet often.
func mergedAddr(rng *rand.Rand, v6 bool) net.IP {
	a := []byte{10, byte(rng.Intn(2)), byte(rng.Intn(4)<<6 | rng.Intn(2)), byte(rng.Intn(4))}
	if v6 {
		ip := make(net.IP, 16)
		copy(ip, []byte{0x20, 0x01, a[1], a[2], a[3]})
		ip[15] = 1
		return ip
	}
	return net.IP(a)
}

// mergedRule is a rule of prefixes of many lengths, ports and protocols.
func mergedRule(rng *rand.Rand) string {
	v6 := rng.Intn(3) == 0
	fam := "ip"
	if v6 {
		fam = "ip6"
	}
	var w []string
	if rng.Intn(4) != 0 {
		w = append(w, fam, "saddr", mergedPrefix(rng, v6))
	}
	if rng.Intn(2) == 0 {
		w = append(w, fam, "daddr", mergedPrefix(rng, v6))
	}
	if len(w) == 0 {
		w = append(w, "meta", "protocol", map[bool]string{false: "ip", true: "ip6"}[v6])
	}
	if rng.Intn(5) != 0 {
		l4 := pick(rng, []string{"tcp", "udp"})
		lo := rng.Intn(6) * 20
		if hi := lo + rng.Intn(3)*15; hi > lo {
			w = append(w, l4, "dport", fmt.Sprintf("%d-%d", lo, hi))
		} else {
			w = append(w, l4, "dport", fmt.Sprint(lo))
		}
		if rng.Intn(3) == 0 {
			slo := rng.Intn(4) * 30
			w = append(w, l4, "sport", fmt.Sprintf("%d-%d", slo, slo+rng.Intn(40)))
		}
	}
	return strings.Join(append(w, pick(rng, []string{"drop", "accept"})), " ")
}

// mergedFrame is frame i (its index in bytes 2-5 of the destination MAC).
func mergedFrame(rng *rand.Rand, src net.HardwareAddr, i int) []byte {
	dst := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(dst[2:], uint32(i))
	v6 := rng.Intn(3) == 0
	sa, da := mergedAddr(rng, v6), mergedAddr(rng, v6)
	proto := pick(rng, []uint8{6, 17, 17, 6, 1})
	sp, dp := uint16(rng.Intn(130)), uint16(rng.Intn(130))
	var l4 []byte
	switch proto {
	case 6:
		l4 = append(testutil.TCP(sp, dp, 0x10), make([]byte, 8)...)
	case 17:
		l4 = testutil.UDP(sp, dp, make([]byte, 12))
	default:
		l4 = testutil.ICMP(8, 0)
		if v6 {
			proto = 58
			l4 = testutil.ICMP(128, 0)
		}
	}
	if v6 {
		if rng.Intn(6) == 0 { // a fragment, first or not
			off := uint16(rng.Intn(2) * 8)
			ext := []byte{proto, 0, byte(off >> 8), byte(off) | 1, 0, 0, 0, 7}
			return testutil.Eth(dst, src, nil, 0x86dd, testutil.IPv6(sa, da, 44, 0, 0, ext, l4))
		}
		return testutil.Eth(dst, src, nil, 0x86dd, testutil.IPv6(sa, da, proto, 0, 0, nil, l4))
	}
	var o testutil.IPv4Opts
	if rng.Intn(6) == 0 {
		o.FragOff = 0x2000 | uint16(rng.Intn(2))
	}
	return testutil.Eth(dst, src, nil, 0x0800, testutil.IPv4(sa, da, proto, o, l4))
}

// TestNftMergedDifferential: random chains of IPv4 and IPv6 prefixes of
// every length up to 32 (merged into few subtables, flows colliding so that
// rules take their later choices, port prefixes among them), port ranges
// and fragments: nft alone against nft with xdpflow, frame by frame; then
// a second `daemon --once` (a new process reopening the table) changes
// nothing.
func TestNftMergedDifferential(t *testing.T) {
	tp := newNftTopo(t)
	for seed := 1; seed <= 4; seed++ {
		rng := rand.New(rand.NewSource(int64(seed)))
		var rules []string
		for i := 0; i < 60; i++ {
			rules = append(rules, mergedRule(rng))
		}
		tp.b.MustExec(t, "nft", "flush", "ruleset")
		mustXdpflow(t, tp.b, "daemon", "--once")
		tp.loadChain(t, rules...)
		var frames [][]byte
		for i := 0; i < 3000; i++ {
			frames = append(frames, mergedFrame(rng, tp.a0MAC, i))
		}
		want := tp.frameFates(t, frames)
		out := mustXdpflow(t, tp.b, "daemon", "--once")
		offloaded := 0
		for _, f := range flows(t, tp.b, "b0") {
			if f.Source == "nft" && f.Offloaded {
				offloaded++
			}
		}
		got := tp.frameFates(t, frames)
		differ := 0
		for i := range frames {
			if want[i] != got[i] {
				if differ++; differ <= 10 {
					t.Errorf("seed %d frame %d %x: nft alone %s, with xdpflow %s", seed, i, frames[i], want[i], got[i])
				}
			}
		}
		again := mustXdpflow(t, tp.b, "daemon", "--once")
		t.Logf("seed %d: %d rules offloaded; %d of %d frames differ\nfirst: %s\nagain: %s", seed, offloaded, differ, len(frames), out, again)
		if !strings.Contains(again, "installed +0 -0") || strings.Contains(again, "ERROR") {
			t.Errorf("seed %d: a second process changes the table: %s", seed, again)
		}
		if t.Failed() {
			t.Logf("rules:\n%s\nflows: %s", strings.Join(rules, "\n"), mustXdpflow(t, tp.b, "flow", "show", "dev", "b0"))
			return
		}
	}
}

// TestNftVacuousPortFragments: `tcp dport 0-65535 drop` reads the
// transport header but every value passes, so its main part has no port
// condition, and so none on ip_frag either (combo.transport, which adds
// "not a fragment", only runs for a condition on transport bytes): it
// matches fragments, at the level of its own fragment punt. A fragment
// too short for the port (2 bytes after the IP header) is one nft's
// payload load fails on: the rule does not match and the policy accepts
// it. In XDP the rule's main part and its punt tie on rank; when the main
// part wins, XDP drops what nft accepts.
func TestNftVacuousPortFragments(t *testing.T) {
	tp := newNftTopo(t)
	tp.loadChain(t, "tcp dport 0-65535 drop", "udp dport >= 0 drop")
	frame := func(i int, proto uint8, fragOff uint16, l4 []byte) []byte {
		dst := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(dst[2:], uint32(i))
		return testutil.Eth(dst, tp.a0MAC, nil, 0x0800, testutil.IPv4(net.ParseIP("198.18.1.1"), net.ParseIP("198.18.1.2"), proto,
			testutil.IPv4Opts{FragOff: fragOff}, l4))
	}
	frames := [][]byte{
		frame(0, 6, 1, []byte{0x12, 0x34}),            // non-first fragment, 2 bytes
		frame(1, 6, 0x2000, []byte{0x12, 0x34}),       // first fragment, 2 bytes
		frame(2, 17, 1, []byte{0x12, 0x34}),           // UDP non-first fragment, 2 bytes
		frame(3, 6, 1, make([]byte, 24)),              // non-first fragment, 24 bytes
		frame(4, 6, 0, testutil.TCP(1000, 80, 0x10)),  // not a fragment
		frame(5, 17, 0, testutil.UDP(1000, 53, nil)),  // not a fragment
		frame(6, 6, 0x2001, []byte{0x12, 0x34, 0x56}), // middle fragment, 3 bytes
	}
	want := tp.frameFates(t, frames)
	out := mustXdpflow(t, tp.b, "daemon", "--once")
	got := tp.frameFates(t, frames)
	t.Logf("nft alone %v; with xdpflow %v\n%s\n%s", want, got, out, mustXdpflow(t, tp.b, "flow", "show", "dev", "b0"))
	for i := range frames {
		if want[i] != got[i] {
			t.Errorf("frame %d %x: nft alone %s, with xdpflow %s", i, frames[i], want[i], got[i])
		}
	}
}
