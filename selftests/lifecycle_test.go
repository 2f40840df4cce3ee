package selftests

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/loader"
)

// pinDir is where the device's pins live (the test runs in the host mount
// namespace, where bpffs is mounted).
func pinDir(t *testing.T, ns *testutil.Netns, dev string) string {
	var dir string
	ns.Run(t, func() {
		id, err := loader.NetnsID()
		if err != nil {
			panic(err)
		}
		dir = filepath.Join(loader.DefaultBPFFS, "xdpflow", id, dev)
	})
	return dir
}

func xdpAttached(t *testing.T, ns *testutil.Netns, dev string) uint32 {
	var id uint32
	ns.Run(t, func() {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			panic(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			id = x.ProgId
		}
	})
	return id
}

func TestEnableTwiceAndDisable(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "-K", "b0", "flow-offload-xdp", "on")
	if out := mustXdpflow(t, tp.b, "enable", "dev", "b0"); !strings.Contains(out, "already enabled") {
		t.Errorf("second enable: %q", out)
	}
	if out := mustXdpflow(t, tp.b, "-k", "b0"); !strings.Contains(out, "flow-offload-xdp: on") {
		t.Errorf("-k: %q", out)
	}
	dir := pinDir(t, tp.b, "b0")
	for _, name := range []string{"link", "prog", "flows", "subtable_lists", "meta"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin %s: %v", name, err)
		}
	}
	if xdpAttached(t, tp.b, "b0") == 0 {
		t.Fatal("no XDP program on b0 after enable")
	}
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "protocol", "ip", "flower", "action", "drop")

	mustXdpflow(t, tp.b, "-K", "b0", "flow-offload-xdp", "off")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pins left after disable: %v", err)
	}
	if id := xdpAttached(t, tp.b, "b0"); id != 0 {
		t.Errorf("XDP program %d still attached after disable", id)
	}
	if out := mustXdpflow(t, tp.b, "-k", "b0"); !strings.Contains(out, "flow-offload-xdp: off") {
		t.Errorf("-k after disable: %q", out)
	}
	if out, err := xdpflow(tp.b, "disable", "dev", "b0"); err == nil || !strings.Contains(out, "not enabled") {
		t.Errorf("disable twice: %v %q", err, out)
	}

	// Enabled again with a flow cache of its own size: the program is
	// told its sets per CPU, status says the size, and the cache answers.
	mustXdpflow(t, tp.b, "enable", "dev", "b0", "cache", "1024")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "protocol", "ip", "flower",
		"ip_proto", "udp", "dst_port", "6000", "action", "drop")
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(6000, "cached"), 10)...)
	var st []struct {
		CacheEntries int               `json:"cache_entries_per_cpu"`
		Counters     map[string]uint64 `json:"counters"`
	}
	if err := jsonUnmarshal(mustXdpflow(t, tp.b, "-j", "status"), &st); err != nil || len(st) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if st[0].CacheEntries != 1024 || st[0].Counters["drop"] != 10 || st[0].Counters["cache_hits"] == 0 {
		t.Errorf("enabled with cache 1024: %d entries per CPU, %d of 10 frames dropped, %d cache hits",
			st[0].CacheEntries, st[0].Counters["drop"], st[0].Counters["cache_hits"])
	}
}

