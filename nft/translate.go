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

// fieldKind says where a compared value comes from.
type fieldKind int

const (
	fPayload     fieldKind = iota + 1
	fMetaProto             // meta protocol: skb->protocol, after one VLAN tag is taken off
	fMetaL4Proto           // meta l4proto
)

// field is one loaded value: a payload slice or a meta key.
type field struct {
	kind fieldKind
	base expr.PayloadBase
	off  uint32
	len  uint32
}

func (f field) String() string {
	switch f.kind {
	case fMetaProto:
		return "meta protocol"
	case fMetaL4Proto:
		return "meta l4proto"
	}
	return fmt.Sprintf("payload %s+%d/%d", baseName(f.base), f.off, f.len)
}

func baseName(b expr.PayloadBase) string {
	switch b {
	case expr.PayloadBaseLLHeader:
		return "ll"
	case expr.PayloadBaseNetworkHeader:
		return "nh"
	case expr.PayloadBaseTransportHeader:
		return "th"
	}
	return fmt.Sprintf("base%d", b)
}

// bytesCmp is one field's accepted value under a mask.
type bytesCmp struct {
	val, mask []byte
}

// choice is one element of a disjunction: a value for every field of its
// predicate (several fields for a concatenation).
type choice struct {
	parts   []bytesCmp
	verdict *verdict // verdict maps only
}

// pred is a conjunct of a rule's match: one of choices holds for fields.
type pred struct {
	fields  []field
	choices []choice
	what    string // for reasons
}

// verdictKind is what a rule does when it matches.
type verdictKind int

const (
	vNone verdictKind = iota // no verdict: evaluation continues
	vAccept
	vDrop
	vJump
	vGoto
	vReturn
	vFwd
)

type verdict struct {
	kind    verdictKind
	chain   string // jump, goto
	ifindex int    // fwd
}

func (v verdict) String() string {
	switch v.kind {
	case vAccept:
		return "accept"
	case vDrop:
		return "drop"
	case vJump:
		return "jump " + v.chain
	case vGoto:
		return "goto " + v.chain
	case vReturn:
		return "return"
	case vFwd:
		return "fwd to " + ifName(v.ifindex)
	}
	return "continue"
}

// transRule is one nft rule as the translator understood it.
type transRule struct {
	preds   []pred
	verdict verdict
	vmap    bool     // the last pred's choices carry the verdicts
	punt    []string // what xdpflow cannot run: the rule is punted
	never   string   // non-empty: the rule can never match, and why
	effects bool     // has statements that matter without a verdict
}

// regSlot is the content of one 32-bit register slot.
type regSlot struct {
	known bool
	start bool   // first slot of a loaded value
	f     field  // loaded field (when !konst)
	mask  []byte // bitwise mask applied to the field (nil: all ones)
	konst []byte // immediate data
}

type regFile struct {
	slots [16]regSlot
}

// regIndex maps an nft register to its first 32-bit slot: NFT_REG_1..4
// are 16 bytes each, NFT_REG32_00..15 four bytes each.
func regIndex(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00), true
	}
	return 0, false
}

func (rf *regFile) set(r uint32, s regSlot, n uint32) {
	i, ok := regIndex(r)
	if !ok {
		return
	}
	// The value's first slot holds it; the slots it spills into hold
	// nothing readable on their own.
	s.start = true
	rf.slots[i] = s
	for k := 1; k < int((n+3)/4) && i+k < len(rf.slots); k++ {
		rf.slots[i+k] = regSlot{}
	}
}

func (rf *regFile) get(r uint32) (regSlot, int, bool) {
	i, ok := regIndex(r)
	if !ok || !rf.slots[i].known || !rf.slots[i].start {
		return regSlot{}, 0, false
	}
	return rf.slots[i], i, true
}

// env is what a rule is evaluated against.
type env struct {
	dev     string
	ifindex int
	sets    map[string]*setInfo
}

