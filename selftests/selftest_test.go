// Package selftests runs xdpflow end to end: the real binary, real veth
// devices in throw-away network namespaces, real packets.
package selftests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

var xdpflowBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(sandboxEnv); spec != "" {
		sandboxMain(spec) // a container's first process (sandbox_test.go)
	}
	dir, err := os.MkdirTemp("", "xdpflow-selftest-")
	if err != nil {
		panic(err)
	}
	xdpflowBin = filepath.Join(dir, "xdpflow")
	if bin := os.Getenv("XDPFLOW_BIN"); bin != "" {
		// Built already (make vmtest builds on the host: a build in the
		// emulated guest takes minutes).
		xdpflowBin = bin
	} else if out, err := exec.Command("go", "build", "-o", xdpflowBin, "../cmd/xdpflow").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build xdpflow: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// topo is A(a0) <-> (b0)B(b1) <-> (c0)C: xdpflow runs on b0.
type topo struct {
	a, b, c          *testutil.Netns
	a0MAC, b0MAC     net.HardwareAddr
	a0IP, b0IP, c0IP net.IP
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	tp := &topo{a: testutil.NewNetns(t), b: testutil.NewNetns(t), c: testutil.NewNetns(t),
		a0IP: net.IPv4(198, 18, 1, 1), b0IP: net.IPv4(198, 18, 1, 2), c0IP: net.IPv4(198, 18, 2, 2)}
	testutil.Veth(t, tp.a, "a0", tp.b, "b0")
	testutil.Veth(t, tp.b, "b1", tp.c, "c0")
	tp.a.MustExec(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "a0")
	tp.b.MustExec(t, "ip", "addr", "add", "198.18.1.2/24", "dev", "b0")
	tp.b.MustExec(t, "ip", "addr", "add", "198.18.2.1/24", "dev", "b1")
	tp.c.MustExec(t, "ip", "addr", "add", "198.18.2.2/24", "dev", "c0")
	// A veth receives XDP-redirected frames only with NAPI on: GRO (or an
	// XDP program) on the receiving end.
	tp.c.MustExec(t, "ethtool", "-K", "c0", "gro", "on")
	tp.a.MustExec(t, "ethtool", "-K", "a0", "gro", "on")
	// b0 forwards in XDP only what a0 sends with finished checksums.
	tp.a.MustExec(t, "ethtool", "-K", "a0", "tx", "off")
	tp.a0MAC = mac(t, tp.a, "a0")
	tp.b0MAC = mac(t, tp.b, "b0")
	return tp
}

func mac(t *testing.T, ns *testutil.Netns, dev string) net.HardwareAddr {
	var m net.HardwareAddr
	ns.Run(t, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			panic(err)
		}
		m = ifi.HardwareAddr
	})
	return m
}

// xdpflow runs the CLI in ns (through `ip netns exec`, as a user would).
func xdpflow(ns *testutil.Netns, args ...string) (string, error) {
	return ns.Exec(append([]string{xdpflowBin}, args...)...)
}

