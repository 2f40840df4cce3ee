package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/rule"
)

// TestReadFailurePunts: a daemon that cannot read what the kernel holds
// does not go on offloading what it last saw. A failed nft read takes
// every nft rule out of XDP (nft decides their packets); a failed TC dump
// leaves one punt of every packet in front of everything (TC's filters
// are unknown, and nft's rules must not overtake them). The sync returns
// the error, the device is retried, and a read that succeeds again puts
// the rules back.
func TestReadFailurePunts(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t)
	peer := testutil.NewNetns(t)
	testutil.Veth(t, ns, "b0", peer, "a0")
	ns.MustExec(t, "nft", `add table netdev xf`)
	ns.MustExec(t, "nft", `add chain netdev xf in { type filter hook ingress device "b0" priority 0; policy accept; }`)
	ns.MustExec(t, "nft", `add rule netdev xf in udp dport 9999 counter drop`)
	ns.Run(t, func() {
		enable(t, "b0", loader.DefaultOptions, func(p loader.Paths) {
			d := &daemon{log: discardLog()}
			sync := func() error {
				d.mu.Lock()
				defer d.mu.Unlock()
				return d.syncAll("test")
			}
			if err := sync(); err != nil {
				t.Fatal(err)
			}
			if tc, nft := tableSources(t, d); len(tc) != 0 || len(nft) == 0 {
				t.Fatalf("before: tc %v, nft %v; want nft's rule only", tc, nft)
			}

			injected := errors.New("injected read failure")
			d.failRead = func(src string) error {
				if src == "nft" {
					return injected
				}
				return nil
			}
			if err := sync(); !errors.Is(err, injected) {
				t.Fatalf("sync with nft unreadable: %v, want the read's error", err)
			}
			if _, nft := tableSources(t, d); len(nft) != 0 {
				t.Fatalf("nft unreadable: XDP still holds nft rules %v", nft)
			}
			if !d.retry["b0"] {
				t.Error("nft unreadable: b0 is not retried")
			}
			if h := heldReasons(t, p); !strings.Contains(h, "nft: 1 rules could run in XDP and none is installed") {
				t.Errorf("nft unreadable: status says %q", h)
			}

			d.failRead = func(src string) error {
				if src == "tc" {
					return injected
				}
				return nil
			}
			if err := sync(); !errors.Is(err, injected) {
				t.Fatalf("sync with tc unreadable: %v, want the read's error", err)
			}
			tc, _ := tableSources(t, d)
			if len(tc) != 1 || !strings.Contains(tc[0], "protocol all pref 1 handle 4294967294 ") || !strings.HasSuffix(tc[0], "action pass") {
				t.Fatalf("tc unreadable: TC rules %q, want one punt of every packet at pref 1", tc)
			}
			if h := heldReasons(t, p); !strings.Contains(h, "tc: every packet goes to the kernel") {
				t.Errorf("tc unreadable: status says %q", h)
			}

			d.failRead = nil
			if err := sync(); err != nil {
				t.Fatal(err)
			}
			if tc, nft := tableSources(t, d); len(tc) != 0 || len(nft) == 0 {
				t.Fatalf("readable again: tc %v, nft %v; want nft's rule only", tc, nft)
			}
			if h := heldReasons(t, p); h != "" {
				t.Errorf("readable again: status still says %q", h)
			}
		})
	})
}

// tableSources is the texts of the TC and of the nft rules in the daemon's
// table of b0.
func tableSources(t *testing.T, d *daemon) (tc, nft []string) {
	t.Helper()
	err := d.withTable("b0", func(o *openTable) error {
		for _, in := range o.table.Rules() {
			switch in.Rule.Source {
			case rule.SourceTC:
				tc = append(tc, in.Rule.Text)
			case rule.SourceNFT:
				nft = append(nft, in.Rule.Text)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tc, nft
}

// heldReasons is why rules the kernel holds for b0 are not in its table
// now (offload.Hooks's held), joined by "; ".
func heldReasons(t *testing.T, p loader.Paths) string {
	t.Helper()
	dev, table, err := offload.Open(p, "b0")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	_, h := offload.Hooks(table, dev.Name, dev.Ifindex)
	return strings.Join(h, "; ")
}
