package nft

import (
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestReadOneGeneration: what a Reader kept from an earlier read is used
// only while the ruleset's generation is one it was told of (Seen, after
// Stale): a chain added without a word to the reader is read, not left
// out of a ruleset whose rules are read afresh.
func TestReadOneGeneration(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t)
	peer := testutil.NewNetns(t)
	testutil.Veth(t, ns, "b0", peer, "a0")
	ns.MustExec(t, "nft", `add table netdev xf`)
	ns.MustExec(t, "nft", `add chain netdev xf one { type filter hook ingress device "b0" priority 0; policy accept; }`)
	ns.MustExec(t, "nft", `add rule netdev xf one udp dport 1 drop`)
	ns.Run(t, func() {
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rs, err := r.Read("b0", ifi.Index)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Base) != 1 {
			t.Fatalf("%d base chains, want 1", len(rs.Base))
		}
		ns.MustExec(t, "nft", `add chain netdev xf two { type filter hook ingress device "b0" priority 5; policy accept; }`)
		ns.MustExec(t, "nft", `add rule netdev xf two udp dport 2 drop`)
		rs, err = r.Read("b0", ifi.Index)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Base) != 2 {
			t.Fatalf("after a chain was added unannounced: %d base chains, want 2", len(rs.Base))
		}
	})
}
