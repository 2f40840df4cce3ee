package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// CounterNames names the program's counters (Table.Counters' indexes), as
// status and the metrics show them.
var CounterNames = map[Counter]string{
	CounterRX:              "rx",
	CounterHit:             "hits",
	CounterMiss:            "misses",
	CounterUnparsed:        "unparsed",
	CounterDrop:            "drop",
	CounterPass:            "pass",
	CounterTX:              "tx",
	CounterRedirect:        "redirect",
	CounterActionError:     "action_errors",
	CounterSubtableLookups: "subtable_lookups",
	CounterCacheHit:        "cache_hits",
	CounterKeepalive:       "keepalive_to_kernel",
}

// ReadCounters sums the per-CPU counters of the program's counters map
// (a device's, or its pin), indexed by Counter.
func ReadCounters(m *ebpf.Map) ([NumCounters]uint64, error) {
	var out [NumCounters]uint64
	var per []counterRecords
	if err := m.Lookup(uint32(0), &per); err != nil {
		return out, fmt.Errorf("read counters: %w", err)
	}
	for _, c := range per {
		for i, v := range c.N {
			out[i] += v
		}
	}
	// The program counts how each packet ended, not that it came or hit.
	hit := out[CounterDrop] + out[CounterPass] + out[CounterTX] + out[CounterRedirect] +
		out[CounterActionError] + out[CounterKeepalive]
	out[CounterHit] = hit
	out[CounterRX] = hit + out[CounterMiss] + out[CounterUnparsed]
	return out, nil
}