func mustXdpflow(t *testing.T, ns *testutil.Netns, args ...string) string {
	t.Helper()
	out, err := xdpflow(ns, args...)
	if err != nil {
		t.Fatalf("xdpflow %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// udpFrame is a UDP/IPv4 frame from a0 to b0 with a marker payload.
func (tp *topo) udpFrame(dport uint16, marker string, vlans ...testutil.VLAN) []byte {
	return testutil.Eth(tp.b0MAC, tp.a0MAC, vlans, 0x0800,
		testutil.IPv4(tp.a0IP, tp.b0IP, 17, testutil.IPv4Opts{}, testutil.UDP(40000, dport, []byte(marker))))
}

func repeat(f []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = f
	}
	return out
}

type jsonFilter struct {
	Dev       string         `json:"dev"`
	Pref      int            `json:"pref"`
	Handle    int            `json:"handle"`
	Protocol  string         `json:"protocol"`
	Chain     int            `json:"chain"`
	Keys      map[string]any `json:"keys"`
	Actions   []string       `json:"actions"`
	Offloaded bool           `json:"offloaded"`
	Stats     *struct {
		Packets    uint64 `json:"packets"`
		Bytes      uint64 `json:"bytes"`
		LastUsedMs uint64 `json:"last_used_ms"`
	} `json:"stats"`
}

func filters(t *testing.T, ns *testutil.Netns, dev string) []jsonFilter {
	t.Helper()
	out := mustXdpflow(t, ns, "-s", "-j", "filter", "show", "dev", dev, "ingress")
	var fs []jsonFilter
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("filter show -j: %v: %s", err, out)
	}
	return fs
}

// udpListener counts datagrams delivered to a socket in ns (the stack).
func udpListener(t *testing.T, ns *testutil.Netns, ip net.IP, port int) func(time.Duration) int {
	var conn *net.UDPConn
	ns.Run(t, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		if err != nil {
			panic(err)
		}
		conn = c
	})
	t.Cleanup(func() { conn.Close() })
	return func(d time.Duration) int {
		n := 0
		buf := make([]byte, 2048)
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := conn.ReadFromUDP(buf); err == nil {
				n++
			}
		}
		return n
	}
}

func TestDropPassAndCount(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "prio", "10", "protocol", "ip",
		"flower", "ip_proto", "udp", "dst_port", "5001", "action", "drop")
	recv5001 := udpListener(t, tp.b, tp.b0IP, 5001)
	recv5002 := udpListener(t, tp.b, tp.b0IP, 5002)

	dropped := tp.udpFrame(5001, "drop-me")
	testutil.Inject(t, tp.a, "a0", repeat(dropped, 50)...)
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(5002, "pass-me"), 30)...)
	if n := recv5001(300 * time.Millisecond); n != 0 {
		t.Errorf("port 5001: %d datagrams reached the socket through a drop rule", n)
	}
	if n := recv5002(300 * time.Millisecond); n != 30 {
		t.Errorf("port 5002: %d of 30 datagrams delivered on a miss", n)
	}
	fs := filters(t, tp.b, "b0")
	if len(fs) != 1 || fs[0].Stats == nil {
		t.Fatalf("filter show: %+v", fs)
	}
	f := fs[0]
	if f.Pref != 10 || f.Handle != 1 || f.Protocol != "ip" || f.Keys["dst_port"] != float64(5001) ||
		f.Keys["ip_proto"] != "udp" || !f.Offloaded || len(f.Actions) != 1 || f.Actions[0] != "drop" {
		t.Errorf("filter show -j: %+v", f)
	}
	// tc counts ingress bytes without the Ethernet header.
	if f.Stats.Packets != 50 || f.Stats.Bytes != uint64(50*(len(dropped)-14)) {
		t.Errorf("counters: %d packets %d bytes, want 50 packets %d bytes", f.Stats.Packets, f.Stats.Bytes, 50*(len(dropped)-14))
	}
	var st []struct {
		Dev      string            `json:"dev"`
		Attached bool              `json:"attached"`
		Mode     string            `json:"mode"`
		Counters map[string]uint64 `json:"counters"`
	}
	if err := json.Unmarshal([]byte(mustXdpflow(t, tp.b, "-j", "status")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || !st[0].Attached || st[0].Mode != "native" || st[0].Counters["hits"] != 50 || st[0].Counters["misses"] < 30 {
		t.Errorf("status: %+v", st)
	}

	// Deleted, the traffic flows again.
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "prio", "10")
	testutil.Inject(t, tp.a, "a0", repeat(dropped, 20)...)
	if n := recv5001(300 * time.Millisecond); n != 20 {
		t.Errorf("after delete: %d of 20 datagrams delivered", n)
	}
}

