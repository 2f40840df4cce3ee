package maps

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
)

// cacheSetsPerCPU is how many flow cache sets each CPU owns.
const cacheSetsPerCPU = uint32(bpf.XdpflowXfLimitsXF_CACHE_SETS)

// SizeSpec sizes the maps of spec that depend on the machine rather than
// on the device's limits: the flow cache holds cacheSetsPerCPU sets for
// every possible CPU (it is one array indexed by CPU, see bpf/xdpflow.c).
// Call it before loading spec.
func SizeSpec(spec *ebpf.CollectionSpec) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("size flow cache: %w", err)
	}
	m, ok := spec.Maps[bpf.XdpflowMapFlowCache]
	if !ok {
		return fmt.Errorf("size flow cache: no map %s in the program", bpf.XdpflowMapFlowCache)
	}
	m.MaxEntries = uint32(cpus) * cacheSetsPerCPU
	return nil
}
