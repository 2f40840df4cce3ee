package selftests

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// attachTCX loads insns as a tcx program and attaches it to dev's
// ingress or egress in ns, until detach or the test's end.
func attachTCX(t *testing.T, ns *testutil.Netns, dev string, attach ebpf.AttachType, insns asm.Instructions) (detach func()) {
	t.Helper()
	var l link.Link
	var attachErr error
	ns.Run(t, func() {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xf_test_tcx", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
		if err != nil {
			t.Errorf("load a tcx program: %v", err)
			return
		}
		defer prog.Close()
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Error(err)
			return
		}
		l, attachErr = link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: prog, Attach: attach})
	})
	// Here, not in ns.Run's goroutine: Skip and Fatal end the test's.
	if t.Failed() {
		t.FailNow()
	}
	if attachErr != nil {
		t.Skipf("SKIPPED from here: this kernel cannot attach tcx programs (6.6+): %v", attachErr)
	}
	done := false
	detach = func() {
		if !done {
			done = true
			l.Close()
		}
	}
	t.Cleanup(detach)
	return detach
}

// tcxDropper attaches a tcx program that drops everything (TC_ACT_SHOT).
func tcxDropper(t *testing.T, ns *testutil.Netns, dev string, attach ebpf.AttachType) (detach func()) {
	t.Helper()
	return attachTCX(t, ns, dev, attach, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
}

func udpFrames(a0 net.HardwareAddr, dport uint16, prefix string, n int) ([][]byte, []string) {
	var frames [][]byte
	var markers []string
	for i := 0; i < n; i++ {
		m := fmt.Sprintf("%s-%03d", prefix, i)
		ip := testutil.IPv4(net.ParseIP("198.18.1.1"), net.ParseIP("198.18.1.2"), 17, testutil.IPv4Opts{},
			testutil.UDP(40000, dport, []byte(m)))
		frames = append(frames, testutil.Eth(net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}, a0, nil, 0x0800, ip))
		markers = append(markers, m)
	}
	return frames, markers
}

func count(fates []string, fate string) int {
	n := 0
	for _, f := range fates {
		if f == fate {
			n++
		}
	}
	return n
}

// fwdFlow is the flow of the one rule of chain netdev xf in.
func fwdFlow(t *testing.T, tp *nftTopo) jsonFlow {
	t.Helper()
	for _, f := range flows(t, tp.b, "b0") {
		if f.Source == "nft" && strings.HasPrefix(f.Name, "netdev/xf/in/") {
			return f
		}
	}
	t.Fatalf("no fwd rule in flow show: %+v", flows(t, tp.b, "b0"))
	return jsonFlow{}
}

// fateCheck compares, for one nft rule set on b0, the kernel's fate of
// frames (xdpflow disabled) with their fate through xdpflow.
type fateCheck struct {
	t       *testing.T
	tp      *nftTopo
	frames  [][]byte
	markers []string
}

func newFateCheck(t *testing.T, tp *nftTopo, ruleset string, dport uint16) *fateCheck {
	if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	frames, markers := udpFrames(tp.a0MAC, dport, "XFHOOK", 100)
	return &fateCheck{t, tp, frames, markers}
}

// offloaded: the rule runs in XDP, and every frame is forwarded to d0.
func (c *fateCheck) offloaded(what string) {
	c.t.Helper()
	mustXdpflow(c.t, c.tp.b, "daemon", "--once")
	if f := fwdFlow(c.t, c.tp); !f.Offloaded {
		c.t.Fatalf("%s: the fwd is not offloaded: %s", what, f.Reason)
	}
	if got := c.tp.fates(c.t, c.frames, c.markers); count(got, "d0") != len(c.frames) {
		c.t.Fatalf("%s: %d of %d frames forwarded", what, count(got, "d0"), len(c.frames))
	}
}

