package selftests

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// batchDevice is a0 <-> b0 in namespaces of their own, xdpflow enabled on b0.
func batchDevice(t *testing.T) *testutil.Netns {
	t.Helper()
	a, b := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, a, "a0", b, "b0")
	mustXdpflow(t, b, "enable", "dev", "b0")
	return b
}

// writeBatch writes lines to a batch file.
func writeBatch(t *testing.T, lines []string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// randomFilterCommand is a filter command on b0, drawn so that many of them
// meet: few prefs and handles, prefs and handles given and left to tc,
// protocols that clash in one pref, replaces and changes of what is and is
// not there, deletes of a handle, a pref, a protocol and everything.
func randomFilterCommand(rnd *rand.Rand) string {
	pick := func(s ...string) string { return s[rnd.Intn(len(s))] }
	// Mostly a pref's own protocol, sometimes one that clashes.
	prefs := []string{"ip", "ip", "ipv6", "all", "ip"}
	p := rnd.Intn(len(prefs) + 1) // len(prefs): none given
	proto := pick("ip", "ipv6", "all")
	if p < len(prefs) && rnd.Intn(5) > 0 {
		proto = prefs[p]
	}
	c := "filter %s dev b0 ingress"
	if p < len(prefs) {
		c += fmt.Sprintf(" pref %d", 40+p)
	}
	if rnd.Intn(4) == 0 {
		c = fmt.Sprintf(c, "del")
		if p < len(prefs) && rnd.Intn(3) > 0 {
			c += fmt.Sprintf(" handle %d", 1+rnd.Intn(3))
		}
		if rnd.Intn(4) == 0 {
			c += " protocol " + pick("ip", "ipv6", "all")
		}
		return c
	}
	verb := pick("add", "add", "add", "add", "replace", "change")
	c = fmt.Sprintf(c, verb)
	if verb != "add" || rnd.Intn(3) == 0 {
		c += fmt.Sprintf(" handle %d", 1+rnd.Intn(3))
	}
	c += " protocol " + proto + " flower"
	if rnd.Intn(3) > 0 {
		c += " skip_sw"
	}
	switch proto {
	case "ip":
		c += pick(fmt.Sprintf(" dst_ip 198.18.%d.%d", rnd.Intn(2), rnd.Intn(16)),
			fmt.Sprintf(" ip_proto udp dst_port %d", 5000+rnd.Intn(16)), " ip_proto tcp")
	case "ipv6":
		c += fmt.Sprintf(" dst_ip 2001:db8::%x", rnd.Intn(16))
	default:
		c += fmt.Sprintf(" dst_mac 02:00:00:00:00:%02x", rnd.Intn(16))
	}
	return c + " action " + pick("drop", "pass")
}

var batchLineRE = regexp.MustCompile(`batch [^ ]+:(\d+): (.*)$`)

// TestBatchAsCommands runs filter commands one process each on one
// device, and as one `-force -b` batch on another: the batch ends where the
// commands did (every filter, in TC and XDP, with its pref, handle, keys
// and actions; every rule in lookup order), and fails the same commands
// with the same errors. First commands whose outcome depends on those
// before them in the batch, then random ones on top.
func TestBatchAsCommands(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewSource(seed))
	one, all := batchDevice(t), batchDevice(t)
	sameEnd(t, one, all, []string{
		"filter add dev b0 ingress pref 40 protocol ip flower skip_sw dst_ip 198.18.9.1 action drop",
		"filter add dev b0 ingress pref 40 protocol ip flower skip_sw dst_ip 198.18.9.2 action drop",
		"filter del dev b0 ingress pref 40 handle 1",
		"filter add dev b0 ingress pref 40 protocol ip flower skip_sw dst_ip 198.18.9.3 action drop", // handle 1 again
		"filter replace dev b0 ingress pref 40 handle 1 protocol ip flower skip_sw dst_ip 198.18.9.2 action pass",
		"filter replace dev b0 ingress pref 40 handle 1 protocol ip flower skip_sw dst_ip 198.18.9.4 action pass",
		"filter add dev b0 ingress pref 40 protocol ipv6 flower skip_sw dst_ip 2001:db8::99 action drop",
		"filter add dev b0 ingress protocol ipv6 flower skip_sw dst_ip 2001:db8::99 action drop", // pref 39
		"filter del dev b0 ingress pref 39",
		"filter add dev b0 ingress protocol ipv6 flower dst_ip 2001:db8::99 action drop", // 39 again
		"filter add dev b0 ingress protocol ipv6 flower dst_ip 2001:db8::98 action drop",
		// A pref from XDP-only to TC and back (where the kernel has
		// cls_flower: the table must lose the one before it takes the other).
		"filter add dev b0 ingress pref 45 protocol ip flower skip_sw dst_ip 198.18.7.7 action drop",
		"filter del dev b0 ingress pref 45",
		"filter add dev b0 ingress pref 45 protocol ip flower dst_ip 198.18.7.7 action drop",
		"filter del dev b0 ingress pref 45",
		"filter add dev b0 ingress pref 45 protocol ip flower skip_sw dst_ip 198.18.7.7 action pass",
	})
	var cmds []string
	for range 200 {
		cmds = append(cmds, randomFilterCommand(rnd))
	}
	sameEnd(t, one, all, cmds)
}

