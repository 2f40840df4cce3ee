package selftests

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestDeviceRenameFollowed renames an enabled device under a running
// daemon, and back. Its pins, program and hand-added filter follow it to
// the new name. The nft chain bound to the old name stops applying in the
// kernel (netdev hooks bind by name), so XDP must stop applying it too,
// and must apply it again when the old name comes back.
func TestDeviceRenameFollowed(t *testing.T) {
	tp := newNftTopo(t)
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.loadChain(t, dropFrom3)
	mustXdpflow(t, tp.b, "filter", "add", "dev", "b0", "ingress", "prio", "1", "protocol", "ip", "flower",
		"src_ip", "198.18.5.5", "action", "drop")
	waitFlows(t, tp.b, "nft rule offloaded", func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 1 && allInstalled(fs) })
	tp.expectFates(t, "before", map[string]string{"198.18.3.3": "drop", "198.18.5.5": "drop", "198.18.6.6": "c0"})

	before := cliPackets(t, tp.b, "b0")

	renameBridgePort(t, tp.b, "b0", "b9")
	waitFor(t, 5*time.Second, "the daemon follows b0 -> b9", func() []jsonFlow { return flows(t, tp.b, "b9") },
		func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 0 })
	if got := attachedDevs(t, tp.b); !slices.Equal(got, []string{"b9"}) {
		t.Fatalf("enabled and attached after the rename: %v, want [b9]", got)
	}
	if !strings.Contains(d.logText(), "b0: renamed to b9") {
		t.Errorf("the daemon did not log the rename")
	}
	// The kernel no longer runs the chain on b9: neither does XDP. The
	// hand-added filter is the device's, whatever its name.
	tp.expectFates(t, "renamed", map[string]string{"198.18.3.3": "c0", "198.18.5.5": "drop", "198.18.6.6": "c0"})
	if c := nftCounters(t, tp.b)["in/"+nftHandle(t, tp.b, "in", "198.18.3.3")]; c != 0 {
		t.Errorf("nft counted %d packets on a chain bound to a name no device has", c)
	}
	if after := cliPackets(t, tp.b, "b9"); after != before+1 {
		t.Errorf("the hand-added filter counted %d packets in XDP after the rename, want %d", after, before+1)
	}

	renameBridgePort(t, tp.b, "b9", "b0")
	waitFlows(t, tp.b, "the chain applies again under b0", func(fs []jsonFlow) bool {
		return len(nftFlows(fs)) == 1 && allInstalled(fs)
	})
	tp.expectFates(t, "back", map[string]string{"198.18.3.3": "drop", "198.18.5.5": "drop", "198.18.6.6": "c0"})
	if f := nftFlows(flows(t, tp.b, "b0")); len(f) != 1 {
		t.Fatalf("nft flows after renaming back: %v", f)
	} else {
		for _, fl := range f {
			if fl.Stats == nil || fl.Stats.Packets != 1 {
				t.Errorf("nft rule's XDP stats after renaming back: %+v, want 1 packet", fl.Stats)
			}
		}
	}
}

// renameBridgePort renames from, a port of br0, to to, and waits for it to
// forward again.
func renameBridgePort(t *testing.T, ns *testutil.Netns, from, to string) {
	t.Helper()
	ns.MustExec(t, "ip", "link", "set", from, "down")
	ns.MustExec(t, "ip", "link", "set", from, "name", to)
	ns.MustExec(t, "ip", "link", "set", to, "up")
	// The kernel marks the link running, and the bridge port
	// forwarding, from its linkwatch work, up to a second later:
	// frames sent before that are the bridge's to drop.
	waitFor(t, 5*time.Second, to+" forwarding in br0", func() string {
		out, _ := ns.Exec("cat", "/sys/class/net/"+to+"/operstate", "/sys/class/net/"+to+"/brport/state")
		return strings.Join(strings.Fields(out), " ")
	}, func(s string) bool { return s == "up 3" })
}

// cliPackets is the hand-added filter's XDP packet count on dev.
func cliPackets(t *testing.T, ns *testutil.Netns, dev string) uint64 {
	t.Helper()
	out := mustXdpflow(t, ns, "-s", "-j", "filter", "show", "dev", dev)
	var fs []struct {
		Pref  int `json:"pref"`
		Stats *struct {
			Packets uint64 `json:"packets"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("filter show: %v: %s", err, out)
	}
	for _, f := range fs {
		if f.Pref == 1 && f.Stats != nil {
			return f.Stats.Packets
		}
	}
	t.Fatalf("filter show dev %s: no pref 1 filter with stats: %s", dev, out)
	return 0
}

// attachedDevs is the devices xdpflow status lists as attached.
func attachedDevs(t *testing.T, ns *testutil.Netns) []string {
	t.Helper()
	out := mustXdpflow(t, ns, "-j", "status")
	var st []struct {
		Dev      string `json:"dev"`
		Attached bool   `json:"attached"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	var devs []string
	for _, s := range st {
		if s.Attached {
			devs = append(devs, s.Dev)
		}
	}
	return devs
}
