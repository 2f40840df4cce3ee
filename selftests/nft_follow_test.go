package selftests

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// One scenario, step by step: the transactions share the chain and the daemon.
// TestNftFollowsRuleChanges: 60 nft transactions against a running daemon,
// each of one to four rule changes drawn from a fixed seed: rules added at
// the end, at the head, after and before a rule (two inserts at the head
// in one transaction place the first after the second, which the
// notifications name before it comes), next to a rule the transaction
// deletes, deleted, replaced. The rules
// overlap, so their order decides fates. After each transaction the
// daemon's parts are what a fresh read of the ruleset compiles to (flow
// show: none waiting, none stale), and frames meet the fates of nft's own
// first match. The daemon follows the changes without reading every rule
// again, except where a transaction's notifications leave a rule's place
// open (a delete in the chain and a rule added without a position), and
// changes some results in place rather than compiling every rule.
func TestNftFollowsRuleChanges(t *testing.T) {
	tp := newNftTopo(t)
	tp.b.MustExec(t, "ip", "link", "set", "lo", "up")
	srcs := []string{"198.18.3.1", "198.18.3.2", "198.18.3.5", "198.18.3.6", "198.18.3.9"}
	match := func(rng *rand.Rand) string {
		switch rng.IntN(3) {
		case 0:
			return "ip saddr " + srcs[rng.IntN(len(srcs))]
		case 1:
			return fmt.Sprintf("ip saddr 198.18.3.%d/30", 4*rng.IntN(3))
		}
		return "ip saddr 198.18.3.0/28"
	}
	verdict := func(rng *rand.Rand) string { return []string{"drop", "accept"}[rng.IntN(2)] }
	var initial []string
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 12; i++ {
		initial = append(initial, match(rng)+" counter "+verdict(rng))
	}
	tp.loadChain(t, initial...)
	d := startDaemon(t, tp.b, "--metrics", "127.0.0.1:9560")
	d.logOnFailure(t)
	d.waitRunning(t)
	waitFlows(t, tp.b, "first sync", allInstalled)

	openPlaces := 0 // transactions the daemon may have to read whole
	for round := 0; round < 60; round++ {
		handles := chainHandles(t, tp)
		var tx []string
		deleted := map[string]bool{}
		deletes, unplacedAdds := false, false
		pick := func() (string, bool) {
			for _, i := range rng.Perm(len(handles)) {
				if !deleted[handles[i]] {
					return handles[i], true
				}
			}
			return "", false
		}
		for n := 1 + rng.IntN(4); n > 0; n-- {
			body := match(rng) + " counter " + verdict(rng)
			h, ok := pick()
			switch k := rng.IntN(7); {
			case k == 0 || !ok:
				tx = append(tx, "add rule netdev xf in "+body)
				unplacedAdds = true
			case k == 1:
				tx = append(tx, "insert rule netdev xf in "+body)
			case k == 2:
				tx = append(tx, "add rule netdev xf in position "+h+" "+body)
			case k == 3:
				tx = append(tx, "insert rule netdev xf in position "+h+" "+body)
			case k == 4 && len(handles)-len(deleted) > 4:
				tx = append(tx, "delete rule netdev xf in handle "+h)
				deleted[h], deletes = true, true
			case k == 5 && len(handles)-len(deleted) > 4:
				// The kernel places a rule next to one the same commit
				// deletes, which may leave it last with no position.
				where := []string{"insert", "add"}[rng.IntN(2)]
				tx = append(tx, "delete rule netdev xf in handle "+h, where+" rule netdev xf in position "+h+" "+body)
				deleted[h], deletes, unplacedAdds = true, true, true
			default:
				tx = append(tx, "replace rule netdev xf in handle "+h+" "+body)
				deleted[h], deletes, unplacedAdds = true, true, true
			}
		}
		if deletes && unplacedAdds {
			openPlaces++
		}
		if _, err := tp.b.ExecStdin(strings.Join(tx, "\n")+"\n", "nft", "-f", "-"); err != nil {
			t.Fatalf("round %d: nft -f: %v:\n%s", round, err, strings.Join(tx, "\n"))
		}
		waitFlows(t, tp.b, fmt.Sprintf("round %d: the daemon's parts as a fresh compile's", round), allInstalled)
		if round%10 == 9 {
			tp.expectFates(t, fmt.Sprintf("round%d", round), firstMatchFates(t, tp, srcs))
		}
	}
	dumps := scrapeValue(t, tp, "xdpflow_nft_rule_dumps_total")
	inPlace := scrapeValue(t, tp, `xdpflow_nft_compiles_total{how="in_place"}`)
	whole := scrapeValue(t, tp, `xdpflow_nft_compiles_total{how="whole"}`)
	t.Logf("%d rule dumps: the first sync and %d of 60 transactions (%d left a place open); results made whole %d times, changed in place %d times",
		dumps, dumps-1, openPlaces, whole, inPlace)
	if dumps-1 > openPlaces {
		t.Errorf("the daemon read every rule %d times after its first sync; only %d transactions left a rule's place open", dumps-1, openPlaces)
	}
	if inPlace == 0 {
		t.Errorf("no result was changed in place")
	}
}

