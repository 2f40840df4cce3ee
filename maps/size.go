package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// MaxActionSets bounds the distinct action lists of one device.
const MaxActionSets = 65536

// SizeTables sizes the maps of spec that hold a device's flows and rules:
// flows flow entries (after range expansion) and rules rules, with their
// counters and specs. Call it, with SizeSpec, before loading spec.
func SizeTables(spec *ebpf.CollectionSpec, flows, rules uint32) error {
	sizes := map[string]uint32{
		// Flows of narrow, narrow ranged and wide subtables
		// (flowstore.go): any may hold them all.
		mapFlows:       flows,
		mapFlowsNarrow: flows,
		mapFlowsRanged: flows,
		mapRuleStats:   rules,
		mapRuleSpecs:   rules,
		// Action lists are shared by content: far fewer than rules. The
		// array is preallocated, so it is not sized by the rule count.
		mapActionSets: min(rules, MaxActionSets),
	}
	for name, n := range sizes {
		m, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("size tables: no map %s in the program", name)
		}
		m.MaxEntries = n
	}
	return nil
}