// punted: the kernel forwards wantD0 frames alone; with xdpflow the rule
// is punted naming reason, status lists hook as punting, and every frame
// meets the kernel's fate.
func (c *fateCheck) punted(what, reason, hook string, wantD0 int) {
	c.t.Helper()
	t, tp := c.t, c.tp
	mustXdpflow(t, tp.b, "disable", "dev", "b0")
	want := tp.fates(t, c.frames, c.markers)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	if count(want, "d0") != wantD0 {
		t.Fatalf("%s: the kernel forwarded %d of %d frames, want %d", what, count(want, "d0"), len(c.frames), wantD0)
	}
	mustXdpflow(t, tp.b, "daemon", "--once")
	f := fwdFlow(t, tp)
	if f.Offloaded || !strings.Contains(f.Reason, reason) {
		t.Fatalf("%s: fwd offloaded=%v reason %q, want it punted naming %q", what, f.Offloaded, f.Reason, reason)
	}
	if h := statusHook(t, tp.b, "b0", hook); h == nil || !strings.Contains(h.Xdpflow, "punted") {
		t.Fatalf("%s: status does not list a hook naming %q as punting: %+v", what, hook, h)
	}
	got := tp.fates(t, c.frames, c.markers)
	for i := range c.frames {
		if got[i] != want[i] {
			t.Fatalf("%s: frame %d: the kernel alone %s, with xdpflow %s", what, i, want[i], got[i])
		}
	}
}

const fwdRuleset = `table netdev xf {
	chain in { type filter hook ingress device "b0" priority 0; policy accept;
		udp dport 9999 counter fwd to "b2"
	}
}`

// TestRedirectTargetEgressPath: nft's fwd goes through dev_queue_xmit, so
// the target's nft egress chains, egress qdisc and tcx egress programs
// see the packet; an XDP redirect would skip them. While the target has
// one, the fwd is punted, with the reason, and the packets meet the
// kernel's fate; once it is gone the fwd is offloaded again.
func TestRedirectTargetEgressPath(t *testing.T) {
	tp := newNftTopo(t)
	c := newFateCheck(t, tp, fwdRuleset, 9999)
	c.offloaded("no egress hooks")
	if h := statusHook(t, tp.b, "b0", "egress of b2"); h == nil || !strings.Contains(h.Xdpflow, "run in XDP") {
		t.Fatalf("status does not say redirects to b2 run in XDP: %+v", h)
	}

	// An nft egress chain on the target that drops them.
	tp.b.MustExec(t, "nft", "add table netdev eg")
	tp.b.MustExec(t, "nft", `add chain netdev eg out { type filter hook egress device "b2" priority 0; policy accept; }`)
	tp.b.MustExec(t, "nft", "add rule netdev eg out udp dport 9999 counter drop")
	c.punted("nft egress chain", "egress chain eg/out", "nft chain netdev/eg/out", 0)
	tp.b.MustExec(t, "nft", "delete table netdev eg")
	c.offloaded("nft egress chain removed")

	// Ingress filters of the target are no part of its egress path (the
	// ingress qdisc answers a dump of any parent with them).
	tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b2", "ingress")
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b2", "parent", "ffff:", "pref", "1", "u32", "match", "u32", "0", "0")
	c.offloaded("ingress filters on the target")
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b2", "ingress")

	// A clsact egress filter may decide (this one only classifies).
	tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b2", "clsact")
	tp.b.MustExec(t, "tc", "filter", "add", "dev", "b2", "egress", "pref", "1", "u32", "match", "u32", "0", "0")
	c.punted("clsact egress filter", "clsact egress filter", "egress of b2: clsact egress filter", len(c.frames))
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b2", "clsact")
	c.offloaded("clsact removed")

	// A FIFO root qdisc decides nothing, but a filter on it may.
	if out, err := tp.b.Exec("tc", "qdisc", "add", "dev", "b2", "root", "handle", "9:", "fq_codel"); err != nil {
		t.Logf("SKIPPED the fq_codel case: this kernel has no fq_codel (%s); make vmtest runs it", strings.TrimSpace(out))
	} else {
		c.offloaded("fq_codel root qdisc")
		tp.b.MustExec(t, "tc", "filter", "add", "dev", "b2", "parent", "9:", "pref", "1", "u32", "match", "u32", "0", "0")
		// fq_codel drops what its filters give no flow (fq_codel_classify).
		c.punted("a filter on fq_codel", "on qdisc fq_codel", "egress of b2: filter pref 1 u32 on qdisc fq_codel", 0)
		tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b2", "root")
		c.offloaded("fq_codel removed")
	}

	// A shaping root qdisc: the kernel's fate depends on it.
	tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b2", "root", "tbf", "rate", "100mbit", "burst", "32k", "latency", "50ms")
	c.punted("tbf root qdisc", "qdisc tbf", "egress of b2: qdisc tbf", len(c.frames))
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b2", "root")
	c.offloaded("tbf removed")

	// A tcx egress program on the target that drops everything (a case
	// of its own: kernels before 6.6 have no tcx, and skip it).
	c.run("tcx egress", func(t *testing.T) {
		detach := tcxDropper(t, tp.b, "b2", ebpf.AttachTCXEgress)
		c.punted("tcx egress", "tcx egress program", "egress of b2: tcx egress program", 0)
		detach()
		c.offloaded("tcx egress removed")
	})
}

