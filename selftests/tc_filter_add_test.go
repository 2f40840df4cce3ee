package selftests

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// One scenario, step by step: the steps share b0, its prefs and its filters.
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
