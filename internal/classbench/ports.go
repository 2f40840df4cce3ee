package classbench

import (
	"fmt"
	"math/rand/v2"
)

// NumClasses is the number of port-pair classes (tech report §3.3.2).
const NumClasses = 25

// PortClass is a port-pair class: the kind of source and of destination
// port specification of a filter. The kinds are WC (wildcard), HI (the
// ephemeral ports 1024-65535), LO (the well-known ports 0-1023), AR (an
// arbitrary range) and EM (an exact port). Classes are numbered in the
// order of the parameter files.
type PortClass uint8

type portKind uint8

const (
	kindWC portKind = iota
	kindHI
	kindLO
	kindAR
	kindEM
)

var kindNames = [...]string{"wc", "hi", "lo", "ar", "em"}

// classKinds gives each class's {source, destination} kinds, in seed order.
var classKinds = [NumClasses][2]portKind{
	{kindWC, kindWC}, {kindWC, kindHI}, {kindHI, kindWC}, {kindHI, kindHI},
	{kindWC, kindLO}, {kindLO, kindWC}, {kindHI, kindLO}, {kindLO, kindHI},
	{kindLO, kindLO}, {kindWC, kindAR}, {kindAR, kindWC}, {kindHI, kindAR},
	{kindAR, kindHI}, {kindWC, kindEM}, {kindEM, kindWC}, {kindHI, kindEM},
	{kindEM, kindHI}, {kindLO, kindAR}, {kindAR, kindLO}, {kindLO, kindEM},
	{kindEM, kindLO}, {kindAR, kindAR}, {kindAR, kindEM}, {kindEM, kindAR},
	{kindEM, kindEM},
}

// String returns the class's name as in the parameter files, e.g. "wc_em".
func (c PortClass) String() string {
	if c >= NumClasses {
		return fmt.Sprintf("PortClass(%d)", uint8(c))
	}
	k := classKinds[c]
	return kindNames[k[0]] + "_" + kindNames[k[1]]
}

// section is the name of the class's prefix-pair section.
func (c PortClass) section() string { return "-" + c.String() }

// The fixed ranges of the WC, HI and LO kinds. db_generator uses 1024 as
// the first ephemeral port (the tech report's text says 1023).
var (
	wildcardPorts = PortRange{0, 65535}
	highPorts     = PortRange{1024, 65535}
	lowPorts      = PortRange{0, 1023}
)

// portList returns the seed's list for the AR or EM kind of one side
// (0 source, 1 destination), or nil for the fixed kinds.
func (s *Seed) portList(side int, k portKind) ([]WeightedRange, string) {
	switch {
	case k == kindAR && side == 0:
		return s.SrcRanges, "-spar"
	case k == kindEM && side == 0:
		return s.SrcExact, "-spem"
	case k == kindAR:
		return s.DstRanges, "-dpar"
	case k == kindEM:
		return s.DstExact, "-dpem"
	}
	return nil, ""
}

// classUsable says why filters of class c cannot be made from s, if so.
func (s *Seed) classUsable(c PortClass) error {
	feasible := false
	for _, t := range s.PrefixPairs[c] {
		for _, l := range t.Src {
			if t.Weight > 0 && l.Weight > 0 && l.Len <= t.Total && t.Total-l.Len <= 32 {
				feasible = true
			}
		}
	}
	if !feasible {
		return fmt.Errorf("class %s has no prefix lengths in %s", c, c.section())
	}
	for side, k := range classKinds[c] {
		if list, name := s.portList(side, k); name != "" && newCDF(portWeights(list)).total() == 0 {
			return fmt.Errorf("class %s needs ports from %s, which is empty", c, name)
		}
	}
	return nil
}

func portWeights(list []WeightedRange) []float64 {
	w := make([]float64, len(list))
	for i, r := range list {
		w[i] = r.Weight
	}
	return w
}

// portTable draws ranges from one port list section.
type portTable struct {
	ranges []WeightedRange
	cdf    cdf
}

// portPicker draws the port ranges of a filter given its class.
type portPicker struct {
	lists [2][2]portTable // [side][0 = AR, 1 = EM]
}

func newPortPicker(s *Seed) portPicker {
	var p portPicker
	for side := range 2 {
		for i, k := range []portKind{kindAR, kindEM} {
			list, _ := s.portList(side, k)
			p.lists[side][i] = portTable{list, newCDF(portWeights(list))}
		}
	}
	return p
}

// pair draws the source and destination ranges of a filter of class c.
func (p *portPicker) pair(c PortClass, r *rand.Rand) (src, dst PortRange) {
	k := classKinds[c]
	return p.one(0, k[0], r), p.one(1, k[1], r)
}

func (p *portPicker) one(side int, k portKind, r *rand.Rand) PortRange {
	switch k {
	case kindWC:
		return wildcardPorts
	case kindHI:
		return highPorts
	case kindLO:
		return lowPorts
	}
	t := &p.lists[side][k-kindAR]
	return t.ranges[t.cdf.index(r.Float64())].Range
}
