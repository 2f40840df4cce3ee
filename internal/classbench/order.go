package classbench

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
)

// tuple is a filter's shape: its prefix lengths, port range widths and
// whether it names a protocol. Filters of one tuple cannot overlap without
// being identical, which is why db_generator groups by it.
type tuple struct {
	slen, dlen     int
	swidth, dwidth int
	proto          bool
}

func (f *draft) tuple() tuple {
	return tuple{
		slen: f.slen, dlen: f.dlen,
		swidth: int(f.sport.Hi) - int(f.sport.Lo) + 1,
		dwidth: int(f.dport.Hi) - int(f.dport.Lo) + 1,
		proto:  f.proto != 0,
	}
}

// scope is the number of header bits the tuple leaves free, rounded down:
// wildcard address bits, log2 of the port widths, 8 for a wildcard protocol.
func (t tuple) scope() int {
	free := float64(64-t.slen-t.dlen) + math.Log2(float64(t.swidth)) + math.Log2(float64(t.dwidth))
	if !t.proto {
		free += 8
	}
	return int(free)
}

// orderUnique drops the filters identical to an earlier one (the only
// redundancy db_generator removes) and returns the rest in priority order:
// tuples from the narrowest scope to the widest, so that a filter comes
// before any wider one that could cover it; tuples of equal scope in the
// order they first appear, and filters within a tuple in generation order.
func orderUnique(d []draft) []Rule {
	type group struct {
		scope, first int
		rules        []Rule
	}
	groups := map[tuple]*group{}
	var order []*group
	seen := make(map[Rule]bool, len(d))
	for i := range d {
		r := d[i].rule()
		if seen[r] {
			continue
		}
		seen[r] = true
		t := d[i].tuple()
		g := groups[t]
		if g == nil {
			g = &group{scope: t.scope(), first: i}
			groups[t] = g
			order = append(order, g)
		}
		g.rules = append(g.rules, r)
	}
	slices.SortFunc(order, func(a, b *group) int {
		return cmp.Or(cmp.Compare(a.scope, b.scope), cmp.Compare(a.first, b.first))
	})
	out := make([]Rule, 0, len(seen))
	for _, g := range order {
		out = append(out, g.rules...)
	}
	return out
}

func (f *draft) rule() Rule {
	r := Rule{
		Src:     prefix4(f.src, f.slen),
		Dst:     prefix4(f.dst, f.dlen),
		SrcPort: f.sport,
		DstPort: f.dport,
		Proto:   f.proto,
	}
	if f.proto != 0 {
		r.ProtoMask = 0xff
	}
	return r
}

func prefix4(addr uint32, bits int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{byte(addr >> 24), byte(addr >> 16), byte(addr >> 8), byte(addr)})
	return netip.PrefixFrom(a, bits)
}
