package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// lookupPred turns a set lookup into a disjunction of its elements.
func lookupPred(rf *regFile, l *expr.Lookup, e *env) (*pred, error) {
	if l.Invert {
		return nil, fmt.Errorf("negated set lookup")
	}
	si := e.sets[l.SetName]
	if si == nil {
		return nil, fmt.Errorf("set not found")
	}
	if l.IsDestRegSet && l.DestRegister != unix.NFT_REG_VERDICT {
		return nil, fmt.Errorf("map into a data register")
	}
	if si.Set.HasTimeout || si.Set.Dynamic {
		return nil, fmt.Errorf("set with timeouts or updated from the packet path")
	}
	keyLen := si.Set.KeyType.Bytes
	if len(si.Elements) > 0 {
		// google/nftables mixes up a map's key and data types; the
		// elements say how long the key is.
		keyLen = uint32(len(si.Elements[0].Key))
	}
	fields, err := keyFields(rf, l.SourceRegister, keyLen)
	if err != nil {
		return nil, err
	}
	p := &pred{fields: fields}
	names := make([]string, len(p.fields))
	for k, f := range p.fields {
		names[k] = f.String()
	}
	p.what = strings.Join(names, " . ")
	els, err := elements(si)
	if err != nil {
		return nil, err
	}
	for _, el := range els {
		cs, err := elementChoices(&el, fields)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if l.IsDestRegSet {
				c.verdict = el.verdict
			}
			p.choices = append(p.choices, c)
		}
	}
	if len(p.choices) == 0 {
		// An empty set matches nothing: an impossible predicate.
		p.choices = nil
	}
	return p, nil
}

// keyFields are the fields a lookup's key is built from: consecutive
// loaded values from register reg on, each padded to 4 bytes, keyLen
// bytes in all.
func keyFields(rf *regFile, reg, keyLen uint32) ([]field, error) {
	i, ok := regIndex(reg)
	if !ok {
		return nil, fmt.Errorf("source register %d", reg)
	}
	var fields []field
	for total := uint32(0); total < keyLen; {
		if i >= len(rf.slots) {
			return nil, fmt.Errorf("key wider than the registers")
		}
		s := rf.slots[i]
		if !s.known || !s.start || s.konst != nil {
			return nil, fmt.Errorf("key is not built from keyed fields")
		}
		fields = append(fields, s.f)
		padded := (s.f.len + 3) &^ 3
		total += padded
		i += int(padded / 4)
		if s.mask != nil {
			return nil, fmt.Errorf("masked key field")
		}
	}
	return fields, nil
}

// elementChoices is one element of a set as choices over the key's
// fields: every field's part is a range [lo, hi], and the element is
// their product.
func elementChoices(el *nftablesElement, fields []field) ([]choice, error) {
	split := func(b []byte) ([][]byte, bool) {
		var out [][]byte
		off := uint32(0)
		for _, f := range fields {
			if int(off+f.len) > len(b) {
				return nil, false
			}
			out = append(out, b[off:off+f.len])
			off += (f.len + 3) &^ 3
		}
		return out, true
	}
	lo, ok1 := split(el.from)
	hi, ok2 := split(el.to)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("element shorter than the key")
	}
	combos := []choice{{}}
	for k, f := range fields {
		var parts []bytesCmp
		if bytes.Equal(lo[k], hi[k]) {
			parts = []bytesCmp{{val: append([]byte(nil), lo[k]...), mask: fullMask(f.len)}}
		} else if f.len <= 8 {
			parts = prefixes(beUint(lo[k]), beUint(hi[k]), f.len)
		} else {
			parts = wideRange(lo[k], hi[k])
			if parts == nil {
				return nil, fmt.Errorf("interval of %d-byte values that is not a prefix", f.len)
			}
		}
		var next []choice
		for _, c := range combos {
			for _, pt := range parts {
				next = append(next, choice{parts: append(append([]bytesCmp(nil), c.parts...), pt)})
			}
		}
		combos = next
	}
	return combos, nil
}

// elementVerdict reads a verdict map element's data: nested
// NFTA_VERDICT_CODE (be32) and NFTA_VERDICT_CHAIN attributes.
func elementVerdict(el *nftables.SetElement) *verdict {
	if el.VerdictData != nil {
		return convVerdict(el.VerdictData)
	}
	if len(el.Val) == 0 {
		return nil
	}
	ad, err := netlink.NewAttributeDecoder(el.Val)
	if err != nil {
		return &verdict{kind: vNone}
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil {
		return &verdict{kind: vNone}
	}
	return convVerdict(v)
}

func convVerdict(v *expr.Verdict) *verdict {
	if v == nil {
		return nil
	}
	switch v.Kind {
	case expr.VerdictAccept:
		return &verdict{kind: vAccept}
	case expr.VerdictDrop:
		return &verdict{kind: vDrop}
	case expr.VerdictJump:
		return &verdict{kind: vJump, chain: v.Chain}
	case expr.VerdictGoto:
		return &verdict{kind: vGoto, chain: v.Chain}
	case expr.VerdictReturn:
		return &verdict{kind: vReturn}
	}
	return &verdict{kind: vNone}
}

// nftablesElement is one set element as an inclusive range.
type nftablesElement struct {
	from, to []byte
	verdict  *verdict
}

// elements returns a set's elements as inclusive ranges. Interval sets
// hold start elements and end markers (exclusive ends); concatenated
// interval sets carry the end in KeyEnd.
func elements(si *setInfo) ([]nftablesElement, error) {
	var out []nftablesElement
	if !si.Set.Interval {
		for _, el := range si.Elements {
			out = append(out, nftablesElement{from: el.Key, to: el.Key, verdict: elementVerdict(&el)})
		}
		return out, nil
	}
	if si.Set.Concatenation {
		for _, el := range si.Elements {
			if el.KeyEnd == nil {
				return nil, fmt.Errorf("concatenated interval element without an end")
			}
			out = append(out, nftablesElement{from: el.Key, to: el.KeyEnd, verdict: elementVerdict(&el)})
		}
		return out, nil
	}
	// Plain interval set: sort by key, pair each start with the next end.
	els := append([]nftablesSetElement(nil), toPlain(si)...)
	sortElements(els)
	for k := 0; k < len(els); k++ {
		if els[k].end {
			continue
		}
		from := els[k].key
		var to []byte
		if k+1 < len(els) && els[k+1].end {
			to = decrement(els[k+1].key)
		} else {
			to = bytes.Repeat([]byte{0xff}, len(from))
		}
		out = append(out, nftablesElement{from: from, to: to, verdict: els[k].verdict})
	}
	return out, nil
}

type nftablesSetElement struct {
	key     []byte
	end     bool
	verdict *verdict
}

func toPlain(si *setInfo) []nftablesSetElement {
	out := make([]nftablesSetElement, 0, len(si.Elements))
	for _, el := range si.Elements {
		out = append(out, nftablesSetElement{key: el.Key, end: el.IntervalEnd, verdict: elementVerdict(&el)})
	}
	return out
}

func sortElements(els []nftablesSetElement) {
	sort.SliceStable(els, func(i, j int) bool { return lessElement(els[i], els[j]) })
}

func lessElement(a, b nftablesSetElement) bool {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.end && !b.end
}

func decrement(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}
