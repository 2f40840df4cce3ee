// Package classbench makes synthetic 5-tuple filter sets and header traces
// the way ClassBench does (D. E. Taylor and J. S. Turner, "ClassBench: A
// Packet Classification Benchmark", tech report WUCSE-2004-28, Washington
// University in St. Louis, 2004; IEEE/ACM ToN 15(3), 2007), from
// ClassBench's published parameter files ("seeds", embedded in seeds/) and
// with fixed random seeds. The code is our own, written from the report
// and from reading ClassBench's db_generator and trace_generator.
//
// # Filters
//
// A seed (report §4) is statistics of a real filter set. Generate makes n
// filters in three steps.
//
// First, each filter gets its "application" and its prefix lengths,
// independently of the others: a protocol from the protocol distribution;
// a port-pair class (§3.3.2) from that protocol's class distribution; port
// ranges for the class (fixed ranges for WC/HI/LO, a draw from the seed's
// arbitrary-range or exact-port list for AR/EM); then a total prefix length
// from the class's distribution and a source length from the distribution
// for that total (§3.4), the destination getting the rest. The scope
// adjustments bias the class and the total-length draws (see scoped), and
// the smoothing adjustment spreads each spike of the length distributions
// over its neighbours with binomial weights (see smoothLengths).
//
// Then addresses come from address trees (§3.4): the source tree is
// grown from the root, each node splitting its filters between one or two
// children by the seed's per-depth branching probabilities and skew, with
// the nesting limit keeping prefixes from stacking deeper than the seed's
// (assignSources); destinations first copy their source's bits, depth by
// depth, with the seed's correlation probabilities, and are finished the
// same way as sources where the copying stops (assignDestinations). With
// ScaleAddresses, the top of both trees is balanced in proportion to n over
// the seed's size, as db_generator's -b does (balanceTop).
//
// Last, filters identical to an earlier one are dropped, so a set comes out
// somewhat smaller than asked for, and the rest are ordered from the most
// specific tuple to the least, as db_generator orders them (orderUnique).
//
// # Where this differs from db_generator
//
//   - The -flags section (TCP flags and ICMP type/code as value/mask pairs)
//     and the -extra section (extra synthetic fields; empty in every
//     published seed) are read over and not generated: our classifier has
//     no such fields. Duplicates are therefore judged without flags, so
//     filters db_generator would keep apart for their flags alone are
//     merged. That removes a few more filters where a seed gives one
//     protocol several flag values (TCP in acl1, ICMP and TCP in fw1 and
//     ipc1): about 2% of a 1K acl1 set, much less elsewhere.
//   - Distributions are sampled in proportion to their weights rather than
//     by forcing the last entry's cumulative probability to 1, so rounding
//     in the seeds never selects an entry of weight zero (in db_generator
//     that could pick a port-pair class with no prefix lengths, and read
//     garbage).
//   - The random numbers come from a PCG generator seeded by the caller, not
//     drand48 seeded by the clock, so sets are reproducible but not the same
//     draws as any db_generator run; only their statistics agree.
package classbench

import (
	"math/rand/v2"
	"net/netip"
)

// Rule is one ClassBench filter: IPv4 prefixes, inclusive port ranges, protocol value/mask.
type Rule struct {
	Src, Dst         netip.Prefix // IPv4
	SrcPort, DstPort PortRange    // inclusive; {0, 65535} is the wildcard
	Proto, ProtoMask uint8        // mask 0 (wildcard) or 0xff
}

// PortRange is an inclusive range of port numbers.
type PortRange struct{ Lo, Hi uint16 }

// Options are db_generator's high-level controls.
type Options struct {
	// Smoothness, 0..64, spreads the prefix-length distributions: 0 keeps
	// the seed's, 64 is close to flat.
	Smoothness int
	// AddressScope and ApplicationScope, -1..1, bias the draws of total
	// prefix length and of port-pair class: positive values favour less
	// specific filters (shorter prefixes, wider ports), negative values
	// more specific ones.
	AddressScope, ApplicationScope float64
	// ScaleAddresses balances the top of the address trees when more
	// filters are asked for than the seed's set had (db_generator's -b).
	ScaleAddresses bool
}

// DefaultOptions: what the literature's sets use: db_generator -bc SEED N 2 -0.5 0.1 (TupleMerge, PartitionSort, NeuroCuts).
var DefaultOptions = Options{Smoothness: 2, AddressScope: -0.5, ApplicationScope: 0.1, ScaleAddresses: true}

// pcgStream fixes the second word of the PCG state, so that the int64 seed
// alone determines a set.
const pcgStream = 0x636c617373626e63 // "classbnc"

// Generate makes a filter set of at most n rules from seed s (as returned
// by LoadSeed or ParseSeed), in priority order, index 0 first. The same
// (s, n, seed, opt) always gives the same set.
func Generate(s *Seed, n int, seed int64, opt Options) []Rule {
	if n <= 0 {
		return nil
	}
	opt.Smoothness = min(max(opt.Smoothness, 0), 64)
	opt.AddressScope = min(max(opt.AddressScope, -1), 1)
	opt.ApplicationScope = min(max(opt.ApplicationScope, -1), 1)

	r := rand.New(rand.NewPCG(uint64(seed), pcgStream))
	m := newModel(s, opt)
	d := make([]draft, n)
	for i := range d {
		d[i] = m.draw(r)
	}

	src, dst := treeShape(s.SrcTree), treeShape(s.DstTree)
	if factor := float64(n) / float64(s.Scale); opt.ScaleAddresses && factor > 1 {
		src.balanceTop(factor)
		dst.balanceTop(factor)
	}
	assignSources(d, &src, s.SrcNest, r)
	assignDestinations(d, &dst, s.DstNest, &s.Correlation, r)
	return orderUnique(d)
}

// draft is a filter under construction.
type draft struct {
	proto        uint8 // 0: any
	sport, dport PortRange
	slen, dlen   int
	src, dst     uint32 // top slen / dlen bits only
}

// model holds a seed's distributions ready to draw from.
type model struct {
	protos  []Protocol
	proto   cdf
	classes []cdf // per protocol
	ports   portPicker
	lengths [NumClasses]lengthTable
	opt     Options
}

func newModel(s *Seed, opt Options) *model {
	m := &model{protos: s.Protocols, ports: newPortPicker(s), opt: opt}
	weights := make([]float64, len(s.Protocols))
	for i, p := range s.Protocols {
		weights[i] = p.Weight
		m.classes = append(m.classes, newCDF(p.Classes[:]))
	}
	m.proto = newCDF(weights)
	for c := range m.lengths {
		m.lengths[c] = newLengthTable(s.PrefixPairs[c], opt.Smoothness)
	}
	return m
}

// draw makes the application part and the prefix lengths of one filter.
func (m *model) draw(r *rand.Rand) draft {
	p := m.proto.index(r.Float64())
	c := PortClass(m.classes[p].index(scoped(r.Float64(), m.opt.ApplicationScope)))
	sp, dp := m.ports.pair(c, r)
	sl, dl := m.lengths[c].pick(scoped(r.Float64(), m.opt.AddressScope), r.Float64())
	return draft{proto: m.protos[p].Value, sport: sp, dport: dp, slen: sl, dlen: dl}
}
