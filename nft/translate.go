package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// env is what a rule is evaluated against.
type env struct {
	dev     string
	ifindex int
	sets    map[string]*setInfo
}

// translate interprets one rule's expressions symbolically.
func translate(r *ruleInfo, e *env) *transRule {
	t := &translator{tr: &transRule{}, e: e}
	for _, x := range r.Exprs {
		t.expr(x)
	}
	tr := t.tr
	if tr.vmap && len(tr.preds) > 0 && tr.preds[len(tr.preds)-1].choices != nil &&
		tr.preds[len(tr.preds)-1].choices[0].verdict == nil {
		tr.vmap = false
	}
	return tr
}

// translator runs one rule's expressions over the registers, in order.
type translator struct {
	tr *transRule
	rf regFile
	e  *env
}

// unsupported names what xdpflow cannot run: the rule becomes a punt.
func (t *translator) unsupported(format string, a ...any) {
	t.tr.punt = append(t.tr.punt, fmt.Sprintf(format, a...))
}

func (t *translator) expr(x exprInfo) {
	tr, rf := t.tr, &t.rf
	if x.Fwd != nil {
		t.fwd(x.Fwd)
		return
	}
	if x.E == nil {
		t.unsupported("%s", x.Name)
		tr.effects = true
		return
	}
	switch v := x.E.(type) {
	case *expr.Counter:
		// xdpflow counts every rule itself.
	case *expr.Payload:
		if v.OperationType != expr.PayloadLoad {
			t.unsupported("payload write (packet mangling)")
			tr.effects = true
			return
		}
		rf.set(v.DestRegister, regSlot{known: true, f: field{kind: fPayload, base: v.Base, off: v.Offset, len: v.Len}}, v.Len)
	case *expr.Meta:
		t.meta(v)
	case *expr.Immediate:
		rf.set(v.Register, regSlot{known: true, konst: append([]byte(nil), v.Data...)}, uint32(len(v.Data)))
	case *expr.Bitwise:
		t.bitwise(v)
	case *expr.Cmp:
		t.cmp(v)
	case *expr.Range:
		s, _, ok := rf.get(v.Register)
		if !ok || s.konst != nil {
			t.unsupported("range over a value xdpflow does not key")
			return
		}
		p, err := rangePred(s, v.Op == expr.CmpOpNeq, v.FromData, v.ToData)
		if err != nil {
			t.unsupported("%s: %v", s.f, err)
			return
		}
		tr.preds = append(tr.preds, *p)
	case *expr.Lookup:
		p, err := lookupPred(rf, v, t.e)
		if err != nil {
			t.unsupported("set @%s: %v", v.SetName, err)
			if v.IsDestRegSet {
				tr.effects = true
			}
			return
		}
		if v.IsDestRegSet {
			tr.vmap = true
		}
		tr.preds = append(tr.preds, *p)
	case *expr.Byteorder:
		t.byteorder(v)
	case *expr.Verdict:
		switch v.Kind {
		case expr.VerdictAccept, expr.VerdictDrop, expr.VerdictJump, expr.VerdictGoto, expr.VerdictReturn,
			expr.VerdictContinue:
			tr.verdict = *convVerdict(v)
		default:
			t.unsupported("verdict %d", v.Kind)
			tr.effects = true
		}
	default:
		// Anything else (limit, quota, reject, ct, exthdr, hash,
		// numgen, log, ...) may stop the rule from matching, write
		// a register a later expression reads, or act on the
		// packet: the rule is the kernel's.
		t.unsupported("%s", exprName(x.E))
		tr.effects = true
	}
}

func (t *translator) fwd(f *fwdExpr) {
	t.tr.effects = true
	if f.HasAddr {
		t.unsupported("fwd with a next-hop address")
		return
	}
	s, _, ok := t.rf.get(f.DevReg)
	if !ok || s.konst == nil || len(s.konst) < 4 {
		t.unsupported("fwd to a device not given as a constant")
		return
	}
	t.tr.verdict = verdict{kind: vFwd, ifindex: int(binary.NativeEndian.Uint32(s.konst))}
}

func (t *translator) meta(v *expr.Meta) {
	rf := &t.rf
	if v.SourceRegister {
		t.unsupported("meta set")
		t.tr.effects = true
		return
	}
	switch v.Key {
	case expr.MetaKeyPROTOCOL:
		rf.set(v.Register, regSlot{known: true, f: field{kind: fMetaProto, len: 2}}, 2)
	case expr.MetaKeyL4PROTO:
		rf.set(v.Register, regSlot{known: true, f: field{kind: fMetaL4Proto, len: 1}}, 1)
	case expr.MetaKeyIIF:
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, uint32(t.e.ifindex))
		rf.set(v.Register, regSlot{known: true, konst: b}, 4)
	case expr.MetaKeyIIFTYPE:
		// nft's dependency for ether payloads. XDP runs on
		// Ethernet devices only.
		b := make([]byte, 2)
		binary.NativeEndian.PutUint16(b, unix.ARPHRD_ETHER)
		rf.set(v.Register, regSlot{known: true, konst: b}, 2)
	case expr.MetaKeyIIFNAME:
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, t.e.dev)
		rf.set(v.Register, regSlot{known: true, konst: b}, unix.IFNAMSIZ)
	default:
		rf.set(v.Register, regSlot{}, 16)
		t.unsupported("meta key %d", v.Key)
	}
}

func (t *translator) bitwise(v *expr.Bitwise) {
	rf := &t.rf
	s, _, ok := rf.get(v.SourceRegister)
	if !ok || s.konst != nil || len(v.Mask) == 0 || !allZero(v.Xor) || len(v.Mask) != int(s.f.len) {
		rf.set(v.DestRegister, regSlot{}, v.Len)
		t.unsupported("bitwise operation other than a mask")
		return
	}
	m := append([]byte(nil), v.Mask...)
	if s.mask != nil {
		for i := range m {
			m[i] &= s.mask[i]
		}
	}
	s.mask = m
	rf.set(v.DestRegister, s, v.Len)
}

func (t *translator) cmp(v *expr.Cmp) {
	tr := t.tr
	s, _, ok := t.rf.get(v.Register)
	if !ok {
		t.unsupported("comparison of a value xdpflow does not key")
		return
	}
	if s.konst != nil {
		// Known at translation time (iif, iifname).
		if !constCmp(v.Op, s.konst, v.Data) {
			tr.never = "compares the input device with another device"
		}
		return
	}
	p, err := cmpPred(s, v.Op, v.Data)
	if err != nil {
		t.unsupported("%s: %v", s.f, err)
		return
	}
	if p == nil {
		tr.never = fmt.Sprintf("%s can never equal %x", s.f, v.Data)
		return
	}
	tr.preds = append(tr.preds, *p)
}

// byteorder: nft writes ordered comparisons of host-order values
// (meta iif > 2) through a conversion to network order.
func (t *translator) byteorder(v *expr.Byteorder) {
	rf := &t.rf
	s, _, ok := rf.get(v.SourceRegister)
	if ok && s.konst != nil {
		if b, ok := swapOrder(s.konst, v.Len, v.Size); ok {
			rf.set(v.DestRegister, regSlot{known: true, konst: b}, v.Len)
			return
		}
	}
	rf.set(v.DestRegister, regSlot{}, v.Len)
	t.unsupported("byte order conversion of a value xdpflow does not key")
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
