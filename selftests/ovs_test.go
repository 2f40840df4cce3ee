package selftests

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// The tests here need Open vSwitch's kernel datapath (openvswitch) and
// cls_flower, which this project's development kernel lacks: `make
// vmtest` runs them in a VM booted with Debian's stock kernel.

const ovsCtl = "/usr/share/openvswitch/scripts/ovs-ctl"

// needOVS skips the test, loudly, where Open vSwitch or its kernel
// datapath is absent.
func needOVS(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(ovsCtl); err != nil {
		t.Skipf("SKIPPED: Open vSwitch is not installed (%s): run `make vmtest`, which installs openvswitch-switch", ovsCtl)
	}
	if _, err := os.Stat("/sys/module/openvswitch"); err != nil {
		t.Skip("SKIPPED: this kernel has no openvswitch datapath: run `make vmtest` (Debian's kernel in a VM) for this test")
	}
}

// ovsSwitch is Debian's Open vSwitch run inside one network namespace,
// its database, sockets and logs in a directory of its own.
type ovsSwitch struct {
	ns  *testutil.Netns
	env []string
	dir string
}

// startOVS starts ovsdb-server and ovs-vswitchd in ns with
// other_config:hw-offload=true (set before ovs-vswitchd starts, which is
// when it reads it): datapath flows go into TC flower on the ports'
// ingress.
func startOVS(t *testing.T, ns *testutil.Netns) *ovsSwitch {
	t.Helper()
	return startOVSWith(t, ns, true)
}

// startOVSWith is startOVS with hw-offload as given: false keeps every
// datapath flow in the kernel's openvswitch datapath.
func startOVSWith(t *testing.T, ns *testutil.Netns, hwOffload bool) *ovsSwitch {
	t.Helper()
	needOVS(t)
	dir := t.TempDir()
	o := &ovsSwitch{ns: ns, dir: dir}
	for _, d := range []string{"run", "log", "etc"} {
		if err := os.MkdirAll(dir+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o.env = []string{"OVS_RUNDIR=" + dir + "/run", "OVS_LOGDIR=" + dir + "/log", "OVS_SYSCONFDIR=" + dir + "/etc",
		"OVS_DBDIR=" + dir + "/etc"}
	o.must(t, ovsCtl, "--no-ovs-vswitchd", "--system-id=random", "--no-monitor", "start")
	t.Cleanup(func() { _, _ = o.run(ovsCtl, "stop") })
	o.must(t, "ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".", fmt.Sprintf("other_config:hw-offload=%v", hwOffload))
	o.must(t, ovsCtl, "--no-ovsdb-server", "--no-monitor", "--no-mlockall", "start")
	return o
}

func (o *ovsSwitch) run(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", o.ns.Name, "env"}, append(o.env, args...)...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (o *ovsSwitch) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := o.run(args...)
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func (o *ovsSwitch) log() string {
	b, _ := os.ReadFile(o.dir + "/log/ovs-vswitchd.log")
	return string(b)
}

// tcDeletes counts, from now on, RTM_DELTFILTER notifications for the
// filters of pref on ifindex in ns.
func tcDeletes(t *testing.T, ns *testutil.Netns, ifindex int, pref uint16) *atomic.Int64 {
	var mon *netlink.Conn
	ns.Run(t, func() {
		var err error
		if mon, err = netlink.Dial(unix.NETLINK_ROUTE, nil); err != nil {
			panic(err)
		}
		if err := mon.JoinGroup(unix.RTNLGRP_TC); err != nil {
			panic(err)
		}
	})
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msgs, err := mon.Receive()
			if err != nil {
				if strings.Contains(err.Error(), "closed") {
					return
				}
				continue
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_DELTFILTER || len(m.Data) < 20 {
					continue
				}
				ifi := int(int32(binary.NativeEndian.Uint32(m.Data[4:])))
				info := binary.NativeEndian.Uint32(m.Data[16:])
				if ifi == ifindex && uint16(info>>16) == pref {
					n.Add(1)
				}
			}
		}
	}()
	t.Cleanup(func() { mon.Close(); <-done })
	return &n
}

// udpStream sends numbered datagrams from one namespace to a socket in
// another at a steady rate, and tells which arrived.
type udpStream struct {
	send, recv *net.UDPConn
	mu         sync.Mutex
	got        map[uint32]bool
	sent       atomic.Uint32
}

func newUDPStream(t *testing.T, from *testutil.Netns, to *testutil.Netns, dst net.IP, port int) *udpStream {
	s := &udpStream{got: map[uint32]bool{}}
	to.Run(t, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: dst, Port: port})
		if err != nil {
			panic(err)
		}
		_ = c.SetReadBuffer(4 << 20)
		s.recv = c
	})
	from.Run(t, func() {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst, Port: port})
		if err != nil {
			panic(err)
		}
		s.send = c
	})
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := s.recv.Read(buf)
			if err != nil {
				return
			}
			if n >= 4 {
				s.mu.Lock()
				s.got[binary.BigEndian.Uint32(buf)] = true
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { s.send.Close(); s.recv.Close() })
	return s
}

