package selftests

import (
	"slices"
	"strings"
	"testing"
)

// One scenario, step by step: the steps share the ruleset and the daemons.
// TestNftDaemon follows nft changes at runtime, survives SIGKILL and
// reconciles on restart.
func TestNftDaemon(t *testing.T) {
	tp := newNftTopo(t)
	d := startDaemon(t, tp.b)
	rs := `table netdev xf {
  set blk { type ipv4_addr; }
  chain in {
    type filter hook ingress device b0 priority 0; policy accept;
    ip saddr 198.18.1.5 counter drop
    ip saddr @blk counter drop
  }
}
`
	if _, err := tp.b.ExecStdin(rs, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	h5 := nftHandle(t, tp.b, "in", "198.18.1.5")
	name5 := "netdev/xf/in/" + h5
	waitFlows(t, tp.b, "rule .5 offloaded", func(fs []jsonFlow) bool { return nftFlows(fs)[name5].Offloaded })
	tp.expectFates(t, "add", map[string]string{"198.18.1.5": "drop", "198.18.1.6": "c0", "198.18.1.77": "c0"})
	if c := nftCounters(t, tp.b)["in/"+h5]; c != 0 {
		t.Errorf("nft counted %d packets of an offloaded drop rule", c)
	}
	if f := nftFlows(flows(t, tp.b, "b0"))[name5]; f.Stats == nil || f.Stats.Packets != 1 {
		t.Errorf("XDP stats of %s: %+v, want 1 packet", name5, f.Stats)
	}

	// Named set elements are followed.
	tp.b.MustExec(t, "nft", "add", "element", "netdev", "xf", "blk", "{ 198.18.1.77 }")
	waitFlows(t, tp.b, "set element installed", allInstalled)
	tp.expectFates(t, "elem", map[string]string{"198.18.1.5": "drop", "198.18.1.77": "drop", "198.18.1.6": "c0"})

	// Replace, insert before, delete.
	tp.b.MustExec(t, "nft", "replace", "rule", "netdev", "xf", "in", "handle", h5, "ip", "saddr", "198.18.1.6", "counter", "drop")
	waitFlows(t, tp.b, "replace installed", allInstalled)
	tp.expectFates(t, "replace", map[string]string{"198.18.1.5": "c0", "198.18.1.6": "drop"})
	tp.b.MustExec(t, "nft", "insert", "rule", "netdev", "xf", "in", "ip", "saddr", "198.18.1.6", "counter", "accept")
	waitFlows(t, tp.b, "insert installed", allInstalled)
	tp.expectFates(t, "insert", map[string]string{"198.18.1.6": "c0", "198.18.1.77": "drop"})
	tp.b.MustExec(t, "nft", "delete", "element", "netdev", "xf", "blk", "{ 198.18.1.77 }")
	waitFlows(t, tp.b, "element deleted", allInstalled)
	tp.expectFates(t, "delelem", map[string]string{"198.18.1.77": "c0"})

	// Changes to chains and tables alone (no rule changes with them).
	tp.b.MustExec(t, "nft", "chain", "netdev", "xf", "in", "{ policy drop; }")
	waitFlows(t, tp.b, "policy drop installed", allInstalled)
	tp.expectFates(t, "policy", map[string]string{"198.18.1.50": "drop", "198.18.1.6": "c0"})
	tp.b.MustExec(t, "nft", "chain", "netdev", "xf", "in", "{ policy accept; }")
	waitFlows(t, tp.b, "policy accept installed", allInstalled)
	tp.expectFates(t, "policy2", map[string]string{"198.18.1.50": "c0"})
	if _, err := tp.b.ExecStdin("table netdev xg {\n chain pre {\n  type filter hook ingress device b0 priority -10;\n  ip saddr 198.18.1.6 drop\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	waitFlows(t, tp.b, "second table installed", allInstalled)
	tp.expectFates(t, "table2", map[string]string{"198.18.1.6": "drop", "198.18.1.50": "c0"})
	tp.b.MustExec(t, "nft", "delete", "table", "netdev", "xg")
	waitFlows(t, tp.b, "second table gone", allInstalled)
	tp.expectFates(t, "table2gone", map[string]string{"198.18.1.6": "c0"})

	// A burst of 40 transactions, faster than each can be synced: all end
	// up in XDP, then all go.
	tp.b.MustExec(t, "sh", "-c", "for i in $(seq 100 139); do nft add rule netdev xf in ip saddr 198.18.2.$i counter drop || exit 1; done")
	waitFlows(t, tp.b, "burst installed", func(fs []jsonFlow) bool {
		n := 0
		for _, f := range nftFlows(fs) {
			if f.Offloaded && slices.Equal(f.Actions, []string{"drop"}) {
				n++
			}
		}
		return allInstalled(fs) && n >= 40
	})
	tp.expectFates(t, "burst", map[string]string{"198.18.2.100": "drop", "198.18.2.139": "drop", "198.18.2.140": "c0"})
	tp.b.MustExec(t, "sh", "-c", "for h in $(nft -a list chain netdev xf in | sed -n 's/.*198.18.2.* handle //p'); do nft delete rule netdev xf in handle $h || exit 1; done")
	waitFlows(t, tp.b, "burst deleted", allInstalled)
	tp.expectFates(t, "burstgone", map[string]string{"198.18.2.100": "c0", "198.18.2.139": "c0"})

	// Killed: what is offloaded keeps working.
	tp.b.MustExec(t, "nft", "add", "rule", "netdev", "xf", "in", "ip", "saddr", "198.18.1.1", "counter", "drop")
	h1 := nftHandle(t, tp.b, "in", "198.18.1.1")
	name1 := "netdev/xf/in/" + h1
	waitFlows(t, tp.b, "rule .1 offloaded", func(fs []jsonFlow) bool { return nftFlows(fs)[name1].Offloaded })
	d.kill()
	tp.expectFates(t, "killed", map[string]string{"198.18.1.1": "drop", "198.18.1.5": "c0"})
	if c := nftCounters(t, tp.b)["in/"+h1]; c != 0 {
		t.Errorf("after kill -9: nft counted %d packets of an offloaded rule", c)
	}
	before := nftFlows(flows(t, tp.b, "b0"))[name1]

	// Changed while no daemon runs, then a new daemon reconciles: the new
	// rule appears, the deleted one goes, the unchanged one is untouched
	// (its XDP counter goes on), nothing is listed twice.
	tp.b.MustExec(t, "nft", "delete", "rule", "netdev", "xf", "in", "handle", h5)
	tp.b.MustExec(t, "nft", "add", "rule", "netdev", "xf", "in", "ip", "saddr", "198.18.1.9", "counter", "drop")
	fs := flows(t, tp.b, "b0")
	if !slices.ContainsFunc(fs, func(f jsonFlow) bool { return strings.Contains(f.Reason, "stale") }) {
		t.Errorf("with no daemon, flow show should list the deleted rule as stale: %+v", fs)
	}
	d2 := startDaemon(t, tp.b)
	fs = waitFlows(t, tp.b, "reconciled", allInstalled)
	seen := map[string]int{}
	for _, f := range fs {
		seen[f.Name]++
		if seen[f.Name] > 1 {
			t.Errorf("%s listed twice after restart", f.Name)
		}
	}
	if _, ok := seen[name5]; ok {
		t.Errorf("deleted rule %s still listed after restart", name5)
	}
	after := nftFlows(fs)[name1]
	if before.Stats == nil || after.Stats == nil || after.Stats.Packets < before.Stats.Packets || before.Stats.Packets == 0 {
		t.Errorf("unchanged rule %s was reinstalled across the restart: stats %+v then %+v", name1, before.Stats, after.Stats)
	}
	tp.expectFates(t, "restart", map[string]string{"198.18.1.1": "drop", "198.18.1.9": "drop", "198.18.1.6": "c0", "198.18.1.5": "c0"})

	// Chain flushed: its rules leave XDP.
	tp.b.MustExec(t, "nft", "flush", "chain", "netdev", "xf", "in")
	waitFlows(t, tp.b, "chain flushed", func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 0 })
	tp.expectFates(t, "flushed", map[string]string{"198.18.1.1": "c0", "198.18.1.9": "c0"})
	tp.b.MustExec(t, "nft", "add", "rule", "netdev", "xf", "in", "ip", "saddr", "198.18.1.1", "counter", "drop")
	waitFlows(t, tp.b, "rule after flush", func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 1 && allInstalled(fs) })
	tp.expectFates(t, "refilled", map[string]string{"198.18.1.1": "drop", "198.18.1.9": "c0"})

	// Table deleted: nothing of it stays in XDP.
	tp.b.MustExec(t, "nft", "delete", "table", "netdev", "xf")
	waitFlows(t, tp.b, "table gone", func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 0 })
	tp.expectFates(t, "deleted", map[string]string{"198.18.1.1": "c0", "198.18.1.9": "c0"})
	if t.Failed() {
		t.Logf("daemon log:\n%s\n%s", d.logText(), d2.logText())
	}
}