// run runs f as a subtest whose checks c makes: a skip in it (a kernel
// without what it needs) skips that case alone.
func (c *fateCheck) run(name string, f func(t *testing.T)) {
	parent := c.t
	parent.Run(name, func(t *testing.T) {
		c.t = t
		defer func() { c.t = parent }()
		f(t)
	})
}

// TestIngressHooksNotRead: an inet-family ingress chain on the device runs
// on the same hook as the netdev chains, by priority; a tcx ingress
// program runs before TC and nft. xdpflow reads neither: what they could
// decide is punted, and every frame meets the kernel's fate.
func TestIngressHooksNotRead(t *testing.T) {
	tp := newNftTopo(t)
	c := newFateCheck(t, tp, fwdRuleset, 9999)
	c.offloaded("no other hooks")

	// Before the netdev chain: its drop comes first.
	tp.b.MustExec(t, "nft", `add table inet early`)
	tp.b.MustExec(t, "nft", `add chain inet early in { type filter hook ingress device "b0" priority -10; policy accept; }`)
	tp.b.MustExec(t, "nft", `add rule inet early in udp dport 9999 counter drop`)
	c.punted("inet ingress chain before", "inet ingress chain inet/early/in", "nft inet ingress chain inet/early/in", 0)
	tp.b.MustExec(t, "nft", "delete table inet early")
	c.offloaded("inet chain removed")

	// After it: the fwd takes the packet before that chain runs.
	tp.b.MustExec(t, "nft", `add table inet late`)
	tp.b.MustExec(t, "nft", `add chain inet late in { type filter hook ingress device "b0" priority 10; policy accept; }`)
	tp.b.MustExec(t, "nft", `add rule inet late in udp dport 9999 counter drop`)
	c.offloaded("inet ingress chain after")
	tp.b.MustExec(t, "nft", "delete table inet late")

	c.run("tcx ingress", func(t *testing.T) {
		detach := tcxDropper(t, tp.b, "b0", ebpf.AttachTCXIngress)
		c.punted("tcx ingress", "tcx ingress program", "ingress: tcx ingress program", 0)
		detach()
		c.offloaded("tcx ingress removed")
		testTCXFollowed(t, tp, c)
	})
}

// testTCXFollowed: a running daemon follows a tcx attach, which sends no
// notification: it is found by the checks the daemon repeats every
// second.
func testTCXFollowed(t *testing.T, tp *nftTopo, c *fateCheck) {

	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	waitFor(t, 10*time.Second, "the running daemon offloading the fwd", func() jsonFlow { return fwdFlow(t, tp) },
		func(f jsonFlow) bool { return f.Offloaded })
	detach := tcxDropper(t, tp.b, "b0", ebpf.AttachTCXIngress)
	waitFor(t, 10*time.Second, "the running daemon punting the fwd after a tcx attach", func() jsonFlow { return fwdFlow(t, tp) },
		func(f jsonFlow) bool { return !f.Offloaded && strings.Contains(f.Reason, "tcx ingress program") })
	if got := tp.fates(t, c.frames, c.markers); count(got, "drop") != len(c.frames) {
		t.Fatalf("tcx ingress dropper with a running daemon: %d of %d frames dropped", count(got, "drop"), len(c.frames))
	}
	detach()
	waitFor(t, 10*time.Second, "the running daemon offloading the fwd again", func() jsonFlow { return fwdFlow(t, tp) },
		func(f jsonFlow) bool { return f.Offloaded })
}

type jsonHook struct {
	Where, What, Xdpflow string
}

// statusHook is the hook `-j status` lists for dev whose where or what
// contains s, or nil.
func statusHook(t *testing.T, ns *testutil.Netns, dev, s string) *jsonHook {
	t.Helper()
	var st []struct {
		Dev   string     `json:"dev"`
		Hooks []jsonHook `json:"hooks"`
	}
	out := mustXdpflow(t, ns, "-j", "status")
	if err := jsonUnmarshal(out, &st); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	for _, d := range st {
		for i, h := range d.Hooks {
			if d.Dev == dev && strings.Contains(h.Where+": "+h.What, s) {
				return &d.Hooks[i]
			}
		}
	}
	t.Logf("status of %s: %s", dev, out)
	return nil
}

