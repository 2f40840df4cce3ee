package selftests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// daemonProc is `xdpflow daemon` running in a namespace.
type daemonProc struct {
	cmd *exec.Cmd
	log *os.File
}

func startDaemon(t *testing.T, ns *testutil.Netns, args ...string) *daemonProc {
	t.Helper()
	return startDaemonCmd(t, ns, append([]string{xdpflowBin, "daemon"}, args...))
}

// startDaemonOnCPU runs the daemon on one CPU only (taskset).
func startDaemonOnCPU(t *testing.T, ns *testutil.Netns, cpu int, args ...string) *daemonProc {
	t.Helper()
	return startDaemonCmd(t, ns, append([]string{"taskset", "-c", fmt.Sprint(cpu), xdpflowBin, "daemon"}, args...))
}

func startDaemonCmd(t *testing.T, ns *testutil.Netns, argv []string) *daemonProc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	d := &daemonProc{cmd: cmd, log: logf}
	t.Cleanup(func() { d.kill() })
	return d
}

// kill is SIGKILL: no chance to clean anything up.
func (d *daemonProc) kill() {
	if d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
	}
}

// waitRunning waits for the daemon's first sync to be over: from then on
// it follows the kernel's notifications.
func (d *daemonProc) waitRunning(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "the daemon's first sync", d.logText,
		func(s string) bool { return strings.Contains(s, "running on ") })
}

// logOnFailure prints the daemon's log at the end of a test that failed.
func (d *daemonProc) logOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(d.logText())
		}
	})
}

// loadChain replaces B's nft ruleset with table netdev xf, chain in on
// b0, holding rules.
func (tp *nftTopo) loadChain(t *testing.T, rules ...string) {
	t.Helper()
	rs := "table netdev xf {\n  chain in {\n    type filter hook ingress device b0 priority 0; policy accept;\n"
	for _, r := range rules {
		rs += "    " + r + "\n"
	}
	if _, err := tp.b.ExecStdin("flush ruleset\n"+rs+"  }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// dropFrom3 is the one-rule chain of the latency and rename tests.
const dropFrom3 = "ip saddr 198.18.3.3 counter drop"

func (d *daemonProc) logText() string {
	b, _ := os.ReadFile(d.log.Name())
	return string(b)
}

// waitFlows polls `flow show` until ok holds.
func waitFlows(t *testing.T, ns *testutil.Netns, what string, ok func([]jsonFlow) bool) []jsonFlow {
	t.Helper()
	return waitFor(t, 5*time.Second, what, func() []jsonFlow { return flows(t, ns, "b0") }, ok)
}

// waitFor polls get until ok holds, failing the test after limit.
func waitFor[T any](t *testing.T, limit time.Duration, what string, get func() T, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v := get()
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; have: %+v", what, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nftFlows(fs []jsonFlow) map[string]jsonFlow {
	out := map[string]jsonFlow{}
	for _, f := range fs {
		if f.Source == "nft" {
			out[f.Name] = f
		}
	}
	return out
}

// allInstalled: every nft rule is in XDP or deliberately not, none is
// waiting for the daemon and none is stale.
func allInstalled(fs []jsonFlow) bool {
	for _, f := range fs {
		if f.Source == "nft" && (strings.Contains(f.Reason, "not installed yet") || strings.Contains(f.Reason, "stale")) {
			return false
		}
	}
	return true
}

func nftHandle(t *testing.T, ns *testutil.Netns, chain, match string) string {
	t.Helper()
	out := ns.MustExec(t, "nft", "-a", "list", "chain", "netdev", "xf", chain)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, match) {
			if i := strings.Index(line, "# handle "); i >= 0 {
				return strings.TrimSpace(line[i+len("# handle "):])
			}
		}
	}
	t.Fatalf("no rule %q in chain %s:\n%s", match, chain, out)
	return ""
}

// srcFrames: one UDP frame per source address, marked with it.
func (tp *nftTopo) srcFrames(tag string, srcs ...string) ([][]byte, []string) {
	var frames [][]byte
	var markers []string
	for _, s := range srcs {
		m := fmt.Sprintf("XFD-%s-%s", tag, s)
		markers = append(markers, m)
		frames = append(frames, testutil.Eth(net.HardwareAddr{2, 0xee, 0, 0, 0, 9}, tp.a0MAC, nil, 0x0800,
			testutil.IPv4(net.ParseIP(s), net.ParseIP("198.18.1.2"), 17, testutil.IPv4Opts{}, testutil.UDP(4000, 53, []byte(m)))))
	}
	return frames, markers
}

func (tp *nftTopo) expectFates(t *testing.T, tag string, want map[string]string) {
	t.Helper()
	var srcs []string
	for s := range want {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	frames, markers := tp.srcFrames(tag, srcs...)
	got := tp.fates(t, frames, markers)
	for i, s := range srcs {
		if got[i] != want[s] {
			t.Errorf("%s: frame from %s: %s, want %s", tag, s, got[i], want[s])
		}
	}
}

// pinnedGeneration reads dev's pinned cache generation, which a change
// bumps once its flows are written: the moment it is live in XDP. The
// reader panics on error, so it also serves inside Netns.Run.
func pinnedGeneration(t *testing.T, ns *testutil.Netns, dev string) func() uint32 {
	t.Helper()
	gen, err := ebpf.LoadPinnedMap(filepath.Join("/sys/fs/bpf/xdpflow", fmt.Sprint(ns.Ino), dev, "cache_gen"), nil)
	if err != nil {
		t.Fatalf("open pinned cache_gen: %v", err)
	}
	t.Cleanup(func() { gen.Close() })
	return func() uint32 {
		var v uint32
		if err := gen.Lookup(uint32(0), &v); err != nil {
			panic(fmt.Sprintf("read cache_gen: %v", err))
		}
		return v
	}
}

// waitGeneration polls until the generation differs from g0; false after
// limit from t0.
func waitGeneration(read func() uint32, g0 uint32, t0 time.Time, limit time.Duration) bool {
	for read() == g0 {
		// Poll without spinning: on 2 CPUs a busy loop would hold the CPU
		// the daemon needs for a scheduler tick. Not time.Sleep: with
		// nothing else to run, Go parks in epoll_wait, whose timeout is
		// whole milliseconds, so a 20 µs sleep lasts ~1 ms and the figure
		// with it.
		_ = unix.Nanosleep(&unix.Timespec{Nsec: 20_000}, nil)
		if time.Since(t0) > limit {
			return false
		}
	}
	return true
}

// percentiles summarises latencies (sorting them).
func percentiles(lat []time.Duration) string {
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, max %v", p(0.5), p(0.9), p(0.99), lat[len(lat)-1])
}
