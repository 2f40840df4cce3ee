package selftests

import (
	"fmt"
	"strings"
	"testing"
)

// TestNftChangeAtTheSubtableLimit: a chain whose rules take every
// subtable but the one kept for the catch-all punt (255 masks), changed
// by one transaction that deletes a rule and adds one of a new mask. The
// new set fits; next to the old it does not, since a change writes its new
// subtables before it removes the old ones. The daemon places the rules
// the room allows, then the rest once the old are out, and every rule ends
// in XDP, each one's fate unchanged.
func TestNftChangeAtTheSubtableLimit(t *testing.T) {
	tp := newNftTopo(t)
	var sb strings.Builder
	sb.WriteString("table netdev xf {\n chain in {\n  type filter hook ingress device b0 priority 0; policy accept;\n")
	n := 0
	for src := 1; src <= 32 && n < 255; src++ {
		for dst := 1; dst <= 32 && n < 255; dst++ {
			// Prefixes of 10.99.0.0, which no frame of the test is from or
			// to: only the masks matter.
			fmt.Fprintf(&sb, "  ip saddr 10.99.0.0/%d ip daddr 10.99.0.0/%d counter drop\n", src, dst)
			n++
		}
	}
	sb.WriteString("  ip saddr 198.18.1.7 counter drop\n }\n}\n")
	if _, err := tp.b.ExecStdin(sb.String(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f: %v", err)
	}
	offloaded := func(what string, want int) {
		t.Helper()
		off := 0
		for _, f := range nftFlows(flows(t, tp.b, "b0")) {
			switch {
			case strings.HasPrefix(f.Name, "xdpflow/"): // the catch-all punt
			case f.Offloaded:
				off++
			default:
				t.Logf("%s: %s: %s", what, f.Name, f.Reason)
			}
		}
		if off != want {
			t.Fatalf("%s: %d nft rules in XDP, want %d", what, off, want)
		}
	}
	// 255 masks, and the last rule's is one too many: it stays in nft.
	mustXdpflow(t, tp.b, "daemon", "--once")
	offloaded("first sync", 255)
	tp.expectFates(t, "first sync", map[string]string{"198.18.1.7": "drop", "198.18.1.8": "c0"})

	// One transaction: two rules go (masks /1 /1 and /1 /2), and a rule of
	// a mask no rule has comes. The last rule fits now, and so does the
	// new one, but not before the two are out.
	var tx strings.Builder
	for _, m := range []string{"ip saddr 0.0.0.0/1 ip daddr 0.0.0.0/1 ", "ip saddr 0.0.0.0/1 ip daddr 0.0.0.0/2 "} {
		fmt.Fprintf(&tx, "delete rule netdev xf in handle %s\n", nftHandle(t, tp.b, "in", m))
	}
	tx.WriteString("add rule netdev xf in ip saddr 198.18.1.8 ip protocol udp counter drop\n")
	if _, err := tp.b.ExecStdin(tx.String(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f: %v", err)
	}
	out := mustXdpflow(t, tp.b, "daemon", "--once")
	if strings.Contains(out, "ERROR") {
		t.Errorf("daemon --once: %s", out)
	}
	offloaded("after the change", 255)
	c0 := xdpflowCounters(t, tp.b)
	tp.expectFates(t, "after the change", map[string]string{"198.18.1.7": "drop", "198.18.1.8": "drop", "198.18.1.9": "c0"})
	if c1 := xdpflowCounters(t, tp.b); c1["drop"]-c0["drop"] != 2 {
		t.Errorf("XDP dropped %d frames, want 2", c1["drop"]-c0["drop"])
	}
}
