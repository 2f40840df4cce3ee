package selftests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/internal/classbench"
)

// classbenchFlowerVerdict is classbenchVerdict in tc's words: nft's
// accept is flower's pass.
func classbenchFlowerVerdict(i int) string {
	if classbenchVerdict(i) == "accept" {
		return "pass"
	}
	return "drop"
}

// TestClassBenchFlower: ClassBench's acl1, fw1 and ipc1 sets of 1,000
// and 10,000 rules as skip_sw flower filters on b0, one pref each in the
// set's order, put in by one `xdpflow -b`, and 3,000 headers of a
// ClassBench trace over each: every filter is in XDP, and every frame
// meets the fate a brute-force first match gives. The table holds a
// filter's port ranges and IPv4 prefixes whole in flows it chooses
// (maps.FlowChoices), where prefix blocks and a subtable per pair of
// prefix lengths would need more subtables than it has.
func TestClassBenchFlower(t *testing.T) {
	for _, seed := range classbench.Seeds {
		for _, n := range []int{1000, 10000} {
			t.Run(fmt.Sprintf("%s/%dK", seed, n/1000), func(t *testing.T) { testClassBenchFlower(t, seed, n) })
		}
	}
}

func testClassBenchFlower(t *testing.T, seed string, n int) {
	rules, trace := classbenchSet(t, seed, n, 3000)
	tp := newNftTopo(t)
	file := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(file, []byte(classbench.FlowerBatch(rules, "b0", classbenchFlowerVerdict)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := xdpflow(tp.b, "-b", file)
	took := time.Since(start)
	inXDP, subtables := flowerInXDP(t, tp)
	t.Logf("%s: %d rules; xdpflow -b took %v; %d filters in XDP; %d subtables", seed, len(rules), took.Round(time.Millisecond), inXDP, subtables)
	if err != nil {
		t.Fatalf("%s: xdpflow -b of %d filters: %v: %s", seed, len(rules), err, strings.TrimSpace(out))
	}
	if inXDP != len(rules) {
		t.Errorf("%s: %d of %d skip_sw filters in XDP", seed, inXDP, len(rules))
	}

	frames := make([][]byte, len(trace))
	want := make([]string, len(trace))
	drops := 0
	for i, h := range trace {
		frames[i] = classbenchFrame(h, tp.a0MAC, i)
		want[i] = "c0" // a pass, or no filter: on to the bridge
		if m := classbench.FirstMatch(rules, h); m >= 0 && classbenchFlowerVerdict(m) == "drop" {
			want[i] = "drop"
			drops++
		}
	}
	c0 := xdpflowCounters(t, tp.b)
	sameFates(t, "flower in XDP", tp.frameFates(t, frames), want, trace)
	c1 := xdpflowCounters(t, tp.b)
	xdpDrops := int(c1["drop"] - c0["drop"])
	t.Logf("%s: %d frames, %d to drop, %d dropped in XDP", seed, len(frames), drops, xdpDrops)
	// skip_sw filters are in XDP alone: every drop is XDP's.
	if xdpDrops != drops {
		t.Errorf("%s: XDP dropped %d of the %d frames to drop", seed, xdpDrops, drops)
	}
}

// flowerInXDP is how many of b0's filters are in XDP, and the subtables
// b0's table uses (`xdpflow -j status`).
func flowerInXDP(t *testing.T, tp *nftTopo) (inXDP, subtables int) {
	t.Helper()
	for _, f := range filters(t, tp.b, "b0") {
		if f.Offloaded {
			inXDP++
		}
	}
	out := mustXdpflow(t, tp.b, "-j", "status")
	var st []struct {
		Dev       string `json:"dev"`
		Subtables int    `json:"subtables"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		t.Fatalf("xdpflow -j status: %v: %s", err, out)
	}
	return inXDP, st[0].Subtables
}
