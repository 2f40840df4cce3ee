package selftests

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestDaemonInstanceAndHealth: one daemon per network namespace (a second
// is refused, naming the first's pid); status reports it, its last sync
// and last error, and says when none runs; SIGHUP reads everything again
// instead of killing it.
func TestDaemonInstanceAndHealth(t *testing.T) {
	tp := newNftTopo(t)
	if out := mustXdpflow(t, tp.b, "status"); !strings.Contains(out, "daemon: not running") {
		t.Fatalf("status without a daemon: %s", out)
	}
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	d.waitRunning(t)
	out, err := tp.b.Exec(xdpflowBin, "daemon")
	if err == nil || !strings.Contains(out, "another xdpflow daemon (pid") {
		t.Fatalf("a second daemon in the namespace: %v: %s", err, out)
	}
	var st []struct {
		Daemon *struct {
			PID      int       `json:"pid"`
			LastSync time.Time `json:"last_sync"`
		} `json:"daemon"`
	}
	if err := jsonUnmarshal(mustXdpflow(t, tp.b, "-j", "status"), &st); err != nil || len(st) != 1 || st[0].Daemon == nil {
		t.Fatalf("status -j with a daemon: %v %+v", err, st)
	}
	if st[0].Daemon.PID != d.cmd.Process.Pid || st[0].Daemon.LastSync.IsZero() {
		t.Fatalf("status says daemon pid %d last sync %v; it is pid %d", st[0].Daemon.PID, st[0].Daemon.LastSync, d.cmd.Process.Pid)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the daemon reading everything again on SIGHUP", d.logText,
		func(s string) bool { return strings.Contains(s, "(hup)") })
	if d.cmd.ProcessState != nil {
		t.Fatal("the daemon exited on SIGHUP")
	}
	if out := mustXdpflow(t, tp.b, "status"); !strings.Contains(out, "daemon: pid ") {
		t.Fatalf("status after SIGHUP: %s", out)
	}
}

// TestEnableAgainWithOtherSizes: enable on an enabled device with sizes
// other than it has is refused, naming them (it used to succeed and
// ignore them); with the same sizes, or none, it is a no-op. status
// reports the cache size enable was given.
func TestEnableAgainWithOtherSizes(t *testing.T) {
	tp := newNftTopo(t)
	mustXdpflow(t, tp.b, "disable", "dev", "b0")
	mustXdpflow(t, tp.b, "enable", "dev", "b0", "flows", "4096", "cache", "1024")
	out, err := tp.b.Exec(xdpflowBin, "enable", "dev", "b0", "flows", "8192")
	if err == nil || !strings.Contains(out, "flows 4096 (asked 8192)") {
		t.Fatalf("enable again with other flows: %v: %s", err, out)
	}
	for _, args := range [][]string{{"enable", "dev", "b0"}, {"enable", "dev", "b0", "flows", "4096", "cache", "1024"}} {
		if out := mustXdpflow(t, tp.b, args...); !strings.Contains(out, "already enabled") {
			t.Fatalf("%v: %s", args, out)
		}
	}
	var st []struct {
		CacheEntries int `json:"cache_entries_per_cpu"`
	}
	if err := jsonUnmarshal(mustXdpflow(t, tp.b, "-j", "status"), &st); err != nil || len(st) != 1 || st[0].CacheEntries != 1024 {
		t.Fatalf("status of a device enabled with cache 1024 and no rules: %v %+v", err, st)
	}
}

// TestNetnsAndPrettyOptions: -n NETNS runs the command in a named network
// namespace, as ip -n does (it used to need ip netns exec or nsenter), and
// -p prints JSON indented.
func TestNetnsAndPrettyOptions(t *testing.T) {
	ns := testutil.NewNetns(t)
	peer := testutil.NewNetns(t)
	testutil.Veth(t, ns, "n0", peer, "n1")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(xdpflowBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("xdpflow %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	run("-n", ns.Name, "enable", "dev", "n0")
	out := run("-n", ns.Name, "-p", "status")
	if !strings.Contains(out, "\n  {\n    \"dev\": \"n0\"") {
		t.Fatalf("-n %s -p status: %s", ns.Name, out)
	}
	if out := mustXdpflow(t, ns, "status"); !strings.Contains(out, "n0 (ifindex") {
		t.Fatalf("status inside the namespace after -n enable: %s", out)
	}
	run("-n", ns.Name, "disable", "dev", "n0")
	if out, err := exec.Command(xdpflowBin, "-n", "xf-no-such-netns", "status").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "ip netns list") {
		t.Fatalf("-n of a namespace that does not exist: %v: %s", err, out)
	}
}