// sameEnd runs cmds one process each in one, and as a batch in all, and
// compares.
func sameEnd(t *testing.T, one, all *testutil.Netns, cmds []string) {
	t.Helper()
	failed := map[int]string{}
	for i, c := range cmds {
		out, err := xdpflow(one, strings.Fields(c)...)
		if err != nil {
			msg := strings.TrimSpace(out)
			msg = msg[strings.LastIndex(msg, "xdpflow: ")+len("xdpflow: "):]
			failed[i+1] = msg
		}
	}
	out, err := xdpflow(all, "-force", "-b", writeBatch(t, cmds))
	if len(failed) > 0 && err == nil {
		t.Errorf("-force -b: rc 0, with %d commands that fail on their own", len(failed))
	}
	batchFailed := map[int]string{}
	for _, l := range strings.Split(out, "\n") {
		if m := batchLineRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			batchFailed[n] = m[2]
		}
	}
	var lines []int
	for n := range failed {
		lines = append(lines, n)
	}
	for n := range batchFailed {
		if _, ok := failed[n]; !ok {
			lines = append(lines, n)
		}
	}
	sort.Ints(lines)
	for _, n := range lines {
		if failed[n] != batchFailed[n] {
			t.Errorf("line %d: %s\n\talone: %q\n\tbatch: %q", n, cmds[n-1], failed[n], batchFailed[n])
		}
	}
	t.Logf("%d of %d commands failed alone", len(failed), len(cmds))
	for _, show := range [][]string{{"-j", "filter", "show", "dev", "b0", "ingress"}, {"-j", "flow", "show", "dev", "b0"}} {
		a, b := mustXdpflow(t, one, show...), mustXdpflow(t, all, show...)
		if a != b {
			t.Errorf("%s: the commands left\n%s\nthe batch\n%s", strings.Join(show, " "), a, b)
		}
	}
	if t.Failed() {
		t.Fatalf("commands:\n%s", strings.Join(cmds, "\n"))
	}
}

