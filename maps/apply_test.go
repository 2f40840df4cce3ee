package maps_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	xmaps "github.com/xdpflow/xdpflow/maps"
)

// TestApplyLiveChangeSucceeds: a write step that fails after a change went
// live (cache invalidation, subtable list, spec removal, grace wait, meta)
// leaves the change made, and Apply says so: no error once the repair
// finishes it, the new rule deciding packets, and a new process reading
// the same state.
func TestApplyLiveChangeSucceeds(t *testing.T) {
	for _, step := range []string{"invalidate", "publish", "specs", "settle", "meta"} {
		t.Run(step, func(t *testing.T) {
			h := newHarness(t, 1, 1<<12)
			h.install(10, 1, "protocol ip flower ip_proto udp dst_port 1000 action drop")
			xmaps.FailStep(t, step, errors.New("injected"))
			// A new mask: a new subtable in, the old one emptied out,
			// the old rule's spec removed.
			if !h.install(10, 1, "protocol ip flower ip_proto udp dst_port 1000-1010 action drop") {
				t.Fatal("replace refused")
			}
			xmaps.FailStep(t, "", nil)
			for port, want := range map[uint16]uint32{1000: 1, 1005: 1, 1011: 2} { // XDP_DROP, XDP_PASS
				frame := benchFrame(port)
				ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)})
				if err != nil {
					t.Fatal(err)
				}
				if ret != want {
					t.Errorf("udp dport %d: verdict %d, want %d", port, ret, want)
				}
			}
			h.reopen()
			rules := h.table.Rules()
			if len(rules) != 1 || !strings.Contains(rules[0].Rule.Text, "1000-1010") {
				t.Fatalf("a new process reads %d rules, want the replacement only", len(rules))
			}
			h.checkFlows()
		})
	}
}

// TestRangeDuplicateRefused: flower refuses a second filter with the same
// key, mask and ranges in one pref (fl_ht_insert_unique: EEXIST), as it
// does an exact-port duplicate; the same range in another pref, or
// another range in the same pref, is accepted.
func TestRangeDuplicateRefused(t *testing.T) {
	h := newHarness(t, 1, 1<<12)
	const r = "protocol ip flower ip_proto udp dst_port 2000-2100 action drop"
	if !h.install(10, 1, r) {
		t.Fatal("first filter refused")
	}
	if h.install(10, 2, r) {
		t.Error("a second identical ranged filter in one pref was accepted")
	}
	if h.install(10, 3, "protocol ip flower ip_proto udp dst_port 1000 action drop") == false {
		t.Error("an exact port beside it was refused")
	}
	if h.install(10, 4, "protocol ip flower ip_proto udp dst_port 1000 action drop") {
		t.Error("a second identical exact filter in one pref was accepted")
	}
	if !h.install(10, 5, "protocol ip flower ip_proto udp dst_port 2000-2101 action drop") {
		t.Error("another range in the same pref was refused")
	}
	if !h.install(11, 1, r) {
		t.Error("the same range in another pref was refused")
	}
	// Replacing a filter by itself is no duplicate.
	if !h.install(10, 1, r) {
		t.Error("replacing a ranged filter by itself was refused")
	}
	h.checkFlows()
}
