package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/classbench"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/loader"
)

// BenchmarkNftChange10K: the daemon's part of one nft rule change in a
// chain of about 10,000 rules on an enabled veth, from the notifications
// as the kernel sent them (a real `nft add rule ... position H` in the
// middle of the chain and its `nft delete rule`, read from a monitor
// socket of the benchmark's own) to the change being live in XDP
// (nftChanged: follow, read, compile, table). The kernel's side, nft's
// commit and the wakeup, is left out. The chain is ClassBench acl1 10K as
// TestClassBenchNft loads it, or 10,000 rules of one mask as Open vSwitch
// would lay out one. It reports the daemon's heap once the chain is in.
func BenchmarkNftChange10K(b *testing.B) {
	testutil.RequireRoot(b)
	oneMask := func() string {
		var sb strings.Builder
		sb.WriteString("table netdev xf {\n chain in {\n  type filter hook ingress device b0 priority 0; policy accept;\n")
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(&sb, "  ip daddr 198.18.%d.%d udp dport %d counter drop\n", i>>8&0xff, i&0xff, 1000+i%7)
		}
		sb.WriteString(" }\n}\n")
		return sb.String()
	}
	acl1 := func() string {
		s, err := classbench.LoadSeed("acl1")
		if err != nil {
			b.Fatal(err)
		}
		return classbench.NftChain(classbench.Generate(s, 10000, 1, classbench.DefaultOptions), "b0",
			func(i int) string { return []string{"drop", "accept", "drop"}[i*7919%3] })
	}
	for _, set := range []struct {
		name  string
		chain func() string
		rule  string // what each change adds
	}{
		{"one-mask", oneMask, "ip daddr 198.19.0.1 udp dport 999 counter drop"},
		{"classbench-acl1", acl1, "ip saddr 10.1.2.3 ip daddr 10.3.2.1 ip protocol 6 tcp dport 80 counter drop"},
	} {
		b.Run(set.name, func(b *testing.B) {
			if os.Getenv(inNetnsEnv) == "" {
				benchInNetns(b, "^BenchmarkNftChange10K$/^"+set.name+"$")
				return
			}
			benchNftChange(b, set.chain(), set.rule)
		})
	}
}

// inNetnsEnv, set, says a benchmark runs in a namespace made for it
// (benchInNetns).
const inNetnsEnv = "XDPFLOW_BENCH_IN_NETNS"

// benchInNetns runs benchmark pattern of this test binary again, b.N
// times, as a process of a new namespace with a veth pair b0/a0 (`ip
// netns exec`, as the daemon runs under `xdpflow -n`), and reports its
// metrics. A thread locked into a namespace (testutil.Netns.Run) would
// make every netlink round trip of the daemon's a wakeup of that thread,
// tens of microseconds a reply that the daemon's own process never pays.
func benchInNetns(b *testing.B, pattern string) {
	ns := testutil.NewNetns(b)
	peer := testutil.NewNetns(b)
	testutil.Veth(b, ns, "b0", peer, "a0")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "-test.run=^$", "-test.bench="+pattern,
		fmt.Sprintf("-test.benchtime=%dx", b.N), "-test.count=1")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%s in namespace %s: %v\n%s", pattern, ns.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || f[1] != fmt.Sprint(b.N) {
			continue
		}
		for i := 4; i+1 < len(f); i += 2 { // after N, ns/op: value, unit
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.ReportMetric(v, f[i+1])
			}
		}
		return
	}
	b.Fatalf("%s in namespace %s: no result for %d runs\n%s", pattern, ns.Name, b.N, out)
}

// benchNftChange times adds and deletes of one rule in the middle of chain
// from nft's ACK to live in XDP, in the process's own namespace, which has
// b0 (benchInNetns). One measurement, step by step: the changes share the
// chain, the monitor and the daemon.
func benchNftChange(b *testing.B, chain, add string) {
	sh := func(stdin string, args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// The namespace is the benchmark's, and it runs more than once.
	sh("", "nft", "flush", "ruleset")
	sh(chain, "nft", "-f", "-")
	// The handle of the rule in the middle, which every add goes after.
	handles := strings.Split(strings.TrimSpace(sh("", "sh", "-c",
		"nft -a list chain netdev xf in | sed -n 's/.*# handle //p'")), "\n")
	middle := handles[len(handles)/2]
	opts := loader.DefaultOptions
	// Room for 10,000 rules of two parts (a rule on ports has one more,
	// for fragments).
	opts.MaxFlows, opts.MaxRules = 65536, 32768+1
	func() {
		mon, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer mon.Close()
		if err := mon.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
			b.Fatal(err)
		}
		enable(b, "b0", opts, func(loader.Paths) {
			d := syncedDaemon(b)
			runtime.GC()
			var mem runtime.MemStats
			runtime.ReadMemStats(&mem)
			nftRules := func() int {
				n := 0
				for _, in := range d.open["b0"].table.Rules() {
					if strings.HasPrefix(in.Rule.Name, "netdev/xf/in/") {
						n++
					}
				}
				return n
			}
			before := nftRules()
			// One transaction's notifications, up to its NEWGEN, as the
			// daemon's monitor gets them.
			change := func(cmd string) []netlink.Message {
				sh(cmd+"\n", "nft", "-f", "-")
				var msgs []netlink.Message
				for {
					got, err := mon.Receive()
					if err != nil {
						b.Fatal(err)
					}
					msgs = append(msgs, got...)
					if slices.ContainsFunc(got, func(m netlink.Message) bool {
						return uint16(m.Header.Type) == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN
					}) {
						return msgs
					}
				}
			}
			batch := &nftBatch{changed: d.nftChanged}
			var adds, dels []time.Duration
			defer debug.SetGCPercent(debug.SetGCPercent(400)) // as the daemon runs
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				msgs := change("add rule netdev xf in position " + middle + " " + add)
				b.StartTimer()
				t0 := time.Now()
				batch.add(msgs)
				batch.flush()
				adds = append(adds, time.Since(t0))
				b.StopTimer()
				if n := nftRules(); n <= before {
					b.Fatalf("%d nft parts in XDP after an add, %d before", n, before)
				}
				h := sh("", "sh", "-c", "nft -a list chain netdev xf in | sed -n 's/.*198.19.0.1 .*# handle //p; s/.*10.1.2.3 .*# handle //p'")
				msgs = change("delete rule netdev xf in handle " + strings.TrimSpace(h))
				b.StartTimer()
				t0 = time.Now()
				batch.add(msgs)
				batch.flush()
				dels = append(dels, time.Since(t0))
				if n := nftRules(); n != before {
					b.Fatalf("%d nft parts in XDP after a delete, want %d", n, before)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(mem.HeapAlloc)/(1<<20), "heap-MB")
			reportLatencies(b, "add", adds)
			reportLatencies(b, "del", dels)
		})
	}()
}
