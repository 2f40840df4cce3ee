package selftests

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// notifier sends RTNLGRP_TC notifications as the kernel would, from a
// process: root may send to a netlink multicast group, and every socket
// in the group (the daemon's) receives the message as it receives the
// kernel's. Without NLM_F_REQUEST the kernel itself ignores the copy
// addressed to it. This machine's kernel has no cls_flower, so no real
// flower notification comes; this is how the daemon's whole path runs on
// its real CPU.
type notifier struct {
	fd  int
	seq uint32
}

func newNotifier(t *testing.T, ns *testutil.Netns) *notifier {
	n := &notifier{}
	ns.Run(t, func() {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			panic(err)
		}
		n.fd = fd
	})
	t.Cleanup(func() { unix.Close(n.fd) })
	return n
}

// send notifies RTM_NEWTFILTER (or RTM_DELTFILTER) of r on ifindex.
func (n *notifier) send(t *testing.T, typ uint16, ifindex int, r *rule.Rule) {
	t.Helper()
	body, err := flower.FilterMessage(ifindex, r)
	if err != nil {
		t.Fatal(err)
	}
	n.seq++
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	flags := uint16(0)
	if typ == unix.RTM_NEWTFILTER {
		flags = unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], n.seq)
	msg = append(msg, body...)
	to := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_TC - 1)}
	if err := unix.Sendto(n.fd, msg, 0, to); err != nil {
		t.Fatalf("notify RTNLGRP_TC: %v", err)
	}
}

// tableRules is `status`'s rule count of dev.
func tableRules(t *testing.T, ns *testutil.Netns, dev string) int {
	t.Helper()
	var st []struct {
		Dev   string `json:"dev"`
		Rules int    `json:"rules"`
	}
	out := mustXdpflow(t, ns, "-j", "status")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -j: %v\n%s", err, out)
	}
	for _, s := range st {
		if s.Dev == dev {
			return s.Rules
		}
	}
	t.Fatalf("status shows no %s:\n%s", dev, out)
	return 0
}

// TestTCNotificationToXDPLatency measures, on this machine's real CPU,
// the time from a flower filter's notification being sent (RTNLGRP_TC,
// see notifier) to the change being live in XDP (the pinned cache
// generation moves), with a running daemon and 10,000 filters of one pref
// next to the one that changes; each add redirects (Open vSwitch's flows
// do). What it leaves out is the kernel's part before the notification:
// cls_flower taking the filter. It logs the figures (README); the test
// is that every change goes live and the table ends as it began.
func TestTCNotificationToXDPLatency(t *testing.T) {
	ns, peer := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, ns, "b0", peer, "a0")
	testutil.Veth(t, ns, "b2", peer, "d0")
	peer.MustExec(t, "ethtool", "-K", "d0", "gro", "on")
	mustXdpflow(t, ns, "enable", "dev", "b0", "flows", "65536", "rules", "32768")
	var b0, b2 int
	ns.Run(t, func() {
		for name, p := range map[string]*int{"b0": &b0, "b2": &b2} {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				panic(err)
			}
			*p = ifi.Index
		}
	})
	d := startDaemon(t, ns)
	d.logOnFailure(t)
	d.waitRunning(t)
	n := newNotifier(t, ns)
	filter := func(i int, action string) *rule.Rule {
		r, err := ruletext.Parse("b0", fmt.Sprintf(
			"pref 2 handle 0x%x protocol ip flower dst_ip 198.18.%d.%d ip_proto udp dst_port %d action %s",
			1+i, i>>8&0xff, i&0xff, 1000+i%7, action))
		if err != nil {
			t.Fatal(err)
		}
		for j := range r.Actions {
			if r.Actions[j].Kind == rule.ActRedirect {
				r.Actions[j].Ifindex = b2
			}
		}
		return r
	}
	// The 10,000 in one burst, as Open vSwitch installs flows: the
	// daemon's socket must hold them (a lost notification would make it
	// read the kernel's filters, which has none of these, and the check
	// of its log below fails).
	readGen := pinnedGeneration(t, ns, "b0")
	for i := 0; i < 10000; i++ {
		n.send(t, unix.RTM_NEWTFILTER, b0, filter(i, "drop"))
	}
	waitFor(t, 20*time.Second, "10,000 notified filters in XDP", func() int { return tableRules(t, ns, "b0") },
		func(n int) bool { return n == 10000 })

	var adds, dels []time.Duration
	for i := 0; i < 200; i++ {
		for _, typ := range []uint16{unix.RTM_NEWTFILTER, unix.RTM_DELTFILTER} {
			g0 := readGen()
			t0 := time.Now()
			n.send(t, typ, b0, filter(10000+i, "mirred egress redirect dev b2"))
			if !waitGeneration(readGen, g0, t0, 5*time.Second) {
				t.Fatalf("notification %d (type %d) not live in XDP after 5 s", i, typ)
			}
			if typ == unix.RTM_NEWTFILTER {
				adds = append(adds, time.Since(t0))
			} else {
				dels = append(dels, time.Since(t0))
			}
		}
	}
	if got := tableRules(t, ns, "b0"); got != 10000 {
		t.Fatalf("%d rules in XDP after 200 adds and deletes, want 10,000", got)
	}
	if log := d.logText(); strings.Contains(log, "(devices)") || strings.Contains(log, "tc (tc)") {
		t.Fatalf("the daemon read the kernel's filters again (a lost notification?): the figures are not of the incremental path\n%s", log)
	}
	t.Logf("notification -> live in XDP, next to 10,000 filters: adds (%d) %s", len(adds), percentiles(adds))
	t.Logf("notification -> live in XDP, next to 10,000 filters: deletes (%d) %s", len(dels), percentiles(dels))
}
