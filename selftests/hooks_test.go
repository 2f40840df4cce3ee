package selftests

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// tcxDropper attaches a tcx program that drops everything (TC_ACT_SHOT)
// to dev's ingress or egress in ns, until detach or the test's end.
func tcxDropper(t *testing.T, ns *testutil.Netns, dev string, attach ebpf.AttachType) (detach func()) {
	t.Helper()
	var l link.Link
	ns.Run(t, func() {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "xf_test_shot", Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			t.Fatalf("load a tcx program: %v", err)
		}
		defer prog.Close()
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: prog, Attach: attach})
		if err != nil {
			t.Skipf("SKIP: this kernel cannot attach tcx programs (6.6+): %v", err)
		}
	})
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

// TestRedirectTargetEgressPath: nft's fwd goes through dev_queue_xmit, so
// the target's nft egress chains, egress qdisc and tcx egress programs
// see the packet; an XDP redirect would skip them. While the target has
// one, the fwd is punted, with the reason, and the packets meet the
// kernel's fate; once it is gone the fwd is offloaded again.
func TestRedirectTargetEgressPath(t *testing.T) {
	tp := newNftTopo(t)
	const ruleset = `table netdev xf {
	chain in { type filter hook ingress device "b0" priority 0; policy accept;
		udp dport 9999 counter fwd to "b2"
	}
}`
	if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	frames, markers := udpFrames(tp.a0MAC, 9999, "XFEGR", 100)
	offloaded := func(what string) {
		t.Helper()
		mustXdpflow(t, tp.b, "daemon", "--once")
		if f := fwdFlow(t, tp); !f.Offloaded {
			t.Fatalf("%s: the fwd is not offloaded: %s", what, f.Reason)
		}
		if got := tp.fates(t, frames, markers); count(got, "d0") != len(frames) {
			t.Fatalf("%s: %d of %d frames forwarded", what, count(got, "d0"), len(frames))
		}
	}
	punted := func(what, reason string, wantD0 int) {
		t.Helper()
		// The kernel's fate, xdpflow out of the way.
		mustXdpflow(t, tp.b, "disable", "dev", "b0")
		want := tp.fates(t, frames, markers)
		mustXdpflow(t, tp.b, "enable", "dev", "b0")
		if count(want, "d0") != wantD0 {
			t.Fatalf("%s: the kernel forwarded %d of %d frames, want %d", what, count(want, "d0"), len(frames), wantD0)
		}
		mustXdpflow(t, tp.b, "daemon", "--once")
		f := fwdFlow(t, tp)
		if f.Offloaded || !strings.Contains(f.Reason, reason) {
			t.Fatalf("%s: fwd offloaded=%v reason %q, want it punted naming %q", what, f.Offloaded, f.Reason, reason)
		}
		got := tp.fates(t, frames, markers)
		for i := range frames {
			if got[i] != want[i] {
				t.Fatalf("%s: frame %d: the kernel alone %s, with xdpflow %s", what, i, want[i], got[i])
			}
		}
	}

	offloaded("no egress hooks")

	// An nft egress chain on the target that drops them.
	tp.b.MustExec(t, "nft", "add table netdev eg")
	tp.b.MustExec(t, "nft", `add chain netdev eg out { type filter hook egress device "b2" priority 0; policy accept; }`)
	tp.b.MustExec(t, "nft", "add rule netdev eg out udp dport 9999 counter drop")
	punted("nft egress chain", "egress chain eg/out", 0)
	tp.b.MustExec(t, "nft", "delete table netdev eg")
	offloaded("nft egress chain removed")

	// A tcx egress program on the target that drops everything.
	detach := tcxDropper(t, tp.b, "b2", ebpf.AttachTCXEgress)
	punted("tcx egress", "tcx egress program", 0)
	detach()
	offloaded("tcx egress removed")

	// A shaping root qdisc: the kernel's fate depends on it.
	tp.b.MustExec(t, "tc", "qdisc", "add", "dev", "b2", "root", "tbf", "rate", "100mbit", "burst", "32k", "latency", "50ms")
	punted("tbf root qdisc", "qdisc tbf", len(frames))
	tp.b.MustExec(t, "tc", "qdisc", "del", "dev", "b2", "root")
	offloaded("tbf removed")
}