// run sends at pps until stop is closed.
func (s *udpStream) run(pps int, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	payload := make([]byte, 64)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			binary.BigEndian.PutUint32(payload, s.sent.Load())
			if _, err := s.send.Write(payload); err == nil {
				s.sent.Add(1)
			}
		}
	}
}

// missing lists the datagrams sent but not received (up to 10).
func (s *udpStream) missing() (int, []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ex []uint32
	n := 0
	for i := uint32(0); i < s.sent.Load(); i++ {
		if !s.got[i] {
			n++
			if len(ex) < 10 {
				ex = append(ex, i)
			}
		}
	}
	return n, ex
}

// ovsIPFlow finds OVS's IPv4 flow (pref 2) that redirects to dev.
func ovsIPFlow(dev string) func(map[string]tcShownFilter) (tcShownFilter, bool) {
	return func(fs map[string]tcShownFilter) (tcShownFilter, bool) {
		for _, f := range fs {
			if f.Pref == 2 && f.Chain == 0 && len(f.Actions) == 1 && strings.Contains(f.Actions[0], "redirect dev "+dev) {
				return f, true
			}
		}
		return tcShownFilter{}, false
	}
}

func ifindexIn(t *testing.T, ns *testutil.Netns, dev string) int {
	t.Helper()
	var idx int
	ns.Run(t, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			panic(err)
		}
		idx = ifi.Index
	})
	return idx
}