// TestBatch10000Filters puts 10,000 filters in with one batch: each is in
// XDP and drops its packets; one failing line, at the end, leaves none.
func TestBatch10000Filters(t *testing.T) {
	tp := newTopo(t)
	mustXdpflow(t, tp.b, "enable", "dev", "b0")
	lines := []string{"# ClassBench-sized, one pref", ""}
	for port := 1; port <= 10000; port++ {
		l := fmt.Sprintf("filter add dev b0 ingress pref 10 protocol ip flower skip_sw ip_proto udp dst_port %d action drop", port)
		if port%1000 == 0 {
			// Continued on the next line, as tc -b reads it.
			l = strings.Replace(l, " flower ", " \\\n  flower ", 1)
		}
		lines = append(lines, l)
	}
	bad := append(append([]string{}, lines...),
		"filter add dev b0 ingress pref 10 protocol ipv6 flower skip_sw action drop")
	out, err := xdpflow(tp.b, "-b", writeBatch(t, bad))
	want := fmt.Sprintf(":%d: filter: pref 10 holds protocol ip filters; protocol ipv6 needs another pref; nothing of the batch was installed", len(bad)+10)
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("a batch whose last line fails: %v: %s, want an error ending %q", err, out, want)
	}
	if fs := filters(t, tp.b, "b0"); len(fs) != 0 {
		t.Errorf("%d filters installed by a batch that failed", len(fs))
	}

	mustXdpflow(t, tp.b, "-b", writeBatch(t, lines))
	st := mustXdpflow(t, tp.b, "status")
	if !strings.Contains(st, "rules 10000/") {
		t.Errorf("status after 10,000 filters:\n%s", st)
	}
	recv := map[int]func(time.Duration) int{}
	for _, port := range []int{1, 4321, 10000, 10001} {
		recv[port] = udpListener(t, tp.b, tp.b0IP, port)
		testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(uint16(port), "batch"), 10)...)
	}
	for port, n := range recv {
		want := 0
		if port > 10000 {
			want = 10
		}
		if got := n(300 * time.Millisecond); got != want {
			t.Errorf("udp port %d: %d of 10 datagrams delivered, want %d", port, got, want)
		}
	}
	fs := filters(t, tp.b, "b0")
	if len(fs) != 10000 {
		t.Fatalf("filter show: %d filters, want 10000", len(fs))
	}
	for _, f := range fs {
		if p, ok := f.Keys["dst_port"].(float64); ok && (p == 1 || p == 4321 || p == 10000) &&
			(f.Stats == nil || f.Stats.Packets != 10 || f.Handle != int(p)) {
			t.Errorf("filter for port %v: %+v", p, f)
		}
	}
}

// TestBatchKeepsLookupOrder: a flower mask keeps its place in a pref's
// lookup order while a filter uses it, and a mask made again goes last.
// One batch must end in the order its commands do one process each, as
// the packets show: UDP to b0 meets a dst_ip drop and an ip_proto pass.
func TestBatchKeepsLookupOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		batch     []string
		delivered int // of 10: 0 when the dst_ip mask is still ahead
	}{
		{"a filter joins the first mask, then its other filter leaves", []string{
			"filter add dev b0 ingress pref 40 handle 3 protocol ip flower skip_sw dst_ip 198.18.1.2 action drop",
			"filter del dev b0 ingress pref 40 handle 1",
		}, 0},
		{"the first mask's filter moves away and back: the mask goes last", []string{
			"filter replace dev b0 ingress pref 40 handle 1 protocol ip flower skip_sw ip_proto tcp action drop",
			"filter replace dev b0 ingress pref 40 handle 1 protocol ip flower skip_sw dst_ip 198.18.1.2 action drop",
		}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, asBatch := range []bool{false, true} {
				tp := newTopo(t)
				mustXdpflow(t, tp.b, "enable", "dev", "b0")
				// Masks in order: destination address, then IP protocol.
				mustXdpflow(t, tp.b, strings.Fields("filter add dev b0 ingress pref 40 handle 1 protocol ip flower skip_sw dst_ip 198.18.0.9 action drop")...)
				mustXdpflow(t, tp.b, strings.Fields("filter add dev b0 ingress pref 40 handle 2 protocol ip flower skip_sw ip_proto udp action pass")...)
				if asBatch {
					mustXdpflow(t, tp.b, "-b", writeBatch(t, tc.batch))
				} else {
					for _, c := range tc.batch {
						mustXdpflow(t, tp.b, strings.Fields(c)...)
					}
				}
				recv := udpListener(t, tp.b, tp.b0IP, 5001)
				testutil.Inject(t, tp.a, "a0", repeat(tp.udpFrame(5001, "order"), 10)...)
				if n := recv(300 * time.Millisecond); n != tc.delivered {
					t.Errorf("batch %v: %d of 10 datagrams delivered, want %d", asBatch, n, tc.delivered)
				}
			}
		})
	}
}

