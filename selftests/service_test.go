package selftests

import (
	"strings"
	"syscall"
	"testing"
	"time"
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