// One scenario, step by step: the steps share the bridge and the daemon.
// TestOVSBridgeSteadyTraffic: an Open vSwitch bridge with hw-offload on
// joins two hosts; its flows land in TC flower and xdpflow's daemon runs
// them in XDP. Steady traffic for 60 s: the flow runs in XDP (TC sees
// only the keepalive packets), OVS never evicts it (its revalidator
// deletes flows whose TC counters stay still for 10 s), the daemon killed
// with SIGKILL and restarted in the middle changes nothing, and no packet
// is lost. The reverse flow redirects into a veth whose peer has neither
// XDP nor GRO, which XDP cannot do without loss: it stays in TC, saying why.
func TestOVSBridgeSteadyTraffic(t *testing.T) {
	needOVS(t)
	sw, h1, h2 := testutil.NewNetns(t), testutil.NewNetns(t), testutil.NewNetns(t)
	for _, ns := range []*testutil.Netns{sw, h1, h2} {
		ns.MustExec(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	testutil.Veth(t, h1, "e1", sw, "p1")
	testutil.Veth(t, h2, "e2", sw, "p2")
	h1.MustExec(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "e1")
	h2.MustExec(t, "ip", "addr", "add", "198.18.0.2/24", "dev", "e2")
	// XDP redirects into p2 reach e2 only with NAPI there: GRO on. e1
	// keeps the veth default (GRO off), so p2 -> p1 cannot be offloaded.
	// The hosts' stacks finish their own checksums (TX offload off):
	// XDP cannot forward a packet whose checksum is left to the kernel.
	h2.MustExec(t, "ethtool", "-K", "e2", "gro", "on")
	h1.MustExec(t, "ethtool", "-K", "e1", "tx", "off")
	h2.MustExec(t, "ethtool", "-K", "e2", "tx", "off")
	mustXdpflow(t, sw, "enable", "dev", "p1")
	mustXdpflow(t, sw, "enable", "dev", "p2")
	d := startDaemon(t, sw)
	ovs := startOVS(t, sw)
	defer func() {
		if t.Failed() {
			t.Log(d.logText())
			t.Log(sw.MustExec(t, "tc", "-s", "filter", "show", "dev", "p1", "ingress"))
			log := ovs.log()
			t.Log(log[max(0, len(log)-4000):])
		}
	}()
	ovs.must(t, "ovs-vsctl", "add-br", "br0")
	ovs.must(t, "ovs-vsctl", "add-port", "br0", "p1", "--", "add-port", "br0", "p2")
	sw.MustExec(t, "ip", "link", "set", "br0", "up")

	// MAC learning, and the first flows: ping until it answers.
	waitFor(t, 60*time.Second, "ping through the OVS bridge", func() error {
		_, err := h1.Exec("ping", "-c", "1", "-W", "1", "198.18.0.2")
		return err
	}, func(err error) bool { return err == nil })

	// OVS's flows for IPv4 (pref 2): h1 -> h2 on p1, in XDP, and back.
	ipFlow, backFlow := ovsIPFlow("p2"), ovsIPFlow("p1")
	shown := func(dev string) func() map[string]tcShownFilter {
		return func() map[string]tcShownFilter { return tcShown(t, sw, dev) }
	}
	first, _ := ipFlow(waitFor(t, 30*time.Second, "OVS's p1 -> p2 flow in XDP", shown("p1"), func(fs map[string]tcShownFilter) bool {
		f, ok := ipFlow(fs)
		return ok && f.Offloaded
	}))

	// p2 -> p1 (the ping replies): e1 has neither XDP nor GRO. OVS ages
	// that flow out 10 s after the last reply, so look now.
	h1.MustExec(t, "ping", "-c", "3", "-i", "0.2", "198.18.0.2")
	back, _ := backFlow(waitFor(t, 20*time.Second, "OVS's p2 -> p1 flow mirrored", shown("p2"), func(fs map[string]tcShownFilter) bool {
		f, ok := backFlow(fs)
		return ok && (f.Offloaded || f.Punted)
	}))
	if back.Offloaded || !strings.Contains(back.Reason, "redirect to p1 would lose packets") {
		t.Errorf("p2 -> p1 into a veth whose peer has no NAPI: offloaded %v, punted %v, reason %q; want kept in TC, saying why",
			back.Offloaded, back.Punted, back.Reason)
	}

	deletes := tcDeletes(t, sw, ifindexIn(t, sw, "p1"), 2)
	stream := newUDPStream(t, h1, h2, net.ParseIP("198.18.0.2"), 9000)
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { defer close(sent); stream.run(200, stop) }()
	const duration = 60 * time.Second
	start := time.Now()
	killed := false
	for time.Since(start) < duration {
		time.Sleep(5 * time.Second)
		if !killed && time.Since(start) > 25*time.Second {
			// Killed under traffic, and restarted 3 s later: what is
			// pinned keeps forwarding, the new daemon reconciles.
			d.kill()
			time.Sleep(3 * time.Second)
			d = startDaemon(t, sw)
			killed = true
		}
	}
	close(stop)
	<-sent
	time.Sleep(time.Second) // the last datagrams on their way

	n := int(stream.sent.Load())
	if lost, ex := stream.missing(); lost > 0 {
		t.Errorf("%d of %d datagrams h1 -> h2 lost (first: %v)", lost, n, ex)
	}
	if n < 1000 {
		t.Errorf("only %d datagrams sent in %v", n, duration)
	}
	if k := deletes.Load(); k > 0 {
		t.Errorf("OVS deleted the p1 flow %d times under steady traffic (evicted as idle?)", k)
	}
	last, ok := ipFlow(tcShown(t, sw, "p1"))
	switch {
	case !ok:
		t.Fatalf("OVS's p1 -> p2 flow is gone after %v of steady traffic", duration)
	case last.Handle != first.Handle:
		t.Errorf("OVS's p1 -> p2 flow was replaced: handle %d, then %d", first.Handle, last.Handle)
	case !last.Offloaded:
		t.Errorf("OVS's p1 -> p2 flow is no longer in XDP: %s", last.Reason)
	}
	var inXDP, inTC uint64
	if last.Stats != nil {
		inXDP = last.Stats.Packets
	}
	if last.TCStats != nil {
		inTC = last.TCStats.Packets
	}
	t.Logf("%d datagrams in %v; OVS flow p1 -> p2: %d packets in XDP, %d in TC (keepalive); %d deletions",
		n, duration, inXDP, inTC, deletes.Load())
	if inXDP < uint64(n)*9/10 {
		t.Errorf("XDP handled %d of %d datagrams of an offloaded flow, want at least 90%%", inXDP, n)
	}
	if inXDP+inTC < uint64(n) {
		t.Errorf("XDP %d + TC %d packets < %d datagrams sent: a packet was not counted", inXDP, inTC, n)
	}
	// One keepalive per second and CPU (and the packets before the flow
	// was mirrored, and the pings).
	if limit := uint64(runtime.NumCPU()*int(time.Since(start)/time.Second+1) + 20); inTC > limit {
		t.Errorf("TC counted %d packets of an offloaded flow, want at most %d (keepalives)", inTC, limit)
	}
	if out := ovs.must(t, "ovs-appctl", "dpctl/dump-flows", "-m"); !strings.Contains(out, "in_port(p1)") || !strings.Contains(out, "dp:tc") {
		t.Errorf("OVS no longer holds an offloaded flow from p1:\n%s", out)
	}
}