// TestBatchRefused: what a batch does not take is refused naming the file
// and line, before anything changes.
func TestBatchRefused(t *testing.T) {
	b := batchDevice(t)
	good := "filter add dev b0 ingress pref 1 protocol ip flower skip_sw action drop"
	for _, tc := range []struct {
		lines []string
		args  []string
		want  string
		rc    string
	}{
		{[]string{good, "filter show dev b0 ingress"}, nil, ":2: filter show: a batch is one change", "exit status 1"},
		{[]string{good, "enable dev b1"}, nil, `:2: "enable": a batch holds filter commands only`, "exit status 1"},
		{[]string{"# first", good, "filter add dev b0 ingress pref 2 flower dst_ip 1.2.3.4/40"}, nil, ":3: ", "exit status 1"},
		{[]string{good, "filter add dev nosuch ingress pref 2 protocol ip flower skip_sw action drop"}, nil,
			":2: xdpflow is not enabled on nosuch", "exit status 1"},
		{[]string{good}, []string{"status"}, `-b FILE takes its commands from FILE: "status" after it is not one`, "exit status 2"},
		{[]string{good, "filter add dev b0 ingress pref 2 protocol ip flower skip_sw \\"}, nil,
			":2: the last line ends in a backslash: a continuation line is missing", "exit status 1"},
	} {
		args := append([]string{"-b", writeBatch(t, tc.lines)}, tc.args...)
		out, err := xdpflow(b, args...)
		if err == nil || err.Error() != tc.rc || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("%q: %v: %q, want %s and one line with %q", tc.lines, err, out, tc.rc, tc.want)
		}
		if fs := filters(t, b, "b0"); len(fs) != 0 {
			t.Errorf("%q: %d filters installed", tc.lines, len(fs))
		}
	}
	// Standard input.
	out, err := b.ExecStdin(good+"\n", xdpflowBin, "-b", "-")
	if err != nil || len(filters(t, b, "b0")) != 1 {
		t.Errorf("-b -: %v: %s; filters %+v", err, out, filters(t, b, "b0"))
	}
}

// BenchmarkBatch10K: 10,000 filters (one pref, as TestBatch10000Filters)
// put in by one `xdpflow -b`, against 200 of them put in one `filter add`
// process each; the ratio is what one process per filter costs more. Run
// by `make bench`.
func BenchmarkBatch10K(b *testing.B) {
	a, ns := testutil.NewNetns(b), testutil.NewNetns(b)
	testutil.Veth(b, a, "a0", ns, "b0")
	mustXdpflowB(b, ns, "enable", "dev", "b0")
	var lines []string
	for port := 1; port <= 10000; port++ {
		lines = append(lines, fmt.Sprintf("filter add dev b0 ingress pref 10 protocol ip flower skip_sw ip_proto udp dst_port %d action drop", port))
	}
	file := filepath.Join(b.TempDir(), "batch")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	var batch, one time.Duration
	for range b.N {
		mustXdpflowB(b, ns, "filter", "del", "dev", "b0", "ingress")
		start := time.Now()
		mustXdpflowB(b, ns, "-b", file)
		batch += time.Since(start)
		mustXdpflowB(b, ns, "filter", "del", "dev", "b0", "ingress")
		start = time.Now()
		for _, l := range lines[:200] {
			mustXdpflowB(b, ns, strings.Fields(l)...)
		}
		one += time.Since(start)
	}
	perBatch := batch.Seconds() / float64(b.N)
	perProcess := one.Seconds() / float64(b.N) / 200
	b.ReportMetric(perBatch, "s/batch_of_10k")
	b.ReportMetric(perProcess*1e3, "ms/filter_one_process_each")
	b.ReportMetric(perProcess*10000/perBatch, "x_faster")
	b.Logf("10,000 filters: one batch %.3f s; one process each %.2f ms a filter (%.0f s for 10,000): %.0fx",
		perBatch, perProcess*1e3, perProcess*10000, perProcess*10000/perBatch)
}