func TestForeignXDPProgramIsNotReplaced(t *testing.T) {
	tp := newTopo(t)
	var foreign link.Link
	tp.b.Run(t, func() {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "someone_else", Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
		if err != nil {
			panic(err)
		}
		defer prog.Close()
		ifi, err := netlink.LinkByName("b0")
		if err != nil {
			panic(err)
		}
		foreign, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Attrs().Index})
		if err != nil {
			panic(err)
		}
	})
	defer foreign.Close()
	before := xdpAttached(t, tp.b, "b0")
	out, err := xdpflow(tp.b, "enable", "dev", "b0")
	if err == nil || !strings.Contains(out, "already has XDP program") || !strings.Contains(out, "someone_else") {
		t.Errorf("enable over a foreign program: err=%v out=%q", err, out)
	}
	if strings.Count(out, "\n") != 0 {
		t.Errorf("error is not one line: %q", out)
	}
	if after := xdpAttached(t, tp.b, "b0"); after != before {
		t.Errorf("foreign program %d replaced by %d", before, after)
	}
	if _, err := os.Stat(pinDir(t, tp.b, "b0")); !os.IsNotExist(err) {
		t.Errorf("refused enable left pins: %v", err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "5", "protocol", "ip", "flower",
		"ip_proto", "udp", "dst_port", "6000", "action", "drop")
	recv := udpListener(t, tp.b, tp.b0IP, 6000)
	f := "filter add dev b0 ingress pref 6 protocol ip flower "
	cases := []struct{ args, want string }{
		{"enable dev nosuchdev", "no such device"},
		{"daemon --once --enable nosuchdev", "daemon --enable: enable nosuchdev: no such device"},
		{f + "dst_ip 10.0.0.300 action drop", "invalid address"},
		{f + "dst_ip 10.0.0.0/33 action drop", "invalid prefix"},
		{f + "dst_mac 02:00:00:00:00 action drop", "invalid MAC"},
		{f + "frobnicate 1 action drop", `unknown key "frobnicate"`},
		{f + "ct_state +trk action drop", "not supported"},
		{f + "action frob", `unknown action "frob"`},
		{f + "action mirred egress mirror dev b0", "cannot clone"},
		{f + "action mirred egress redirect dev nosuchdev", "no such device"},
		{"filter add dev b0 ingress pref 5 protocol ipv6 flower action drop", "protocol ip filters"},
		{"filter add dev b0 ingress pref 5 handle 1 protocol ip flower action drop", "exists"},
		{"filter add dev b0 ingress pref 5 protocol ip flower ip_proto udp dst_port 6000 action pass", "same match"},
		{"filter del dev b0 ingress pref 9", "no filter with pref 9"},
		{"filter add dev b1 ingress protocol ip flower action drop", "not enabled on b1"},
		{"enable dev b1 flows 0", "invalid flows"},
		{"enable dev b1 subtables 999", "must be 1..256"},
		{"enable dev b1 cache 1000", "must be a power of two, 256..1048576"},
		{"enable dev b1 cache 2097152", "must be a power of two, 256..1048576"},
	}
	for _, c := range cases {
		out, err := xdpflow(tp.b, strings.Fields(c.args)...)
		if err == nil {
			t.Errorf("%q: succeeded: %q", c.args, out)
			continue
		}
		if !strings.Contains(out, c.want) || strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "xdpflow: ") {
			t.Errorf("%q: want one line naming %q, got %q", c.args, c.want, out)
		}
	}
	// Nothing installed before is lost or changed.
	fs := filters(t, tp.b, "b0")
	if len(fs) != 1 || fs[0].Pref != 5 || fs[0].Keys["dst_port"] != float64(6000) {
		t.Fatalf("filters after bad input: %+v", fs)
	}
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(6000, "still-dropped"), 10)...)
	if n := recv(300 * time.Millisecond); n != 0 {
		t.Errorf("the drop rule stopped working: %d datagrams delivered", n)
	}
}