// chainHandles lists the handles of chain netdev xf in, in order.
func chainHandles(t *testing.T, tp *nftTopo) []string {
	t.Helper()
	var hs []string
	for _, line := range strings.Split(tp.b.MustExec(t, "nft", "-a", "list", "chain", "netdev", "xf", "in"), "\n") {
		if i := strings.Index(line, "counter"); i >= 0 {
			if j := strings.Index(line, "# handle "); j >= 0 {
				hs = append(hs, strings.TrimSpace(line[j+len("# handle "):]))
			}
		}
	}
	return hs
}

var saddrRule = regexp.MustCompile(`ip saddr ([0-9.]+)(?:/(\d+))? counter packets \d+ bytes \d+ (drop|accept)`)

// firstMatchFates is each source's fate by nft's first match over the
// chain as nft lists it: "drop", or "c0" (accepted, or no rule: the
// policy), for frames from src.
func firstMatchFates(t *testing.T, tp *nftTopo, srcs []string) map[string]string {
	t.Helper()
	out := tp.b.MustExec(t, "nft", "list", "chain", "netdev", "xf", "in")
	want := map[string]string{}
	for _, s := range srcs {
		want[s] = "c0"
		a := ipv4Uint(s)
		for _, m := range saddrRule.FindAllStringSubmatch(out, -1) {
			bits := 32
			if m[2] != "" {
				bits, _ = strconv.Atoi(m[2])
			}
			mask := ^uint32(0) << (32 - bits)
			if a&mask == ipv4Uint(m[1])&mask {
				if m[3] == "drop" {
					want[s] = "drop"
				}
				break
			}
		}
	}
	return want
}

func ipv4Uint(s string) uint32 {
	var v uint32
	for _, p := range strings.Split(s, ".") {
		n, _ := strconv.Atoi(p)
		v = v<<8 | uint32(n)
	}
	return v
}

// scrapeValue is the value of an unlabelled metric of the daemon in tp.b
// serving 127.0.0.1:9560.
func scrapeValue(t *testing.T, tp *nftTopo, name string) int {
	t.Helper()
	for _, line := range strings.Split(scrape(t, tp.b, "127.0.0.1:9560"), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int(f)
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestNftFollowsJumpedToChain: a rule jumps to a chain that is empty,
// then gets a rule: the daemon mirrors the new rule under the jump (the
// jumping rule itself did not change).
func TestNftFollowsJumpedToChain(t *testing.T) {
	tp := newNftTopo(t)
	const ruleset = `table netdev xf {
	chain sub {
	}
	chain in { type filter hook ingress device "b0" priority 0; policy accept;
		ip saddr 198.18.3.0/24 jump sub
	}
}`
	if _, err := tp.b.ExecStdin(ruleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	d.waitRunning(t)
	waitFlows(t, tp.b, "first sync", allInstalled)
	tp.b.MustExec(t, "nft", "add", "rule", "netdev", "xf", "sub", "ip", "saddr", "198.18.3.5", "counter", "drop")
	waitFlows(t, tp.b, "the jumped-to chain's new rule", func(fs []jsonFlow) bool {
		return allInstalled(fs) && nftFlows(fs)["netdev/xf/sub/"+nftHandle(t, tp.b, "sub", "198.18.3.5")].Offloaded
	})
	c0 := xdpflowCounters(t, tp.b)
	tp.expectFates(t, "jumped", map[string]string{"198.18.3.5": "drop", "198.18.3.6": "c0"})
	if c1 := xdpflowCounters(t, tp.b); c1["drop"]-c0["drop"] != 1 {
		t.Errorf("XDP dropped %d frames, want 1", c1["drop"]-c0["drop"])
	}
}
