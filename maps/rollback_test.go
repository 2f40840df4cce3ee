package maps_test

import (
	"errors"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// TestRollbackRemovesWideStrayFlows: a change whose new subtable is wide (here
// the all-zero mask of "protocol all") fails after its flows are in
// (before stale flows are deleted); the repair that restores the previous
// state must delete the flows of the subtable the table no longer holds,
// and a new process must open the maps.
func TestRollbackRemovesWideStrayFlows(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, func() {
		h := newHarness(t, 1, 1<<12)
		h.install(10, 1, "protocol ip flower ip_proto udp dst_port 1000 action drop")
		maps.FailStep(t, "demote", errors.New("injected"))
		_, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: parseTC(t, 20, 1, "protocol all flower action pass")}}})
		maps.FailStep(t, "", nil)
		if err == nil {
			t.Fatal("the failing change succeeded")
		}
		t.Logf("apply: %v", err)
		if v, err := h.table.FlowViolations(); err != nil || len(v) > 0 {
			t.Errorf("after the repair: %v %v", v, err)
		}
		if _, err := maps.Open(&h.objs.XdpflowMaps, parseStored); err != nil {
			t.Errorf("a new process cannot open the table: %v", err)
		}
	})
}

// TestUpdateSourceReplaceKeepsMaskPlace: a tc filter replaced in the
// kernel keeps its mask's place among its pref's masks (flower reuses the
// mask; the model's Replace keeps the group). The daemon passes the
// replace to UpdateSource as the old identity out and the new one in,
// which the table takes as a replace: a packet both masks match keeps its
// verdict.
func TestUpdateSourceReplaceKeepsMaskPlace(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarness(t, 1, 1<<12)
		// Mirrored filters, as the daemon installs them.
		a := parseTC(t, 1, 1, "protocol ip flower dst_ip 198.18.0.1 action drop")
		b := parseTC(t, 1, 2, "protocol ip flower src_ip 198.18.1.1 action pass")
		a.Source, b.Source = rule.SourceTC, rule.SourceTC
		if _, _, err := h.table.UpdateSource(rule.SourceTC, []*rule.Rule{a, b}, nil); err != nil {
			t.Fatal(err)
		}
		h.model.Add(a)
		h.model.Add(b)
		frames := [][]byte{udpFrame("198.18.0.1", 9)}
		h.check(frames)
		oldRule := a
		r := parseTC(t, 1, 1, "protocol ip flower dst_ip 198.18.0.1 action vlan push id 5 action drop")
		r.Source = rule.SourceTC
		if _, _, err := h.table.UpdateSource(rule.SourceTC, []*rule.Rule{r}, []rule.Identity{oldRule.Identity()}); err != nil {
			t.Fatal(err)
		}
		h.model.Replace(1, 1, r)
		h.check(frames)
	})
}
