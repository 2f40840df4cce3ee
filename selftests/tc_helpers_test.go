package selftests

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// The tests here need cls_flower (and act_gact, act_vlan, act_mirred),
// which this project's development kernel lacks: `make vmtest` runs them
// in a VM booted with Debian's stock kernel.

// needFlower skips the test, loudly, when the kernel has no cls_flower.
func needFlower(t *testing.T, ns *testutil.Netns, dev string) {
	t.Helper()
	ns.MustExec(t, "tc", "qdisc", "add", "dev", dev, "clsact")
	out, err := ns.Exec("tc", "filter", "add", "dev", dev, "ingress", "pref", "1", "protocol", "ip", "flower",
		"src_ip", "192.0.2.1", "action", "drop")
	if err != nil {
		t.Skipf("SKIPPED: this kernel cannot hold a TC flower filter with a gact action (%s): "+
			"run `make vmtest` (Debian's kernel in a VM) for this test", strings.TrimSpace(out))
	}
	ns.MustExec(t, "tc", "filter", "del", "dev", dev, "ingress", "pref", "1")
}

// tcFilterStats reads the kernel's counter of every ingress filter of
// dev: "pref/handle" -> packets (the first action's).
func tcFilterStats(t *testing.T, ns *testutil.Netns, dev string) map[string]uint64 {
	t.Helper()
	out := ns.MustExec(t, "tc", "-s", "-j", "filter", "show", "dev", dev, "ingress")
	var filters []struct {
		Pref    int `json:"pref"`
		Options struct {
			Handle  int `json:"handle"`
			Actions []struct {
				Stats struct {
					Packets uint64 `json:"packets"`
				} `json:"stats"`
			} `json:"actions"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(out), &filters); err != nil {
		t.Fatalf("tc -j filter show: %v\n%s", err, out)
	}
	res := map[string]uint64{}
	for _, f := range filters {
		if f.Options.Handle == 0 || len(f.Options.Actions) == 0 {
			continue
		}
		res[fmt.Sprintf("%d/%d", f.Pref, f.Options.Handle)] = f.Options.Actions[0].Stats.Packets
	}
	return res
}

// tcShownFilter is one filter of `xdpflow -s -j filter show`.
type tcShownFilter struct {
	Pref      int      `json:"pref"`
	Handle    int      `json:"handle"`
	Chain     int      `json:"chain"`
	Source    string   `json:"source"`
	Actions   []string `json:"actions"`
	Offloaded bool     `json:"offloaded"`
	Punted    bool     `json:"punted"`
	Reason    string   `json:"reason"`
	Stats     *struct {
		Packets uint64 `json:"packets"`
	} `json:"stats"`
	TCStats *struct {
		Packets uint64 `json:"packets"`
	} `json:"tc_stats"`
}

func tcShown(t *testing.T, ns *testutil.Netns, dev string) map[string]tcShownFilter {
	t.Helper()
	out := mustXdpflow(t, ns, "-s", "-j", "filter", "show", "dev", dev, "ingress")
	var fs []tcShownFilter
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("filter show -j: %v\n%s", err, out)
	}
	res := map[string]tcShownFilter{}
	for _, f := range fs {
		res[fmt.Sprintf("%d/%d", f.Pref, f.Handle)] = f
	}
	return res
}

// vlanAndDstOf is vlanOf and the destination MAC (pedit rewrites it).
func vlanAndDstOf(f testutil.Frame) string {
	if len(f.Data) < 6 {
		return vlanOf(f)
	}
	return vlanOf(f) + " to " + net.HardwareAddr(f.Data[:6]).String()
}

// vlanOf describes a delivered frame's VLAN tags: the one the kernel took
// into metadata and any left in the data.
func vlanOf(f testutil.Frame) string {
	s := ""
	if f.VLAN {
		s = fmt.Sprintf(" tag %04x:%d", f.VLANTPID, f.VLANTCI&0xfff)
	}
	d := f.Data
	for off := 12; off+4 <= len(d); off += 4 {
		tpid := uint16(d[off])<<8 | uint16(d[off+1])
		if tpid != 0x8100 && tpid != 0x88a8 {
			break
		}
		s += fmt.Sprintf(" tag %04x:%d", tpid, (uint16(d[off+2])<<8|uint16(d[off+3]))&0xfff)
	}
	return s
}

// waitShown polls `filter show` until ok holds.
func waitShown(t *testing.T, ns *testutil.Netns, what string, ok func(map[string]tcShownFilter) bool) map[string]tcShownFilter {
	t.Helper()
	return waitFor(t, 10*time.Second, what, func() map[string]tcShownFilter { return tcShown(t, ns, "b0") }, ok)
}

func repeatStr(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
