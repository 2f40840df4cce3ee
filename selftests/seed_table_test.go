package selftests

import (
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/internal/trafficgen"
)

// TestOVSSeedTable: the xdp_flow RFC's table, as ratios in one run. One
// flow comes in on b0 and is redirected out of b2, whose veth peer c2
// drops it (XDP_DROP), through software TC flower alone (mirred egress
// redirect), through xdpflow (the same filter, mirrored into XDP), and
// through Open vSwitch's kernel datapath without hw-offload (in_port=b0,
// output:b2). Each rate is the frames c2 dropped per second, paired round
// by round with bare XDP_DROP on b1. The VM's software emulation distorts
// absolute rates: it logs them and their ratios, and fails only where a
// path moves no frames or xdpflow's does not run in XDP.
func TestOVSSeedTable(t *testing.T) {
	needOVS(t)
	r := newRateRig(t)
	testutil.Veth(t, r.b, "b2", r.b, "c2")
	r.b.MustExec(t, "ip", "link", "set", "b0", "promisc", "on")
	// a0's stack sends finished checksums, which forwarding in XDP needs.
	r.a.MustExec(t, "ethtool", "-K", "a0", "tx", "off")
	t.Cleanup(r.attachXDP(t, "c2", bareDrop))
	drops := func() uint64 { return r.vethXDPDrops(t, "c2") }
	one := func(name string) float64 {
		rate, bare, ratio := medians(r.rate(t, 500*time.Millisecond, 5, rateCase{name: name, spread: trafficgen.Spread{}}, drops))
		if rate == 0 {
			t.Fatalf("%s: no frame reached c2", name)
		}
		t.Logf("%-30s %7.3f Mpps  bare %7.3f  %.2f x bare", name, rate/1e6, bare/1e6, ratio)
		return ratio
	}
	redirect := "protocol ip pref 1 flower ip_proto udp dst_port 9 action mirred egress redirect dev b2"
	r.b.MustExec(t, "tc", "qdisc", "add", "dev", "b0", "clsact")
	r.b.MustExec(t, append([]string{"tc", "filter", "add", "dev", "b0", "ingress"}, strings.Fields(redirect)...)...)
	tc := one("TC flower (software)")

	mustXdpflow(t, r.b, "enable", "dev", "b0")
	mustXdpflow(t, r.b, "daemon", "--once")
	before := xdpflowCounters(t, r.b)
	xdp := one("xdpflow")
	after := xdpflowCounters(t, r.b)
	if n := after["redirect"] - before["redirect"]; n == 0 {
		t.Fatalf("xdpflow redirected no frame in XDP: %s", mustXdpflow(t, r.b, "flow", "show", "dev", "b0"))
	}
	mustXdpflow(t, r.b, "disable", "dev", "b0")
	r.b.MustExec(t, "tc", "qdisc", "del", "dev", "b0", "clsact")

	ovs := startOVSWith(t, r.b, false)
	ovs.must(t, "ovs-vsctl", "add-br", "br0", "--", "add-port", "br0", "b0", "--", "add-port", "br0", "b2")
	ovs.must(t, "ovs-ofctl", "del-flows", "br0")
	ovs.must(t, "ovs-ofctl", "add-flow", "br0", "in_port=b0,actions=output:b2")
	kernel := one("Open vSwitch kernel datapath")
	if flows := ovs.must(t, "ovs-appctl", "dpctl/dump-flows"); !strings.Contains(flows, "in_port") {
		t.Fatalf("no datapath flow: %q", flows)
	}
	t.Logf("xdpflow / TC flower %.1f, xdpflow / Open vSwitch %.1f (the RFC: 5.2 / 1.2 / 1.1 Mpps, 4.3 and 4.7)",
		xdp/tc, xdp/kernel)
}
