package classbench

import (
	"math"
	"math/rand/v2"
	"net/netip"
)

// Header is the 5-tuple of one packet of a trace.
type Header struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

// The Pareto parameters of trace_generator's documented example
// ("trace_generator 1 0.1 10 MyFilters"); the tool itself has no defaults.
// With them nine bursts in ten are a single header, and the rest have a
// heavy tail.
const (
	DefaultParetoA = 1
	DefaultParetoB = 0.1
)

// traceStream is the second word of the trace generator's PCG state.
const traceStream = 0x7472616365676e31 // "tracegn1"

// Trace makes n headers that probe rules the way ClassBench's
// trace_generator does: pick a rule at random, make a header at a random
// corner of it (each field at the low or the high end of the rule's range,
// so headers sit on rule boundaries), and repeat
// that header a Pareto-distributed number of times, ceil(b / U^(1/a)), for
// locality of reference. b = 0 (or a <= 0) gives no repeats. Unlike
// trace_generator, which stops once it has at least n headers, the trace is
// cut at exactly n. The same arguments always give the same trace.
func Trace(rules []Rule, n int, seed int64, a, b float64) []Header {
	if len(rules) == 0 || n <= 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(uint64(seed), traceStream))
	out := make([]Header, 0, n)
	for len(out) < n {
		h := corner(rules[r.IntN(len(rules))], r)
		for range burst(a, b, n-len(out), r) {
			out = append(out, h)
		}
	}
	return out
}

// burst draws a Pareto(a, b) repeat count, capped at limit.
func burst(a, b float64, limit int, r *rand.Rand) int {
	if a <= 0 || b <= 0 {
		return 1
	}
	x := math.Ceil(b / math.Pow(1-r.Float64(), 1/a))
	if !(x < float64(limit)) { // also catches +Inf
		return limit
	}
	return max(int(x), 1)
}

// corner picks a random corner of the box rule r covers.
func corner(rule Rule, r *rand.Rand) Header {
	bits := r.Uint32()
	end := func(i int, lo, hi uint32) uint32 {
		if bits>>i&1 == 0 {
			return lo
		}
		return hi
	}
	sLo, sHi := prefixBounds(rule.Src)
	dLo, dHi := prefixBounds(rule.Dst)
	pLo, pHi := rule.Proto&rule.ProtoMask, rule.Proto|^rule.ProtoMask
	return Header{
		Src:     end(0, sLo, sHi),
		Dst:     end(1, dLo, dHi),
		SrcPort: uint16(end(2, uint32(rule.SrcPort.Lo), uint32(rule.SrcPort.Hi))),
		DstPort: uint16(end(3, uint32(rule.DstPort.Lo), uint32(rule.DstPort.Hi))),
		Proto:   uint8(end(4, uint32(pLo), uint32(pHi))),
	}
}

// prefixBounds returns the first and last address of an IPv4 prefix.
func prefixBounds(p netip.Prefix) (lo, hi uint32) {
	a := p.Addr().As4()
	addr := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	mask := ^uint32(0) << (32 - p.Bits()) // 0 for /0: Go shifts out every bit
	return addr & mask, addr | ^mask
}

// Matches reports whether header h falls within rule r.
func (r Rule) Matches(h Header) bool {
	sLo, sHi := prefixBounds(r.Src)
	dLo, dHi := prefixBounds(r.Dst)
	return sLo <= h.Src && h.Src <= sHi &&
		dLo <= h.Dst && h.Dst <= dHi &&
		r.SrcPort.Lo <= h.SrcPort && h.SrcPort <= r.SrcPort.Hi &&
		r.DstPort.Lo <= h.DstPort && h.DstPort <= r.DstPort.Hi &&
		h.Proto&r.ProtoMask == r.Proto&r.ProtoMask
}

// FirstMatch returns the index of the first rule h matches, -1 for none:
// the reference answer a classifier must give, by brute force.
func FirstMatch(rules []Rule, h Header) int {
	for i, r := range rules {
		if r.Matches(h) {
			return i
		}
	}
	return -1
}