// tcxVLANPusher attaches a tcx egress program to dev in ns that tags
// every frame with VLAN vid through bpf_skb_vlan_push, which puts the tag
// in the skb's metadata (as the 8021q driver, a VLAN-filtering bridge or
// Open vSwitch do): with the device's TX VLAN offload on, it stays there.
func tcxVLANPusher(t *testing.T, ns *testutil.Netns, dev string, vid int32) {
	t.Helper()
	attachTCX(t, ns, dev, ebpf.AttachTCXEgress, asm.Instructions{
		// bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), vid); return TC_ACT_OK
		asm.Mov.Imm(asm.R2, 0x0081),
		asm.Mov.Imm(asm.R3, vid),
		asm.FnSkbVlanPush.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
}

// TestVLANTagOutsideFrame: frames a0 sends tagged, with a0's TX VLAN
// offload on, reach b0's XDP untagged, the tag in the skb's metadata;
// nft sees it (`ether type ip` does not match a tagged frame). XDP must
// not decide for frames whose tag it cannot see. In native mode on a
// kernel with the RX VLAN metadata kfunc and devmap redirects from
// device-bound programs (6.16+), the program reads where the tag is and
// leaves those frames to the kernel, the rule staying in XDP; otherwise
// (generic mode here) every rule of b0 is punted, naming `ethtool -K a0
// txvlan off`. Either way the frames meet the kernel's fate; with the
// offload off the tag is in the frame and the rule runs in XDP.
func TestVLANTagOutsideFrame(t *testing.T) {
	tp := newNftTopo(t)
	const ruleset = `table netdev xf {
	chain in { type filter hook ingress device "b0" priority 0; policy accept;
		ether type ip counter drop
	}
}`
	if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	frames, markers := udpFrames(tp.a0MAC, 9999, "XFVLAN", 50)
	tcxVLANPusher(t, tp.a, "a0", 10)
	testutil.VethVLANOffload(t, tp.a, "a0")

	mustXdpflow(t, tp.b, "disable", "dev", "b0")
	want := tp.fates(t, frames, markers)
	if count(want, "c0") != len(frames) {
		t.Fatalf("nft alone delivered %d of %d frames tagged outside the frame, want all (ether type is 8100)", count(want, "c0"), len(frames))
	}
	var st []struct {
		VLANMeta bool              `json:"vlan_meta"`
		Counters map[string]uint64 `json:"counters"`
	}
	status := func() {
		t.Helper()
		out := mustXdpflow(t, tp.b, "-j", "status")
		st = nil
		if err := jsonUnmarshal(out, &st); err != nil || len(st) != 1 {
			t.Fatalf("status: %v: %s", err, out)
		}
	}
	for _, mode := range []string{"native", "generic"} {
		mustXdpflow(t, tp.b, "enable", "dev", "b0", "mode", mode)
		mustXdpflow(t, tp.b, "daemon", "--once")
		status()
		f := fwdFlow(t, tp)
		switch {
		case st[0].VLANMeta:
			if !f.Offloaded {
				t.Fatalf("%s, the program reading VLAN metadata: the rule is not offloaded: %s", mode, f.Reason)
			}
		case mode == "native" && kernelAtLeast(t, 6, 16):
			t.Fatalf("native mode on a 6.16+ kernel: the program does not read VLAN metadata")
		default:
			if f.Offloaded || !strings.Contains(f.Reason, "ethtool -K a0 txvlan off") {
				t.Fatalf("%s, with a0's TX VLAN offload on: offloaded=%v reason %q, want punted naming the fix", mode, f.Offloaded, f.Reason)
			}
			if h := statusHook(t, tp.b, "b0", "VLAN tags outside the frame"); h == nil || !strings.Contains(h.Xdpflow, "punted") {
				t.Fatalf("%s: status does not say the device's rules are punted for VLAN offload: %+v", mode, h)
			}
		}
		unparsed := st[0].Counters["unparsed"]
		got := tp.fates(t, frames, markers)
		for i := range frames {
			if got[i] != want[i] {
				t.Fatalf("%s: frame %d: nft alone %s, with xdpflow %s", mode, i, want[i], got[i])
			}
		}
		status()
		if st[0].VLANMeta && st[0].Counters["unparsed"]-unparsed < uint64(len(frames)) {
			t.Errorf("%s: %d frames tagged outside the frame, %d counted unparsed", mode, len(frames), st[0].Counters["unparsed"]-unparsed)
		}
		t.Logf("%s: program reads VLAN metadata: %v", mode, st[0].VLANMeta)
		mustXdpflow(t, tp.b, "disable", "dev", "b0")
	}

	// The tag in the frame: the rule runs in XDP, and does not match it.
	mustXdpflow(t, tp.b, "enable", "dev", "b0", "mode", "generic")
	tp.a.MustExec(t, "ethtool", "-K", "a0", "txvlan", "off")
	mustXdpflow(t, tp.b, "daemon", "--once")
	if f := fwdFlow(t, tp); !f.Offloaded {
		t.Fatalf("with a0's TX VLAN offload off: not offloaded: %s", f.Reason)
	}
	if got := tp.fates(t, frames, markers); count(got, "c0") != len(frames) {
		t.Fatalf("tags in the frame: %d of %d delivered", count(got, "c0"), len(frames))
	}
}

// kernelAtLeast says whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var a, b int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &a, &b); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return a > major || (a == major && b >= minor)
}

// TestNftEqualPriorityOrder: two netdev base chains of one priority on a
// device run in the order the kernel's hook list has them: a hook
// registered later goes before those of its priority already there
// (nf_hook_entries_grow). A fwd in one and a drop in the other show which
// ran first; xdpflow must agree, whichever table and chain came first.
func TestNftEqualPriorityOrder(t *testing.T) {
	tp := newNftTopo(t)
	frames, markers := udpFrames(tp.a0MAC, 9999, "XFPRIO", 20)
	for k, order := range [][2]string{{"fwd", "drop"}, {"drop", "fwd"}, {"fwd", "drop"}, {"drop", "fwd"}} {
		oneTable := k >= 2 // two chains of one table, or a chain in each of two tables
		tp.b.MustExec(t, "nft", "flush", "ruleset")
		for i, verdict := range order {
			if verdict == "fwd" {
				verdict = `fwd to "b2"`
			}
			table, chain := fmt.Sprintf("t%d", i), "c"
			if oneTable {
				table, chain = "t", fmt.Sprintf("c%d", i)
			}
			tp.b.MustExec(t, "nft", "add table netdev "+table)
			tp.b.MustExec(t, "nft", fmt.Sprintf(`add chain netdev %s %s { type filter hook ingress device "b0" priority 0; policy accept; }`, table, chain))
			tp.b.MustExec(t, "nft", fmt.Sprintf("add rule netdev %s %s udp dport 9999 counter %s", table, chain, verdict))
		}
		mustXdpflow(t, tp.b, "disable", "dev", "b0")
		want := tp.fates(t, frames, markers)
		mustXdpflow(t, tp.b, "enable", "dev", "b0")
		mustXdpflow(t, tp.b, "daemon", "--once")
		got := tp.fates(t, frames, markers)
		t.Logf("%v (one table %v): nft alone %s", order, oneTable, want[0])
		for _, f := range flows(t, tp.b, "b0") {
			if !strings.HasSuffix(f.Name, "/policy") && f.Source == "nft" && f.Offloaded == !oneTable {
				t.Errorf("%v (one table %v): %s offloaded %v (%s): across tables the kernel's order is not visible, within one it is",
					order, oneTable, f.Name, f.Offloaded, f.Reason)
			}
		}
		for i := range frames {
			if got[i] != want[i] {
				t.Fatalf("chains added %v: frame %d: nft alone %s, with xdpflow %s", order, i, want[i], got[i])
			}
		}
	}
}

// TestNftFlowtableOnIngress: a flowtable hooks its devices' ingress at its
// priority and forwards the flows a rule offloaded to it before the
// netdev chains after it run; xdpflow does not mirror flowtables, so
// those chains are punted, naming it, and status lists it.
func TestNftFlowtableOnIngress(t *testing.T) {
	tp := newNftTopo(t)
	c := newFateCheck(t, tp, fwdRuleset, 9999)
	c.offloaded("no flowtable")
	tp.b.MustExec(t, "nft", "add table inet ft")
	if out, err := tp.b.Exec("nft", `add flowtable inet ft f { hook ingress priority -10; devices = { "b0" }; }`); err != nil {
		t.Skipf("SKIPPED: this kernel cannot hold an nft flowtable (no nf_flow_table: %s); make vmtest runs this test", strings.TrimSpace(out))
	}
	c.punted("flowtable before the netdev chain", "flowtable inet/ft/f", "nft flowtable inet/ft/f", len(c.frames))
	tp.b.MustExec(t, "nft", "delete table inet ft")
	c.offloaded("flowtable removed")
}
