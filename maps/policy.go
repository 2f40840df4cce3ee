package maps

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Policy is how a device's TC filters are mirrored into its table. It is
// kept with the device's pins (loader.Device.Policy), so that every
// process mirrors alike: a `filter add` installs the rules the running
// daemon would, and the two do not reinstall each other's.
type Policy struct {
	// Keepalive: how often each offloaded filter lets one packet go on
	// to TC, so that TC's counters move (rule.Rule.Keepalive); 0: never.
	Keepalive time.Duration
	// MirrorSkipHW: mirror filters flagged skip_hw too.
	MirrorSkipHW bool
}

// DefaultPolicy is a device's policy until a daemon sets one: one packet
// per second and CPU of each offloaded filter goes on to TC. Open vSwitch
// ages a flow out after 10 s without its TC counters moving
// (other_config:max-idle); a second keeps well inside that at a
// negligible cost.
var DefaultPolicy = Policy{Keepalive: time.Second}

// policyRecord is the pinned map's one value.
type policyRecord struct {
	KeepaliveNs uint64
	Flags       uint32
	_           uint32
}

const policySkipHW = 1

// PolicyMapSpec is the map a device's policy is pinned in.
func PolicyMapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: "xf_policy", Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1}
}

// ReadPolicy reads a policy map; a device without one has DefaultPolicy.
// The map is written before it is pinned, so what it holds was written.
func ReadPolicy(m *ebpf.Map) (Policy, error) {
	if m == nil {
		return DefaultPolicy, nil
	}
	var r policyRecord
	if err := m.Lookup(uint32(0), &r); err != nil {
		return DefaultPolicy, fmt.Errorf("read mirror policy: %w", err)
	}
	return Policy{Keepalive: time.Duration(r.KeepaliveNs), MirrorSkipHW: r.Flags&policySkipHW != 0}, nil
}

// WritePolicy writes p into a policy map.
func WritePolicy(m *ebpf.Map, p Policy) error {
	if m == nil {
		return errors.New("write mirror policy: no policy map")
	}
	if p.Keepalive < 0 {
		return fmt.Errorf("write mirror policy: keepalive %v", p.Keepalive)
	}
	r := policyRecord{KeepaliveNs: uint64(p.Keepalive)}
	if p.MirrorSkipHW {
		r.Flags |= policySkipHW
	}
	if err := m.Put(uint32(0), &r); err != nil {
		return fmt.Errorf("write mirror policy: %w", err)
	}
	return nil
}