func TestRedirectAndVLAN(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "1", "protocol", "ip",
		"flower", "ip_proto", "udp", "dst_port", "7000", "action", "vlan", "push", "id", "42", "priority", "5",
		"action", "mirred", "egress", "redirect", "dev", "b1")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "2", "protocol", "802.1Q",
		"flower", "vlan_id", "7", "vlan_ethtype", "ip", "action", "vlan", "pop",
		"action", "pedit", "ex", "munge", "eth", "dst", "set", "02:00:00:00:00:c0",
		"action", "mirred", "egress", "redirect", "dev", "b1")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "3", "protocol", "802.1Q",
		"flower", "vlan_id", "8", "action", "vlan", "modify", "id", "9", "action", "mirred", "egress", "redirect", "dev", "b1")
	capC := testutil.NewCapture(t, tp.c, "c0")

	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(7000, "push-me"), 10)...)
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(7001, "pop-me", testutil.VLAN{TPID: 0x8100, TCI: 7}), 10)...)
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(7002, "modify-me", testutil.VLAN{TPID: 0x8100, TCI: 8 | 3<<13}), 10)...)
	frames := capC.Collect(500*time.Millisecond, func(f testutil.Frame) bool { return bytes.Contains(f.Data, []byte("-me")) })

	var pushed, popped, modified int
	for _, f := range frames {
		switch {
		case testutil.HasPayload(f, []byte("push-me")):
			if f.VLAN && f.VLANTCI == 42|5<<13 && f.VLANTPID == 0x8100 {
				pushed++
			} else {
				t.Errorf("pushed frame arrived with tag %v %#x", f.VLAN, f.VLANTCI)
			}
		case testutil.HasPayload(f, []byte("pop-me")):
			if !f.VLAN && bytes.Equal(f.Data[0:6], []byte{2, 0, 0, 0, 0, 0xc0}) {
				popped++
			} else {
				t.Errorf("popped frame arrived with tag %v, dst %x", f.VLAN, f.Data[0:6])
			}
		case testutil.HasPayload(f, []byte("modify-me")):
			if f.VLAN && f.VLANTCI == 9|3<<13 {
				modified++
			} else {
				t.Errorf("modified frame arrived with tag %v %#x", f.VLAN, f.VLANTCI)
			}
		}
	}
	if pushed != 10 || popped != 10 || modified != 10 {
		t.Errorf("redirected to c0: pushed %d, popped %d, modified %d; want 10 each", pushed, popped, modified)
	}
	for _, f := range filters(t, tp.b, "b0") {
		if f.Stats.Packets != 10 {
			t.Errorf("pref %d counted %d packets, want 10", f.Pref, f.Stats.Packets)
		}
	}
}

func TestBackOutTheSameDevice(t *testing.T) {
	tp := newTopo(t)
	// XDP_TX on a veth queues frames to its peer, whose NAPI the kernel
	// schedules only when the peer runs an XDP program (GRO is not enough):
	// xdpflow with no rules on a0 is such a program.
	mustXdpflow(t, tp.a, "enable", "dev", "a0")
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "protocol", "ip", "flower",
		"ip_proto", "udp", "dst_port", "7777", "action", "mirred", "egress", "redirect", "dev", "b0")
	capA := testutil.NewCapture(t, tp.a, "a0")
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(7777, "bounce"), 10)...)
	back := capA.Collect(400*time.Millisecond, func(f testutil.Frame) bool {
		return !f.Outgoing && testutil.HasPayload(f, []byte("bounce"))
	})
	if len(back) != 10 {
		t.Errorf("a0 received %d frames back, want the 10 sent (XDP_TX)", len(back))
	}
	var st []struct{ Counters map[string]uint64 }
	_ = json.Unmarshal([]byte(mustXdpflow(t, tp.b, "-j", "status")), &st)
	if len(st) != 1 || st[0].Counters["tx"] != 10 {
		t.Errorf("status tx counter: %+v", st)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
