package nft

import (
	"fmt"

	"github.com/google/nftables/expr"
)

// What the translator makes of a rule: predicates over loaded fields and
// a verdict.

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