func TestRedirectThatWouldLosePacketsIsRefused(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	// c0 (b1's peer) has neither GRO nor XDP: b1 cannot take XDP frames.
	tp.c.MustExec(t, "ethtool", "-K", "c0", "gro", "off")
	out, err := xdpflow(tp.b, "filter", "add", "dev", "b0", "ingress", "protocol", "ip", "flower",
		"action", "mirred", "egress", "redirect", "dev", "b1")
	if err == nil || !strings.Contains(out, "redirect to b1 would lose packets") {
		t.Errorf("redirect into a veth without NAPI on its peer: err=%v %q", err, out)
	}
	tp.c.MustExec(t, "ethtool", "-K", "c0", "gro", "on")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "1", "protocol", "ip", "flower",
		"action", "mirred", "egress", "redirect", "dev", "b1")

	// XDP_TX back out of b0 needs an XDP program on a0 (in another netns).
	out, err = xdpflow(tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "2", "protocol", "ip", "flower",
		"action", "mirred", "egress", "redirect", "dev", "b0")
	if err == nil || !strings.Contains(out, "its peer a0 runs no XDP program") {
		t.Errorf("XDP_TX without an XDP program on the peer: err=%v %q", err, out)
	}
	// Forwarding from b0 while its peer a0 offloads TX checksums: the
	// TCP and UDP packets a's stack sends would leave XDP unfinished.
	tp.a.MustExec(t, "ethtool", "-K", "a0", "tx", "on")
	out, err = xdpflow(tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "3", "protocol", "ip", "flower",
		"action", "mirred", "egress", "redirect", "dev", "b1")
	if err == nil || !strings.Contains(out, "its veth peer a0 offloads TX checksums") {
		t.Errorf("forwarding from a veth whose peer offloads TX checksums: err=%v %q", err, out)
	}
	tp.a.MustExec(t, "ethtool", "-K", "a0", "tx", "off")
	if fs := filters(t, tp.b, "b0"); len(fs) != 1 {
		t.Errorf("refused rules were installed: %+v", fs)
	}

	// With a0's checksums finished by its stack, what the stack sends
	// (not hand-built frames) is forwarded in XDP and arrives whole.
	tp.a.MustExec(t, "ip", "route", "add", "198.18.2.0/24", "via", tp.b0IP.String())
	mustXdpflow(t, tp.b, "filter", "del", "dev", "b0", "ingress", "pref", "1")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "1", "protocol", "ip", "flower",
		"dst_ip", tp.c0IP.String(), "action", "pedit", "ex", "munge", "eth", "dst", "set", mac(t, tp.c, "c0").String(),
		"action", "mirred", "egress", "redirect", "dev", "b1")
	count := udpListener(t, tp.c, tp.c0IP, 9000)
	tp.a.Run(t, func() {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: tp.c0IP, Port: 9000})
		if err != nil {
			panic(err)
		}
		defer c.Close()
		for i := 0; i < 20; i++ {
			if _, err := c.Write([]byte("through XDP")); err != nil {
				panic(err)
			}
		}
	})
	if n := count(time.Second); n != 20 {
		t.Errorf("%d of 20 datagrams from a's stack arrived through the XDP redirect", n)
	}
	if fs := filters(t, tp.b, "b0"); len(fs) != 1 || fs[0].Stats == nil || fs[0].Stats.Packets < 20 {
		t.Errorf("the redirect did not count the datagrams in XDP: %+v", fs)
	}
}

// TestFullTableRefusesWholeRule: a filter whose entries do not fit the
// flows left is refused whole, saying so, and what was installed stays
// as it was. A filter of ranges alone in its pref and mask takes one
// ranged flow; a second of the same pref and mask borrows ranges from the
// first, as fl_lookup_range does, so both expand into prefix blocks.
func TestFullTableRefusesWholeRule(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0", "flows", "8")
	add := func(pref, ports string) (string, error) {
		return xdpflow(tp.b, "filter", "add", "dev", "b0", "ingress", "pref", pref, "protocol", "ip", "flower",
			"ip_proto", "udp", "dst_port", ports, "action", "drop")
	}
	type status struct {
		Flows         int `json:"flows"`
		Subtables     int `json:"subtables"`
		CacheKeyWords int `json:"cache_key_words"`
	}
	statusOf := func() status {
		var st []status
		if err := jsonUnmarshal(mustXdpflow(t, tp.b, "-j", "status"), &st); err != nil || len(st) != 1 {
			t.Fatalf("status: %+v %v", st, err)
		}
		return st[0]
	}
	for _, f := range [][2]string{{"1", "6000"}, {"2", "2000-2001"}} {
		if out, err := add(f[0], f[1]); err != nil {
			t.Fatalf("add pref %s dst_port %s: %v: %s", f[0], f[1], err, out)
		}
	}
	before := statusOf()
	// The cache keys the ethertype's, the protocol's and the ports'
	// words: a range of ports alone needs no address. (The cache's size
	// is enable's: see TestEnableTwiceAndDisable.)
	if before.Flows != 2 || before.Subtables != 2 || before.CacheKeyWords != 3 {
		t.Fatalf("status with an exact port and a range alone in its pref: %+v, want 2 flows in 2 subtables, a cache key of 3 words", before)
	}
	// 1-1023 and 2000-2001 of one pref and mask: 10 prefix blocks and 1,
	// with pref 1's flow more than the 8 the table holds.
	out, err := add("2", "1-1023")
	if err == nil || !strings.Contains(out, "flow table full") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Fatalf("over-full add: err=%v %q", err, out)
	}
	if fs := filters(t, tp.b, "b0"); len(fs) != 2 {
		t.Fatalf("filters after refused add: %+v", fs)
	}
	if after := statusOf(); after != before {
		t.Fatalf("status after refused add: %+v, before it %+v", after, before)
	}
	// A range that fits is taken whole.
	if out, err := add("3", "1-1023"); err != nil {
		t.Fatalf("add pref 3 dst_port 1-1023: %v: %s", err, out)
	}
	if st := statusOf(); st.Flows != 3 {
		t.Fatalf("status after a range alone in its pref: %+v, want 3 flows", st)
	}
}

