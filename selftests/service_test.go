package selftests

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// unitExecStart is the ExecStart line of packaging/xdpflow.service, with
// the binary the tests run in place of the installed one.
func unitExecStart(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../packaging/xdpflow.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			f := strings.Fields(v)
			if f[0] != "/usr/sbin/xdpflow" {
				t.Fatalf("ExecStart runs %s, not /usr/sbin/xdpflow (make install's)", f[0])
			}
			return append([]string{xdpflowBin}, f[1:]...)
		}
	}
	t.Fatal("the unit has no ExecStart")
	return nil
}

// verifyUnit: systemd-analyze verify passes the unit, copied into dir
// with the xdpflow under test in place of make install's.
func verifyUnit(t *testing.T, dir string) {
	t.Helper()
	unit, err := os.ReadFile("../packaging/xdpflow.service")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(xdpflowBin)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "xdpflow.service")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(unit), "/usr/sbin/xdpflow", abs)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", local).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v: %s", err, out)
	}
}

// TestSystemdUnit: the unit passes systemd-analyze verify, and the daemon
// started as its ExecStart line starts it, with a NOTIFY_SOCKET of the
// test's, says READY=1 once its first sync is in, RELOADING=1 and READY=1
// again on SIGHUP (ExecReload), STOPPING=1 on SIGTERM, and exits 0.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("SKIPPED: no systemd-analyze to verify the unit with (apt-get install systemd)")
	}
	dir := t.TempDir()
	verifyUnit(t, dir)

	tp := newNftTopo(t)
	sockPath := filepath.Join(dir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	states := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				close(states)
				return
			}
			states <- string(buf[:n])
		}
	}()
	wait := func(want string) string {
		t.Helper()
		select {
		case s := <-states:
			if !strings.Contains(s, want) {
				t.Fatalf("notified %q, want %s", s, want)
			}
			return s
		case <-time.After(15 * time.Second):
			t.Fatalf("no %s notification", want)
		}
		return ""
	}
	argv := unitExecStart(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", tp.b.Name}, argv...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	// A file the daemon writes itself: what it logged before it said
	// READY is there when READY arrives.
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	logText := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if s := wait("READY=1"); !strings.Contains(s, "STATUS=running on 1 device(s)") {
		t.Errorf("READY without the status: %q", s)
	}
	if !strings.Contains(logText(), "running on 1 device(s)") {
		t.Errorf("READY before the first sync was in:\n%s", logText())
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait("RELOADING=1")
	wait("READY=1")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the daemon on SIGTERM: %v\n%s", err, logText())
	}
	if !strings.Contains(logText(), "stopping") {
		t.Errorf("no stopping line:\n%s", logText())
	}
}

// TestDaemonMetrics: the daemon's Prometheus endpoint, scraped: the
// program's counters per device (packets really dropped in XDP counted),
// the rules by source and state, the syncs' durations and time.
// newDropTopo is newNftTopo with an nft chain on b0 that counts and drops
// UDP to port 9999, and lo up (for a daemon's metrics).
func newDropTopo(t *testing.T) *nftTopo {
	t.Helper()
	tp := newNftTopo(t)
	const ruleset = `table netdev xf {
	chain in { type filter hook ingress device "b0" priority 0; policy accept;
		udp dport 9999 counter drop
	}
}`
	if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	tp.b.MustExec(t, "ip", "link", "set", "lo", "up")
	return tp
}

func TestDaemonMetrics(t *testing.T) {
	tp := newDropTopo(t)
	d := startDaemon(t, tp.b, "--metrics", "127.0.0.1:9560")
	d.logOnFailure(t)
	d.waitRunning(t)
	frames, markers := udpFrames(tp.a0MAC, 9999, "XFMETRICS", 20)
	if got := tp.fates(t, frames, markers); count(got, "drop") != len(frames) {
		t.Fatalf("%d of %d frames dropped", count(got, "drop"), len(frames))
	}
	body := scrape(t, tp.b, "127.0.0.1:9560")
	value := func(series string) float64 {
		t.Helper()
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		t.Fatalf("no series %s in:\n%s", series, body)
		return 0
	}
	if v := value(`xdpflow_packets_total{dev="b0",outcome="drop"}`); v < float64(len(frames)) {
		t.Errorf("drop counter %v, want at least %d", v, len(frames))
	}
	if v := value(`xdpflow_rules{dev="b0",source="nft",state="offloaded"}`); v != 1 {
		t.Errorf("offloaded nft rules %v, want 1", v)
	}
	if v := value(`xdpflow_last_sync_timestamp_seconds`); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("last sync %v", v)
	}
	if !strings.Contains(body, `xdpflow_sync_duration_seconds_bucket{dev="b0",source="nft"`) {
		t.Errorf("no nft sync durations:\n%s", body)
	}
}

// scrape reads the metrics a daemon in ns serves at addr.
func scrape(t *testing.T, ns *testutil.Netns, addr string) string {
	t.Helper()
	var body string
	ns.Run(t, func() {
		// Dialled here, on this locked thread in the namespace (an
		// http.Client dials from goroutines of its own).
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Errorf("scrape: %v", err)
			return
		}
		defer c.Close()
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		if err := req.Write(c); err != nil {
			t.Errorf("scrape: %v", err)
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Errorf("scrape: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	})
	return body
}
