package daemon

import (
	"fmt"
	"net"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// BenchmarkTCNotification10K: the daemon's whole part of a TC change, on
// this machine's real CPU (its kernel has no cls_flower, so no real
// notification comes): an RTM_NEWTFILTER (then RTM_DELTFILTER) as the
// kernel sends it, of one filter next to 10,000 of one pref on an enabled
// veth, from the daemon's batch taking it (tcBatch.add: decode, tag) to
// the change being live in XDP (flush: mirror, table). What it leaves out
// is the kernel's side: building the notification and waking the daemon.
// The new filters redirect (to a veth whose peer has GRO), so the forward
// check is in it once, as for Open vSwitch's first flow to a port.
func BenchmarkTCNotification10K(b *testing.B) {
	testutil.RequireRoot(b)
	ns := testutil.NewNetns(b)
	peer := testutil.NewNetns(b)
	testutil.Veth(b, ns, "b0", peer, "a0")
	testutil.Veth(b, ns, "b2", peer, "d0")
	peer.MustExec(b, "ethtool", "-K", "d0", "gro", "on")
	opts := loader.DefaultOptions
	opts.MaxFlows, opts.MaxRules = 65536, 32768+1 // slot 0 is never a rule
	ns.Run(b, func() {
		enable(b, "b0", opts, func(loader.Paths) {
			d := syncedDaemon(b)
			ifindex := 0
			for i, dev := range d.ifindexes {
				if dev == "b0" {
					ifindex = i
				}
			}
			var base []netlink.Message
			for i := 0; i < 10000; i++ {
				base = append(base, tcFilterMsg(b, ifindex, unix.RTM_NEWTFILTER, i, "drop"))
			}
			batch := &tcBatch{d: d}
			batch.add(base)
			batch.flush()
			// Rules in the table (only TC's here), counted without the
			// garbage of listing them.
			tcRules := func() int { return d.open["b0"].table.Sizes().Rules }
			if n := tcRules(); n != 10000 {
				b.Fatalf("%d filters in XDP after the first 10,000 notifications", n)
			}
			var adds, dels []time.Duration
			defer debug.SetGCPercent(debug.SetGCPercent(400)) // as the daemon runs
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				action := "mirred egress redirect dev b2"
				add := tcFilterMsg(b, ifindex, unix.RTM_NEWTFILTER, 10000+i, action)
				del := tcFilterMsg(b, ifindex, unix.RTM_DELTFILTER, 10000+i, action)
				t0 := time.Now()
				batch.add([]netlink.Message{add})
				batch.flush()
				t1 := time.Now()
				if n := tcRules(); n != 10001 {
					b.Fatalf("%d filters in XDP after an add, want 10,001", n)
				}
				t2 := time.Now()
				batch.add([]netlink.Message{del})
				batch.flush()
				adds, dels = append(adds, t1.Sub(t0)), append(dels, time.Since(t2))
				if n := tcRules(); n != 10000 {
					b.Fatalf("%d filters in XDP after a delete, want 10,000", n)
				}
			}
			b.StopTimer()
			if off := d.tcMirror[ifindex].set.Offloaded(); off != 10000 {
				b.Fatalf("%d of 10,000 filters offloaded", off)
			}
			reportLatencies(b, "add", adds)
			reportLatencies(b, "del", dels)
		})
	})
}

// tcFilterMsg is the notification of type typ (RTM_NEWTFILTER or
// RTM_DELTFILTER) the kernel sends for filter i of pref 2 on b0 (ifindex):
// UDP to a destination of its own, then action.
func tcFilterMsg(b *testing.B, ifindex int, typ netlink.HeaderType, i int, action string) netlink.Message {
	text := fmt.Sprintf("pref 2 handle 0x%x protocol ip flower dst_ip 198.18.%d.%d ip_proto udp dst_port %d action %s",
		1+i, i>>8&0xff, i&0xff, 1000+i%7, action)
	r, err := ruletext.Parse("b0", text)
	if err != nil {
		b.Fatal(err)
	}
	for j := range r.Actions {
		if r.Actions[j].Kind == rule.ActRedirect {
			ifi, err := net.InterfaceByName(r.Actions[j].Dev)
			if err != nil {
				b.Fatal(err)
			}
			r.Actions[j].Ifindex = ifi.Index
		}
	}
	data, err := flower.FilterMessage(ifindex, r)
	if err != nil {
		b.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Create}, Data: data}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// reportLatencies reports the p50, p90, p99 and maximum of d (sorted in
// place) as what's metrics.
func reportLatencies(b *testing.B, what string, d []time.Duration) {
	slices.Sort(d)
	b.ReportMetric(ms(d[len(d)/2]), what+"-p50-ms")
	b.ReportMetric(ms(d[len(d)*9/10]), what+"-p90-ms")
	b.ReportMetric(ms(d[len(d)*99/100]), what+"-p99-ms")
	b.ReportMetric(ms(d[len(d)-1]), what+"-max-ms")
}