func TestNativeModeRefusedWhereUnsupported(t *testing.T) {
	tp := newTopo(t)
	out, err := xdpflow(tp.b, "enable", "dev", "lo")
	if err == nil || !strings.Contains(out, "mode generic") {
		t.Fatalf("native XDP on lo: err=%v %q", err, out)
	}
	mustXdpflow(t, tp.b, "enable", "dev", "lo", "mode", "generic")
	if out := mustXdpflow(t, tp.b, "status"); !strings.Contains(out, "mode generic") {
		t.Errorf("status: %q", out)
	}
	mustXdpflow(t, tp.b, "disable", "dev", "lo")
}

func TestStalePinsAfterDeviceRemoved(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	tp.b.MustExec(t, "ip", "link", "del", "b0")
	if out := mustXdpflow(t, tp.b, "status"); !strings.Contains(out, "NOT ATTACHED") {
		t.Errorf("status after the device went away: %q", out)
	}
	// A new device of the same name: enable clears the stale pins.
	testutil.Veth(t, tp.a, "a1", tp.b, "b0")
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	if xdpAttached(t, tp.b, "b0") == 0 {
		t.Fatal("not attached to the new b0")
	}
	if out := mustXdpflow(t, tp.b, "status"); strings.Contains(out, "NOT ATTACHED") {
		t.Errorf("status: %q", out)
	}
}

// TestRenameSwapFollowed: two enabled devices swap names. Each one's pins,
// program and rules follow its ifindex, not its old name: the rule put on
// b0 is now the rule of the device called b1, which still drops with it.
func TestRenameSwapFollowed(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "enable", "dev", "b1")
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "pref", "5", "protocol", "ip", "flower",
		"ip_proto", "udp", "dst_port", "6000", "action", "drop")
	recv := udpListener(t, tp.b, tp.b0IP, 6000)
	for _, step := range [][2]string{{"b0", "bx"}, {"b1", "b0"}, {"bx", "b1"}} {
		tp.b.MustExec(t, "ip", "link", "set", step[0], "name", step[1])
	}
	if fs := filters(t, tp.b, "b1"); len(fs) != 1 || fs[0].Pref != 5 {
		t.Fatalf("filters of b1 (was b0): %+v", fs)
	}
	if fs := filters(t, tp.b, "b0"); len(fs) != 0 {
		t.Fatalf("filters of b0 (was b1): %+v", fs)
	}
	testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(6000, "swapped"), 5)...)
	if n := recv(300 * time.Millisecond); n != 0 {
		t.Errorf("%d datagrams delivered: the rule did not follow its device", n)
	}
}

// TestEnabledByAnotherVersion: pins another xdpflow version made (here: one
// without a map this one has) are refused in one line naming the fix, not
// read as this version's.
func TestEnabledByAnotherVersion(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	var pins string
	for _, l := range strings.Split(mustXdpflow(t, tp.b, "status"), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "pins" {
			pins = f[1]
		}
	}
	if pins == "" {
		t.Fatal("status names no pins")
	}
	if err := os.Remove(filepath.Join(pins, "flows_ranged")); err != nil {
		t.Fatal(err)
	}
	out, err := xdpflow(tp.b, "filter", "show", "dev", "b0", "ingress")
	if err == nil || !strings.Contains(out, "another xdpflow version; disable and enable it again") || strings.Count(out, "\n") != 0 {
		t.Fatalf("pins of another version: err=%v %q, want one line naming the fix", err, out)
	}
	mustXdpflow(t, tp.b, "disable", "dev", "b0")
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	mustXdpflow(t, tp.b, "filter", "show", "dev", "b0", "ingress")
}
