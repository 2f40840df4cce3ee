package bpf

import "testing"

// TestLoadSpecReplacesTheKfuncCall: the plain spec has no kfunc call and
// no kfunc metadata left (a kernel without the kfunc made cilium/ebpf
// refuse the metadata on the replacing mov).
func TestLoadSpecReplacesTheKfuncCall(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for i, ins := range spec.Programs["xdpflow"].Instructions {
		if ins.IsKfuncCall() || ins.Reference() == vlanTagKfunc {
			t.Errorf("instruction %d still calls or names %s: %v", i, vlanTagKfunc, ins)
		}
	}
}
