package maps

import (
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
)

// The flow cache's size per CPU, in entries of a narrow key (two per set).
const (
	DefaultCacheEntries = cacheWays << cacheSetBits
	MinCacheEntries     = cacheWays << cacheSetMin
	MaxCacheEntries     = cacheWays << cacheSetMax
)

// SizeSpec sizes the maps of spec that depend on the machine rather than
// on the device's limits: the flow cache holds cacheEntries per CPU (a
// power of two, MinCacheEntries..MaxCacheEntries) for every possible CPU
// (it is one array indexed by CPU, see bpf/lib/maps.h), and the program is
// told its sets per CPU. Call it before loading spec.
func SizeSpec(spec *ebpf.CollectionSpec, cacheEntries int) error {
	if cacheEntries < MinCacheEntries || cacheEntries > MaxCacheEntries || bits.OnesCount(uint(cacheEntries)) != 1 {
		return fmt.Errorf("flow cache of %d entries per CPU: must be a power of two, %d..%d",
			cacheEntries, MinCacheEntries, MaxCacheEntries)
	}
	sets := cacheEntries / cacheWays
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("size flow cache: %w", err)
	}
	m, ok := spec.Maps[mapFlowCache]
	if !ok {
		return fmt.Errorf("size flow cache: no map %s in the program", mapFlowCache)
	}
	v, ok := spec.Variables["xf_cache_set_bits"]
	if !ok {
		return fmt.Errorf("size flow cache: no variable xf_cache_set_bits in the program")
	}
	if err := v.Set(uint32(bits.TrailingZeros(uint(sets)))); err != nil {
		return fmt.Errorf("size flow cache: %w", err)
	}
	m.MaxEntries = uint32(cpus * sets)
	return nil
}

// cacheEntriesPerCPU is the flow cache's size, in narrow entries per CPU.
func (t *Table) cacheEntriesPerCPU() int {
	cpus, err := ebpf.PossibleCPU()
	if err != nil || cpus == 0 {
		return 0
	}
	return int(t.m.FlowCache.MaxEntries()) / cpus * cacheWays
}

// invalidateCache makes every flow cache entry stale for runs that
// start after it; a run that read the old generation may use an old entry
// until it ends (its slots are held until then).
func (t *Table) invalidateCache() error {
	gen, err := t.Generation()
	if err != nil {
		return err
	}
	gen++
	if gen == 0 {
		gen = 1 // 0 is the zeroed slots' generation
	}
	if err := t.m.CacheGen.Put(uint32(0), gen); err != nil {
		return fmt.Errorf("invalidate flow cache: %w", err)
	}
	return nil
}

// Generation is the flow cache generation, which every change by
// any process bumps: a holder of an open Table compares it to the value
// after its own last change to know whether someone else changed the
// table since (and it must be reopened).
func (t *Table) Generation() (uint32, error) {
	var gen uint32
	if err := t.m.CacheGen.Lookup(uint32(0), &gen); err != nil {
		return 0, fmt.Errorf("read cache generation: %w", err)
	}
	return gen, nil
}
