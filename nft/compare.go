package nft

import (
	"bytes"
	"fmt"

	"github.com/google/nftables/expr"
)

// Comparisons and ranges as predicates: a masked value, one prefix per
// mask bit for "!=", the fewest prefixes covering a range.

func fullMask(n uint32) []byte {
	return bytes.Repeat([]byte{0xff}, int(n))
}

func slotMask(s regSlot) []byte {
	if s.mask != nil {
		return s.mask
	}
	return fullMask(s.f.len)
}

// cmpPred turns a comparison into a predicate; nil means it can never hold.
func cmpPred(s regSlot, op expr.CmpOp, data []byte) (*pred, error) {
	if len(data) != int(s.f.len) {
		return nil, fmt.Errorf("compares %d bytes with a %d-byte value", len(data), s.f.len)
	}
	m := slotMask(s)
	p := &pred{fields: []field{s.f}, what: s.f.String()}
	switch op {
	case expr.CmpOpEq:
		for i := range data {
			if data[i]&^m[i] != 0 {
				return nil, nil
			}
		}
		p.choices = []choice{{parts: []bytesCmp{{val: append([]byte(nil), data...), mask: m}}}}
		return p, nil
	case expr.CmpOpNeq:
		// Everything but one masked value: one entry per mask bit, each
		// equal above that bit and different at it.
		for i := range data {
			if data[i]&^m[i] != 0 {
				return &pred{fields: []field{s.f}, what: s.f.String(),
					choices: []choice{{parts: []bytesCmp{{val: make([]byte, len(data)), mask: make([]byte, len(data))}}}}}, nil
			}
		}
		pm := make([]byte, len(data))
		for i := range data {
			for bit := 7; bit >= 0; bit-- {
				b := byte(1) << bit
				if m[i]&b == 0 {
					continue
				}
				pm[i] |= b
				v := make([]byte, len(data))
				for j := 0; j <= i; j++ {
					v[j] = data[j] & pm[j]
				}
				v[i] ^= b
				p.choices = append(p.choices, choice{parts: []bytesCmp{{val: v, mask: append([]byte(nil), pm...)}}})
			}
		}
		return p, nil
	}
	// Orderings: a range over the (unmasked) field.
	if s.mask != nil || s.f.len > 4 {
		return nil, fmt.Errorf("ordered comparison of a masked or wide field")
	}
	lo, hi := uint64(0), uint64(1)<<(8*s.f.len)-1
	v := beUint(data)
	switch op {
	case expr.CmpOpLt:
		if v == 0 {
			return nil, nil
		}
		hi = v - 1
	case expr.CmpOpLte:
		hi = v
	case expr.CmpOpGt:
		if v == hi {
			return nil, nil
		}
		lo = v + 1
	case expr.CmpOpGte:
		lo = v
	default:
		return nil, fmt.Errorf("comparison %d", op)
	}
	p.choices = rangeChoices(lo, hi, s.f.len)
	return p, nil
}

func beUint(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

func putBE(v uint64, n uint32) []byte {
	b := make([]byte, n)
	for i := int(n) - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

// prefixes covers [lo, hi] with the fewest value/mask prefixes of n bytes.
func prefixes(lo, hi uint64, n uint32) []bytesCmp {
	var out []bytesCmp
	width := 8 * uint64(n)
	for lo <= hi {
		size := uint64(1)
		for size < 1<<width && lo&(size*2-1) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		out = append(out, bytesCmp{val: putBE(lo, n), mask: putBE(^(size-1)&(1<<width-1), n)})
		if lo+size-1 == 1<<width-1 {
			break
		}
		lo += size
	}
	return out
}

func rangeChoices(lo, hi uint64, n uint32) []choice {
	var out []choice
	for _, p := range prefixes(lo, hi, n) {
		out = append(out, choice{parts: []bytesCmp{p}})
	}
	return out
}

func rangePred(s regSlot, neq bool, from, to []byte) (*pred, error) {
	if s.mask != nil || s.f.len > 4 || len(from) != int(s.f.len) || len(to) != int(s.f.len) {
		return nil, fmt.Errorf("range over a masked or wide field")
	}
	lo, hi := beUint(from), beUint(to)
	p := &pred{fields: []field{s.f}, what: s.f.String()}
	if !neq {
		p.choices = rangeChoices(lo, hi, s.f.len)
		return p, nil
	}
	if lo > 0 {
		p.choices = append(p.choices, rangeChoices(0, lo-1, s.f.len)...)
	}
	if top := uint64(1)<<(8*s.f.len) - 1; hi < top {
		p.choices = append(p.choices, rangeChoices(hi+1, top, s.f.len)...)
	}
	return p, nil
}

// wideRange expresses [lo, hi] over a wide value (an IPv6 address) as one
// prefix, which is what nft writes for "2001:db8::/32" in a set.
func wideRange(lo, hi []byte) []bytesCmp {
	m := make([]byte, len(lo))
	i := 0
	for ; i < len(lo) && lo[i] == hi[i]; i++ {
		m[i] = 0xff
	}
	if i < len(lo) {
		// lo[i..] must be 0...0 and hi[i..] 1...1 on a bit boundary.
		x := lo[i] ^ hi[i]
		bits := byte(0)
		for x&0x80 == 0 {
			x <<= 1
			bits++
		}
		m[i] = ^byte(0xff >> bits)
		if lo[i]&^m[i] != 0 || hi[i]|m[i] != 0xff {
			return nil
		}
		for j := i + 1; j < len(lo); j++ {
			if lo[j] != 0 || hi[j] != 0xff {
				return nil
			}
		}
	}
	return []bytesCmp{{val: append([]byte(nil), lo...), mask: m}}
}