// translate interprets one rule's expressions symbolically.
func translate(r *ruleInfo, e *env) *transRule {
	tr := &transRule{}
	var rf regFile
	unsupported := func(format string, a ...any) {
		tr.punt = append(tr.punt, fmt.Sprintf(format, a...))
	}
	for _, x := range r.Exprs {
		if x.Fwd != nil {
			tr.effects = true
			if x.Fwd.HasAddr {
				unsupported("fwd with a next-hop address")
				continue
			}
			s, _, ok := rf.get(x.Fwd.DevReg)
			if !ok || s.konst == nil || len(s.konst) < 4 {
				unsupported("fwd to a device not given as a constant")
				continue
			}
			tr.verdict = verdict{kind: vFwd, ifindex: int(binary.NativeEndian.Uint32(s.konst))}
			continue
		}
		if x.E == nil {
			unsupported("%s", x.Name)
			tr.effects = true
			continue
		}
		switch v := x.E.(type) {
		case *expr.Counter:
			// xdpflow counts every rule itself.
		case *expr.Payload:
			if v.OperationType != expr.PayloadLoad {
				unsupported("payload write (packet mangling)")
				tr.effects = true
				continue
			}
			rf.set(v.DestRegister, regSlot{known: true, f: field{kind: fPayload, base: v.Base, off: v.Offset, len: v.Len}}, v.Len)
		case *expr.Meta:
			if v.SourceRegister {
				unsupported("meta set")
				tr.effects = true
				continue
			}
			switch v.Key {
			case expr.MetaKeyPROTOCOL:
				rf.set(v.Register, regSlot{known: true, f: field{kind: fMetaProto, len: 2}}, 2)
			case expr.MetaKeyL4PROTO:
				rf.set(v.Register, regSlot{known: true, f: field{kind: fMetaL4Proto, len: 1}}, 1)
			case expr.MetaKeyIIF:
				b := make([]byte, 4)
				binary.NativeEndian.PutUint32(b, uint32(e.ifindex))
				rf.set(v.Register, regSlot{known: true, konst: b}, 4)
			case expr.MetaKeyIIFTYPE:
				// nft's dependency for ether payloads. XDP runs on
				// Ethernet devices only.
				b := make([]byte, 2)
				binary.NativeEndian.PutUint16(b, unix.ARPHRD_ETHER)
				rf.set(v.Register, regSlot{known: true, konst: b}, 2)
			case expr.MetaKeyIIFNAME:
				b := make([]byte, unix.IFNAMSIZ)
				copy(b, e.dev)
				rf.set(v.Register, regSlot{known: true, konst: b}, unix.IFNAMSIZ)
			default:
				rf.set(v.Register, regSlot{}, 16)
				unsupported("meta key %d", v.Key)
			}
		case *expr.Immediate:
			rf.set(v.Register, regSlot{known: true, konst: append([]byte(nil), v.Data...)}, uint32(len(v.Data)))
		case *expr.Bitwise:
			s, _, ok := rf.get(v.SourceRegister)
			if !ok || s.konst != nil || len(v.Mask) == 0 || !allZero(v.Xor) || len(v.Mask) != int(s.f.len) {
				rf.set(v.DestRegister, regSlot{}, v.Len)
				unsupported("bitwise operation other than a mask")
				continue
			}
			m := append([]byte(nil), v.Mask...)
			if s.mask != nil {
				for i := range m {
					m[i] &= s.mask[i]
				}
			}
			s.mask = m
			rf.set(v.DestRegister, s, v.Len)
		case *expr.Cmp:
			s, _, ok := rf.get(v.Register)
			if !ok {
				unsupported("comparison of a value xdpflow does not key")
				continue
			}
			if s.konst != nil {
				// Known at translation time (iif, iifname).
				if !constCmp(v.Op, s.konst, v.Data) {
					tr.never = "compares the input device with another device"
				}
				continue
			}
			p, err := cmpPred(s, v.Op, v.Data)
			if err != nil {
				unsupported("%s: %v", s.f, err)
				continue
			}
			if p == nil {
				tr.never = fmt.Sprintf("%s can never equal %x", s.f, v.Data)
				continue
			}
			tr.preds = append(tr.preds, *p)
		case *expr.Range:
			s, _, ok := rf.get(v.Register)
			if !ok || s.konst != nil {
				unsupported("range over a value xdpflow does not key")
				continue
			}
			p, err := rangePred(s, v.Op == expr.CmpOpNeq, v.FromData, v.ToData)
			if err != nil {
				unsupported("%s: %v", s.f, err)
				continue
			}
			tr.preds = append(tr.preds, *p)
		case *expr.Lookup:
			p, err := lookupPred(&rf, v, e)
			if err != nil {
				unsupported("set @%s: %v", v.SetName, err)
				if v.IsDestRegSet {
					tr.effects = true
				}
				continue
			}
			if v.IsDestRegSet {
				tr.vmap = true
			}
			tr.preds = append(tr.preds, *p)
		case *expr.Byteorder:
			// nft writes ordered comparisons of host-order values
			// (meta iif > 2) through a conversion to network order.
			s, _, ok := rf.get(v.SourceRegister)
			if ok && s.konst != nil {
				if b, ok := swapOrder(s.konst, v.Len, v.Size); ok {
					rf.set(v.DestRegister, regSlot{known: true, konst: b}, v.Len)
					continue
				}
			}
			rf.set(v.DestRegister, regSlot{}, v.Len)
			unsupported("byte order conversion of a value xdpflow does not key")
		case *expr.Verdict:
			switch v.Kind {
			case expr.VerdictAccept:
				tr.verdict = verdict{kind: vAccept}
			case expr.VerdictDrop:
				tr.verdict = verdict{kind: vDrop}
			case expr.VerdictJump:
				tr.verdict = verdict{kind: vJump, chain: v.Chain}
			case expr.VerdictGoto:
				tr.verdict = verdict{kind: vGoto, chain: v.Chain}
			case expr.VerdictReturn:
				tr.verdict = verdict{kind: vReturn}
			case expr.VerdictContinue:
				tr.verdict = verdict{kind: vNone}
			default:
				unsupported("verdict %d", v.Kind)
				tr.effects = true
			}
		default:
			// Anything else (limit, quota, reject, ct, exthdr, hash,
			// numgen, log, ...) may stop the rule from matching, write
			// a register a later expression reads, or act on the
			// packet: the rule is the kernel's.
			unsupported("%s", exprName(x.E))
			tr.effects = true
		}
	}
	if tr.vmap && len(tr.preds) > 0 && tr.preds[len(tr.preds)-1].choices != nil &&
		tr.preds[len(tr.preds)-1].choices[0].verdict == nil {
		tr.vmap = false
	}
	return tr
}

