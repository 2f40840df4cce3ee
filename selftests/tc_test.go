package selftests

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// The tests here need cls_flower (and act_gact, act_vlan, act_mirred),
// which this project's development kernel lacks: `make vmtest` runs them
// in a VM booted with Debian's stock kernel.

// needFlower skips the test, loudly, when the kernel has no cls_flower.
func needFlower(t *testing.T, ns *testutil.Netns, dev string) {
	t.Helper()
	ns.MustExec(t, "tc", "qdisc", "add", "dev", dev, "clsact")
	out, err := ns.Exec("tc", "filter", "add", "dev", dev, "ingress", "pref", "1", "protocol", "ip", "flower",
		"src_ip", "192.0.2.1", "action", "drop")
	if err != nil {
		t.Skipf("SKIPPED: this kernel cannot hold a TC flower filter with a gact action (%s): "+
			"run `make vmtest` (Debian's kernel in a VM) for this test", strings.TrimSpace(out))
	}
	ns.MustExec(t, "tc", "filter", "del", "dev", dev, "ingress", "pref", "1")
}

// tcFilterStats reads the kernel's counter of every ingress filter of
// dev: "pref/handle" -> packets (the first action's).
func tcFilterStats(t *testing.T, ns *testutil.Netns, dev string) map[string]uint64 {
	t.Helper()
	out := ns.MustExec(t, "tc", "-s", "-j", "filter", "show", "dev", dev, "ingress")
	var filters []struct {
		Pref    int `json:"pref"`
		Options struct {
			Handle  int `json:"handle"`
			Actions []struct {
				Stats struct {
					Packets uint64 `json:"packets"`
				} `json:"stats"`
			} `json:"actions"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(out), &filters); err != nil {
		t.Fatalf("tc -j filter show: %v\n%s", err, out)
	}
	res := map[string]uint64{}
	for _, f := range filters {
		if f.Options.Handle == 0 || len(f.Options.Actions) == 0 {
			continue
		}
		res[fmt.Sprintf("%d/%d", f.Pref, f.Options.Handle)] = f.Options.Actions[0].Stats.Packets
	}
	return res
}

// tcShownFilter is one filter of `xdpflow -s -j filter show`.
type tcShownFilter struct {
	Pref      int      `json:"pref"`
	Handle    int      `json:"handle"`
	Chain     int      `json:"chain"`
	Source    string   `json:"source"`
	Actions   []string `json:"actions"`
	Offloaded bool     `json:"offloaded"`
	Punted    bool     `json:"punted"`
	Reason    string   `json:"reason"`
	Stats     *struct {
		Packets uint64 `json:"packets"`
	} `json:"stats"`
	TCStats *struct {
		Packets uint64 `json:"packets"`
	} `json:"tc_stats"`
}

func tcShown(t *testing.T, ns *testutil.Netns, dev string) map[string]tcShownFilter {
	t.Helper()
	out := mustXdpflow(t, ns, "-s", "-j", "filter", "show", "dev", dev, "ingress")
	var fs []tcShownFilter
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("filter show -j: %v\n%s", err, out)
	}
	res := map[string]tcShownFilter{}
	for _, f := range fs {
		res[fmt.Sprintf("%d/%d", f.Pref, f.Handle)] = f
	}
	return res
}

// vlanAndDstOf is vlanOf and the destination MAC (pedit rewrites it).
func vlanAndDstOf(f testutil.Frame) string {
	if len(f.Data) < 6 {
		return vlanOf(f)
	}
	return vlanOf(f) + " to " + net.HardwareAddr(f.Data[:6]).String()
}

// vlanOf describes a delivered frame's VLAN tags: the one the kernel took
// into metadata and any left in the data.
func vlanOf(f testutil.Frame) string {
	s := ""
	if f.VLAN {
		s = fmt.Sprintf(" tag %04x:%d", f.VLANTPID, f.VLANTCI&0xfff)
	}
	d := f.Data
	for off := 12; off+4 <= len(d); off += 4 {
		tpid := uint16(d[off])<<8 | uint16(d[off+1])
		if tpid != 0x8100 && tpid != 0x88a8 {
			break
		}
		s += fmt.Sprintf(" tag %04x:%d", tpid, (uint16(d[off+2])<<8|uint16(d[off+3]))&0xfff)
	}
	return s
}

var (
	tcSrcPrefixes = []string{"198.18.1.1", "198.18.1.5", "198.18.1.0/24", "198.18.0.0/15", "198.18.3.9"}
	tcSrc6        = []string{"2001:db8:1::/48", "2001:db8::/32", "fd00::9"}
)

// randomFlowerFilter is one `tc filter add` line's match and actions
// (after "flower"), for a filter of protocol proto.
func randomFlowerFilter(rng *rand.Rand, proto string) string {
	var keys []string
	add := func(k ...string) { keys = append(keys, k...) }
	ipKeys := func(v6 bool) {
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
	}
	switch proto {
	case "ip":
		ipKeys(false)
	case "ipv6":
		ipKeys(true)
	case "arp":
		add("arp_op", pick(rng, []string{"request", "reply"}))
		if rng.Intn(2) == 0 {
			add("arp_sip", pick(rng, nftSrcIPs))
		}
	case "802.1q", "802.1ad":
		add("vlan_id", fmt.Sprint(pick(rng, nftVLANs)))
		if proto == "802.1q" && rng.Intn(2) == 0 {
			add("vlan_ethtype", "ip")
			ipKeys(false)
		}
	default: // all
		if rng.Intn(2) == 0 {
			add("src_mac", pick(rng, nftSrcMACs))
		} else {
			add("dst_mac", fmt.Sprintf("02:ee:00:00:00:%02x/ff:ff:ff:ff:ff:f0", rng.Intn(200)))
		}
	}
	var acts string
	switch r := rng.Intn(20); {
	case r < 7:
		acts = "action drop"
	case r < 8:
		// What Open vSwitch installs for set_field of eth_dst: pedit
		// keys xdpflow reads back as an address rewrite.
		acts = fmt.Sprintf("action pedit ex munge eth dst set 02:0d:00:00:00:%02x pipe action mirred egress redirect dev b2", rng.Intn(3))
	case r < 11:
		acts = "action pass"
	case r < 15:
		acts = "action mirred egress redirect dev b2"
	case r < 17:
		acts = fmt.Sprintf("action vlan push id %d action mirred egress redirect dev b2", 30+rng.Intn(3))
	case r < 18 && strings.HasPrefix(proto, "802.1"):
		acts = "action vlan pop action mirred egress redirect dev b2"
	case r < 19:
		acts = "action goto chain 1" // never offloaded: a punt
	default:
		acts = "action skbedit mark 7 action drop" // never offloaded
	}
	return strings.Join(keys, " ") + " " + acts
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

// waitShown polls `filter show` until ok holds.
func waitShown(t *testing.T, ns *testutil.Netns, what string, ok func(map[string]tcShownFilter) bool) map[string]tcShownFilter {
	t.Helper()
	return waitFor(t, 10*time.Second, what, func() map[string]tcShownFilter { return tcShown(t, ns, "b0") }, ok)
}

// TestTCDaemon: filters written by hand with tc are mirrored by a running
// daemon and handled in XDP (TC's counter does not move), replaced and
// deleted filters follow, a filter XDP cannot run keeps its packets for TC,
// the kernel's mask order is respected, and a daemon killed and restarted
// reconciles without duplicates.
func TestTCDaemon(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.settle = 1500 * time.Millisecond
	d := startDaemon(t, tp.b)
	defer func() {
		if t.Failed() {
			t.Log(d.logText())
		}
	}()
	tc := func(args ...string) { tp.b.MustExec(t, append([]string{"tc", "filter"}, args...)...) }
	offloaded := func(key string) func(map[string]tcShownFilter) bool {
		return func(fs map[string]tcShownFilter) bool { return fs[key].Offloaded }
	}

	tc("add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.5", "action", "drop")
	waitShown(t, tp.b, "drop filter offloaded", offloaded("10/1"))
	frames, markers := tp.srcFrames("drop", repeatStr("198.18.1.5", 20)...)
	for i, f := range tp.fates(t, frames, markers) {
		if f != "drop" {
			t.Fatalf("frame %d from 198.18.1.5: %s, want drop", i, f)
		}
	}
	// The daemon's keepalive (1 s) sends the first packet of a second
	// and CPU on to TC: the burst (well under a second, though it may
	// straddle the start of one) leaves TC at most two per CPU.
	sh := tcShown(t, tp.b, "b0")["10/1"]
	inTC := tcFilterStats(t, tp.b, "b0")["10/1"]
	if sh.Stats == nil || sh.Stats.Packets+inTC != 20 {
		t.Errorf("XDP counted %+v and TC %d packets of filter 10/1, want 20 together", sh.Stats, inTC)
	}
	if inTC > 2*uint64(runtime.NumCPU()) {
		t.Errorf("TC counted %d of the 20 packets an offloaded filter handled in XDP, want at most two keepalives per CPU", inTC)
	}

	// Replaced: the new action runs in XDP.
	tc("replace", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.5",
		"action", "mirred", "egress", "redirect", "dev", "b2")
	waitShown(t, tp.b, "replacement offloaded", func(fs map[string]tcShownFilter) bool {
		return fs["10/1"].Offloaded && len(fs["10/1"].Actions) == 1 && strings.Contains(fs["10/1"].Actions[0], "redirect")
	})
	tp.expectFates(t, "replace", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	// A filter XDP cannot run, in front: punted, and its packets are TC's.
	tc("add", "dev", "b0", "ingress", "pref", "5", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.0/24",
		"action", "skbedit", "mark", "7", "action", "drop")
	waitShown(t, tp.b, "punt installed", func(fs map[string]tcShownFilter) bool {
		return fs["5/1"].Punted && !strings.Contains(fs["5/1"].Reason, "not installed")
	})
	tp.expectFates(t, "punt", map[string]string{"198.18.1.5": "drop", "198.18.3.9": "c0"})
	tc("del", "dev", "b0", "ingress", "pref", "5")
	waitShown(t, tp.b, "punt gone", func(fs map[string]tcShownFilter) bool { _, ok := fs["5/1"]; return !ok && fs["10/1"].Offloaded })
	tp.expectFates(t, "unpunt", map[string]string{"198.18.1.5": "d0"})

	// Mask order: in pref 20 the /32 mask is created first, the /24 mask
	// after it is recreated, so the kernel tries /32 first although the
	// /24 filter has the lower handle. Overlapping filters of one pref
	// stay in TC; the fate is the kernel's.
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.3.0/24", "action", "drop")
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "2", "protocol", "ip", "flower", "src_ip", "198.18.1.77", "action", "mirred", "egress", "redirect", "dev", "b2")
	tc("del", "dev", "b0", "ingress", "pref", "20", "handle", "1", "flower")
	tc("add", "dev", "b0", "ingress", "pref", "20", "handle", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.0/24", "action", "drop")
	waitShown(t, tp.b, "pref 20 mirrored", func(fs map[string]tcShownFilter) bool {
		return fs["20/1"].Punted && fs["20/2"].Punted && !strings.Contains(fs["20/1"].Reason+fs["20/2"].Reason, "not installed")
	})
	tp.expectFates(t, "maskorder", map[string]string{"198.18.1.77": "d0", "198.18.1.78": "drop", "198.18.1.5": "d0"})

	// Killed and restarted, with a change in between: no duplicate, the
	// deleted filter is gone, the unchanged one keeps its XDP counter.
	before := tcShown(t, tp.b, "b0")["10/1"]
	d.kill()
	tp.expectFates(t, "dead", map[string]string{"198.18.1.5": "d0"})
	tc("del", "dev", "b0", "ingress", "pref", "20")
	d = startDaemon(t, tp.b)
	fs := waitShown(t, tp.b, "restart reconciled", func(fs map[string]tcShownFilter) bool {
		for k := range fs {
			if strings.HasPrefix(k, "20/") {
				return false // pref 20's filters, or their punt (handle 0xffffffff)
			}
		}
		return fs["10/1"].Offloaded
	})
	if len(fs) != 1 {
		t.Errorf("after restart: %d filters shown, want 1: %+v", len(fs), fs)
	}
	if got := fs["10/1"]; got.Stats == nil || before.Stats == nil || got.Stats.Packets < before.Stats.Packets {
		t.Errorf("filter 10/1 lost its XDP counter across the restart: %+v then %+v", before.Stats, got.Stats)
	}
	tp.expectFates(t, "restarted", map[string]string{"198.18.1.5": "d0", "198.18.1.78": "c0"})

	// The qdisc deleted: everything goes, traffic flows through again.
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
	waitShown(t, tp.b, "all gone", func(fs map[string]tcShownFilter) bool { return len(fs) == 0 })
	tp.expectFates(t, "noqdisc", map[string]string{"198.18.1.5": "c0"})
}

// TestTCRedirectFollowsItsTarget: a mirred redirect into a veth whose
// peer has neither XDP nor GRO stays in TC (XDP's frames would be lost
// there); once the peer turns GRO on the daemon offloads it, and once
// GRO is off again it hands the filter back to TC. No filter changed:
// the daemon notices the target by itself (the peer is in another
// namespace, so no link notification reaches it: its recheck each
// second does). In every state the packets reach the target.
func TestTCRedirectFollowsItsTarget(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "off")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "mirred", "egress", "redirect", "dev", "b2")
	punted := func(fs map[string]tcShownFilter) bool {
		f := fs["10/1"]
		return f.Punted && strings.Contains(f.Reason, "redirect to b2 would lose packets") && !strings.Contains(f.Reason, "not installed")
	}
	offloaded := func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded }
	inXDP := func() uint64 {
		if st := tcShown(t, tp.b, "b0")["10/1"].Stats; st != nil {
			return st.Packets
		}
		return 0
	}
	waitShown(t, tp.b, "redirect kept in TC while d0 has no GRO", punted)
	tp.expectFates(t, "nogro", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	waitShown(t, tp.b, "redirect offloaded once d0 has GRO", offloaded)
	before := inXDP()
	var frames [][]byte
	var markers []string
	for i := 0; i < 20; i++ { // markers must differ: a fate is where its marker was seen
		f, m := tp.srcFrames(fmt.Sprint("gro", i), "198.18.1.5")
		frames, markers = append(frames, f...), append(markers, m...)
	}
	for i, f := range tp.fates(t, frames, markers) {
		if f != "d0" {
			t.Fatalf("frame %d from 198.18.1.5 with the redirect offloaded: %s, want d0", i, f)
		}
	}
	if n := inXDP() - before; n < 20-2*uint64(runtime.NumCPU()) {
		t.Errorf("XDP redirected %d of 20 frames of an offloaded filter, want all but the keepalives", n)
	}

	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "off")
	waitShown(t, tp.b, "redirect back in TC once d0's GRO is off", punted)
	tp.expectFates(t, "groagain", map[string]string{"198.18.1.5": "d0"})
	if log := d.logText(); strings.Count(log, "a redirect target changed") < 2 {
		t.Errorf("the daemon's log does not show it mirroring b0 again twice for its redirect target:\n%s", log)
	}
}

// TestTCRedirectTargetRemoved: a filter redirecting into b2 runs in XDP;
// b2 is deleted, and the kernel's mirred now drops (its device is gone),
// so the filter must go back to TC; a new device then takes b2's
// ifindex, which XDP's redirect named, and still the filter's packets
// are dropped as TC drops them, not sent to the newcomer.
func TestTCRedirectTargetRemoved(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "mirred", "egress", "redirect", "dev", "b2")
	waitShown(t, tp.b, "redirect offloaded", func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	tp.expectFates(t, "before", map[string]string{"198.18.1.5": "d0", "198.18.1.6": "c0"})

	index := fmt.Sprint(ifindexIn(t, tp.b, "b2"))
	tp.b.MustExec(t, "ip", "link", "del", "b2")
	punted := func(fs map[string]tcShownFilter) bool {
		f := fs["10/1"]
		return f.Punted && !f.Offloaded && !strings.Contains(f.Reason, "not installed")
	}
	waitShown(t, tp.b, "filter back in TC once its target is gone", punted)

	// A newcomer with b2's ifindex, its peer d0 again (with GRO, so XDP
	// could redirect to it).
	tp.b.MustExec(t, "ip", "link", "add", "b9", "index", index, "type", "veth", "peer", "name", "d0", "netns", tp.d.Name)
	tp.b.MustExec(t, "ip", "link", "set", "b9", "up")
	tp.d.MustExec(t, "ip", "link", "set", "d0", "up")
	tp.d.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	if got := fmt.Sprint(ifindexIn(t, tp.b, "b9")); got != index {
		t.Fatalf("b9 has ifindex %s, want b2's %s", got, index)
	}
	time.Sleep(2 * time.Second) // a recheck and a link notification later
	waitShown(t, tp.b, "filter still in TC after its target's ifindex was reused", punted)
	tp.expectFates(t, "reused", map[string]string{"198.18.1.5": "drop", "198.18.1.6": "c0"})
}

// TestTCDaemonFollowsNotifications: a running daemon applies filter
// notifications to the filters it knows instead of reading the device's
// filters again. After rounds of random adds, replaces, deletions of one
// filter and of a whole pref, and egress filters (which it ignores), the
// table it built must be what a fresh reading of the kernel's filters
// builds: `daemon --once` then changes nothing.
func TestTCDaemonFollowsNotifications(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	once := regexp.MustCompile(`b0: tc \(once\): (\d+) filters, (\d+) offloaded; installed \+(\d+) -(\d+)`)
	rng := rand.New(rand.NewSource(7))
	type filter struct {
		pref, handle int
		proto        string
	}
	var live []filter
	protoOf := map[int]string{}
	nextHandle := 1
	notified, filters := 0, 0
	for round := 0; round < 6; round++ {
		d := startDaemon(t, tp.b)
		d.logOnFailure(t)
		time.Sleep(time.Second) // its first reading is in
		var b strings.Builder
		for i := 0; i < 8+rng.Intn(12); i++ {
			switch op := rng.Intn(10); {
			case op < 5 || len(live) == 0:
				pref := 1 + rng.Intn(5)
				proto, ok := protoOf[pref]
				if !ok {
					proto = pick(rng, []string{"ip", "ip", "ipv6", "802.1q", "all"})
					protoOf[pref] = proto
				}
				f := filter{pref, nextHandle, proto}
				nextHandle++
				live = append(live, f)
				fmt.Fprintf(&b, "filter add dev b0 ingress pref %d handle %d protocol %s flower %s\n",
					f.pref, f.handle, f.proto, randomFlowerFilter(rng, f.proto))
			case op < 7:
				f := pick(rng, live)
				fmt.Fprintf(&b, "filter replace dev b0 ingress pref %d handle %d protocol %s flower %s\n",
					f.pref, f.handle, f.proto, randomFlowerFilter(rng, f.proto))
			case op < 9:
				k := rng.Intn(len(live))
				f := live[k]
				live = append(live[:k], live[k+1:]...)
				fmt.Fprintf(&b, "filter del dev b0 ingress pref %d handle %d protocol %s flower\n", f.pref, f.handle, f.proto)
			default:
				// A whole pref: one notification without a handle.
				pref := pick(rng, live).pref
				kept := live[:0]
				for _, f := range live {
					if f.pref != pref {
						kept = append(kept, f)
					}
				}
				live = kept
				delete(protoOf, pref)
				fmt.Fprintf(&b, "filter del dev b0 ingress pref %d\n", pref)
			}
			if rng.Intn(4) == 0 {
				fmt.Fprintf(&b, "filter add dev b0 egress pref %d protocol ip flower ip_proto udp action pass\n", 1+rng.Intn(3))
			}
		}
		// -force: tc refuses a filter with the key and mask of another of
		// its pref (random prefixes collide); the rest stands.
		_, _ = tp.b.ExecStdin(b.String(), "tc", "-force", "-b", "-")
		time.Sleep(2 * time.Second) // emulated CPUs: let the daemon catch up
		d.kill()
		if strings.Contains(d.logText(), "notification(s)") {
			notified++
		}
		out := mustXdpflow(t, tp.b, "daemon", "--once")
		m := once.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("round %d: daemon --once said nothing of b0's tc filters:\n%s", round, out)
		}
		n, _ := strconv.Atoi(m[1])
		filters += n
		if m[3] != "0" || m[4] != "0" {
			t.Fatalf("round %d: the running daemon's table was not what the kernel's filters make: --once installed +%s -%s\nbatch:\n%s\n%s",
				round, m[3], m[4], b.String(), d.logText())
		}
	}
	if notified == 0 || filters == 0 {
		t.Fatalf("%d rounds synced from notifications, %d filters seen: the test proved nothing", notified, filters)
	}
	t.Logf("%d of 6 rounds synced from notifications; %d filters compared", notified, filters)
}

func repeatStr(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestTCFilterToXDPLatency measures, with a daemon running, the time from
// the kernel's notification of a `tc filter add` (or `del`) to the change
// being live in XDP (the pinned cache generation moves): on a device with
// one other filter, and on one with 2,000 more in another pref (the
// notification changes the daemon's copy of them and the table by the
// difference it makes).
func TestTCFilterToXDPLatency(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "protocol", "ip", "flower", "src_ip", "198.18.3.3", "action", "drop")
	waitShown(t, tp.b, "first filter", func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	adds, dels := measureTCLatency(t, tp, 60)
	t.Logf("tc filter add -> live in XDP (%d): %s", len(adds), percentiles(adds))
	t.Logf("tc filter del -> live in XDP (%d): %s", len(dels), percentiles(dels))

	// 2,000 filters more, in pref 20 (exact destinations, as Open
	// vSwitch's flows of one mask share a pref).
	var batch strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&batch, "filter add dev b0 ingress pref 20 handle %d protocol ip flower dst_ip 198.19.%d.%d ip_proto udp dst_port 9 action drop\n",
			i+1, i>>8, i&0xff)
	}
	start := time.Now()
	if out, err := tp.b.ExecStdin(batch.String(), "tc", "-b", "-"); err != nil {
		t.Fatalf("tc -b: %v: %s", err, out)
	}
	added := time.Since(start)
	// What queues up during a sync is taken by the next at once (2.1-4.1
	// s for all here; 92 s when each notification was a sync of its own).
	waitFor(t, 2*time.Minute, "2,001 filters mirrored", func() int {
		n := 0
		for _, f := range tcShown(t, tp.b, "b0") {
			if f.Offloaded {
				n++
			}
		}
		return n
	}, func(n int) bool { return n == 2001 })
	t.Logf("2,000 filters: tc -b added them in %v, all were offloaded %v after the first", added.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	adds, dels = measureTCLatency(t, tp, 30)
	t.Logf("with 2,000 filters more: tc filter add -> live in XDP (%d): %s", len(adds), percentiles(adds))
	t.Logf("with 2,000 filters more: tc filter del -> live in XDP (%d): %s", len(dels), percentiles(dels))
}

// measureTCLatency adds and deletes a filter (pref 10 handle 2) rounds
// times in turn, each timed from the kernel's notification to the change
// being live in XDP.
func measureTCLatency(t *testing.T, tp *nftTopo, rounds int) (adds, dels []time.Duration) {
	t.Helper()
	readGen := pinnedGeneration(t, tp.b, "b0")
	var mon *netlink.Conn
	tp.b.Run(t, func() {
		var err error
		if mon, err = netlink.Dial(unix.NETLINK_ROUTE, nil); err != nil {
			panic(err)
		}
		if err := mon.JoinGroup(unix.RTNLGRP_TC); err != nil {
			panic(err)
		}
	})
	defer mon.Close()
	for i := 0; i < rounds; i++ {
		g0 := readGen()
		verb, want := "add", netlink.HeaderType(unix.RTM_NEWTFILTER)
		args := []string{"tc", "filter", "add", "dev", "b0", "ingress", "pref", "10", "handle", "2", "protocol", "ip",
			"flower", "src_ip", fmt.Sprintf("198.18.4.%d", i), "action", "drop"}
		if i%2 == 1 {
			verb, want = "del", unix.RTM_DELTFILTER
			args = []string{"tc", "filter", "del", "dev", "b0", "ingress", "pref", "10", "handle", "2", "flower"}
		}
		done := make(chan error, 1)
		go func() { _, err := tp.b.Exec(args...); done <- err }()
		var t0 time.Time
		for t0.IsZero() {
			msgs, err := mon.Receive()
			if err != nil {
				t.Fatalf("tc monitor: %v", err)
			}
			for _, m := range msgs {
				if m.Header.Type == want {
					t0 = time.Now()
				}
			}
		}
		if !waitGeneration(readGen, g0, t0, 5*time.Second) {
			t.Fatalf("%s %d not in XDP after 5 s", verb, i)
		}
		lat := time.Since(t0)
		if verb == "add" {
			adds = append(adds, lat)
		} else {
			dels = append(dels, lat)
		}
		if err := <-done; err != nil {
			t.Fatalf("tc filter %s: %v", verb, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return adds, dels
}

// TestTCFilterAdd: `xdpflow filter add` on a kernel with cls_flower puts
// the filter in TC as tc would, and runs it in XDP unless told not to:
// neither flag (both; TC counts only keepalives), skip_hw (TC alone: a
// punt keeps its packets for TC), skip_sw (XDP alone: TC holds nothing).
// Then random filters added by xdpflow on b0 and by tc on b1 must read
// back from the kernel the same: xdpflow encodes flower as tc does.
func TestTCFilterAdd(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.settle = 1500 * time.Millisecond
	add := func(args ...string) {
		mustXdpflow(t, tp.b, append([]string{"filter", "add", "dev", "b0", "ingress"}, args...)...)
	}
	add("pref", "1", "protocol", "ip", "flower", "src_ip", "198.18.1.5", "action", "drop")
	add("pref", "2", "protocol", "ip", "flower", "src_ip", "198.18.1.6", "skip_hw", "action", "drop")
	add("pref", "3", "protocol", "ip", "flower", "src_ip", "198.18.1.7", "skip_sw", "action", "drop")
	inTC := tcFilterStats(t, tp.b, "b0")
	if _, ok := inTC["1/1"]; !ok {
		t.Errorf("pref 1 (no flag) is not in TC: %v", inTC)
	}
	if _, ok := inTC["2/1"]; !ok {
		t.Errorf("pref 2 (skip_hw) is not in TC: %v", inTC)
	}
	if _, ok := inTC["3/1"]; ok {
		t.Errorf("pref 3 (skip_sw) is in TC: %v", inTC)
	}
	fs := tcShown(t, tp.b, "b0")
	if f := fs["1/1"]; !f.Offloaded || f.Source != "tc" {
		t.Errorf("pref 1: offloaded %v, source %q; want in XDP, from TC", f.Offloaded, f.Source)
	}
	if f := fs["2/1"]; f.Offloaded || !f.Punted || !strings.Contains(f.Reason, "skip_hw") {
		t.Errorf("pref 2 (skip_hw): offloaded %v, punted %v, reason %q; want left to TC", f.Offloaded, f.Punted, f.Reason)
	}
	if f := fs["3/1"]; !f.Offloaded || f.Source != "cli" {
		t.Errorf("pref 3 (skip_sw): offloaded %v, source %q; want in XDP only", f.Offloaded, f.Source)
	}
	for _, src := range []string{"198.18.1.5", "198.18.1.6", "198.18.1.7"} {
		frames, markers := tp.srcFrames("place", repeatStr(src, 20)...)
		for i, f := range tp.fates(t, frames, markers) {
			if f != "drop" {
				t.Fatalf("frame %d from %s: %s, want drop", i, src, f)
			}
		}
	}
	fs, inTC = tcShown(t, tp.b, "b0"), tcFilterStats(t, tp.b, "b0")
	xdp := func(k string) uint64 {
		if fs[k].Stats == nil {
			return 0
		}
		return fs[k].Stats.Packets
	}
	if x, k := xdp("1/1"), inTC["1/1"]; x+k != 20 || k > 2*uint64(runtime.NumCPU()) {
		t.Errorf("pref 1: XDP %d + TC %d packets, want 20 with TC's at most the keepalives", x, k)
	}
	if x, k := xdp("2/1"), inTC["2/1"]; x != 0 || k != 20 {
		t.Errorf("pref 2 (skip_hw): XDP %d, TC %d packets; want all 20 in TC", x, k)
	}
	if x := xdp("3/1"); x != 20 {
		t.Errorf("pref 3 (skip_sw): XDP %d packets, want 20", x)
	}

	// An Ethernet address rewrite goes into TC as act_pedit, reads back
	// as the same filter and is offloaded: the frames leave d0's peer
	// rewritten, handled in XDP.
	add("pref", "5", "protocol", "ip", "flower", "src_ip", "198.18.1.8", "action", "pedit", "ex", "munge", "eth", "dst",
		"set", "02:0d:00:00:00:05", "pipe", "action", "mirred", "egress", "redirect", "dev", "b2")
	if f := tcShown(t, tp.b, "b0")["5/1"]; !f.Offloaded || f.Source != "tc" {
		t.Errorf("pref 5 (pedit): offloaded %v, source %q, reason %q; want in XDP, from TC", f.Offloaded, f.Source, f.Reason)
	}
	var frames [][]byte
	var markers []string
	for i := 0; i < 10; i++ { // a marker each
		f, m := tp.srcFrames(fmt.Sprintf("pedit%d", i), "198.18.1.8")
		frames, markers = append(frames, f...), append(markers, m...)
	}
	for i, f := range tp.fatesAs(t, frames, markers, vlanAndDstOf) {
		if f != "d0 to 02:0d:00:00:00:05" {
			t.Errorf("pedit frame %d: %s, want d0 to 02:0d:00:00:00:05", i, f)
		}
	}
	if x := tcShown(t, tp.b, "b0")["5/1"].Stats; x == nil || x.Packets < 10-2*uint64(runtime.NumCPU()) {
		t.Errorf("pref 5 (pedit): XDP stats %+v, want the 10 frames but keepalives", x)
	}
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "pref", "5")

	// Prefs stay with their place: no XDP-only filter in a TC pref, no TC
	// filter in an XDP-only one, and nothing changes when refused.
	for _, bad := range [][]string{
		{"pref", "1", "protocol", "ip", "flower", "src_ip", "198.18.9.1", "skip_sw", "action", "drop"},
		{"pref", "3", "protocol", "ip", "flower", "src_ip", "198.18.9.1", "action", "drop"},
		{"pref", "4", "protocol", "ip", "flower", "src_ip", "198.18.9.1", "action", "skbedit", "mark", "7", "action", "drop"},
	} {
		out, err := xdpflow(tp.b, append([]string{"filter", "add", "dev", "b0", "ingress"}, bad...)...)
		if err == nil || strings.Count(out, "\n") > 0 {
			t.Errorf("filter add %v: err %v, %q; want refused in one line", bad, err, out)
		}
	}
	if n := len(tcShown(t, tp.b, "b0")); n != 3 {
		t.Errorf("%d filters after refused adds, want 3", n)
	}

	// Deleted through xdpflow: gone from TC and from XDP.
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "pref", "1")
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "pref", "2")
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "pref", "3")
	if n := len(tcFilterStats(t, tp.b, "b0")); n != 0 {
		t.Errorf("%d filters left in TC after filter del", n)
	}
	if fs := tcShown(t, tp.b, "b0"); len(fs) != 0 {
		t.Errorf("filters left after filter del: %+v", fs)
	}
	tp.expectFates(t, "deleted", map[string]string{"198.18.1.5": "c0", "198.18.1.7": "c0"})

	// Encoding: what xdpflow put in the kernel reads back as what tc put.
	tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b1", "clsact")
	rng := rand.New(rand.NewSource(7))
	written, refused := 0, 0
	for pref := 10; pref < 90; pref++ {
		proto := pick(rng, []string{"ip", "ip", "ip", "ipv6", "arp", "802.1q", "802.1ad", "all"})
		words := strings.Fields(randomFlowerFilter(rng, proto))
		head := []string{"ingress", "pref", fmt.Sprint(pref), "handle", "1", "protocol", proto, "flower"}
		tp.b.MustExec(t, append(append([]string{"tc", "filter", "add", "dev", "b1"}, head...), words...)...)
		out, err := xdpflow(tp.b, append(append([]string{"filter", "add", "dev", "b0"}, head...), words...)...)
		if err != nil {
			if !strings.Contains(out, "not supported") {
				t.Errorf("xdpflow filter add %s: %v: %s", strings.Join(words, " "), err, out)
			}
			refused++
			continue
		}
		written++
		want, got := tcFilterJSON(t, tp.b, "b1", pref), tcFilterJSON(t, tp.b, "b0", pref)
		if want != got {
			t.Errorf("pref %d %s: the kernel holds\n  from tc:      %s\n  from xdpflow: %s", pref, strings.Join(words, " "), want, got)
		}
	}
	t.Logf("%d random filters written by xdpflow read back as tc's; %d refused (actions xdpflow does not run)", written, refused)
	if written < 40 {
		t.Errorf("only %d of 80 random filters were written", written)
	}
}

// tcFilterJSON is `tc -j filter show` of one pref, without what differs
// between two copies of a filter (action indexes, counters, times). A
// masked MAC key is shown with its bits outside the mask cleared: tc
// keeps the value as typed, xdpflow the masked value it matches (flower
// matches key & mask either way).
func tcFilterJSON(t *testing.T, ns *testutil.Netns, dev string, pref int) string {
	t.Helper()
	out := ns.MustExec(t, "tc", "-j", "filter", "show", "dev", dev, "ingress", "pref", fmt.Sprint(pref))
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("tc -j filter show: %v: %s", err, out)
	}
	var scrub func(any) any
	scrub = func(x any) any {
		switch y := x.(type) {
		case map[string]any:
			for _, k := range []string{"index", "ref", "bind", "stats", "installed", "last_used", "first_used", "expires"} {
				delete(y, k)
			}
			for k, e := range y {
				y[k] = scrub(e)
				if str, ok := e.(string); ok {
					y[k] = maskedMACText(str)
				}
			}
		case []any:
			for i, e := range y {
				y[i] = scrub(e)
			}
		}
		return x
	}
	b, _ := json.Marshal(scrub(v))
	return string(b)
}

// maskedMACText clears the bits of "mac/len" outside the mask.
func maskedMACText(s string) string {
	addr, bits, ok := strings.Cut(s, "/")
	mac, err := net.ParseMAC(addr)
	n, nerr := strconv.Atoi(bits)
	if !ok || err != nil || nerr != nil || len(mac) != 6 || n < 0 || n > 48 {
		return s
	}
	for i := range mac {
		keep := min(max(n-8*i, 0), 8)
		mac[i] &= byte(0xff << (8 - keep))
	}
	return fmt.Sprintf("%s/%d", mac, n)
}

// TestTCSharedBlock: filters of a shared block (tc qdisc add dev X
// ingress_block N clsact; tc filter add block N ..., as Open vSwitch
// does for bonds) are every bound device's ingress filters. Their
// notifications name the block, not a device (TCM_IFINDEX_MAGIC_BLOCK):
// a running daemon mirrors an added block filter onto every enabled
// device bound to the block, and takes a deleted one out of all of them.
func TestTCSharedBlock(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")
	for _, dev := range []string{"b0", "b2"} {
		tp.b.MustExec(t, "tc", "qdisc", "add", "dev", dev, "ingress_block", "7", "clsact")
	}
	mustXdpflow(t, tp.b, "enable", "dev", "b2")
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	time.Sleep(time.Second) // its first reading is in
	tp.b.MustExec(t, "tc", "filter", "add", "block", "7", "pref", "10", "handle", "1", "protocol", "ip",
		"flower", "src_ip", "198.18.1.5", "action", "drop")
	for _, dev := range []string{"b0", "b2"} {
		waitFor(t, 10*time.Second, "the block's filter mirrored onto "+dev, func() map[string]tcShownFilter { return tcShown(t, tp.b, dev) },
			func(fs map[string]tcShownFilter) bool { return fs["10/1"].Offloaded })
	}
	tp.expectFates(t, "block-add", map[string]string{"198.18.1.5": "drop", "198.18.1.6": "c0"})

	tp.b.MustExec(t, "tc", "filter", "del", "block", "7", "pref", "10", "handle", "1", "protocol", "ip", "flower")
	for _, dev := range []string{"b0", "b2"} {
		waitFor(t, 10*time.Second, "the block's deleted filter gone from "+dev, func() map[string]tcShownFilter { return tcShown(t, tp.b, dev) },
			func(fs map[string]tcShownFilter) bool {
				_, ok := fs["10/1"]
				return !ok && tableRules(t, tp.b, dev) == 0
			})
	}
	tp.expectFates(t, "block-del", map[string]string{"198.18.1.5": "c0", "198.18.1.6": "c0"})
}

// TestTCPolicyShared: a daemon's mirror options are the device's policy,
// and `filter add` mirrors TC with it: a `--keepalive off
// --mirror-skip-hw` daemon and the CLI install the same rules, so the
// daemon, mirroring again after the CLI wrote the table, changes nothing.
func TestTCPolicyShared(t *testing.T) {
	tp := newNftTopo(t)
	needFlower(t, tp.b, "b0")
	d := startDaemon(t, tp.b, "--keepalive", "off", "--mirror-skip-hw")
	d.logOnFailure(t)
	d.waitRunning(t)
	if st := mustXdpflow(t, tp.b, "status"); !strings.Contains(st, "TC mirror: keepalive off, skip_hw filters mirrored") {
		t.Errorf("status does not show the daemon's policy:\n%s", st)
	}
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.1.5", "action", "drop")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "2", "protocol", "ip", "flower",
		"src_ip", "198.18.1.6", "skip_hw", "action", "drop")
	// The daemon mirrors again each second after another writer.
	waitFor(t, 10*time.Second, "the daemon's mirror after the CLI's", d.logText,
		func(s string) bool { return strings.Count(s, "tc (writer)") >= 1 })
	time.Sleep(1500 * time.Millisecond)
	for _, l := range strings.Split(d.logText(), "\n") {
		if strings.Contains(l, "tc (writer)") && !strings.Contains(l, "installed +0 -0") {
			t.Errorf("the daemon reinstalled what the CLI mirrored: %s", l)
		}
	}
	fs := tcShown(t, tp.b, "b0")
	if f := fs["2/1"]; !f.Offloaded {
		t.Errorf("pref 2 (skip_hw) under --mirror-skip-hw: offloaded %v, reason %q; want in XDP", f.Offloaded, f.Reason)
	}
}