// exprName names an expression for a punt's reason: "limit" for
// *expr.Limit.
func exprName(e expr.Any) string {
	return strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr."))
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// constCmp is nft_cmp_eval on a value known at translation time: a memcmp
// of the comparison's length, whatever the operator.
func constCmp(op expr.CmpOp, a, b []byte) bool {
	n := min(len(a), len(b))
	c := bytes.Compare(a[:n], b[:n])
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

// swapOrder is nft_byteorder_eval on a constant: each size-byte element
// of the first n bytes converted between host and network order.
func swapOrder(b []byte, n, size uint32) ([]byte, bool) {
	if int(n) > len(b) || (size != 2 && size != 4 && size != 8) || n%size != 0 {
		return nil, false
	}
	out := append([]byte(nil), b[:n]...)
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return out, true // a big-endian host: nothing to convert
	}
	for i := uint32(0); i < n; i += size {
		for l, r := i, i+size-1; l < r; l, r = l+1, r-1 {
			out[l], out[r] = out[r], out[l]
		}
	}
	return out, true
}

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
	// The key's fields: consecutive loaded values, each padded to 4 bytes.
	i, ok := regIndex(l.SourceRegister)
	if !ok {
		return nil, fmt.Errorf("source register %d", l.SourceRegister)
	}
	p := &pred{}
	var widths []uint32
	keyLen := si.Set.KeyType.Bytes
	if len(si.Elements) > 0 {
		// google/nftables mixes up a map's key and data types; the
		// elements say how long the key is.
		keyLen = uint32(len(si.Elements[0].Key))
	}
	for total := uint32(0); total < keyLen; {
		if i >= len(rf.slots) {
			return nil, fmt.Errorf("key wider than the registers")
		}
		s := rf.slots[i]
		if !s.known || !s.start || s.konst != nil {
			return nil, fmt.Errorf("key is not built from keyed fields")
		}
		p.fields = append(p.fields, s.f)
		widths = append(widths, s.f.len)
		padded := (s.f.len + 3) &^ 3
		total += padded
		i += int(padded / 4)
		if s.mask != nil {
			return nil, fmt.Errorf("masked key field")
		}
	}
	names := make([]string, len(p.fields))
	for k, f := range p.fields {
		names[k] = f.String()
	}
	p.what = strings.Join(names, " . ")

	split := func(b []byte) ([][]byte, bool) {
		var out [][]byte
		off := uint32(0)
		for _, w := range widths {
			if int(off+w) > len(b) {
				return nil, false
			}
			out = append(out, b[off:off+w])
			off += (w + 3) &^ 3
		}
		return out, true
	}
	var vd func(el *nftablesElement) *verdict
	if l.IsDestRegSet {
		vd = func(el *nftablesElement) *verdict { return el.verdict }
	}
	els, err := elements(si)
	if err != nil {
		return nil, err
	}
	for _, el := range els {
		lo, ok1 := split(el.from)
		hi, ok2 := split(el.to)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("element shorter than the key")
		}
		// Every component is a range [lo, hi]; the element is their
		// product.
		combos := []choice{{}}
		for k := range widths {
			var parts []bytesCmp
			if bytes.Equal(lo[k], hi[k]) {
				parts = []bytesCmp{{val: append([]byte(nil), lo[k]...), mask: fullMask(widths[k])}}
			} else if widths[k] <= 8 {
				parts = prefixes(beUint(lo[k]), beUint(hi[k]), widths[k])
			} else {
				parts = wideRange(lo[k], hi[k])
				if parts == nil {
					return nil, fmt.Errorf("interval of %d-byte values that is not a prefix", widths[k])
				}
			}
			var next []choice
			for _, c := range combos {
				for _, pt := range parts {
					nc := choice{parts: append(append([]bytesCmp(nil), c.parts...), pt)}
					next = append(next, nc)
				}
			}
			combos = next
		}
		for _, c := range combos {
			if vd != nil {
				c.verdict = vd(&el)
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
